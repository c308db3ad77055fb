//! The `hubhost` command.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hubhost::admin::api::{ApiMessage, ApiMessages, ApiTarget};
use hubhost::admin::client::{AdminClient, describe_hubs};
use hubhost::config::{Config, ServeArgs};
use hubhost::names::HubKey;
use hubhost::server;
use hubhost::state::AppState;
use std::io::IsTerminal;
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
    /// Serve hubs. Every setting has a key in the configuration file; those
    /// below also have a flag and an environment variable, which override
    /// the file.
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
    /// Send a message to clients of a hub through the server API, as a
    /// backend would: to every client unless --group, --user or --connection.
    Send {
        #[command(flatten)]
        admin: AdminArgs,
        /// The hub, as TENANT/HUB.
        hub: String,
        #[arg(long, conflicts_with_all = ["user", "connection"])]
        group: Option<String>,
        #[arg(long, conflicts_with = "connection")]
        user: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        /// The client method to call.
        method: String,
        /// Its arguments, a JSON array.
        #[arg(default_value = "[]")]
        args: String,
    },
    /// Set, list or delete a tenant's variables and secrets, which its hubs
    /// read through `config`.
    Vars {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: VarsCommand,
    },
}

#[derive(Subcommand)]
enum VarsCommand {
    /// Every variable of a tenant (secrets without their values).
    List { tenant: String },
    /// Set a variable; with --secret it is sealed and never shown again.
    Set {
        tenant: String,
        name: String,
        /// The value; `-` reads it from standard input (keeps a secret out
        /// of the shell's history and the process list).
        value: String,
        #[arg(long)]
        secret: bool,
    },
    /// Delete a variable.
    Delete { tenant: String, name: String },
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
    /// How often each limit stopped a tenant on the node, since it started.
    Limits { tenant: String },
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
        info.info.version,
        info.info.size,
        info.info.sha256,
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
        HubsCommand::Show { hub } => println!(
            "{}",
            serde_json::to_string_pretty(&client.hub(&hub_key(&hub)?).await?)?
        ),
        HubsCommand::Activate { hub, version } => {
            client.activate(&hub_key(&hub)?, version).await?;
            println!("{hub}: version {version} active");
        }
        HubsCommand::Rollback { hub } => {
            let answer = client.rollback(&hub_key(&hub)?).await?;
            println!("{hub}: rolled back; version {} active", answer.active);
        }
        HubsCommand::Delete { hub } => {
            client.delete(&hub_key(&hub)?).await?;
            println!("{hub}: deleted");
        }
        HubsCommand::Limits { tenant } => {
            for (limit, count) in client.limit_hits(&tenant).await?.hits {
                println!("{limit}  {count}");
            }
        }
    }
    Ok(())
}

async fn vars(admin: AdminArgs, command: VarsCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(&admin.server, &admin.key)?;
    match command {
        VarsCommand::List { tenant } => {
            for var in client.vars(&tenant).await?.vars {
                match var.value {
                    Some(value) => println!("{}={value}", var.name),
                    None => println!("{} (secret)", var.name),
                }
            }
        }
        VarsCommand::Set {
            tenant,
            name,
            value,
            secret,
        } => {
            let value = if value == "-" {
                let mut read = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut read)
                    .context("cannot read the value from standard input")?;
                read.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                value
            };
            client.set_var(&tenant, &name, &value, secret).await?;
            let kind = if secret { "secret" } else { "variable" };
            println!("{tenant}: {kind} {name} set");
        }
        VarsCommand::Delete { tenant, name } => {
            client.delete_var(&tenant, &name).await?;
            println!("{tenant}: {name} deleted");
        }
    }
    Ok(())
}

async fn send(
    admin: AdminArgs,
    hub: String,
    target: ApiTarget,
    method: String,
    args: String,
) -> anyhow::Result<()> {
    let key = hub_key(&hub)?;
    let arguments: Vec<serde_json::Value> =
        serde_json::from_str(&args).context("the arguments must be a JSON array")?;
    let client = AdminClient::new(&admin.server, &admin.key)?;
    let message = ApiMessage {
        target,
        method,
        arguments,
    };
    let accepted = client
        .send_messages(&key, &ApiMessages::One(message))
        .await?;
    println!("{hub}: {} message accepted", accepted.accepted);
    Ok(())
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
        Command::Serve(args) => runtime.block_on(serve(args.config)),
        Command::Deploy {
            admin,
            hub,
            file,
            no_activate,
        } => runtime.block_on(deploy(admin, hub, file, no_activate)),
        Command::Hubs { admin, command } => runtime.block_on(hubs(admin, command)),
        Command::Vars { admin, command } => runtime.block_on(vars(admin, command)),
        Command::Send {
            admin,
            hub,
            group,
            user,
            connection,
            method,
            args,
        } => {
            let target = match (group, user, connection) {
                (Some(group), _, _) => ApiTarget::Group(group),
                (_, Some(user), _) => ApiTarget::User(user),
                (_, _, Some(connection)) => ApiTarget::Connection(connection),
                _ => ApiTarget::All(true),
            };
            runtime.block_on(send(admin, hub, target, method, args))
        }
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
    let listen = config.listen;
    let metrics_listen = config.metrics_listen;
    // Installed before anything records, so no early event is missed.
    let recorder = metrics_listen
        .map(|_| hubhost::exporter::install())
        .transpose()?;
    let state = AppState::new(config)?;
    if let (Some(addr), Some(recorder)) = (metrics_listen, recorder) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        let routes = hubhost::exporter::routes(recorder, state.clone());
        // Ends with the process; scrapes are short and need no drain.
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, routes).await {
                tracing::error!(%error, "the metrics listener failed");
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
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
