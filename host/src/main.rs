//! The `hubhost` command.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hubhost::config::{Config, HubConfig};
use hubhost::server::{self, AppState};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "hubhost",
    version,
    about = "SignalR-compatible server running hubs as Wasm components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve hubs.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file; flags and environment override it.
    #[arg(long, env = "HUBHOST_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long, env = "HUBHOST_LISTEN")]
    listen: Option<SocketAddr>,
    /// A hub to serve, as TENANT/HUB=PATH.wasm; repeatable.
    #[arg(
        long = "hub",
        value_name = "TENANT/HUB=PATH",
        env = "HUBHOST_HUBS",
        value_delimiter = ','
    )]
    hubs: Vec<String>,
    /// Redis URL for the backplane (redis://[user:password@]host:port[/db], rediss:// for TLS);
    /// without it the node runs alone on the in-memory backplane.
    #[arg(long, env = "HUBHOST_REDIS")]
    redis: Option<String>,
    /// Prefix of every backplane channel; clusters sharing one Redis need different ones
    /// [default: hubhost].
    #[arg(long, env = "HUBHOST_CLUSTER_PREFIX")]
    cluster_prefix: Option<String>,
    /// Serve the files of this directory under `/` (the demo page).
    #[arg(long, env = "HUBHOST_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// Keep compiled components in this directory (writable by hubhost alone), so
    /// restarts load them in milliseconds instead of compiling again.
    #[arg(long, env = "HUBHOST_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Largest message a client may send, in bytes [default: 32768].
    #[arg(long, env = "HUBHOST_MAX_MESSAGE_SIZE")]
    max_message_size: Option<usize>,
    /// Ping clients after this many idle milliseconds [default: 15000].
    #[arg(long, env = "HUBHOST_KEEP_ALIVE_MS")]
    keep_alive_ms: Option<u64>,
    /// Close clients silent for this many milliseconds after their first ping [default: 30000].
    #[arg(long, env = "HUBHOST_CLIENT_TIMEOUT_MS")]
    client_timeout_ms: Option<u64>,
    /// Time allowed for the handshake, in milliseconds [default: 15000].
    #[arg(long, env = "HUBHOST_HANDSHAKE_TIMEOUT_MS")]
    handshake_timeout_ms: Option<u64>,
    /// Deadline of one hub call, in milliseconds [default: 5000].
    #[arg(long, env = "HUBHOST_CALL_TIMEOUT_MS")]
    call_timeout_ms: Option<u64>,
    /// Linear memory limit of one hub instance, in bytes [default: 67108864].
    #[arg(long, env = "HUBHOST_HUB_MEMORY_BYTES")]
    hub_memory_bytes: Option<usize>,
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        for spec in &self.hubs {
            config
                .hubs
                .push(HubConfig::parse_flag(spec).with_context(|| format!("--hub {spec}"))?);
        }
        if self.static_dir.is_some() {
            config.static_dir = self.static_dir;
        }
        if self.cache_dir.is_some() {
            config.cache_dir = self.cache_dir;
        }
        if self.redis.is_some() {
            config.redis_url = self.redis;
        }
        set(&mut config.cluster_prefix, self.cluster_prefix);
        let c = &mut config.connection;
        set(&mut c.max_message_size, self.max_message_size);
        set(&mut c.keep_alive_interval_ms, self.keep_alive_ms);
        set(&mut c.client_timeout_ms, self.client_timeout_ms);
        set(&mut c.handshake_timeout_ms, self.handshake_timeout_ms);
        set(&mut config.hub_limits.call_timeout_ms, self.call_timeout_ms);
        set(&mut config.hub_limits.memory_bytes, self.hub_memory_bytes);
        Ok(config)
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args.config()?)),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.hubs.is_empty() {
        tracing::warn!(
            "no hubs configured (use --hub TENANT/HUB=PATH.wasm); every hub URL will answer 404"
        );
    }
    let state = AppState::new(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "hubhost listening on http://{addr}");
    server::run(listener, state, shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::error!(%error, "cannot watch SIGTERM; only SIGINT stops the server");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
