//! Per-tenant settings and quotas: overrides of the hub limits, the most
//! connections a tenant may hold on a node, and the most messages per second
//! each of its connections may send.

use crate::lifetime::HubKey;
use crate::runtime::HubLimits;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A tenant's section of the configuration file (`[tenants.NAME]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Connections the tenant may hold at once on one node.
    pub max_connections: Option<usize>,
    /// Messages per second one connection may send (overrides the global one).
    pub max_messages_per_second: Option<u32>,
    /// Hub limits that differ from the global ones.
    pub hub_limits: HubLimitsOverride,
}

/// Hub limits of one tenant; unset ones are the global ones.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubLimitsOverride {
    pub memory_bytes: Option<usize>,
    pub call_timeout_ms: Option<u64>,
    pub max_sends_per_call: Option<u32>,
    pub max_log_lines_per_call: Option<u32>,
    pub max_result_bytes: Option<usize>,
    pub max_instances: Option<usize>,
    pub max_tables: Option<usize>,
    pub max_memories: Option<usize>,
    pub max_table_elements: Option<usize>,
}

impl HubLimitsOverride {
    /// `base` with this tenant's values in place.
    pub fn apply(&self, base: &HubLimits) -> HubLimits {
        HubLimits {
            memory_bytes: self.memory_bytes.unwrap_or(base.memory_bytes),
            call_timeout: self
                .call_timeout_ms
                .map_or(base.call_timeout, Duration::from_millis),
            max_sends_per_call: self.max_sends_per_call.unwrap_or(base.max_sends_per_call),
            max_log_lines_per_call: self
                .max_log_lines_per_call
                .unwrap_or(base.max_log_lines_per_call),
            max_result_bytes: self.max_result_bytes.unwrap_or(base.max_result_bytes),
            reuse_instances: base.reuse_instances,
            max_instances: self.max_instances.unwrap_or(base.max_instances),
            max_tables: self.max_tables.unwrap_or(base.max_tables),
            max_memories: self.max_memories.unwrap_or(base.max_memories),
            max_table_elements: self.max_table_elements.unwrap_or(base.max_table_elements),
        }
    }
}

/// One tenant's effective settings.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub max_connections: Option<usize>,
    pub max_messages_per_second: Option<u32>,
    pub hub_limits: HubLimits,
}

/// Every tenant's settings, with the global ones for tenants not named.
#[derive(Debug, Clone)]
pub struct TenantTable {
    default: TenantSettings,
    named: HashMap<String, TenantSettings>,
}

impl TenantTable {
    pub fn new(
        hub_limits: &HubLimits,
        max_messages_per_second: Option<u32>,
        tenants: &HashMap<String, TenantConfig>,
    ) -> anyhow::Result<Self> {
        let default = TenantSettings {
            max_connections: None,
            max_messages_per_second,
            hub_limits: hub_limits.clone(),
        };
        let mut named = HashMap::new();
        for (name, config) in tenants {
            // Tenant names follow the same rule as in URLs.
            HubKey::new(name, "x")?;
            if config.max_messages_per_second == Some(0) {
                anyhow::bail!("tenants.{name}.max_messages_per_second must be at least 1");
            }
            let settings = TenantSettings {
                max_connections: config.max_connections,
                max_messages_per_second: config.max_messages_per_second.or(max_messages_per_second),
                hub_limits: config.hub_limits.apply(hub_limits),
            };
            named.insert(name.clone(), settings);
        }
        Ok(Self { default, named })
    }

    pub fn get(&self, tenant: &str) -> &TenantSettings {
        self.named.get(tenant).unwrap_or(&self.default)
    }
}

/// A tenant is at its connection limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Tenant '{tenant}' has reached its limit of {limit} connections.")]
pub struct ConnectionQuota {
    pub tenant: String,
    pub limit: usize,
}

/// Open connections per tenant on this node.
#[derive(Debug, Default, Clone)]
pub struct ConnectionCounts {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One admitted connection; the count goes down when it is dropped.
#[derive(Debug)]
pub struct Admission {
    counts: ConnectionCounts,
    tenant: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        if let Some(count) = open.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

impl ConnectionCounts {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // Single increments and decrements: never inconsistent.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `tenant` could open one more connection (negotiate's early answer).
    pub fn check(&self, tenant: &str, limit: Option<usize>) -> Result<(), ConnectionQuota> {
        match limit {
            Some(limit) if self.open(tenant) >= limit => Err(ConnectionQuota {
                tenant: tenant.to_owned(),
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Count one more connection of `tenant`, unless that passes `limit`.
    pub fn admit(&self, tenant: &str, limit: Option<usize>) -> Result<Admission, ConnectionQuota> {
        let mut open = self.lock();
        let count = open.entry(tenant.to_owned()).or_default();
        if limit.is_some_and(|limit| *count >= limit) {
            return Err(ConnectionQuota {
                tenant: tenant.to_owned(),
                limit: limit.unwrap_or(0),
            });
        }
        *count += 1;
        Ok(Admission {
            counts: self.clone(),
            tenant: tenant.to_owned(),
        })
    }

    /// Open connections of `tenant`.
    pub fn open(&self, tenant: &str) -> usize {
        self.lock().get(tenant).copied().unwrap_or(0)
    }
}

/// A token bucket: `rate` messages a second, bursts of up to `rate`.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl RateLimit {
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate,
            last: tokio::time::Instant::now(),
        }
    }

    /// Take one token; false when the sender is over its rate.
    pub fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_limits_connections() {
        let counts = ConnectionCounts::default();
        let first = counts.admit("t", Some(2));
        let second = counts.admit("t", Some(2));
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(
            counts.check("t", Some(2)).map_err(|e| e.to_string()),
            Err("Tenant 't' has reached its limit of 2 connections.".to_owned())
        );
        assert!(counts.admit("t", Some(2)).is_err());
        assert!(
            counts.admit("other", Some(2)).is_ok(),
            "tenants are counted apart"
        );
        drop(first);
        assert_eq!(counts.open("t"), 1);
        assert!(counts.admit("t", Some(2)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refills_over_time() {
        let mut limit = RateLimit::new(3);
        assert!(limit.allow() && limit.allow() && limit.allow());
        assert!(!limit.allow(), "a burst is capped at the rate");
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(limit.allow(), "a third of a second buys one message");
        assert!(!limit.allow());
    }

    #[test]
    fn tenant_overrides_fall_back_to_the_global_values() -> anyhow::Result<()> {
        let mut tenants = HashMap::new();
        let config: TenantConfig =
            toml::from_str("max_connections = 5\n[hub_limits]\ncall_timeout_ms = 100\n")?;
        tenants.insert("acme".to_owned(), config);
        let table = TenantTable::new(&HubLimits::default(), Some(50), &tenants)?;
        let acme = table.get("acme");
        assert_eq!(acme.max_connections, Some(5));
        assert_eq!(acme.max_messages_per_second, Some(50));
        assert_eq!(acme.hub_limits.call_timeout, Duration::from_millis(100));
        assert_eq!(
            acme.hub_limits.memory_bytes,
            HubLimits::default().memory_bytes
        );
        assert_eq!(table.get("other").max_connections, None);
        assert!(
            TenantTable::new(
                &HubLimits::default(),
                None,
                &HashMap::from([("Bad".to_owned(), TenantConfig::default())])
            )
            .is_err()
        );
        Ok(())
    }
}
