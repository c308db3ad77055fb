//! Compiled code shared through the store: nodes that hold the same secrets
//! key load the code the uploading node compiled instead of compiling again
//! (both compilers' code, the optimized code following the baseline code,
//! or compiled by the node itself when it does not come); code a store writer put there or changed is never
//! loaded (the node compiles, and serves the right component); code that
//! would take the tenant over its stored-bytes limit is not shared.

use hubhost::config::Config;
use hubhost::names::HubKey;
use hubhost::runtime::CodeOrigin;
use hubhost_tests::admin::{Admin, OPERATOR_KEY, wait_served};
use hubhost_tests::{
    PATIENCE, REDIS_URL, RawClient, TestServer, cluster_config, guest, unique_prefix, wait_until,
};
use redis::AsyncCommands as _;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn node(prefix: &str, baseline_above: usize) -> Config {
    let mut config = cluster_config(REDIS_URL, prefix);
    config.admin.operator_keys = vec![OPERATOR_KEY.into()];
    config.admin.secrets_key = Some(KEY.into());
    config.baseline_compile_above_bytes = baseline_above;
    config
}

fn component(name: &str) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(guest(name))?)
}

/// Where the node's `acme/live` got its first code.
fn origin(node: &TestServer) -> Option<CodeOrigin> {
    let key = HubKey::new("acme", "live").ok()?;
    node.state.hubs.get(&key).map(|slot| slot.active().origin())
}

/// Where the node's `acme/live` got its optimized code, once it has it.
fn optimized(node: &TestServer) -> Option<CodeOrigin> {
    let key = HubKey::new("acme", "live").ok()?;
    node.state
        .hubs
        .get(&key)
        .and_then(|slot| slot.active().optimized_origin())
}

/// Two nodes of `config`; the first takes an upload of version 1 of
/// `acme/live`, and the second serves it.
async fn two_nodes_serving_v1(
    config: impl Fn() -> Config,
) -> anyhow::Result<([TestServer; 2], Admin)> {
    let nodes = [
        TestServer::start(config()).await?,
        TestServer::start(config()).await?,
    ];
    let admin = Admin::new(nodes[0].addr, Some(OPERATOR_KEY));
    let (status, body) = admin
        .upload("acme", "live", component("versioned_v1")?, "")
        .await?;
    assert_eq!(status, 201, "{body}");
    for node in &nodes {
        wait_served(&node.state, "acme", "live", 1).await?;
    }
    Ok((nodes, admin))
}

async fn redis() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await?)
}

/// The store's key of a tenant's shared code.
fn code_key(prefix: &str) -> String {
    format!("{prefix}:store:code:acme")
}

async fn version_on(node: &TestServer) -> anyhow::Result<serde_json::Value> {
    let (mut client, _) = RawClient::connect(node, "/acme/live").await?;
    Ok(client.invoke("1", "Version", json!([])).await?["result"].clone())
}

/// Delete the hub (its keys leave the shared Redis) and the shared code.
async fn clean_up(prefix: &str, nodes: [TestServer; 2]) -> anyhow::Result<()> {
    let admin = Admin::new(nodes[0].addr, Some(OPERATOR_KEY));
    assert_eq!(admin.delete("/tenants/acme/hubs/live").await?.0, 200);
    redis().await?.del::<_, ()>(code_key(prefix)).await?;
    for node in nodes {
        node.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_load_the_code_the_uploading_node_compiled() -> anyhow::Result<()> {
    // 0: every component straight to the optimizing compiler; 1: every
    // component to the baseline compiler first.
    for (baseline_above, tier) in [(0, "optimized"), (1, "baseline")] {
        let prefix = unique_prefix("shared-code");
        let (nodes, _) = two_nodes_serving_v1(|| node(&prefix, baseline_above)).await?;
        let mut redis = redis().await?;
        let stored: Option<String> = redis.hget(code_key(&prefix), "tier").await?;
        assert_eq!(stored.as_deref(), Some(tier));
        // Kept for five minutes at most.
        let ttl: i64 = redis.pttl(code_key(&prefix)).await?;
        assert!(0 < ttl && ttl <= 300_000, "{ttl} ms");
        assert_eq!(origin(&nodes[0]), Some(CodeOrigin::Compiled), "{tier}");
        assert_eq!(origin(&nodes[1]), Some(CodeOrigin::Shared), "{tier}");
        assert_eq!(version_on(&nodes[1]).await?, "v1");
        // Baseline code is followed by the uploading node's optimized code.
        wait_until(PATIENCE, || optimized(&nodes[1]).is_some()).await?;
        assert_eq!(optimized(&nodes[0]), Some(CodeOrigin::Compiled), "{tier}");
        assert_eq!(optimized(&nodes[1]), Some(CodeOrigin::Shared), "{tier}");
        let stored: Option<String> = redis.hget(code_key(&prefix), "tier").await?;
        assert_eq!(stored.as_deref(), Some("optimized"));
        assert_eq!(version_on(&nodes[1]).await?, "v1");
        clean_up(&prefix, nodes).await?;
    }
    Ok(())
}

/// Upload the component `name` to `acme/live` without activating it, put
/// `fields(its SHA-256)` in the store in place of the code the upload left
/// there, activate it, and wait until `node` serves it.
async fn activate_with_code(
    admin: &Admin,
    node: &TestServer,
    prefix: &str,
    name: &str,
    fields: impl FnOnce(String) -> HashMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    let (status, body) = admin
        .upload("acme", "live", component(name)?, "?activate=false")
        .await?;
    assert_eq!(status, 201, "{body}");
    let sha256 = body["sha256"].as_str().unwrap_or_default().to_owned();
    let version = body["version"].as_u64().unwrap_or_default();
    let fields: Vec<(String, Vec<u8>)> = fields(sha256).into_iter().collect();
    redis()
        .await?
        .hset_multiple::<_, _, _, ()>(code_key(prefix), &fields)
        .await?;
    let (status, body) = admin
        .post_json(
            "/tenants/acme/hubs/live/activate",
            json!({ "version": version }),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    wait_served(&node.state, "acme", "live", version).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_changed_in_the_store_is_never_loaded() -> anyhow::Result<()> {
    let prefix = unique_prefix("forged-code");
    let (nodes, admin) = two_nodes_serving_v1(|| node(&prefix, 0)).await?;
    let mut redis = redis().await?;
    // Genuine code, sealed by a node: version 1's.
    let genuine: HashMap<String, Vec<u8>> = redis.hgetall(code_key(&prefix)).await?;
    assert!(genuine.contains_key("code"), "{:?}", genuine.keys());

    // A store writer relabels it as version 2's code (so that nodes would
    // run version 1 where version 2 was uploaded).
    let forged = |sha256: String| {
        let mut forged = genuine.clone();
        forged.insert("sha256".into(), sha256.into_bytes());
        forged
    };
    activate_with_code(&admin, &nodes[1], &prefix, "versioned_v2", forged).await?;
    assert_eq!(origin(&nodes[1]), Some(CodeOrigin::Compiled));
    assert_eq!(version_on(&nodes[1]).await?, "v2");

    // Version 1 again, its own code in the store with the MAC of another key.
    let other_key = |_| {
        let mut other_key = genuine.clone();
        other_key.insert("mac".into(), vec![0x5a; 32]);
        other_key
    };
    activate_with_code(&admin, &nodes[1], &prefix, "versioned_v1", other_key).await?;
    assert_eq!(origin(&nodes[1]), Some(CodeOrigin::Compiled));
    assert_eq!(version_on(&nodes[1]).await?, "v1");
    clean_up(&prefix, nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_would_pass_the_tenants_storage_limit_is_not_shared() -> anyhow::Result<()> {
    let prefix = unique_prefix("unshared-code");
    let bytes = component("versioned_v1")?;
    let config = || {
        let mut config = node(&prefix, 0);
        // Room for the component, not for its compiled code beside it.
        config.admin.storage.max_stored_bytes = bytes.len() as u64 + 1024;
        config
    };
    let (nodes, _) = two_nodes_serving_v1(config).await?;
    assert_eq!(origin(&nodes[1]), Some(CodeOrigin::Compiled));
    let kept: bool = redis().await?.exists(code_key(&prefix)).await?;
    assert!(!kept, "the code was stored beyond the tenant's limit");
    assert_eq!(version_on(&nodes[1]).await?, "v1");
    clean_up(&prefix, nodes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_compiles_the_optimized_code_itself_when_none_comes() -> anyhow::Result<()> {
    let prefix = unique_prefix("no-optimized-code");
    let config = || {
        let mut config = node(&prefix, 1);
        // The wait for another node's optimized code is six sync intervals.
        config.admin.sync_interval = Duration::from_millis(200);
        config
    };
    let (nodes, _) = two_nodes_serving_v1(config).await?;
    assert_eq!(origin(&nodes[1]), Some(CodeOrigin::Shared));
    // The shared code goes (as when it expires): the uploading node then
    // leaves no optimized code in its place.
    redis().await?.del::<_, ()>(code_key(&prefix)).await?;
    wait_until(PATIENCE, || optimized(&nodes[1]).is_some()).await?;
    // Had the uploading node been quicker than the delete, the node took
    // its code; either way it runs optimized code.
    assert_eq!(version_on(&nodes[1]).await?, "v1");
    clean_up(&prefix, nodes).await
}
