//! Broadcast fan-out: one sender, 1,000 WebSocket clients, the same messages
//! on one node (in-memory backplane; plain clients, then stateful-reconnect
//! clients, then plain again), on two nodes over one Redis and on two
//! nodes over a 3-shard Redis Cluster (500 clients each), side by side in one
//! run; then what Redis spends per message, one server against the cluster,
//! with 300 hubs' messages; then one node again with the Prometheus recorder
//! installed (`--metrics-listen`), and what one recorded event costs. Starts
//! its own `redis-server`s; needs the guests built (`make bench`).
//! Everything, clients included, shares this machine's cores, so the figures
//! are a floor.

use futures_util::{SinkExt, StreamExt};
use hubhost::backplane::Backplane;
use hubhost::backplane::channels::Channels;
use hubhost::backplane::redis::{RedisBackplane, RedisSettings};
use hubhost::names::HubKey;
use hubhost_tests::redis_server::{RedisCluster, RedisServer, free_port, probe};
use hubhost_tests::{TestServer, cluster_config, config, unique_prefix, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 1_000;
const MESSAGES: usize = 200;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to the chat hub, past the handshake: without negotiation,
/// or (`stateful`) negotiated with stateful reconnect and handshake version 2.
async fn open(server: &TestServer, stateful: bool) -> anyhow::Result<Socket> {
    let (url, version) = if stateful {
        let (_, body) = server
            .negotiate(
                "/demo/chat",
                "?negotiateVersion=1&useStatefulReconnect=true",
            )
            .await?;
        let body: serde_json::Value = serde_json::from_str(&body)?;
        let token = body["connectionToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (format!("ws://{}/demo/chat?id={token}", server.addr), 2)
    } else {
        (format!("ws://{}/demo/chat", server.addr), 1)
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::text(format!(
        "{{\"protocol\":\"json\",\"version\":{version}}}\u{1e}"
    )))
    .await?;
    ws.next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no handshake reply"))??;
    Ok(ws)
}

/// How often a stateful client acknowledges (in messages received).
const ACK_EVERY: u64 = 50;

/// Connect `count` clients to `server` and count the ReceiveMessage calls
/// each gets; returns the per-client counters. Stateful clients acknowledge
/// every ACK_EVERY messages, as the official client does about once a second.
async fn receivers(
    server: &TestServer,
    count: usize,
    stateful: bool,
) -> anyhow::Result<Vec<Arc<AtomicU64>>> {
    let mut counters = Vec::new();
    for _ in 0..count {
        let mut ws = open(server, stateful).await?;
        let counter = Arc::new(AtomicU64::new(0));
        let seen = counter.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let n = text.as_str().matches("\"ReceiveMessage\"").count() as u64;
                let total = seen.fetch_add(n, Ordering::Relaxed) + n;
                if stateful && total >= acked + ACK_EVERY {
                    acked = total;
                    let ack = format!("{{\"type\":8,\"sequenceId\":{total}}}\u{1e}");
                    if ws.send(Message::text(ack)).await.is_err() {
                        break;
                    }
                }
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
    let mut ws = open(server, false).await?;
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
async fn one_node(stateful: bool) -> anyhow::Result<f64> {
    let server = TestServer::start(config()).await?;
    let clients = receivers(&server, CLIENTS, stateful).await?;
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

/// Seconds for the broadcasts to reach CLIENTS clients, half of them on
/// each of two nodes on the Redis at `url`, and seconds until the other
/// node's half had them all.
async fn two_nodes(url: &str) -> anyhow::Result<(f64, f64)> {
    let prefix = unique_prefix("bench");
    let a = TestServer::start(cluster_config(url, &prefix)).await?;
    let b = TestServer::start(cluster_config(url, &prefix)).await?;
    for node in [&a, &b] {
        let backplane = node.state.cluster.backplane().clone();
        wait_until(Duration::from_secs(15), move || backplane.is_ready()).await?;
    }
    let mut on_a = receivers(&a, CLIENTS / 2, false).await?;
    let on_b = receivers(&b, CLIENTS / 2, false).await?;
    on_a.extend(on_b.iter().cloned());
    let seconds = run(&a, &on_a, &on_b).await?;
    a.stop().await?;
    b.stop().await?;
    Ok(seconds)
}

/// CPU seconds (user + system) each Redis server on `ports` has used.
async fn redis_cpu(ports: &[u16]) -> anyhow::Result<Vec<f64>> {
    let mut used = Vec::new();
    for port in ports {
        let mut connection = probe(&format!("redis://127.0.0.1:{port}")).await?;
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut connection)
            .await?;
        used.push(
            info.lines()
                .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
                .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
                .sum::<f64>(),
        );
    }
    Ok(used)
}

/// Redis CPU per message published, in µs: every server together, and the
/// busiest one (the one that bounds the rate: a Redis server is one thread).
struct Cost {
    all: f64,
    busiest: f64,
}

const HUBS: usize = 300;
const PER_HUB: usize = 100;

/// What the Redis servers on `ports` (replicas included) spend per message,
/// for HUBS hubs' messages published by one backplane and received by
/// `nodes` others that each subscribe to them all.
async fn redis_cost(url: &str, ports: &[u16], nodes: usize) -> anyhow::Result<Cost> {
    let channels = Channels::new(unique_prefix("cost"));
    let hubs = (0..HUBS)
        .map(|i| HubKey::new(&format!("tenant-{i}"), "chat"))
        .collect::<Result<Vec<_>, _>>()?;
    let publisher = RedisBackplane::start(RedisSettings::new(url))?;
    let mut receivers = Vec::new();
    for _ in 0..nodes {
        let subscriber = RedisBackplane::start(RedisSettings::new(url))?;
        let incoming = subscriber
            .take_incoming()
            .ok_or_else(|| anyhow::anyhow!("no incoming queue"))?;
        for hub in &hubs {
            let subscribed = subscriber.subscribe(&channels.all(hub));
            anyhow::ensure!(
                subscribed.ready(Duration::from_secs(15)).await,
                "not subscribed"
            );
        }
        wait_until(Duration::from_secs(15), || subscriber.is_ready()).await?;
        receivers.push((subscriber, incoming));
    }
    wait_until(Duration::from_secs(15), || publisher.is_ready()).await?;
    let before = redis_cpu(ports).await?;
    let payload = "x".repeat(64);
    for _ in 0..PER_HUB {
        for hub in &hubs {
            publisher.publish(hub.tenant(), &channels.all(hub), payload.clone().into())?;
        }
    }
    for (_, incoming) in &mut receivers {
        for _ in 0..HUBS * PER_HUB {
            tokio::time::timeout(Duration::from_secs(30), incoming.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("a subscriber stopped"))?;
        }
    }
    let per_message = |cpu: f64| cpu * 1e6 / (HUBS * PER_HUB) as f64;
    let spent: Vec<f64> = redis_cpu(ports)
        .await?
        .iter()
        .zip(&before)
        .map(|(after, before)| per_message(after - before))
        .collect();
    Ok(Cost {
        all: spent.iter().sum(),
        busiest: spent.iter().copied().fold(0.0, f64::max),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let one = one_node(false).await?;
    let stateful = one_node(true).await?;
    let one_again = one_node(false).await?;
    let redis = RedisServer::start(free_port()?).await?;
    let (over_redis, remote) = two_nodes(&redis.url()).await?;
    let cluster = RedisCluster::start(3, 1).await?;
    let (over_cluster, cluster_remote) = two_nodes(&cluster.url()).await?;

    println!("fan-out: {MESSAGES} broadcasts of 64 bytes to {CLIENTS} clients, one sender");
    println!(
        "{:<36} {:>10} {:>14} {:>16}",
        "setup", "seconds", "messages/s", "deliveries/s"
    );
    row("1 node, in-memory backplane", one);
    row("1 node, stateful reconnect clients", stateful);
    row("1 node again, plain clients", one_again);
    row("2 nodes over one Redis (500 + 500)", over_redis);
    row("2 nodes over a 3-shard cluster", over_cluster);
    println!(
        "cross-node: all {MESSAGES} messages reached the other node's 500 clients in {remote:.2} s over one Redis ({:.0} messages/s), {cluster_remote:.2} s over the cluster ({:.0} messages/s)",
        MESSAGES as f64 / remote,
        MESSAGES as f64 / cluster_remote
    );

    let ports: Vec<u16> = cluster.servers.iter().map(|s| s.port).collect();
    let one_redis = redis_cost(&redis.url(), &[redis.port], 1).await?;
    let one_redis_3 = redis_cost(&redis.url(), &[redis.port], 3).await?;
    let before = cluster
        .on_primaries("commandstats", "cmdstat_spublish:calls=")
        .await?;
    let sharded = redis_cost(&cluster.url(), &ports, 1).await?;
    let after = cluster
        .on_primaries("commandstats", "cmdstat_spublish:calls=")
        .await?;
    let sharded_3 = redis_cost(&cluster.url(), &ports, 3).await?;
    let bare = RedisCluster::start(3, 0).await?;
    let bare_ports: Vec<u16> = bare.servers.iter().map(|s| s.port).collect();
    let no_replicas = redis_cost(&bare.url(), &bare_ports, 1).await?;
    let no_replicas_3 = redis_cost(&bare.url(), &bare_ports, 3).await?;
    drop(bare);
    let shares: Vec<String> = after
        .iter()
        .map(|(port, n)| {
            let was = before
                .iter()
                .find(|(p, _)| p == port)
                .map_or(0, |(_, b)| *b);
            format!("{:.0}%", (n - was) as f64 * 100.0 / (HUBS * PER_HUB) as f64)
        })
        .collect();
    println!(
        "Redis CPU per message published ({HUBS} hubs x {PER_HUB} messages of 64 bytes, one publishing node), in us:"
    );
    println!(
        "{:<28} {:>22} {:>22}",
        "Redis", "1 subscriber: all/max", "3 subscribers: all/max"
    );
    for (setup, one, three) in [
        ("one server", one_redis, one_redis_3),
        ("3 shards + a replica each", sharded, sharded_3),
        ("3 shards, no replicas", no_replicas, no_replicas_3),
    ] {
        println!(
            "{setup:<28} {:>22} {:>22}",
            format!("{:.2} / {:.2}", one.all, one.busiest),
            format!("{:.2} / {:.2}", three.all, three.busiest)
        );
    }
    println!("publishes per shard: {}", shares.join(" / "));
    drop(cluster);
    drop(redis);

    // One node again, then with metrics on: the recorder is process-wide,
    // so that comes last, and the row before it is its peer.
    row("1 node again, no metrics", one_node(false).await?);
    let _recorder = hubhost::exporter::install()?;
    row("1 node, metrics recorded", one_node(false).await?);
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
