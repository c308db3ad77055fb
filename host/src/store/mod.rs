//! The hub store: every uploaded component version, which version of each
//! hub is active, the tenants the admin API defined, and tenant variables.
//!
//! Two backends with the same guarantees:
//! - [`local::LocalStore`], for a node on its own: in memory, written
//!   through to a data directory when one is set (so uploads survive
//!   restarts);
//! - [`redis::RedisStore`], for a cluster: in the cluster's Redis, under
//!   `{cluster}:store:`, so every node — including one that starts later —
//!   reads the same state.
//!
//! Guarantees:
//! - a version is stored whole before it is listed, and listed before it can
//!   be activated: a node that learns of a version can always fetch it;
//! - version numbers of a hub only grow, and are never reused, even after a
//!   delete of the hub;
//! - the active version is the last entry of the hub's activation history;
//!   a rollback removes that entry, so the one before becomes active again;
//! - the store is the truth: nodes compare what they serve with it (on every
//!   announcement, and every sync interval), never with each other;
//! - compiled code in it (a Redis store's, for a few minutes after an
//!   upload) is a hint that saves compiles: nodes load it only once its MAC
//!   checks out, and compile when it is missing or refused.

pub mod local;
pub mod redis;

use crate::names::HubKey;
use crate::runtime::SharedCode;
use crate::tenants::TenantConfig;
use crate::vars::StoredVar;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Activations remembered per hub (how far rollbacks can go).
pub const MAX_HISTORY: usize = 64;

/// One stored version of a hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    /// SHA-256 of the component, in hex.
    pub sha256: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub uploaded_at_ms: u64,
}

impl VersionInfo {
    pub fn new(version: u64, bytes: &[u8]) -> Self {
        Self {
            version,
            sha256: crate::ids::sha256_hex(bytes),
            size: bytes.len() as u64,
            uploaded_at_ms: crate::millis::unix_now(),
        }
    }
}

/// What the store holds for one hub.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubRecord {
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
    /// Activations, oldest first; the last is the active version.
    pub history: Vec<u64>,
}

impl HubRecord {
    pub fn active(&self) -> Option<u64> {
        self.history.last().copied()
    }

    /// Bytes of every stored version.
    pub fn stored_bytes(&self) -> u64 {
        self.versions.iter().map(|v| v.size).sum()
    }

    /// The versions to prune so that at most `keep` remain: the oldest,
    /// never the active one, the one a rollback would return to, or the
    /// newest (just uploaded, perhaps to be activated next).
    pub fn prunable(&self, keep: usize) -> Vec<u64> {
        let mut protected: Vec<u64> = self.history.iter().rev().take(2).copied().collect();
        protected.extend(self.versions.last().map(|v| v.version));
        let excess = self.versions.len().saturating_sub(keep);
        self.versions
            .iter()
            .map(|v| v.version)
            .filter(|v| !protected.contains(v))
            .take(excess)
            .collect()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such hub")]
    NoSuchHub,
    #[error("no version {0} of this hub")]
    NoSuchVersion(u64),
    #[error("no earlier version to roll back to")]
    NoEarlierVersion,
    #[error("the hub store is unavailable: {0}")]
    Unavailable(String),
}

/// The store of this node.
pub enum HubStore {
    Local(local::LocalStore),
    Redis(redis::RedisStore),
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            HubStore::Local($store) => $call.await,
            HubStore::Redis($store) => $call.await,
        }
    };
}

impl HubStore {
    /// Store `bytes` as the next version of `key`, and make it active if asked.
    pub async fn add_version(
        &self,
        key: &HubKey,
        bytes: &[u8],
        activate: bool,
    ) -> Result<VersionInfo, StoreError> {
        delegate!(self, s => s.add_version(key, bytes, activate))
    }

    /// Make stored version `version` the active one.
    pub async fn activate(&self, key: &HubKey, version: u64) -> Result<(), StoreError> {
        delegate!(self, s => s.activate(key, version))
    }

    /// Make the previously active version active again; returns it.
    pub async fn rollback(&self, key: &HubKey) -> Result<u64, StoreError> {
        delegate!(self, s => s.rollback(key))
    }

    /// The record of one hub, if it exists.
    pub async fn hub(&self, key: &HubKey) -> Result<Option<HubRecord>, StoreError> {
        delegate!(self, s => s.hub(key))
    }

    /// Every stored hub.
    pub async fn hubs(&self) -> Result<Vec<HubKey>, StoreError> {
        delegate!(self, s => s.hubs())
    }

    /// The component of one version.
    pub async fn bytes(&self, key: &HubKey, version: u64) -> Result<Vec<u8>, StoreError> {
        delegate!(self, s => s.bytes(key, version))
    }

    /// Forget stored versions of `key` (pruning); the active one is never
    /// among them (the caller's rule), and unknown numbers are ignored.
    pub async fn remove_versions(&self, key: &HubKey, versions: &[u64]) -> Result<(), StoreError> {
        delegate!(self, s => s.remove_versions(key, versions))
    }

    /// Forget a hub and all its versions; false if there was none.
    pub async fn delete_hub(&self, key: &HubKey) -> Result<bool, StoreError> {
        delegate!(self, s => s.delete_hub(key))
    }

    /// The tenants the API defined.
    pub async fn tenants(&self) -> Result<HashMap<String, TenantConfig>, StoreError> {
        delegate!(self, s => s.tenants())
    }

    /// Define or replace a tenant (keys already hashed).
    pub async fn put_tenant(&self, name: &str, config: &TenantConfig) -> Result<(), StoreError> {
        delegate!(self, s => s.put_tenant(name, config))
    }

    /// Forget a tenant's definition; false if there was none.
    pub async fn delete_tenant(&self, name: &str) -> Result<bool, StoreError> {
        delegate!(self, s => s.delete_tenant(name))
    }

    /// Every tenant's variables, by tenant and name (secrets sealed).
    pub async fn vars(&self) -> Result<HashMap<String, HashMap<String, StoredVar>>, StoreError> {
        delegate!(self, s => s.vars())
    }

    /// Set a tenant's variable (a secret already sealed).
    pub async fn put_var(
        &self,
        tenant: &str,
        name: &str,
        var: &StoredVar,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.put_var(tenant, name, var))
    }

    /// Keep `code`, the compiled code of the tenant's newest upload, for
    /// `ttl`, in place of any the tenant had (one per tenant, so what a
    /// tenant has here is bounded; see `deploy`). A node alone keeps none:
    /// it has nobody to give it to.
    pub async fn put_code(
        &self,
        tenant: &str,
        code: &SharedCode,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.put_code(tenant, code, ttl))
    }

    /// The tenant's compiled code, if it is of the component whose SHA-256
    /// is `sha256` (and by the compiler named `tier`, if given; its bytes
    /// are read only then). Unchecked: see
    /// [`crate::runtime::Runtime::load_shared`].
    pub async fn code(
        &self,
        tenant: &str,
        sha256: &str,
        tier: Option<&str>,
    ) -> Result<Option<SharedCode>, StoreError> {
        delegate!(self, s => s.code(tenant, sha256, tier))
    }

    /// The compiler (tier) of the tenant's compiled code, if it is of the
    /// component whose SHA-256 is `sha256`; the code itself is not read.
    pub async fn code_tier(
        &self,
        tenant: &str,
        sha256: &str,
    ) -> Result<Option<String>, StoreError> {
        delegate!(self, s => s.code_tier(tenant, sha256))
    }

    /// Forget the tenant's compiled code.
    pub async fn delete_code(&self, tenant: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.delete_code(tenant))
    }

    /// Remove a tenant's variable; false if there was none.
    pub async fn delete_var(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        delegate!(self, s => s.delete_var(tenant, name))
    }
}

/// `tenant/hub`, as hub lists store it.
fn hub_name(key: &HubKey) -> String {
    format!("{}/{}", key.tenant(), key.hub())
}

fn parse_hub_name(name: &str) -> Option<HubKey> {
    let (tenant, hub) = name.split_once('/')?;
    HubKey::new(tenant, hub).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(versions: &[u64], history: &[u64]) -> HubRecord {
        HubRecord {
            versions: versions
                .iter()
                .map(|&v| VersionInfo::new(v, b"x"))
                .collect(),
            history: history.to_vec(),
        }
    }

    #[test]
    fn pruning_spares_the_active_the_previous_and_the_newest() {
        assert_eq!(record(&[1, 2, 3, 4], &[1]).prunable(3), [2]);
        assert_eq!(record(&[1, 2, 3, 4, 5], &[1, 3]).prunable(3), [2, 4]);
        assert_eq!(record(&[1, 2, 3], &[2, 1]).prunable(1), Vec::<u64>::new());
        assert_eq!(record(&[1, 2], &[]).prunable(5), Vec::<u64>::new());
    }
}
