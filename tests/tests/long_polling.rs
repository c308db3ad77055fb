//! Long polling on the wire: negotiate, the first poll, the handshake and
//! hub messages over POST and polls, poll timeout, superseded polls, DELETE,
//! the disconnect timeout, every 400/404/405, malformed and oversized bodies,
//! and MessagePack (binary) over long polling.

use hubhost::config::Config;
use hubhost_tests::transports::msgpack::{self, s};
use hubhost_tests::transports::{
    HANDSHAKE_OK, JSON_HANDSHAKE, LongPoll, MSGPACK_HANDSHAKE, Reply, json_messages, negotiate,
};
use hubhost_tests::{PATIENCE, RawClient, TestServer, config, wait_until_async};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const HUB: &str = "/demo/chat";

/// A config whose polls wait `poll_ms` at most (well under [`PATIENCE`]).
fn config_with(poll_ms: u64, disconnect_ms: u64) -> Config {
    let mut config = config();
    config.connection.poll_timeout_ms = poll_ms;
    config.connection.disconnect_timeout_ms = disconnect_ms;
    config
}

async fn server() -> anyhow::Result<TestServer> {
    TestServer::start(config_with(5_000, 15_000)).await
}

/// Negotiate and return a long-polling client for the new token.
async fn long_poll(server: &TestServer) -> anyhow::Result<LongPoll> {
    let negotiated = negotiate(server.addr, HUB).await?;
    Ok(LongPoll::new(server.addr, HUB, &negotiated.token))
}

/// A long-polling connection past its JSON handshake.
async fn started(server: &TestServer) -> anyhow::Result<LongPoll> {
    let lp = long_poll(server).await?;
    assert_eq!(lp.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
    Ok(lp)
}

fn invocation(id: &str, target: &str, args: Value) -> String {
    format!(
        "{}\u{1e}",
        json!({"type": 1, "invocationId": id, "target": target, "arguments": args})
    )
}

/// Poll until the JSON messages received include a Completion for each of
/// `ids`; returns all the messages, in order.
async fn completions(lp: &LongPoll, ids: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut seen = Vec::new();
    while !ids.iter().all(|id| {
        seen.iter()
            .any(|m: &Value| m["type"] == 3 && m["invocationId"] == *id)
    }) {
        seen.extend(json_messages(&lp.next_data().await?)?);
    }
    Ok(seen)
}

/// The headers every poll response carries.
fn assert_no_cache(reply: &Reply) {
    assert_eq!(
        reply.header("cache-control"),
        Some("no-cache, no-store"),
        "{reply:?}"
    );
    assert_eq!(reply.header("pragma"), Some("no-cache"), "{reply:?}");
    assert_eq!(
        reply.header("expires"),
        Some("Thu, 01 Jan 1970 00:00:00 GMT"),
        "{reply:?}"
    );
}

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
    let waiting = tokio::spawn({
        let lp = lp.clone();
        async move { lp.poll().await }
    });
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
    let limit = server.state.settings.max_websocket_message;
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
async fn negotiate_version_0_polls_with_the_connection_id() -> anyhow::Result<()> {
    let server = server().await?;
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

#[tokio::test]
async fn a_stopping_server_answers_the_waiting_poll_with_a_close() -> anyhow::Result<()> {
    // Polls wait up to 8 s; the server must not wait for them to stop.
    let server = TestServer::start(config_with(8_000, 15_000)).await?;
    let lp = started(&server).await?;
    let waiting = tokio::spawn({
        let lp = lp.clone();
        async move { lp.poll().await }
    });
    // A later request has made the round trip: the poll is waiting by now.
    lp.post("{\"type\":6}\u{1e}").await?;
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
