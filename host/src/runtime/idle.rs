//! The memory a tenant's idle instances keep between calls.
//!
//! Warm instances make calls fast (see the module above), but each keeps the
//! memory it grew to: a hub that once needed its whole memory limit would
//! otherwise keep that much in every idle instance of every version. So each
//! tenant has a budget (`hub_limits.max_idle_memory_bytes`) shared by all
//! its hubs and versions on the node; an instance that would go over it is
//! dropped after its call instead of kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes kept by idle instances, per tenant, on this node.
#[derive(Debug, Default)]
pub struct IdleMemory {
    by_tenant: Mutex<HashMap<String, usize>>,
}

impl IdleMemory {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // Single updates of one entry: a poisoned map is still consistent.
        self.by_tenant.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take `bytes` of `tenant`'s budget of `limit` for an idle instance;
    /// `None` if they do not fit.
    pub fn reserve(self: &Arc<Self>, tenant: &str, bytes: usize, limit: usize) -> Option<Kept> {
        let mut by_tenant = self.lock();
        let used = by_tenant.get(tenant).copied().unwrap_or(0);
        let total = used.checked_add(bytes).filter(|total| *total <= limit)?;
        by_tenant.insert(tenant.to_owned(), total);
        Some(Kept {
            memory: self.clone(),
            tenant: tenant.to_owned(),
            bytes,
        })
    }

    /// Bytes `tenant`'s idle instances keep now.
    #[cfg(test)]
    pub fn used(&self, tenant: &str) -> usize {
        self.lock().get(tenant).copied().unwrap_or(0)
    }
}

/// The budget held by one idle instance, given back when it is dropped
/// (taken for a call, or dropped with its version).
#[derive(Debug)]
pub struct Kept {
    memory: Arc<IdleMemory>,
    tenant: String,
    bytes: usize,
}

impl Drop for Kept {
    fn drop(&mut self) {
        let mut by_tenant = self.memory.lock();
        if let Some(used) = by_tenant.get_mut(&self.tenant) {
            *used = used.saturating_sub(self.bytes);
            if *used == 0 {
                by_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_keeps_at_most_its_budget() {
        let memory = Arc::new(IdleMemory::default());
        let first = memory.reserve("a", 60, 100);
        assert!(first.is_some());
        assert!(memory.reserve("a", 50, 100).is_none(), "over a's budget");
        let other = memory.reserve("b", 50, 100);
        assert!(other.is_some(), "b has its own");
        drop(first);
        assert_eq!(memory.used("a"), 0);
        assert!(memory.reserve("a", 100, 100).is_some());
    }
}
