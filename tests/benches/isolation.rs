//! Noisy neighbours: tenant B's Echo latency while tenant A runs a hostile
//! hub method in a loop, next to B's latency with A idle, in one run.
//! Run with `make bench`. B warms up before the first (idle) row, and the run
//! fails if A's loop stopped before B's measurement ended (a row measured
//! with A quiet would pass for isolation).

use anyhow::Context as _;
use hubhost::config::HubConfig;
use hubhost_tests::{RawClient, TestServer, config, guest};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PER_SCENARIO: Duration = Duration::from_secs(3);
/// B's round trips before the first row, not measured: the first calls pay
/// for new instances, connections and code paths the idle row should not.
const WARM_UP: Duration = Duration::from_secs(1);

/// B's Echo round trips for `duration`; sorted latencies in microseconds.
async fn measure(b: &mut RawClient, duration: Duration) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < duration {
        let sent = Instant::now();
        let reply = b.invoke(&i.to_string(), "Echo", json!([i])).await?;
        anyhow::ensure!(reply["result"] == i, "bad echo {reply}");
        latencies.push(sent.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = config();
    config.hub_limits.call_timeout = std::time::Duration::from_millis(200);
    config.hub_limits.memory_bytes = 16 << 20;
    config.hub_limits.max_result_bytes = 64 * 1024;
    config.hubs.push(HubConfig {
        tenant: "a".into(),
        hub: "faulty".into(),
        path: guest("faulty"),
    });
    config.hubs.push(HubConfig {
        tenant: "b".into(),
        hub: "chat".into(),
        path: guest("chat"),
    });
    let server = TestServer::start(config).await?;
    let (mut b, _) = RawClient::connect(&server, "/b/chat").await?;

    let scenarios: [(&str, &str, Value); 9] = [
        ("idle", "", json!([])),
        ("infinite loop (200 ms deadline)", "Loop", json!([])),
        ("memory bomb (16 MiB)", "MemoryBomb", json!([])),
        ("stack overflow", "StackOverflow", json!([100_000_000])),
        ("panic", "Panic", json!([])),
        (
            "giant result (1 MiB, limit 64 KiB)",
            "GiantResult",
            json!([1 << 20]),
        ),
        ("send flood (1,000 sends/call)", "SendFlood", json!([1_000])),
        // The most one call may send: 16 sends of just under 1 MiB.
        (
            "send maximum (16 × 1 MiB/call)",
            "Flood",
            json!([16, (1 << 20) - 16]),
        ),
        (
            "log flood (100 lines/call kept)",
            "LogFlood",
            json!([100_000]),
        ),
    ];
    let warm_up = measure(&mut b, WARM_UP).await?;
    println!(
        "tenant B: Echo round trips for {PER_SCENARIO:?} while tenant A loops a hostile call (after {} to warm up)",
        warm_up.len()
    );
    println!(
        "{:<38} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "tenant A runs", "p50 µs", "p99 µs", "max µs", "B calls", "A calls"
    );
    let mut idle_p99 = f64::NAN;
    for (name, method, args) in scenarios {
        let stop = Arc::new(AtomicBool::new(false));
        let a_calls = Arc::new(AtomicU64::new(0));
        let noise = if method.is_empty() {
            None
        } else {
            let (mut a, _) = RawClient::connect(&server, "/a/faulty").await?;
            let (stop, a_calls) = (stop.clone(), a_calls.clone());
            let (method, args) = (method.to_owned(), args.clone());
            // Runs until told to stop; an error (A's connection lost, no
            // completion in time) ends it early, and the run with it.
            Some(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    a.invoke(&i.to_string(), &method, args.clone())
                        .await
                        .with_context(|| format!("tenant A's call {i} of {method}"))?;
                    // Keep A's own inbox (flooded messages) from growing.
                    a.take_pending();
                    i += 1;
                    a_calls.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }))
        };
        let latencies = measure(&mut b, PER_SCENARIO).await?;
        if let Some(noise) = noise {
            // Still looping when B's measurement ended, and only then told
            // to stop: otherwise part of the row was measured with A quiet.
            let early = noise.is_finished();
            stop.store(true, Ordering::Relaxed);
            let outcome = noise.await?;
            anyhow::ensure!(
                !early && outcome.is_ok(),
                "{name}: tenant A's loop stopped before B's measurement ended after {} calls: {outcome:?}",
                a_calls.load(Ordering::Relaxed)
            );
            anyhow::ensure!(
                a_calls.load(Ordering::Relaxed) > 0,
                "{name}: tenant A completed no call"
            );
        }
        let p99 = percentile(&latencies, 0.99);
        if method.is_empty() {
            idle_p99 = p99;
        }
        println!(
            "{name:<38} {:>9.0} {:>9.0} {:>9.0} {:>9} {:>10}   p99 {:.1}x idle",
            percentile(&latencies, 0.5),
            p99,
            latencies.last().copied().unwrap_or(f64::NAN),
            latencies.len(),
            a_calls.load(Ordering::Relaxed),
            p99 / idle_p99
        );
    }
    server.stop().await
}
