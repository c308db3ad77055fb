//! Deploying hubs: uploads, activations, rollbacks and deletes, and keeping
//! every node serving what the store says.
//!
//! The flow of a change, on the node that takes the admin request:
//! 1. compile and check the component off the async workers (a bad one is
//!    refused before anything changes);
//! 2. under the hub's lock, write the store (the compiled code for the
//!    other nodes first, where nodes share it: `compile`), then swap the
//!    served version (calls in flight finish on the old one; connections
//!    stay);
//! 3. announce `HubChanged` on the control channel.
//!
//! Every node (the first one too) answers an announcement by re-reading the
//! hub from the store and loading its active version if it does not serve
//! it yet (`sync`), from the shared code when it checks out. Nodes also compare everything with the store every sync interval,
//! which catches announcements lost while Redis was away, and at start-up,
//! so a node that starts later serves the active versions.
//!
//! A hub from the configuration (`--hub`) is served until the store has an
//! active version of it, and again once that hub is deleted from the store.

mod compile;
mod storage;
mod sync;
mod vars;
mod watch;

use compile::Compile;
pub use vars::{ListedVar, VarLimits};

pub use watch::watch;

use crate::cluster::{Cluster, Control};
use crate::hubs::{Hubs, Source};
use crate::lifetime::HubLifetimeManager;
use crate::names::HubKey;
use crate::outbound::CloseRequest;
use crate::quotas::LimitCounters;
use crate::runtime::{LoadError, Runtime};
use crate::store::{HubStore, StoreError, VersionInfo};
use crate::tenants::Tenants;
use crate::vars::{SecretsKey, VarError, Vars};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How often a node that has not yet read the store tries again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Why a deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the component is {size} bytes, over the tenant's limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("the tenant has {limit} hubs, its limit (storage.max_hubs); delete one first")]
    TooManyHubs { limit: usize },
    #[error(
        "the tenant's components would take {needed} bytes, over its limit of {limit} bytes (storage.max_stored_bytes); delete versions or hubs first"
    )]
    StorageFull { needed: u64, limit: u64 },
    #[error("too many uploads in progress on this node; try again later")]
    Busy,
    #[error(transparent)]
    Var(#[from] VarError),
    #[error(
        "the tenant has {limit} variables, its limit (admin.max_vars_per_tenant); delete one first"
    )]
    TooManyVars { limit: usize },
    #[error("the value is {size} bytes, over the limit of {limit} bytes (admin.max_var_bytes)")]
    VarTooLarge { size: usize, limit: usize },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a deployer is given: the configured hub files, and what the node
/// spends on deploying at once.
#[derive(Debug, Clone, Default)]
pub struct DeploySettings {
    /// Hubs from the configuration, served while the store has none.
    pub files: HashMap<HubKey, PathBuf>,
    pub uploads_in_progress: usize,
    pub concurrent_compiles: usize,
    /// Where the quotas uploads hit are counted.
    pub counters: LimitCounters,
    /// This node's copy of tenant variables, which hubs read.
    pub vars: Arc<Vars>,
    /// The key secrets are sealed with, if the node has one.
    pub secrets_key: Option<Arc<SecretsKey>>,
    pub var_limits: VarLimits,
}

/// A place among the uploads in progress, held from before the body is read
/// until the upload is stored.
pub struct UploadPermit(#[allow(dead_code)] OwnedSemaphorePermit);

#[derive(Default)]
struct Dirty {
    hubs: HashSet<HubKey>,
    tenants: bool,
    vars: bool,
}

/// Keeps this node's hubs in step with the store.
pub struct Deployer {
    runtime: Arc<Runtime>,
    hubs: Arc<Hubs>,
    store: Arc<HubStore>,
    tenants: Tenants,
    /// Announcements to every node.
    cluster: Arc<Cluster>,
    /// Closes the clients of deleted hubs.
    lifetime: Arc<HubLifetimeManager>,
    /// Hubs from the configuration, served while the store has none.
    files: HashMap<HubKey, PathBuf>,
    /// By `tenant/hub` for a hub's changes, and by `tenant` for the quota
    /// checks and writes of a tenant's uploads, one at a time on this node.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    max_uploads: usize,
    counters: LimitCounters,
    /// Uploads being read or compiled on this node (`try_acquire` only).
    uploads: Arc<Semaphore>,
    /// Compiles running at once; the rest wait.
    compiles: Semaphore,
    dirty: Mutex<Dirty>,
    /// The components (SHA-256) of each hub's stored versions, as last read.
    seen: Mutex<HashMap<HubKey, HashSet<String>>>,
    wake: Arc<Notify>,
    synced: AtomicBool,
    vars: Arc<Vars>,
    secrets: Option<Arc<SecretsKey>>,
    var_limits: VarLimits,
}

impl Deployer {
    pub fn new(
        runtime: Arc<Runtime>,
        hubs: Arc<Hubs>,
        store: Arc<HubStore>,
        tenants: Tenants,
        cluster: Arc<Cluster>,
        lifetime: Arc<HubLifetimeManager>,
        settings: DeploySettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            hubs,
            store,
            tenants,
            cluster,
            lifetime,
            files: settings.files,
            locks: Mutex::default(),
            max_uploads: settings.uploads_in_progress,
            counters: settings.counters,
            uploads: Arc::new(Semaphore::new(settings.uploads_in_progress)),
            compiles: Semaphore::new(settings.concurrent_compiles),
            dirty: Mutex::default(),
            seen: Mutex::default(),
            wake: Arc::default(),
            synced: AtomicBool::new(false),
            vars: settings.vars,
            secrets: settings.secrets_key,
            var_limits: settings.var_limits,
        })
    }

    /// Listen to announcements and sync every `interval` until the
    /// deployer is dropped.
    pub fn start(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        let _subscribed = self.cluster.on_control(Arc::new(move |control| {
            if let Some(deployer) = weak.upgrade() {
                deployer.mark(control);
            }
        }));
        tokio::spawn(sync::sync_loop(
            Arc::downgrade(self),
            self.wake.clone(),
            interval,
        ));
        if let Some(mut optimized) = self.runtime.optimized_code() {
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some((key, code)) = optimized.recv().await {
                    let Some(deployer) = weak.upgrade() else {
                        return;
                    };
                    deployer.share_optimized(&key, code).await;
                }
            });
        }
    }

    /// Whether the store has been read once since start-up (for `/readyz`).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// What this node serves for `key`.
    pub fn served(&self, key: &HubKey) -> Option<Source> {
        self.hubs.get(key).map(|slot| slot.active().source.clone())
    }

    fn mark(&self, control: Control) {
        {
            let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            match control {
                Control::HubChanged { tenant, hub } => match HubKey::new(&tenant, &hub) {
                    Ok(key) => {
                        dirty.hubs.insert(key);
                    }
                    Err(error) => return tracing::warn!(%error, "ignoring an announcement"),
                },
                Control::TenantsChanged => dirty.tenants = true,
                Control::VarsChanged => dirty.vars = true,
            }
        }
        self.wake.notify_one();
    }

    async fn lock(&self, key: &HubKey) -> tokio::sync::OwnedMutexGuard<()> {
        self.lock_named(key.to_string()).await
    }

    async fn lock_named(&self, name: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Uploads being read or compiled on this node now.
    pub fn uploads_in_progress(&self) -> usize {
        self.max_uploads
            .saturating_sub(self.uploads.available_permits())
    }

    /// A place for one more upload, or [`DeployError::Busy`]: take it before
    /// reading the body, so waiting uploads hold no bodies.
    pub fn upload_permit(&self, tenant: &str) -> Result<UploadPermit, DeployError> {
        match self.uploads.clone().try_acquire_owned() {
            Ok(permit) => Ok(UploadPermit(permit)),
            Err(_) => {
                self.counters.hit(tenant, "admin.max_uploads_in_progress");
                tracing::warn!(
                    tenant,
                    "upload refused: admin.max_uploads_in_progress reached"
                );
                Err(DeployError::Busy)
            }
        }
    }

    /// Check and store a new version of `key`, within its tenant's storage
    /// limits (pruning old versions); serve it at once if `activate`.
    pub async fn upload(
        &self,
        _permit: UploadPermit,
        key: &HubKey,
        bytes: Vec<u8>,
        activate: bool,
    ) -> Result<VersionInfo, DeployError> {
        let tenant = self.tenants.current().get(key.tenant()).clone();
        let limit = tenant.max_component_bytes;
        if bytes.len() > limit {
            self.counters.hit(key.tenant(), "max_component_bytes");
            return Err(DeployError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        let started = Instant::now();
        let bytes: Arc<[u8]> = bytes.into();
        // Checked before and after the compile: a refused upload costs no
        // compile, and the store is written only within the limits.
        self.check_storage(key, bytes.len() as u64, tenant.storage)
            .await?;
        let (compiled, code) = self
            .compile_as(key, bytes.clone(), Compile::ToShare)
            .await?;
        let compile_ms = started.elapsed().as_millis() as u64;
        let _tenant_guard = self.lock_named(key.tenant().to_owned()).await;
        let stored = self
            .check_storage(key, bytes.len() as u64, tenant.storage)
            .await?;
        let _guard = self.lock(key).await;
        // Before the version is stored, so that no node (announced to, or
        // syncing on its own) finds the version without the code.
        self.share_code(key, code, stored, tenant.storage.max_stored_bytes)
            .await;
        let info = self.store.add_version(key, &bytes, activate).await?;
        self.prune(key, tenant.storage.max_versions).await;
        if activate {
            self.hubs.install(
                compiled,
                Source::Store {
                    version: info.version,
                },
            );
            self.announce(key);
        }
        tracing::info!(hub = %key, version = info.version, size = info.size, activate, compile_ms, "version uploaded");
        Ok(info)
    }

    /// Make stored version `version` of `key` active everywhere.
    pub async fn activate(&self, key: &HubKey, version: u64) -> Result<(), DeployError> {
        let _guard = self.lock(key).await;
        self.store.activate(key, version).await?;
        self.sync_locked(key).await?;
        self.announce(key);
        Ok(())
    }

    /// Make the previously active version of `key` active again everywhere.
    pub async fn rollback(&self, key: &HubKey) -> Result<u64, DeployError> {
        let _guard = self.lock(key).await;
        let version = self.store.rollback(key).await?;
        self.sync_locked(key).await?;
        self.announce(key);
        Ok(version)
    }

    /// Delete `key` and all its versions; its clients are closed on every node.
    pub async fn delete(&self, key: &HubKey) -> Result<bool, DeployError> {
        let _guard = self.lock(key).await;
        // Known before it goes, so that the sync below drops its compiled code.
        self.note_versions(key, self.store.hub(key).await?.as_ref());
        let existed = self.store.delete_hub(key).await?;
        self.sync_locked(key).await?;
        self.announce(key);
        // Its state goes with it; also when the hub was already gone, so a
        // delete that failed here can be repeated.
        let state = self.runtime.state().clone();
        let hub = key.clone();
        tokio::task::spawn_blocking(move || state.delete_hub(&hub))
            .await
            .map_err(|e| DeployError::Internal(format!("deleting hub state: {e}")))?
            .map_err(|e| DeployError::Internal(format!("deleting hub state: {e:?}")))?;
        Ok(existed)
    }

    fn announce(&self, key: &HubKey) {
        self.cluster.announce(Control::HubChanged {
            tenant: key.tenant().to_owned(),
            hub: key.hub().to_owned(),
        });
    }

    /// Stop serving `key` and close its clients with the reason.
    pub(crate) fn unserve(&self, key: &HubKey) {
        if self.hubs.remove(key) {
            let closed = self.lifetime.close_hub(
                key,
                &CloseRequest {
                    error: Some(format!(
                        "Connection closed with an error. Hub '{key}' was deleted."
                    )),
                    allow_reconnect: false,
                    handover: false,
                },
            );
            tracing::info!(hub = %key, closed, "hub no longer served");
        }
    }

    /// Tell the other nodes that the API's tenants changed.
    pub fn announce_tenants(&self) {
        self.cluster.announce(Control::TenantsChanged);
    }
}
