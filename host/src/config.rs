//! Typed configuration: defaults, then a TOML file (`--config`), then
//! environment variables and flags (`HUBHOST_*` / `--…`), later ones winning.
//! Unknown keys in the file are errors, so a typo never goes unnoticed.

use crate::backplane::redis::RedisSettings;
use crate::connection::ConnectionLimits;
use crate::lifetime::{HubKey, LifetimeConfig};
use crate::runtime::HubLimits;
use crate::tenants::{TenantConfig, TenantDefaults, Tenants, key_digest};
use anyhow::{Context as _, bail};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The configuration file's shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Hubs to serve.
    pub hubs: Vec<HubConfig>,
    /// Directory of static files served under `/` (the demo page).
    pub static_dir: Option<PathBuf>,
    /// Directory for compiled components, so restarts do not recompile.
    pub cache_dir: Option<PathBuf>,
    /// Prefix of every backplane channel of this cluster.
    pub cluster_prefix: String,
    /// Redis URL for the backplane; none means the in-memory one (one node).
    pub redis_url: Option<String>,
    /// Backplane buffering and timing.
    pub backplane: BackplaneConfig,
    /// Protocol limits and timings.
    pub connection: ConnectionConfig,
    /// Limits of every hub call.
    pub hub_limits: HubLimitsConfig,
    /// Tenants: admin keys, client authentication, quotas and limits.
    pub tenants: HashMap<String, TenantConfig>,
    /// The admin API.
    pub admin: AdminConfig,
    /// Where uploaded hubs are kept on a node without Redis; without it (and
    /// without Redis) they last until the process exits.
    pub data_dir: Option<PathBuf>,
    /// Development: serve `DIR/TENANT/HUB.wasm` files, reloading on change.
    pub watch_dir: Option<PathBuf>,
    /// Browser clients on other origins.
    pub cors: CorsConfig,
    /// The URL other nodes reach this one at, for requests they pass on
    /// (`http://10.0.0.5:5000`). Default: `http://` and the listen address,
    /// unless that is a wildcard (0.0.0.0, ::), which names no host.
    pub advertise_url: Option<String>,
}

/// Cross-origin access to the hub endpoints (negotiate and the transports)
/// for browser clients served from another origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed, like `https://app.example.com`; `*` allows any origin
    /// (mirrored, since the official client sends credentials). Empty: no
    /// cross-origin access.
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer, in seconds.
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            max_age_secs: 600,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            hubs: Vec::new(),
            static_dir: None,
            cache_dir: None,
            cluster_prefix: "hubhost".into(),
            redis_url: None,
            backplane: BackplaneConfig::default(),
            connection: ConnectionConfig::default(),
            hub_limits: HubLimitsConfig::default(),
            tenants: HashMap::new(),
            admin: AdminConfig::default(),
            data_dir: None,
            watch_dir: None,
            cors: CorsConfig::default(),
            advertise_url: None,
        }
    }
}

/// The admin API (`/admin/v1/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Operator keys: they manage every tenant. Without any, only tenant keys work.
    pub operator_keys: Vec<String>,
    /// Largest component a tenant may upload unless its own limit says otherwise.
    pub max_component_bytes: usize,
    /// How often each node compares its hubs with the store, besides acting
    /// on announcements at once (this catches announcements missed while
    /// Redis was away).
    pub sync_interval_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            operator_keys: Vec::new(),
            max_component_bytes: 32 << 20,
            sync_interval_ms: 10_000,
        }
    }
}

/// One hub to serve: `tenant/hub` from a component file.
#[derive(Debug, Clone, Deserialize)]
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

/// Backplane buffering and timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackplaneConfig {
    /// Bytes of cross-node messages kept while Redis is unreachable.
    pub max_buffer_bytes: usize,
    /// How long a cross-node message may wait for Redis.
    pub max_buffer_age_ms: u64,
    /// After Redis returns, how long to wait before flushing the buffer.
    pub resubscribe_grace_ms: u64,
    /// How long a group change for a connection on another node may take.
    pub group_timeout_ms: u64,
    /// How often each node says it is alive; silent for three is dead.
    pub heartbeat_interval_ms: u64,
}

impl Default for BackplaneConfig {
    fn default() -> Self {
        let redis = RedisSettings::new("");
        Self {
            max_buffer_bytes: redis.max_buffer_bytes,
            max_buffer_age_ms: millis(redis.max_buffer_age),
            resubscribe_grace_ms: millis(redis.resubscribe_grace),
            group_timeout_ms: millis(LifetimeConfig::new("").group_timeout),
            heartbeat_interval_ms: millis(LifetimeConfig::new("").heartbeat_interval),
        }
    }
}

/// Protocol limits and timings; ASP.NET Core's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionConfig {
    pub handshake_timeout_ms: u64,
    pub keep_alive_interval_ms: u64,
    pub client_timeout_ms: u64,
    pub max_message_size: usize,
    pub outbound_queue: usize,
    pub send_timeout_ms: u64,
    pub disconnect_timeout_ms: u64,
    /// How long a long poll waits for messages before answering empty.
    pub poll_timeout_ms: u64,
    /// Messages per second one connection may send; 0 means no limit.
    pub max_messages_per_second: u32,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        let d = ConnectionLimits::default();
        Self {
            handshake_timeout_ms: millis(d.handshake_timeout),
            keep_alive_interval_ms: millis(d.keep_alive_interval),
            client_timeout_ms: millis(d.client_timeout),
            max_message_size: d.max_message_size,
            outbound_queue: d.outbound_capacity,
            send_timeout_ms: millis(d.send_timeout),
            disconnect_timeout_ms: 15_000,
            poll_timeout_ms: 90_000,
            max_messages_per_second: 0,
        }
    }
}

/// Limits of every hub call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubLimitsConfig {
    pub memory_bytes: usize,
    pub call_timeout_ms: u64,
    pub max_sends_per_call: u32,
    pub max_log_lines_per_call: u32,
    pub max_result_bytes: usize,
    pub reuse_instances: bool,
    pub max_instances: usize,
    pub max_tables: usize,
    pub max_memories: usize,
    pub max_table_elements: usize,
}

impl Default for HubLimitsConfig {
    fn default() -> Self {
        let d = HubLimits::default();
        Self {
            memory_bytes: d.memory_bytes,
            call_timeout_ms: millis(d.call_timeout),
            max_sends_per_call: d.max_sends_per_call,
            max_log_lines_per_call: d.max_log_lines_per_call,
            max_result_bytes: d.max_result_bytes,
            reuse_instances: d.reuse_instances,
            max_instances: d.max_instances,
            max_tables: d.max_tables,
            max_memories: d.max_memories,
            max_table_elements: d.max_table_elements,
        }
    }
}

impl HubLimitsConfig {
    fn limits(&self) -> HubLimits {
        HubLimits {
            memory_bytes: self.memory_bytes,
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            max_sends_per_call: self.max_sends_per_call,
            max_log_lines_per_call: self.max_log_lines_per_call,
            max_result_bytes: self.max_result_bytes,
            reuse_instances: self.reuse_instances,
            max_instances: self.max_instances,
            max_tables: self.max_tables,
            max_memories: self.max_memories,
            max_table_elements: self.max_table_elements,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The settings the server runs with, checked and in their working types.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lifetime: LifetimeConfig,
    /// The Redis backplane, if configured.
    pub redis: Option<RedisSettings>,
    pub connection: ConnectionLimits,
    /// How long a negotiated connection may wait for its transport, and a
    /// long-polling connection for its next poll.
    pub disconnect_timeout: Duration,
    /// How long a long poll waits for messages.
    pub poll_timeout: Duration,
    /// Where other nodes reach this one, if configured; else derived from
    /// the bound address (see [`Config::advertise_url`]).
    pub advertise_url: Option<String>,
    /// Largest WebSocket message accepted; above the protocol's message limit
    /// because one WebSocket message may carry a batch of messages.
    pub max_websocket_message: usize,
    /// Global hub limits; see `tenants` for each tenant's.
    pub hub_limits: HubLimits,
    pub tenants: Tenants,
    /// Digests of the operator keys.
    pub operator_keys: Vec<[u8; 32]>,
    pub sync_interval: Duration,
    pub static_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub watch_dir: Option<PathBuf>,
    /// CORS for the hub endpoints, if any origin is allowed.
    pub cors: Option<tower_http::cors::CorsLayer>,
}

impl Config {
    /// Read a TOML configuration file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Check the values and derive the runtime settings.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let c = &self.connection;
        if c.max_message_size == 0 || c.outbound_queue == 0 {
            bail!("connection.max_message_size and connection.outbound_queue must be at least 1");
        }
        for (name, value) in [
            ("handshake_timeout_ms", c.handshake_timeout_ms),
            ("admin.sync_interval_ms", self.admin.sync_interval_ms),
            (
                "admin.max_component_bytes",
                self.admin.max_component_bytes as u64,
            ),
            ("keep_alive_interval_ms", c.keep_alive_interval_ms),
            ("client_timeout_ms", c.client_timeout_ms),
            ("send_timeout_ms", c.send_timeout_ms),
            ("disconnect_timeout_ms", c.disconnect_timeout_ms),
            ("poll_timeout_ms", c.poll_timeout_ms),
            (
                "backplane.heartbeat_interval_ms",
                self.backplane.heartbeat_interval_ms,
            ),
            (
                "hub_limits.call_timeout_ms",
                self.hub_limits.call_timeout_ms,
            ),
            (
                "backplane.group_timeout_ms",
                self.backplane.group_timeout_ms,
            ),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if c.client_timeout_ms < 2 * c.keep_alive_interval_ms {
            tracing::warn!(
                "client_timeout_ms is under twice keep_alive_interval_ms; clients may be timed out while idle"
            );
        }
        if self.cluster_prefix.is_empty() || self.cluster_prefix.contains(char::is_whitespace) {
            bail!("cluster_prefix must be non-empty and without spaces");
        }
        let b = &self.backplane;
        let redis = self.redis_url.as_ref().map(|url| RedisSettings {
            url: url.clone(),
            max_buffer_bytes: b.max_buffer_bytes,
            max_buffer_age: Duration::from_millis(b.max_buffer_age_ms),
            resubscribe_grace: Duration::from_millis(b.resubscribe_grace_ms),
            ..RedisSettings::new(url.clone())
        });
        let lifetime = LifetimeConfig {
            group_timeout: Duration::from_millis(b.group_timeout_ms),
            heartbeat_interval: Duration::from_millis(b.heartbeat_interval_ms),
            ..LifetimeConfig::new(&self.cluster_prefix)
        };
        if self.admin.operator_keys.iter().any(|k| k.len() < 16) {
            bail!("admin.operator_keys must be at least 16 characters each");
        }
        let hub_limits = self.hub_limits.limits();
        let max_messages_per_second = Some(c.max_messages_per_second).filter(|rate| *rate > 0);
        Ok(Settings {
            lifetime,
            redis,
            connection: ConnectionLimits {
                handshake_timeout: Duration::from_millis(c.handshake_timeout_ms),
                keep_alive_interval: Duration::from_millis(c.keep_alive_interval_ms),
                client_timeout: Duration::from_millis(c.client_timeout_ms),
                max_message_size: c.max_message_size,
                outbound_capacity: c.outbound_queue,
                send_timeout: Duration::from_millis(c.send_timeout_ms),
                max_messages_per_second,
            },
            disconnect_timeout: Duration::from_millis(c.disconnect_timeout_ms),
            poll_timeout: Duration::from_millis(c.poll_timeout_ms),
            advertise_url: self.advertise_url()?,
            max_websocket_message: c.max_message_size.saturating_mul(16).max(1 << 20),
            tenants: Tenants::new(
                TenantDefaults {
                    hub_limits: hub_limits.clone(),
                    max_messages_per_second,
                    max_component_bytes: self.admin.max_component_bytes,
                },
                self.tenants.clone(),
            )?,
            operator_keys: self
                .admin
                .operator_keys
                .iter()
                .map(|k| key_digest(k))
                .collect(),
            sync_interval: Duration::from_millis(self.admin.sync_interval_ms),
            hub_limits,
            static_dir: self.static_dir.clone(),
            cache_dir: self.cache_dir.clone(),
            data_dir: self.data_dir.clone(),
            watch_dir: self.watch_dir.clone(),
            cors: crate::transport::cors::layer(&self.cors)?,
        })
    }
}

impl Config {
    /// The URL to advertise to other nodes, checked.
    fn advertise_url(&self) -> anyhow::Result<Option<String>> {
        if let Some(url) = &self.advertise_url {
            let parsed = reqwest::Url::parse(url)
                .with_context(|| format!("advertise_url '{url}' is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                bail!("advertise_url '{url}' must be an http(s) URL with a host");
            }
            return Ok(Some(url.trim_end_matches('/').to_owned()));
        }
        Ok(None)
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
            "#,
        )?;
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.hubs[0].hub, "chat");
        let settings = config.settings()?;
        assert_eq!(settings.connection.max_message_size, 1024);
        assert_eq!(
            settings.connection.keep_alive_interval,
            Duration::from_secs(15)
        );
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
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
}
