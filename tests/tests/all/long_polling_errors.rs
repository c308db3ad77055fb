//! Long polling's refusals: every 400, 404 and 405, tokens of other hubs
//! and transports, and malformed, refused or oversized input closing the
//! connection with an error.

use hubhost_tests::transports::long_polling::*;
use hubhost_tests::transports::msgpack::{self, s};
use hubhost_tests::transports::{
    HANDSHAKE_OK, JSON_HANDSHAKE, LongPoll, MSGPACK_HANDSHAKE, json_messages, negotiate,
};
use hubhost_tests::{RawClient, TestServer};
use serde_json::json;

#[tokio::test]
async fn delete_is_only_for_long_polling_connections() -> anyhow::Result<()> {
    let server = server().await?;
    // Server-Sent Events.
    let sse = negotiate(server.addr, HUB).await?;
    let url = server.url(&format!("{HUB}?id={}", sse.token));
    let mut events = hubhost_tests::transports::EventStream::open(&url, &[]).await?;
    assert_eq!(events.status, 200);
    assert_eq!(events.take(3).await?, b":\r\n");
    let reply = LongPoll::new(server.addr, HUB, &sse.token).delete().await?;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(
        reply.text(),
        "Cannot terminate this connection using the DELETE endpoint."
    );
    // WebSockets.
    let ws = negotiate(server.addr, HUB).await?;
    let mut client = RawClient::open(server.addr, &format!("{HUB}?id={}", ws.token)).await?;
    client.send_text(JSON_HANDSHAKE).await?;
    assert_eq!(client.next().await?, json!({}));
    let reply = LongPoll::new(server.addr, HUB, &ws.token).delete().await?;
    assert_eq!(reply.status, 400, "{reply:?}");
    // Negotiated, no transport yet.
    let fresh = negotiate(server.addr, HUB).await?;
    let reply = LongPoll::new(server.addr, HUB, &fresh.token)
        .delete()
        .await?;
    assert_eq!(reply.status, 400, "{reply:?}");
    // None of them was ended by it.
    assert_eq!(
        client.invoke("1", "Echo", json!(["still"])).await?["result"],
        "still"
    );
    let lp = LongPoll::new(server.addr, HUB, &sse.token);
    assert_eq!(lp.post(JSON_HANDSHAKE).await?.status, 200);
    assert_eq!(events.next_messages().await?, vec![json!({})]);
    server.stop().await
}

#[tokio::test]
async fn requests_without_an_id_are_bad_requests() -> anyhow::Result<()> {
    let server = server().await?;
    let lp = LongPoll::with_url(server.url(HUB));
    for reply in [
        lp.poll().await?,
        lp.post(JSON_HANDSHAKE).await?,
        lp.delete().await?,
    ] {
        assert_eq!(reply.status, 400, "{reply:?}");
        assert_eq!(reply.text(), "Connection ID required");
    }
    server.stop().await
}

#[tokio::test]
async fn unknown_ids_are_not_found() -> anyhow::Result<()> {
    let server = server().await?;
    let real = negotiate(server.addr, HUB).await?.token;
    // A token of this node's shape that was never handed out.
    let mut forged: Vec<char> = real.chars().collect();
    forged[15] = if forged[15] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    for token in ["nope", "", forged.as_str()] {
        let lp = LongPoll::new(server.addr, HUB, token);
        for reply in [
            lp.poll().await?,
            lp.post(JSON_HANDSHAKE).await?,
            lp.delete().await?,
        ] {
            assert_eq!(reply.status, 404, "token {token:?}: {reply:?}");
        }
    }
    server.stop().await
}

#[tokio::test]
async fn websocket_connections_refuse_post_and_polls() -> anyhow::Result<()> {
    let server = server().await?;
    let ws = negotiate(server.addr, HUB).await?;
    let mut client = RawClient::open(server.addr, &format!("{HUB}?id={}", ws.token)).await?;
    client.send_text(JSON_HANDSHAKE).await?;
    assert_eq!(client.next().await?, json!({}));
    let lp = LongPoll::new(server.addr, HUB, &ws.token);
    let posted = lp.post(invocation("x", "Echo", json!([1]))).await?;
    assert_eq!(posted.status, 405, "{posted:?}");
    let polled = lp.poll().await?;
    assert_eq!(polled.status, 400, "{polled:?}");
    assert_eq!(polled.text(), "Cannot change transports mid-connection");
    // The refused POST never reached the connection.
    assert_eq!(client.invoke("1", "Echo", json!([2])).await?["result"], 2);
    assert!(client.pending().is_empty(), "{:?}", client.pending());
    server.stop().await
}

#[tokio::test]
async fn a_token_works_only_on_its_own_hub() -> anyhow::Result<()> {
    let server = server().await?;
    let negotiated = negotiate(server.addr, HUB).await?;
    let elsewhere = LongPoll::new(server.addr, "/demo/faulty", &negotiated.token);
    for reply in [
        elsewhere.poll().await?,
        elsewhere.post(JSON_HANDSHAKE).await?,
        elsewhere.delete().await?,
    ] {
        assert_eq!(reply.status, 404, "{reply:?}");
    }
    // Untouched on its own hub.
    let lp = LongPoll::new(server.addr, HUB, &negotiated.token);
    assert_eq!(lp.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
    // And once started, still not on the other.
    assert_eq!(elsewhere.post(JSON_HANDSHAKE).await?.status, 404);
    assert_eq!(elsewhere.poll().await?.status, 404);
    server.stop().await
}

/// Start a connection, POST `body`, and expect a Close whose error contains
/// `detail` on the next poll, then 204 (stop), then 404.
async fn closes_with_error(server: &TestServer, body: &[u8], detail: &str) -> anyhow::Result<()> {
    let lp = started(server).await?;
    let posted = lp.post(body).await?;
    assert_eq!(posted.status, 200, "{posted:?}");
    let messages = json_messages(&lp.next_data().await?)?;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let close = &messages[0];
    assert_eq!(close["type"], 7, "{close}");
    let error = close["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Connection closed with an error.") && error.contains(detail),
        "{close}"
    );
    assert!(close.get("allowReconnect").is_none(), "{close}");
    let last = lp.poll().await?;
    assert_eq!(last.status, 204, "{last:?}");
    assert_eq!(lp.poll().await?.status, 404);
    Ok(())
}

#[tokio::test]
async fn malformed_messages_close_the_connection_with_an_error() -> anyhow::Result<()> {
    let server = server().await?;
    closes_with_error(&server, b"{\"type\":1,\"target\":\x1e", "invalid JSON").await?;
    closes_with_error(&server, b"not json at all\x1e", "invalid JSON").await?;
    closes_with_error(
        &server,
        b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\"}\x1e",
        "arguments",
    )
    .await?;
    closes_with_error(
        &server,
        b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":{}}\x1e",
        "arguments",
    )
    .await?;
    server.stop().await
}

#[tokio::test]
async fn a_refused_handshake_is_answered_then_the_connection_ends() -> anyhow::Result<()> {
    let server = server().await?;
    for (request, error) in [
        (
            "{\"protocol\":\"nope\",\"version\":1}\u{1e}".to_owned(),
            "The protocol 'nope' is not supported.",
        ),
        (
            "{\"protocol\":\"json\",\"version\":3}\u{1e}".to_owned(),
            "The server does not support version 3 of the 'json' protocol.",
        ),
        // Over the maximum message size (32 KiB) without its separator.
        (" ".repeat(40 * 1024), "Handshake was canceled."),
    ] {
        let lp = long_poll(&server).await?;
        assert_eq!(lp.poll().await?.status, 200);
        assert_eq!(lp.post(request).await?.status, 200);
        assert_eq!(
            json_messages(&lp.next_data().await?)?,
            vec![json!({ "error": error })]
        );
        assert_eq!(lp.poll().await?.status, 204);
    }
    server.stop().await
}

#[tokio::test]
async fn an_oversized_post_is_a_bad_request() -> anyhow::Result<()> {
    let server = server().await?;
    let limit = server.state.settings.connection.max_transport_message();
    let lp = started(&server).await?;
    // A body one byte over the limit, of otherwise harmless Pings.
    let ping = b"{\"type\":6}\x1e";
    let body: Vec<u8> = ping.iter().copied().cycle().take(limit + 1).collect();
    let reply = lp.post(body).await?;
    assert_eq!(reply.status, 400, "{:?}", reply.status);
    assert_eq!(reply.text(), "Unable to read the request body");
    // Nothing of it reached the connection, which carries on.
    lp.post(invocation("1", "Echo", json!(["fine"]))).await?;
    assert_eq!(
        json_messages(&lp.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "1", "result": "fine"})]
    );
    server.stop().await
}

#[tokio::test]
async fn malformed_messagepack_over_long_polling_closes_with_an_error() -> anyhow::Result<()> {
    let server = server().await?;
    for (body, detail) in [
        // Not an array.
        (msgpack::frame(&s("hello")), "an array"),
        // A length prefix of six bytes.
        (vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01], "5 bytes"),
        // An invocation with its arguments missing.
        (
            msgpack::frame(&rmpv::Value::Array(vec![
                rmpv::Value::from(1),
                msgpack::headers(),
                s("1"),
                s("Echo"),
            ])),
            "invocation",
        ),
    ] {
        let lp = long_poll(&server).await?;
        assert_eq!(lp.start(MSGPACK_HANDSHAKE).await?, HANDSHAKE_OK);
        assert_eq!(lp.post(body).await?.status, 200);
        let messages = msgpack::unframe(&lp.next_data().await?)?;
        assert_eq!(messages.len(), 1, "{messages:?}");
        let close = messages[0].as_array().cloned().unwrap_or_default();
        assert_eq!(close.len(), 3, "{close:?}");
        assert_eq!(close[0], rmpv::Value::from(7));
        let error = close[1].as_str().unwrap_or_default();
        assert!(
            error.starts_with("Connection closed with an error.") && error.contains(detail),
            "{close:?}"
        );
        assert_eq!(close[2], rmpv::Value::Boolean(false));
        assert_eq!(lp.poll().await?.status, 204);
    }
    server.stop().await
}

#[tokio::test]
async fn other_methods_and_unknown_hubs() -> anyhow::Result<()> {
    let server = server().await?;
    let token = negotiate(server.addr, HUB).await?.token;
    let http = hubhost_tests::transports::http_client();
    let send = |method: &str, path: String| {
        let method = reqwest::Method::from_bytes(method.as_bytes());
        let url = server.url(&path);
        let http = http.clone();
        async move { hubhost_tests::transports::send(http.request(method?, url)).await }
    };
    // The hub's endpoint takes GET, POST and DELETE; negotiate only POST.
    assert_eq!(send("PUT", format!("{HUB}?id={token}")).await?.status, 405);
    assert_eq!(
        send("PATCH", format!("{HUB}?id={token}")).await?.status,
        405
    );
    assert_eq!(send("GET", format!("{HUB}/negotiate")).await?.status, 405);
    // A hub nobody serves: 404 whatever the request.
    let lp = LongPoll::new(server.addr, "/demo/none", &token);
    for reply in [
        lp.poll().await?,
        lp.post(JSON_HANDSHAKE).await?,
        lp.delete().await?,
    ] {
        assert_eq!(reply.status, 404, "{reply:?}");
    }
    assert_eq!(
        send("POST", "/demo/none/negotiate".into()).await?.status,
        404
    );
    // None of this touched the token.
    let lp = LongPoll::new(server.addr, HUB, &token);
    assert_eq!(lp.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
    server.stop().await
}

#[tokio::test]
async fn other_transports_cannot_take_over_a_long_polling_token() -> anyhow::Result<()> {
    let server = server().await?;
    let negotiated = negotiate(server.addr, HUB).await?;
    let lp = LongPoll::new(server.addr, HUB, &negotiated.token);
    assert_eq!(lp.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
    let events = hubhost_tests::transports::EventStream::open(
        &server.url(&format!("{HUB}?id={}", negotiated.token)),
        &[],
    )
    .await?;
    assert_eq!(events.status, 400);
    match RawClient::open(server.addr, &format!("{HUB}?id={}", negotiated.token)).await {
        Err(error) => assert!(error.to_string().contains("400"), "{error}"),
        Ok(_) => anyhow::bail!("a WebSocket took over a long-polling connection"),
    }
    // Still a working long-polling connection.
    lp.post(invocation("1", "Echo", json!(["mine"]))).await?;
    assert_eq!(
        json_messages(&lp.next_data().await?)?,
        vec![json!({"type": 3, "invocationId": "1", "result": "mine"})]
    );
    server.stop().await
}

/// At most four POSTs of one connection are in progress at once (the
/// official clients send one at a time); one more is refused with 429
/// before its body is read, and the connection goes on.
#[tokio::test]
async fn concurrent_posts_of_one_connection_are_bounded() -> anyhow::Result<()> {
    let mut config = config_with(5_000, 15_000);
    // The hub call that keeps the connection from reading ends by then.
    config.hub_limits.call_timeout = std::time::Duration::from_millis(2_000);
    let server = TestServer::start(config).await?;
    let hub = "/demo/faulty";
    let negotiated = negotiate(server.addr, hub).await?;
    let lp = LongPoll::new(server.addr, hub, &negotiated.token);
    assert_eq!(lp.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
    // The connection reads no more while the hub loops; 16 POSTs fill its
    // input, and the next ones wait.
    assert_eq!(
        lp.post(invocation("loop", "Loop", json!([]))).await?.status,
        200
    );
    for _ in 0..16 {
        assert_eq!(lp.post("{\"type\":6}\u{1e}").await?.status, 200);
    }
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let lp = lp.clone();
            tokio::spawn(async move { lp.post("{\"type\":6}\u{1e}").await })
        })
        .collect();
    hubhost_tests::wait_until_async(hubhost_tests::PATIENCE, || async {
        matches!(lp.requests_on(&server.state), Ok(Some(4)))
    })
    .await?;
    let refused = lp.post("{\"type\":6}\u{1e}").await?;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(
        refused.text(),
        "Too many sends in progress on this connection."
    );
    for post in waiting {
        assert_eq!(post.await??.status, 200, "the waiting ones get in");
    }
    assert_eq!(
        lp.post("{\"type\":6}\u{1e}").await?.status,
        200,
        "and later ones"
    );
    server.stop().await
}
