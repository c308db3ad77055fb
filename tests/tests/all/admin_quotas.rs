//! What a tenant may keep through the admin API: hubs, versions kept per hub
//! (older ones pruned, with their files and compiled code), stored bytes;
//! and uploads in progress on a node.

use hubhost::config::Config;
use hubhost::tenants::TenantConfig;
use hubhost_tests::admin::{Admin, wait_served};
use hubhost_tests::redis_server::probe;
use hubhost_tests::{
    PATIENCE, REDIS_URL, TestServer, config, guest, temp_dir, unique_prefix, wait_until,
};
use serde_json::{Value, json};
use std::path::Path;

const SMALL_KEY: &str = "small-admin-key-0123456789";
const TIGHT_KEY: &str = "tight-admin-key-0123456789";

fn component(name: &str) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(guest(name))?)
}

fn quota_config(dir: &Path) -> anyhow::Result<Config> {
    let mut config = config();
    config.data_dir = Some(dir.join("data"));
    config.cache_dir = Some(dir.join("cache"));
    let chat = component("chat")?.len();
    for (name, key, storage) in [
        (
            "small",
            SMALL_KEY,
            json!({ "max_hubs": 1, "max_versions": 3 }),
        ),
        // Room for one chat component and a half.
        (
            "tight",
            TIGHT_KEY,
            json!({ "max_stored_bytes": chat + chat / 2 }),
        ),
    ] {
        let tenant = TenantConfig {
            admin_keys: vec![key.into()],
            storage: match storage {
                Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
            ..TenantConfig::default()
        };
        config.tenants.insert(name.into(), tenant);
    }
    Ok(config)
}

/// The versions the store keeps of `tenant/hub`, and its activation history.
async fn versions(admin: &Admin, tenant: &str, hub: &str) -> anyhow::Result<(Vec<u64>, Value)> {
    let (_, record) = admin.get(&format!("/tenants/{tenant}/hubs/{hub}")).await?;
    let numbers = record["versions"]
        .as_array()
        .map(|all| all.iter().filter_map(|v| v["version"].as_u64()).collect())
        .unwrap_or_default();
    Ok((numbers, record["history"].clone()))
}

/// Whether the cache holds compiled code of the component with `sha256`.
fn cached(dir: &Path, sha256: &str) -> anyhow::Result<bool> {
    Ok(std::fs::read_dir(dir.join("cache"))?
        .filter_map(Result::ok)
        .any(|entry| entry.file_name().to_string_lossy().starts_with(sha256)))
}

#[tokio::test]
async fn old_versions_are_pruned_and_hubs_and_bytes_are_bounded() -> anyhow::Result<()> {
    let dir = temp_dir("admin-quotas")?;
    let server = TestServer::start(quota_config(&dir)?).await?;
    let small = Admin::new(server.addr, Some(SMALL_KEY));
    let upload = |name: &'static str, query: &'static str| {
        let small = &small;
        async move {
            let (status, body) = small
                .upload("small", "chat", component(name)?, query)
                .await?;
            anyhow::ensure!(status == 201, "{name}: {status} {body}");
            Ok::<Value, anyhow::Error>(body)
        }
    };
    upload("chat", "").await?;
    let v2 = upload("versioned_v1", "?activate=false").await?;
    upload("versioned_v2", "?activate=false").await?;
    assert!(cached(&dir, v2["sha256"].as_str().unwrap_or("?"))?);
    // A fourth version: the oldest that is neither active nor new goes.
    upload("faulty", "?activate=false").await?;
    assert_eq!(versions(&small, "small", "chat").await?.0, [1, 3, 4]);
    let v2_file = dir.join("data/wasm/small/chat/2.wasm");
    assert!(!v2_file.exists(), "{} is still there", v2_file.display());
    assert!(
        !cached(&dir, v2["sha256"].as_str().unwrap_or("?"))?,
        "the pruned version's compiled code is still cached"
    );
    // The active one and the one before it (a rollback's target) stay.
    let (status, body) = small
        .post_json("/tenants/small/hubs/chat/activate", json!({"version": 3}))
        .await?;
    assert_eq!(status, 200, "{body}");
    upload("chat", "?activate=false").await?;
    assert_eq!(
        versions(&small, "small", "chat").await?,
        (vec![1, 3, 5], json!([1, 3]))
    );
    let (status, body) = small
        .post_json("/tenants/small/hubs/chat/rollback", json!({}))
        .await?;
    assert_eq!((status, body["active"].as_u64()), (200, Some(1)), "{body}");
    wait_served(&server.state, "small", "chat", 1).await?;

    // One hub is all this tenant may have.
    let (status, body) = small
        .upload("small", "other", component("chat")?, "")
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            409,
            Some("The tenant has 1 hubs, its limit (storage.max_hubs); delete one first.")
        )
    );

    // Bytes: one component and a half fit, two do not.
    let tight = Admin::new(server.addr, Some(TIGHT_KEY));
    let (status, body) = tight
        .upload("tight", "chat", component("chat")?, "")
        .await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = tight
        .upload("tight", "chat", component("chat")?, "")
        .await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("(storage.max_stored_bytes)")),
        "{body}"
    );
    assert_eq!(
        versions(&tight, "tight", "chat").await?.0,
        [1],
        "nothing stored"
    );
    // The refusals are counted as each tenant's, and the tenant can see them.
    let (status, hits) = small.get("/tenants/small/limits").await?;
    assert_eq!(
        (status, hits),
        (
            200,
            json!({"tenant": "small", "hits": {"storage.max_hubs": 1}})
        )
    );
    let (_, hits) = tight.get("/tenants/tight/limits").await?;
    assert_eq!(hits["hits"], json!({"storage.max_stored_bytes": 1}));
    let (status, _) = tight.get("/tenants/small/limits").await?;
    assert_eq!(
        status, 403,
        "another tenant's counts are not for tight's key"
    );
    server.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// The same pruning in a cluster's store (Redis): the pruned version's
/// record and component leave Redis in one step.
#[tokio::test]
async fn pruning_works_in_the_redis_store() -> anyhow::Result<()> {
    use redis::AsyncCommands as _;
    let dir = temp_dir("admin-quotas-redis")?;
    let prefix = unique_prefix("quota");
    let mut config = quota_config(&dir)?;
    config.data_dir = None;
    config.redis_url = Some(REDIS_URL.into());
    config.cluster_prefix = prefix.clone();
    let server = TestServer::start(config).await?;
    let small = Admin::new(server.addr, Some(SMALL_KEY));
    for (name, query) in [
        ("chat", ""),
        ("versioned_v1", "?activate=false"),
        ("versioned_v2", "?activate=false"),
        ("faulty", "?activate=false"),
    ] {
        let (status, body) = small
            .upload("small", "chat", component(name)?, query)
            .await?;
        assert_eq!(status, 201, "{name}: {body}");
    }
    assert_eq!(versions(&small, "small", "chat").await?.0, [1, 3, 4]);
    let mut redis = probe(REDIS_URL).await?;
    let component_keys: Vec<String> = redis
        .keys(format!("{prefix}:store:hub:small/chat:wasm:*"))
        .await?;
    let mut numbers: Vec<&str> = component_keys
        .iter()
        .filter_map(|k| k.rsplit(':').next())
        .collect();
    numbers.sort();
    assert_eq!(numbers, ["1", "3", "4"]);
    server.stop().await?;
    let mut leftovers = component_keys;
    leftovers.extend([
        format!("{prefix}:store:hub:small/chat:versions"),
        format!("{prefix}:store:hub:small/chat:history"),
        format!("{prefix}:store:hub:small/chat:seq"),
        format!("{prefix}:store:hubs"),
    ]);
    let _: () = redis.del(leftovers).await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Every node drops the compiled code of a version pruned elsewhere, once
/// it has compiled it: two nodes on one Redis store, each with its own cache.
#[tokio::test]
async fn other_nodes_drop_the_compiled_code_of_pruned_versions() -> anyhow::Result<()> {
    let dir = temp_dir("admin-quotas-cache")?;
    let prefix = unique_prefix("quota-cache");
    let node = |name: &str| -> anyhow::Result<Config> {
        let mut config = quota_config(&dir)?;
        config.data_dir = None;
        config.cache_dir = Some(dir.join(name).join("cache"));
        config.redis_url = Some(REDIS_URL.into());
        config.cluster_prefix = prefix.clone();
        Ok(config)
    };
    let a = TestServer::start(node("a")?).await?;
    let b = TestServer::start(node("b")?).await?;
    let small = Admin::new(a.addr, Some(SMALL_KEY));
    let mut shas = Vec::new();
    for (version, name) in (1..).zip(["chat", "versioned_v1", "versioned_v2", "faulty"]) {
        let (status, body) = small.upload("small", "chat", component(name)?, "").await?;
        assert_eq!(status, 201, "{name}: {body}");
        shas.push(body["sha256"].as_str().unwrap_or_default().to_owned());
        wait_served(&b.state, "small", "chat", version).await?;
    }
    // Four versions, three kept: the first went, on both nodes' disks.
    assert_eq!(versions(&small, "small", "chat").await?.0, [2, 3, 4]);
    assert!(
        !cached(&dir.join("b"), &shas[0])?,
        "node b kept the pruned version's code"
    );
    assert!(cached(&dir.join("b"), &shas[3])?);
    a.stop().await?;
    b.stop().await?;
    let mut redis = probe(REDIS_URL).await?;
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut redis, format!("{prefix}:*")).await?;
    if !keys.is_empty() {
        let _: () = redis::AsyncCommands::del(&mut redis, keys).await?;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Uploads in progress on a node are bounded, counted from before the body
/// is read: one more is refused at once, and the place is free again when
/// an upload ends, however it ends.
#[tokio::test]
async fn uploads_in_progress_are_bounded() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let dir = temp_dir("admin-busy")?;
    let mut config = quota_config(&dir)?;
    config.admin.max_uploads_in_progress = 1;
    let server = TestServer::start(config).await?;
    let small = Admin::new(server.addr, Some(SMALL_KEY));
    // An upload whose body never finishes arriving holds the one place.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await?;
    stalled
        .write_all(
            format!(
                "POST /admin/v1/tenants/small/hubs/chat/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SMALL_KEY}\r\nContent-Length: 100000\r\n\r\n\0asm"
            )
            .as_bytes(),
        )
        .await?;
    let deployer = &server.state.deployer;
    wait_until(PATIENCE, || deployer.uploads_in_progress() == 1).await?;
    let (status, body) = small
        .upload("small", "chat", component("chat")?, "")
        .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            503,
            Some("Too many uploads in progress on this node; try again later.")
        )
    );
    drop(stalled);
    wait_until(PATIENCE, || deployer.uploads_in_progress() == 0).await?;
    let (status, body) = small
        .upload("small", "chat", component("chat")?, "")
        .await?;
    assert_eq!(status, 201, "{body}");
    server.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
