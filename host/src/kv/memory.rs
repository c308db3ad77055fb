//! Hub state of a node alone: in memory, one lock per tenant, and, with a
//! data directory, a snapshot per tenant written within a second of a change
//! and at shutdown (so a crash loses at most the last second).
//!
//! Values with a time-to-live are found through a per-tenant queue of
//! expiries: every operation first removes the tenant's expired values, so
//! they stop counting against its quota without a sweeper thread.

use super::{KvBackend, KvError, Quota, range};
use crate::millis::{as_millis, unix_now as now_ms};
use crate::names::HubKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Value {
    text: String,
    /// Unix milliseconds.
    expires: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct List {
    items: VecDeque<String>,
    bytes: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HubState {
    values: BTreeMap<String, Value>,
    lists: BTreeMap<String, List>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TenantState {
    hubs: HashMap<String, HubState>,
    keys: u64,
    bytes: u64,
    /// (expiry, hub, key) of every value with a time-to-live.
    #[serde(skip)]
    expiries: BTreeSet<(u64, String, String)>,
}

impl TenantState {
    fn purge(&mut self, now: u64) {
        while let Some(first) = self.expiries.first() {
            if first.0 > now {
                return;
            }
            let Some((at, hub, key)) = self.expiries.pop_first() else {
                return;
            };
            let Some(state) = self.hubs.get_mut(&hub) else {
                continue;
            };
            // Only if the value still has this expiry: a later set replaced it.
            if state
                .values
                .get(&key)
                .is_some_and(|v| v.expires == Some(at))
                && let Some(value) = state.values.remove(&key)
            {
                self.keys -= 1;
                self.bytes -= (key.len() + value.text.len()) as u64;
            }
        }
    }

    fn hub(&mut self, hub: &HubKey) -> &mut HubState {
        self.hubs.entry(hub.hub().to_owned()).or_default()
    }

    /// Room for a change of `keys` keys and `bytes` bytes?
    fn charge(&mut self, keys: i64, bytes: i64, quota: Quota) -> Result<(), KvError> {
        let new_keys = self.keys.saturating_add_signed(keys);
        let new_bytes = self.bytes.saturating_add_signed(bytes);
        if keys > 0 && new_keys > quota.max_keys {
            return Err(KvError::Keys(quota.max_keys));
        }
        if bytes > 0 && new_bytes > quota.max_bytes {
            return Err(KvError::Bytes(quota.max_bytes));
        }
        self.keys = new_keys;
        self.bytes = new_bytes;
        Ok(())
    }

    /// Put `value` at `key`, charging the difference.
    fn put(&mut self, hub: &HubKey, key: &str, value: Value, quota: Quota) -> Result<(), KvError> {
        let old = self.hub(hub).values.get(key).map(|v| v.text.len());
        let (keys, bytes) = match old {
            Some(len) => (0, value.text.len() as i64 - len as i64),
            None => (1, (key.len() + value.text.len()) as i64),
        };
        self.charge(keys, bytes, quota)?;
        if let Some(at) = value.expires {
            self.expiries
                .insert((at, hub.hub().to_owned(), key.to_owned()));
        }
        self.hub(hub).values.insert(key.to_owned(), value);
        Ok(())
    }

    fn remove_list(&mut self, hub: &HubKey, key: &str) -> bool {
        match self.hub(hub).lists.remove(key) {
            Some(list) => {
                self.keys -= 1;
                self.bytes -= key.len() as u64 + list.bytes;
                true
            }
            None => false,
        }
    }
}

type Tenants = RwLock<HashMap<String, Arc<Mutex<TenantState>>>>;

/// State in memory, optionally snapshotted to a directory.
#[derive(Default)]
pub struct MemoryKv {
    tenants: Tenants,
    snapshots: Option<Snapshots>,
}

struct Snapshots {
    dir: PathBuf,
    dirty: Mutex<HashSet<String>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        Self::default()
    }

    /// State kept in `dir` (`{tenant}.json` each), read now and written
    /// within a second of a change and by [`KvBackend::flush`].
    pub fn open(dir: &Path) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let mut tenants = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(tenant) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let mut state: TenantState = serde_json::from_slice(&std::fs::read(&path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for (hub, hub_state) in &state.hubs {
                for (key, value) in &hub_state.values {
                    if let Some(at) = value.expires {
                        state.expiries.insert((at, hub.clone(), key.clone()));
                    }
                }
            }
            state.purge(now_ms());
            tenants.insert(tenant.to_owned(), Arc::new(Mutex::new(state)));
        }
        let kv = Arc::new(Self {
            tenants: RwLock::new(tenants),
            snapshots: Some(Snapshots {
                dir: dir.to_owned(),
                dirty: Mutex::default(),
            }),
        });
        crate::snapshot::spawn("hubhost-state", Arc::downgrade(&kv), Self::write_snapshots);
        Ok(kv)
    }

    fn tenant(&self, tenant: &str) -> Arc<Mutex<TenantState>> {
        if let Some(state) = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
        {
            return state.clone();
        }
        self.tenants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.to_owned())
            .or_default()
            .clone()
    }

    /// Run `op` on `hub`'s tenant, its expired values gone; `changes` says
    /// whether to snapshot it.
    fn with<T>(
        &self,
        hub: &HubKey,
        changes: bool,
        op: impl FnOnce(&mut TenantState) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let tenant = self.tenant(hub.tenant());
        let result = {
            let mut state = lock(&tenant);
            state.purge(now_ms());
            op(&mut state)
        };
        if changes
            && result.is_ok()
            && let Some(snapshots) = &self.snapshots
        {
            lock(&snapshots.dirty).insert(hub.tenant().to_owned());
        }
        result
    }

    fn write_snapshots(&self) {
        let Some(snapshots) = &self.snapshots else {
            return;
        };
        let dirty: Vec<String> = lock(&snapshots.dirty).drain().collect();
        for tenant in dirty {
            let state = self.tenant(&tenant);
            let path = snapshots.dir.join(format!("{tenant}.json"));
            let written = crate::snapshot::write_json(&path, &*lock(&state));
            if let Err(error) = written {
                tracing::error!(%error, tenant, path = %path.display(), "cannot write hub state");
                lock(&snapshots.dirty).insert(tenant);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each operation checks before it changes anything, so a panic cannot
    // leave a half-done change behind.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl KvBackend for MemoryKv {
    fn get(&self, hub: &HubKey, key: &str) -> Result<Option<String>, KvError> {
        self.with(hub, false, |state| {
            Ok(state.hub(hub).values.get(key).map(|v| v.text.clone()))
        })
    }

    fn set(
        &self,
        hub: &HubKey,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<(), KvError> {
        let expires = ttl.map(|ttl| now_ms().saturating_add(as_millis(ttl)));
        self.with(hub, true, |state| {
            let value = Value {
                text: value.to_owned(),
                expires,
            };
            state.put(hub, key, value, quota)
        })
    }

    fn delete(&self, hub: &HubKey, key: &str) -> Result<bool, KvError> {
        self.with(hub, true, |state| {
            let value = state.hub(hub).values.remove(key);
            if let Some(value) = &value {
                state.keys -= 1;
                state.bytes -= (key.len() + value.text.len()) as u64;
            }
            Ok(state.remove_list(hub, key) | value.is_some())
        })
    }

    fn increment(&self, hub: &HubKey, key: &str, delta: i64, quota: Quota) -> Result<i64, KvError> {
        self.with(hub, true, |state| {
            let old = state.hub(hub).values.get(key).cloned();
            let current = match &old {
                Some(value) => value.text.parse::<i64>().map_err(|_| KvError::NotInteger)?,
                None => 0,
            };
            let new = current.checked_add(delta).ok_or(KvError::Overflow)?;
            let expires = old.and_then(|v| v.expires);
            let value = Value {
                text: new.to_string(),
                expires,
            };
            state.put(hub, key, value, quota)?;
            Ok(new)
        })
    }

    fn compare_and_swap(
        &self,
        hub: &HubKey,
        key: &str,
        expected: Option<&str>,
        value: &str,
        quota: Quota,
    ) -> Result<bool, KvError> {
        self.with(hub, true, |state| {
            let current = state.hub(hub).values.get(key).map(|v| v.text.as_str());
            if current != expected {
                return Ok(false);
            }
            let value = Value {
                text: value.to_owned(),
                expires: None,
            };
            state.put(hub, key, value, quota)?;
            Ok(true)
        })
    }

    fn list_keys(
        &self,
        hub: &HubKey,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        self.with(hub, false, |state| {
            let state = state.hub(hub);
            let from = match after {
                Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_owned()),
                _ => std::ops::Bound::Included(prefix.to_owned()),
            };
            let range = (from, std::ops::Bound::Unbounded);
            let values = state
                .values
                .range::<String, _>(range.clone())
                .map(|(k, _)| k);
            let lists = state.lists.range::<String, _>(range).map(|(k, _)| k);
            // Both maps are ordered: merge them, once per key.
            let mut merged: BTreeSet<&String> = BTreeSet::new();
            for key in values.take_while(|k| k.starts_with(prefix)).take(limit) {
                merged.insert(key);
            }
            for key in lists.take_while(|k| k.starts_with(prefix)).take(limit) {
                merged.insert(key);
            }
            Ok(merged.into_iter().take(limit).cloned().collect())
        })
    }

    fn list_push(
        &self,
        hub: &HubKey,
        key: &str,
        value: &str,
        keep: usize,
        quota: Quota,
    ) -> Result<usize, KvError> {
        self.with(hub, true, |state| {
            let list = state.hub(hub).lists.get(key);
            let exists = list.is_some();
            let dropped: u64 = list.map_or(0, |list| {
                let over = (list.items.len() + 1).saturating_sub(keep);
                list.items.iter().take(over).map(|i| i.len() as u64).sum()
            });
            let mut bytes = value.len() as i64 - dropped as i64;
            if !exists {
                bytes += key.len() as i64;
            }
            state.charge(i64::from(!exists), bytes, quota)?;
            let list = state.hub(hub).lists.entry(key.to_owned()).or_default();
            list.items.push_back(value.to_owned());
            list.bytes += value.len() as u64;
            while list.items.len() > keep {
                if let Some(item) = list.items.pop_front() {
                    list.bytes -= item.len() as u64;
                }
            }
            Ok(list.items.len())
        })
    }

    fn list_range(
        &self,
        hub: &HubKey,
        key: &str,
        start: i64,
        stop: i64,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        self.with(hub, false, |state| {
            let Some(list) = state.hub(hub).lists.get(key) else {
                return Ok(Vec::new());
            };
            let Some((start, stop)) = range(list.items.len(), start, stop) else {
                return Ok(Vec::new());
            };
            let count = stop - start + 1;
            if count > limit {
                return Err(KvError::ReadItems {
                    count: count as u64,
                    limit,
                });
            }
            Ok(list.items.range(start..=stop).cloned().collect())
        })
    }

    fn list_trim(&self, hub: &HubKey, key: &str, start: i64, stop: i64) -> Result<(), KvError> {
        self.with(hub, true, |state| {
            let Some(list) = state.hub(hub).lists.get_mut(key) else {
                return Ok(());
            };
            let Some((start, stop)) = range(list.items.len(), start, stop) else {
                state.remove_list(hub, key);
                return Ok(());
            };
            let before = list.bytes;
            list.items.truncate(stop + 1);
            list.items.drain(..start);
            list.bytes = list.items.iter().map(|i| i.len() as u64).sum();
            let freed = before - list.bytes;
            state.bytes -= freed;
            Ok(())
        })
    }

    fn delete_hub(&self, hub: &HubKey) -> Result<(), KvError> {
        self.with(hub, true, |state| {
            if let Some(gone) = state.hubs.remove(hub.hub()) {
                for (key, value) in gone.values {
                    state.keys -= 1;
                    state.bytes -= (key.len() + value.text.len()) as u64;
                }
                for (key, list) in gone.lists {
                    state.keys -= 1;
                    state.bytes -= key.len() as u64 + list.bytes;
                }
            }
            Ok(())
        })
    }

    fn usage(&self, tenant: &str) -> Result<(u64, u64), KvError> {
        let state = self.tenant(tenant);
        let mut state = lock(&state);
        state.purge(now_ms());
        Ok((state.keys, state.bytes))
    }

    fn flush(&self) {
        self.write_snapshots();
    }
}
