//! Hot reload across a cluster: a new version replaces the old on every node
//! under continuous traffic without a disconnect or a lost message; stored
//! hubs come back after restarts and reach nodes that start later; the
//! development watch directory reloads on change.

use hubhost::config::Config;
use hubhost::hubs::Source;
use hubhost::names::HubKey;
use hubhost_tests::admin::{Admin, OPERATOR_KEY, wait_served};
use hubhost_tests::{
    PATIENCE, REDIS_URL, RawClient, TestServer, cluster_config, config, guest, temp_dir,
    unique_prefix, wait_until,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn node(prefix: &str) -> Config {
    let mut config = cluster_config(REDIS_URL, prefix);
    config.admin.operator_keys = vec![OPERATOR_KEY.into()];
    config
}

fn component(name: &str) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(guest(name))?)
}

/// The last sequence number a sender sends: receivers stop on it.
const DONE: u64 = u64::MAX;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_replaces_the_old_on_every_node_under_traffic() -> anyhow::Result<()> {
    let prefix = unique_prefix("hotswap");
    let nodes = [
        TestServer::start(node(&prefix)).await?,
        TestServer::start(node(&prefix)).await?,
    ];
    let (status, body) = Admin::new(nodes[0].addr, Some(OPERATOR_KEY))
        .upload("acme", "live", component("versioned_v1")?, "")
        .await?;
    assert_eq!(status, 201, "{body}");
    for node in &nodes {
        wait_served(&node.state, "acme", "live", 1).await?;
    }

    // Receivers in group "g" on both nodes, reading everything until both
    // senders' last tick.
    let mut receivers = Vec::new();
    for i in 0..6 {
        let (mut client, _) = RawClient::connect(&nodes[i % 2], "/acme/live").await?;
        let joined = client.invoke("join", "JoinGroup", json!(["g"])).await?;
        assert_eq!(joined.get("error"), None, "{joined}");
        receivers.push(tokio::spawn(async move {
            let mut ticks: Vec<Value> = Vec::new();
            let mut done = 0;
            while done < 2 {
                let message = client.next().await?;
                anyhow::ensure!(message["type"] != 7, "receiver {i} closed: {message}");
                if message["target"] == "Tick" {
                    if message["arguments"][2].as_u64() == Some(DONE) {
                        done += 1;
                    } else {
                        ticks.push(message["arguments"].clone());
                    }
                }
            }
            // Still connected, still in the group, now on the new code.
            let version = client.invoke("after", "Version", json!([])).await?;
            anyhow::Ok((ticks, version["result"].clone()))
        }));
    }

    // One sender per node, ticking as fast as calls complete.
    let stop = Arc::new(AtomicBool::new(false));
    let v2_answers: Vec<Arc<AtomicU64>> = nodes.iter().map(|_| Arc::default()).collect();
    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let (mut client, _) = RawClient::connect(node, "/acme/live").await?;
        let (stop, v2_answers, sent) = (stop.clone(), v2_answers[n].clone(), sent.clone());
        senders.push(tokio::spawn(async move {
            let name = format!("sender-{n}");
            let mut answers = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let reply = client
                    .invoke(&seq.to_string(), "Tick", json!(["g", name, seq]))
                    .await?;
                let version = reply["result"].as_str().unwrap_or_default().to_owned();
                anyhow::ensure!(!version.is_empty(), "tick {seq} failed: {reply}");
                if version == "v2" {
                    v2_answers.fetch_add(1, Ordering::Relaxed);
                }
                answers.push(version);
                sent.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            client
                .invoke("done", "Tick", json!(["g", name, DONE]))
                .await?;
            anyhow::Ok((name, answers))
        }));
    }

    wait_until(PATIENCE, || sent.load(Ordering::Relaxed) >= 100).await?;
    let (status, body) = Admin::new(nodes[1].addr, Some(OPERATOR_KEY))
        .upload("acme", "live", component("versioned_v2")?, "")
        .await?;
    assert_eq!((status, body["version"].as_u64()), (201, Some(2)), "{body}");
    for node in &nodes {
        wait_served(&node.state, "acme", "live", 2).await?;
    }
    // Both senders keep going well past their node's switch.
    wait_until(PATIENCE, || {
        v2_answers
            .iter()
            .all(|count| count.load(Ordering::Relaxed) >= 100)
    })
    .await?;
    stop.store(true, Ordering::Relaxed);

    let mut answers_by_sender = std::collections::HashMap::new();
    for sender in senders {
        let (name, answers) = sender.await??;
        // Answers switch once from v1 to v2, on both nodes.
        let switch = answers
            .iter()
            .position(|v| v == "v2")
            .unwrap_or(answers.len());
        assert!(
            switch > 0 && switch < answers.len(),
            "{name}: {switch} of {}",
            answers.len()
        );
        assert!(
            answers[..switch].iter().all(|v| v == "v1")
                && answers[switch..].iter().all(|v| v == "v2")
        );
        answers_by_sender.insert(name, answers);
    }
    for receiver in receivers {
        let (ticks, version) = receiver.await??;
        assert_eq!(version, "v2");
        // Every tick of every sender, once, in order, stamped as answered.
        for (name, answers) in &answers_by_sender {
            let got: Vec<(u64, String)> = ticks
                .iter()
                .filter(|t| t[1] == name.as_str())
                .map(|t| {
                    (
                        t[2].as_u64().unwrap_or(u64::MAX),
                        t[0].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let expected: Vec<(u64, String)> = answers
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, v)| (i as u64, v))
                .collect();
            let missing: Vec<_> = expected.iter().filter(|e| !got.contains(e)).collect();
            let stats: Vec<_> = nodes
                .iter()
                .map(|n| n.state.cluster.backplane().stats())
                .collect();
            assert_eq!(
                got.len(),
                expected.len(),
                "{name}: ticks lost or doubled; missing {missing:?}; backplanes {stats:?}"
            );
            assert_eq!(got, expected, "{name}");
        }
    }
    // Leave the shared Redis as found (but for the version counter).
    let admin = Admin::new(nodes[0].addr, Some(OPERATOR_KEY));
    assert_eq!(admin.delete("/tenants/acme/hubs/live").await?.0, 200);
    for node in nodes {
        node.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_hubs_come_back_after_restarts_and_reach_later_nodes() -> anyhow::Result<()> {
    // In Redis, for a cluster.
    let prefix = unique_prefix("restart");
    let first = TestServer::start(node(&prefix)).await?;
    let admin = Admin::new(first.addr, Some(OPERATOR_KEY));
    for name in ["versioned_v1", "versioned_v2"] {
        assert_eq!(
            admin.upload("acme", "live", component(name)?, "").await?.0,
            201
        );
    }
    wait_served(&first.state, "acme", "live", 2).await?;
    let later = TestServer::start(node(&prefix)).await?;
    wait_served(&later.state, "acme", "live", 2).await?;
    let (mut client, _) = RawClient::connect(&later, "/acme/live").await?;
    assert_eq!(
        client.invoke("1", "Version", json!([])).await?["result"],
        "v2"
    );
    first.stop().await?;
    let restarted = TestServer::start(node(&prefix)).await?;
    wait_served(&restarted.state, "acme", "live", 2).await?;
    // Clean up the shared Redis: a delete removes the hub's keys.
    assert_eq!(
        Admin::new(restarted.addr, Some(OPERATOR_KEY))
            .delete("/tenants/acme/hubs/live")
            .await?
            .0,
        200
    );
    let gone = HubKey::new("acme", "live")?;
    wait_until(PATIENCE, || later.state.deployer.served(&gone).is_none()).await?;
    later.stop().await?;
    restarted.stop().await?;

    // In a data directory, for a node on its own.
    let dir = temp_dir("restart-local")?;
    let mut local = config();
    local.data_dir = Some(dir.clone());
    local.admin.operator_keys = vec![OPERATOR_KEY.into()];
    let alone = TestServer::start(local.clone()).await?;
    assert_eq!(
        Admin::new(alone.addr, Some(OPERATOR_KEY))
            .upload("acme", "live", component("versioned_v2")?, "")
            .await?
            .0,
        201
    );
    alone.stop().await?;
    let again = TestServer::start(local).await?;
    wait_served(&again.state, "acme", "live", 1).await?;
    let (mut client, _) = RawClient::connect(&again, "/acme/live").await?;
    assert_eq!(
        client.invoke("1", "Version", json!([])).await?["result"],
        "v2"
    );
    again.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn the_watch_directory_reloads_on_change() -> anyhow::Result<()> {
    let dir = temp_dir("watch")?;
    std::fs::create_dir_all(dir.join("acme"))?;
    let file = dir.join("acme/live.wasm");
    std::fs::write(&file, component("versioned_v1")?)?;
    let mut config = config();
    config.watch_dir = Some(dir.clone());
    let server = TestServer::start(config).await?;
    let key = HubKey::new("acme", "live")?;
    wait_until(PATIENCE, || {
        matches!(
            server.state.deployer.served(&key),
            Some(Source::Watch { .. })
        )
    })
    .await?;
    let (mut client, _) = RawClient::connect(&server, "/acme/live").await?;
    assert_eq!(
        client.invoke("1", "Version", json!([])).await?["result"],
        "v1"
    );
    // Written elsewhere and renamed into place, as a build would.
    let temp = dir.join("acme/live.tmp");
    std::fs::write(&temp, component("versioned_v2")?)?;
    std::fs::rename(&temp, &file)?;
    // The same connection runs the new code once the file is picked up.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for n in 0.. {
        if client.invoke(&n.to_string(), "Version", json!([])).await?["result"] == "v2" {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    std::fs::remove_file(&file)?;
    let close = client.next_where(|m| m["type"] == 7).await?;
    assert!(
        close["error"]
            .as_str()
            .unwrap_or_default()
            .contains("was deleted"),
        "{close}"
    );
    server.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
