//! Traffic through a failover: one client sends a numbered message to the
//! others every 20 ms, another counts what arrives, and the report says
//! which numbers were lost and whether any arrived twice. The Redis fault
//! tests (Sentinel, Redis Cluster) kill a server in the middle of it.

use crate::RawClient;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Numbered messages flowing from a sender to a receiver.
struct Traffic {
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<HashMap<u64, usize>>>,
    sending: JoinHandle<anyhow::Result<RawClient>>,
    receiving: JoinHandle<anyhow::Result<()>>,
}

/// What one run of traffic saw.
#[derive(Debug)]
pub struct Report {
    /// How many were sent.
    pub sent: u64,
    /// The numbers that never arrived.
    pub lost: Vec<u64>,
    /// Whether any arrived more than once.
    pub duplicated: bool,
}

impl Traffic {
    /// Start: `sender` calls `SendToOthers` with `["seq", N]`, and
    /// `receiver` (a client of the same hub elsewhere) counts them.
    fn start(mut sender: RawClient, mut receiver: RawClient) -> Self {
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let got: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
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
        let receiving = tokio::spawn({
            let got = got.clone();
            async move {
                loop {
                    let message = match receiver.next().await {
                        Ok(message) => message,
                        // Quiet while Redis fails over: keep listening.
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
        Self {
            sent,
            stop,
            got,
            sending,
            receiving,
        }
    }

    /// How many have been sent so far.
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    async fn received(&self, n: u64, limit: Duration) -> anyhow::Result<()> {
        received(&self.got, n, limit).await
    }

    /// Stop sending, wait for the last message, and report; gives the
    /// sender back.
    async fn finish(self) -> anyhow::Result<(Report, RawClient)> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sent.clone();
        let sending = self.sending.await??;
        let sent = sent.load(Ordering::Relaxed);
        received(&self.got, sent.saturating_sub(1), crate::PATIENCE).await?;
        self.receiving.abort();
        let got = self.got.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let report = Report {
            sent,
            lost: (0..sent).filter(|n| !got.contains_key(n)).collect(),
            duplicated: got.values().any(|&times| times > 1),
        };
        Ok((report, sending))
    }
}

/// Wait (up to `limit`) until a message numbered `n` or later arrived.
async fn received(got: &Mutex<HashMap<u64, usize>>, n: u64, limit: Duration) -> anyhow::Result<()> {
    crate::wait_until(limit, || {
        got.lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .max()
            .is_some_and(|&max| max >= n)
    })
    .await
}

/// Run traffic from `sender` to `receiver` through `failover` (a future
/// that kills a Redis server and waits until its replica took over), then
/// check what the fault tests require: delivery resumed by itself, nothing
/// arrived twice, whatever was lost was sent between the kill and the
/// resumption, and hub state works again (the `Count` method of the chat).
/// Prints the figures under `what`; returns the report.
pub async fn through_failover(
    what: &str,
    sender: RawClient,
    receiver: RawClient,
    failover: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Report> {
    let traffic = Traffic::start(sender, receiver);
    traffic.received(20, crate::PATIENCE).await?;
    let at_kill = traffic.sent();
    failover.await?;
    // Delivery resumes on its own: messages sent after the failover arrive.
    traffic
        .received(traffic.sent() + 20, crate::redis_server::NOTICE)
        .await?;
    let at_resume = traffic.sent();
    let (report, mut sender) = traffic.finish().await?;
    anyhow::ensure!(!report.duplicated, "a message arrived twice");
    anyhow::ensure!(
        report.lost.iter().all(|n| (at_kill..at_resume).contains(n)),
        "lost outside the failover: {:?} (kill at {at_kill}, resumed at {at_resume})",
        report.lost
    );
    println!(
        "{what}: {} of {} messages lost ({} were sent between the fault and resumed delivery)",
        report.lost.len(),
        report.sent,
        at_resume - at_kill
    );
    // State works on the new primary (what replication had not copied yet
    // may be gone: any count will do). The first call after the failover
    // may still meet the dead primary's connection and fail with the usual
    // error; the next one reconnects.
    let deadline = tokio::time::Instant::now() + crate::redis_server::NOTICE;
    for attempt in 0.. {
        let count = sender
            .invoke(&format!("count-{attempt}"), "Count", json!([]))
            .await?;
        if count["result"].is_u64() {
            break;
        }
        anyhow::ensure!(
            count["error"] == "state is unavailable right now",
            "{count}"
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "state never came back: {count}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(report)
}
