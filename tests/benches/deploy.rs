//! Upload to serving everywhere: the time from `POST …/versions` on one node
//! until every node of a three-node cluster serves the new version, for the
//! Rust chat hub (~190 KB) and the Python (~18 MB) and JavaScript (~12 MB)
//! ones, and until every node runs the optimizing compiler's code (a large
//! component is served first with the baseline compiler's). Twice, side by
//! side: each node compiling on its own (no secrets key, no disk cache: a
//! fresh fleet), then nodes that share a secrets key loading the code the
//! uploading node compiled. Uses a redis-server of its own on a free port.

use hubhost::hubs::Source;
use hubhost::names::HubKey;
use hubhost_tests::admin::{Admin, OPERATOR_KEY};
use hubhost_tests::redis_server::{RedisServer, free_port};
use hubhost_tests::{TestServer, cluster_config, guest, wait_until};
use std::time::{Duration, Instant};

const NODES: usize = 3;

/// The secrets key of the nodes that share compiled code.
const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("upload → serving on every node of {NODES} (release build)");
    println!(
        "{:<8} {:<14} {:>8} {:>10} {:>13} {:>17}",
        "hub", "code", "size KB", "upload ms", "all nodes ms", "all optimized ms"
    );
    // Each node compiling is the peer: what a cluster without a secrets key
    // does, and what every node did before compiled code was shared.
    for (mode, key) in [("each compiles", None), ("compiled once", Some(KEY))] {
        run(mode, key).await?;
    }
    Ok(())
}

async fn run(mode: &str, key: Option<&str>) -> anyhow::Result<()> {
    let redis = RedisServer::start(free_port()?).await?;
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let mut config = cluster_config(&redis.url(), "bench-deploy");
        config.admin.operator_keys = vec![OPERATOR_KEY.into()];
        config.admin.secrets_key = key.map(str::to_owned);
        nodes.push(TestServer::start(config).await?);
    }
    let admin = Admin::new(nodes[0].addr, Some(OPERATOR_KEY));
    for (name, file) in [
        ("rust", "chat"),
        ("python", "chat-python"),
        ("js", "chat-js"),
    ] {
        let bytes = std::fs::read(guest(file))?;
        let size = bytes.len();
        let key = HubKey::new("bench", name)?;
        let started = Instant::now();
        let (status, body) = admin.upload("bench", name, bytes, "").await?;
        anyhow::ensure!(status == 201, "upload failed: {body}");
        let uploaded = started.elapsed();
        let version = body["version"].as_u64().unwrap_or(0);
        let everywhere = || {
            nodes
                .iter()
                .all(|n| n.state.deployer.served(&key) == Some(Source::Store { version }))
        };
        wait_until(Duration::from_secs(120), everywhere).await?;
        let served = started.elapsed();
        // A large component is served first with baseline code; the
        // optimizing compiler's takes over in the background.
        let optimized = || {
            nodes.iter().all(|n| {
                n.state
                    .hubs
                    .get(&key)
                    .is_some_and(|slot| slot.active().optimized())
            })
        };
        wait_until(Duration::from_secs(180), optimized).await?;
        println!(
            "{name:<8} {mode:<14} {:>8} {:>10} {:>13} {:>17}",
            size / 1024,
            uploaded.as_millis(),
            served.as_millis(),
            started.elapsed().as_millis()
        );
    }
    for node in nodes {
        node.stop().await?;
    }
    redis.kill().await?;
    Ok(())
}
