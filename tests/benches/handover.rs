//! How fast a draining node hands its stateful-reconnect connections to
//! another (#18): two nodes on a Redis of their own, N raw stateful clients
//! on node A; A drains (no window); each client, once its socket drops,
//! resumes through node B (`Sequence`, then a `WhoAmI` that must answer its
//! own connection id). Reports the time until every client is served by B,
//! and handovers per second. Nodes and clients share one process and the
//! machine's cores.

use hubhost_tests::redis_server::{RedisServer, free_port};
use hubhost_tests::{RawClient, TestServer, cluster_config, unique_prefix, wait_until};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = RedisServer::start(free_port()?).await?;
    println!("stateful connections handed from a draining node to another (release build)");
    println!(
        "{:>12} {:>16} {:>18} {:>16}",
        "connections", "all moved (ms)", "handovers per s", "slowest (ms)"
    );
    for count in [100, 1000] {
        let prefix = unique_prefix("bench-handover");
        let mut config = cluster_config(&redis.url(), &prefix);
        config.backplane.heartbeat_interval = Duration::from_millis(200);
        config.drain.handover_timeout = Duration::from_secs(60);
        let a = TestServer::start(config.clone()).await?;
        let b = TestServer::start(config).await?;
        wait_until(Duration::from_secs(10), || {
            a.state.cluster.alive_nodes().len() == 1 && b.state.cluster.alive_nodes().len() == 1
        })
        .await?;
        let mut clients = Vec::new();
        for _ in 0..count {
            clients.push(RawClient::stateful(a.addr, "/demo/chat").await?);
        }
        let started = Instant::now();
        hubhost::drain::start(&a.state);
        let b_addr = b.addr;
        let moves = clients.into_iter().map(|(mut client, id, token)| {
            tokio::spawn(async move {
                while client.next().await.is_ok() {}
                let path = format!("/demo/chat?id={token}");
                let mut client = RawClient::open(b_addr, &path).await?;
                client.send(json!({"type": 9, "sequenceId": 1})).await?;
                let me = client.invoke("me", "WhoAmI", json!([])).await?;
                anyhow::ensure!(me["result"]["connectionId"] == id.as_str(), "{me}");
                Ok::<_, anyhow::Error>((started.elapsed(), client))
            })
        });
        let mut slowest = Duration::ZERO;
        let mut resumed = Vec::new();
        for moved in futures_util::future::join_all(moves).await {
            let (took, client) = moved??;
            slowest = slowest.max(took);
            resumed.push(client);
        }
        let all = started.elapsed();
        println!(
            "{count:>12} {:>16} {:>18.0} {:>16}",
            all.as_millis(),
            count as f64 / all.as_secs_f64(),
            slowest.as_millis()
        );
        drop(resumed);
        a.stop().await?;
        b.stop().await?;
    }
    Ok(())
}
