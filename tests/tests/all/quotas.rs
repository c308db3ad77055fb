//! Quotas and limits: connections per tenant and per node, connections
//! negotiated and waiting for their transport, messages per second per
//! connection, and hub limits that differ by tenant.

use hubhost::config::{Config, HubConfig};
use hubhost::tenants::TenantConfig;
use hubhost_tests::{
    PATIENCE, RawClient, TestServer, config, guest, http, negotiate_as, wait_until,
};
use serde_json::{Value, json};

/// Serve `hubs` (test guests) for tenant `name`, defined by `tenant`.
fn add_tenant(config: &mut Config, name: &str, hubs: &[&str], tenant: TenantConfig) {
    for hub in hubs {
        config.hubs.push(HubConfig {
            tenant: name.into(),
            hub: (*hub).into(),
            path: guest(hub),
        });
    }
    config.tenants.insert(name.into(), tenant);
}

/// A tenant with only these hub limits (a `[hub_limits]` table).
fn with_limits(table: Value) -> TenantConfig {
    TenantConfig {
        hub_limits: limits(table),
        ..Default::default()
    }
}

async fn server() -> anyhow::Result<TestServer> {
    let mut config = config();
    let small = TenantConfig {
        max_connections: Some(2),
        max_messages_per_second: Some(5),
        ..with_limits(json!({ "call_timeout_ms": 150 }))
    };
    add_tenant(&mut config, "small", &["chat", "faulty"], small);
    // A tenant whose hubs may not have a function table of the size the
    // Rust guest needs: no instance can be made, so clients are refused.
    let tiny = with_limits(json!({ "max_table_elements": 1 }));
    add_tenant(&mut config, "tiny", &["chat"], tiny);
    let groupy = with_limits(json!({ "max_groups_per_connection": 3, "max_groups_per_hub": 4 }));
    add_tenant(&mut config, "groupy", &["faulty"], groupy);
    let lean = with_limits(json!({ "max_idle_memory_bytes": 4 << 20 }));
    add_tenant(&mut config, "lean", &["faulty"], lean);
    let serial = with_limits(json!({ "max_concurrent_calls": 1, "call_timeout_ms": 1500 }));
    add_tenant(&mut config, "serial", &["faulty"], serial);
    TestServer::start(config).await
}

#[tokio::test]
async fn a_tenant_at_its_connection_limit_is_refused_clearly() -> anyhow::Result<()> {
    let server = server().await?;
    let (first, _) = RawClient::connect(&server, "/small/chat").await?;
    let (_second, _) = RawClient::connect(&server, "/small/faulty").await?;
    let (status, body) = server
        .negotiate("/small/chat", "?negotiateVersion=1")
        .await?;
    assert_eq!(status, 200, "negotiate errors are HTTP 200");
    assert_eq!(
        serde_json::from_str::<Value>(&body)?,
        json!({"error": "Tenant 'small' has reached its limit of 2 connections."})
    );
    // Past negotiate (skipNegotiation) the upgrade itself is refused.
    let refused = RawClient::open(server.addr, "/small/chat").await;
    assert!(refused.is_err_and(|e| e.to_string().contains("429")));
    // Other tenants are not affected.
    let (mut other, _) = RawClient::connect(&server, "/demo/chat").await?;
    assert_eq!(other.invoke("1", "Echo", json!([1])).await?["result"], 1);
    // A connection that leaves makes room.
    let mut first = first;
    first.send(json!({"type": 7})).await?;
    first.drain().await;
    let counts = server.state.connection_counts.clone();
    wait_until(PATIENCE, move || counts.open("small") == 1).await?;
    assert!(RawClient::connect(&server, "/small/chat").await.is_ok());
    assert_eq!(http(server.addr, "GET", "/healthz").await?.0, 200);
    server.stop().await
}

/// Negotiate's answer, as JSON.
async fn negotiate_json(server: &TestServer, hub: &str) -> anyhow::Result<Value> {
    let (status, body) = negotiate_as(server.addr, hub, None).await?;
    anyhow::ensure!(status == 200, "negotiate answered {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

#[tokio::test]
async fn a_node_at_its_connection_limit_refuses_every_tenant() -> anyhow::Result<()> {
    let mut config = config();
    config.connection.max_connections = 2;
    let server = TestServer::start(config).await?;
    let (first, _) = RawClient::connect(&server, "/demo/chat").await?;
    let (_second, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let refused = negotiate_json(&server, "/demo/chat").await?;
    assert_eq!(
        refused["error"], "The server has reached its limit of 2 connections.",
        "{refused}"
    );
    let refused = RawClient::open(server.addr, "/demo/chat").await;
    assert!(refused.is_err_and(|e| e.to_string().contains("429")));
    // A connection that leaves makes room.
    let mut first = first;
    first.send(json!({"type": 7})).await?;
    first.drain().await;
    let counts = server.state.connection_counts.clone();
    wait_until(PATIENCE, move || counts.total() == 1).await?;
    assert!(RawClient::connect(&server, "/demo/chat").await.is_ok());
    server.stop().await
}

#[tokio::test]
async fn connections_waiting_for_their_transport_are_bounded() -> anyhow::Result<()> {
    let mut config = config();
    config.connection.max_pending_negotiations = 2;
    let server = TestServer::start(config).await?;
    let first = negotiate_json(&server, "/demo/chat").await?;
    negotiate_json(&server, "/demo/chat").await?;
    let refused = negotiate_json(&server, "/demo/chat").await?;
    assert_eq!(
        refused["error"], "The server has too many connections waiting to start; try again later.",
        "{refused}"
    );
    // Starting one makes room.
    let token = first["connectionToken"].as_str().unwrap_or_default();
    let _started = RawClient::open(server.addr, &format!("/demo/chat?id={token}")).await?;
    let tokens = server.state.tokens.clone();
    wait_until(PATIENCE, move || tokens.pending() == 1).await?;
    let again = negotiate_json(&server, "/demo/chat").await?;
    assert!(again["connectionToken"].is_string(), "{again}");
    server.stop().await
}

#[tokio::test]
async fn a_client_over_its_message_rate_is_closed_with_a_reason() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut calm, _) = RawClient::connect(&server, "/small/chat").await?;
    assert_eq!(calm.invoke("1", "Echo", json!([1])).await?["result"], 1);
    let (mut noisy, _) = RawClient::connect(&server, "/small/faulty").await?;
    noisy.send_text(&"{\"type\":6}\u{1e}".repeat(20)).await?;
    let close = noisy.next_where(|m| m["type"] == 7).await?;
    assert_eq!(
        close["error"],
        "Connection closed with an error. The client sent more than 5 messages per second."
    );
    // The tenant's other connection, and tenants without the limit, go on.
    assert_eq!(calm.invoke("2", "Echo", json!([2])).await?["result"], 2);
    let (mut free, _) = RawClient::connect(&server, "/demo/chat").await?;
    free.send_text(&"{\"type\":6}\u{1e}".repeat(20)).await?;
    assert_eq!(free.invoke("3", "Echo", json!([3])).await?["result"], 3);
    server.stop().await
}

#[tokio::test]
async fn hub_limits_can_differ_by_tenant() -> anyhow::Result<()> {
    let server = server().await?;
    // on-connected cannot run: the connection is closed with an error, and
    // the log names the limit.
    let (mut tiny, _) = RawClient::connect(&server, "/tiny/chat").await?;
    let (seen, _) = tiny.drain().await;
    let close = seen
        .iter()
        .find(|m| m["type"] == 7)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        close["error"], "Connection closed with an error.",
        "{seen:?}"
    );
    let (mut small, _) = RawClient::connect(&server, "/small/faulty").await?;
    let reply = small.invoke("1", "Loop", json!([])).await?;
    assert!(
        reply["error"]
            .as_str()
            .is_some_and(|e| e.ends_with("time limit of 150 ms.")),
        "{reply}"
    );
    server.stop().await
}

/// Each group is a set of ids and a backplane subscription: how many a
/// connection may join, and a hub may have on the node, is bounded per tenant.
#[tokio::test]
async fn groups_are_bounded_per_connection_and_per_hub() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut first, _) = RawClient::connect(&server, "/groupy/faulty").await?;
    let (mut second, second_id) = RawClient::connect(&server, "/groupy/faulty").await?;
    let reply = first.invoke("1", "JoinMany", json!([5])).await?;
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(
        error.ends_with("is already in 3 groups, its limit (hub_limits.max_groups_per_connection)"),
        "{reply}"
    );
    // g0..g2 exist; one more group fits the hub's four, a fifth does not.
    let join = |group: &str| json!([second_id, group]);
    assert_eq!(
        second.invoke("2", "AddToGroup", join("g0")).await?["error"],
        Value::Null
    );
    assert_eq!(
        second.invoke("3", "AddToGroup", join("x")).await?["error"],
        Value::Null
    );
    let reply = second.invoke("4", "AddToGroup", join("y")).await?;
    assert_eq!(
        reply["error"],
        "this hub already has 4 groups on the node, its limit (hub_limits.max_groups_per_hub)",
    );
    // The limits are the tenant's: the default tenant joins five at once.
    let (mut free, _) = RawClient::connect(&server, "/demo/faulty").await?;
    assert_eq!(free.invoke("5", "JoinMany", json!([5])).await?["result"], 5);
    let hits = server.state.limit_counters.of("groupy");
    assert_eq!(hits.get("hub_limits.max_groups_per_connection"), Some(&1));
    assert_eq!(hits.get("hub_limits.max_groups_per_hub"), Some(&1));
    assert!(server.state.limit_counters.of("demo").is_empty());
    server.stop().await
}

/// An idle instance keeps the memory it grew to: a tenant's idle instances
/// may keep `max_idle_memory_bytes` in all, and one that would go over is
/// dropped after its call.
#[tokio::test]
async fn idle_instances_keep_at_most_their_tenants_budget() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut lean, _) = RawClient::connect(&server, "/lean/faulty").await?;
    // One connection's calls run one at a time, on one warm instance.
    assert_eq!(lean.invoke("1", "Calls", json!([])).await?["result"], 1);
    assert_eq!(
        lean.invoke("2", "Calls", json!([])).await?["result"],
        2,
        "reused"
    );
    assert_eq!(
        lean.invoke("3", "Hoard", json!([8 << 20])).await?["result"],
        1
    );
    assert_eq!(
        lean.invoke("4", "Calls", json!([])).await?["result"],
        1,
        "the instance grown past the budget was not kept"
    );
    // The default budget keeps a grown instance.
    let (mut demo, _) = RawClient::connect(&server, "/demo/faulty").await?;
    assert_eq!(
        demo.invoke("5", "Hoard", json!([8 << 20])).await?["result"],
        1
    );
    assert_eq!(
        demo.invoke("6", "Hoard", json!([1])).await?["result"],
        2,
        "kept"
    );
    server.stop().await
}

/// A client that trickles its request headers (slowloris) is closed once
/// `header_read_timeout_ms` has passed; one that sends them gets its answer.
#[tokio::test]
async fn slow_request_headers_are_cut_off() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = config();
    config.connection.header_read_timeout = std::time::Duration::from_millis(300);
    let server = TestServer::start(config).await?;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut seen)).await;
    assert!(
        matches!(ended, Ok(Ok(_))),
        "the server kept a connection whose headers never ended: {ended:?}"
    );
    // A keep-alive connection that goes quiet after its answer is closed too.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await?;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, idle.read_to_end(&mut seen)).await;
    assert!(
        matches!(ended, Ok(Ok(_))) && seen.starts_with(b"HTTP/1.1 200"),
        "an idle keep-alive connection was kept: {ended:?}"
    );
    let mut prompt = tokio::net::TcpStream::connect(server.addr).await?;
    prompt
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, prompt.read_to_string(&mut answer)).await??;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await
}

/// A tenant runs at most `max_concurrent_calls` hub calls at once on a node:
/// with one, a second connection's call waits for the first to end.
#[tokio::test]
async fn a_tenants_calls_beyond_its_slots_wait() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut busy, _) = RawClient::connect(&server, "/serial/faulty").await?;
    let (mut next, _) = RawClient::connect(&server, "/serial/faulty").await?;
    busy.send(json!({"type": 1, "invocationId": "1", "target": "StartThenLoop", "arguments": []}))
        .await?;
    busy.next_where(|m| m["target"] == "Started").await?;
    // The one slot is taken; another tenant is not held up.
    let (mut other, _) = RawClient::connect(&server, "/demo/faulty").await?;
    assert_eq!(other.invoke("o", "Echo", json!([1])).await?["result"], 1);
    next.send(json!({"type": 1, "invocationId": "2", "target": "Echo", "arguments": [2]}))
        .await?;
    let first_done = async {
        busy.next_where(|m| m["type"] == 3).await?;
        anyhow::Ok(std::time::Instant::now())
    };
    let echoed = async {
        let reply = next.next_where(|m| m["type"] == 3).await?;
        anyhow::ensure!(reply["result"] == 2, "{reply}");
        anyhow::Ok(std::time::Instant::now())
    };
    let (first_done, echoed) = tokio::try_join!(first_done, echoed)?;
    // Without the limit the echo comes back at once, ~1.5 s before the loop
    // ends; with it, only after.
    assert!(
        echoed + std::time::Duration::from_millis(500) > first_done,
        "the second call ran while the first held the tenant's only slot"
    );
    let hits = server.state.limit_counters.of("serial");
    assert!(
        hits.get("hub_limits.max_concurrent_calls")
            .is_some_and(|n| *n >= 1),
        "{hits:?}"
    );
    server.stop().await
}

/// A tenant's `hub_limits` table, as the file or the admin API gives it.
fn limits(table: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match table {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
