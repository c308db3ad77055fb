//! Timer firing lateness: two nodes on Redis (the machine's, under a unique
//! prefix, deleted after) hold 10,000 pending timers due in ten minutes,
//! while 1,000 more, due over 5 s, fire. Each of those is a chat `Remind`
//! whose `Reminder` comes back to the client that set it; lateness is its
//! arrival minus (the arrival of the `Remind`'s completion plus the delay):
//! the claim, the call, the delivery, less the completion's way back.
//! Run with `make bench`.

use hubhost::config::Config;
use hubhost_tests::{REDIS_URL, RawClient, TestServer, cluster_config, unique_prefix};
use redis::AsyncCommands as _;
use serde_json::json;
use std::time::{Duration, Instant};

const PENDING: usize = 10_000;
const MEASURED: u64 = 1_000;

fn node(prefix: &str) -> anyhow::Result<Config> {
    let mut config = cluster_config(REDIS_URL, prefix);
    config.tenants.insert(
        "demo".into(),
        hubhost::tenants::TenantConfig {
            hub_limits: serde_json::from_value(json!({"max_timers": 20_000}))?,
            ..Default::default()
        },
    );
    Ok(config)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let prefix = unique_prefix("timerbench");
    let nodes = [
        TestServer::start(node(&prefix)?).await?,
        TestServer::start(node(&prefix)?).await?,
    ];
    let (mut filler, _) = RawClient::connect(&nodes[0], "/demo/chat").await?;
    let started = Instant::now();
    for i in 0..PENDING {
        let id = format!("p{i}");
        filler
            .send(json!({"type": 1, "invocationId": id, "target": "Remind", "arguments": [600_000, "later"]}))
            .await?;
    }
    let mut completed = 0;
    while completed < PENDING {
        let reply = filler.next_where(|m| m["type"] == 3).await?;
        anyhow::ensure!(reply.get("error").is_none(), "{reply}");
        completed += 1;
    }
    println!(
        "{PENDING} pending timers scheduled in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The measured reminders, from a client on each node, due 0.5 to 5.5 s out.
    let mut tasks = Vec::new();
    for (n, server) in nodes.iter().enumerate() {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let (mut client, _) = RawClient::connect_as(addr, "/demo/chat", None).await?;
            let mut delays = std::collections::HashMap::new();
            for i in 0..MEASURED / 2 {
                let text = format!("n{n}-{i}");
                let delay = 500 + i * 10;
                delays.insert(text.clone(), delay);
                client
                    .send(json!({"type": 1, "invocationId": text, "target": "Remind", "arguments": [delay, text]}))
                    .await?;
            }
            // Due: the delay after the Remind's completion arrived, when the
            // timer was surely stored (the burst of Reminds queues on the
            // connection, which is not the timers' lateness).
            let mut due = std::collections::HashMap::new();
            let mut late = Vec::new();
            while late.len() < delays.len() {
                let message = client.next().await?;
                if message["type"] == 3
                    && let Some(text) = message["invocationId"].as_str()
                    && let Some(delay) = delays.get(text)
                {
                    due.insert(text.to_owned(), Instant::now() + Duration::from_millis(*delay));
                }
                if message["target"] == "Reminder" {
                    let text = message["arguments"][0].as_str().unwrap_or_default();
                    if let Some(at) = due.get(text) {
                        late.push(Instant::now().saturating_duration_since(*at).as_secs_f64() * 1e3);
                    }
                }
            }
            anyhow::Ok(late)
        }));
    }
    let mut late = Vec::new();
    for task in tasks {
        late.extend(task.await??);
    }
    late.sort_by(f64::total_cmp);
    println!("\ntimer lateness with {PENDING} pending, 2 nodes on Redis ({MEASURED} reminders)\n");
    println!("| p50 ms | p99 ms | max ms |");
    println!("|---|---|---|");
    println!(
        "| {:.1} | {:.1} | {:.1} |",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN)
    );

    for server in nodes {
        server.stop().await?;
    }
    let mut redis = redis::Client::open(REDIS_URL)?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis.keys(format!("*{prefix}*")).await?;
    if !keys.is_empty() {
        redis.del::<_, ()>(keys).await?;
    }
    Ok(())
}
