//! Requests sent to other nodes and not yet answered, by request number:
//! group changes wait for one reply, presence queries for one per node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Waiters of type `S` (where a reply goes), each under its request number.
pub(super) struct Pending<S> {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, S>>,
}

impl<S> Default for Pending<S> {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            waiting: Mutex::default(),
        }
    }
}

impl<S> Pending<S> {
    fn waiting(&self) -> MutexGuard<'_, HashMap<u64, S>> {
        // Single inserts and removes only: a poisoned map is still consistent.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for replies with `waiter`; the request's number.
    pub fn add(&self, waiter: S) -> u64 {
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        self.waiting().insert(request, waiter);
        request
    }

    /// Stop waiting for `request`; its waiter, if it was still waiting.
    pub fn take(&self, request: u64) -> Option<S> {
        self.waiting().remove(&request)
    }
}

impl<S: Clone> Pending<S> {
    /// The waiter of `request`, which keeps waiting (for more replies).
    pub fn get(&self, request: u64) -> Option<S> {
        self.waiting().get(&request).cloned()
    }
}
