//! A thousand tenants on one node (#20): each uploads its own copy of the
//! chat hub (the same bytes, uploaded separately) through the admin API and
//! has 10 connections. Reports the memory per loaded hub version and per
//! tenant with its connections, the time to load every hub from the store
//! when the node starts again, and Echo round trips across tenants. One
//! release `hubhost serve` process (`make bench` builds it; else the debug
//! one), with a data directory as its store.

use hubhost_tests::admin::{Admin, OPERATOR_KEY};
use hubhost_tests::process::Node;
use hubhost_tests::{RawClient, guest, temp_dir};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TENANTS: usize = 1000;
const PER_TENANT: usize = 10;
const ECHOES: usize = 4000;

fn binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let release = target.join("release/hubhost");
    if release.exists() {
        release
    } else {
        hubhost_tests::binary()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = temp_dir("bench-tenants")?;
    let binary = binary();
    let args = vec![
        "--data-dir".to_owned(),
        dir.join("data").display().to_string(),
        "--cache-dir".to_owned(),
        dir.join("cache").display().to_string(),
        "--admin-key".to_owned(),
        OPERATOR_KEY.to_owned(),
    ];
    let env = [("RUST_LOG", "warn,hubhost=info")];
    println!(
        "{TENANTS} tenants on one node ({}), each with its own chat hub and {PER_TENANT} connections",
        binary.display()
    );
    let node = Node::start_binary(&binary, &args, &env).await?;
    let admin = Admin::new(node.addr, Some(OPERATOR_KEY));
    let bytes = std::fs::read(guest("chat"))?;
    let (_, empty) = node.memory_kib()?;
    let empty_pss = node.pss_kib()?;

    let started = Instant::now();
    for i in 0..TENANTS {
        let (status, body) = admin
            .upload(&format!("t{i}"), "chat", bytes.clone(), "")
            .await?;
        anyhow::ensure!(
            status == 201 || status == 200,
            "upload t{i}: {status} {body}"
        );
    }
    let upload = started.elapsed();
    let (_, hubs) = node.memory_kib()?;
    let hubs_pss = node.pss_kib()?;
    let mut first_connected = hubs;

    // A first connection to each tenant (its hub's first calls), then the
    // rest: what the first one sets up apart from what each one costs.
    let mut clients = Vec::new();
    for round in 0..PER_TENANT {
        for i in 0..TENANTS {
            let path = format!("/t{i}/chat");
            clients.push((i, RawClient::connect_as(node.addr, &path, None).await?.0));
        }
        if round == 0 {
            first_connected = node.memory_kib()?.1;
        }
    }
    let (_, connected) = node.memory_kib()?;

    let mut latencies = Vec::with_capacity(ECHOES);
    for n in 0..ECHOES {
        let (tenant, client) = &mut clients[n % TENANTS];
        anyhow::ensure!(*tenant == n % TENANTS);
        let started = Instant::now();
        let reply = client.invoke(&n.to_string(), "Echo", json!([n])).await?;
        latencies.push(started.elapsed());
        anyhow::ensure!(reply["result"] == n, "{reply}");
    }
    latencies.sort();
    drop(clients);
    drop(node);

    // The same store, a fresh process: every hub loads (each compiles from
    // the cache directory) before the node listens.
    let started = Instant::now();
    let node = Node::start_binary(&binary, &args, &env).await?;
    let last = format!("/t{}/chat", TENANTS - 1);
    RawClient::connect_as(node.addr, &last, None).await?;
    let restart = started.elapsed();
    let (_, restarted) = node.memory_kib()?;
    drop(node);

    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let per = |after: u64, before: u64| {
        format!(
            "{:.0} KiB",
            after.saturating_sub(before) as f64 / TENANTS as f64
        )
    };
    let rows = [
        ("node alone (RSS)", mib(empty)),
        (
            "upload of all hubs, one at a time",
            format!("{:.1} s", upload.as_secs_f64()),
        ),
        ("per loaded hub version (RSS)", per(hubs, empty)),
        (
            "  counting shared code once (PSS)",
            per(hubs_pss, empty_pss),
        ),
        (
            "per tenant with its connections (RSS)",
            per(connected, empty),
        ),
        ("  its first connection (RSS)", per(first_connected, hubs)),
        (
            "  each further connection (RSS)",
            format!(
                "{:.1} KiB",
                connected.saturating_sub(first_connected) as f64
                    / (TENANTS * (PER_TENANT - 1)) as f64
            ),
        ),
        ("node with everything (RSS)", mib(connected)),
        (
            "start again: every hub loaded, serving",
            format!("{:.2} s", restart.as_secs_f64()),
        ),
        ("  its RSS then", mib(restarted)),
        (
            "Echo across tenants, p50 / p99",
            format!(
                "{:.0} / {:.0} µs",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99)
            ),
        ),
    ];
    for (label, value) in rows {
        println!("{label:<42} {value:>14}");
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
