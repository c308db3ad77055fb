//! The in-memory backplane: the default for a single node, and the test
//! double for a cluster (several lifetime managers sharing one [`MemoryBus`]).

use super::{Backplane, BackplaneError, BackplaneStats, Delivery, Subscribed};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// How many deliveries may wait for one node before further ones are dropped.
const INCOMING_CAPACITY: usize = 65_536;

/// The shared medium: which node hears which channel.
#[derive(Default)]
pub struct MemoryBus {
    inner: Mutex<Bus>,
    next_node: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Bus {
    nodes: HashMap<u64, mpsc::Sender<Delivery>>,
    subscribers: HashMap<String, HashSet<u64>>,
}

impl MemoryBus {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn lock(&self) -> MutexGuard<'_, Bus> {
        // A panic while holding this lock leaves the maps consistent (every
        // operation is a single insert or remove), so poisoning is harmless.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deliveries dropped because a node did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One node's attachment to a [`MemoryBus`].
pub struct MemoryBackplane {
    bus: Arc<MemoryBus>,
    node: u64,
    incoming: Mutex<Option<mpsc::Receiver<Delivery>>>,
}

impl MemoryBackplane {
    /// Attach a new node to `bus`.
    pub fn new(bus: Arc<MemoryBus>) -> Self {
        let node = bus.next_node.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(INCOMING_CAPACITY);
        bus.lock().nodes.insert(node, tx);
        Self {
            bus,
            node,
            incoming: Mutex::new(Some(rx)),
        }
    }

    /// A node on a bus of its own: the single-node default.
    pub fn standalone() -> Self {
        Self::new(MemoryBus::new())
    }
}

impl Drop for MemoryBackplane {
    fn drop(&mut self) {
        let mut bus = self.bus.lock();
        bus.nodes.remove(&self.node);
        for nodes in bus.subscribers.values_mut() {
            nodes.remove(&self.node);
        }
        bus.subscribers.retain(|_, nodes| !nodes.is_empty());
    }
}

impl Backplane for MemoryBackplane {
    fn publish(&self, _account: &str, channel: &str, payload: Bytes) -> Result<(), BackplaneError> {
        let bus = self.bus.lock();
        let Some(nodes) = bus.subscribers.get(channel) else {
            return Ok(());
        };
        // The publisher never hears itself here: it already delivered locally.
        for node in nodes.iter().filter(|n| **n != self.node) {
            let Some(tx) = bus.nodes.get(node) else {
                continue;
            };
            let delivery = Delivery {
                channel: channel.to_owned(),
                payload: payload.clone(),
            };
            if tx.try_send(delivery).is_err() {
                self.bus.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    channel,
                    "memory backplane: a node is not keeping up; message dropped"
                );
            }
        }
        Ok(())
    }

    fn subscribe(&self, channel: &str) -> Subscribed {
        self.bus
            .lock()
            .subscribers
            .entry(channel.to_owned())
            .or_default()
            .insert(self.node);
        Subscribed::done()
    }

    fn unsubscribe(&self, channel: &str) {
        let mut bus = self.bus.lock();
        if let Some(nodes) = bus.subscribers.get_mut(channel) {
            nodes.remove(&self.node);
            if nodes.is_empty() {
                bus.subscribers.remove(channel);
            }
        }
    }

    fn has_peers(&self) -> bool {
        self.bus.lock().nodes.len() > 1
    }

    fn stats(&self) -> BackplaneStats {
        BackplaneStats {
            dropped_incoming: self.bus.dropped(),
            ..BackplaneStats::default()
        }
    }

    fn take_incoming(&self) -> Option<mpsc::Receiver<Delivery>> {
        self.incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_to_subscribers_only() -> anyhow::Result<()> {
        let bus = MemoryBus::new();
        let a = MemoryBackplane::new(bus.clone());
        let b = MemoryBackplane::new(bus.clone());
        let mut a_in = a.take_incoming().ok_or_else(|| anyhow::anyhow!("taken"))?;
        let mut b_in = b.take_incoming().ok_or_else(|| anyhow::anyhow!("taken"))?;
        assert!(a.take_incoming().is_none());
        assert!(b.subscribe("x").ready(std::time::Duration::ZERO).await);
        a.publish("t", "x", Bytes::from_static(b"1"))?;
        a.publish("t", "y", Bytes::from_static(b"2"))?;
        let got = b_in.recv().await.ok_or_else(|| anyhow::anyhow!("closed"))?;
        assert_eq!((got.channel.as_str(), &got.payload[..]), ("x", &b"1"[..]));
        assert!(a_in.try_recv().is_err());
        b.unsubscribe("x");
        a.publish("t", "x", Bytes::from_static(b"3"))?;
        assert!(b_in.try_recv().is_err());
        Ok(())
    }
}
