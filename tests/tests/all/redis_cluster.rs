//! Redis Cluster (#21): nodes reach a 3-primary cluster (each primary with a
//! replica) of the test's own through `redis+cluster://` seeds. The
//! backplane spec and the chat run on it with sharded pub/sub only; hubs
//! deployed to the store, state and timers work; tenants' messages spread
//! over the shards; a primary killed under traffic is replaced by its
//! replica and delivery resumes without a restart, with the loss bounded.

use crate::redis::chat_crosses_nodes_on;
use hubhost::names::HubKey;
use hubhost_tests::admin::{Admin, OPERATOR_KEY, wait_served};
use hubhost_tests::redis_server::{NOTICE, RedisCluster};
use hubhost_tests::traffic::through_failover;
use hubhost_tests::{
    PATIENCE, RawClient, TestServer, cluster_config, guest, unique_prefix, wait_until,
    wait_until_async,
};
use serde_json::json;

/// `SPUBLISH` and `PUBLISH` calls, summed over the primaries.
async fn publishes(cluster: &RedisCluster) -> anyhow::Result<(u64, u64)> {
    let sum = |figures: Vec<(u16, u64)>| figures.iter().map(|(_, n)| n).sum::<u64>();
    Ok((
        sum(cluster
            .on_primaries("commandstats", "cmdstat_spublish:calls=")
            .await?),
        sum(cluster
            .on_primaries("commandstats", "cmdstat_publish:calls=")
            .await?),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_carries_the_spec_the_chat_and_the_store() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3, 1).await?;
    let url = cluster.url();

    // The backplane spec, through sharded pub/sub only.
    let nodes = hubhost_tests::spec::run_on_redis(&url).await?;
    let (sharded, classic) = publishes(&cluster).await?;
    assert!(
        sharded > 0 && classic == 0,
        "SPUBLISH {sharded}, PUBLISH {classic}"
    );

    // Many tenants' hubs spread over the shards: each primary carries
    // between a fifth and a half of 600 hubs' messages (a third expected).
    let before = cluster
        .on_primaries("commandstats", "cmdstat_spublish:calls=")
        .await?;
    let channels = hubhost::backplane::channels::Channels::new(unique_prefix("spread"));
    for tenant in 0..600 {
        let hub = HubKey::new(&format!("tenant-{tenant}"), "chat")?;
        nodes[0].publish(hub.tenant(), &channels.all(&hub), "x".into())?;
    }
    wait_until_async(NOTICE, || async {
        publishes(&cluster)
            .await
            .is_ok_and(|(s, _)| s >= sharded + 600)
    })
    .await?;
    let after = cluster
        .on_primaries("commandstats", "cmdstat_spublish:calls=")
        .await?;
    let shares: Vec<u64> = after
        .iter()
        .map(|(port, n)| {
            n - before
                .iter()
                .find(|(p, _)| p == port)
                .map_or(0, |(_, b)| *b)
        })
        .collect();
    println!("600 hubs' publishes per shard: {shares:?}");
    assert_eq!(shares.len(), 3);
    assert!(
        shares.iter().all(|&n| (120..=300).contains(&n)),
        "uneven spread: {shares:?}"
    );
    drop(nodes);

    // The chat across two nodes.
    chat_crosses_nodes_on(&url).await?;

    // A hub deployed through one node's admin API is served by both (the
    // store's keys share one slot); its state and timers work.
    let prefix = unique_prefix("cluster-store");
    let mut config = cluster_config(&url, &prefix);
    config.admin.operator_keys = vec![OPERATOR_KEY.into()];
    let a = TestServer::start(config.clone()).await?;
    let b = TestServer::start(config).await?;
    let operator = Admin::new(a.addr, Some(OPERATOR_KEY));
    let (status, body) = operator.put_json("/tenants/acme", json!({})).await?;
    assert!(status < 300, "{status} {body}");
    let (status, body) = operator
        .upload("acme", "chat", std::fs::read(guest("chat"))?, "")
        .await?;
    assert_eq!(status, 201, "{body}");
    wait_served(&a.state, "acme", "chat", 1).await?;
    wait_served(&b.state, "acme", "chat", 1).await?;
    let (mut on_a, _) = RawClient::connect(&a, "/acme/chat").await?;
    let (mut on_b, _) = RawClient::connect(&b, "/acme/chat").await?;
    assert_eq!(on_a.invoke("1", "Count", json!([])).await?["result"], 1);
    assert_eq!(on_b.invoke("2", "Count", json!([])).await?["result"], 2);
    let reminder = on_a.invoke("3", "Remind", json!([200, "ping"])).await?;
    assert!(reminder.get("error").is_none(), "{reminder}");
    on_a.next_where(|m| m["target"] == "Reminder").await?;
    let (_, hubs) = Admin::new(b.addr, Some(OPERATOR_KEY))
        .get("/tenants/acme/hubs")
        .await?;
    assert!(hubs.to_string().contains("\"chat\""), "{hubs}");

    // The chat's slot moves to another shard under traffic: publishers
    // follow the redirect, subscribers subscribe again where it went.
    let (sender, _) = RawClient::connect(&a, "/demo/chat").await?;
    let (receiver, _) = RawClient::connect(&b, "/demo/chat").await?;
    let tag = format!("{{{prefix}:demo:chat}}");
    let owner = cluster.owner(&tag).await?;
    let to = cluster
        .nodes()
        .await?
        .iter()
        .find(|n| n.primary && n.port != owner)
        .map(|n| n.port)
        .ok_or_else(|| anyhow::anyhow!("no other primary"))?;
    let moving = async {
        cluster.move_slot(&tag, to).await?;
        wait_until_async(NOTICE, || async {
            cluster.owner(&tag).await.is_ok_and(|port| port == to)
        })
        .await
    };
    through_failover("slot move", sender, receiver, moving).await?;
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_a_cluster_failover_under_traffic() -> anyhow::Result<()> {
    let mut cluster = RedisCluster::start(3, 1).await?;
    let url = cluster.url();
    let prefix = unique_prefix("cluster-failover");
    let a = TestServer::start(cluster_config(&url, &prefix)).await?;
    let b = TestServer::start(cluster_config(&url, &prefix)).await?;
    for node in [&a, &b] {
        let backplane = node.state.cluster.backplane().clone();
        wait_until(NOTICE, move || backplane.is_ready()).await?;
    }
    let alive = a.state.cluster.clone();
    wait_until(PATIENCE, move || !alive.alive_nodes().is_empty()).await?;
    let (sender, _) = RawClient::connect(&a, "/demo/chat").await?;
    let (receiver, _) = RawClient::connect(&b, "/demo/chat").await?;

    // Kill the primary that carries the chat's messages.
    let owner = cluster.owner(&format!("{{{prefix}:demo:chat}}")).await?;
    let primary = cluster
        .take(owner)
        .ok_or_else(|| anyhow::anyhow!("no server {owner}"))?;
    let failover = async {
        primary.kill().await?;
        wait_until_async(NOTICE, || async {
            cluster
                .owner(&format!("{{{prefix}:demo:chat}}"))
                .await
                .is_ok_and(|port| port != owner)
        })
        .await
    };
    let report = through_failover("cluster failover", sender, receiver, failover).await?;
    let stats = a.state.cluster.backplane().stats();
    println!("node A's backplane: {stats:?}; lost: {:?}", report.lost);
    // Both report ready again by themselves. Not necessarily at once: a
    // node whose subscriber gave up repairing starts over from the slot map,
    // which can still name the dead primary for a moment (`MOVED`, retried).
    for node in [&a, &b] {
        wait_until_async(NOTICE, || async {
            hubhost_tests::http(node.addr, "GET", "/readyz")
                .await
                .is_ok_and(|(status, _)| status == 200)
        })
        .await?;
    }
    a.stop().await?;
    b.stop().await?;
    Ok(())
}
