//! Serving what the store says: one hub (on an announcement), everything
//! (every sync interval, and at start-up), and the loop that does both.

use super::compile::Compile;
use super::{DeployError, Deployer, RETRY_INTERVAL};
use crate::hubs::Source;
use crate::names::HubKey;
use crate::runtime::LoadError;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

impl Deployer {
    /// Serve what the store says for `key`.
    pub async fn sync_hub(&self, key: &HubKey) -> Result<(), DeployError> {
        let _guard = self.lock(key).await;
        self.sync_locked(key).await
    }

    pub(super) async fn sync_locked(&self, key: &HubKey) -> Result<(), DeployError> {
        let record = self.store.hub(key).await?;
        self.note_versions(key, record.as_ref());
        let active = record.as_ref().and_then(|record| record.active());
        let served = self.served(key);
        match (active, served) {
            (Some(version), Some(Source::Store { version: now })) if version == now => {
                if self.runtime.shares_code() {
                    self.take_optimized(key).await;
                }
                Ok(())
            }
            (Some(version), _) => {
                let started = Instant::now();
                let bytes = self.store.bytes(key, version).await?;
                let sha256 = record
                    .iter()
                    .flat_map(|r| &r.versions)
                    .find(|v| v.version == version)
                    .map(|v| v.sha256.as_str());
                let how = match sha256 {
                    Some(sha256) => self.shared_code(key, sha256).await,
                    None => Compile::Alone,
                };
                let (compiled, _) = self.compile_as(key, bytes.into(), how).await?;
                let code = compiled.origin();
                self.hubs.install(compiled, Source::Store { version });
                tracing::info!(hub = %key, version, ?code, ms = started.elapsed().as_millis() as u64, "serving stored version");
                Ok(())
            }
            (None, Some(Source::Store { .. })) => {
                match self.files.get(key) {
                    Some(path) => {
                        let bytes =
                            tokio::fs::read(path)
                                .await
                                .map_err(|source| LoadError::Read {
                                    path: path.display().to_string(),
                                    source,
                                })?;
                        let compiled = self.compile(key, bytes.into()).await?;
                        self.hubs
                            .install(compiled, Source::File { path: path.clone() });
                        tracing::info!(hub = %key, path = %path.display(), "hub deleted from the store; serving the configured file again");
                    }
                    None => self.unserve(key),
                }
                Ok(())
            }
            (None, _) => Ok(()),
        }
    }

    /// Re-read the API's tenants.
    pub async fn sync_tenants(&self) -> Result<(), DeployError> {
        let stored = self.store.tenants().await?;
        self.tenants.set_stored(&stored);
        Ok(())
    }

    /// Compare everything with the store: tenants, then every stored hub and
    /// every hub served from the store.
    pub async fn sync_all(&self) -> Result<(), DeployError> {
        self.sync_tenants().await?;
        self.sync_vars().await?;
        let mut keys: HashSet<HubKey> = self.store.hubs().await?.into_iter().collect();
        keys.extend(
            self.hubs
                .list()
                .into_iter()
                .filter(|(_, source)| matches!(source, Source::Store { .. }))
                .map(|(key, _)| key),
        );
        let mut failed = None;
        for key in keys {
            if let Err(error) = self.sync_hub(&key).await {
                tracing::error!(hub = %key, "cannot serve the stored version: {error}");
                failed = Some(error);
            }
        }
        match failed {
            // A store that answered is in sync as far as it can be; a hub that
            // cannot load (its tenant's limits changed, say) stays logged.
            Some(DeployError::Store(error)) => Err(error.into()),
            _ => {
                self.synced.store(true, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

/// Act on announcements as they come, and compare everything with the store
/// every `interval` (every second until the first comparison succeeds).
/// Holds the deployer only while working, so dropping the state ends it.
pub(super) async fn sync_loop(
    deployer: std::sync::Weak<Deployer>,
    wake: Arc<Notify>,
    interval: Duration,
) {
    let first = match deployer.upgrade() {
        Some(this) if this.is_synced() => interval,
        _ => RETRY_INTERVAL,
    };
    let mut next_full = tokio::time::Instant::now() + first;
    loop {
        let woken = tokio::select! {
            () = wake.notified() => true,
            () = tokio::time::sleep_until(next_full) => false,
        };
        let Some(this) = deployer.upgrade() else {
            return;
        };
        let dirty = std::mem::take(&mut *this.dirty.lock().unwrap_or_else(|e| e.into_inner()));
        if dirty.tenants
            && let Err(error) = this.sync_tenants().await
        {
            tracing::warn!("cannot read tenants from the store: {error}");
        }
        if dirty.vars
            && let Err(error) = this.sync_vars().await
        {
            tracing::warn!("cannot read tenant variables from the store: {error}");
        }
        for key in dirty.hubs {
            if let Err(error) = this.sync_hub(&key).await {
                tracing::error!(hub = %key, "cannot serve the announced version: {error}");
            }
        }
        if !woken {
            let wait = match this.sync_all().await {
                Ok(()) => interval,
                Err(error) => {
                    tracing::warn!("cannot compare hubs with the store: {error}");
                    if this.is_synced() {
                        interval
                    } else {
                        RETRY_INTERVAL
                    }
                }
            };
            next_full = tokio::time::Instant::now() + wait;
        }
    }
}
