//! Quotas enforced per connection and per tenant on one node: the most
//! connections a tenant may hold, and the most messages per second one
//! connection may send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A tenant is at its connection limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Tenant '{tenant}' has reached its limit of {limit} connections.")]
pub struct ConnectionQuota {
    pub tenant: String,
    pub limit: usize,
}

/// Open connections per tenant on this node.
#[derive(Debug, Default, Clone)]
pub struct ConnectionCounts {
    open: Arc<Mutex<HashMap<String, usize>>>,
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
        if let Some(count) = open.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

impl ConnectionCounts {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // Single increments and decrements: never inconsistent.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `tenant` could open one more connection (negotiate's early answer).
    pub fn check(&self, tenant: &str, limit: Option<usize>) -> Result<(), ConnectionQuota> {
        match limit {
            Some(limit) if self.open(tenant) >= limit => Err(ConnectionQuota {
                tenant: tenant.to_owned(),
                limit,
            }),
            _ => Ok(()),
        }
    }

    /// Count one more connection of `tenant`, unless that passes `limit`.
    pub fn admit(&self, tenant: &str, limit: Option<usize>) -> Result<Admission, ConnectionQuota> {
        let mut open = self.lock();
        let count = open.entry(tenant.to_owned()).or_default();
        if limit.is_some_and(|limit| *count >= limit) {
            return Err(ConnectionQuota {
                tenant: tenant.to_owned(),
                limit: limit.unwrap_or(0),
            });
        }
        *count += 1;
        Ok(Admission {
            counts: self.clone(),
            tenant: tenant.to_owned(),
        })
    }

    /// Open connections of `tenant`.
    pub fn open(&self, tenant: &str) -> usize {
        self.lock().get(tenant).copied().unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_and_limits_connections() {
        let counts = ConnectionCounts::default();
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

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refills_over_time() {
        let mut limit = RateLimit::new(3);
        assert!(limit.allow() && limit.allow() && limit.allow());
        assert!(!limit.allow(), "a burst is capped at the rate");
        tokio::time::advance(Duration::from_millis(400)).await;
        assert!(limit.allow(), "a third of a second buys one message");
        assert!(!limit.allow());
    }
}
