use super::*;

/// One message body as MessagePack, built from a value.
fn body(value: &Mp) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writing to a Vec");
    out
}

fn framed(value: &Mp) -> Vec<u8> {
    frame(body(value)).to_vec()
}

fn s(text: &str) -> Mp {
    Mp::from(text)
}

#[test]
fn varints_as_the_spec_gives_them() -> Result<(), ProtocolError> {
    assert_eq!(read_varint(&[0x80, 0x29])?, Some((5248, 2)));
    assert_eq!(
        read_varint(&[0xff, 0xff, 0xff, 0xff, 0x07])?,
        Some((MAX_LENGTH as usize, 5))
    );
    assert_eq!(read_varint(&[0x80])?, None, "incomplete waits for more");
    assert!(
        read_varint(&[0xff, 0xff, 0xff, 0xff, 0x08]).is_err(),
        "over 2^31 - 1"
    );
    assert!(
        read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err(),
        "over 5 bytes"
    );
    assert_eq!(&frame(vec![0; 5248])[..2], &[0x80, 0x29]);
    Ok(())
}

#[test]
fn splits_batches_and_keeps_partial_messages() -> Result<(), ProtocolError> {
    let mut buffer = PING.to_vec();
    buffer.extend_from_slice(PING);
    buffer.extend_from_slice(&PING[..2]);
    let (messages, used) = split(&buffer)?;
    assert_eq!(messages, vec![&[0x91, 0x06][..], &[0x91, 0x06][..]]);
    assert_eq!(used, 6);
    assert!(matches!(parse(messages[0])?, Incoming::Ping));
    Ok(())
}

#[test]
fn reads_five_and_six_element_invocations() -> Result<(), ProtocolError> {
    let args = Mp::Array(vec![
        s("é😀"),
        Mp::from(-7),
        Mp::F64(1.5),
        Mp::Binary(vec![1, 2, 3]),
        Mp::Map(vec![(s("a"), Mp::Nil), (Mp::from(1), Mp::Boolean(true))]),
    ]);
    // The JS client's five elements, an empty id meaning none.
    let five = Mp::Array(vec![
        Mp::from(1),
        Mp::Map(vec![]),
        s(""),
        s("Echo"),
        args.clone(),
    ]);
    match parse(&body(&five))? {
        Incoming::Invocation {
            invocation_id,
            target,
            arguments,
            stream_ids,
        } => {
            assert_eq!(invocation_id, None);
            assert_eq!(target, "Echo");
            assert_eq!(arguments, r#"["é😀",-7,1.5,"AQID",{"a":null,"1":true}]"#);
            assert!(stream_ids.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    let six = Mp::Array(vec![
        Mp::from(1),
        Mp::Map(vec![(s("k"), s("v"))]),
        s("3"),
        s("Echo"),
        Mp::Array(vec![]),
        Mp::Array(vec![s("s1")]),
        s("extra elements are tolerated"),
    ]);
    match parse(&body(&six))? {
        Incoming::Invocation {
            invocation_id,
            stream_ids,
            arguments,
            ..
        } => {
            assert_eq!(invocation_id.as_deref(), Some("3"));
            assert_eq!(stream_ids, vec!["s1".to_owned()]);
            assert_eq!(arguments, "[]");
        }
        other => panic!("unexpected {other:?}"),
    }
    Ok(())
}

#[test]
fn reads_close_ping_and_ignores_the_rest() -> Result<(), ProtocolError> {
    let js_close = Mp::Array(vec![Mp::from(7), Mp::Nil]);
    assert!(matches!(
        parse(&body(&js_close))?,
        Incoming::Close { error: None }
    ));
    let close = Mp::Array(vec![Mp::from(7), s("bye"), Mp::Boolean(true)]);
    assert!(matches!(parse(&body(&close))?, Incoming::Close { error: Some(e) } if e == "bye"));
    let void = Mp::Array(vec![Mp::from(3), Mp::Map(vec![]), s("1"), Mp::from(2)]);
    assert!(matches!(
        parse(&body(&void))?,
        Incoming::Completion { invocation_id, result: Ok(r) } if invocation_id == "1" && r == "null"
    ));
    let value = Mp::Array(vec![
        Mp::from(3),
        Mp::Map(vec![]),
        s("2"),
        Mp::from(3),
        Mp::from(7),
    ]);
    assert!(matches!(
        parse(&body(&value))?,
        Incoming::Completion { result: Ok(r), .. } if r == "7"
    ));
    let error = Mp::Array(vec![
        Mp::from(3),
        Mp::Map(vec![]),
        s("3"),
        Mp::from(1),
        s("no"),
    ]);
    assert!(matches!(
        parse(&body(&error))?,
        Incoming::Completion { result: Err(e), .. } if e == "no"
    ));
    let bad = Mp::Array(vec![Mp::from(3), Mp::Map(vec![]), s("4"), Mp::from(9)]);
    assert!(parse(&body(&bad)).is_err());
    let item = Mp::Array(vec![
        Mp::from(2),
        Mp::Map(vec![]),
        s("5"),
        Mp::Array(vec![Mp::from(1)]),
    ]);
    assert!(matches!(
        parse(&body(&item))?,
        Incoming::StreamItem { invocation_id, item } if invocation_id == "5" && item == "[1]"
    ));
    let cancel = Mp::Array(vec![Mp::from(5), Mp::Map(vec![]), s("6")]);
    assert!(matches!(
        parse(&body(&cancel))?,
        Incoming::CancelInvocation { invocation_id } if invocation_id == "6"
    ));
    let no_id = Mp::Array(vec![Mp::from(5), Mp::Map(vec![]), Mp::Nil]);
    assert!(parse(&body(&no_id)).is_err());
    assert!(matches!(
        parse(&body(&Mp::Array(vec![Mp::from(42)])))?,
        Incoming::Ignored { kind: 42 }
    ));
    Ok(())
}

#[test]
fn refuses_malformed_messages() {
    let cases = [
        body(&Mp::from(1)),
        body(&Mp::Array(vec![])),
        body(&Mp::Array(vec![s("1")])),
        body(&Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            Mp::Nil,
            s("x"),
        ])),
        body(&Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            Mp::from(5),
            s("x"),
            Mp::Array(vec![]),
        ])),
        body(&Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            Mp::Nil,
            Mp::from(2),
            Mp::Array(vec![]),
        ])),
        body(&Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            Mp::Nil,
            s("x"),
            Mp::Map(vec![]),
        ])),
        body(&Mp::Array(vec![
            Mp::from(4),
            Mp::Map(vec![]),
            Mp::Nil,
            s("x"),
            Mp::Array(vec![]),
        ])),
        body(&Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            Mp::Nil,
            s("x"),
            Mp::Array(vec![Mp::Ext(5, vec![1])]),
        ])),
        vec![0x95, 0x01],
        vec![0xc1],
    ];
    for case in cases {
        assert!(parse(&case).is_err(), "accepted {case:02x?}");
    }
}

#[test]
fn writes_messages_the_clients_read() -> Result<(), ProtocolError> {
    assert_eq!(
        invocation("Receive", r#"["a",1,-2,2.5,null,true,{"k":[1]}]"#).to_vec(),
        framed(&Mp::Array(vec![
            Mp::from(1),
            Mp::Map(vec![]),
            Mp::Nil,
            s("Receive"),
            Mp::Array(vec![
                s("a"),
                Mp::from(1),
                Mp::from(-2),
                Mp::F64(2.5),
                Mp::Nil,
                Mp::Boolean(true),
                Mp::Map(vec![(s("k"), Mp::Array(vec![Mp::from(1)]))]),
            ]),
            Mp::Array(vec![]),
        ]))
    );
    assert_eq!(
        completion_result("1", "null").to_vec(),
        framed(&Mp::Array(vec![
            Mp::from(3),
            Mp::Map(vec![]),
            s("1"),
            Mp::from(3),
            Mp::Nil
        ]))
    );
    assert_eq!(
        completion_error("2", "no").to_vec(),
        framed(&Mp::Array(vec![
            Mp::from(3),
            Mp::Map(vec![]),
            s("2"),
            Mp::from(1),
            s("no")
        ]))
    );
    assert_eq!(
        close(None, true).to_vec(),
        framed(&Mp::Array(vec![Mp::from(7), Mp::Nil, Mp::Boolean(true)]))
    );
    assert_eq!(PING, framed(&Mp::Array(vec![Mp::from(6)])));
    Ok(())
}

#[test]
fn timestamps_become_rfc3339() -> Result<(), ProtocolError> {
    assert_eq!(timestamp(&0u32.to_be_bytes())?, "1970-01-01T00:00:00Z");
    // 2024-02-29T12:34:56.5Z in the 64-bit form.
    let seconds: u64 = 1_709_210_096;
    let raw = (500_000_000u64 << 34) | seconds;
    assert_eq!(timestamp(&raw.to_be_bytes())?, "2024-02-29T12:34:56.5Z");
    let mut before_1970 = 1u32.to_be_bytes().to_vec();
    before_1970.extend_from_slice(&(-1i64).to_be_bytes());
    assert_eq!(timestamp(&before_1970)?, "1969-12-31T23:59:59.000000001Z");
    assert!(timestamp(&[1, 2, 3]).is_err());
    Ok(())
}

#[test]
fn map_keys_are_scalars() -> Result<(), ProtocolError> {
    let scalars = Mp::Map(vec![
        (Mp::from(1), s("one")),
        (Mp::Boolean(true), s("yes")),
        (Mp::Nil, s("none")),
    ]);
    assert_eq!(
        to_json(&scalars)?.to_string(),
        r#"{"1":"one","true":"yes","null":"none"}"#
    );
    // A key that is a map (of a map of a map…) would grow with every level.
    let mut nested = Mp::Nil;
    for _ in 0..90 {
        nested = Mp::Map(vec![(nested, Mp::Nil)]);
    }
    assert!(to_json(&nested).is_err());
    let array_key = Mp::Map(vec![(Mp::Array(vec![]), Mp::Nil)]);
    assert!(to_json(&array_key).is_err());
    Ok(())
}
