//! What a tenant may keep in the store ([`StorageLimits`]): the checks of
//! an upload, and the pruning of old versions after it.

use super::{DeployError, Deployer};
use crate::names::HubKey;
use crate::store::VersionInfo;
use crate::tenants::StorageLimits;

impl Deployer {
    /// Whether the tenant of `key` may store one more component of `size`
    /// bytes, counting the versions the upload will prune.
    pub(super) async fn check_storage(
        &self,
        key: &HubKey,
        size: u64,
        limits: StorageLimits,
    ) -> Result<(), DeployError> {
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
        Ok(())
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
        let (gone, kept): (Vec<_>, Vec<_>) = record
            .versions
            .iter()
            .partition(|v| pruned.contains(&v.version));
        // A component another kept version shares stays compiled.
        for info in gone
            .iter()
            .filter(|g| !kept.iter().any(|k| k.sha256 == g.sha256))
        {
            self.runtime.forget(&info.sha256);
        }
        tracing::info!(hub = %key, ?pruned, "old versions pruned (storage.max_versions)");
    }
}
