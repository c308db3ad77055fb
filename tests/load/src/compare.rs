//! `hubhost-load compare`: start two nodes of each system on one Redis —
//! hubhost, Socket.IO 4 with its Redis adapter, and the bare relay — drive
//! each with the same loads from this process, and print one table with the
//! ratios. Systems run one after another, so each has the machine to itself
//! (with Redis and this load tool).

use crate::client::Proto;
use crate::scenarios::{self, EchoResult, FanoutResult, Fleet, IdleResult};
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(clap::Args)]
pub struct CompareArgs {
    /// The hubhost binary (a release build).
    #[arg(long)]
    hubhost: PathBuf,
    /// The chat hub component.
    #[arg(long)]
    guest: PathBuf,
    /// hubhost's compiled-component cache.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The bare relay binary.
    #[arg(long)]
    relay: PathBuf,
    /// The directory of the Socket.IO server script (npm packages installed).
    #[arg(long)]
    socketio: PathBuf,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Receiving clients of the fan-out, spread over both nodes.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Broadcast rates tried, in messages per second, lowest first.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,5,10,25,50,75,100,125,150,200,250,300,400,500,600,800"
    )]
    rates: Vec<u64>,
    #[arg(long, default_value_t = 4)]
    step_secs: u64,
    /// The p99 a sustained rate must keep.
    #[arg(long, default_value_t = 100)]
    p99_ms: u64,
    #[arg(long, default_value_t = 32)]
    echo_clients: usize,
    #[arg(long, default_value_t = 3)]
    echo_secs: u64,
    /// Idle connections opened on one node.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
}

/// One node of a system under test.
struct Node {
    _child: Child,
    url: String,
    pid: u32,
}

/// Start `command` and wait for its `listening on http://…` line.
async fn start(mut command: Command) -> anyhow::Result<Node> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let pid = child.id().context("no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                return anyhow::Ok(url);
            }
        }
        anyhow::bail!("exited before listening")
    })
    .await
    .context("did not start listening in time")??;
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Node {
        _child: child,
        url,
        pid,
    })
}

/// What one system achieved.
struct Outcome {
    name: &'static str,
    best: Option<FanoutResult>,
    first_failure: Option<FanoutResult>,
    connect_ms: u64,
    echo: EchoResult,
    idle: IdleResult,
}

pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let run_id = format!("bench-{}", std::process::id());
    let mut outcomes = Vec::new();
    for name in ["hubhost", "socket.io", "relay"] {
        let (proto, nodes, path) = match name {
            "hubhost" => {
                let mut nodes = Vec::new();
                for _ in 0..2 {
                    let mut command = Command::new(&args.hubhost);
                    command
                        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &args.redis])
                        .args(["--cluster-prefix", &format!("{run_id}-hubhost")])
                        .arg("--hub")
                        .arg(format!("demo/chat={}", args.guest.display()))
                        .env("RUST_LOG", "warn,hubhost=info")
                        .env("NO_COLOR", "1");
                    if let Some(cache) = &args.cache_dir {
                        command.arg("--cache-dir").arg(cache);
                    }
                    nodes.push(start(command).await?);
                }
                (Proto::Signalr, nodes, "/demo/chat")
            }
            "socket.io" => {
                let mut nodes = Vec::new();
                for _ in 0..2 {
                    let mut command = Command::new("node");
                    command
                        .arg(args.socketio.join("server.mjs"))
                        .env("PORT", "0")
                        .env("REDIS_URL", &args.redis)
                        .env("PREFIX", format!("{run_id}-socketio"));
                    nodes.push(start(command).await?);
                }
                (Proto::Socketio, nodes, "")
            }
            _ => {
                let mut nodes = Vec::new();
                for _ in 0..2 {
                    let mut command = Command::new(&args.relay);
                    command.args(["--listen", "127.0.0.1:0", "--redis", &args.redis]);
                    command.args(["--channel", &format!("{run_id}-relay")]);
                    nodes.push(start(command).await?);
                }
                (Proto::Signalr, nodes, "/")
            }
        };
        let urls: Vec<String> = nodes.iter().map(|n| format!("{}{path}", n.url)).collect();
        eprintln!("== {name}: nodes {urls:?}");
        outcomes.push(measure(name, proto, &urls, nodes[0].pid, &args).await?);
    }
    print_table(&outcomes, &args);
    Ok(())
}

async fn measure(
    name: &'static str,
    proto: Proto,
    urls: &[String],
    pid: u32,
    args: &CompareArgs,
) -> anyhow::Result<Outcome> {
    let fleet = Fleet::connect(proto, urls, args.clients, args.senders).await?;
    eprintln!(
        "{name}: {} clients + {} senders connected in {} ms",
        args.clients, args.senders, fleet.connect_ms
    );
    let (mut best, mut first_failure) = (None, None);
    let mut step = 0;
    for rate in &args.rates {
        // A rate fails only if two tries in a row fail: one stray spike on
        // this shared machine is not the system's limit.
        let mut result = None;
        for _ in 0..2 {
            step += 1;
            let attempt = fleet
                .step(step, *rate, args.size, Duration::from_secs(args.step_secs))
                .await;
            report(name, *rate, &attempt);
            let passed = attempt.passes(args.p99_ms);
            result = Some(attempt);
            if passed {
                break;
            }
        }
        let Some(result) = result else { break };
        if result.passes(args.p99_ms) {
            best = Some(result);
        } else {
            first_failure = Some(result);
            break;
        }
    }
    let connect_ms = fleet.connect_ms;
    drop(fleet);
    let echo = scenarios::echo(
        proto,
        urls,
        args.echo_clients,
        Duration::from_secs(args.echo_secs),
    )
    .await?;
    eprintln!(
        "{name}: echo {:.0}/s p99 {:.2} ms",
        echo.per_sec,
        echo.latency.p99 as f64 / 1e3
    );
    let idle = scenarios::idle(proto, &urls[0], pid, args.idle).await?;
    eprintln!(
        "{name}: {} idle connections: RSS {} → {} KiB, {:.1} KiB each",
        idle.connections, idle.before_kib, idle.after_kib, idle.kib_per_connection
    );
    Ok(Outcome {
        name,
        best,
        first_failure,
        connect_ms,
        echo,
        idle,
    })
}

fn report(name: &str, rate: u64, result: &FanoutResult) {
    eprintln!(
        "{name}: rate {rate}/s sent {} delivered {}/{} lost {} duplicates {} closed {} p50 {:.1} ms p99 {:.1} ms p99.9 {:.1} ms max {:.1} ms, {:.0} deliveries/s",
        result.sent,
        result.delivered,
        result.expected,
        result.lost,
        result.duplicates,
        result.closed,
        result.latency.p50 as f64 / 1e3,
        result.latency.p99 as f64 / 1e3,
        result.latency.p999 as f64 / 1e3,
        result.latency.max as f64 / 1e3,
        result.deliveries_per_sec
    );
}

/// One figure of an outcome.
type Column = dyn Fn(&Outcome) -> f64;

fn print_table(outcomes: &[Outcome], args: &CompareArgs) {
    let rate = |o: &Outcome| o.best.map_or(0.0, |b| b.rate as f64);
    let rows: Vec<(String, Box<Column>)> = vec![
        (
            format!(
                "fan-out: highest rate with p99 ≤ {} ms, 0 lost (msg/s)",
                args.p99_ms
            ),
            Box::new(rate),
        ),
        (
            "  deliveries/s at that rate".into(),
            Box::new(|o: &Outcome| o.best.map_or(0.0, |b| b.deliveries_per_sec)),
        ),
        (
            "  p50 ms at that rate".into(),
            Box::new(|o: &Outcome| o.best.map_or(0.0, |b| b.latency.p50 as f64 / 1e3)),
        ),
        (
            "  p99 ms at that rate".into(),
            Box::new(|o: &Outcome| o.best.map_or(0.0, |b| b.latency.p99 as f64 / 1e3)),
        ),
        (
            "  p99.9 ms at that rate".into(),
            Box::new(|o: &Outcome| o.best.map_or(0.0, |b| b.latency.p999 as f64 / 1e3)),
        ),
        (
            "  max ms at that rate".into(),
            Box::new(|o: &Outcome| o.best.map_or(0.0, |b| b.latency.max as f64 / 1e3)),
        ),
        (
            "  next rate tried (failed) (msg/s)".into(),
            Box::new(|o: &Outcome| o.first_failure.map_or(0.0, |f| f.rate as f64)),
        ),
        (
            format!("  connect {} + {} clients (ms)", args.clients, args.senders),
            Box::new(|o: &Outcome| o.connect_ms as f64),
        ),
        (
            format!("echo: invocations/s ({} clients)", args.echo_clients),
            Box::new(|o: &Outcome| o.echo.per_sec),
        ),
        (
            "echo: p99 ms".into(),
            Box::new(|o: &Outcome| o.echo.latency.p99 as f64 / 1e3),
        ),
        (
            format!("idle: KiB per connection ({} on one node)", args.idle),
            Box::new(|o: &Outcome| o.idle.kib_per_connection),
        ),
        (
            format!("connect: {} clients to one node (ms)", args.idle),
            Box::new(|o: &Outcome| o.idle.connect_ms as f64),
        ),
        (
            "connect: connections/s (WebSocket + handshake, no negotiate)".into(),
            Box::new(|o: &Outcome| {
                o.idle.connections as f64 * 1e3 / o.idle.connect_ms.max(1) as f64
            }),
        ),
    ];
    let find = |name: &str| outcomes.iter().find(|o| o.name == name);
    println!();
    println!(
        "| {:<58} | {:>10} | {:>10} | {:>10} | {:>13} | {:>17} |",
        "scenario", "hubhost", "socket.io", "relay", "hubhost/relay", "hubhost/socket.io"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|",
        "-".repeat(60),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(15),
        "-".repeat(19)
    );
    for (label, value) in &rows {
        let get = |name: &str| find(name).map_or(0.0, value);
        let (h, s, r) = (get("hubhost"), get("socket.io"), get("relay"));
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}×", a / b)
            } else {
                "–".into()
            }
        };
        println!(
            "| {label:<58} | {h:>10.1} | {s:>10.1} | {r:>10.1} | {:>13} | {:>17} |",
            ratio(h, r),
            ratio(h, s)
        );
    }
}
