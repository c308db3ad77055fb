//! What a tenant may keep in the store ([`StorageLimits`]): the checks of
//! an upload, and the pruning of old versions after it.

use super::{DeployError, Deployer};
use crate::names::HubKey;
use crate::store::{HubRecord, VersionInfo};
use crate::tenants::StorageLimits;
use std::collections::HashSet;

impl Deployer {
    /// Whether the tenant of `key` may store one more component of `size`
    /// bytes, counting the versions the upload will prune; if so, the bytes
    /// the tenant's components will take then.
    pub(super) async fn check_storage(
        &self,
        key: &HubKey,
        size: u64,
        limits: StorageLimits,
    ) -> Result<u64, DeployError> {
        let mut hubs = 0;
        let mut stored = 0u64;
        let mut exists = false;
        for other in self.store.hubs().await? {
            if other.tenant() != key.tenant() {
                continue;
            }
            hubs += 1;
            let Some(mut record) = self.store.hub(&other).await? else {
                continue;
            };
            if other == *key {
                exists = true;
                // As it will be: the new version in, the prunable ones out.
                record.versions.push(VersionInfo {
                    version: u64::MAX,
                    sha256: String::new(),
                    size,
                    uploaded_at_ms: 0,
                });
                let pruned = record.prunable(limits.max_versions);
                record.versions.retain(|v| !pruned.contains(&v.version));
            }
            stored += record.stored_bytes();
        }
        if !exists {
            if hubs >= limits.max_hubs {
                self.counters.hit(key.tenant(), "storage.max_hubs");
                tracing::warn!(
                    tenant = key.tenant(),
                    limit = limits.max_hubs,
                    "upload refused: storage.max_hubs"
                );
                return Err(DeployError::TooManyHubs {
                    limit: limits.max_hubs,
                });
            }
            stored += size;
        }
        if stored > limits.max_stored_bytes {
            self.counters.hit(key.tenant(), "storage.max_stored_bytes");
            tracing::warn!(
                tenant = key.tenant(),
                needed = stored,
                limit = limits.max_stored_bytes,
                "upload refused: storage.max_stored_bytes"
            );
            return Err(DeployError::StorageFull {
                needed: stored,
                limit: limits.max_stored_bytes,
            });
        }
        Ok(stored)
    }

    /// Bytes of every stored version of every hub of `tenant`.
    pub(super) async fn stored_bytes(&self, tenant: &str) -> Result<u64, DeployError> {
        let mut stored = 0u64;
        for key in self.store.hubs().await? {
            if key.tenant() == tenant
                && let Some(record) = self.store.hub(&key).await?
            {
                stored += record.stored_bytes();
            }
        }
        Ok(stored)
    }

    /// Keep at most `keep` versions of `key` (see [`crate::store::HubRecord::prunable`]);
    /// the compiled code of pruned versions leaves this node's cache.
    pub(super) async fn prune(&self, key: &HubKey, keep: usize) {
        let record = match self.store.hub(key).await {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(error) => return tracing::warn!(hub = %key, %error, "cannot prune old versions"),
        };
        let pruned = record.prunable(keep);
        if pruned.is_empty() {
            return;
        }
        if let Err(error) = self.store.remove_versions(key, &pruned).await {
            return tracing::warn!(hub = %key, %error, "cannot prune old versions");
        }
        self.note_versions(key, Some(&record));
        let mut after = record;
        after.versions.retain(|v| !pruned.contains(&v.version));
        self.note_versions(key, Some(&after));
        tracing::info!(hub = %key, ?pruned, "old versions pruned (storage.max_versions)");
    }

    /// Remember the components of `key`'s stored versions (`None`: the hub
    /// is gone), and drop the compiled code of those no stored version has
    /// any more: versions pruned or deleted through whichever node, once
    /// this node has compiled them.
    pub(super) fn note_versions(&self, key: &HubKey, record: Option<&HubRecord>) {
        let now: HashSet<String> = record
            .iter()
            .flat_map(|r| &r.versions)
            .map(|v| v.sha256.clone())
            .collect();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let before = if now.is_empty() {
            seen.remove(key)
        } else {
            seen.insert(key.clone(), now.clone())
        };
        for sha256 in before.unwrap_or_default().difference(&now) {
            if !seen.values().any(|other| other.contains(sha256)) {
                self.runtime.forget(sha256);
            }
        }
    }
}
