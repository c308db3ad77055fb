//! Negotiated connections, by connection token.
//!
//! Negotiate hands out a token; the transport then claims it. A token never
//! claimed expires after the disconnect timeout; a token in use cannot be
//! claimed twice (409); a token whose connection ended is gone (404).

use crate::lifetime::HubKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
struct Entry {
    hub: HubKey,
    connection_id: String,
    /// When negotiated; `None` once a transport has claimed it.
    negotiated_at: Option<Instant>,
}

/// What claiming a token found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The token's connection id; the caller now holds the token.
    Claimed(String),
    /// No such token for this hub.
    Unknown,
    /// Another transport holds it.
    InUse,
}

/// The table of tokens.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Tokens {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a negotiated connection.
    pub fn negotiated(&self, token: String, hub: HubKey, connection_id: String) {
        let entry = Entry {
            hub,
            connection_id,
            negotiated_at: Some(Instant::now()),
        };
        self.lock().insert(token, entry);
    }

    /// Claim `token` for a transport of `hub`.
    pub fn claim(&self, token: &str, hub: &HubKey) -> Claim {
        let mut entries = self.lock();
        match entries.get_mut(token) {
            Some(entry) if entry.hub == *hub => {
                if entry.negotiated_at.take().is_some() {
                    Claim::Claimed(entry.connection_id.clone())
                } else {
                    Claim::InUse
                }
            }
            _ => Claim::Unknown,
        }
    }

    /// The connection of `token` ended.
    pub fn release(&self, token: &str) {
        self.lock().remove(token);
    }

    /// Forget tokens negotiated longer than `max_age` ago and never claimed.
    pub fn expire(&self, max_age: Duration) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| e.negotiated_at.is_none_or(|at| at.elapsed() < max_age));
        before - entries.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_once_and_expires() -> anyhow::Result<()> {
        let tokens = Tokens::default();
        let hub = HubKey::new("t", "h")?;
        tokens.negotiated("tok".into(), hub.clone(), "id".into());
        assert_eq!(
            tokens.claim("tok", &HubKey::new("t", "other")?),
            Claim::Unknown
        );
        assert_eq!(tokens.claim("tok", &hub), Claim::Claimed("id".into()));
        assert_eq!(tokens.claim("tok", &hub), Claim::InUse);
        assert_eq!(
            tokens.expire(Duration::ZERO),
            0,
            "claimed tokens do not expire"
        );
        tokens.release("tok");
        assert_eq!(tokens.claim("tok", &hub), Claim::Unknown);
        tokens.negotiated("old".into(), hub.clone(), "id2".into());
        assert_eq!(tokens.expire(Duration::ZERO), 1);
        assert!(tokens.is_empty());
        Ok(())
    }
}
