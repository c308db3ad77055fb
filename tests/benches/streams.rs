//! Streams and client results next to Echo, on in-process nodes with raw
//! JSON clients over WebSockets: Echo round trips one after another (the
//! reference); the items a `Counter` stream delivers per second; `AskName`
//! round trips whose answer comes from a client on the same node, and on
//! another node (two nodes on the machine's Redis, under a unique prefix).
//! Run with `make bench`.

use hubhost_tests::{REDIS_URL, RawClient, TestServer, cluster_config, config, unique_prefix};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Instant;

const ROUND_TRIPS: usize = 2_000;
const ITEMS: u64 = 200_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

/// `ROUND_TRIPS` calls of `target(args)`, one after another: calls a second,
/// p50 and p99 in milliseconds.
async fn round_trips(
    client: &mut RawClient,
    target: &str,
    args: serde_json::Value,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut took = Vec::with_capacity(ROUND_TRIPS);
    let started = Instant::now();
    for i in 0..ROUND_TRIPS {
        let at = Instant::now();
        let reply = client.invoke(&i.to_string(), target, args.clone()).await?;
        anyhow::ensure!(reply.get("error").is_none(), "{reply}");
        took.push(at.elapsed().as_secs_f64() * 1e3);
    }
    let rate = ROUND_TRIPS as f64 / started.elapsed().as_secs_f64();
    took.sort_by(f64::total_cmp);
    Ok((rate, percentile(&took, 0.5), percentile(&took, 0.99)))
}

/// A client at `addr` that answers every `GetName` with its name; its id.
async fn answerer(addr: SocketAddr) -> anyhow::Result<String> {
    let (mut client, id) = RawClient::connect_as(addr, "/demo/chat", None).await?;
    tokio::spawn(async move {
        while let Ok(question) = client.next_where(|m| m["type"] == 1).await {
            let answer =
                json!({"type": 3, "invocationId": question["invocationId"], "result": "Ann"});
            if client.send(answer).await.is_err() {
                break;
            }
        }
    });
    Ok(id)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let server = TestServer::start(config()).await?;
    let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
    // Warm up: instances made, code paged in.
    round_trips(&mut client, "Echo", json!([1])).await?;
    let echo = round_trips(&mut client, "Echo", json!(["hello"])).await?;

    let started = Instant::now();
    client
        .send(json!({"type": 4, "invocationId": "s", "target": "Counter", "arguments": [ITEMS]}))
        .await?;
    let mut items = 0;
    loop {
        let message = client.next().await?;
        match message["type"].as_u64() {
            Some(2) => items += 1,
            Some(3) if message["invocationId"] == "s" => break,
            _ => {}
        }
    }
    anyhow::ensure!(items == ITEMS, "{items} items");
    let stream_rate = items as f64 / started.elapsed().as_secs_f64();

    let near = answerer(server.addr).await?;
    let same = round_trips(&mut client, "AskName", json!([near])).await?;

    let prefix = unique_prefix("streambench");
    let nodes = [
        TestServer::start(cluster_config(REDIS_URL, &prefix)).await?,
        TestServer::start(cluster_config(REDIS_URL, &prefix)).await?,
    ];
    let far = answerer(nodes[1].addr).await?;
    let (mut asker, _) = RawClient::connect(&nodes[0], "/demo/chat").await?;
    let other = round_trips(&mut asker, "AskName", json!([far])).await?;

    println!("\nstreams and client results, raw JSON clients over WebSockets\n");
    println!("| measure | per second | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    let row = |name: &str, (rate, p50, p99): (f64, f64, f64)| {
        println!("| {name} | {rate:.0} | {p50:.3} | {p99:.3} |");
    };
    row("Echo round trip (one client, one at a time)", echo);
    println!("| Counter stream items ({ITEMS} on one connection) | {stream_rate:.0} | | |");
    row("AskName, the answer from a client on the same node", same);
    row(
        "AskName, the answer from a client on another node (Redis)",
        other,
    );

    for node in nodes {
        node.stop().await?;
    }
    server.stop().await
}
