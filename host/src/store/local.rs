//! The store of a node on its own: state in memory, written through to a
//! data directory when one is set.
//!
//! On disk: `state.json` (every hub's versions and history, version counters,
//! tenants) and `wasm/TENANT/HUB/N.wasm`. Components are written before the
//! state that lists them, and every file is replaced by an atomic rename, so
//! a crash leaves the previous state or the new one, never a torn one.

use super::{HubRecord, MAX_HISTORY, StoreError, VersionInfo, hub_name, parse_hub_name};
use crate::names::HubKey;
use crate::runtime::SharedCode;
use crate::tenants::TenantConfig;
use crate::vars::StoredVar;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::Mutex;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// By `tenant/hub`.
    hubs: BTreeMap<String, HubRecord>,
    /// Last version number handed out, by `tenant/hub`; kept after deletes.
    sequences: BTreeMap<String, u64>,
    tenants: HashMap<String, TenantConfig>,
    /// Tenant variables (secrets sealed), by tenant and name.
    #[serde(default)]
    vars: BTreeMap<String, BTreeMap<String, StoredVar>>,
    /// Components, when there is no directory to keep them in.
    #[serde(skip)]
    blobs: HashMap<(String, u64), Vec<u8>>,
}

pub struct LocalStore {
    dir: Option<PathBuf>,
    state: Mutex<State>,
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {error}", path.display()))
}

impl LocalStore {
    /// A store in `dir` (created if missing), or in memory only.
    pub fn open(dir: Option<&Path>) -> anyhow::Result<Self> {
        let state = match dir {
            None => State::default(),
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("cannot create data directory {}: {e}", dir.display())
                })?;
                let path = dir.join("state.json");
                match std::fs::read(&path) {
                    Ok(bytes) => serde_json::from_slice(&bytes)
                        .map_err(|e| anyhow::anyhow!("corrupt {}: {e}", path.display()))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
                    Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
                }
            }
        };
        Ok(Self {
            dir: dir.map(Path::to_owned),
            state: Mutex::new(state),
        })
    }

    fn wasm_path(dir: &Path, key: &HubKey, version: u64) -> PathBuf {
        dir.join("wasm")
            .join(key.tenant())
            .join(key.hub())
            .join(format!("{version}.wasm"))
    }

    async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error("cannot create", parent, e))?;
        }
        let temp = path.with_extension("tmp");
        tokio::fs::write(&temp, bytes)
            .await
            .map_err(|e| io_error("cannot write", &temp, e))?;
        tokio::fs::rename(&temp, path)
            .await
            .map_err(|e| io_error("cannot rename", &temp, e))
    }

    /// Write `state` through to disk.
    async fn save(&self, state: &State) -> Result<(), StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode state: {e}")))?;
        Self::write_atomic(&dir.join("state.json"), &json).await
    }

    pub async fn add_version(
        &self,
        key: &HubKey,
        bytes: &[u8],
        activate: bool,
    ) -> Result<VersionInfo, StoreError> {
        let mut state = self.state.lock().await;
        let name = hub_name(key);
        let version = state.sequences.get(&name).copied().unwrap_or(0) + 1;
        match &self.dir {
            Some(dir) => Self::write_atomic(&Self::wasm_path(dir, key, version), bytes).await?,
            None => {
                state.blobs.insert((name.clone(), version), bytes.to_vec());
            }
        }
        let info = VersionInfo::new(version, bytes);
        state.sequences.insert(name.clone(), version);
        let record = state.hubs.entry(name).or_default();
        record.versions.push(info.clone());
        if activate {
            push_history(record, version);
        }
        self.save(&state).await?;
        Ok(info)
    }

    pub async fn activate(&self, key: &HubKey, version: u64) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let record = state
            .hubs
            .get_mut(&hub_name(key))
            .ok_or(StoreError::NoSuchHub)?;
        if !record.versions.iter().any(|v| v.version == version) {
            return Err(StoreError::NoSuchVersion(version));
        }
        if record.active() != Some(version) {
            push_history(record, version);
            self.save(&state).await?;
        }
        Ok(())
    }

    pub async fn rollback(&self, key: &HubKey) -> Result<u64, StoreError> {
        let mut state = self.state.lock().await;
        let record = state
            .hubs
            .get_mut(&hub_name(key))
            .ok_or(StoreError::NoSuchHub)?;
        if record.history.len() < 2 {
            return Err(StoreError::NoEarlierVersion);
        }
        record.history.pop();
        let active = record.active().ok_or(StoreError::NoEarlierVersion)?;
        self.save(&state).await?;
        Ok(active)
    }

    pub async fn hub(&self, key: &HubKey) -> Result<Option<HubRecord>, StoreError> {
        Ok(self.state.lock().await.hubs.get(&hub_name(key)).cloned())
    }

    pub async fn hubs(&self) -> Result<Vec<HubKey>, StoreError> {
        let state = self.state.lock().await;
        Ok(state
            .hubs
            .keys()
            .filter_map(|name| parse_hub_name(name))
            .collect())
    }

    pub async fn bytes(&self, key: &HubKey, version: u64) -> Result<Vec<u8>, StoreError> {
        let name = hub_name(key);
        let Some(dir) = &self.dir else {
            let state = self.state.lock().await;
            return state
                .blobs
                .get(&(name, version))
                .cloned()
                .ok_or(StoreError::NoSuchVersion(version));
        };
        let path = Self::wasm_path(dir, key, version);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NoSuchVersion(version))
            }
            Err(e) => Err(io_error("cannot read", &path, e)),
        }
    }

    pub async fn remove_versions(&self, key: &HubKey, versions: &[u64]) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let name = hub_name(key);
        let Some(record) = state.hubs.get_mut(&name) else {
            return Ok(());
        };
        record.versions.retain(|v| !versions.contains(&v.version));
        record.history.retain(|v| !versions.contains(v));
        state
            .blobs
            .retain(|(hub, version), _| *hub != name || !versions.contains(version));
        // The state stops listing them first: a crash in between leaves
        // files nobody lists, never a listed version without its file.
        self.save(&state).await?;
        if let Some(dir) = &self.dir {
            for version in versions {
                let path = Self::wasm_path(dir, key, *version);
                if let Err(error) = tokio::fs::remove_file(&path).await
                    && error.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(%error, path = %path.display(), "pruned component not removed");
                }
            }
        }
        Ok(())
    }

    pub async fn delete_hub(&self, key: &HubKey) -> Result<bool, StoreError> {
        let mut state = self.state.lock().await;
        let name = hub_name(key);
        if state.hubs.remove(&name).is_none() {
            return Ok(false);
        }
        state.blobs.retain(|(hub, _), _| *hub != name);
        self.save(&state).await?;
        if let Some(dir) = &self.dir {
            let wasm = dir.join("wasm").join(key.tenant()).join(key.hub());
            if let Err(error) = tokio::fs::remove_dir_all(&wasm).await {
                tracing::warn!(%error, path = %wasm.display(), "deleted hub's components not removed");
            }
        }
        Ok(true)
    }

    pub async fn tenants(&self) -> Result<HashMap<String, TenantConfig>, StoreError> {
        Ok(self.state.lock().await.tenants.clone())
    }

    pub async fn put_tenant(&self, name: &str, config: &TenantConfig) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        state.tenants.insert(name.to_owned(), config.clone());
        self.save(&state).await
    }

    pub async fn delete_tenant(&self, name: &str) -> Result<bool, StoreError> {
        let mut state = self.state.lock().await;
        let existed = state.tenants.remove(name).is_some();
        if existed {
            self.save(&state).await?;
        }
        Ok(existed)
    }

    pub async fn vars(&self) -> Result<HashMap<String, HashMap<String, StoredVar>>, StoreError> {
        let state = self.state.lock().await;
        Ok(state
            .vars
            .iter()
            .map(|(tenant, vars)| (tenant.clone(), vars.clone().into_iter().collect()))
            .collect())
    }

    pub async fn put_var(
        &self,
        tenant: &str,
        name: &str,
        var: &StoredVar,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        state
            .vars
            .entry(tenant.to_owned())
            .or_default()
            .insert(name.to_owned(), var.clone());
        self.save(&state).await
    }

    pub async fn delete_var(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let mut state = self.state.lock().await;
        let Some(vars) = state.vars.get_mut(tenant) else {
            return Ok(false);
        };
        let existed = vars.remove(name).is_some();
        if vars.is_empty() {
            state.vars.remove(tenant);
        }
        if existed {
            self.save(&state).await?;
        }
        Ok(existed)
    }

    // A node alone keeps no compiled code for others: it has nobody to give
    // it to (its own `--cache-dir` serves its restarts).

    pub async fn put_code(
        &self,
        _tenant: &str,
        _code: &SharedCode,
        _ttl: Duration,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    pub async fn code(
        &self,
        _tenant: &str,
        _sha256: &str,
        _tier: Option<&str>,
    ) -> Result<Option<SharedCode>, StoreError> {
        Ok(None)
    }

    pub async fn code_tier(
        &self,
        _tenant: &str,
        _sha256: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    pub async fn delete_code(&self, _tenant: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

fn push_history(record: &mut HubRecord, version: u64) {
    record.history.push(version);
    if record.history.len() > MAX_HISTORY {
        record.history.remove(0);
    }
}
