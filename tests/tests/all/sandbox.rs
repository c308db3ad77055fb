//! Hostile and broken hubs hurt only their own callers: each limit gives the
//! caller an error that names it, and the same connection, the other
//! connections and other tenants go on being served.

use hubhost::config::HubConfig;
use hubhost_tests::{RawClient, TestServer, config, guest};
use serde_json::{Value, json};

async fn server() -> anyhow::Result<TestServer> {
    server_with_deadline(300).await
}

async fn server_with_deadline(call_timeout_ms: u64) -> anyhow::Result<TestServer> {
    let mut config = config();
    config.hub_limits.memory_bytes = 16 << 20;
    config.hub_limits.call_timeout_ms = call_timeout_ms;
    config.hub_limits.max_result_bytes = 64 * 1024;
    config.hub_limits.max_sends_per_call = 50;
    config.hubs.push(HubConfig {
        tenant: "other".into(),
        hub: "chat".into(),
        path: guest("chat"),
    });
    TestServer::start(config).await
}

fn error_of(reply: &Value) -> &str {
    reply["error"].as_str().unwrap_or_default()
}

/// After each hostile call, the same connection and a bystander still work.
async fn still_fine(
    hostile: &mut RawClient,
    bystander: &mut RawClient,
    id: &str,
) -> anyhow::Result<()> {
    assert_eq!(
        hostile
            .invoke(&format!("{id}-after"), "Echo", json!([id]))
            .await?["result"],
        id
    );
    assert_eq!(
        bystander
            .invoke(&format!("{id}-other"), "Echo", json!([id]))
            .await?["result"],
        id
    );
    Ok(())
}

#[tokio::test]
async fn every_limit_fails_one_call_with_its_name() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut hostile, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let (mut bystander, _) = RawClient::connect(&server, "/other/chat").await?;

    let reply = hostile.invoke("loop", "Loop", json!([])).await?;
    assert!(
        error_of(&reply).ends_with("the hub exceeded its time limit of 300 ms."),
        "{reply}"
    );
    still_fine(&mut hostile, &mut bystander, "loop").await?;

    let reply = hostile.invoke("bomb", "MemoryBomb", json!([])).await?;
    assert!(
        error_of(&reply).ends_with(&format!("memory limit of {} bytes.", 16 << 20)),
        "{reply}"
    );
    still_fine(&mut hostile, &mut bystander, "bomb").await?;

    let reply = hostile
        .invoke("stack", "StackOverflow", json!([100_000_000]))
        .await?;
    assert!(
        error_of(&reply).ends_with("the hub overflowed its stack."),
        "{reply}"
    );
    still_fine(&mut hostile, &mut bystander, "stack").await?;
    // A shadow stack run out of linear memory is an out-of-bounds access:
    // contained like any trap, named only in the log.
    let reply = hostile
        .invoke("smash", "StackSmash", json!([100_000_000]))
        .await?;
    assert_eq!(
        error_of(&reply),
        "An unexpected error occurred invoking 'StackSmash' on the server."
    );
    still_fine(&mut hostile, &mut bystander, "smash").await?;

    let reply = hostile.invoke("panic", "Panic", json!([])).await?;
    assert_eq!(
        error_of(&reply),
        "An unexpected error occurred invoking 'Panic' on the server."
    );
    still_fine(&mut hostile, &mut bystander, "panic").await?;

    let fits = hostile
        .invoke("small", "GiantResult", json!([1000]))
        .await?;
    assert_eq!(fits["result"].as_str().map(str::len), Some(1000));
    let reply = hostile
        .invoke("giant", "GiantResult", json!([1 << 20]))
        .await?;
    assert!(
        error_of(&reply).ends_with("result exceeds the limit of 65536 bytes."),
        "{reply}"
    );
    still_fine(&mut hostile, &mut bystander, "giant").await?;
    server.stop().await
}

#[tokio::test]
async fn floods_are_cut_off() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut hostile, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let (mut bystander, _) = RawClient::connect(&server, "/other/chat").await?;

    // Sends past the per-call limit are refused; the hub sees why.
    let reply = hostile
        .invoke("flood", "SendFlood", json!([10_000]))
        .await?;
    assert_eq!(
        error_of(&reply),
        "this call reached its limit of sends",
        "{reply}"
    );
    let flooded = hostile
        .pending()
        .iter()
        .filter(|m| m["target"] == "Flooded")
        .count();
    assert_eq!(
        flooded, 50,
        "exactly the allowed sends were delivered, before the completion"
    );
    still_fine(&mut hostile, &mut bystander, "flood").await?;

    // Standard output and error go to the log (counted as log lines) instead
    // of failing the call.
    assert_eq!(
        hostile.invoke("print", "Print", json!(["hi"])).await?["result"],
        "hi"
    );
    let printed = "p\n".repeat(10_000);
    assert_eq!(
        hostile.invoke("prints", "Print", json!([printed])).await?["result"],
        printed.as_str()
    );
    // Log lines past the per-call limit are dropped; the call succeeds. (Far
    // more lines than the limit, few enough to stay within the 300 ms
    // deadline of this server on a busy machine.)
    assert_eq!(
        hostile.invoke("logs", "LogFlood", json!([5_000])).await?["result"],
        5_000
    );
    still_fine(&mut hostile, &mut bystander, "logs").await?;
    server.stop().await
}

#[tokio::test]
async fn a_hub_cannot_reach_another_hub_or_tenant() -> anyhow::Result<()> {
    let server = server().await?;
    let (mut hostile, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let (mut victim, victim_id) = RawClient::connect(&server, "/other/chat").await?;
    let (mut neighbour, neighbour_id) = RawClient::connect(&server, "/demo/chat").await?;

    for target in [&victim_id, &neighbour_id] {
        // Accepted (a send to an unknown connection is not an error, as in
        // SignalR), but never delivered.
        let reply = hostile
            .invoke("send", "SendTo", json!([target, "boo"]))
            .await?;
        assert_eq!(reply["result"], Value::Null, "{reply}");
        let reply = hostile
            .invoke("join", "AddToGroup", json!([target, "stolen"]))
            .await?;
        assert!(error_of(&reply).contains("no connection"), "{reply}");
    }
    // Local delivery happens inside the hub call, so anything sent would be
    // queued before these completions.
    victim.invoke("check", "Echo", json!([1])).await?;
    neighbour.invoke("check", "Echo", json!([1])).await?;
    for client in [&victim, &neighbour] {
        assert!(
            !client
                .pending()
                .iter()
                .any(|m| m["arguments"][0] == "intruder"),
            "{:?}",
            client.pending()
        );
    }
    server.stop().await
}

#[tokio::test]
async fn a_slow_call_holds_up_only_its_own_connection() -> anyhow::Result<()> {
    let server = server_with_deadline(3_000).await?;
    let (mut slow, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let (mut other, _) = RawClient::connect(&server, "/demo/faulty").await?;
    // `Loop` runs until its 3 s deadline; meanwhile the other connection on
    // the same hub is answered, several times over.
    slow.send(json!({"type": 1, "invocationId": "slow", "target": "Loop", "arguments": []}))
        .await?;
    let started = std::time::Instant::now();
    for i in 0..5 {
        assert_eq!(
            other.invoke(&i.to_string(), "Echo", json!([i])).await?["result"],
            i
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The slow connection's next call waits for its own first one: one at a
    // time, in order, per connection.
    slow.send(json!({"type": 1, "invocationId": "next", "target": "Echo", "arguments": [1]}))
        .await?;
    let first = slow.next().await?;
    assert_eq!(first["invocationId"], "slow", "{first}");
    assert_eq!(slow.next().await?["invocationId"], "next");
    server.stop().await
}
