//! Per-operation cost of hub state: get, set and increment on the memory
//! backend and the Redis backend, next to a plain Redis client doing the
//! same commands (GET, SET, INCRBY) from the host, in one run against the
//! machine's Redis (127.0.0.1:6379, under a unique prefix, deleted after).
//!
//! Each operation is measured one at a time from one thread (latency: µs
//! per operation) and from 8 threads at once (throughput: operations per
//! second). Both Redis sides wait the way a hub call does: a blocking
//! thread waiting on the tokio runtime. A last table runs `get` through a
//! hub (the `faulty` test hub's `KvGets`), so the Wasm boundary and the
//! call's checks are in the figure. Run with `make bench`.

use hubhost::backplane::memory::MemoryBackplane;
use hubhost::cluster::{Cluster, PeerUrls};
use hubhost::ids::NodeId;
use hubhost::kv::memory::MemoryKv;
use hubhost::kv::redis::RedisKv;
use hubhost::kv::{KvBackend, Quota};
use hubhost::lifetime::HubLifetimeManager;
use hubhost::names::HubKey;
use hubhost::runtime::{CallerInfo, HubLimits, Runtime};
use hubhost_tests::{REDIS_URL, guest, unique_prefix};
use redis::AsyncCommands as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

const THREADS: usize = 8;
const QUOTA: Quota = Quota {
    max_keys: u64::MAX,
    max_bytes: u64::MAX,
};
const VALUE: &str = r#"{"user":"alice","message":"hello there"}"#;

/// Operations per second and µs per operation of `op` run `n` times on
/// each of `threads` threads.
fn run(
    threads: usize,
    n: usize,
    op: &(dyn Fn(usize) -> anyhow::Result<()> + Sync),
) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || (0..n).try_for_each(|i| op(t * n + i))))
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("worker panicked"))?)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let ops = (threads * n) as f64;
    Ok((ops / elapsed, elapsed * 1e6 / (n as f64)))
}

type Op<'a> = Box<dyn Fn(usize) -> anyhow::Result<()> + Sync + 'a>;

fn row(name: &str, n: usize, ops: [(&str, Op); 3]) -> anyhow::Result<()> {
    for (op_name, op) in &ops {
        let (_, latency) = run(1, n, op.as_ref())?;
        let (throughput, _) = run(THREADS, n, op.as_ref())?;
        println!(
            "| {name:<22} | {op_name:<9} | {latency:>8.1} | {:>10.0} | {throughput:>10.0} |",
            1e6 / latency
        );
    }
    Ok(())
}

fn backend_ops<'a>(kv: &'a dyn KvBackend, hub: &'a HubKey) -> [(&'static str, Op<'a>); 3] {
    [
        (
            "set",
            Box::new(move |i| Ok(kv.set(hub, &format!("k{}", i % 1000), VALUE, None, QUOTA)?)),
        ),
        (
            "get",
            Box::new(move |i| Ok(kv.get(hub, &format!("k{}", i % 1000)).map(drop)?)),
        ),
        (
            "increment",
            Box::new(move |_| Ok(kv.increment(hub, "n", 1, QUOTA).map(drop)?)),
        ),
    ]
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let _entered = runtime.enter();
    let prefix = unique_prefix("statebench");
    let hub = HubKey::new("bench", "chat")?;
    let n = 2_000;

    println!("hub state, per operation: one thread (latency) and {THREADS} threads (throughput)\n");
    println!("| backend                | operation | µs/op 1t | ops/s 1t   | ops/s {THREADS}t   |");
    println!("|------------------------|-----------|----------|------------|------------|");
    let memory = MemoryKv::new();
    row("memory", 200_000, backend_ops(&memory, &hub))?;
    let redis_kv = RedisKv::new(REDIS_URL, &prefix)?;
    row("Redis (hubhost script)", n, backend_ops(&redis_kv, &hub))?;

    // The same commands, plain, on one multiplexed connection.
    let handle = runtime.handle().clone();
    let connection =
        handle.block_on(redis::Client::open(REDIS_URL)?.get_multiplexed_async_connection())?;
    let plain = |command: fn(redis::aio::MultiplexedConnection, String) -> _| -> Op {
        let (handle, connection) = (handle.clone(), connection.clone());
        let prefix = prefix.clone();
        Box::new(move |i| {
            let key = format!("{prefix}:plain:k{}", i % 1000);
            handle.block_on(command(connection.clone(), key))?;
            Ok(())
        })
    };
    type Fut = std::pin::Pin<Box<dyn Future<Output = redis::RedisResult<()>> + Send>>;
    let set: fn(redis::aio::MultiplexedConnection, String) -> Fut =
        |mut c, key| Box::pin(async move { c.set(key, VALUE).await });
    let get: fn(redis::aio::MultiplexedConnection, String) -> Fut =
        |mut c, key| Box::pin(async move { c.get::<_, Option<String>>(key).await.map(drop) });
    let incr: fn(redis::aio::MultiplexedConnection, String) -> Fut = |mut c, key| {
        Box::pin(async move { c.incr::<_, _, i64>(format!("{key}:n"), 1).await.map(drop) })
    };
    row(
        "Redis (plain client)",
        n,
        [
            ("set", plain(set)),
            ("get", plain(get)),
            ("increment", plain(incr)),
        ],
    )?;

    // Through a hub: 100 gets in one call, less a call with none.
    println!("\nthrough a hub call (faulty's KvGets: 100 gets a call, minus a call with none)\n");
    println!("| backend                | µs per get |");
    println!("|------------------------|------------|");
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
    let backends: [(&str, Arc<dyn KvBackend>); 2] = [
        ("memory", Arc::new(MemoryKv::new())),
        (
            "Redis (hubhost script)",
            Arc::new(RedisKv::new(REDIS_URL, &prefix)?),
        ),
    ];
    for (name, backend) in backends {
        let hub_runtime = Runtime::new()?.with_state(backend);
        let limits = HubLimits {
            max_state_ops_per_call: 1_000,
            ..HubLimits::default()
        };
        let version = hub_runtime.load_file(hub.clone(), &guest("faulty"), &limits)?;
        let time = |gets: u32, calls: u32| -> anyhow::Result<f64> {
            let args = format!("[{gets}]");
            let start = Instant::now();
            for _ in 0..calls {
                let answer = version.invoke(&lifetime, &caller, "KvGets", &args)?;
                answer.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(calls))
        };
        let calls = if name == "memory" { 2_000 } else { 20 };
        let per_get = (time(100, calls)? - time(0, calls)?) / 100.0;
        println!("| {name:<22} | {per_get:>10.2} |");
    }

    // Leave the shared Redis as it was.
    let mut cleanup = connection.clone();
    let keys: Vec<String> = handle.block_on(cleanup.keys(format!("{prefix}*")))?;
    if !keys.is_empty() {
        handle.block_on(cleanup.del::<_, ()>(keys))?;
    }
    Ok(())
}
