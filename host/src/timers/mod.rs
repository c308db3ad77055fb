//! Timers: a hub schedules a call of one of its own methods for later (the
//! `timers` capability of world 0.2).
//!
//! Guarantees:
//! - a timer fires once, cluster-wide, on whichever node is alive when it is
//!   due, on the hub's version active then; its call has no connection (an
//!   empty connection id) and runs under the hub's limits;
//! - a node claims due timers with a lease and deletes each once its call
//!   ended, renewing the leases while calls run: a node that dies mid-call
//!   loses its claims when the lease ([`LEASE`]) runs out, and another node
//!   fires them then. So a timer is delivered at least once; twice only if
//!   its node dies between the end of the call and the delete;
//! - quotas: timers per tenant (pending, cluster-wide on Redis), the shortest
//!   and the longest delay, checked before anything is stored.
//!
//! [`memory::MemoryTimers`] keeps a node alone's timers (in its data
//! directory when it has one); [`redis::RedisTimers`] a cluster's, in its
//! Redis. Backends block: call them from inside hub calls (which leave
//! their async worker to wait, see `workers`) or the scheduler's thread.

pub mod memory;
pub mod redis;

#[cfg(test)]
mod tests;

use crate::names::HubKey;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a claimed timer stays with its node without a renewal.
pub const LEASE: Duration = Duration::from_millis(500);

/// One scheduled call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub id: String,
    pub tenant: String,
    pub hub: String,
    pub method: String,
    /// The call's arguments, a JSON array.
    pub args: String,
    /// When it is due, in Unix milliseconds.
    pub due_ms: u64,
}

impl Timer {
    pub fn hub_key(&self) -> Option<HubKey> {
        HubKey::new(&self.tenant, &self.hub).ok()
    }
}

/// Why a timer was not scheduled; the text reaches the hub.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimerError {
    #[error("the tenant has {0} pending timers, its limit (hub_limits.max_timers)")]
    Count(u64),
    #[error(
        "a timer's delay must be {min} to {max} ms (hub_limits.min_timer_delay_ms, hub_limits.max_timer_delay_ms)"
    )]
    Delay { min: u64, max: u64 },
    #[error("method names must be 1 to 256 bytes")]
    BadMethod,
    /// The backend failed; the detail is logged, not shown to the hub.
    #[error("timers are unavailable right now")]
    Unavailable(String),
}

impl TimerError {
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Self::Count(_) => Some("hub_limits.max_timers"),
            Self::Delay { .. } => Some("hub_limits.max_timer_delay_ms"),
            _ => None,
        }
    }
}

/// Where timers are kept until they fire. Every method is atomic.
pub trait TimerBackend: Send + Sync {
    /// Keep `timer` if its tenant has fewer than `max_per_tenant` pending.
    fn add(&self, timer: &Timer, max_per_tenant: u64) -> Result<(), TimerError>;
    /// Cancel timer `id` of `hub` if it has not been claimed.
    fn cancel(&self, hub: &HubKey, id: &str) -> Result<bool, TimerError>;
    /// Claim up to `max` timers due at `now_ms`, and those whose lease ran
    /// out, for [`LEASE`].
    fn claim(&self, now_ms: u64, max: usize) -> Result<Vec<Timer>, TimerError>;
    /// Keep claims `ids` for another [`LEASE`] (their calls still run).
    fn renew(&self, ids: &[String]) -> Result<(), TimerError>;
    /// Timer `id` fired: forget it.
    fn done(&self, timer: &Timer) -> Result<(), TimerError>;
    /// Pending and claimed timers of `tenant`.
    fn count(&self, tenant: &str) -> Result<u64, TimerError>;
    /// Write what is not yet durable (a node alone's file, at shutdown).
    fn flush(&self) {}
}

pub use crate::millis::unix_now as now_ms;

/// A fresh timer id: 16 random bytes, hex.
pub fn new_id() -> Result<String, TimerError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| TimerError::Unavailable(e.to_string()))?;
    Ok(crate::ids::hex(&bytes))
}
