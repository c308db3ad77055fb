//! Broadcast fan-out: one sender, 1,000 WebSocket clients, the same messages
//! on one node (in-memory backplane) and on two nodes over Redis (500 clients
//! each), side by side in one run; then one node again with the Prometheus
//! recorder installed (`--metrics-listen`), and what one recorded event
//! costs. Needs the machine's Redis on 6379 and the
//! guests built (`make bench`). Everything, clients included, shares this
//! machine's cores, so the figures are a floor.

use futures_util::{SinkExt, StreamExt};
use hubhost_tests::{REDIS_URL, TestServer, cluster_config, config, unique_prefix, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 1_000;
const MESSAGES: usize = 200;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to the chat hub, past the handshake.
async fn open(server: &TestServer) -> anyhow::Result<Socket> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/demo/chat", server.addr)).await?;
    ws.send(Message::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
        .await?;
    ws.next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no handshake reply"))??;
    Ok(ws)
}

/// Connect `count` clients to `server` and count the ReceiveMessage calls
/// each gets; returns the per-client counters.
async fn receivers(server: &TestServer, count: usize) -> anyhow::Result<Vec<Arc<AtomicU64>>> {
    let mut counters = Vec::new();
    for _ in 0..count {
        let mut ws = open(server).await?;
        let counter = Arc::new(AtomicU64::new(0));
        let seen = counter.clone();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let n = text.as_str().matches("\"ReceiveMessage\"").count();
                seen.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        counters.push(counter);
    }
    Ok(counters)
}

/// Send MESSAGES broadcasts through `server` and time their arrival at every
/// counter. Returns (seconds until all arrived, seconds until all arrived at `remote`).
async fn run(
    server: &TestServer,
    all: &[Arc<AtomicU64>],
    remote: &[Arc<AtomicU64>],
) -> anyhow::Result<(f64, f64)> {
    let mut ws = open(server).await?;
    let text = "x".repeat(64);
    let start = Instant::now();
    for _ in 0..MESSAGES {
        let message = format!(
            "{{\"type\":1,\"target\":\"SendMessage\",\"arguments\":[\"bench\",\"{text}\"]}}\u{1e}"
        );
        ws.send(Message::text(message)).await?;
    }
    let expected = MESSAGES as u64;
    let limit = Duration::from_secs(120);
    let remote_done = {
        let remote = remote.to_vec();
        wait_until(limit, move || {
            remote.iter().all(|c| c.load(Ordering::Relaxed) >= expected)
        })
        .await?;
        start.elapsed().as_secs_f64()
    };
    let all = all.to_vec();
    wait_until(limit, move || {
        all.iter().all(|c| c.load(Ordering::Relaxed) >= expected)
    })
    .await?;
    Ok((start.elapsed().as_secs_f64(), remote_done))
}

/// Seconds for the broadcasts to reach CLIENTS clients of one fresh node.
async fn one_node() -> anyhow::Result<f64> {
    let server = TestServer::start(config()).await?;
    let clients = receivers(&server, CLIENTS).await?;
    let (seconds, _) = run(&server, &clients, &[]).await?;
    server.stop().await?;
    Ok(seconds)
}

/// One row of the table.
fn row(setup: &str, seconds: f64) {
    println!(
        "{setup:<36} {seconds:>10.2} {:>14.0} {:>16.0}",
        MESSAGES as f64 / seconds,
        (MESSAGES * CLIENTS) as f64 / seconds
    );
}

/// Nanoseconds `event` takes, over a million calls.
fn per_event(event: impl Fn()) -> f64 {
    let events = 1_000_000;
    let started = Instant::now();
    for _ in 0..events {
        event();
    }
    started.elapsed().as_nanos() as f64 / f64::from(events)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let one = one_node().await?;

    let prefix = unique_prefix("bench");
    let a = TestServer::start(cluster_config(REDIS_URL, &prefix)).await?;
    let b = TestServer::start(cluster_config(REDIS_URL, &prefix)).await?;
    for node in [&a, &b] {
        let backplane = node.state.cluster.backplane().clone();
        wait_until(Duration::from_secs(15), move || backplane.is_ready()).await?;
    }
    let mut on_a = receivers(&a, CLIENTS / 2).await?;
    let on_b = receivers(&b, CLIENTS / 2).await?;
    on_a.extend(on_b.iter().cloned());
    let (two_nodes, remote) = run(&a, &on_a, &on_b).await?;

    println!("fan-out: {MESSAGES} broadcasts of 64 bytes to {CLIENTS} clients, one sender");
    println!(
        "{:<36} {:>10} {:>14} {:>16}",
        "setup", "seconds", "messages/s", "deliveries/s"
    );
    row("1 node, in-memory backplane", one);
    row("2 nodes over Redis (500 + 500)", two_nodes);
    println!(
        "cross-node: all {MESSAGES} messages reached the other node's 500 clients in {remote:.2} s = {:.0} messages/s",
        MESSAGES as f64 / remote
    );
    a.stop().await?;
    b.stop().await?;

    // One node again, then with metrics on: the recorder is process-wide,
    // so that comes last, and the row before it is its peer.
    row("1 node again, no metrics", one_node().await?);
    let _recorder = hubhost::exporter::install()?;
    row("1 node, metrics recorded", one_node().await?);
    let invocation = per_event(|| {
        hubhost::monitoring::invocation(
            "tenant",
            "hub",
            hubhost::monitoring::Outcome::Ok,
            Duration::from_micros(200),
        )
    });
    let delivery = per_event(|| hubhost::monitoring::delivered("tenant", "hub", 500));
    println!(
        "metrics: one invocation recorded (counter + histogram) {invocation:.0} ns, one send's deliveries {delivery:.0} ns"
    );
    Ok(())
}
