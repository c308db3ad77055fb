//! Per-call cost of a trivial hub call (`Echo`) in each guest language, on a
//! warm instance and on a fresh one, next to the same dispatch with a native
//! handler in place of the Wasm hub; and each component's load time,
//! compiled and from the artifact cache.
//!
//! Both sides do what the connection does for one invocation: parse the
//! client's JSON message, run the method, write the Completion. The Wasm side
//! also instantiates the component (a fresh instance per call) and crosses
//! the component boundary twice. Run with `make bench`.

use hubhost::backplane::memory::MemoryBackplane;
use hubhost::cluster::{Cluster, PeerUrls};
use hubhost::ids::NodeId;
use hubhost::lifetime::HubLifetimeManager;
use hubhost::names::HubKey;
use hubhost::protocol::{Incoming, json};
use hubhost::runtime::{CallerInfo, HubLimits, HubVersion, Runtime};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGE: &[u8] =
    br#"{"type":1,"invocationId":"42","target":"Echo","arguments":[{"user":"alice","text":"hello"}]}"#;

/// Run `f` repeatedly for about `budget`; returns per-call nanoseconds
/// (median of 15 rounds) and the number of calls made.
fn measure(budget: Duration, mut f: impl FnMut()) -> (f64, u64) {
    for _ in 0..1_000 {
        f();
    }
    let rounds = 15;
    let mut per_call = Vec::new();
    let mut total = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget / rounds {
            for _ in 0..100 {
                f();
            }
            n += 100;
        }
        per_call.push(start.elapsed().as_nanos() as f64 / n as f64);
        total += n;
    }
    per_call.sort_by(f64::total_cmp);
    (per_call[per_call.len() / 2], total)
}

fn parse(message: &[u8]) -> (String, String) {
    match json::parse(message) {
        Ok(Incoming::Invocation {
            invocation_id,
            arguments,
            ..
        }) => (invocation_id.unwrap_or_default(), arguments),
        _ => unreachable!("benchmark message is an invocation"),
    }
}

/// Load `name` twice through a fresh cache: compiled, then from the cache.
fn load_twice(
    guests: &Path,
    name: &str,
    cache: &Path,
    limits: &HubLimits,
) -> anyhow::Result<(HubVersion, f64, f64, u64)> {
    let path = guests.join(format!("{name}.wasm"));
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run `make guests`",
        path.display()
    );
    let size = std::fs::metadata(&path)?.len();
    let key = HubKey::new("bench", name)?;
    let _ = std::fs::remove_dir_all(cache);
    let start = Instant::now();
    Runtime::new()?
        .with_cache(cache)?
        .load_file(key.clone(), &path, limits)?;
    let compiled = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let version = Runtime::new()?
        .with_cache(cache)?
        .load_file(key, &path, limits)?;
    let cached = start.elapsed().as_secs_f64() * 1e3;
    Ok((version, compiled, cached, size))
}

fn main() -> anyhow::Result<()> {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let guests = target.join("wasm32-wasip2/guest");
    let cache = target.join("bench-cache");
    let tokio = tokio::runtime::Runtime::new()?;
    let _guard = tokio.enter();
    let cluster = Cluster::start(
        "bench",
        Duration::from_secs(2),
        PeerUrls::default(),
        Arc::new(MemoryBackplane::standalone()),
    );
    let lifetime = HubLifetimeManager::start(cluster, Duration::from_secs(5));
    let caller = CallerInfo {
        connection_id: NodeId::random().new_connection_id().into(),
        user_id: None,
        claims: vec![],
        items: Default::default(),
    };
    let budget = Duration::from_secs(2);
    let fresh_limits = HubLimits {
        reuse_instances: false,
        ..HubLimits::default()
    };

    let (native, native_n) = measure(budget, || {
        let (id, args) = parse(black_box(MESSAGE));
        // The native "hub": Echo returns its only argument.
        let args: Vec<Box<serde_json::value::RawValue>> =
            serde_json::from_str(&args).unwrap_or_default();
        let result = args.into_iter().next().unwrap_or_default();
        black_box(json::completion_result(&id, &result));
    });
    let call = |version: &HubVersion| {
        let (id, args) = parse(black_box(MESSAGE));
        match version.invoke(&lifetime, &caller, "Echo", &args) {
            Ok(Ok(result)) => black_box(json::completion_result(&id, &result)),
            other => panic!(
                "Echo failed: {:?}",
                other.map(|r| r.map(|v| v.get().to_owned()))
            ),
        };
    };
    println!("hub call cost: Echo with a ~40-byte argument: parse, call, write the Completion");
    println!(
        "{:<42} {:>10} {:>10} {:>12}",
        "dispatch", "ns/call", "calls", "over native"
    );
    println!(
        "{:<42} {:>10.0} {:>10} {:>12}",
        "native handler (no hub)", native, native_n, "-"
    );
    let mut loads = Vec::new();
    for (language, name) in [
        ("Rust", "chat"),
        ("Python", "chat-python"),
        ("JavaScript", "chat-js"),
    ] {
        let (warm_version, compiled, cached, size) =
            load_twice(&guests, name, &cache, &HubLimits::default())?;
        let fresh_version = Runtime::new()?.with_cache(&cache)?.load_file(
            HubKey::new("bench", name)?,
            &guests.join(format!("{name}.wasm")),
            &fresh_limits,
        )?;
        let (warm, warm_n) = measure(budget, || call(&warm_version));
        let (fresh, fresh_n) = measure(budget, || call(&fresh_version));
        for (strategy, ns, n) in [
            ("warm instance", warm, warm_n),
            ("fresh instance per call", fresh, fresh_n),
        ] {
            let row = format!("{language} hub, {strategy}");
            println!(
                "{row:<42} {ns:>10.0} {n:>10} {:>9.2} µs",
                (ns - native) / 1e3
            );
        }
        loads.push((language, size, compiled, cached));
    }
    println!();
    println!(
        "{:<12} {:>12} {:>22} {:>20}",
        "component", "size", "first load (compile)", "cached load"
    );
    for (language, size, compiled, cached) in loads {
        println!(
            "{language:<12} {:>9} KB {:>19.0} ms {:>17.1} ms",
            size / 1024,
            compiled,
            cached
        );
    }
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}
