//! The cluster: what makes this process one node among others.
//!
//! A [`Cluster`] owns the node's id, the registry of the other nodes (their
//! heartbeats, liveness and the URL each takes passed-on requests at, see
//! `nodes`), and the control channel every node hears hub and tenant
//! changes on. Delivery and groups are not its business: it owns the
//! backplane's incoming stream, handles its own channels (`{cluster}:nodes`,
//! `{cluster}:control`) and passes every other delivery on, in order, to
//! whoever took [`Cluster::take_deliveries`] (the lifetime manager), as
//! centrifuge's node hands broker events to its hub.
//!
//! Guarantees: a node's heartbeats and announcements are best effort, like
//! every backplane publish (at most once); liveness is judged from what was
//! heard, so a node is never declared dead before three heartbeat intervals
//! of silence or its own goodbye.

mod nodes;

pub use nodes::{Heartbeat, PeerUrls};

use crate::backplane::channels::Channels;
use crate::backplane::{Backplane, Delivery, NODE_ACCOUNT, Subscribed, publish_json};
use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Deliveries that wait for the lifetime manager; beyond this the cluster's
/// receiving task waits too, as the backplane's own queue does.
const DELIVERY_QUEUE: usize = 4096;

/// A change every node acts on: re-read the store for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Control {
    /// A hub's active version changed, or the hub was deleted.
    HubChanged { tenant: String, hub: String },
    /// The API's tenants changed.
    TenantsChanged,
    /// Tenant variables changed.
    VarsChanged,
}

/// What nodes say to the whole cluster.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Wire {
    /// Hubs or tenants changed in the store (on the control channel).
    Control(Control),
    /// A node is alive, or leaving (on the nodes channel).
    Node(Heartbeat),
}

/// Called with every [`Control`] message, from the receiving task: it must
/// return quickly (note the change, wake a task).
pub type ControlHandler = Arc<dyn Fn(Control) + Send + Sync>;

/// This node's membership of the cluster.
pub struct Cluster {
    node: NodeId,
    /// `node` as text, as wire messages carry it.
    node_name: String,
    channels: Channels,
    backplane: Arc<dyn Backplane>,
    nodes: nodes::Nodes,
    /// Who hears about [`Control`] messages (the deployer).
    control: RwLock<Option<ControlHandler>>,
    /// Every delivery that is not the cluster's own, until taken.
    deliveries: Mutex<Option<mpsc::Receiver<Delivery>>>,
    /// The subscription to heartbeats, until the first heartbeat waits for
    /// it: the other nodes answer a newcomer's first beat with theirs.
    hearing: Mutex<Option<crate::backplane::Subscribed>>,
    /// How many connections of each other node this one holds.
    adopting: Mutex<std::collections::HashMap<NodeId, usize>>,
    /// This node said goodbye (see [`Cluster::leave`]).
    left: std::sync::atomic::AtomicBool,
}

impl Cluster {
    /// Join the cluster named `prefix` on `backplane` as a fresh node,
    /// saying it is alive every `heartbeat_interval` once
    /// [`Cluster::start_heartbeats`] is called, and passing requests on only
    /// to the URLs `peers` allows. Receives until dropped.
    pub fn start(
        prefix: &str,
        heartbeat_interval: Duration,
        peers: PeerUrls,
        backplane: Arc<dyn Backplane>,
    ) -> Arc<Self> {
        let node = NodeId::random();
        let channels = Channels::new(prefix);
        let incoming = backplane.take_incoming();
        // Readiness (`/readyz`) covers this one: it is in effect once the
        // backplane is connected.
        let hearing = backplane.subscribe(&channels.nodes());
        let (tx, rx) = mpsc::channel(DELIVERY_QUEUE);
        let cluster = Arc::new(Self {
            node,
            node_name: node.to_string(),
            channels,
            backplane,
            nodes: nodes::Nodes::new(heartbeat_interval, peers),
            control: RwLock::default(),
            deliveries: Mutex::new(Some(rx)),
            hearing: Mutex::new(Some(hearing)),
            adopting: Mutex::default(),
            left: Default::default(),
        });
        match incoming {
            Some(incoming) => {
                tokio::spawn(receive(Arc::downgrade(&cluster), incoming, tx));
            }
            None => tracing::error!(
                "backplane incoming stream already taken; cross-node messages will not arrive"
            ),
        }
        cluster
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// `node` as text, as wire messages carry it.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The channel names of this cluster.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// The backplane this node publishes on.
    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.backplane
    }

    /// Every delivery that is not the cluster's own, in arrival order;
    /// taken once, by the lifetime manager.
    pub fn take_deliveries(&self) -> Option<mpsc::Receiver<Delivery>> {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Receive [`Control`] messages from every node (this one included) with
    /// `handler`. The returned subscription is in effect once settled.
    pub fn on_control(&self, handler: ControlHandler) -> Subscribed {
        *self.control.write().unwrap_or_else(|e| e.into_inner()) = Some(handler);
        self.backplane.subscribe(&self.channels.control())
    }

    /// Tell every node (this one included) about `control`.
    pub fn announce(&self, control: Control) {
        self.publish(&self.channels.control(), &Wire::Control(control));
    }

    fn publish(&self, channel: &str, wire: &Wire) {
        publish_json(self.backplane.as_ref(), NODE_ACCOUNT, channel, wire);
    }

    /// Handle `delivery` if it is on one of the cluster's channels; else
    /// give it back.
    fn on_delivery(&self, delivery: Delivery) -> Option<Delivery> {
        if delivery.channel != self.channels.nodes() && delivery.channel != self.channels.control()
        {
            return Some(delivery);
        }
        match serde_json::from_slice(&delivery.payload) {
            Ok(Wire::Node(beat)) => self.on_heartbeat(beat),
            Ok(Wire::Control(control)) => {
                let handler = self
                    .control
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(handler) = handler {
                    handler(control);
                }
            }
            Err(error) => {
                tracing::warn!(%error, channel = delivery.channel, "dropping malformed cluster message");
            }
        }
        None
    }
}

async fn receive(
    cluster: Weak<Cluster>,
    mut incoming: mpsc::Receiver<Delivery>,
    rest: mpsc::Sender<Delivery>,
) {
    while let Some(delivery) = incoming.recv().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some(delivery) = cluster.on_delivery(delivery) else {
            continue;
        };
        drop(cluster);
        // Closed: the lifetime manager is gone (shutdown); the cluster's
        // own channels still work.
        let _ = rest.send(delivery).await;
    }
}
