//! The `hubhost` command.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hubhost::admin::client::{AdminClient, describe_hubs};
use hubhost::config::{Config, HubConfig};
use hubhost::lifetime::HubKey;
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
// Parsed once per process: the size of the `serve` variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve hubs.
    Serve(ServeArgs),
    /// Upload a hub component to a running node; active on every node at once
    /// unless --no-activate.
    Deploy {
        #[command(flatten)]
        admin: AdminArgs,
        /// The hub, as TENANT/HUB.
        hub: String,
        /// The component (.wasm).
        file: PathBuf,
        /// Store the version without serving it (activate it later).
        #[arg(long)]
        no_activate: bool,
    },
    /// List, activate, roll back or delete hubs on a running node.
    Hubs {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: HubsCommand,
    },
}

#[derive(Subcommand)]
enum HubsCommand {
    /// Every hub of a tenant: versions, the active one, what the node serves.
    List { tenant: String },
    /// One hub, as JSON.
    Show { hub: String },
    /// Make a stored version active.
    Activate { hub: String, version: u64 },
    /// Make the previously active version active again.
    Rollback { hub: String },
    /// Delete a hub and its versions; its clients are closed.
    Delete { hub: String },
}

/// Where the admin API is and the key to use.
#[derive(clap::Args)]
struct AdminArgs {
    /// Base URL of a hubhost node.
    #[arg(long, env = "HUBHOST_SERVER", default_value = "http://127.0.0.1:5000")]
    server: String,
    /// Admin key: an operator key or the tenant's key.
    #[arg(long, env = "HUBHOST_ADMIN_KEY", hide_env_values = true)]
    key: String,
}

fn hub_key(text: &str) -> anyhow::Result<HubKey> {
    let (tenant, hub) = text.split_once('/').context("expected TENANT/HUB")?;
    Ok(HubKey::new(tenant, hub)?)
}

async fn deploy(
    admin: AdminArgs,
    hub: String,
    file: PathBuf,
    no_activate: bool,
) -> anyhow::Result<()> {
    let key = hub_key(&hub)?;
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let client = AdminClient::new(&admin.server, &admin.key)?;
    let started = std::time::Instant::now();
    let info = client.upload(&key, bytes, !no_activate).await?;
    println!(
        "{key} version {} ({} bytes, sha256 {}) {} in {} ms",
        info["version"],
        info["size"],
        info["sha256"].as_str().unwrap_or("?"),
        if no_activate {
            "stored"
        } else {
            "deployed and active"
        },
        started.elapsed().as_millis()
    );
    Ok(())
}

async fn hubs(admin: AdminArgs, command: HubsCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(&admin.server, &admin.key)?;
    match command {
        HubsCommand::List { tenant } => print!("{}", describe_hubs(&client.hubs(&tenant).await?)),
        HubsCommand::Show { hub } => println!("{:#}", client.hub(&hub_key(&hub)?).await?),
        HubsCommand::Activate { hub, version } => {
            client.activate(&hub_key(&hub)?, version).await?;
            println!("{hub}: version {version} active");
        }
        HubsCommand::Rollback { hub } => {
            let answer = client.rollback(&hub_key(&hub)?).await?;
            println!("{hub}: rolled back; version {} active", answer["active"]);
        }
        HubsCommand::Delete { hub } => {
            client.delete(&hub_key(&hub)?).await?;
            println!("{hub}: deleted");
        }
    }
    Ok(())
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
    /// Keep uploaded hubs in this directory on a node without Redis (with Redis
    /// they live in Redis); without it they last until the process exits.
    #[arg(long, env = "HUBHOST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Development: serve DIR/TENANT/HUB.wasm files and reload each on change.
    #[arg(long, env = "HUBHOST_WATCH_DIR")]
    watch_dir: Option<PathBuf>,
    /// An operator key for the admin API (at least 16 characters); repeatable.
    #[arg(
        long = "admin-key",
        env = "HUBHOST_OPERATOR_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    admin_keys: Vec<String>,
    /// An origin whose browser clients may connect (https://host[:port], or * for any);
    /// repeatable.
    #[arg(
        long = "cors-origin",
        env = "HUBHOST_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// The URL other nodes reach this one at, to pass on requests for its
    /// connections [default: http://LISTEN-ADDRESS unless it is a wildcard].
    #[arg(long, env = "HUBHOST_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// How long a long poll waits for messages, in milliseconds [default: 90000].
    #[arg(long, env = "HUBHOST_POLL_TIMEOUT_MS")]
    poll_timeout_ms: Option<u64>,
    /// How long a negotiated connection waits for its transport, and a
    /// long-polling connection for its next poll, in milliseconds [default: 15000].
    #[arg(long, env = "HUBHOST_DISCONNECT_TIMEOUT_MS")]
    disconnect_timeout_ms: Option<u64>,
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
        if self.data_dir.is_some() {
            config.data_dir = self.data_dir;
        }
        if self.watch_dir.is_some() {
            config.watch_dir = self.watch_dir;
        }
        config.admin.operator_keys.extend(self.admin_keys);
        config.cors.allowed_origins.extend(self.cors_origins);
        if self.redis.is_some() {
            config.redis_url = self.redis;
        }
        set(&mut config.cluster_prefix, self.cluster_prefix);
        if self.advertise_url.is_some() {
            config.advertise_url = self.advertise_url;
        }
        let c = &mut config.connection;
        set(&mut c.poll_timeout_ms, self.poll_timeout_ms);
        set(&mut c.disconnect_timeout_ms, self.disconnect_timeout_ms);
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
        Command::Deploy {
            admin,
            hub,
            file,
            no_activate,
        } => runtime.block_on(deploy(admin, hub, file, no_activate)),
        Command::Hubs { admin, command } => runtime.block_on(hubs(admin, command)),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let has_admin_keys = !config.admin.operator_keys.is_empty()
        || config
            .tenants
            .values()
            .any(|t| !t.admin_keys.is_empty() || !t.admin_key_sha256.is_empty());
    if !has_admin_keys {
        tracing::warn!(
            "no admin keys configured (--admin-key or [admin] operator_keys): the admin API refuses every request"
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
