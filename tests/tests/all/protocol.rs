//! Hub messages over a real socket, with a raw client: results and errors,
//! limits, keep-alive, timeouts, close, batching, malformed input, traps.

use hubhost_tests::{RawClient, TestServer, config};
use serde_json::json;
use std::time::Duration;

async fn server() -> anyhow::Result<TestServer> {
    TestServer::start(config()).await
}

#[tokio::test]
async fn invocations_complete_with_results_and_errors() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut client, id) = RawClient::connect(&server, "/demo/chat").await?;
    let value = json!({"nested": [1, 2.5, "three", null, true]});
    assert_eq!(
        client.invoke("1", "Echo", json!([value])).await?["result"],
        value
    );
    // Method names are case-insensitive.
    assert_eq!(
        client.invoke("2", "eCHO", json!(["x"])).await?["result"],
        "x"
    );
    assert_eq!(
        client.invoke("3", "WhoAmI", json!([])).await?["result"],
        json!({"connectionId": id, "userId": null})
    );
    // Void methods complete with an explicit null result.
    let join = client.invoke("4", "JoinGroup", json!(["g"])).await?;
    assert_eq!(
        join,
        json!({"type": 3, "invocationId": "4", "result": null})
    );
    assert_eq!(
        client.invoke("5", "Fail", json!(["boom"])).await?["error"],
        "boom"
    );
    assert_eq!(
        client.invoke("6", "Nope", json!([])).await?["error"],
        "Unknown hub method 'Nope'"
    );
    assert_eq!(
        client.invoke("7", "Echo", json!([1, 2])).await?["error"],
        "Failed to invoke 'Echo' due to an error on the server."
    );
    server.stop().await
}

#[tokio::test]
async fn several_messages_per_frame_and_no_reply_without_id() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    client
        .send_text(concat!(
            "{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"a\",\"one\"]}\u{1e}",
            "{\"type\":1,\"target\":\"Fail\",\"arguments\":[\"silent\"]}\u{1e}",
            "{\"type\":42,\"whatever\":true}\u{1e}",
            "{\"type\":1,\"invocationId\":\"x\",\"target\":\"Echo\",\"arguments\":[1]}\u{1e}",
            "{\"type\":1,\"invocationId\":\"y\",\"target\":\"Echo\",\"arguments\":[2]}\u{1e}",
        ))
        .await?;
    // In order: the broadcast, then exactly the two completions; the
    // fire-and-forget failure and the unknown type produce nothing.
    assert_eq!(
        client.next().await?,
        json!({"type": 1, "target": "ReceiveMessage", "arguments": ["a", "one"]})
    );
    assert_eq!(
        client.next().await?,
        json!({"type": 3, "invocationId": "x", "result": 1})
    );
    assert_eq!(
        client.next().await?,
        json!({"type": 3, "invocationId": "y", "result": 2})
    );
    server.stop().await
}

#[tokio::test]
async fn malformed_messages_close_the_connection_with_an_error() -> anyhow::Result<()> {
    let server = server().await?;
    for (bad, detail) in [
        ("{\"type\":1,\u{1e}", ""),
        ("{\"type\":1,\"target\":\"Echo\"}\u{1e}", "arguments"),
        ("[1,2]\u{1e}", ""),
        // Stateful reconnect's Ack and Sequence need their number.
        (
            "{\"type\":8}\u{1e}",
            "missing required property 'sequenceId'",
        ),
        ("{\"type\":9,\"sequenceId\":\"x\"}\u{1e}", "expected u64"),
    ] {
        let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
        client.send_text(bad).await?;
        let close = client.next().await?;
        assert_eq!(close["type"], 7, "{bad}: {close}");
        assert!(
            close["error"].as_str().is_some_and(|e| e
                .starts_with("Connection closed with an error.")
                && e.contains(detail)),
            "{bad}: {close}"
        );
        assert!(
            close.get("allowReconnect").is_none(),
            "protocol errors do not invite a reconnect"
        );
        let (_, closed) = client.drain().await;
        assert!(closed);
    }
    server.stop().await
}

#[tokio::test]
async fn oversize_messages_close_the_connection() -> anyhow::Result<()> {
    let mut config = config();
    config.connection.max_message_size = 1024;
    let server = TestServer::start(config).await?;
    // Just under the limit works.
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    let fits = "x".repeat(900);
    assert_eq!(
        client.invoke("1", "Echo", json!([fits])).await?["result"],
        fits.as_str()
    );
    // Over it, complete or still incomplete, closes with the limit named.
    for tail in ["\u{1e}", ""] {
        let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
        let big = format!(
            "{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"{}\"]}}{tail}",
            "x".repeat(2000)
        );
        client.send_text(&big).await?;
        let close = client.next().await?;
        assert_eq!(close["type"], 7);
        assert!(
            close["error"]
                .as_str()
                .is_some_and(|e| e.contains("maximum message size of 1024 bytes")),
            "{close}"
        );
    }
    server.stop().await
}

#[tokio::test]
async fn server_pings_an_idle_connection() -> anyhow::Result<()> {
    let interval = Duration::from_millis(200);
    let mut config = config();
    config.connection.keep_alive_interval = interval;
    let server = TestServer::start(config).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    // A Ping whenever the server has written nothing for the interval: the
    // spacing between consecutive Pings, as they arrive, is the interval
    // (less a little for the first one's way to the client; more when the
    // machine is busy).
    let mut arrivals = Vec::new();
    for _ in 0..3 {
        assert_eq!(client.next().await?, json!({"type": 6}));
        arrivals.push(std::time::Instant::now());
    }
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= interval.mul_f64(0.9) && gap < interval * 5,
            "pings follow the interval of {interval:?}: {gap:?} between two"
        );
    }
    server.stop().await
}

#[tokio::test]
async fn client_timeout_starts_with_the_first_ping() -> anyhow::Result<()> {
    let mut config = config();
    config.connection.client_timeout = std::time::Duration::from_millis(300);
    config.connection.keep_alive_interval = std::time::Duration::from_millis(100);
    let server = TestServer::start(config).await?;
    let (mut quiet, _) = RawClient::connect(&server, "/demo/chat").await?;
    let (mut pinger, _) = RawClient::connect(&server, "/demo/chat").await?;
    pinger.send(json!({"type": 6})).await?;
    let close = pinger.next_where(|m| m["type"] == 7).await?;
    assert_eq!(close["allowReconnect"], true);
    assert!(
        close["error"]
            .as_str()
            .is_some_and(|e| e.contains("client timeout")),
        "{close}"
    );
    // The connection that never pinged is never timed out: it still answers
    // after the pinger's timeout has come and gone.
    assert_eq!(quiet.invoke("1", "Echo", json!([1])).await?["result"], 1);
    server.stop().await
}

#[tokio::test]
async fn client_close_ends_the_connection_cleanly() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    let hub = hubhost::names::HubKey::new("demo", "chat")?;
    assert_eq!(server.state.lifetime.local_count(&hub), 1);
    client.send(json!({"type": 7})).await?;
    let (seen, code) = client.until_closed().await;
    assert_eq!(code, Some(1000), "a normal close");
    assert!(
        seen.iter().all(|m| m["type"] != 7),
        "no Close is sent back to a client that closed: {seen:?}"
    );
    assert_eq!(server.state.lifetime.local_count(&hub), 0);
    server.stop().await
}

#[tokio::test]
async fn a_trap_fails_one_call_and_the_connection_goes_on() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let (mut other, _) = RawClient::connect(&server, "/demo/chat").await?;
    let reply = client.invoke("1", "Panic", json!([])).await?;
    assert_eq!(
        reply["error"],
        "An unexpected error occurred invoking 'Panic' on the server."
    );
    assert_eq!(
        client.invoke("2", "Echo", json!(["alive"])).await?["result"],
        "alive"
    );
    assert_eq!(
        other.invoke("1", "Echo", json!(["fine"])).await?["result"],
        "fine"
    );
    server.stop().await
}

#[tokio::test]
async fn a_runaway_call_hits_its_deadline() -> anyhow::Result<()> {
    let mut config = config();
    config.hub_limits.call_timeout = std::time::Duration::from_millis(200);
    let server = TestServer::start(config).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let reply = client.invoke("1", "Loop", json!([])).await?;
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("time limit of 200 ms")),
        "{reply}"
    );
    assert_eq!(client.invoke("2", "Echo", json!([1])).await?["result"], 1);
    server.stop().await
}

#[tokio::test]
async fn hub_errors_map_to_signalr_texts() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/faulty").await?;
    assert_eq!(
        client.invoke("1", "Deny", json!([])).await?["error"],
        "Failed to invoke 'Deny' because user is unauthorized"
    );
    let reply = client
        .invoke("2", "AddToGroup", json!(["no-such-connection", "g"]))
        .await?;
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.contains("no connection 'no-such-connection'")),
        "{reply}"
    );
    server.stop().await
}

#[tokio::test]
async fn a_client_that_falls_behind_is_closed_with_a_reason() -> anyhow::Result<()> {
    let mut config = config();
    config.connection.outbound_queue = 4;
    let server = TestServer::start(config).await?;
    let (mut slow, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let (mut bystander, _) = RawClient::connect(&server, "/demo/faulty").await?;
    // One call queues far more than 4 frames before the writer can drain them.
    slow.send(
        json!({"type": 1, "invocationId": "1", "target": "Flood", "arguments": [5000, 1000]}),
    )
    .await?;
    let (seen, _) = slow.drain().await;
    let close = seen
        .iter()
        .find(|m| m["type"] == 7)
        .cloned()
        .unwrap_or_default();
    assert!(
        close["error"]
            .as_str()
            .is_some_and(|e| e.contains("fast enough")),
        "{close}"
    );
    assert!(seen.iter().filter(|m| m["target"] == "Flood").count() < 5000);
    assert_eq!(
        bystander.invoke("1", "Echo", json!([1])).await?["result"],
        1
    );
    server.stop().await
}

#[tokio::test]
async fn the_readme_greeter_example_works() -> anyhow::Result<()> {
    let mut config = config();
    config.hubs.push(hubhost::config::HubConfig {
        tenant: "demo".into(),
        hub: "greeter".into(),
        path: hubhost_tests::guest("greeter"),
    });
    let server = TestServer::start(config).await?;
    let (mut a, a_id) = RawClient::connect(&server, "/demo/greeter").await?;
    assert_eq!(a.invoke("1", "add", json!([2, 40])).await?["result"], 42);
    assert_eq!(
        a.invoke("2", "Refuse", json!([])).await?["error"],
        "not today"
    );
    a.send(json!({"type": 1, "target": "Greet", "arguments": ["ada"]}))
        .await?;
    assert_eq!(
        a.next().await?,
        json!({"type": 1, "target": "Greeted", "arguments": ["ada", a_id]})
    );
    server.stop().await
}
