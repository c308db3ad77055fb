//! Long polling on the wire: negotiate, the first poll, the handshake and
//! hub messages over POST and polls, poll timeout, superseded polls, DELETE,
//! the disconnect timeout, MessagePack (binary) over long polling, and
//! shutdown. Status codes and malformed input: `long_polling_errors.rs`.

use hubhost_tests::transports::long_polling::*;
use hubhost_tests::transports::msgpack::{self, s};
use hubhost_tests::transports::{
    HANDSHAKE_OK, JSON_HANDSHAKE, LongPoll, MSGPACK_HANDSHAKE, json_messages, negotiate,
};
use hubhost_tests::{PATIENCE, TestServer, wait_until_async};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn negotiate_lists_the_three_transports_with_their_formats() -> anyhow::Result<()> {
    let server = server().await?;
    let negotiated = negotiate(server.addr, HUB).await?;
    assert_eq!(negotiated.body["negotiateVersion"], 1);
    assert_eq!(
        negotiated.body["availableTransports"],
        json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ])
    );
    assert_eq!(negotiated.connection_id.len(), 22, "{:?}", negotiated.body);
    assert_eq!(negotiated.token.len(), 30, "{:?}", negotiated.body);
    assert_ne!(negotiated.token, negotiated.connection_id);
    server.stop().await
}

#[tokio::test]
async fn first_poll_handshake_and_invocations() -> anyhow::Result<()> {
    let server = server().await?;
    let negotiated = negotiate(server.addr, HUB).await?;
    let lp = LongPoll::new(server.addr, HUB, &negotiated.token);

    // The first poll answers at once: 200, empty, binary-safe content type.
    let first = lp.poll().await?;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("content-length"), Some("0"), "{first:?}");
    assert_eq!(
        first.header("content-type"),
        Some("application/octet-stream"),
        "{first:?}"
    );
    assert_no_cache(&first);
    assert!(first.body.is_empty(), "{first:?}");

    let posted = lp.post(JSON_HANDSHAKE).await?;
    assert_eq!(posted.status, 200, "{posted:?}");
    let handshake = lp.poll().await?;
    assert_eq!(handshake.status, 200, "{handshake:?}");
    assert_eq!(handshake.body, HANDSHAKE_OK, "{:?}", handshake.text());
    assert_eq!(
        handshake.header("content-type"),
        Some("application/octet-stream")
    );
    assert_no_cache(&handshake);

    // An invocation's completion comes back on the next poll.
    let posted = lp.post(invocation("1", "Echo", json!(["hi"]))).await?;
    assert_eq!(posted.status, 200, "{posted:?}");
    assert_eq!(
        json_messages(&lp.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "1", "result": "hi"})]
    );

    // Several messages in one POST; their completions, in order, over one
    // or more polls. The connection id is the negotiated one.
    let batch = format!(
        "{}{}{}",
        invocation("2", "Echo", json!([{"a": [1, 2]}])),
        invocation("3", "WhoAmI", json!([])),
        invocation("4", "Fail", json!(["boom"])),
    );
    assert_eq!(lp.post(batch).await?.status, 200);
    let seen = completions(&lp, &["2", "3", "4"]).await?;
    assert_eq!(
        seen,
        vec![
            json!({"type": 3, "invocationId": "2", "result": {"a": [1, 2]}}),
            json!({"type": 3, "invocationId": "3",
                   "result": {"connectionId": negotiated.connection_id, "userId": null}}),
            json!({"type": 3, "invocationId": "4", "error": "boom"}),
        ]
    );
    server.stop().await
}

#[tokio::test]
async fn an_idle_poll_answers_200_empty_after_the_poll_timeout() -> anyhow::Result<()> {
    let poll_timeout = Duration::from_millis(300);
    let server = TestServer::start(config_with(300, 15_000)).await?;
    let lp = started(&server).await?;
    let started_at = Instant::now();
    let idle = lp.poll().await?;
    assert!(
        started_at.elapsed() >= poll_timeout,
        "answered before the timeout"
    );
    assert_eq!(idle.status, 200, "{idle:?}");
    assert!(idle.body.is_empty(), "{idle:?}");
    assert_eq!(
        idle.header("content-type"),
        Some("application/octet-stream")
    );
    assert_no_cache(&idle);
    // The connection lives on.
    lp.post(invocation("1", "Echo", json!([1]))).await?;
    assert_eq!(
        json_messages(&lp.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "1", "result": 1})]
    );
    server.stop().await
}

#[tokio::test]
async fn a_newer_poll_supersedes_the_waiting_one() -> anyhow::Result<()> {
    // Polls wait up to 8 s: only superseding can end one sooner.
    let server = TestServer::start(config_with(8_000, 15_000)).await?;
    let lp = started(&server).await?;
    let started_at = Instant::now();
    let mut one = tokio::spawn({
        let lp = lp.clone();
        async move { lp.poll().await }
    });
    let mut two = tokio::spawn({
        let lp = lp.clone();
        async move { lp.poll().await }
    });
    // Whichever reached the server first gives way to the other at once: 204.
    let (older, newer) = tokio::select! {
        reply = &mut one => (reply??, two),
        reply = &mut two => (reply??, one),
    };
    assert_eq!(older.status, 204, "{older:?}");
    assert!(older.body.is_empty());
    assert!(
        started_at.elapsed() < Duration::from_secs(8),
        "the older poll waited for its timeout instead of giving way"
    );
    assert_no_cache(&older);
    // The newer poll still waits, and gets the next messages.
    lp.post(invocation("1", "Echo", json!(["after"]))).await?;
    let newer = newer.await??;
    assert_eq!(newer.status, 200, "{newer:?}");
    assert_eq!(
        newer.json_messages()?,
        vec![json!({"type": 3, "invocationId": "1", "result": "after"})]
    );
    server.stop().await
}

#[tokio::test]
async fn delete_ends_the_connection_and_answers_the_waiting_poll_204() -> anyhow::Result<()> {
    let server = server().await?;
    let lp = started(&server).await?;
    let waiting = lp.parked_poll(&server.state).await?;
    let deleted = lp.delete().await?;
    assert_eq!(deleted.status, 202, "{deleted:?}");
    let waiting = waiting.await??;
    assert_eq!(waiting.status, 204, "{waiting:?}");
    assert!(waiting.body.is_empty());
    // That 204 was the end: the token is gone.
    for reply in [
        lp.poll().await?,
        lp.post(JSON_HANDSHAKE).await?,
        lp.delete().await?,
    ] {
        assert_eq!(reply.status, 404, "{reply:?}");
    }
    server.stop().await
}

#[tokio::test]
async fn a_connection_polled_in_time_lives_and_an_unpolled_one_is_disposed() -> anyhow::Result<()> {
    // Polls of 200 ms against a disconnect timeout of 600 ms.
    let server = TestServer::start(config_with(200, 600)).await?;
    let lp = started(&server).await?;
    // Polling back to back for several disconnect timeouts keeps it alive.
    let until = Instant::now() + Duration::from_millis(2_000);
    while Instant::now() < until {
        let reply = lp.poll().await?;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    lp.post(invocation("1", "Echo", json!(["alive"]))).await?;
    assert_eq!(
        json_messages(&lp.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "1", "result": "alive"})]
    );
    // Then nobody polls: the connection goes, and with it the token.
    wait_until_async(PATIENCE, || async {
        matches!(lp.post("{\"type\":6}\u{1e}").await, Ok(reply) if reply.status == 404)
    })
    .await?;
    assert_eq!(lp.poll().await?.status, 404);
    // A token negotiated and never used expires too.
    let unused = long_poll(&server).await?;
    wait_until_async(PATIENCE, || async {
        matches!(unused.delete().await, Ok(reply) if reply.status == 404)
    })
    .await?;
    assert_eq!(unused.poll().await?.status, 404);
    server.stop().await
}

#[tokio::test]
async fn messagepack_over_long_polling() -> anyhow::Result<()> {
    let server = server().await?;
    let lp = long_poll(&server).await?;
    // The handshake is JSON text, its response too (as bytes).
    assert_eq!(lp.start(MSGPACK_HANDSHAKE).await?, HANDSHAKE_OK);

    let text = "héllo 😀 \u{0}";
    let mut body = msgpack::frame(&msgpack::invocation(Some("1"), "Echo", vec![s(text)]));
    // The JS client's 5-element invocation, in the same POST.
    body.extend(msgpack::frame(&msgpack::invocation5(
        Some("2"),
        "Echo",
        vec![rmpv::Value::Array(vec![
            rmpv::Value::from(-7),
            rmpv::Value::from(1.5),
            rmpv::Value::Boolean(true),
            rmpv::Value::Nil,
        ])],
    )));
    // A Ping, accepted silently.
    body.extend_from_slice(msgpack::PING);
    let posted = lp.post(body).await?;
    assert_eq!(posted.status, 200, "{posted:?}");

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let reply = lp.poll().await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/octet-stream")
        );
        seen.extend(reply.msgpack_messages()?);
    }
    assert_eq!(
        seen,
        vec![
            msgpack::completion("1", s(text)),
            msgpack::completion(
                "2",
                rmpv::Value::Array(vec![
                    rmpv::Value::from(-7),
                    rmpv::Value::F64(1.5),
                    rmpv::Value::Boolean(true),
                    rmpv::Value::Nil,
                ])
            ),
        ]
    );
    // The JS client's Close: [7, nil]. The connection ends without a word.
    let close = rmpv::Value::Array(vec![rmpv::Value::from(7), rmpv::Value::Nil]);
    assert_eq!(lp.post(msgpack::frame(&close)).await?.status, 200);
    let last = lp.poll().await?;
    assert_eq!(last.status, 204, "{last:?} {:?}", last.msgpack_messages());
    assert_eq!(lp.poll().await?.status, 404);
    server.stop().await
}

#[tokio::test]
async fn negotiate_version_0_polls_with_the_connection_id() -> anyhow::Result<()> {
    let mut config = config_with(5_000, 15_000);
    config.connection.allow_negotiate_v0 = true;
    let server = TestServer::start(config).await?;
    let (status, body) = server.negotiate(HUB, "").await?;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["negotiateVersion"], 0, "{body}");
    assert!(body.get("connectionToken").is_none(), "{body}");
    let id = body["connectionId"].as_str().unwrap_or_default().to_owned();
    let lp = LongPoll::new(server.addr, HUB, &id);
    assert_eq!(lp.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
    lp.post(invocation("1", "WhoAmI", json!([]))).await?;
    assert_eq!(
        json_messages(&lp.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "1",
                    "result": {"connectionId": id, "userId": null}})]
    );
    assert_eq!(lp.delete().await?.status, 202);
    server.stop().await
}

#[tokio::test]
async fn messages_may_span_posts_and_follow_the_handshake_in_one() -> anyhow::Result<()> {
    let server = server().await?;
    // JSON: one message cut across two POSTs.
    let lp = started(&server).await?;
    let whole = invocation("1", "Echo", json!(["joined"]));
    let (head, tail) = whole.split_at(whole.len() / 2);
    assert_eq!(lp.post(head).await?.status, 200);
    assert_eq!(lp.post(tail).await?.status, 200);
    assert_eq!(
        json_messages(&lp.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "1", "result": "joined"})]
    );

    // MessagePack: the handshake and an invocation in the first POST, then a
    // frame cut in two (inside its length prefix).
    let lp = long_poll(&server).await?;
    assert_eq!(lp.poll().await?.status, 200);
    let mut first = MSGPACK_HANDSHAKE.as_bytes().to_vec();
    first.extend(msgpack::frame(&msgpack::invocation(
        Some("1"),
        "Echo",
        vec![s("one")],
    )));
    assert_eq!(lp.post(first).await?.status, 200);
    let mut received = Vec::new();
    while received.len() < HANDSHAKE_OK.len() + 1 {
        received.extend(lp.next_data().await?);
    }
    assert_eq!(&received[..HANDSHAKE_OK.len()], HANDSHAKE_OK);
    let mut messages = msgpack::unframe(&received[HANDSHAKE_OK.len()..])?;
    // Long enough for a two-byte length prefix.
    let long = "z".repeat(200);
    let frame = msgpack::frame(&msgpack::invocation(Some("2"), "Echo", vec![s(&long)]));
    assert!(frame[0] & 0x80 != 0, "a one-byte prefix");
    assert_eq!(lp.post(&frame[..1]).await?.status, 200);
    assert_eq!(lp.post(&frame[1..]).await?.status, 200);
    while messages.len() < 2 {
        messages.extend(msgpack::unframe(&lp.next_data().await?)?);
    }
    assert_eq!(
        messages,
        vec![
            msgpack::completion("1", s("one")),
            msgpack::completion("2", s(&long))
        ]
    );
    server.stop().await
}

#[tokio::test]
async fn a_stopping_server_answers_the_waiting_poll_with_a_close() -> anyhow::Result<()> {
    // Polls wait up to 8 s; the server must not wait for them to stop.
    let server = TestServer::start(config_with(8_000, 15_000)).await?;
    let lp = started(&server).await?;
    // The poll waits on the server, unanswered, when it begins to stop.
    let waiting = lp.parked_poll(&server.state).await?;
    let started_at = Instant::now();
    server.stop().await?;
    assert!(
        started_at.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        started_at.elapsed()
    );
    let reply = waiting.await??;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json_messages()?,
        vec![json!({"type": 7, "allowReconnect": true})]
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_still_in_its_handshake_does_not_hold_up_shutdown() -> anyhow::Result<()> {
    // Started by its first poll, never sent a handshake: not registered yet,
    // so no Close can reach it; it must still end as soon as shutdown begins
    // rather than after the 5 s grace (or the 15 s handshake timeout).
    let server = server().await?;
    let lp = long_poll(&server).await?;
    let first = lp.poll().await?;
    assert_eq!((first.status, first.body.len()), (200, 0));
    let started_at = Instant::now();
    server.stop().await?;
    assert!(
        started_at.elapsed() < Duration::from_secs(2),
        "stopping took {:?}",
        started_at.elapsed()
    );
    Ok(())
}
