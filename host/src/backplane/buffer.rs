//! The Redis publisher's outgoing buffer, shared fairly between tenants.
//!
//! While Redis is away, messages wait here, bounded in bytes. Each message
//! is charged to an account (its tenant; the node's own messages have one
//! too). When the bound is passed, the oldest message of the account holding
//! the most bytes is dropped: a tenant's burst evicts its own messages, and
//! an account within its fair share (the bound divided among the accounts
//! that want it) loses nothing. Messages leave in turns, one account after
//! another, in order within each account, which is all delivery promises
//! (per sender, and a sender is in one tenant).

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A message waiting for Redis.
pub(super) struct Outgoing {
    pub account: Arc<str>,
    pub channel: String,
    pub payload: Bytes,
    pub queued: Instant,
}

#[derive(Default)]
struct Account {
    items: VecDeque<Outgoing>,
    bytes: usize,
}

/// Outgoing messages per account, taken in turns.
#[derive(Default)]
pub(super) struct Buffer {
    accounts: HashMap<Arc<str>, Account>,
    /// Accounts with messages, each once, in the order of their turns.
    turns: VecDeque<Arc<str>>,
    bytes: usize,
    len: usize,
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Add `message` after its account's others.
    pub fn push(&mut self, message: Outgoing) {
        self.insert(message, false);
    }

    /// Put `message` back before its account's others, and its account's
    /// turn first: an unsent batch put back in reverse leaves the buffer as
    /// it was before the batch was taken.
    pub fn push_front(&mut self, message: Outgoing) {
        self.turns.retain(|turn| *turn != message.account);
        self.turns.push_front(message.account.clone());
        self.insert(message, true);
    }

    fn insert(&mut self, message: Outgoing, front: bool) {
        let size = message.payload.len();
        let account = match self.accounts.get_mut(&message.account) {
            Some(account) => account,
            None => {
                if !front {
                    self.turns.push_back(message.account.clone());
                }
                self.accounts.entry(message.account.clone()).or_default()
            }
        };
        account.bytes += size;
        if front {
            account.items.push_front(message);
        } else {
            account.items.push_back(message);
        }
        self.bytes += size;
        self.len += 1;
    }

    /// Drop the oldest messages of the heaviest accounts until at most
    /// `max_bytes` are held; returns how many were dropped.
    pub fn trim(&mut self, max_bytes: usize) -> u64 {
        let mut dropped = 0;
        while self.bytes > max_bytes {
            let heaviest = self
                .accounts
                .iter()
                .max_by_key(|(_, account)| account.bytes)
                .map(|(name, _)| name.clone());
            let Some(heaviest) = heaviest else { break };
            if self.pop_from(&heaviest).is_none() {
                break;
            }
            dropped += 1;
        }
        dropped
    }

    /// Drop messages that waited longer than `max_age`; returns how many.
    pub fn expire(&mut self, max_age: Duration) -> u64 {
        let mut expired = 0;
        let names: Vec<Arc<str>> = self.turns.iter().cloned().collect();
        for name in names {
            while self
                .accounts
                .get(&name)
                .and_then(|account| account.items.front())
                .is_some_and(|m| m.queued.elapsed() > max_age)
            {
                self.pop_from(&name);
                expired += 1;
            }
        }
        expired
    }

    /// The next message: the oldest of the account whose turn it is.
    pub fn pop(&mut self) -> Option<Outgoing> {
        let name = self.turns.pop_front()?;
        let message = self.pop_from(&name);
        if self.accounts.contains_key(&name) {
            self.turns.push_back(name);
        }
        message
    }

    /// The oldest message of `name`; an account left empty is forgotten.
    fn pop_from(&mut self, name: &Arc<str>) -> Option<Outgoing> {
        let account = self.accounts.get_mut(name)?;
        let message = account.items.pop_front()?;
        account.bytes -= message.payload.len();
        if account.items.is_empty() {
            self.accounts.remove(name);
            self.turns.retain(|turn| turn != name);
        }
        self.bytes -= message.payload.len();
        self.len -= 1;
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(account: &str, text: &str) -> Outgoing {
        Outgoing {
            account: account.into(),
            channel: "c".into(),
            payload: Bytes::copy_from_slice(text.as_bytes()),
            queued: Instant::now(),
        }
    }

    fn texts(buffer: &mut Buffer) -> Vec<String> {
        std::iter::from_fn(|| buffer.pop())
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect()
    }

    #[test]
    fn a_burst_evicts_its_own_messages() {
        let mut buffer = Buffer::default();
        buffer.push(message("quiet", "q1"));
        buffer.push(message("quiet", "q2"));
        for i in 0..10 {
            buffer.push(message("loud", &format!("l{i}")));
        }
        // 24 bytes held; 12 fit: the loud account drops its oldest.
        assert_eq!(buffer.trim(12), 6);
        assert_eq!(texts(&mut buffer), ["q1", "l6", "q2", "l7", "l8", "l9"]);
        assert_eq!(buffer.len(), 0);
    }

    #[test]
    fn each_account_keeps_its_order_and_gets_turns() {
        let mut buffer = Buffer::default();
        for text in ["a1", "a2", "a3"] {
            buffer.push(message("a", text));
        }
        buffer.push(message("b", "b1"));
        // A batch taken and put back, as when Redis fails under it.
        let batch: Vec<_> = std::iter::from_fn(|| buffer.pop()).take(3).collect();
        for message in batch.into_iter().rev() {
            buffer.push_front(message);
        }
        assert_eq!(texts(&mut buffer), ["a1", "b1", "a2", "a3"]);
    }

    #[test]
    fn expired_messages_go_from_every_account() {
        let mut buffer = Buffer::default();
        for account in ["a", "b"] {
            let mut old = message(account, "old");
            old.queued = Instant::now() - Duration::from_secs(2);
            buffer.push(old);
        }
        buffer.push(message("b", "new"));
        assert_eq!(buffer.expire(Duration::from_secs(1)), 2);
        assert_eq!(texts(&mut buffer), ["new"]);
    }
}
