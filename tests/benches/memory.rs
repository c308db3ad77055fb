//! A node's memory while 64 connections that never read each call a hub
//! method that sends them the most one call may send (16 × 1 MiB), with the
//! byte limits as they were before they existed and with the defaults, in
//! one run. Each row is its own `hubhost serve` process; its peak resident
//! memory (VmHWM) is read once every call has finished. Run with
//! `cargo bench -p hubhost-tests --bench memory` (or `make bench`).

use hubhost_tests::process::Node;
use hubhost_tests::{PATIENCE, RawClient, guest, temp_dir, wait_until};
use serde_json::json;

const CONNECTIONS: usize = 64;
const SENDS: u32 = 16;
/// Just under `max_send_bytes` (1 MiB) with the JSON quotes and brackets.
const SEND_BYTES: usize = (1 << 20) - 16;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = temp_dir("bench-memory")?;
    let scenarios = [
        (
            "no byte limits (as before)",
            "[connection]\nmax_queued_bytes = 1099511627776\n[hub_limits]\nmax_concurrent_calls = 1000\nmax_sent_bytes_per_call = 1099511627776\n",
        ),
        ("defaults", ""),
    ];
    println!(
        "{CONNECTIONS} connections that never read, each calling Flood({SENDS}, {SEND_BYTES}) once: {} MiB sent in all",
        (CONNECTIONS * SENDS as usize * SEND_BYTES) >> 20
    );
    println!(
        "{:<28} {:>12} {:>12} {:>14}",
        "limits", "start MiB", "peak MiB", "after MiB"
    );
    for (name, toml) in scenarios {
        let file = dir.join(format!("{}.toml", name.len()));
        std::fs::write(&file, toml)?;
        let hub = format!("demo/faulty={}", guest("faulty").display());
        let args = [
            "--config".to_owned(),
            file.display().to_string(),
            "--hub".to_owned(),
            hub,
        ];
        let node = Node::start(&args, &[("RUST_LOG", "info")]).await?;
        let memory = || -> anyhow::Result<(f64, f64)> {
            let (peak, rss) = node.memory_kib()?;
            Ok((peak as f64 / 1024.0, rss as f64 / 1024.0))
        };
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            let (client, _) = RawClient::connect_as(node.addr, "/demo/faulty", None).await?;
            clients.push(client);
        }
        let (start, _) = memory()?;
        for (i, client) in clients.iter_mut().enumerate() {
            client
                .send(json!({"type": 1, "invocationId": i.to_string(), "target": "Flood", "arguments": [SENDS, SEND_BYTES]}))
                .await?;
        }
        // Every call has made its sends (the hub logs it last); nobody reads.
        wait_until(PATIENCE * 12, || {
            let lines = node.lines();
            lines.iter().filter(|l| l.contains("flood done")).count() >= CONNECTIONS
        })
        .await
        .map_err(|e| {
            let lines = node.lines();
            let tail = lines.iter().rev().take(5).cloned().collect::<Vec<_>>();
            anyhow::anyhow!("{name}: not every flood finished: {e}; last log lines: {tail:#?}")
        })?;
        let (peak, after) = memory()?;
        println!("{name:<28} {start:>12.0} {peak:>12.0} {after:>14.0}");
        drop(clients);
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
