//! Per-call cost of a trivial hub call (`Echo`), next to the same dispatch
//! with a native handler in place of the Wasm hub.
//!
//! Both sides do what the connection does for one invocation: parse the
//! client's JSON message, run the method, write the Completion. The Wasm side
//! also instantiates the component (a fresh instance per call) and crosses
//! the component boundary twice. Run with `make bench`.

use hubhost::backplane::memory::MemoryBackplane;
use hubhost::ids::NodeId;
use hubhost::lifetime::{HubKey, HubLifetimeManager, LifetimeConfig};
use hubhost::protocol::{Incoming, json};
use hubhost::runtime::{CallerInfo, HubLimits, Runtime};
use std::hint::black_box;
use std::path::PathBuf;
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
        }) => (
            invocation_id.unwrap_or_default(),
            arguments.get().to_owned(),
        ),
        _ => unreachable!("benchmark message is an invocation"),
    }
}

fn main() -> anyhow::Result<()> {
    let guest =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/guest/chat.wasm");
    anyhow::ensure!(
        guest.exists(),
        "{} is missing: run `make guests`",
        guest.display()
    );
    let tokio = tokio::runtime::Runtime::new()?;
    let _guard = tokio.enter();
    let key = HubKey::new("bench", "chat")?;
    let runtime = Runtime::new()?;
    let load_start = Instant::now();
    let version = runtime.load_file(key.clone(), &guest, &HubLimits::default())?;
    let load = load_start.elapsed();
    let fresh = HubLimits {
        reuse_instances: false,
        ..HubLimits::default()
    };
    let fresh_version = runtime.load_file(key, &guest, &fresh)?;
    let lifetime = HubLifetimeManager::start(
        NodeId::random(),
        LifetimeConfig::new("bench"),
        Arc::new(MemoryBackplane::standalone()),
    );
    let caller = CallerInfo {
        connection_id: NodeId::random().new_connection_id().into(),
        user_id: None,
        claims: vec![],
    };
    let budget = Duration::from_secs(3);

    let (native, native_n) = measure(budget, || {
        let (id, args) = parse(black_box(MESSAGE));
        // The native "hub": Echo returns its only argument.
        let args: Vec<Box<serde_json::value::RawValue>> =
            serde_json::from_str(&args).unwrap_or_default();
        let result = args.into_iter().next().unwrap_or_default();
        black_box(json::completion_result(&id, &result));
    });
    let wasm_call = |version: &hubhost::runtime::HubVersion| {
        let (id, args) = parse(black_box(MESSAGE));
        match version.invoke(&lifetime, &caller, "Echo", &args) {
            Ok(Ok(result)) => black_box(json::completion_result(&id, &result)),
            other => panic!(
                "Echo failed: {:?}",
                other.map(|r| r.map(|v| v.get().to_owned()))
            ),
        };
    };
    let (warm, warm_n) = measure(budget, || wasm_call(&version));
    let (fresh, fresh_n) = measure(budget, || wasm_call(&fresh_version));
    println!("hub call cost: Echo with a ~40-byte argument");
    println!(
        "component load (compile + link): {:.1} ms",
        load.as_secs_f64() * 1e3
    );
    println!(
        "{:<40} {:>10} {:>10} {:>14}",
        "dispatch", "ns/call", "calls", "over native"
    );
    println!(
        "{:<40} {:>10.0} {:>10} {:>14}",
        "native handler (no hub)", native, native_n, "-"
    );
    for (name, ns, n) in [
        ("Wasm hub, warm instance (default)", warm, warm_n),
        ("Wasm hub, fresh instance per call", fresh, fresh_n),
    ] {
        println!(
            "{name:<40} {ns:>10.0} {n:>10} {:>11.2} µs",
            (ns - native) / 1e3
        );
    }
    Ok(())
}
