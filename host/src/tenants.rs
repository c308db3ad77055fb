//! Tenants: who may manage which hubs, how their clients authenticate, and
//! their limits.
//!
//! A tenant is declared in the configuration file (`[tenants.NAME]`) or
//! through the admin API by an operator (kept in the hub store, so every node
//! sees it). Declared tenants cannot be changed through the API. A tenant
//! named only by a hub (`--hub demo/chat=…`) gets the global settings:
//! anonymous clients, managed by operator keys alone.
//!
//! Tenants are isolated by name: every backplane channel of a tenant sits
//! under `{cluster}:{tenant}:` (see [`crate::backplane::channels`]), and every
//! connection, group and user is scoped to one hub of one tenant.

use crate::auth::{AuthConfig, Authenticator};
use crate::ids::hex;
use crate::names::check_tenant;
use crate::runtime::HubLimits;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// A tenant's section of the configuration file (`[tenants.NAME]`), and the
/// body of `PUT /admin/v1/tenants/NAME`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Admin API keys of this tenant, in plain text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin_keys: Vec<String>,
    /// Admin API keys as SHA-256 digests in hex (what the API stores).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admin_key_sha256: Vec<String>,
    /// How the tenant's clients authenticate.
    pub auth: AuthConfig,
    /// Largest component the tenant may upload, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_component_bytes: Option<usize>,
    /// Connections the tenant may hold at once on one node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Messages per second one connection may send (overrides the global one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages_per_second: Option<u32>,
    /// Hub limits that differ from the global ones (`[hub_limits]` keys).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub hub_limits: serde_json::Map<String, serde_json::Value>,
    /// Storage limits that differ from the global ones (`[admin.storage]`
    /// keys).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub storage: serde_json::Map<String, serde_json::Value>,
}

/// What a tenant may keep in the hub store (Redis, or the data directory)
/// and, through it, in every node's memory and compiled-code cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageLimits {
    /// Hubs the tenant may have in the store.
    pub max_hubs: usize,
    /// Versions kept per hub: past it an upload prunes the oldest, never
    /// the active one, the one before it (a rollback's target) or the new one.
    pub max_versions: usize,
    /// Bytes of components the tenant may keep, every version of every hub.
    pub max_stored_bytes: u64,
}

impl Default for StorageLimits {
    fn default() -> Self {
        Self {
            max_hubs: 100,
            max_versions: 10,
            max_stored_bytes: 512 << 20,
        }
    }
}

impl TenantConfig {
    /// The same tenant with its plain-text keys replaced by their digests,
    /// for storing.
    pub fn hashed(mut self) -> Self {
        for key in std::mem::take(&mut self.admin_keys) {
            self.admin_key_sha256.push(hex(&key_digest(&key)));
        }
        self
    }
}

/// The SHA-256 digest of an admin key. Keys are compared by digest, so a
/// comparison's timing says nothing about the key.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal digests, in time independent of where they differ.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `base` with the keys of `overrides` in place: the same keys and units as
/// the `[hub_limits]` section (unknown keys and wrong types are errors), so
/// a limit is defined once, in [`HubLimits`].
pub fn overlay<T: Serialize + serde::de::DeserializeOwned>(
    base: &T,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, serde_json::Error> {
    let mut value = serde_json::to_value(base)?;
    if let serde_json::Value::Object(fields) = &mut value {
        fields.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    serde_json::from_value(value)
}

/// Where a tenant was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The configuration file; read-only through the API.
    Config,
    /// The admin API (kept in the hub store).
    Api,
    /// Not defined anywhere: the global settings.
    Default,
}

/// One tenant's effective settings.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub origin: Origin,
    pub max_connections: Option<usize>,
    pub max_messages_per_second: Option<u32>,
    pub max_component_bytes: usize,
    pub hub_limits: HubLimits,
    pub storage: StorageLimits,
    pub auth: Authenticator,
    /// Digests of the tenant's admin keys.
    pub admin_keys: Vec<[u8; 32]>,
}

/// The settings a tenant has unless it says otherwise.
#[derive(Debug, Clone)]
pub struct TenantDefaults {
    pub hub_limits: HubLimits,
    pub max_messages_per_second: Option<u32>,
    pub max_component_bytes: usize,
    pub storage: StorageLimits,
}

impl TenantDefaults {
    fn settings(&self, origin: Origin, config: &TenantConfig) -> anyhow::Result<TenantSettings> {
        if config.hub_limits.contains_key("reuse_instances") {
            anyhow::bail!("hub_limits.reuse_instances is node-wide: set it in [hub_limits]");
        }
        if config.max_messages_per_second == Some(0) {
            anyhow::bail!("max_messages_per_second must be at least 1");
        }
        let mut admin_keys: Vec<[u8; 32]> =
            config.admin_keys.iter().map(|k| key_digest(k)).collect();
        for hex in &config.admin_key_sha256 {
            admin_keys.push(from_hex(hex).ok_or_else(|| {
                anyhow::anyhow!("admin_key_sha256 entries must be 64 hex digits")
            })?);
        }
        if config.admin_keys.iter().any(|k| k.len() < 16) {
            anyhow::bail!("admin keys must be at least 16 characters");
        }
        Ok(TenantSettings {
            origin,
            max_connections: config.max_connections,
            max_messages_per_second: config
                .max_messages_per_second
                .or(self.max_messages_per_second),
            max_component_bytes: config
                .max_component_bytes
                .unwrap_or(self.max_component_bytes),
            hub_limits: overlay(&self.hub_limits, &config.hub_limits)
                .map_err(|e| anyhow::anyhow!("hub_limits: {e}"))?,
            storage: overlay(&self.storage, &config.storage)
                .map_err(|e| anyhow::anyhow!("storage: {e}"))?,
            auth: Authenticator::new(&config.auth)?,
            admin_keys,
        })
    }
}

/// Every tenant's settings at one moment.
#[derive(Debug, Clone)]
pub struct TenantTable {
    default: TenantSettings,
    named: HashMap<String, TenantSettings>,
}

impl TenantTable {
    pub fn get(&self, tenant: &str) -> &TenantSettings {
        self.named.get(tenant).unwrap_or(&self.default)
    }

    /// Defined tenants, by name.
    pub fn named(&self) -> impl Iterator<Item = (&str, &TenantSettings)> {
        self.named
            .iter()
            .map(|(name, settings)| (name.as_str(), settings))
    }

    /// The tenant an admin key belongs to.
    pub fn admin_key_owner(&self, digest: &[u8; 32]) -> Option<&str> {
        // Every key is compared: no early exit on the first match.
        self.named
            .iter()
            .filter(|(_, t)| t.admin_keys.iter().any(|k| digests_equal(k, digest)))
            .map(|(name, _)| name.as_str())
            .last()
    }
}

/// The live tenant table: the declared tenants plus those the API stored,
/// swapped atomically when the stored ones change.
#[derive(Clone)]
pub struct Tenants {
    defaults: Arc<TenantDefaults>,
    declared: Arc<HashMap<String, TenantConfig>>,
    table: Arc<ArcSwap<TenantTable>>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field("table", &self.current())
            .finish()
    }
}

impl Tenants {
    /// The declared tenants; errors name the tenant at fault.
    pub fn new(
        defaults: TenantDefaults,
        declared: HashMap<String, TenantConfig>,
    ) -> anyhow::Result<Self> {
        let table = build(&defaults, &declared, &HashMap::new())?;
        Ok(Self {
            defaults: Arc::new(defaults),
            declared: Arc::new(declared),
            table: Arc::new(ArcSwap::from_pointee(table)),
        })
    }

    /// The table now.
    pub fn current(&self) -> Arc<TenantTable> {
        self.table.load_full()
    }

    pub fn is_declared(&self, tenant: &str) -> bool {
        self.declared.contains_key(tenant)
    }

    /// Check a tenant the API is about to store.
    pub fn check(&self, tenant: &str, config: &TenantConfig) -> anyhow::Result<()> {
        check_tenant(tenant)?;
        self.defaults.settings(Origin::Api, config).map(drop)
    }

    /// Take the API's tenants as they are now stored. One that no longer
    /// checks out (a key file gone, say) is left out and logged.
    pub fn set_stored(&self, stored: &HashMap<String, TenantConfig>) {
        let mut valid = HashMap::new();
        for (name, config) in stored {
            if self.declared.contains_key(name) {
                tracing::warn!(
                    tenant = name,
                    "stored tenant ignored: the configuration file declares it"
                );
            } else if let Err(error) = self.check(name, config) {
                tracing::error!(tenant = name, "stored tenant ignored: {error:#}");
            } else {
                valid.insert(name.clone(), config.clone());
            }
        }
        match build(&self.defaults, &self.declared, &valid) {
            Ok(table) => self.table.store(Arc::new(table)),
            Err(error) => tracing::error!("tenant table not updated: {error:#}"),
        }
    }
}

fn build(
    defaults: &TenantDefaults,
    declared: &HashMap<String, TenantConfig>,
    stored: &HashMap<String, TenantConfig>,
) -> anyhow::Result<TenantTable> {
    let mut named = HashMap::new();
    for (origin, tenants) in [(Origin::Config, declared), (Origin::Api, stored)] {
        for (name, config) in tenants {
            // Tenant names follow the same rule as in URLs.
            check_tenant(name)?;
            let settings = defaults
                .settings(origin, config)
                .map_err(|e| anyhow::anyhow!("tenants.{name}: {e:#}"))?;
            named.insert(name.clone(), settings);
        }
    }
    let default = defaults.settings(Origin::Default, &TenantConfig::default())?;
    Ok(TenantTable { default, named })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn defaults() -> TenantDefaults {
        TenantDefaults {
            hub_limits: HubLimits::default(),
            max_messages_per_second: Some(50),
            max_component_bytes: 1000,
            storage: StorageLimits::default(),
        }
    }

    #[test]
    fn tenant_overrides_fall_back_to_the_global_values() -> anyhow::Result<()> {
        let config: TenantConfig = toml::from_str(
            "max_connections = 5\nadmin_keys = [\"acme-key-0123456789\"]\n[hub_limits]\ncall_timeout_ms = 100\n",
        )?;
        let tenants = Tenants::new(defaults(), HashMap::from([("acme".to_owned(), config)]))?;
        let table = tenants.current();
        let acme = table.get("acme");
        assert_eq!(acme.origin, Origin::Config);
        assert_eq!(acme.max_connections, Some(5));
        assert_eq!(acme.max_messages_per_second, Some(50));
        assert_eq!(acme.max_component_bytes, 1000);
        assert_eq!(acme.hub_limits.call_timeout, Duration::from_millis(100));
        assert_eq!(
            acme.hub_limits.memory_bytes,
            HubLimits::default().memory_bytes
        );
        assert_eq!(table.get("other").origin, Origin::Default);
        assert_eq!(
            table.admin_key_owner(&key_digest("acme-key-0123456789")),
            Some("acme")
        );
        assert_eq!(
            table.admin_key_owner(&key_digest("acme-key-012345678")),
            None
        );
        let unknown_limit: TenantConfig = toml::from_str("[hub_limits]\ncall_timeout = 100\n")?;
        let error = Tenants::new(defaults(), HashMap::from([("t".to_owned(), unknown_limit)]))
            .err()
            .map(|e| format!("{e:#}"));
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("unknown field `call_timeout`")),
            "{error:?}"
        );
        let bad = HashMap::from([("Bad".to_owned(), TenantConfig::default())]);
        assert!(Tenants::new(defaults(), bad).is_err());
        let short_key = TenantConfig {
            admin_keys: vec!["short".into()],
            ..TenantConfig::default()
        };
        assert!(Tenants::new(defaults(), HashMap::from([("t".to_owned(), short_key)])).is_err());
        Ok(())
    }

    #[test]
    fn stored_tenants_keep_digests_and_never_replace_declared_ones() -> anyhow::Result<()> {
        let tenants = Tenants::new(
            defaults(),
            HashMap::from([("acme".to_owned(), TenantConfig::default())]),
        )?;
        let globex = TenantConfig {
            admin_keys: vec!["globex-key-0123456789".into()],
            ..TenantConfig::default()
        }
        .hashed();
        assert!(globex.admin_keys.is_empty());
        let json = serde_json::to_string(&globex)?;
        assert!(
            !json.contains("globex-key"),
            "stored form holds no plain key: {json}"
        );
        let takeover = TenantConfig {
            max_connections: Some(1),
            ..TenantConfig::default()
        };
        tenants.set_stored(&HashMap::from([
            ("globex".to_owned(), serde_json::from_str(&json)?),
            ("acme".to_owned(), takeover),
        ]));
        let table = tenants.current();
        assert_eq!(
            table.admin_key_owner(&key_digest("globex-key-0123456789")),
            Some("globex")
        );
        assert_eq!(table.get("globex").origin, Origin::Api);
        assert_eq!(
            table.get("acme").max_connections,
            None,
            "declared tenant kept"
        );
        Ok(())
    }
}
