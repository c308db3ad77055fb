//! Key-value state of hubs: the `kv` capability of world 0.2.
//!
//! Guarantees:
//! - a hub reaches only its own keys: every key lives under its tenant and
//!   hub, and key text is data, never a pattern or a separator (hub and
//!   tenant names are `[a-z0-9-]`, keys follow them);
//! - every operation is atomic on every backend (one lock, one Redis script);
//! - every operation is bounded before it starts: keys, values and list
//!   items by size, reads by [`KvLimits::max_read_items`], the call by its
//!   operations, the tenant by its keys and bytes (all its hubs together,
//!   cluster-wide on Redis). A limit's error names its setting.
//!
//! A [`KvBackend`] is the store: [`memory::MemoryKv`] for a node alone (in
//! memory, or snapshotted to the data directory), [`redis::RedisKv`] for a
//! cluster. [`KvCall`] is the context of one hub call: it checks the call's
//! input and limits and then asks the backend. Backends block: call them
//! from inside a hub call (which leaves its async worker to wait, see
//! `workers`) or a blocking thread, never from async code.

pub mod memory;
pub mod redis;

#[cfg(test)]
mod tests;

use crate::names::HubKey;
use std::sync::Arc;
use std::time::Duration;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// Why an operation failed. The display text reaches the hub.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KvError {
    #[error("state keys must be 1 to {MAX_KEY_BYTES} bytes")]
    BadKey,
    #[error(
        "a state value of {size} bytes is over the limit of {limit} bytes (hub_limits.max_state_value_bytes)"
    )]
    ValueTooLarge { size: usize, limit: usize },
    #[error("the tenant's state already holds {0} keys, its limit (hub_limits.max_state_keys)")]
    Keys(u64),
    #[error("the tenant's state would exceed its limit of {0} bytes (hub_limits.max_state_bytes)")]
    Bytes(u64),
    #[error(
        "this call reached its limit of {0} state operations (hub_limits.max_state_ops_per_call)"
    )]
    Operations(u32),
    #[error("a list may keep at most {0} items (hub_limits.max_state_list_items); ask for fewer")]
    ListItems(usize),
    #[error(
        "this read would return {count} items, over the limit of {limit} (hub_limits.max_state_read_items)"
    )]
    ReadItems { count: u64, limit: usize },
    #[error("the value is not a decimal 64-bit integer")]
    NotInteger,
    #[error("the increment overflows a 64-bit integer")]
    Overflow,
    #[error("a time-to-live must be 1 ms to 10 years")]
    BadTtl,
    /// The backend failed; the detail is logged, not shown to the hub.
    #[error("state is unavailable right now")]
    Unavailable(String),
}

impl KvError {
    /// The setting of the limit that refused the operation, if one did.
    pub fn limit(&self) -> Option<&'static str> {
        Some(match self {
            Self::ValueTooLarge { .. } => "hub_limits.max_state_value_bytes",
            Self::Keys(_) => "hub_limits.max_state_keys",
            Self::Bytes(_) => "hub_limits.max_state_bytes",
            Self::Operations(_) => "hub_limits.max_state_ops_per_call",
            Self::ListItems(_) => "hub_limits.max_state_list_items",
            Self::ReadItems { .. } => "hub_limits.max_state_read_items",
            _ => return None,
        })
    }
}

/// What a tenant's state may hold, all its hubs together (a backend's part
/// of [`KvLimits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_keys: u64,
    pub max_bytes: u64,
}

/// The limits of the `kv` capability, from the tenant's `hub_limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    pub quota: Quota,
    pub max_value_bytes: usize,
    pub max_ops_per_call: u32,
    pub max_list_items: usize,
    pub max_read_items: usize,
}

/// Where hub state is kept. Keys count once for a value and once for a
/// list; bytes are the key's length plus the value's (or each list
/// item's). Every method is atomic and blocks until done.
pub trait KvBackend: Send + Sync {
    fn get(&self, hub: &HubKey, key: &str) -> Result<Option<String>, KvError>;
    fn set(
        &self,
        hub: &HubKey,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<(), KvError>;
    fn delete(&self, hub: &HubKey, key: &str) -> Result<bool, KvError>;
    fn increment(&self, hub: &HubKey, key: &str, delta: i64, quota: Quota) -> Result<i64, KvError>;
    fn compare_and_swap(
        &self,
        hub: &HubKey,
        key: &str,
        expected: Option<&str>,
        value: &str,
        quota: Quota,
    ) -> Result<bool, KvError>;
    /// Up to `limit` keys with `prefix` after `after`, in byte order.
    fn list_keys(
        &self,
        hub: &HubKey,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError>;
    /// Append, then keep the last `keep` items; the new length.
    fn list_push(
        &self,
        hub: &HubKey,
        key: &str,
        value: &str,
        keep: usize,
        quota: Quota,
    ) -> Result<usize, KvError>;
    /// Items `start..=stop` (negative from the end); refused with
    /// [`KvError::ReadItems`] when that is more than `limit` items.
    fn list_range(
        &self,
        hub: &HubKey,
        key: &str,
        start: i64,
        stop: i64,
        limit: usize,
    ) -> Result<Vec<String>, KvError>;
    fn list_trim(&self, hub: &HubKey, key: &str, start: i64, stop: i64) -> Result<(), KvError>;
    /// Remove everything of `hub` (the hub was deleted).
    fn delete_hub(&self, hub: &HubKey) -> Result<(), KvError>;
    /// Keys and bytes `tenant` holds.
    fn usage(&self, tenant: &str) -> Result<(u64, u64), KvError>;
    /// Write what is not yet durable (a snapshotting backend at shutdown).
    fn flush(&self) {}
}

/// The range `start..=stop` of a list of `len` items as indexes, Redis's
/// way: negative counts from the end, out-of-range ends are clamped, an
/// empty range is `None`.
pub fn range(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let at = |i: i64| if i < 0 { len.saturating_add(i) } else { i };
    let (start, stop) = (at(start).max(0), at(stop).min(len - 1));
    if len == 0 || start > stop {
        return None;
    }
    Some((usize::try_from(start).ok()?, usize::try_from(stop).ok()?))
}

/// The `kv` context of one hub call: its hub, its limits, the operations it
/// has left.
pub struct KvCall {
    backend: Arc<dyn KvBackend>,
    hub: HubKey,
    limits: KvLimits,
    ops_left: u32,
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        Err(KvError::BadKey)
    } else {
        Ok(())
    }
}

/// The longest time-to-live; longer is a mistake, not a wish.
const MAX_TTL: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

impl KvCall {
    pub fn new(backend: Arc<dyn KvBackend>, hub: HubKey, limits: KvLimits) -> Self {
        let ops_left = limits.max_ops_per_call;
        Self {
            backend,
            hub,
            limits,
            ops_left,
        }
    }

    /// Count one operation on `key` (if any) holding `value` (if any).
    fn begin(&mut self, key: Option<&str>, value: Option<&str>) -> Result<(), KvError> {
        if self.ops_left == 0 {
            return Err(KvError::Operations(self.limits.max_ops_per_call));
        }
        self.ops_left -= 1;
        if let Some(key) = key {
            check_key(key)?;
        }
        if let Some(value) = value
            && value.len() > self.limits.max_value_bytes
        {
            return Err(KvError::ValueTooLarge {
                size: value.len(),
                limit: self.limits.max_value_bytes,
            });
        }
        Ok(())
    }

    pub fn get(&mut self, key: &str) -> Result<Option<String>, KvError> {
        self.begin(Some(key), None)?;
        self.backend.get(&self.hub, key)
    }

    pub fn set(&mut self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), KvError> {
        self.begin(Some(key), Some(value))?;
        let ttl = ttl_ms.map(Duration::from_millis);
        if ttl.is_some_and(|ttl| ttl.is_zero() || ttl > MAX_TTL) {
            return Err(KvError::BadTtl);
        }
        self.backend
            .set(&self.hub, key, value, ttl, self.limits.quota)
    }

    pub fn delete(&mut self, key: &str) -> Result<bool, KvError> {
        self.begin(Some(key), None)?;
        self.backend.delete(&self.hub, key)
    }

    pub fn increment(&mut self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.begin(Some(key), None)?;
        self.backend
            .increment(&self.hub, key, delta, self.limits.quota)
    }

    pub fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&str>,
        value: &str,
    ) -> Result<bool, KvError> {
        self.begin(Some(key), Some(value))?;
        self.backend
            .compare_and_swap(&self.hub, key, expected, value, self.limits.quota)
    }

    pub fn list_keys(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, KvError> {
        self.begin(None, None)?;
        if prefix.len() > MAX_KEY_BYTES || after.is_some_and(|a| a.len() > MAX_KEY_BYTES) {
            return Err(KvError::BadKey);
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if limit > self.limits.max_read_items {
            return Err(KvError::ReadItems {
                count: limit as u64,
                limit: self.limits.max_read_items,
            });
        }
        self.backend.list_keys(&self.hub, prefix, after, limit)
    }

    pub fn list_push(&mut self, key: &str, value: &str, keep: u32) -> Result<u32, KvError> {
        self.begin(Some(key), Some(value))?;
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        if keep == 0 || keep > self.limits.max_list_items {
            return Err(KvError::ListItems(self.limits.max_list_items));
        }
        let len = self
            .backend
            .list_push(&self.hub, key, value, keep, self.limits.quota)?;
        Ok(u32::try_from(len).unwrap_or(u32::MAX))
    }

    pub fn list_range(&mut self, key: &str, start: i64, stop: i64) -> Result<Vec<String>, KvError> {
        self.begin(Some(key), None)?;
        self.backend
            .list_range(&self.hub, key, start, stop, self.limits.max_read_items)
    }

    pub fn list_trim(&mut self, key: &str, start: i64, stop: i64) -> Result<(), KvError> {
        self.begin(Some(key), None)?;
        self.backend.list_trim(&self.hub, key, start, stop)
    }
}
