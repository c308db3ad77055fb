//! Redis Sentinel (#21, part): two nodes reach Redis through three
//! sentinels (`redis+sentinel://…/main`), with a primary and a replica of
//! the test's own. The primary is killed under traffic: the sentinels
//! promote the replica, both nodes follow without a restart, delivery
//! resumes, and what was lost is bounded by what was sent while no primary
//! was named; hub state works on the new primary.

use hubhost_tests::redis_server::{NOTICE, RedisServer, free_port, probe};
use hubhost_tests::{
    PATIENCE, RawClient, TestServer, cluster_config, temp_dir, unique_prefix, wait_until_async,
};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PRIMARY: &str = "main";

/// What `sentinel` says the primary's port is.
async fn primary_port(sentinel: &RedisServer) -> anyhow::Result<Option<u16>> {
    let mut connection = probe(&sentinel.url()).await?;
    let address: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(PRIMARY)
        .query_async(&mut connection)
        .await?;
    Ok(address.map(|(_, port)| port))
}

/// How many replicas and other sentinels `sentinel` knows of.
async fn known(sentinel: &RedisServer) -> anyhow::Result<(usize, usize)> {
    let mut connection = probe(&sentinel.url()).await?;
    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
        .arg("replicas")
        .arg(PRIMARY)
        .query_async(&mut connection)
        .await?;
    let others: Vec<redis::Value> = redis::cmd("SENTINEL")
        .arg("sentinels")
        .arg(PRIMARY)
        .query_async(&mut connection)
        .await?;
    Ok((replicas.len(), others.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_a_sentinel_failover_under_traffic() -> anyhow::Result<()> {
    let dir = temp_dir("sentinel")?;
    let primary = RedisServer::start(free_port()?).await?;
    let replica_port = free_port()?;
    let of = primary.port.to_string();
    let replica = RedisServer::start_with(replica_port, &["--replicaof", "127.0.0.1", &of]).await?;
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        sentinels.push(RedisServer::sentinel(free_port()?, PRIMARY, primary.port, &dir).await?);
    }
    // A failover needs sentinels that know the replica and each other.
    wait_until_async(NOTICE, || async {
        for sentinel in &sentinels {
            if !known(sentinel).await.is_ok_and(|(r, s)| r >= 1 && s >= 2) {
                return false;
            }
        }
        true
    })
    .await?;
    let hosts: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redis+sentinel://{}/{PRIMARY}", hosts.join(","));
    let prefix = unique_prefix("sentinel");
    let a = TestServer::start(cluster_config(&url, &prefix)).await?;
    let b = TestServer::start(cluster_config(&url, &prefix)).await?;
    let cluster = a.state.cluster.clone();
    wait_until_async(PATIENCE, || {
        let cluster = cluster.clone();
        async move { !cluster.alive_nodes().is_empty() }
    })
    .await?;
    let (mut sender, _) = RawClient::connect(&a, "/demo/chat").await?;
    let (mut receiver, _) = RawClient::connect(&b, "/demo/chat").await?;
    let count = sender.invoke("c1", "Count", json!([])).await?;
    assert_eq!(count["result"], 1, "state through Sentinel: {count}");

    // Traffic: A's client sends to the others (B's client) every 20 ms.
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn({
        let (sent, stop) = (sent.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let n = sent.load(Ordering::Relaxed);
                let message = json!({"type": 1, "target": "SendToOthers", "arguments": ["seq", n.to_string()]});
                sender.send(message).await?;
                sent.store(n + 1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(sender)
        }
    });
    let got: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let receiving = tokio::spawn({
        let got = got.clone();
        async move {
            loop {
                let message = match receiver.next().await {
                    Ok(message) => message,
                    // Quiet while no primary is named: keep listening.
                    Err(error) if error.to_string().contains("in time") => continue,
                    Err(_) => return anyhow::Ok(()),
                };
                if message["arguments"][0] == "seq"
                    && let Some(n) = message["arguments"][1]
                        .as_str()
                        .and_then(|n| n.parse().ok())
                {
                    *got.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(n)
                        .or_default() += 1;
                }
            }
        }
    });
    let received = |got: &Arc<Mutex<HashMap<u64, usize>>>| {
        got.lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .max()
            .copied()
    };
    wait_until_async(PATIENCE, || async {
        received(&got).is_some_and(|n| n >= 20)
    })
    .await?;

    let at_kill = sent.load(Ordering::Relaxed);
    primary.kill().await?;
    wait_until_async(NOTICE, || async {
        primary_port(&sentinels[0])
            .await
            .is_ok_and(|p| p == Some(replica_port))
    })
    .await?;
    // Delivery resumes on its own: messages sent after the failover arrive.
    let at_failover = sent.load(Ordering::Relaxed);
    wait_until_async(NOTICE, || async {
        received(&got).is_some_and(|n| n >= at_failover + 20)
    })
    .await?;
    let at_resume = sent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut sender = sending.await??;
    let last = sent.load(Ordering::Relaxed) - 1;
    wait_until_async(PATIENCE, || async {
        received(&got).is_some_and(|n| n >= last)
    })
    .await?;
    receiving.abort();

    let got = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        got.values().all(|&times| times == 1),
        "a message arrived twice"
    );
    let lost: Vec<u64> = (0..=last).filter(|n| !got.contains_key(n)).collect();
    let window = at_resume - at_kill;
    assert!(
        lost.iter().all(|n| (at_kill..at_resume).contains(n)),
        "lost outside the failover: {lost:?} (kill at {at_kill}, resumed at {at_resume})"
    );
    let stats = a.state.cluster.backplane().stats();
    println!(
        "sentinel failover: {} of {} messages lost ({window} were sent between the kill and resumed delivery); node A's backplane: {stats:?}",
        lost.len(),
        last + 1
    );
    // State works on the new primary (what replication had not copied yet
    // may be gone: any count will do). The first call after the failover
    // may still meet the dead primary's connection and fail with the usual
    // error; the next one reconnects through the sentinels.
    let deadline = tokio::time::Instant::now() + NOTICE;
    for attempt in 2.. {
        let count = sender
            .invoke(&format!("c{attempt}"), "Count", json!([]))
            .await?;
        if count["result"].is_u64() {
            break;
        }
        assert_eq!(count["error"], "state is unavailable right now", "{count}");
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "state never came back: {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in [&a, &b] {
        let (status, _) = hubhost_tests::http(node.addr, "GET", "/readyz").await?;
        assert_eq!(status, 200);
    }
    drop(replica);
    a.stop().await?;
    b.stop().await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
