//! Compiling for a deployment, once per cluster where it can be: the node
//! that takes an upload leaves the code it compiled in the store, and the
//! other nodes load that (checked; see the runtime's shared code) instead
//! of compiling again. Without a secrets key every node compiles.
//!
//! A large component's baseline code is followed by its optimized code: the
//! uploading node compiles that in the background, as every node would,
//! and leaves it in the store in place of the baseline code; the others
//! wait for it (a minute at most, then compile their own) and take it on
//! the announcement that follows.
//!
//! What the store holds for this is charged to the tenant: one upload's
//! code per tenant (a newer upload's replaces it), for [`SHARED_CODE_TTL`],
//! and only while the tenant's components and that code together stay
//! within its `storage.max_stored_bytes`. Code that would not fit is not
//! shared (the other nodes compile, as without a key).

use super::{DeployError, Deployer};
use crate::names::HubKey;
use crate::runtime::{HubVersion, SharedCode};
use std::sync::Arc;
use std::time::Duration;

/// How long the store keeps an upload's compiled code: long enough for
/// every node to act on the announcement, or on its next sync after a
/// lost one (`sync_interval_ms`, 10 s by default); a node that comes
/// later compiles, or loads its own cache.
pub const SHARED_CODE_TTL: Duration = Duration::from_secs(300);

/// How a component gets its compiled code.
pub(super) enum Compile {
    /// Compiled here; the code stays here.
    Alone,
    /// Compiled here, and sealed for the other nodes if this node shares.
    ToShare,
    /// Loaded from another node's code if it checks out, else compiled.
    From(SharedCode),
}

impl Deployer {
    /// Compile and check `bytes` for `key` on a blocking thread, when one
    /// of the compile slots is free.
    pub async fn compile(&self, key: &HubKey, bytes: Arc<[u8]>) -> Result<HubVersion, DeployError> {
        Ok(self.compile_as(key, bytes, Compile::Alone).await?.0)
    }

    /// As [`Deployer::compile`], the way `how` says; with the code sealed
    /// for the other nodes when asked for and this node shares code.
    pub(super) async fn compile_as(
        &self,
        key: &HubKey,
        bytes: Arc<[u8]>,
        how: Compile,
    ) -> Result<(HubVersion, Option<SharedCode>), DeployError> {
        let _slot = self
            .compiles
            .acquire()
            .await
            .map_err(|_| DeployError::Internal("compiler slots closed".into()))?;
        let runtime = self.runtime.clone();
        let limits = self.tenants.current().get(key.tenant()).hub_limits.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || match how {
            Compile::Alone => runtime.load(key, &bytes, &limits).map(|v| (v, None)),
            Compile::ToShare => runtime.load_to_share(key, &bytes, &limits),
            Compile::From(code) => runtime
                .load_shared(key, &bytes, &limits, &code)
                .map(|v| (v, None)),
        })
        .await
        .map_err(|e| DeployError::Internal(format!("compiler task failed: {e}")))?
        .map_err(DeployError::from)
    }

    /// Leave `code`, compiled from an upload of `key`, for the other nodes,
    /// if it fits beside the `stored` bytes of the tenant's components
    /// within `limit`; else take away any code the tenant had there.
    pub(super) async fn share_code(
        &self,
        key: &HubKey,
        code: Option<SharedCode>,
        stored: u64,
        limit: u64,
    ) {
        if !self.runtime.shares_code() {
            return;
        }
        let tenant = key.tenant();
        let shared = match code {
            Some(code) if stored.saturating_add(code.code.len() as u64) <= limit => {
                let put = self.store.put_code(tenant, &code, SHARED_CODE_TTL).await;
                if put.is_ok() {
                    tracing::info!(hub = %key, tier = code.tier, code_bytes = code.code.len(), "compiled code left for the other nodes");
                }
                put
            }
            Some(code) => {
                tracing::info!(hub = %key, code_bytes = code.code.len(), stored, limit,
                    "compiled code not shared: with it the tenant would pass storage.max_stored_bytes; the other nodes compile");
                self.store.delete_code(tenant).await
            }
            None => self.store.delete_code(tenant).await,
        };
        if let Err(error) = shared {
            tracing::warn!(hub = %key, %error, "cannot leave the compiled code in the store; the other nodes compile");
        }
    }

    /// Leave the optimized `code` of `key` for the other nodes, in place of
    /// the baseline code of the same component (not of a newer upload),
    /// within the tenant's limit, and tell them.
    pub(super) async fn share_optimized(&self, key: &HubKey, code: SharedCode) {
        let tenant = key.tenant();
        // Uploads of the tenant write its code under this lock too.
        let _tenant_guard = self.lock_named(tenant.to_owned()).await;
        match self.store.code_tier(tenant, &code.sha256).await {
            Ok(Some(tier)) if tier == "baseline" => {}
            Ok(_) => return,
            Err(error) => {
                return tracing::warn!(hub = %key, %error, "cannot leave the optimized code in the store; the other nodes compile it");
            }
        }
        let limit = self.tenants.current().get(tenant).storage.max_stored_bytes;
        let stored = match self.stored_bytes(tenant).await {
            Ok(stored) => stored,
            Err(error) => {
                return tracing::warn!(hub = %key, %error, "cannot leave the optimized code in the store; the other nodes compile it");
            }
        };
        if stored.saturating_add(code.code.len() as u64) > limit {
            return tracing::info!(hub = %key, code_bytes = code.code.len(), stored, limit,
                "optimized code not shared: with it the tenant would pass storage.max_stored_bytes; the other nodes compile it");
        }
        match self.store.put_code(tenant, &code, SHARED_CODE_TTL).await {
            Ok(()) => {
                tracing::info!(hub = %key, tier = code.tier, code_bytes = code.code.len(), "compiled code left for the other nodes");
                self.announce(key);
            }
            Err(error) => {
                tracing::warn!(hub = %key, %error, "cannot leave the optimized code in the store; the other nodes compile it");
            }
        }
    }

    /// Serve another node's optimized code for `key` if this node still
    /// runs baseline code and the store has optimized code of the same
    /// component.
    pub(super) async fn take_optimized(&self, key: &HubKey) {
        let Some(active) = self.hubs.get(key).map(|slot| slot.active()) else {
            return;
        };
        let Some(sha256) = active.sha256().filter(|_| !active.optimized()) else {
            return;
        };
        let code = match self
            .store
            .code(key.tenant(), sha256, Some("optimized"))
            .await
        {
            Ok(Some(code)) => code,
            Ok(None) => return,
            Err(error) => {
                return tracing::warn!(hub = %key, %error, "cannot read optimized code from the store");
            }
        };
        let runtime = self.runtime.clone();
        let upgraded = tokio::task::spawn_blocking(move || runtime.upgrade(&active, &code)).await;
        match upgraded {
            Ok(Ok(true)) => {
                tracing::info!(hub = %key, "optimized code from another node in service")
            }
            Ok(Ok(false)) => {}
            Ok(Err(reason)) => {
                tracing::warn!(hub = %key, %reason, "not loading the optimized code another node shared; compiling it here");
            }
            Err(error) => tracing::error!(hub = %key, %error, "loading optimized code failed"),
        }
    }

    /// How to get the code of `key`'s component whose SHA-256 is `sha256`:
    /// from the store when another node left it there.
    pub(super) async fn shared_code(&self, key: &HubKey, sha256: &str) -> Compile {
        if !self.runtime.shares_code() {
            return Compile::Alone;
        }
        match self.store.code(key.tenant(), sha256, None).await {
            Ok(Some(code)) => Compile::From(code),
            Ok(None) => Compile::Alone,
            Err(error) => {
                tracing::warn!(hub = %key, %error, "cannot read compiled code from the store; compiling");
                Compile::Alone
            }
        }
    }
}
