//! Hubs that remember (world 0.2): key-value state, connection items and
//! presence, on two nodes over Redis, across a hot swap and restarts, on a
//! node alone with a data directory, and every limit refused with its text.
//! The backends' own spec suite is `host/src/kv/tests.rs`; the chat methods
//! in all three languages are also run by `tests/node/chat.test.mjs`.

use hubhost::config::Config;
use hubhost::tenants::TenantConfig;
use hubhost_tests::admin::{Admin, OPERATOR_KEY, wait_served};
use hubhost_tests::process::Node;
use hubhost_tests::{
    PATIENCE, REDIS_URL, RawClient, TestServer, cluster_config, config, guest, temp_dir,
    unique_prefix, wait_until_async,
};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn node(prefix: &str) -> Config {
    let mut config = cluster_config(REDIS_URL, prefix);
    config.admin.operator_keys = vec![OPERATOR_KEY.into()];
    config.backplane.heartbeat_interval = Duration::from_millis(300);
    config
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Call `method` and return its result; an error completion fails the test.
async fn call(client: &mut RawClient, method: &str, args: Value) -> anyhow::Result<Value> {
    let id = CALLS.fetch_add(1, Ordering::Relaxed).to_string();
    let reply = client.invoke(&id, method, args).await?;
    anyhow::ensure!(reply.get("error").is_none(), "{method}: {reply}");
    Ok(reply.get("result").cloned().unwrap_or(Value::Null))
}

/// Call `method` and return its error text; a result fails the test.
async fn refused(client: &mut RawClient, method: &str, args: Value) -> anyhow::Result<String> {
    let id = CALLS.fetch_add(1, Ordering::Relaxed).to_string();
    let reply = client.invoke(&id, method, args).await?;
    match reply["error"].as_str() {
        Some(text) => Ok(text.to_owned()),
        None => anyhow::bail!("{method} was not refused: {reply}"),
    }
}

async fn history(addr: SocketAddr, hub: &str) -> anyhow::Result<Value> {
    let (mut client, _) = RawClient::connect_as(addr, hub, None).await?;
    call(&mut client, "History", json!([])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_one_across_nodes_a_hot_swap_and_a_restart() -> anyhow::Result<()> {
    let prefix = unique_prefix("state");
    let a = TestServer::start(node(&prefix)).await?;
    let b = TestServer::start(node(&prefix)).await?;
    let chat = std::fs::read(guest("chat"))?;
    let admin = Admin::new(a.addr, Some(OPERATOR_KEY));
    assert_eq!(admin.upload("acme", "chat", chat.clone(), "").await?.0, 201);
    for server in [&a, &b] {
        wait_served(&server.state, "acme", "chat", 1).await?;
    }

    // 8 clients, 4 on each node, 500 Count() calls each, all in flight at
    // once: every value from 1 to 4,000 comes back exactly once.
    let mut counters = Vec::new();
    for i in 0..8 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        counters.push(tokio::spawn(async move {
            let (mut client, _) = RawClient::connect_as(addr, "/acme/chat", None).await?;
            for n in 0..500 {
                client
                    .send(json!({"type": 1, "invocationId": format!("c{n}"), "target": "Count", "arguments": []}))
                    .await?;
            }
            let mut values = Vec::new();
            while values.len() < 500 {
                let reply = client.next_where(|m| m["type"] == 3).await?;
                let value = reply["result"].as_i64();
                anyhow::ensure!(value.is_some(), "Count failed: {reply}");
                values.extend(value);
            }
            anyhow::Ok(values)
        }));
    }
    let mut all = Vec::new();
    for counter in counters {
        all.extend(counter.await??);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=4_000).collect::<Vec<i64>>());

    // History: the last 50, oldest first, the same from either node.
    let (mut writer, _) = RawClient::connect_as(a.addr, "/acme/chat", None).await?;
    for i in 0..60 {
        call(&mut writer, "SendMessage", json!(["ann", format!("m{i}")])).await?;
    }
    let expected: Vec<Value> = (10..60)
        .map(|i| json!({"user": "ann", "message": format!("m{i}")}))
        .collect();
    assert_eq!(history(a.addr, "/acme/chat").await?, json!(expected));
    assert_eq!(history(b.addr, "/acme/chat").await?, json!(expected));

    // Items stay with their connection, across a new version of the hub.
    let (mut keeper, _) = RawClient::connect_as(b.addr, "/acme/chat", None).await?;
    call(
        &mut keeper,
        "SetItem",
        json!(["nick", {"name": "ann", "n": 1}]),
    )
    .await?;
    assert_eq!(
        call(&mut writer, "GetItem", json!(["nick"])).await?,
        Value::Null,
        "another connection's items are its own"
    );
    assert_eq!(admin.upload("acme", "chat", chat.clone(), "").await?.0, 201);
    for server in [&a, &b] {
        wait_served(&server.state, "acme", "chat", 2).await?;
    }
    assert_eq!(
        call(&mut keeper, "GetItem", json!(["nick"])).await?,
        json!({"name": "ann", "n": 1})
    );
    assert_eq!(history(b.addr, "/acme/chat").await?, json!(expected));
    assert_eq!(call(&mut keeper, "Count", json!([])).await?, json!(4_001));

    // A node restarted finds the same state.
    drop((writer, keeper));
    a.stop().await?;
    let again = TestServer::start(node(&prefix)).await?;
    wait_served(&again.state, "acme", "chat", 2).await?;
    assert_eq!(history(again.addr, "/acme/chat").await?, json!(expected));

    // Deleting the hub deletes its state: the tenant holds nothing.
    let admin = Admin::new(again.addr, Some(OPERATOR_KEY));
    assert_eq!(admin.delete("/tenants/acme/hubs/chat").await?.0, 200);
    let store = again.state.hub_state.clone();
    let usage = tokio::task::spawn_blocking(move || store.usage("acme")).await??;
    assert_eq!(usage, (0, 0));
    again.stop().await?;
    b.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alone_keeps_state_in_its_data_directory() -> anyhow::Result<()> {
    let dir = temp_dir("state-local")?;
    let mut local = config();
    local.data_dir = Some(dir.clone());
    let server = TestServer::start(local.clone()).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    for i in 0..3 {
        call(&mut client, "SendMessage", json!(["bo", format!("m{i}")])).await?;
    }
    assert_eq!(call(&mut client, "Count", json!([])).await?, json!(1));
    drop(client);
    server.stop().await?;

    let again = TestServer::start(local).await?;
    let (mut client, _) = RawClient::connect(&again, "/demo/chat").await?;
    assert_eq!(
        call(&mut client, "History", json!([])).await?,
        json!([
            {"user": "bo", "message": "m0"},
            {"user": "bo", "message": "m1"},
            {"user": "bo", "message": "m2"}
        ])
    );
    assert_eq!(call(&mut client, "Count", json!([])).await?, json!(2));
    again.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// A process node on Redis with 300 ms heartbeats (silent for 0.9 s: dead).
async fn process_node(prefix: &str, dir: &std::path::Path) -> anyhow::Result<Node> {
    let file = dir.join("node.toml");
    std::fs::write(&file, "[backplane]\nheartbeat_interval_ms = 300\n")?;
    let args = [
        "--config".to_owned(),
        file.display().to_string(),
        "--hub".to_owned(),
        format!("demo/chat={}", guest("chat").display()),
        "--redis".to_owned(),
        REDIS_URL.to_owned(),
        "--cluster-prefix".to_owned(),
        prefix.to_owned(),
    ];
    Node::start(&args, &[]).await
}

async fn group_count(client: &mut RawClient, group: &str) -> anyhow::Result<u64> {
    call(client, "GroupCount", json!([group]))
        .await?
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("GroupCount is not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_joins_leaves_vanished_clients_and_a_killed_node() -> anyhow::Result<()> {
    let prefix = unique_prefix("presence");
    let dir = temp_dir("presence")?;
    let mut here = node(&prefix);
    // A node that stops answering is waited for this long, until it is dead.
    here.backplane.group_timeout = Duration::from_secs(1);
    here.tenants
        .insert("demo".into(), hubhost_tests::jwt_tenant(SECRET));
    let a = TestServer::start(here).await?;
    let b = process_node(&prefix, &dir).await?;
    let alive = a.state.cluster.clone();
    wait_until_async(PATIENCE, || {
        let alive = alive.clone();
        async move { !alive.alive_nodes().is_empty() }
    })
    .await?;

    let ann = hubhost_tests::jwt(SECRET, "ann", 300)?;
    let zed = hubhost_tests::jwt(SECRET, "zed", 300)?;
    let (mut asker, asker_id) = RawClient::connect_as(a.addr, "/demo/chat", Some(&zed)).await?;
    let (ann_a, _) = RawClient::connect_as(a.addr, "/demo/chat", Some(&ann)).await?;
    let mut on_b = Vec::new();
    for _ in 0..3 {
        let (mut client, id) = RawClient::connect_as(b.addr, "/demo/chat", None).await?;
        call(&mut client, "JoinGroup", json!(["room"])).await?;
        on_b.push((client, id));
    }
    call(&mut asker, "JoinGroup", json!(["room"])).await?;
    assert_eq!(group_count(&mut asker, "room").await?, 4);
    let mut members: Vec<String> =
        serde_json::from_value(call(&mut asker, "GroupMembers", json!(["room"])).await?)?;
    members.sort();
    let mut expected: Vec<String> = on_b.iter().map(|(_, id)| id.clone()).collect();
    expected.push(asker_id.clone());
    expected.sort();
    assert_eq!(members, expected);
    assert_eq!(
        call(&mut asker, "IsOnline", json!(["ann"])).await?,
        json!(true)
    );
    assert_eq!(
        call(&mut asker, "IsOnline", json!(["bob"])).await?,
        json!(false)
    );
    assert_eq!(group_count(&mut asker, "elsewhere").await?, 0);

    // A leave, a client that vanishes without a close, a user going away.
    call(&mut on_b[0].0, "LeaveGroup", json!(["room"])).await?;
    assert_eq!(group_count(&mut asker, "room").await?, 3);
    let (vanished, _) = on_b.remove(1);
    drop(vanished);
    let asker = tokio::sync::Mutex::new(asker);
    let count_is = |n: u64| {
        let asker = &asker;
        move || async move { group_count(&mut *asker.lock().await, "room").await.ok() == Some(n) }
    };
    wait_until_async(PATIENCE, count_is(2)).await?;
    drop(ann_a);
    wait_until_async(PATIENCE, || async {
        call(&mut *asker.lock().await, "IsOnline", json!(["ann"]))
            .await
            .ok()
            == Some(json!(false))
    })
    .await?;

    // The node of the other members dies without a word (SIGKILL): they
    // are gone once the cluster counts it dead.
    drop(b);
    wait_until_async(PATIENCE, count_is(1)).await?;
    let mut asker = asker.into_inner();
    drop(on_b);
    assert_eq!(group_count(&mut asker, "room").await?, 1);
    a.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

const SECRET: &str = "state-secret-0123456789abcdef0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_limit_is_refused_with_its_setting() -> anyhow::Result<()> {
    let mut config = config();
    config.tenants.insert(
        "demo".into(),
        TenantConfig {
            hub_limits: serde_json::from_value(json!({
                "max_state_keys": 3,
                "max_state_bytes": 150,
                "max_state_value_bytes": 40,
                "max_state_ops_per_call": 5,
                "max_state_list_items": 4,
                "max_state_read_items": 3,
                "max_items_per_connection": 2,
                "max_item_bytes_per_connection": 30,
            }))?,
            ..TenantConfig::default()
        },
    );
    let server = TestServer::start(config).await?;
    let (mut c, _) = RawClient::connect(&server, "/demo/faulty").await?;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "KvSet",
            json!(["big", "x".repeat(40)]),
            "hub_limits.max_state_value_bytes",
        ),
        ("KvGets", json!([6]), "hub_limits.max_state_ops_per_call"),
        (
            "KvPush",
            json!(["l", "x", 5]),
            "hub_limits.max_state_list_items",
        ),
        ("KvKeys", json!(["", 4]), "hub_limits.max_state_read_items"),
        (
            "Members",
            json!(["room", 4]),
            "hub_limits.max_state_read_items",
        ),
        ("Presences", json!([6]), "hub_limits.max_state_ops_per_call"),
        (
            "KvSet",
            json!(["", "x"]),
            "state keys must be 1 to 512 bytes",
        ),
        ("KvSetFor", json!(["t", "x", 0]), "a time-to-live must be"),
        (
            "KvIncrement",
            json!(["text", 1]),
            "not a decimal 64-bit integer",
        ),
    ];
    call(&mut c, "KvSet", json!(["text", "abc"])).await?;
    for (method, args, text) in cases {
        let error = refused(&mut c, method, args.clone()).await?;
        assert!(error.contains(text), "{method}{args}: {error}");
    }
    // A list read longer than allowed.
    for i in 0..4 {
        call(&mut c, "KvPush", json!(["l", format!("{i}"), 4])).await?;
    }
    let error = refused(&mut c, "KvRange", json!(["l", 0, -1])).await?;
    assert!(error.contains("hub_limits.max_state_read_items"), "{error}");
    // The tenant's keys ("text", "l" so far) and bytes.
    call(&mut c, "KvSet", json!(["k3", "x"])).await?;
    let error = refused(&mut c, "KvSet", json!(["k4", "x"])).await?;
    assert!(error.contains("hub_limits.max_state_keys"), "{error}");
    for i in 0..4 {
        call(&mut c, "KvPush", json!(["l", "y".repeat(30), 4])).await?;
        let _ = i;
    }
    let error = refused(&mut c, "KvSet", json!(["k3", "z".repeat(35)])).await?;
    assert!(error.contains("hub_limits.max_state_bytes"), "{error}");
    // Items of one connection.
    call(&mut c, "ItemSet", json!(["a", "1"])).await?;
    let error = refused(&mut c, "ItemSet", json!(["b", "y".repeat(30)])).await?;
    assert!(
        error.contains("hub_limits.max_item_bytes_per_connection"),
        "{error}"
    );
    call(&mut c, "ItemSet", json!(["b", "2"])).await?;
    let error = refused(&mut c, "ItemSet", json!(["c", "3"])).await?;
    assert!(
        error.contains("hub_limits.max_items_per_connection"),
        "{error}"
    );
    // Each limit is counted for the tenant.
    let counted = server.state.limit_counters.of("demo");
    for limit in [
        "hub_limits.max_state_value_bytes",
        "hub_limits.max_state_ops_per_call",
        "hub_limits.max_state_list_items",
        "hub_limits.max_state_read_items",
        "hub_limits.max_state_keys",
        "hub_limits.max_state_bytes",
        "hub_limits.max_items_per_connection",
        "hub_limits.max_item_bytes_per_connection",
    ] {
        assert!(
            counted.get(limit).is_some_and(|n| *n > 0),
            "{limit} not counted: {counted:?}"
        );
    }
    server.stop().await?;
    Ok(())
}

/// A component built for world 0.1.0 (the chat hub of 2026-11-29, kept as
/// a file) loads and runs beside 0.2.0 ones, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_of_world_0_1_keep_loading_and_running() -> anyhow::Result<()> {
    let mut config = config();
    config.hubs.push(hubhost::config::HubConfig {
        tenant: "demo".into(),
        hub: "old".into(),
        path: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("guests/fixtures/chat-0.1.0.wasm"),
    });
    config.admin.operator_keys = vec![OPERATOR_KEY.into()];
    let server = TestServer::start(config).await?;
    // The admin API says which world each serves.
    let admin = Admin::new(server.addr, Some(OPERATOR_KEY));
    for (hub, world) in [("old", "0.1.0"), ("chat", "0.2.0")] {
        let (status, info) = admin.get(&format!("/tenants/demo/hubs/{hub}")).await?;
        assert_eq!(status, 200, "{info}");
        assert_eq!(info["served_world"], world, "{hub}: {info}");
    }
    let (mut old, _) = RawClient::connect(&server, "/demo/old").await?;
    assert_eq!(
        call(&mut old, "Echo", json!([{"a": [1]}])).await?,
        json!({"a": [1]})
    );
    call(&mut old, "SendMessage", json!(["ann", "hi"])).await?;
    let message = old.next_where(|m| m["target"] == "ReceiveMessage").await?;
    assert_eq!(message["arguments"], json!(["ann", "hi"]));
    let error = refused(&mut old, "History", json!([])).await?;
    assert!(error.contains("History"), "{error}");
    server.stop().await?;
    Ok(())
}
