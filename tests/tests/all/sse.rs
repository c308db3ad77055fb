//! Server-Sent Events on the wire: the response head and first bytes, one
//! event per transport message, client messages by POST, the 400/404/409
//! answers, MessagePack refused, and the connection ending with its stream.

use hubhost_tests::transports::{
    EventStream, JSON_HANDSHAKE, LongPoll, MSGPACK_HANDSHAKE, negotiate,
};
use hubhost_tests::{PATIENCE, RawClient, TestServer, config, wait_until_async};
use serde_json::json;
use std::net::SocketAddr;

const HUB: &str = "/demo/chat";

fn url(addr: SocketAddr, hub: &str, token: &str) -> String {
    format!("http://{addr}{hub}?id={token}")
}

/// A negotiated connection's open event stream (past its first comment)
/// and a client for its POSTs.
async fn open(server: &TestServer) -> anyhow::Result<(EventStream, LongPoll)> {
    let negotiated = negotiate(server.addr, HUB).await?;
    let mut events = EventStream::open(&url(server.addr, HUB, &negotiated.token), &[]).await?;
    assert_eq!(events.status, 200);
    assert_eq!(events.take(3).await?, b":\r\n");
    Ok((events, LongPoll::new(server.addr, HUB, &negotiated.token)))
}

/// [`open`], then the JSON handshake.
async fn connected(server: &TestServer) -> anyhow::Result<(EventStream, LongPoll)> {
    let (mut events, post) = open(server).await?;
    assert_eq!(post.post(JSON_HANDSHAKE).await?.status, 200);
    assert_eq!(events.next_event().await?, "data: {}\u{1e}\r\n\r\n");
    Ok((events, post))
}

#[tokio::test]
async fn the_stream_opens_with_a_comment_and_carries_one_event_per_message() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let negotiated = negotiate(server.addr, HUB).await?;
    let mut events = EventStream::open(
        &url(server.addr, HUB, &negotiated.token),
        // As browsers send it: the event-stream type among others.
        &[("accept", "text/event-stream, */*;q=0.1")],
    )
    .await?;
    assert_eq!(events.status, 200);
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    assert_eq!(events.header("cache-control"), Some("no-cache,no-store"));
    assert_eq!(events.header("pragma"), Some("no-cache"));
    assert_eq!(events.header("content-encoding"), Some("identity"));
    assert_eq!(
        events.header("content-length"),
        None,
        "a stream has no length"
    );
    // The first bytes, before anything happens: a comment line.
    assert_eq!(events.take(3).await?, b":\r\n");

    let post = LongPoll::new(server.addr, HUB, &negotiated.token);
    let reply = post.post(JSON_HANDSHAKE).await?;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(events.next_event().await?, "data: {}\u{1e}\r\n\r\n");

    let invocation = json!({"type": 1, "invocationId": "1", "target": "Echo",
                            "arguments": ["line one\nline two"]});
    assert_eq!(post.post(format!("{invocation}\u{1e}")).await?.status, 200);
    assert_eq!(
        events.next_event().await?,
        "data: {\"type\":3,\"invocationId\":\"1\",\"result\":\"line one\\nline two\"}\u{1e}\r\n\r\n"
    );
    let invocation = json!({"type": 1, "invocationId": "2", "target": "WhoAmI", "arguments": []});
    assert_eq!(post.post(format!("{invocation}\u{1e}")).await?.status, 200);
    assert_eq!(
        events.next_messages().await?,
        vec![json!({"type": 3, "invocationId": "2",
                    "result": {"connectionId": negotiated.connection_id, "userId": null}})]
    );

    // Broadcasts from a WebSocket client arrive as events too.
    let (mut ws, _) = RawClient::connect(&server, HUB).await?;
    ws.invoke("b", "SendMessage", json!(["ann", "to all 😀"]))
        .await?;
    assert_eq!(
        events.next_messages().await?,
        vec![json!({"type": 1, "target": "ReceiveMessage", "arguments": ["ann", "to all 😀"]})]
    );
    server.stop().await
}

#[tokio::test]
async fn a_second_request_for_an_event_stream_token_is_refused() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let negotiated = negotiate(server.addr, HUB).await?;
    let stream_url = url(server.addr, HUB, &negotiated.token);
    let mut events = EventStream::open(&stream_url, &[]).await?;
    assert_eq!(events.take(3).await?, b":\r\n");

    // A second stream for the same id: 409.
    let mut second = EventStream::open(&stream_url, &[]).await?;
    assert_eq!(second.status, 409);
    assert_eq!(
        String::from_utf8(second.rest().await?)?,
        "Connection ID is already in use"
    );
    // A long poll on it: 400, another transport.
    let poll = LongPoll::new(server.addr, HUB, &negotiated.token)
        .poll()
        .await?;
    assert_eq!(poll.status, 400, "{poll:?}");
    assert_eq!(poll.text(), "Cannot change transports mid-connection");
    // A WebSocket on it: 400 as well.
    let ws = tokio_tungstenite::connect_async(format!(
        "ws://{}{HUB}?id={}",
        server.addr, negotiated.token
    ))
    .await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400)
        }
        other => panic!(
            "expected HTTP 400, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // The first stream is unharmed.
    let post = LongPoll::new(server.addr, HUB, &negotiated.token);
    assert_eq!(post.post(JSON_HANDSHAKE).await?.status, 200);
    assert_eq!(events.next_event().await?, "data: {}\u{1e}\r\n\r\n");
    server.stop().await
}

#[tokio::test]
async fn missing_and_unknown_ids() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let mut missing = EventStream::open(&server.url(HUB), &[]).await?;
    assert_eq!(missing.status, 400);
    assert_eq!(
        String::from_utf8(missing.rest().await?)?,
        "Connection ID required"
    );
    let unknown = EventStream::open(&url(server.addr, HUB, "nope"), &[]).await?;
    assert_eq!(unknown.status, 404);
    // A token of another hub.
    let negotiated = negotiate(server.addr, HUB).await?;
    let elsewhere =
        EventStream::open(&url(server.addr, "/demo/faulty", &negotiated.token), &[]).await?;
    assert_eq!(elsewhere.status, 404);
    // A hub that does not exist.
    let no_hub = EventStream::open(&url(server.addr, "/demo/none", &negotiated.token), &[]).await?;
    assert_eq!(no_hub.status, 404);
    server.stop().await
}

#[tokio::test]
async fn messagepack_is_refused_on_server_sent_events() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut events, post) = open(&server).await?;
    assert_eq!(post.post(MSGPACK_HANDSHAKE).await?.status, 200);
    assert_eq!(
        events.next_event().await?,
        "data: {\"error\":\"Cannot use the 'messagepack' protocol on the current transport. \
         The transport does not support 'Binary' transfer format.\"}\u{1e}\r\n\r\n"
    );
    // Then the stream ends, and the connection with it.
    assert_eq!(events.rest().await?, b"");
    let reply = post.post(JSON_HANDSHAKE).await?;
    assert_eq!(reply.status, 404, "{reply:?}");
    server.stop().await
}

#[tokio::test]
async fn a_malformed_message_closes_with_an_error_and_ends_the_stream() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut events, post) = connected(&server).await?;
    assert_eq!(post.post("{\"type\":1,\u{1e}").await?.status, 200);
    let messages = events.next_messages().await?;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["type"], 7, "{messages:?}");
    let error = messages[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Connection closed with an error. invalid JSON"),
        "{error}"
    );
    assert_eq!(events.rest().await?, b"");
    wait_until_async(PATIENCE, || async {
        matches!(post.post("{\"type\":6}\u{1e}").await, Ok(reply) if reply.status == 404)
    })
    .await?;
    server.stop().await
}

#[tokio::test]
async fn dropping_the_stream_ends_the_connection() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let negotiated = negotiate(server.addr, HUB).await?;
    let stream_url = url(server.addr, HUB, &negotiated.token);
    let mut events = EventStream::open(&stream_url, &[]).await?;
    assert_eq!(events.take(3).await?, b":\r\n");
    let post = LongPoll::new(server.addr, HUB, &negotiated.token);
    assert_eq!(post.post(JSON_HANDSHAKE).await?.status, 200);
    assert_eq!(events.next_event().await?, "data: {}\u{1e}\r\n\r\n");
    drop(events);
    wait_until_async(PATIENCE, || async {
        matches!(post.post("{\"type\":6}\u{1e}").await, Ok(reply) if reply.status == 404)
    })
    .await?;
    // Gone for good: once the connection has ended (the hub told), the token
    // is released and a new stream for it is not found either.
    wait_until_async(PATIENCE, || async {
        matches!(EventStream::open(&stream_url, &[]).await, Ok(events) if events.status == 404)
    })
    .await?;
    assert!(
        server.state.tokens.is_empty(),
        "{} tokens left",
        server.state.tokens.len()
    );
    server.stop().await
}
