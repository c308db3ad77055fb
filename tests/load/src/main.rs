//! `hubhost-load`: the load tool of the comparison benchmark.
//!
//! # Layout
//! - [`client`]: SignalR JSON and Socket.IO 4 over WebSockets, the same chat contract.
//! - [`scenarios`]: broadcast fan-out at a rate, echo round trips, idle connections.
//! - [`compare`]: two nodes each of hubhost, Socket.IO and the bare relay, one table.

mod client;
mod compare;
mod scenarios;

use clap::{Parser, Subcommand};
use client::Proto;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "hubhost-load",
    about = "Load tool: SignalR JSON and Socket.IO over WebSockets"
)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Broadcast fan-out: N clients over the URLs, S senders, a total rate.
    Fanout {
        #[arg(long, value_enum, default_value = "signalr")]
        proto: Proto,
        /// Hub URLs (SignalR) or server roots (Socket.IO), clients spread over them.
        #[arg(long, value_delimiter = ',', required = true)]
        urls: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Messages per second, all senders together.
        #[arg(long, default_value_t = 100)]
        rate: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// Echo round trips: invocations per second with results.
    Echo {
        #[arg(long, value_enum, default_value = "signalr")]
        proto: Proto,
        #[arg(long, value_delimiter = ',', required = true)]
        urls: Vec<String>,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// Idle connections: memory per connection from the server's RSS.
    Idle {
        #[arg(long, value_enum, default_value = "signalr")]
        proto: Proto,
        #[arg(long)]
        url: String,
        /// The server process.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
    },
    /// hubhost, Socket.IO and the bare relay side by side: one table.
    Compare(compare::CompareArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Mode::Fanout {
            proto,
            urls,
            clients,
            senders,
            rate,
            size,
            secs,
        } => {
            let fleet = scenarios::Fleet::connect(proto, &urls, clients, senders).await?;
            println!("connected {clients} + {senders} in {} ms", fleet.connect_ms);
            let r = fleet.step(1, rate, size, Duration::from_secs(secs)).await;
            println!(
                "sent {} expected {} delivered {} lost {} duplicates {} closed {} deliveries/s {:.0} latency µs p50 {} p99 {} p99.9 {} max {}",
                r.sent,
                r.expected,
                r.delivered,
                r.lost,
                r.duplicates,
                r.closed,
                r.deliveries_per_sec,
                r.latency.p50,
                r.latency.p99,
                r.latency.p999,
                r.latency.max
            );
        }
        Mode::Echo {
            proto,
            urls,
            clients,
            secs,
        } => {
            let r = scenarios::echo(proto, &urls, clients, Duration::from_secs(secs)).await?;
            println!(
                "calls {} per second {:.0} latency µs p50 {} p99 {} p99.9 {} max {}",
                r.calls, r.per_sec, r.latency.p50, r.latency.p99, r.latency.p999, r.latency.max
            );
        }
        Mode::Idle {
            proto,
            url,
            pid,
            clients,
        } => {
            let r = scenarios::idle(proto, &url, pid, clients).await?;
            println!(
                "{} connections in {} ms: RSS {} → {} KiB, {:.1} KiB per connection",
                r.connections, r.connect_ms, r.before_kib, r.after_kib, r.kib_per_connection
            );
        }
        Mode::Compare(args) => compare::run(args).await?,
    }
    Ok(())
}
