//! The three loads: broadcast fan-out at a given rate, echo round trips,
//! and idle connections (memory per connection from the server's RSS).

use crate::client::{Incoming, Proto, Writer, connect};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How many connections are opened at once.
const CONNECT_CONCURRENCY: usize = 64;

/// The clock every timestamp in a payload is read from.
fn micros() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn of(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        Self {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[samples.len() - 1],
        }
    }
}

/// Open `count` connections spread over `urls`, `CONNECT_CONCURRENCY` at a time.
async fn open_many(
    proto: Proto,
    urls: &[String],
    count: usize,
) -> anyhow::Result<Vec<(Writer, crate::client::Reader)>> {
    let urls = urls.to_vec();
    let connections: Vec<_> = futures_util::stream::iter(0..count)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            async move { connect(proto, &url).await }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    connections.into_iter().collect()
}

/// What every receiver of a fan-out shares.
#[derive(Default)]
struct Tally {
    /// The step whose messages count; others are late arrivals.
    step: AtomicU64,
    /// Distinct messages of the step received (a copy counts once).
    delivered: AtomicU64,
    /// Copies of messages a receiver already had.
    duplicates: AtomicU64,
    closed: AtomicU64,
    /// One record per receiver, so receivers never contend for a lock.
    receivers: Vec<Arc<Mutex<Received>>>,
}

/// One receiver's record of the current step.
#[derive(Default)]
struct Received {
    latencies: Vec<u64>,
    /// Per sender, a bit per sequence number: the messages already seen.
    seen: Vec<Vec<u64>>,
}

impl Received {
    /// Record message `seq` of sender `sender`; false if it was seen before.
    fn first_time(&mut self, sender: usize, seq: usize) -> bool {
        if self.seen.len() <= sender {
            self.seen.resize_with(sender + 1, Vec::new);
        }
        let bits = &mut self.seen[sender];
        let (word, bit) = (seq / 64, 1u64 << (seq % 64));
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let first = bits[word] & bit == 0;
        bits[word] |= bit;
        first
    }

    fn clear(&mut self) {
        self.latencies.clear();
        self.seen.clear();
    }
}

/// Receivers and senders, connected once and driven step after step.
pub struct Fleet {
    pub connect_ms: u64,
    pub receivers: usize,
    senders: Vec<Writer>,
    tally: Arc<Tally>,
    tasks: Vec<JoinHandle<()>>,
}

/// One fan-out step.
#[derive(Debug, Clone, Copy)]
pub struct FanoutResult {
    pub rate: u64,
    pub sent: u64,
    pub expected: u64,
    /// Distinct messages received, summed over the receivers.
    pub delivered: u64,
    /// Expected and never received.
    pub lost: u64,
    /// Received again by a receiver that already had them (never counted
    /// as delivered, so they cannot hide a loss).
    pub duplicates: u64,
    pub deliveries_per_sec: f64,
    pub latency: Latency,
    pub closed: u64,
}

impl FanoutResult {
    /// Nothing lost, nothing received twice, no client closed, p99 within
    /// `p99_ms`.
    pub fn passes(&self, p99_ms: u64) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.closed == 0
            && self.sent > 0
            && self.latency.p99 <= p99_ms * 1000
    }
}

impl Fleet {
    pub async fn connect(
        proto: Proto,
        urls: &[String],
        receivers: usize,
        senders: usize,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let connections = open_many(proto, urls, receivers).await?;
        let tally = Arc::new(Tally {
            receivers: (0..connections.len()).map(|_| Arc::default()).collect(),
            ..Tally::default()
        });
        let mut tasks = Vec::new();
        for (i, (_, mut reader)) in connections.into_iter().enumerate() {
            let tally = tally.clone();
            tasks.push(tokio::spawn(async move {
                let received = tally.receivers[i].clone();
                while let Some(events) = reader.next().await {
                    for event in events {
                        match event {
                            Incoming::Broadcast(text) => count(&tally, &received, &text),
                            Incoming::Closed(_) => {
                                tally.closed.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            Incoming::Reply(_) => {}
                        }
                    }
                }
                tally.closed.fetch_add(1, Ordering::Relaxed);
            }));
        }
        let mut writers = Vec::new();
        for (writer, mut reader) in open_many(proto, urls, senders).await? {
            // Senders get the broadcasts too; read and drop them.
            tasks.push(tokio::spawn(async move {
                while reader.next().await.is_some() {}
            }));
            writers.push(writer);
        }
        Ok(Self {
            connect_ms: started.elapsed().as_millis() as u64,
            receivers,
            senders: writers,
            tally,
            tasks,
        })
    }

    /// Broadcast `rate` messages a second in total, of `size` bytes, for
    /// `duration`; then wait for the stragglers.
    pub async fn step(
        &self,
        step: u64,
        rate: u64,
        size: usize,
        duration: Duration,
    ) -> FanoutResult {
        self.tally.step.store(step, Ordering::SeqCst);
        self.tally.delivered.store(0, Ordering::SeqCst);
        self.tally.duplicates.store(0, Ordering::SeqCst);
        for received in &self.tally.receivers {
            received.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        let closed_before = self.tally.closed.load(Ordering::SeqCst);
        let sent = Arc::new(AtomicU64::new(0));
        let per_sender = rate as f64 / self.senders.len() as f64;
        let started = Instant::now();
        let mut senders = Vec::new();
        let count = self.senders.len();
        for (n, writer) in self.senders.iter().enumerate() {
            let (writer, sent) = (writer.clone(), sent.clone());
            senders.push(tokio::spawn(async move {
                // Senders take turns, evenly spaced: a steady rate, not bursts.
                let period = Duration::from_secs_f64(1.0 / per_sender);
                let offset = period.mul_f64(n as f64 / count as f64);
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let total = (per_sender * duration.as_secs_f64()).round() as u64;
                for seq in 0..total {
                    tick.tick().await;
                    let head = format!("{step}:{}:{n}:{seq}:", micros());
                    let text = format!("{head}{}", "x".repeat(size.saturating_sub(head.len())));
                    if writer
                        .send_message(&format!("sender-{n}"), &text)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for sender in senders {
            let _ = sender.await;
        }
        let sent = sent.load(Ordering::SeqCst);
        let expected = sent * self.receivers as u64;
        // Stragglers: until all arrived, or no progress for 2 s (at most 15 s).
        let deadline = Instant::now() + Duration::from_secs(15);
        let (mut last, mut last_change) = (0, Instant::now());
        loop {
            let delivered = self.tally.delivered.load(Ordering::SeqCst);
            if delivered >= expected || Instant::now() > deadline {
                break;
            }
            if delivered != last {
                (last, last_change) = (delivered, Instant::now());
            } else if last_change.elapsed() > Duration::from_secs(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let delivered = self.tally.delivered.load(Ordering::SeqCst);
        let latencies: Vec<u64> = self
            .tally
            .receivers
            .iter()
            .flat_map(|received| {
                std::mem::take(&mut received.lock().unwrap_or_else(|e| e.into_inner()).latencies)
            })
            .collect();
        FanoutResult {
            rate,
            sent,
            expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            duplicates: self.tally.duplicates.load(Ordering::SeqCst),
            deliveries_per_sec: delivered as f64 / elapsed,
            latency: Latency::of(latencies),
            closed: self.tally.closed.load(Ordering::SeqCst) - closed_before,
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Count a broadcast of the current step (`STEP:SENT_AT:SENDER:SEQ:…`) and
/// its latency, or a copy of one this receiver already had.
fn count(tally: &Tally, received: &Mutex<Received>, text: &str) {
    let mut parts = text.splitn(5, ':');
    let (Some(step), Some(sent), Some(sender), Some(seq)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let (Ok(step), Ok(sent), Ok(sender), Ok(seq)) = (
        step.parse::<u64>(),
        sent.parse::<u64>(),
        sender.parse::<usize>(),
        seq.parse::<usize>(),
    ) else {
        return;
    };
    if step != tally.step.load(Ordering::Relaxed) {
        return;
    }
    let latency = micros().saturating_sub(sent);
    let mut received = received.lock().unwrap_or_else(|e| e.into_inner());
    if !received.first_time(sender, seq) {
        tally.duplicates.fetch_add(1, Ordering::Relaxed);
        return;
    }
    tally.delivered.fetch_add(1, Ordering::Relaxed);
    received.latencies.push(latency);
}

/// Echo round trips: invocations per second and their latency.
#[derive(Debug, Clone, Copy)]
pub struct EchoResult {
    pub calls: u64,
    pub per_sec: f64,
    pub latency: Latency,
}

/// `clients` connections each calling `Echo` back to back for `duration`.
pub async fn echo(
    proto: Proto,
    urls: &[String],
    clients: usize,
    duration: Duration,
) -> anyhow::Result<EchoResult> {
    let connections = open_many(proto, urls, clients).await?;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for (writer, mut reader) in connections {
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut id = 0u64;
            while tokio::time::Instant::now() < deadline {
                id += 1;
                let sent = Instant::now();
                writer.echo(id, "hello").await?;
                loop {
                    let events = reader
                        .next()
                        .await
                        .ok_or_else(|| anyhow::anyhow!("connection closed"))?;
                    if events.iter().any(|e| matches!(e, Incoming::Closed(_))) {
                        anyhow::bail!("connection closed");
                    }
                    if events.contains(&Incoming::Reply(id)) {
                        break;
                    }
                }
                samples.push(sent.elapsed().as_micros() as u64);
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(EchoResult {
        calls: samples.len() as u64,
        per_sec: samples.len() as f64 / elapsed,
        latency: Latency::of(samples),
    })
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Idle connections: KiB of the server process's RSS per connection.
#[derive(Debug, Clone, Copy)]
pub struct IdleResult {
    pub connections: usize,
    pub before_kib: u64,
    pub after_kib: u64,
    pub kib_per_connection: f64,
    pub connect_ms: u64,
}

/// Open `count` idle connections to `url`, served by process `pid`.
pub async fn idle(proto: Proto, url: &str, pid: u32, count: usize) -> anyhow::Result<IdleResult> {
    let before_kib = rss_kib(pid)?;
    let started = Instant::now();
    let connections = open_many(proto, &[url.to_owned()], count).await?;
    let connect_ms = started.elapsed().as_millis() as u64;
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for (writer, mut reader) in connections {
        readers.push(tokio::spawn(async move {
            while reader.next().await.is_some() {}
        }));
        writers.push(writer);
    }
    let after_kib = rss_kib(pid)?;
    for reader in readers {
        reader.abort();
    }
    drop(writers);
    Ok(IdleResult {
        connections: count,
        before_kib,
        after_kib,
        kib_per_connection: after_kib.saturating_sub(before_kib) as f64 / count as f64,
        connect_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_counted_apart_from_deliveries() {
        let tally = Tally {
            receivers: vec![Arc::default(), Arc::default()],
            ..Tally::default()
        };
        tally.step.store(3, Ordering::SeqCst);
        let message = |sender: usize, seq: usize| format!("3:{}:{sender}:{seq}:xx", micros());
        for (receiver, text) in [
            (0, message(0, 0)),
            (0, message(0, 1)),
            (0, message(0, 1)), // a copy
            (0, message(1, 1)), // another sender's seq 1
            (1, message(0, 1)), // another receiver's first
            (1, message(0, 200)),
            (1, message(0, 200)),     // a copy
            (1, "2:0:0:5:xx".into()), // a late arrival of step 2
        ] {
            count(&tally, &tally.receivers[receiver], &text);
        }
        assert_eq!(tally.delivered.load(Ordering::SeqCst), 5);
        assert_eq!(tally.duplicates.load(Ordering::SeqCst), 2);
    }
}
