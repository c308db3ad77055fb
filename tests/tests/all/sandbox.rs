//! Hostile and broken hubs hurt only their own callers: each limit gives the
//! caller an error that names it, and the same connection, the other
//! connections and other tenants go on being served. The log-line cap, as a
//! `hubhost` process's log shows it.

use hubhost::config::HubConfig;
use hubhost_tests::process::Node;
use hubhost_tests::{RawClient, TestServer, config, guest};
use serde_json::{Value, json};

async fn server() -> anyhow::Result<TestServer> {
    server_with_deadline(300).await
}

async fn server_with_deadline(call_timeout_ms: u64) -> anyhow::Result<TestServer> {
    let mut config = config();
    config.hub_limits.memory_bytes = 16 << 20;
    config.hub_limits.call_timeout = std::time::Duration::from_millis(call_timeout_ms);
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

/// A send's arguments, the bytes a call sends in all, and a hub's error
/// text are bounded like a result: the hub hears which limit it hit.
#[tokio::test]
async fn sends_and_error_texts_are_bounded_in_bytes() -> anyhow::Result<()> {
    let mut config = config();
    config.hub_limits.max_result_bytes = 1_000;
    config.hub_limits.max_send_bytes = 2_000;
    config.hub_limits.max_sent_bytes_per_call = 5_000;
    let server = TestServer::start(config).await?;
    let (mut hostile, _) = RawClient::connect(&server, "/demo/faulty").await?;

    // One send of 2,004 bytes (the payload, quoted, in an array).
    let reply = hostile.invoke("big", "Flood", json!([1, 2_000])).await?;
    assert_eq!(
        error_of(&reply),
        "this send's arguments are 2004 bytes, over the limit of 2000 bytes (hub_limits.max_send_bytes)",
        "{reply}"
    );
    // Sends of 1,504 bytes: the fourth would pass 5,000 bytes.
    let reply = hostile.invoke("many", "Flood", json!([10, 1_500])).await?;
    assert_eq!(
        error_of(&reply),
        "this call reached its limit of 5000 bytes sent (hub_limits.max_sent_bytes_per_call)",
        "{reply}"
    );
    let sent = hostile
        .pending()
        .iter()
        .filter(|m| m["target"] == "Flood")
        .count();
    assert_eq!(sent, 3, "the sends within the limit arrived, no more");

    // An error text of 100,000 bytes reaches the client cut to 1,000.
    let reply = hostile
        .invoke("error", "GiantError", json!([100_000]))
        .await?;
    let text = error_of(&reply);
    assert!(
        text.len() <= 1_000 && text.len() > 990,
        "{} bytes",
        text.len()
    );
    let tail: String = text.chars().rev().take(3).collect();
    assert!(text.ends_with("é…"), "cut at a character, marked: {tail}");
    assert_eq!(
        hostile.invoke("after", "Echo", json!(["ok"])).await?["result"],
        "ok",
        "the connection goes on"
    );
    server.stop().await
}

/// The names one send's target holds, and the group changes of one call,
/// are bounded: delivery's and membership's work per call.
#[tokio::test]
async fn targets_and_group_changes_are_bounded_per_call() -> anyhow::Result<()> {
    let mut config = config();
    config.hub_limits.max_names_per_send = 3;
    config.hub_limits.max_group_changes_per_call = 5;
    let server = TestServer::start(config).await?;
    let (mut hostile, id) = RawClient::connect(&server, "/demo/faulty").await?;
    let four = json!(["a", "b", "c", "d"]);
    for (kind, names, excluded) in [
        ("groups", four.clone(), json!([])),
        ("users", four.clone(), json!([])),
        ("clients", four.clone(), json!([])),
        ("all-except", json!([]), four.clone()),
        ("group-except", json!(["g"]), json!(["a", "b", "c"])),
    ] {
        let reply = hostile
            .invoke(kind, "Target", json!([kind, names, excluded, "x"]))
            .await?;
        assert_eq!(
            error_of(&reply),
            "this send's target names 4 connections, groups or users, over the limit of 3 (hub_limits.max_names_per_send)",
            "{kind}: {reply}"
        );
    }
    let reply = hostile
        .invoke(
            "three",
            "Target",
            json!(["groups", ["a", "b", "c"], [], "x"]),
        )
        .await?;
    assert_eq!(reply["error"], Value::Null, "within the limit: {reply}");

    let reply = hostile.invoke("join", "JoinMany", json!([7])).await?;
    assert_eq!(
        error_of(&reply),
        "this call reached its limit of group changes (hub_limits.max_group_changes_per_call)",
        "{reply}"
    );
    // The five changes made stand: the caller is in g4, not in g5.
    for group in ["g4", "g5"] {
        let reply = hostile
            .invoke(group, "Target", json!(["group", [group], [], group]))
            .await?;
        assert_eq!(reply["error"], Value::Null, "{reply}");
    }
    let got: Vec<Value> = hostile
        .pending()
        .iter()
        .filter(|m| m["target"] == "Targeted")
        .map(|m| m["arguments"][0].clone())
        .collect();
    assert_eq!(got, [json!("g4")], "only g4 reached {id}");
    // Each refusal is counted, once a call, as the tenant's.
    let hits = server.state.limit_counters.of("demo");
    assert_eq!(
        hits.get("hub_limits.max_names_per_send"),
        Some(&5),
        "{hits:?}"
    );
    assert_eq!(hits.get("hub_limits.max_group_changes_per_call"), Some(&1));
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

/// On a current-thread runtime (as most tests run servers), hub calls run on
/// blocking threads.
#[tokio::test]
async fn a_slow_call_holds_up_only_its_own_connection() -> anyhow::Result<()> {
    slow_call_beside_another().await
}

/// On a multi-threaded runtime (as `hubhost serve` runs), hub calls start on
/// the worker that read them: with one worker, the other connection is only
/// answered if the looping call left the worker at its first epoch tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_slow_call_leaves_the_only_worker_to_the_other_connections() -> anyhow::Result<()> {
    slow_call_beside_another().await
}

async fn slow_call_beside_another() -> anyhow::Result<()> {
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

/// The log-line cap, as the log shows it: a call that logs more lines than
/// the cap (100 by default) leaves exactly the first 100 in the log, then one
/// warning that the call reached its limit, and nothing more of that call.
/// On a `hubhost` process, whose log is its own (in process, every test of
/// this binary would share one tracing subscriber).
#[tokio::test]
async fn a_call_logs_exactly_the_cap_then_one_warning() -> anyhow::Result<()> {
    let args = [
        "--hub".to_owned(),
        format!("demo/faulty={}", guest("faulty").display()),
    ];
    let node = Node::start(&args, &[("RUST_LOG", "info")]).await?;
    let (mut client, id) = RawClient::connect_as(node.addr, "/demo/faulty", None).await?;
    let reply = client.invoke("flood", "LogFlood", json!([250])).await?;
    assert_eq!(reply["result"], 250, "{reply}");
    // A later call's line: everything the flood wrote is in the log before it.
    let marker = format!("after the flood {id}");
    client.invoke("mark", "Log", json!([marker])).await?;
    let lines: Vec<String> = node
        .log_until(&marker)
        .await?
        .into_iter()
        .filter(|line| line.contains(&id) && !line.contains(&marker))
        .collect();
    let logged: Vec<String> = lines
        .iter()
        .filter_map(|line| {
            Some(
                line.split("hub: line ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .to_owned(),
            )
        })
        .collect();
    let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(logged, expected, "the lines of the call in the log");
    let warnings: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.contains("hub reached its log limit for this call"))
        .map(|(i, _)| i)
        .collect();
    let last_line = lines.iter().rposition(|line| line.contains("hub: line "));
    assert_eq!(warnings.len(), 1, "one warning: {lines:#?}");
    assert!(
        last_line.is_some_and(|last| warnings[0] > last),
        "the warning follows the last line kept: {lines:#?}"
    );
    Ok(())
}

/// A hub's log text cannot forge lines of the host's log: line breaks and
/// other control characters in it are written escaped, inside the hub's
/// one line.
#[tokio::test]
async fn a_hub_cannot_forge_log_lines() -> anyhow::Result<()> {
    let args = [
        "--hub".to_owned(),
        format!("demo/faulty={}", guest("faulty").display()),
    ];
    let node = Node::start(&args, &[("RUST_LOG", "info")]).await?;
    let (mut client, id) = RawClient::connect_as(node.addr, "/demo/faulty", None).await?;
    let forged = "2026-01-01T00:00:00.000000Z  INFO hubhost: forged-line admin key accepted";
    let text = format!("innocent\n{forged}\r\u{1b}[31mred\u{7}");
    client.invoke("log", "Log", json!([text])).await?;
    let marker = format!("after the forgery {id}");
    client.invoke("mark", "Log", json!([marker])).await?;
    let lines = node.log_until(&marker).await?;
    let forged_lines: Vec<&String> = lines
        .iter()
        .filter(|line| line.starts_with("2026-01-01T00:00:00.000000Z"))
        .collect();
    assert!(
        forged_lines.is_empty(),
        "a line the hub forged: {forged_lines:#?}"
    );
    let own: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("forged-line"))
        .collect();
    assert_eq!(own.len(), 1, "{lines:#?}");
    assert!(
        own[0].contains(r"hub: innocent\n2026-01-01T00:00:00.000000Z")
            && own[0].contains(r"\r\u{1b}[31mred\u{7}"),
        "escaped in the hub's own line: {}",
        own[0]
    );
    Ok(())
}

/// The clocks are real; waiting on one traps the call (named in the log),
/// and the connection goes on.
#[tokio::test]
async fn clocks_read_the_host_and_cannot_be_waited_on() -> anyhow::Result<()> {
    let args = [
        "--hub".to_owned(),
        format!("demo/faulty={}", guest("faulty").display()),
    ];
    let node = Node::start(&args, &[("RUST_LOG", "info")]).await?;
    let (mut client, _) = RawClient::connect_as(node.addr, "/demo/faulty", None).await?;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let reply = client.invoke("clocks", "Clocks", json!([])).await?;
    let wall = reply["result"][0].as_u64().unwrap_or_default();
    let host = u64::try_from(before.as_millis())?;
    assert!(
        wall.abs_diff(host) < 1_000,
        "hub {wall} ms, host {host} ms: {reply}"
    );
    let reply = client.invoke("sleep", "Sleep", json!([10])).await?;
    assert!(reply.get("error").is_some(), "{reply}");
    node.log_until("a hub call cannot wait on a clock").await?;
    let echo = client.invoke("echo", "Echo", json!(["still here"])).await?;
    assert_eq!(echo["result"], "still here", "{echo}");
    Ok(())
}
