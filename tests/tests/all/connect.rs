//! Negotiate, connection tokens, the handshake and shutdown, over real
//! sockets with a raw client.

use hubhost_tests::{RawClient, TestServer, config, http};
use serde_json::{Value, json};
use std::time::Duration;

async fn server() -> anyhow::Result<TestServer> {
    TestServer::start(config()).await
}

async fn handshake_reply(server: &TestServer, request: &str) -> anyhow::Result<Value> {
    let mut client = RawClient::open(server.addr, "/demo/chat").await?;
    client.send_text(request).await?;
    client.next().await
}

#[tokio::test]
async fn handshake_accepts_json_versions_1_and_2() -> anyhow::Result<()> {
    let server = server().await?;
    for version in [0, 1, 2] {
        let request = format!("{{\"protocol\":\"json\",\"version\":{version}}}\u{1e}");
        assert_eq!(handshake_reply(&server, &request).await?, json!({}));
    }
    server.stop().await
}

#[tokio::test]
async fn handshake_errors_name_the_problem() -> anyhow::Result<()> {
    let server = server().await?;
    let cases = [
        (
            "{\"protocol\":\"protobuf\",\"version\":1}\u{1e}",
            "The protocol 'protobuf' is not supported.",
        ),
        (
            "{\"protocol\":\"xml\",\"version\":1}\u{1e}",
            "The protocol 'xml' is not supported.",
        ),
        (
            "{\"protocol\":\"json\",\"version\":3}\u{1e}",
            "The server does not support version 3 of the 'json' protocol.",
        ),
    ];
    for (request, error) in cases {
        let mut client = RawClient::open(server.addr, "/demo/chat").await?;
        client.send_text(request).await?;
        assert_eq!(client.next().await?, json!({ "error": error }));
        let (_, closed) = client.drain().await;
        assert!(closed, "the server closes after a refused handshake");
    }
    let reply = handshake_reply(&server, "{\"version\":1}\u{1e}").await?;
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("Missing required property 'protocol'"))
    );
    let reply = handshake_reply(&server, "not json\u{1e}").await?;
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("An unexpected error occurred"))
    );
    server.stop().await
}

#[tokio::test]
async fn handshake_times_out() -> anyhow::Result<()> {
    let mut config = config();
    config.connection.handshake_timeout = std::time::Duration::from_millis(200);
    let server = TestServer::start(config).await?;
    let mut client = RawClient::open(server.addr, "/demo/chat").await?;
    assert_eq!(
        client.next().await?,
        json!({ "error": "Handshake was canceled." })
    );
    server.stop().await
}

#[tokio::test]
async fn oversize_handshake_is_canceled() -> anyhow::Result<()> {
    let mut config = config();
    config.connection.max_message_size = 100;
    let server = TestServer::start(config).await?;
    let request = format!(
        "{{\"protocol\":\"json\",\"version\":1,\"pad\":\"{}\"}}\u{1e}",
        "x".repeat(200)
    );
    assert_eq!(
        handshake_reply(&server, &request).await?,
        json!({ "error": "Handshake was canceled." })
    );
    server.stop().await
}

#[tokio::test]
async fn bytes_after_the_handshake_are_messages() -> anyhow::Result<()> {
    let server = server().await?;
    let mut client = RawClient::open(server.addr, "/demo/chat").await?;
    client
        .send_text(
            "{\"protocol\":\"json\",\"version\":1}\u{1e}{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[7]}\u{1e}",
        )
        .await?;
    assert_eq!(client.next().await?, json!({}));
    assert_eq!(
        client.next().await?,
        json!({"type": 3, "invocationId": "1", "result": 7})
    );
    server.stop().await
}

#[tokio::test]
async fn shutdown_closes_clients_with_allow_reconnect() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    let stopping = tokio::spawn(server.stop());
    let close = client.next_where(|m| m["type"] == 7).await?;
    assert_eq!(close, json!({"type": 7, "allowReconnect": true}));
    // Then a normal WebSocket close (1000): the Close message said why.
    let (rest, code) = client.until_closed().await;
    assert_eq!(code, Some(1000), "after {rest:?}");
    stopping.await??;
    Ok(())
}

#[tokio::test]
async fn negotiate_follows_the_spec() -> anyhow::Result<()> {
    let server = server().await?;
    let (status, body) = server
        .negotiate("/demo/chat", "?negotiateVersion=1")
        .await?;
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(status, 200);
    assert_eq!(body["negotiateVersion"], 1);
    let id = body["connectionId"].as_str().unwrap_or_default();
    let token = body["connectionToken"].as_str().unwrap_or_default();
    // The token: the owning node's id and 16 random bytes.
    assert_eq!((id.len(), token.len()), (22, 30));
    assert_ne!(id, token);
    assert_eq!(
        body["availableTransports"],
        json!([
            { "transport": "WebSockets", "transferFormats": ["Text", "Binary"] },
            { "transport": "ServerSentEvents", "transferFormats": ["Text"] },
            { "transport": "LongPolling", "transferFormats": ["Text", "Binary"] },
        ])
    );
    assert!(body.get("ProtocolVersion").is_none());

    // Version 0 is refused unless the operator allows it: its token is the
    // connection id, which other clients learn.
    let (status, refused) = server.negotiate("/demo/chat", "").await?;
    let refused: Value = serde_json::from_str(&refused)?;
    assert_eq!(status, 200);
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("Negotiate version 0 is not allowed on this server")),
        "{refused}"
    );
    assert!(refused.get("connectionId").is_none(), "{refused}");
    let server = {
        let mut config = config();
        config.connection.allow_negotiate_v0 = true;
        TestServer::start(config).await?
    };
    // Allowed, version 0: no token; the id is what the transport uses.
    // Higher: clamped to 1.
    let (_, v0) = server.negotiate("/demo/chat", "").await?;
    let v0: Value = serde_json::from_str(&v0)?;
    assert_eq!(v0["negotiateVersion"], 0);
    assert!(v0.get("connectionToken").is_none());
    let v0_id = v0["connectionId"].as_str().unwrap_or_default().to_owned();
    let mut v0_client = RawClient::open(server.addr, &format!("/demo/chat?id={v0_id}")).await?;
    v0_client
        .send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
        .await?;
    assert_eq!(v0_client.next().await?, json!({}));
    let (_, v7) = server
        .negotiate("/demo/chat", "?negotiateVersion=7")
        .await?;
    assert_eq!(serde_json::from_str::<Value>(&v7)?["negotiateVersion"], 1);

    // Errors are HTTP 200 with an error body.
    let (status, body) = server
        .negotiate("/demo/chat", "?negotiateVersion=abc")
        .await?;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            r#"{"error":"The client requested a non-integer protocol version."}"#
        )
    );
    let (_, body) = server
        .negotiate("/demo/chat", "?negotiateVersion=-1")
        .await?;
    assert!(body.contains("The client requested version '-1'"));

    // Unknown hub or tenant: 404. Wrong method: 405.
    assert_eq!(server.negotiate("/demo/nope", "").await?.0, 404);
    assert_eq!(server.negotiate("/Bad_Tenant/chat", "").await?.0, 404);
    assert_eq!(
        http(server.addr, "GET", "/demo/chat/negotiate").await?.0,
        405
    );
    assert_eq!(
        http(server.addr, "GET", "/healthz").await?,
        (200, "ok".into())
    );
    server.stop().await
}

#[tokio::test]
async fn connection_tokens_are_single_use() -> anyhow::Result<()> {
    let server = server().await?;
    let (_, body) = server
        .negotiate("/demo/chat", "?negotiateVersion=1")
        .await?;
    let token = serde_json::from_str::<Value>(&body)?["connectionToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let path = format!("/demo/chat?id={token}");
    let first = RawClient::open(server.addr, &path).await?;
    let second = RawClient::open(server.addr, &path).await;
    assert!(
        second.is_err_and(|e| e.to_string().contains("409")),
        "a live token cannot be reused"
    );
    assert!(
        RawClient::open(server.addr, "/demo/chat?id=unknown")
            .await
            .is_err_and(|e| e.to_string().contains("404"))
    );
    // A token of another hub is unknown there.
    assert!(
        RawClient::open(server.addr, &format!("/demo/faulty?id={token}"))
            .await
            .is_err_and(|e| e.to_string().contains("404"))
    );
    // Without an upgrade the GET is refused: only WebSockets are served.
    assert_eq!(http(server.addr, "GET", &path).await?.0, 400);
    assert_eq!(http(server.addr, "GET", "/demo/chat").await?.0, 400);
    drop(first);
    server.stop().await
}

#[tokio::test]
async fn unclaimed_tokens_expire() -> anyhow::Result<()> {
    let mut config = config();
    config.connection.disconnect_timeout = std::time::Duration::from_millis(150);
    let server = TestServer::start(config).await?;
    let (_, body) = server
        .negotiate("/demo/chat", "?negotiateVersion=1")
        .await?;
    let token = serde_json::from_str::<Value>(&body)?["connectionToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let deadline = tokio::time::Instant::now() + hubhost_tests::PATIENCE;
    while !server.state.tokens.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "token never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reused = RawClient::open(server.addr, &format!("/demo/chat?id={token}")).await;
    assert!(reused.is_err_and(|e| e.to_string().contains("404")));
    server.stop().await
}
