//! The MessagePack hub protocol over WebSockets, with raw binary frames:
//! the handshake, invocations of 6 and 5 elements, pings, broadcasts to and
//! from JSON clients, transcoding of strings, binary and timestamps, and
//! malformed messages closing the connection.

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use hubhost_tests::transports::msgpack::{self, s};
use hubhost_tests::transports::{HANDSHAKE_OK, MSGPACK_HANDSHAKE, negotiate};
use hubhost_tests::{PATIENCE, RawClient, TestServer, config};
use rmpv::Value;
use serde_json::json;
use std::collections::VecDeque;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const HUB: &str = "/demo/chat";

/// A WebSocket speaking MessagePack by hand.
struct MsgpackClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
}

impl MsgpackClient {
    /// Open `path`, send the handshake as text and check its response: a
    /// Binary frame holding `{}\x1e`.
    async fn open(server: &TestServer, path: &str) -> anyhow::Result<Self> {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}{path}", server.addr)).await?;
        let mut client = Self {
            ws,
            pending: VecDeque::new(),
        };
        client.ws.send(Message::text(MSGPACK_HANDSHAKE)).await?;
        match client.frame().await? {
            Message::Binary(bytes) => assert_eq!(&bytes[..], HANDSHAKE_OK),
            other => anyhow::bail!("handshake response in a non-binary frame: {other:?}"),
        }
        Ok(client)
    }

    /// Negotiate, then [`Self::open`] with the token.
    async fn connect(server: &TestServer) -> anyhow::Result<(Self, String)> {
        let negotiated = negotiate(server.addr, HUB).await?;
        let client = Self::open(server, &format!("{HUB}?id={}", negotiated.token)).await?;
        Ok((client, negotiated.connection_id))
    }

    async fn send_raw(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::binary(bytes)).await?;
        Ok(())
    }

    async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        self.send_raw(msgpack::frame(message)).await
    }

    /// The next WebSocket message that is not a WebSocket ping or pong.
    async fn frame(&mut self) -> anyhow::Result<Message> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("socket ended"))??;
            if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
                return Ok(message);
            }
        }
    }

    /// Read one WebSocket message into `pending`, dropping Pings; every
    /// frame must be binary.
    async fn read(&mut self) -> anyhow::Result<()> {
        match self.frame().await? {
            Message::Binary(bytes) => {
                let messages = msgpack::unframe(&bytes)?;
                self.pending
                    .extend(messages.into_iter().filter(|m| !msgpack::is(m, 6)));
                Ok(())
            }
            other => anyhow::bail!("expected a binary frame, got {other:?}"),
        }
    }

    /// The next hub message other than a Ping.
    async fn next(&mut self) -> anyhow::Result<Value> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Ok(message);
            }
            self.read().await?;
        }
    }

    /// The first hub message matching `pred`; the others stay, in order.
    async fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        loop {
            if let Some(i) = self.pending.iter().position(&pred) {
                return self
                    .pending
                    .remove(i)
                    .ok_or_else(|| anyhow::anyhow!("vanished"));
            }
            self.read().await?;
        }
    }

    /// Invoke and wait for the completion.
    async fn invoke(&mut self, id: &str, target: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.send(&msgpack::invocation(Some(id), target, args))
            .await?;
        self.next_where(|m| {
            msgpack::is(m, 3) && m.as_array().and_then(|a| a.get(2)) == Some(&s(id))
        })
        .await
    }

    /// Hub messages (pings included) until the socket ends, and its close
    /// frame's code, if it sent one.
    async fn until_closed(&mut self) -> anyhow::Result<(Vec<Value>, Option<CloseCode>)> {
        let mut seen: Vec<Value> = self.pending.drain(..).collect();
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next()).await? {
                Some(Ok(Message::Binary(bytes))) => seen.extend(msgpack::unframe(&bytes)?),
                Some(Ok(Message::Close(frame))) => return Ok((seen, frame.map(|f| f.code))),
                Some(Ok(Message::Text(text))) => anyhow::bail!("text frame: {text}"),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Ok((seen, None)),
            }
        }
    }
}

fn completion_error(id: &str, error: &str) -> Value {
    Value::Array(vec![
        Value::from(3),
        msgpack::headers(),
        s(id),
        Value::from(1),
        s(error),
    ])
}

#[tokio::test]
async fn the_handshake_is_text_and_its_response_a_binary_frame() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    // Negotiated, and with skipNegotiation (no id).
    let (mut negotiated, id) = MsgpackClient::connect(&server).await?;
    let mut direct = MsgpackClient::open(&server, HUB).await?;
    let who = negotiated.invoke("1", "WhoAmI", vec![]).await?;
    let result = Value::Map(vec![(s("connectionId"), s(&id)), (s("userId"), Value::Nil)]);
    assert_eq!(who, msgpack::completion("1", result));
    let who = direct.invoke("1", "WhoAmI", vec![]).await?;
    let fields = who
        .as_array()
        .and_then(|a| a.get(4))
        .and_then(Value::as_map)
        .cloned()
        .unwrap_or_default();
    assert_eq!(fields.len(), 2, "{who:?}");
    assert_eq!(fields[0].0, s("connectionId"));
    assert_eq!(fields[0].1.as_str().map(str::len), Some(22), "{who:?}");
    assert_ne!(fields[0].1, s(&id));
    assert_eq!(fields[1], (s("userId"), Value::Nil));
    server.stop().await
}

#[tokio::test]
async fn invocations_of_six_and_five_elements_pings_and_batches() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut client, _) = MsgpackClient::connect(&server).await?;
    // .NET's 6 elements.
    assert_eq!(
        client.invoke("1", "Echo", vec![Value::from(42)]).await?,
        msgpack::completion("1", Value::from(42))
    );
    // The JS client's 5, without stream ids.
    client
        .send(&msgpack::invocation5(Some("2"), "Echo", vec![s("five")]))
        .await?;
    assert_eq!(client.next().await?, msgpack::completion("2", s("five")));
    // A Ping as the JS client frames it: accepted, no answer.
    client.send_raw(msgpack::PING.to_vec()).await?;
    // Errors, fire-and-forget, and several messages in one frame, in order.
    let mut batch = msgpack::frame(&msgpack::invocation(None, "Fail", vec![s("silent")]));
    batch.extend(msgpack::frame(&msgpack::invocation(
        Some("3"),
        "Fail",
        vec![s("boom")],
    )));
    batch.extend(msgpack::frame(&msgpack::invocation5(
        Some("4"),
        "Nope",
        vec![],
    )));
    // An empty-string id is no id.
    batch.extend(msgpack::frame(&msgpack::invocation(
        Some(""),
        "Echo",
        vec![s("no reply")],
    )));
    batch.extend(msgpack::frame(&Value::Array(vec![
        Value::from(42),
        s("an unknown type, ignored"),
    ])));
    batch.extend(msgpack::frame(&msgpack::invocation(
        Some("5"),
        "Echo",
        vec![Value::Nil],
    )));
    client.send_raw(batch).await?;
    assert_eq!(client.next().await?, completion_error("3", "boom"));
    assert_eq!(
        client.next().await?,
        completion_error("4", "Unknown hub method 'Nope'")
    );
    assert_eq!(client.next().await?, msgpack::completion("5", Value::Nil));
    // A stream invocation gets an error completion.
    client
        .send(&Value::Array(vec![
            Value::from(4),
            msgpack::headers(),
            s("6"),
            s("Echo"),
            Value::Array(vec![s("x")]),
        ]))
        .await?;
    assert_eq!(
        client.next().await?,
        completion_error(
            "6",
            "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation."
        )
    );
    server.stop().await
}

#[tokio::test]
async fn broadcasts_cross_between_json_and_messagepack_clients() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut json_client, _) = RawClient::connect(&server, HUB).await?;
    let (mut mp_client, _) = MsgpackClient::connect(&server).await?;
    let is_message = |m: &Value| msgpack::is(m, 1);

    json_client
        .invoke("1", "SendMessage", json!(["ann", "from json 😀"]))
        .await?;
    assert_eq!(
        mp_client
            .next_where(is_message)
            .await
            .context("the JSON client's broadcast")?,
        msgpack::invocation(None, "ReceiveMessage", vec![s("ann"), s("from json 😀")])
    );

    assert_eq!(
        mp_client
            .invoke("2", "SendMessage", vec![s("bob"), s("from msgpack ✓")])
            .await
            .context("the MessagePack client's SendMessage")?,
        msgpack::completion("2", Value::Nil)
    );
    json_client
        .next_where(|m| m["type"] == 1 && m["arguments"][0] == "bob")
        .await
        .context("the MessagePack client's broadcast, at the JSON client")
        .map(|m| {
            assert_eq!(
                m,
                json!({"type": 1, "target": "ReceiveMessage", "arguments": ["bob", "from msgpack ✓"]})
            )
        })?;
    // Its own broadcast reaches the MessagePack client too.
    assert_eq!(
        mp_client
            .next_where(is_message)
            .await
            .context("the MessagePack client's own broadcast")?,
        msgpack::invocation(None, "ReceiveMessage", vec![s("bob"), s("from msgpack ✓")])
    );
    server.stop().await
}

#[tokio::test]
async fn values_transcode_to_json_and_back() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut client, _) = MsgpackClient::connect(&server).await?;
    let cases: Vec<(Value, Value)> = vec![
        // Strings, emoji and all: the same string back.
        (
            s("héllo wörld 😀 \u{0} \"quoted\""),
            s("héllo wörld 😀 \u{0} \"quoted\""),
        ),
        // Long enough for a two-byte length prefix.
        (s(&"x".repeat(300)), s(&"x".repeat(300))),
        // Integers at the edges, floats, booleans, nil.
        (Value::from(u64::MAX), Value::from(u64::MAX)),
        (Value::from(i64::MIN), Value::from(i64::MIN)),
        (Value::F64(-0.25), Value::F64(-0.25)),
        (Value::Boolean(false), Value::Boolean(false)),
        // Binary reaches the hub as base64 text (a .NET byte[] in JSON).
        (Value::Binary(vec![1, 2, 3, 255]), s("AQID/w==")),
        // Maps with string keys survive; other keys become their JSON text.
        (
            Value::Map(vec![(s("a"), Value::Array(vec![Value::from(1), s("b")]))]),
            Value::Map(vec![(s("a"), Value::Array(vec![Value::from(1), s("b")]))]),
        ),
        (
            Value::Map(vec![(Value::from(7), s("seven"))]),
            Value::Map(vec![(s("7"), s("seven"))]),
        ),
        // Timestamps (extension -1) become RFC 3339 text.
        (
            Value::Ext(-1, 1_700_000_000u32.to_be_bytes().to_vec()),
            s("2023-11-14T22:13:20Z"),
        ),
    ];
    for (i, (sent, expected)) in cases.into_iter().enumerate() {
        let id = format!("c{i}");
        assert_eq!(
            client.invoke(&id, "Echo", vec![sent.clone()]).await?,
            msgpack::completion(&id, expected),
            "echo of {sent:?}"
        );
    }
    server.stop().await
}

/// Connect, send `bytes`, and expect a Close `[7, error, false]` whose error
/// contains `detail`, then a WebSocket close (1000).
async fn closes_with_error(
    server: &TestServer,
    bytes: Vec<u8>,
    detail: &str,
) -> anyhow::Result<()> {
    let (mut client, _) = MsgpackClient::connect(server).await?;
    client.send_raw(bytes).await?;
    let (seen, code) = client.until_closed().await?;
    let seen: Vec<Value> = seen.into_iter().filter(|m| !msgpack::is(m, 6)).collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let close = seen[0].as_array().cloned().unwrap_or_default();
    assert_eq!(close.len(), 3, "{close:?}");
    assert_eq!(close[0], Value::from(7));
    let error = close[1].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Connection closed with an error.") && error.contains(detail),
        "expected {detail:?} in {close:?}"
    );
    assert_eq!(close[2], Value::Boolean(false));
    assert_eq!(code, Some(CloseCode::Normal));
    Ok(())
}

#[tokio::test]
async fn malformed_messages_close_with_an_error() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    // Not an array.
    closes_with_error(&server, msgpack::frame(&s("hello")), "an array").await?;
    closes_with_error(&server, msgpack::frame(&Value::Map(vec![])), "an array").await?;
    // A type that is not an integer.
    closes_with_error(
        &server,
        msgpack::frame(&Value::Array(vec![s("1")])),
        "message type",
    )
    .await?;
    // A length prefix of six bytes.
    closes_with_error(&server, vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01], "5 bytes").await?;
    // A length over 2^31 - 1 (five bytes, the last too big).
    closes_with_error(&server, vec![0xff, 0xff, 0xff, 0xff, 0x0f], "2^31").await?;
    // Not MessagePack: a str8 without its length.
    closes_with_error(
        &server,
        msgpack::frame_bytes(&[0xd9]),
        "invalid MessagePack",
    )
    .await?;
    // A frame whose body is a truncated array.
    closes_with_error(
        &server,
        msgpack::frame_bytes(&[0x93, 0x01]),
        "invalid MessagePack",
    )
    .await?;
    // An invocation without arguments, and one whose target is not text.
    closes_with_error(
        &server,
        msgpack::frame(&Value::Array(vec![
            Value::from(1),
            msgpack::headers(),
            s("1"),
            s("Echo"),
        ])),
        "invocation",
    )
    .await?;
    closes_with_error(
        &server,
        msgpack::frame(&Value::Array(vec![
            Value::from(1),
            msgpack::headers(),
            s("1"),
            Value::from(5),
            Value::Array(vec![]),
        ])),
        "target",
    )
    .await?;
    // Stateful reconnect's Ack and Sequence need an integer.
    closes_with_error(
        &server,
        msgpack::frame(&Value::Array(vec![Value::from(8)])),
        "'sequenceId' must be an integer",
    )
    .await?;
    closes_with_error(
        &server,
        msgpack::frame(&Value::Array(vec![Value::from(9), s("1")])),
        "'sequenceId' must be an integer",
    )
    .await?;
    // An unsupported extension type in the arguments.
    closes_with_error(
        &server,
        msgpack::frame(&msgpack::invocation(
            Some("1"),
            "Echo",
            vec![Value::Ext(5, vec![1])],
        )),
        "extension",
    )
    .await?;
    // Over the maximum message size.
    let limit = server.state.settings.connection.max_message_size;
    closes_with_error(
        &server,
        msgpack::frame(&msgpack::invocation(
            Some("1"),
            "Echo",
            vec![s(&"x".repeat(limit + 1))],
        )),
        "maximum message size",
    )
    .await?;
    server.stop().await
}

#[tokio::test]
async fn the_clients_close_ends_the_connection_quietly() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut client, _) = MsgpackClient::connect(&server).await?;
    // The JS client's two-element Close.
    client
        .send(&Value::Array(vec![Value::from(7), Value::Nil]))
        .await?;
    let (seen, code) = client.until_closed().await?;
    let seen: Vec<Value> = seen.into_iter().filter(|m| !msgpack::is(m, 6)).collect();
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(code, Some(CloseCode::Normal));
    server.stop().await
}

#[tokio::test]
async fn a_stopping_server_sends_a_binary_close_that_allows_reconnecting() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut client, _) = MsgpackClient::connect(&server).await?;
    assert_eq!(
        client.invoke("1", "Echo", vec![Value::from(1)]).await?,
        msgpack::completion("1", Value::from(1))
    );
    server.stop().await?;
    let (seen, code) = client.until_closed().await?;
    let seen: Vec<Value> = seen.into_iter().filter(|m| !msgpack::is(m, 6)).collect();
    assert_eq!(
        seen,
        vec![Value::Array(vec![
            Value::from(7),
            Value::Nil,
            Value::Boolean(true)
        ])]
    );
    assert_eq!(code, Some(CloseCode::Normal));
    Ok(())
}
