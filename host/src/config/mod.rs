//! Settings: every one defined once, as a typed field with its default, its
//! doc, its file key and (where it has them) its flag and environment
//! variable, in the struct of the concern it belongs to ([`HubLimits`],
//! [`ConnectionSettings`], [`BackplaneSettings`], the sections below).
//!
//! One generic step reads them ([`ServeArgs`]): defaults, then the TOML file
//! (`--config`), then environment variables and flags, later ones winning
//! (a list given by flag or environment replaces the file's). Durations are
//! `*_ms` keys parsed once into a `Duration` ([`crate::millis`]). Unknown
//! keys in the file are errors, so a typo never goes unnoticed.

mod cors;
mod serve;

pub use serve::ServeArgs;

use crate::backplane::BackplaneSettings;
use crate::connection::ConnectionSettings;
use crate::names::HubKey;
use crate::runtime::HubLimits;
use crate::tenants::{StorageLimits, TenantConfig};
use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `hubhost serve` runs with; the configuration file's shape.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "HUBHOST_LISTEN", required = false)]
    pub listen: SocketAddr,
    /// A hub to serve, as TENANT/HUB=PATH.wasm; repeatable.
    #[arg(
        long = "hub",
        value_name = "TENANT/HUB=PATH",
        env = "HUBHOST_HUBS",
        value_delimiter = ',',
        value_parser = HubConfig::parse_flag
    )]
    pub hubs: Vec<HubConfig>,
    /// Serve the files of this directory under `/` (the demo page).
    #[arg(long, env = "HUBHOST_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Keep compiled components in this directory (writable by hubhost
    /// alone), so restarts load them in milliseconds instead of compiling
    /// again.
    #[arg(long, env = "HUBHOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Components of this many bytes or more, not in the cache, are served
    /// first with code of the baseline compiler (Winch, about 4× faster to
    /// compile, slower to run) while the optimizing compiler (Cranelift)
    /// works in the background; 0: always optimized at once.
    #[arg(skip)]
    pub baseline_compile_above_bytes: usize,
    /// Prefix of every backplane channel and store key; clusters sharing one
    /// Redis need different ones.
    #[arg(long, env = "HUBHOST_CLUSTER_PREFIX", required = false)]
    pub cluster_prefix: String,
    /// Redis URL for the backplane, state, timers and the hub store:
    /// `redis://[user:password@]host:port[/db]` (`rediss://` for TLS),
    /// `redis+sentinel://[auth@]host:port[,…]/PRIMARY[/db]`, or
    /// `redis+cluster://[auth@]host:port[,…]`; without it the node runs
    /// alone on the in-memory backplane.
    #[arg(long = "redis", env = "HUBHOST_REDIS")]
    pub redis_url: Option<String>,
    /// Backplane buffering and timing.
    #[arg(skip)]
    pub backplane: BackplaneSettings,
    /// Protocol limits and timings.
    #[command(flatten)]
    pub connection: ConnectionSettings,
    /// Limits of every hub call.
    #[command(flatten)]
    pub hub_limits: HubLimits,
    /// Tenants: admin keys, client authentication, quotas and limits.
    #[arg(skip)]
    pub tenants: HashMap<String, TenantConfig>,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminSettings,
    /// Keep uploaded hubs in this directory on a node without Redis (with
    /// Redis they live in Redis); without it they last until the process
    /// exits.
    #[arg(long, env = "HUBHOST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Development: serve DIR/TENANT/HUB.wasm files and reload each on change.
    #[arg(long, env = "HUBHOST_WATCH_DIR")]
    pub watch_dir: Option<PathBuf>,
    /// Browser clients on other origins.
    #[command(flatten)]
    pub cors: CorsSettings,
    /// What the node does between SIGTERM and exiting.
    #[command(flatten)]
    pub drain: DrainSettings,
    /// The URL other nodes reach this one at, to pass on requests for its
    /// connections (http://10.0.0.5:5000); by default http:// and the listen
    /// address, unless that is a wildcard (0.0.0.0, ::), which names no host.
    #[arg(long, env = "HUBHOST_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Serve Prometheus metrics at `/metrics` on this address, a listener
    /// of its own (never the public one); off without it.
    #[arg(long, env = "HUBHOST_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            hubs: Vec::new(),
            static_dir: None,
            cache_dir: None,
            baseline_compile_above_bytes: 1_000_000,
            cluster_prefix: "hubhost".into(),
            redis_url: None,
            backplane: BackplaneSettings::default(),
            connection: ConnectionSettings::default(),
            hub_limits: HubLimits::default(),
            tenants: HashMap::new(),
            admin: AdminSettings::default(),
            data_dir: None,
            watch_dir: None,
            cors: CorsSettings::default(),
            drain: DrainSettings::default(),
            advertise_url: None,
            metrics_listen: None,
        }
    }
}

/// The admin API (`/admin/v1/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// An operator key for the admin API (at least 16 characters): it
    /// manages every tenant; repeatable. Without any, only tenant keys work.
    #[arg(
        long = "admin-key",
        env = "HUBHOST_OPERATOR_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub operator_keys: Vec<String>,
    /// Largest component a tenant may upload unless its own limit says
    /// otherwise, in bytes.
    #[arg(skip)]
    pub max_component_bytes: usize,
    /// How often each node compares its hubs with the store, besides acting
    /// on announcements at once (this catches announcements missed while
    /// Redis was away).
    #[arg(skip)]
    #[serde(rename = "sync_interval_ms", with = "crate::millis::positive")]
    pub sync_interval: Duration,
    /// Uploads this node reads and compiles at once, every tenant together;
    /// one more is refused (503) before its body is read.
    #[arg(skip)]
    pub max_uploads_in_progress: usize,
    /// Components this node compiles at once (uploads, and versions other
    /// nodes activated); more wait.
    #[arg(skip)]
    pub max_concurrent_compiles: usize,
    /// What each tenant may keep in the store, unless its own `storage`
    /// says otherwise.
    #[arg(skip)]
    pub storage: StorageLimits,
    /// The key tenant secrets are sealed with (AES-256-GCM): base64 of 32
    /// random bytes, the same on every node, never stored with the secrets
    /// (`openssl rand -base64 32`). Without it, nodes keep no secrets.
    #[arg(
        long = "secrets-key",
        env = "HUBHOST_SECRETS_KEY",
        hide_env_values = true
    )]
    pub secrets_key: Option<String>,
    /// Variables and secrets one tenant may have.
    #[arg(skip)]
    pub max_vars_per_tenant: usize,
    /// Size of one variable's value, in bytes.
    #[arg(skip)]
    pub max_var_bytes: usize,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            operator_keys: Vec::new(),
            max_component_bytes: 32 << 20,
            sync_interval: Duration::from_secs(10),
            max_uploads_in_progress: 4,
            max_concurrent_compiles: 2,
            storage: StorageLimits::default(),
            secrets_key: None,
            max_vars_per_tenant: 100,
            max_var_bytes: 64 << 10,
        }
    }
}

/// Graceful drain: from SIGTERM (or `POST /admin/v1/drain`) the node
/// answers `/readyz` with 503 and refuses new connections; it keeps serving
/// its clients for the window, so that load balancers stop sending it any,
/// then closes them in batches with a Close that allows reconnecting, so
/// they come back on other nodes without stampeding them; then it exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct DrainSettings {
    /// How long a draining node keeps serving its clients before it moves
    /// them (0: at once); a node with no connection left ends it early.
    #[arg(long = "drain-window-ms", env = "HUBHOST_DRAIN_WINDOW_MS", required = false, value_parser = crate::millis::parse)]
    #[serde(rename = "window_ms", with = "crate::millis")]
    pub window: Duration,
    /// Connections closed per batch.
    #[arg(skip)]
    pub batch_size: usize,
    /// Pause between batches.
    #[arg(skip)]
    #[serde(rename = "batch_interval_ms", with = "crate::millis::positive")]
    pub batch_interval: Duration,
    /// How long the node waits, after moving its clients, for other nodes
    /// to take over its stateful-reconnect connections (it goes on as soon
    /// as none is left); one not taken by then ends with the node.
    #[arg(skip)]
    #[serde(rename = "handover_timeout_ms", with = "crate::millis")]
    pub handover_timeout: Duration,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(5),
            batch_size: 500,
            batch_interval: Duration::from_millis(100),
            handover_timeout: Duration::from_secs(5),
        }
    }
}

/// Cross-origin access to the hub endpoints (negotiate and the transports)
/// for browser clients served from another origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// An origin whose browser clients may connect (`https://host[:port]`, or
    /// `*` for any, mirrored since the official client sends credentials);
    /// repeatable. None: no cross-origin access.
    #[arg(
        long = "cors-origin",
        env = "HUBHOST_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer, in seconds.
    #[arg(skip)]
    pub max_age_secs: u64,
}

impl CorsSettings {
    /// The CORS layer of the hub endpoints; `None` when no origin is
    /// allowed.
    pub fn layer(&self) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
        cors::layer(self)
    }
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age_secs: 600,
        }
    }
}

/// One hub to serve: `tenant/hub` from a component file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub tenant: String,
    pub hub: String,
    pub path: PathBuf,
}

impl HubConfig {
    /// Parse the `--hub TENANT/HUB=PATH.wasm` form.
    pub fn parse_flag(spec: &str) -> anyhow::Result<Self> {
        let (name, path) = spec
            .split_once('=')
            .context("expected TENANT/HUB=PATH.wasm")?;
        let (tenant, hub) = name
            .split_once('/')
            .context("expected TENANT/HUB=PATH.wasm")?;
        HubKey::new(tenant, hub)?;
        Ok(Self {
            tenant: tenant.into(),
            hub: hub.into(),
            path: path.into(),
        })
    }
}

impl Config {
    /// Read a TOML configuration file over the defaults.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Check what no single field can check alone; normalizes the
    /// advertise URL. Every server start goes through here.
    pub fn checked(mut self) -> anyhow::Result<Self> {
        let c = &self.connection;
        if c.max_message_size == 0 || c.outbound_queue == 0 {
            bail!("connection.max_message_size and connection.outbound_queue must be at least 1");
        }
        if c.max_connections == 0 || c.max_pending_negotiations == 0 {
            bail!(
                "connection.max_connections and connection.max_pending_negotiations must be at least 1"
            );
        }
        if self.admin.max_uploads_in_progress == 0 || self.admin.max_concurrent_compiles == 0 {
            bail!(
                "admin.max_uploads_in_progress and admin.max_concurrent_compiles must be at least 1"
            );
        }
        if self.drain.batch_size == 0 {
            bail!("drain.batch_size must be at least 1");
        }
        if self.admin.max_component_bytes == 0 {
            bail!("admin.max_component_bytes must be at least 1");
        }
        if let Some(key) = &self.admin.secrets_key {
            crate::vars::SecretsKey::from_base64(key)?;
        }
        if c.client_timeout < 2 * c.keep_alive_interval {
            tracing::warn!(
                "client_timeout_ms is under twice keep_alive_interval_ms; clients may be timed out while idle"
            );
        }
        // Braces would change the Redis Cluster hash tags of every key and
        // channel (see backplane::channels).
        if self.cluster_prefix.is_empty()
            || self
                .cluster_prefix
                .contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            bail!("cluster_prefix must be non-empty and without spaces or braces");
        }
        if self.admin.operator_keys.iter().any(|k| k.len() < 16) {
            bail!("admin.operator_keys must be at least 16 characters each");
        }
        if let Some(url) = &self.advertise_url {
            let parsed = reqwest::Url::parse(url)
                .with_context(|| format!("advertise_url '{url}' is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                bail!("advertise_url '{url}' must be an http(s) URL with a host");
            }
            self.advertise_url = Some(url.trim_end_matches('/').to_owned());
        }
        for hub in &self.hubs {
            HubKey::new(&hub.tenant, &hub.hub)?;
        }
        self.cors.layer()?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_and_refuses_unknown_keys() -> anyhow::Result<()> {
        let config: Config = toml::from_str(
            r#"
            listen = "0.0.0.0:6000"
            [[hubs]]
            tenant = "demo"
            hub = "chat"
            path = "chat.wasm"
            [connection]
            max_message_size = 1024
            poll_timeout_ms = 2500
            "#,
        )?;
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.hubs[0].hub, "chat");
        let config = config.checked()?;
        assert_eq!(config.connection.max_message_size, 1024);
        assert_eq!(config.connection.poll_timeout, Duration::from_millis(2500));
        assert_eq!(
            config.connection.keep_alive_interval,
            Duration::from_secs(15)
        );
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
        let zero = toml::from_str::<Config>("[connection]\nkeep_alive_interval_ms = 0\n");
        assert!(zero.is_err_and(|e| e.to_string().contains("at least 1 millisecond")));
        Ok(())
    }

    #[test]
    fn parses_hub_flags() -> anyhow::Result<()> {
        let hub = HubConfig::parse_flag("acme/chat=/x/chat.wasm")?;
        assert_eq!((hub.tenant.as_str(), hub.hub.as_str()), ("acme", "chat"));
        assert!(HubConfig::parse_flag("acme-chat.wasm").is_err());
        assert!(HubConfig::parse_flag("Acme/chat=x.wasm").is_err());
        Ok(())
    }

    #[test]
    fn checks_the_advertise_url() -> anyhow::Result<()> {
        let config = Config {
            advertise_url: Some("http://10.0.0.5:5000/".into()),
            ..Config::default()
        }
        .checked()?;
        assert_eq!(
            config.advertise_url.as_deref(),
            Some("http://10.0.0.5:5000")
        );
        for bad in ["10.0.0.5:5000", "ftp://x", "nope"] {
            let config = Config {
                advertise_url: Some(bad.into()),
                ..Config::default()
            };
            assert!(config.checked().is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn a_cluster_prefix_has_no_braces_or_spaces() {
        for bad in ["", "a{b}", "a}", "a b"] {
            let config = Config {
                cluster_prefix: bad.into(),
                ..Config::default()
            };
            let error = config.checked().err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("without spaces or braces")),
                "{bad}: {error:?}"
            );
        }
    }
}
