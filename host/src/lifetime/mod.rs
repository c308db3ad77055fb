//! `HubLifetimeManager`: delivery and groups, wherever a connection lives.
//!
//! Guarantees:
//! - a send reaches every connection its [`Target`] names at the moment of the
//!   send, on this node directly and on other nodes through the [`Backplane`];
//! - delivery is at most once, in order per sender per node (one queue per
//!   connection, one backplane publish per send, filtered on arrival);
//! - every target is scoped to one hub of one tenant: ids, groups and users of
//!   other hubs are never matched, whatever their names;
//! - sending never blocks: a full connection queue closes that connection, a
//!   busy backplane queues or drops (see [`crate::backplane`]);
//! - per-recipient work holds only the lock of the hub it is for: the map of
//!   hubs is locked just long enough to find one, so a hub with many
//!   connections or a costly target never delays another hub's delivery.
//!
//! Group membership changes are applied on the node that owns the
//! connection: a change for a connection elsewhere is sent to its node, which
//! answers; the caller waits up to the group timeout (see `groups.rs`).
//! Presence (who is connected, in a group, a user's connections) is asked of
//! every node the same way (see `presence.rs`); so are client results and
//! the items of streams (see `calls.rs`).

mod calls;
mod close;
mod groups;
mod handover;
mod local;
mod message;
mod pending;
mod presence;

pub use calls::{CallError, CallReply, CallRequest, ConnectionCall};
pub use local::LocalConnection;
pub use message::{
    CloseEnvelope, Envelope, GroupReply, GroupRequest, PresenceReply, PresenceRequest, Wire,
};
pub use presence::{Presence, PresenceQuery};

use crate::backplane::channels::Channels;
use crate::backplane::{Backplane, Delivery, Subscribed, publish_json};
use crate::cluster::Cluster;
use crate::ids::{MessageId, NodeId};
use crate::monitoring;
use crate::names::{HubKey, MAX_NAME_BYTES};
use crate::outbound::{CloseRequest, Frame, Message};
use local::{HubConnections, Interest};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
#[cfg(test)]
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

/// Whom a message goes to, within one hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    All,
    AllExcept(Vec<String>),
    Connection(String),
    Connections(Vec<String>),
    Group(String),
    GroupExcept {
        group: String,
        excluded: Vec<String>,
    },
    Groups(Vec<String>),
    User(String),
    Users(Vec<String>),
}

/// Why a group change failed; the text reaches the hub.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GroupError {
    #[error("no connection '{0}' on this hub")]
    UnknownConnection(String),
    #[error("the node of connection '{0}' did not answer in time")]
    Timeout(String),
    #[error("group names must be 1 to {MAX_NAME_BYTES} bytes")]
    BadName,
    #[error(
        "connection '{connection}' is already in {limit} groups, its limit (hub_limits.max_groups_per_connection)"
    )]
    ConnectionGroups { connection: String, limit: usize },
    #[error(
        "this hub already has {0} groups on the node, its limit (hub_limits.max_groups_per_hub)"
    )]
    HubGroups(usize),
    /// The owner's text, from a node that gives no reason.
    #[error("{0}")]
    Refused(String),
}

/// How many groups a join may leave a connection in, and a hub with on the
/// connection's node: each group with local members is one backplane
/// subscription and a set of ids, so both are what a client can make the
/// host keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLimits {
    pub per_connection: usize,
    pub per_hub: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self {
            per_connection: 100,
            per_hub: 10_000,
        }
    }
}

/// Delivery and groups for every hub on this node.
pub struct HubLifetimeManager {
    cluster: Arc<Cluster>,
    /// The cluster's, kept here for the hot path.
    node: NodeId,
    channels: Channels,
    backplane: Arc<dyn Backplane>,
    /// How long a group change for a connection on another node may take.
    group_timeout: Duration,
    /// Lock order: this map, then one hub's connections.
    hubs: RwLock<HashMap<HubKey, Arc<RwLock<HubConnections>>>>,
    group_requests: pending::Pending<groups::Waiter>,
    presence_requests: pending::Pending<presence::Waiter>,
    call_requests: pending::Pending<calls::Waiter>,
    /// The number of this node's next send (see [`MessageId`]).
    next_send: AtomicU64,
    barriers: handover::Barriers,
    /// Connections this node handed to another (a drain): group requests
    /// for them are the new holder's to answer.
    handed_over: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
}

impl HubLifetimeManager {
    /// A manager for this node of `cluster`, receiving the deliveries the
    /// cluster passes on until dropped.
    pub fn start(cluster: Arc<Cluster>, group_timeout: Duration) -> Arc<Self> {
        let deliveries = cluster.take_deliveries();
        let backplane = cluster.backplane().clone();
        // Readiness (`/readyz`) covers this one: it is in effect once the
        // backplane is connected.
        let _ = backplane.subscribe(&cluster.channels().node(cluster.node()));
        let manager = Arc::new(Self {
            node: cluster.node(),
            channels: cluster.channels().clone(),
            cluster,
            backplane,
            group_timeout,
            hubs: RwLock::default(),
            group_requests: Default::default(),
            presence_requests: Default::default(),
            call_requests: Default::default(),
            next_send: AtomicU64::new(0),
            barriers: Default::default(),
            handed_over: Default::default(),
        });
        match deliveries {
            Some(deliveries) => {
                tokio::spawn(receive(Arc::downgrade(&manager), deliveries));
            }
            None => tracing::error!(
                "cluster deliveries already taken; cross-node messages will not arrive"
            ),
        }
        manager
    }

    /// Wait until `subscribed` is in effect, so that messages from other
    /// nodes cannot be missed from here on; at most the group timeout, and
    /// not at all while the backplane is down (the subscription then takes
    /// effect when it is back): nothing on a client's path waits for Redis.
    pub async fn settle(&self, subscribed: Subscribed) {
        if self.backplane.is_ready() && !subscribed.ready(self.group_timeout).await {
            tracing::warn!(
                "backplane subscription not confirmed in time; cross-node messages may be missed"
            );
        }
    }

    /// The connections of `hub`, with the map of hubs locked only to find them.
    fn hub(&self, hub: &HubKey) -> Option<Arc<RwLock<HubConnections>>> {
        self.hubs().get(hub).cloned()
    }

    fn hubs(&self) -> RwLockReadGuard<'_, HashMap<HubKey, Arc<RwLock<HubConnections>>>> {
        // Every mutation below completes its map updates before anything can
        // panic, so a poisoned lock still guards consistent data.
        self.hubs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn hubs_mut(&self) -> RwLockWriteGuard<'_, HashMap<HubKey, Arc<RwLock<HubConnections>>>> {
        self.hubs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection arrived on this node. Await the result before relying
    /// on messages from other nodes reaching it.
    pub fn add_connection(&self, hub: &HubKey, connection: LocalConnection) -> Subscribed {
        self.add_connection_in(hub, connection, &[])
    }

    /// A connection arrived, already a member of `groups`: one another node
    /// handed over (a drain). Its groups are joined without limits (it was
    /// within them where it came from), and while it is here this node also
    /// takes the messages sent to it by id, which go to the channel of the
    /// node its id names.
    pub fn add_connection_in(
        &self,
        hub: &HubKey,
        connection: LocalConnection,
        groups: &[String],
    ) -> Subscribed {
        let user = connection.user_id.clone();
        let id = connection.id.clone();
        let home = NodeId::owner_of(&id).filter(|home| *home != self.node);
        // The map stays locked while the hub's entry may be new, so that a
        // concurrent last removal cannot drop it in between.
        let mut hubs = self.hubs_mut();
        let connections = hubs.entry(hub.clone()).or_default().clone();
        let mut connections = write(&connections);
        let mut subscribed = Subscribed::done();
        if connections.is_empty() {
            subscribed = subscribed
                .and(self.backplane.subscribe(&self.channels.all(hub)))
                .and(
                    self.backplane
                        .subscribe(&self.channels.hub_node(hub, self.node)),
                );
        }
        if connections.insert(connection) == Interest::Gained
            && let Some(user) = user
        {
            subscribed = subscribed.and(self.backplane.subscribe(&self.channels.user(hub, &user)));
        }
        if let Some(home) = home {
            self.cluster.adopt(home);
            if connections.adopt(home) == Interest::Gained {
                subscribed =
                    subscribed.and(self.backplane.subscribe(&self.channels.hub_node(hub, home)));
            }
        }
        let unlimited = GroupLimits {
            per_connection: usize::MAX,
            per_hub: usize::MAX,
        };
        for group in groups {
            if let Some(Ok(Interest::Gained)) = connections.join(&id, group, unlimited) {
                subscribed =
                    subscribed.and(self.backplane.subscribe(&self.channels.group(hub, group)));
            }
        }
        subscribed
    }

    /// A connection left this node: it leaves its groups too.
    pub fn remove_connection(&self, hub: &HubKey, id: &str) {
        let mut hubs = self.hubs_mut();
        let Some(entry) = hubs.get(hub).cloned() else {
            return;
        };
        let mut connections = write(&entry);
        let Some((connection, emptied, user_interest)) = connections.remove(id) else {
            return;
        };
        // Results awaited from it fail now, its streams end.
        connection.invocations.close(&connection.outbound);
        for group in emptied {
            self.backplane
                .unsubscribe(&self.channels.group(hub, &group));
        }
        if user_interest == Interest::Lost
            && let Some(user) = connection.user_id
        {
            self.backplane.unsubscribe(&self.channels.user(hub, &user));
        }
        if let Some(home) = NodeId::owner_of(id).filter(|home| *home != self.node) {
            self.cluster.release(home);
            if connections.release(home) == Interest::Lost {
                self.backplane
                    .unsubscribe(&self.channels.hub_node(hub, home));
            }
        }
        if connections.is_empty() {
            hubs.remove(hub);
            self.backplane.unsubscribe(&self.channels.all(hub));
            self.backplane
                .unsubscribe(&self.channels.hub_node(hub, self.node));
        }
    }

    /// How many connections this node has for `hub`.
    pub fn local_count(&self, hub: &HubKey) -> usize {
        self.hub(hub)
            .map_or(0, |connections| read(&connections).len())
    }

    /// Send `message` to `target`. Local recipients get it now; other nodes
    /// through one backplane publish.
    pub fn send(&self, hub: &HubKey, target: Target, message: Message) {
        let id = MessageId {
            node: self.node,
            seq: self.next_send.fetch_add(1, Ordering::Relaxed),
        };
        let message = Arc::new(message.with_id(id));
        self.deliver_local(hub, &target, &message);
        if self.backplane.has_peers() {
            self.publish(hub, target, &message);
        }
    }

    fn deliver_local(&self, hub: &HubKey, target: &Target, message: &Arc<Message>) {
        self.deliver_with(hub, target, || Frame::Message(message.clone()));
    }

    fn deliver_with(&self, hub: &HubKey, target: &Target, frame_for: impl Fn() -> Frame) {
        if let Some(connections) = self.hub(hub) {
            let delivered = read(&connections).deliver(target, frame_for);
            monitoring::delivered(hub.tenant(), hub.hub(), delivered);
        }
    }

    fn publish(&self, hub: &HubKey, target: Target, message: &Message) {
        if let Some(channel) = self.channel_for(hub, &target) {
            self.publish_to(&channel, hub, target, message);
        }
    }

    /// The one channel that reaches every other node `target` may have
    /// recipients on; `None` when no other node can have one.
    fn channel_for(&self, hub: &HubKey, target: &Target) -> Option<String> {
        Some(match target {
            Target::All | Target::AllExcept(_) | Target::Groups(_) | Target::Users(_) => {
                self.channels.all(hub)
            }
            Target::Group(group) | Target::GroupExcept { group, .. } => {
                self.channels.group(hub, group)
            }
            Target::User(user) => self.channels.user(hub, user),
            Target::Connection(id) => match NodeId::owner_of(id) {
                Some(owner) if owner != self.node => self.channels.hub_node(hub, owner),
                _ => return None,
            },
            Target::Connections(ids) => {
                let mut owners = ids
                    .iter()
                    .filter_map(|id| NodeId::owner_of(id))
                    .filter(|owner| *owner != self.node);
                match owners.next() {
                    None => return None,
                    // All on one other node: straight to it.
                    Some(first) if owners.all(|o| o == first) => self.channels.hub_node(hub, first),
                    // Spread over nodes: still one publish, every node filters.
                    Some(_) => self.channels.all(hub),
                }
            }
        })
    }

    fn publish_to(&self, channel: &str, hub: &HubKey, to: Target, message: &Message) {
        self.publish_wire(
            hub.tenant(),
            channel,
            &Wire::Send(Envelope {
                origin: self.cluster.node_name().to_owned(),
                tenant: hub.tenant().to_owned(),
                hub: hub.hub().to_owned(),
                to,
                method: message.target().to_owned(),
                arguments: message.arguments().to_owned(),
                seq: message.id().map(|id| id.seq),
            }),
        );
    }

    /// Publish `wire`, charged to `tenant`.
    fn publish_wire(&self, tenant: &str, channel: &str, wire: &Wire) {
        publish_json(self.backplane.as_ref(), tenant, channel, wire);
    }

    /// The hub a send or close published by `origin` names, unless it is
    /// this node's own echo or names no valid hub (logged).
    fn foreign_hub(
        &self,
        origin: &str,
        (tenant, hub): (&str, &str),
        channel: &str,
        what: &str,
    ) -> Option<HubKey> {
        if origin == self.cluster.node_name() {
            return None;
        }
        let key = HubKey::new(tenant, hub).ok();
        if key.is_none() {
            tracing::warn!(channel, what, "dropping a message for an invalid hub");
        }
        key
    }

    /// The node a request for one of our connections came from; `None` for
    /// this node's own echo, or an origin that is no node id (logged).
    fn requesting_peer(&self, origin: &str, what: &str) -> Option<NodeId> {
        let Some(node) = NodeId::parse(origin) else {
            tracing::warn!(origin, "dropping a {what} from an invalid node id");
            return None;
        };
        (node != self.node).then_some(node)
    }

    /// A message from another node.
    fn on_delivery(self: &Arc<Self>, delivery: Delivery) {
        let wire: Wire = match serde_json::from_slice(&delivery.payload) {
            Ok(wire) => wire,
            Err(error) => {
                return tracing::warn!(%error, channel = delivery.channel, "dropping malformed backplane message");
            }
        };
        match wire {
            Wire::Send(envelope) => {
                let named = (envelope.tenant.as_str(), envelope.hub.as_str());
                let Some(hub) =
                    self.foreign_hub(&envelope.origin, named, &delivery.channel, "send")
                else {
                    return;
                };
                let mut message = Message::new(envelope.method, envelope.arguments);
                if let (Some(seq), Some(node)) = (envelope.seq, NodeId::parse(&envelope.origin)) {
                    message = message.with_id(MessageId { node, seq });
                }
                let message = Arc::new(message);
                self.deliver_local(&hub, &envelope.to, &message);
            }
            Wire::Close(envelope) => {
                let named = (envelope.tenant.as_str(), envelope.hub.as_str());
                let Some(hub) =
                    self.foreign_hub(&envelope.origin, named, &delivery.channel, "close")
                else {
                    return;
                };
                let request = CloseRequest {
                    error: envelope.reason,
                    allow_reconnect: envelope.allow_reconnect,
                    handover: false,
                };
                self.close_local(&hub, &envelope.to, &request);
            }
            Wire::Group(request) => self.on_group_request(request),
            Wire::GroupReply(reply) => self.on_group_reply(reply),
            Wire::Presence(request) => self.on_presence_request(request),
            Wire::PresenceReply(reply) => self.on_presence_reply(reply),
            Wire::Barrier(id) => self.barriers.arrived(id),
            Wire::Call(request) => self.on_call_request(request),
            Wire::CallReply(reply) => self.on_call_reply(reply),
        }
    }
}

fn read(connections: &RwLock<HubConnections>) -> RwLockReadGuard<'_, HubConnections> {
    // As for the map of hubs: updates complete before anything can panic.
    connections.read().unwrap_or_else(|e| e.into_inner())
}

fn write(connections: &RwLock<HubConnections>) -> RwLockWriteGuard<'_, HubConnections> {
    connections.write().unwrap_or_else(|e| e.into_inner())
}

async fn receive(
    manager: Weak<HubLifetimeManager>,
    mut incoming: tokio::sync::mpsc::Receiver<Delivery>,
) {
    while let Some(delivery) = incoming.recv().await {
        let Some(manager) = manager.upgrade() else {
            return;
        };
        manager.on_delivery(delivery);
    }
}

#[cfg(test)]
mod tests;
