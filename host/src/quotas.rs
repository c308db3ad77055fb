//! Quotas enforced per connection, per tenant and per node: the most
//! connections a tenant, and the node as a whole, may hold, the hub calls a
//! tenant may run at once, and the most messages per second one connection
//! may send; and [`LimitCounters`], how often each limit stopped a tenant.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Semaphore;

/// A tenant, or the node, is at its connection limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectionQuota {
    #[error("Tenant '{tenant}' has reached its limit of {limit} connections.")]
    Tenant { tenant: String, limit: usize },
    #[error("The server has reached its limit of {limit} connections.")]
    Node { limit: usize },
}

impl ConnectionQuota {
    /// The setting of the limit.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Tenant { .. } => "max_connections",
            Self::Node { .. } => "connection.max_connections",
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    by_tenant: HashMap<String, usize>,
    total: usize,
}

/// Open connections per tenant on this node, and in all.
#[derive(Debug, Clone)]
pub struct ConnectionCounts {
    open: Arc<Mutex<Open>>,
    /// The most connections the node holds, all tenants together.
    node_limit: usize,
}

/// One admitted connection; the count goes down when it is dropped.
#[derive(Debug)]
pub struct Admission {
    counts: ConnectionCounts,
    tenant: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_tenant.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_tenant.remove(&self.tenant);
            }
        }
    }
}

impl ConnectionCounts {
    /// Counts for a node that holds at most `node_limit` connections.
    pub fn new(node_limit: usize) -> Self {
        Self {
            open: Arc::default(),
            node_limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // Single increments and decrements: never inconsistent.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn over(&self, open: &Open, tenant: &str, limit: Option<usize>) -> Result<(), ConnectionQuota> {
        if open.total >= self.node_limit {
            return Err(ConnectionQuota::Node {
                limit: self.node_limit,
            });
        }
        let count = open.by_tenant.get(tenant).copied().unwrap_or(0);
        match limit {
            Some(limit) if count >= limit => Err(ConnectionQuota::Tenant {
                tenant: tenant.to_owned(),
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Whether `tenant` could open one more connection (negotiate's early answer).
    pub fn check(&self, tenant: &str, limit: Option<usize>) -> Result<(), ConnectionQuota> {
        self.over(&self.lock(), tenant, limit)
    }

    /// Count one more connection of `tenant`, unless that passes the
    /// tenant's `limit` or the node's.
    pub fn admit(&self, tenant: &str, limit: Option<usize>) -> Result<Admission, ConnectionQuota> {
        let mut open = self.lock();
        self.over(&open, tenant, limit)?;
        open.total += 1;
        *open.by_tenant.entry(tenant.to_owned()).or_default() += 1;
        Ok(Admission {
            counts: self.clone(),
            tenant: tenant.to_owned(),
        })
    }

    /// Open connections of `tenant`.
    pub fn open(&self, tenant: &str) -> usize {
        self.lock().by_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// Open connections of every tenant.
    pub fn total(&self) -> usize {
        self.lock().total
    }
}

/// Hub calls each tenant may run at once on this node. A call holds one of
/// its tenant's slots while it runs (and with it an instance, up to the
/// memory limit, and a thread); the tenant's further calls wait for a slot,
/// so a tenant with many busy connections takes a bounded share of the
/// node's memory and threads.
#[derive(Debug, Clone, Default)]
pub struct CallSlots {
    /// By tenant: its limit, and the slots.
    by_tenant: Arc<PerTenant<usize, Arc<Semaphore>>>,
}

impl CallSlots {
    /// The slots of `tenant`, `limit` of them. A changed limit starts a new
    /// set: calls holding the old one finish on it.
    pub fn of(&self, tenant: &str, limit: usize) -> Arc<Semaphore> {
        self.by_tenant.with(
            tenant,
            limit,
            |limit| Arc::new(Semaphore::new(limit.max(1))),
            |slots| slots.clone(),
        )
    }
}

/// One value per tenant, made from one of the tenant's settings, and made
/// again when that setting changes.
#[derive(Debug)]
struct PerTenant<S, V>(Mutex<HashMap<String, (S, V)>>);

impl<S, V> Default for PerTenant<S, V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<S: Copy + PartialEq, V> PerTenant<S, V> {
    /// `use_` on `tenant`'s value for `setting`, made by `make` if there is
    /// none for it yet.
    fn with<R>(
        &self,
        tenant: &str,
        setting: S,
        make: impl FnOnce(S) -> V,
        use_: impl FnOnce(&mut V) -> R,
    ) -> R {
        // Only whole entries are replaced: a poisoned map is still whole.
        let mut by_tenant = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((current, value)) = by_tenant.get_mut(tenant)
            && *current == setting
        {
            return use_(value);
        }
        let mut value = make(setting);
        let result = use_(&mut value);
        by_tenant.insert(tenant.to_owned(), (setting, value));
        result
    }
}

/// How often each limit stopped something of a tenant on this node, by the
/// name of the limit's setting (`hub_limits.max_send_bytes`): what the
/// admin API's `GET /tenants/T/limits` answers. Every limit is counted
/// where it is hit, besides its log line and the caller's error.
///
/// It also keeps each tenant's last [`RECENT_ERRORS`] hub failures (traps
/// and limits, with their detail), for `GET /tenants/T/errors`.
#[derive(Debug, Clone, Default)]
pub struct LimitCounters {
    hits: Arc<Mutex<HashMap<String, BTreeMap<&'static str, u64>>>>,
    recent: Arc<Mutex<HashMap<String, VecDeque<HubFailure>>>>,
}

/// Failures kept per tenant.
pub const RECENT_ERRORS: usize = 50;
/// Bytes of a failure's detail kept (a trap's text carries a backtrace).
const MAX_DETAIL_BYTES: usize = 2048;

/// One failed hub call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFailure {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub hub: String,
    /// The method, or `on-connected`, `on-disconnected`.
    pub call: String,
    pub error: String,
}

impl LimitCounters {
    /// `limit` stopped something of `tenant`.
    pub fn hit(&self, tenant: &str, limit: &'static str) {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        let counts = match hits.get_mut(tenant) {
            Some(counts) => counts,
            None => hits.entry(tenant.to_owned()).or_default(),
        };
        *counts.entry(limit).or_default() += 1;
        drop(hits);
        crate::monitoring::limit_hit(tenant, limit);
    }

    /// A call of `call` on `hub` of `tenant` failed with `error`.
    pub fn hub_failed(&self, tenant: &str, hub: &str, call: &str, error: &str) {
        let end = error.floor_char_boundary(MAX_DETAIL_BYTES);
        let failure = HubFailure {
            at_ms: crate::millis::unix_now(),
            hub: hub.to_owned(),
            call: call.to_owned(),
            error: error[..end].to_owned(),
        };
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let kept = recent.entry(tenant.to_owned()).or_default();
        if kept.len() >= RECENT_ERRORS {
            kept.pop_front();
        }
        kept.push_back(failure);
    }

    /// The last failures of `tenant`'s hubs, newest first.
    pub fn recent_failures(&self, tenant: &str) -> Vec<HubFailure> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .get(tenant)
            .map(|kept| kept.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The counts of `tenant`, by limit.
    pub fn of(&self, tenant: &str) -> BTreeMap<String, u64> {
        let hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        hits.get(tenant)
            .into_iter()
            .flatten()
            .map(|(limit, count)| ((*limit).to_owned(), *count))
            .collect()
    }
}

/// A token bucket: `rate` messages a second, bursts of up to `rate`.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl RateLimit {
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate,
            last: tokio::time::Instant::now(),
        }
    }

    /// Take one token; false when the sender is over its rate.
    pub fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One [`RateLimit`] per tenant, at the rate its settings give now.
#[derive(Debug, Default)]
pub struct TenantRates {
    buckets: PerTenant<u32, RateLimit>,
}

impl TenantRates {
    /// Take one of `tenant`'s tokens at `rate` a second; false when it is
    /// over. A changed rate starts a new, full bucket.
    pub fn allow(&self, tenant: &str, rate: u32) -> bool {
        self.buckets
            .with(tenant, rate, RateLimit::new, |bucket| bucket.allow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_and_limits_connections() {
        let counts = ConnectionCounts::new(100);
        let first = counts.admit("t", Some(2));
        let second = counts.admit("t", Some(2));
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(
            counts.check("t", Some(2)).map_err(|e| e.to_string()),
            Err("Tenant 't' has reached its limit of 2 connections.".to_owned())
        );
        assert!(counts.admit("t", Some(2)).is_err());
        assert!(
            counts.admit("other", Some(2)).is_ok(),
            "tenants are counted apart"
        );
        drop(first);
        assert_eq!(counts.open("t"), 1);
        assert!(counts.admit("t", Some(2)).is_ok());
    }

    #[test]
    fn the_node_limit_counts_every_tenant() {
        let counts = ConnectionCounts::new(2);
        let a = counts.admit("a", None);
        let b = counts.admit("b", None);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(
            counts.admit("c", None).map(drop).map_err(|e| e.to_string()),
            Err("The server has reached its limit of 2 connections.".to_owned())
        );
        drop(a);
        assert_eq!(counts.total(), 1);
        assert!(counts.admit("c", None).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refills_over_time() {
        let mut limit = RateLimit::new(3);
        assert!(limit.allow() && limit.allow() && limit.allow());
        assert!(!limit.allow(), "a burst is capped at the rate");
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(limit.allow(), "a third of a second buys one message");
        assert!(!limit.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn tenant_rates_are_apart_and_follow_the_setting() {
        let rates = TenantRates::default();
        assert!(rates.allow("a", 2) && rates.allow("a", 2));
        assert!(!rates.allow("a", 2), "a's burst is spent");
        assert!(rates.allow("b", 2), "b has its own bucket");
        let raised = (0..6).filter(|_| rates.allow("a", 5)).count();
        assert_eq!(raised, 5, "a raised rate starts a full bucket of its size");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(rates.allow("a", 5), "and refills at its rate");
        assert!(!rates.allow("a", 5));
    }
}
