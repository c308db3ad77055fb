//! Redis Sentinel (#21, part): two nodes reach Redis through three
//! sentinels (`redis+sentinel://…/main`), with a primary and a replica of
//! the test's own. The primary is killed under traffic: the sentinels
//! promote the replica, both nodes follow without a restart, delivery
//! resumes, and what was lost is bounded by what was sent while no primary
//! was named; hub state works on the new primary.

use hubhost_tests::redis_server::{NOTICE, RedisServer, free_port, probe};
use hubhost_tests::traffic::through_failover;
use hubhost_tests::{
    PATIENCE, RawClient, TestServer, cluster_config, temp_dir, unique_prefix, wait_until_async,
};
use serde_json::json;

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
    let (receiver, _) = RawClient::connect(&b, "/demo/chat").await?;
    let count = sender.invoke("c1", "Count", json!([])).await?;
    assert_eq!(count["result"], 1, "state through Sentinel: {count}");

    // Traffic: A's client sends to the others (B's client) every 20 ms.
    let failover = async {
        primary.kill().await?;
        wait_until_async(NOTICE, || async {
            primary_port(&sentinels[0])
                .await
                .is_ok_and(|p| p == Some(replica_port))
        })
        .await
    };
    through_failover("sentinel failover", sender, receiver, failover).await?;
    println!(
        "node A's backplane: {:?}",
        a.state.cluster.backplane().stats()
    );
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
