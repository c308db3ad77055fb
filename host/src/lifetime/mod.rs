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
//!   busy backplane queues or drops (see [`crate::backplane`]).
//!
//! Group membership changes are applied on the node that owns the
//! connection: a change for a connection elsewhere is sent to its node, which
//! answers; the caller waits up to the group timeout (see `groups.rs`).

mod groups;
mod local;
mod message;
mod nodes;

pub use local::LocalConnection;
pub use message::{Control, Envelope, GroupReply, GroupRequest, Message, Wire};
pub use nodes::Heartbeat;

use crate::backplane::channels::Channels;
use crate::backplane::{Backplane, Delivery, Subscribed};
use crate::connection::outbound::{CloseRequest, Frame};
use crate::ids::NodeId;
use local::{HubConnections, Interest};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

/// Longest group name or user id, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;

/// One hub of one tenant: the scope of every connection, group and user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubKey {
    tenant: Arc<str>,
    hub: Arc<str>,
}

/// A tenant or hub name that is not `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} name '{name}': use 1-63 of a-z, 0-9 and '-', not starting with '-'")]
pub struct InvalidName {
    kind: &'static str,
    name: String,
}

fn check_name(kind: &'static str, name: &str) -> Result<(), InvalidName> {
    let bytes = name.as_bytes();
    let valid = (1..=63).contains(&bytes.len())
        && bytes[0] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}

impl HubKey {
    pub fn new(tenant: &str, hub: &str) -> Result<Self, InvalidName> {
        check_name("tenant", tenant)?;
        check_name("hub", hub)?;
        Ok(Self {
            tenant: tenant.into(),
            hub: hub.into(),
        })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn hub(&self) -> &str {
        &self.hub
    }
}

impl fmt::Display for HubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.hub)
    }
}

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
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    #[error("no connection '{0}' on this hub")]
    UnknownConnection(String),
    #[error("the node of connection '{0}' did not answer in time")]
    Timeout(String),
    #[error("group names must be 1 to {MAX_NAME_BYTES} bytes")]
    BadName,
}

/// How a lifetime manager names channels and waits for other nodes.
#[derive(Debug, Clone)]
pub struct LifetimeConfig {
    pub channels: Channels,
    /// How long a group change for a connection on another node may take.
    pub group_timeout: Duration,
    /// How often a node says it is alive (see [`nodes`]).
    pub heartbeat_interval: Duration,
}

impl LifetimeConfig {
    pub fn new(cluster_prefix: &str) -> Self {
        Self {
            channels: Channels::new(cluster_prefix),
            group_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(2),
        }
    }
}

/// Delivery and groups for every hub on this node.
pub struct HubLifetimeManager {
    node: NodeId,
    /// `node` as text, as envelopes carry it.
    node_name: String,
    channels: Channels,
    group_timeout: Duration,
    backplane: Arc<dyn Backplane>,
    hubs: RwLock<HashMap<HubKey, HubConnections>>,
    pending: groups::Pending,
    nodes: nodes::Nodes,
    /// Who hears about [`Control`] messages (the deployer).
    control: RwLock<Option<ControlHandler>>,
}

/// Called with every [`Control`] message, from the receiving task: it must
/// return quickly (note the change, wake a task).
pub type ControlHandler = Arc<dyn Fn(Control) + Send + Sync>;

impl HubLifetimeManager {
    /// A manager for node `node`, receiving from `backplane` until dropped.
    pub fn start(node: NodeId, config: LifetimeConfig, backplane: Arc<dyn Backplane>) -> Arc<Self> {
        let incoming = backplane.take_incoming();
        // Readiness (`/readyz`) covers this one: it is in effect once the
        // backplane is connected.
        let _ = backplane.subscribe(&config.channels.node(node));
        let _ = backplane.subscribe(&config.channels.nodes());
        let manager = Arc::new(Self {
            node,
            node_name: node.to_string(),
            channels: config.channels,
            group_timeout: config.group_timeout,
            backplane,
            hubs: RwLock::default(),
            pending: groups::Pending::default(),
            nodes: nodes::Nodes::new(config.heartbeat_interval),
            control: RwLock::default(),
        });
        if let Some(incoming) = incoming {
            tokio::spawn(receive(Arc::downgrade(&manager), incoming));
        } else {
            tracing::error!(
                "backplane incoming stream already taken; cross-node messages will not arrive"
            );
        }
        manager
    }

    pub fn node(&self) -> NodeId {
        self.node
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

    /// Receive [`Control`] messages from every node (this one included) with
    /// `handler`. The returned subscription is in effect once settled.
    pub fn on_control(&self, handler: ControlHandler) -> Subscribed {
        *self.control.write().unwrap_or_else(|e| e.into_inner()) = Some(handler);
        self.backplane.subscribe(&self.channels.control())
    }

    /// Tell every node (this one included) about `control`.
    pub fn announce(&self, control: Control) {
        self.publish_wire(&self.channels.control(), &Wire::Control(control));
    }

    /// Close every local connection of `hub` with `request` (the hub is gone).
    pub fn close_hub(&self, hub: &HubKey, request: &CloseRequest) -> usize {
        let hubs = self.read();
        let Some(connections) = hubs.get(hub) else {
            return 0;
        };
        for connection in connections.connections() {
            connection.outbound.close(request.clone());
        }
        connections.len()
    }

    /// The backplane this node publishes on.
    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.backplane
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<HubKey, HubConnections>> {
        // Every mutation below completes its map updates before anything can
        // panic, so a poisoned lock still guards consistent data.
        self.hubs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<HubKey, HubConnections>> {
        self.hubs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection arrived on this node. Await the result before relying
    /// on messages from other nodes reaching it.
    pub fn add_connection(&self, hub: &HubKey, connection: LocalConnection) -> Subscribed {
        let user = connection.user_id.clone();
        let mut hubs = self.write();
        let connections = hubs.entry(hub.clone()).or_default();
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
        subscribed
    }

    /// A connection left this node: it leaves its groups too.
    pub fn remove_connection(&self, hub: &HubKey, id: &str) {
        let mut hubs = self.write();
        let Some(connections) = hubs.get_mut(hub) else {
            return;
        };
        let Some((connection, emptied, user_interest)) = connections.remove(id) else {
            return;
        };
        for group in emptied {
            self.backplane
                .unsubscribe(&self.channels.group(hub, &group));
        }
        if user_interest == Interest::Lost
            && let Some(user) = connection.user_id
        {
            self.backplane.unsubscribe(&self.channels.user(hub, &user));
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
        self.read().get(hub).map_or(0, HubConnections::len)
    }

    /// Send `message` to `target`. Local recipients get it now; other nodes
    /// through one backplane publish.
    pub fn send(&self, hub: &HubKey, target: Target, message: Message) {
        let message = Arc::new(message);
        self.deliver_local(hub, &target, &message);
        if self.backplane.has_peers() {
            self.publish(hub, target, &message);
        }
    }

    fn deliver_local(&self, hub: &HubKey, target: &Target, message: &Arc<Message>) {
        if let Some(connections) = self.read().get(hub) {
            connections.deliver(target, || Frame::Message(message.clone()));
        }
    }

    fn publish(&self, hub: &HubKey, target: Target, message: &Message) {
        let channel = match &target {
            Target::All | Target::AllExcept(_) | Target::Groups(_) | Target::Users(_) => {
                self.channels.all(hub)
            }
            Target::Group(group) | Target::GroupExcept { group, .. } => {
                self.channels.group(hub, group)
            }
            Target::User(user) => self.channels.user(hub, user),
            Target::Connection(id) => match NodeId::owner_of(id) {
                Some(owner) if owner != self.node => self.channels.hub_node(hub, owner),
                _ => return,
            },
            Target::Connections(ids) => {
                let mut owners = ids
                    .iter()
                    .filter_map(|id| NodeId::owner_of(id))
                    .filter(|owner| *owner != self.node);
                match owners.next() {
                    None => return,
                    // All on one other node: straight to it.
                    Some(first) if owners.all(|o| o == first) => self.channels.hub_node(hub, first),
                    // Spread over nodes: still one publish, every node filters.
                    Some(_) => self.channels.all(hub),
                }
            }
        };
        self.publish_to(&channel, hub, target, message);
    }

    fn publish_to(&self, channel: &str, hub: &HubKey, to: Target, message: &Message) {
        self.publish_wire(
            channel,
            &Wire::Send(Envelope {
                origin: self.node_name.clone(),
                tenant: hub.tenant().to_owned(),
                hub: hub.hub().to_owned(),
                to,
                method: message.target().to_owned(),
                arguments: message.arguments().to_owned(),
            }),
        );
    }

    fn publish_wire(&self, channel: &str, wire: &Wire) {
        let payload = match serde_json::to_vec(wire) {
            Ok(payload) => payload,
            Err(error) => return tracing::error!(%error, "cannot encode backplane message"),
        };
        if let Err(error) = self.backplane.publish(channel, payload.into()) {
            tracing::warn!(%error, channel, "backplane publish failed; remote nodes miss this message");
        }
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
                if envelope.origin == self.node_name {
                    return;
                }
                let Some(hub) = envelope.hub_key() else {
                    return tracing::warn!(
                        channel = delivery.channel,
                        "dropping a send for an invalid hub"
                    );
                };
                let message = Arc::new(Message::new(envelope.method, envelope.arguments));
                self.deliver_local(&hub, &envelope.to, &message);
            }
            Wire::Group(request) => self.on_group_request(request),
            Wire::GroupReply(reply) => self.on_group_reply(reply),
            Wire::Node(beat) => self.on_heartbeat(beat),
            Wire::Control(control) => {
                let handler = self
                    .control
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(handler) = handler {
                    handler(control);
                }
            }
        }
    }

    /// Ask every local connection to close (shutdown).
    pub fn close_all(&self, request: &CloseRequest) {
        for connections in self.read().values() {
            for connection in connections.connections() {
                connection.outbound.close(request.clone());
            }
        }
    }
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
