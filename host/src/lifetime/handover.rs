//! Connections a drain moves between nodes: what the lifetime manager does
//! for them (see `crate::transport`'s handover), and barriers.
//!
//! Barriers: how a node learns that everything another node published
//! before some point has reached it.
//!
//! A node publishes a [`Wire::Barrier`](super::Wire) with a random number
//! on the recipient's channel of a hub, after everything it published
//! before. A hub's channels share one Redis connection per subscriber (one
//! shard on a Redis Cluster: they share a hash tag), which delivers in the
//! order Redis ran the publishes: once the recipient has the barrier, it has
//! every message of that hub published before it, from any node. The drain's
//! handover (see `crate::transport`) uses this to take a connection's
//! messages from the node it leaves without a gap.

use super::{HubLifetimeManager, Wire, read};
use crate::ids::NodeId;
use crate::names::HubKey;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a barrier nobody waited for is remembered.
const KEEP: Duration = Duration::from_secs(30);

/// Barriers that arrived, until someone waits for them.
#[derive(Default)]
pub(super) struct Barriers {
    seen: Mutex<HashMap<u64, Instant>>,
    arrived: Notify,
}

impl Barriers {
    fn seen(&self) -> MutexGuard<'_, HashMap<u64, Instant>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Barrier `id` arrived.
    pub fn arrived(&self, id: u64) {
        let mut seen = self.seen();
        // Bounded by what arrives in KEEP: barriers come one per handover.
        seen.retain(|_, at| at.elapsed() < KEEP);
        seen.insert(id, Instant::now());
        drop(seen);
        self.arrived.notify_waiters();
    }

    /// Wait until barrier `id` has arrived (true), at most `limit`.
    pub async fn wait(&self, id: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            // Registered before the check: an arrival in between wakes it.
            arrived.as_mut().enable();
            if self.seen().remove(&id).is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return false;
            }
        }
    }
}

impl HubLifetimeManager {
    /// Connection `id` of `hub` was handed to another node (a drain): it
    /// leaves this one, and group requests for it are no longer answered
    /// here.
    pub fn hand_over(&self, hub: &HubKey, id: &str) {
        self.remove_connection(hub, id);
        self.handed_over
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into());
    }

    pub(super) fn was_handed_over(&self, id: &str) -> bool {
        self.handed_over
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// Whether this node answers a request for connection `id`, which it
    /// does not have: the node its id names says so, unless it handed it
    /// over; any other node on the channel holds connections handed over
    /// from that node, but not this one, and keeps quiet for its holder.
    pub(super) fn answers_for_missing(&self, id: &str) -> bool {
        NodeId::owner_of(id) == Some(self.node) && !self.was_handed_over(id)
    }

    /// The groups connection `id` of `hub` is in here.
    pub fn groups_of(&self, hub: &HubKey, id: &str) -> Vec<String> {
        self.hub(hub)
            .map(|connections| read(&connections).groups_of(id))
            .unwrap_or_default()
    }

    /// Publish barrier `id` to `node`'s channel of `hub`, after everything
    /// this node published before (see `barrier.rs`).
    pub fn publish_barrier(&self, hub: &HubKey, node: NodeId, id: u64) {
        let channel = self.channels.hub_node(hub, node);
        self.publish_wire(hub.tenant(), &channel, &Wire::Barrier(id));
    }

    /// Wait, at most `limit`, until barrier `id` arrives here.
    pub async fn barrier(&self, id: u64, limit: Duration) -> bool {
        self.barriers.wait(id, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_barrier_is_found_whether_it_came_before_or_after_the_wait() {
        let barriers = Arc::new(Barriers::default());
        barriers.arrived(1);
        assert!(barriers.wait(1, Duration::from_millis(10)).await);
        assert!(!barriers.wait(1, Duration::from_millis(10)).await, "once");
        let later = barriers.clone();
        let waiting = tokio::spawn(async move { later.wait(2, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        barriers.arrived(3);
        barriers.arrived(2);
        assert!(waiting.await.unwrap_or(false));
    }
}
