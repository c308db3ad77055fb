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
//! Group membership changes are applied on the node that owns the connection.

mod local;
mod message;

pub use local::LocalConnection;
pub use message::{Envelope, Message};

use crate::backplane::channels::Channels;
use crate::backplane::{Backplane, Delivery};
use crate::connection::outbound::{CloseRequest, Frame};
use crate::ids::NodeId;
use local::{HubConnections, Interest};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

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
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid { Ok(()) } else { Err(InvalidName { kind, name: name.to_owned() }) }
}

impl HubKey {
    pub fn new(tenant: &str, hub: &str) -> Result<Self, InvalidName> {
        check_name("tenant", tenant)?;
        check_name("hub", hub)?;
        Ok(Self { tenant: tenant.into(), hub: hub.into() })
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
    GroupExcept { group: String, excluded: Vec<String> },
    Groups(Vec<String>),
    User(String),
    Users(Vec<String>),
}

/// Why a group change failed; the text reaches the hub.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    #[error("no connection '{0}' on this hub")]
    UnknownConnection(String),
    #[error("connection '{0}' is on another node; changing its groups needs the Redis backplane")]
    Remote(String),
    #[error("group names must be 1 to {MAX_NAME_BYTES} bytes")]
    BadName,
}

/// Delivery and groups for every hub on this node.
pub struct HubLifetimeManager {
    node: NodeId,
    channels: Channels,
    backplane: Arc<dyn Backplane>,
    hubs: RwLock<HashMap<HubKey, HubConnections>>,
}

impl HubLifetimeManager {
    /// A manager for node `node`, receiving from `backplane` until dropped.
    pub fn start(node: NodeId, channels: Channels, backplane: Arc<dyn Backplane>) -> Arc<Self> {
        let incoming = backplane.take_incoming();
        backplane.subscribe(&channels.node(node));
        let manager = Arc::new(Self { node, channels, backplane, hubs: RwLock::default() });
        if let Some(incoming) = incoming {
            tokio::spawn(receive(Arc::downgrade(&manager), incoming));
        } else {
            tracing::error!("backplane incoming stream already taken; cross-node messages will not arrive");
        }
        manager
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<HubKey, HubConnections>> {
        // Every mutation below completes its map updates before anything can
        // panic, so a poisoned lock still guards consistent data.
        self.hubs.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<HubKey, HubConnections>> {
        self.hubs.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection arrived on this node.
    pub fn add_connection(&self, hub: &HubKey, connection: LocalConnection) {
        let user = connection.user_id.clone();
        let mut hubs = self.write();
        let connections = hubs.entry(hub.clone()).or_default();
        if connections.is_empty() {
            self.backplane.subscribe(&self.channels.all(hub));
        }
        if connections.insert(connection) == Interest::Gained
            && let Some(user) = user
        {
            self.backplane.subscribe(&self.channels.user(hub, &user));
        }
    }

    /// A connection left this node: it leaves its groups too.
    pub fn remove_connection(&self, hub: &HubKey, id: &str) {
        let mut hubs = self.write();
        let Some(connections) = hubs.get_mut(hub) else { return };
        let Some((connection, emptied, user_interest)) = connections.remove(id) else { return };
        for group in emptied {
            self.backplane.unsubscribe(&self.channels.group(hub, &group));
        }
        if user_interest == Interest::Lost
            && let Some(user) = connection.user_id
        {
            self.backplane.unsubscribe(&self.channels.user(hub, &user));
        }
        if connections.is_empty() {
            hubs.remove(hub);
            self.backplane.unsubscribe(&self.channels.all(hub));
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
            Target::Group(group) | Target::GroupExcept { group, .. } => self.channels.group(hub, group),
            Target::User(user) => self.channels.user(hub, user),
            Target::Connection(id) => match NodeId::owner_of(id) {
                Some(owner) if owner != self.node => self.channels.node(owner),
                _ => return,
            },
            Target::Connections(ids) => {
                // One publish per other node that owns some of them.
                let mut by_node: HashMap<NodeId, Vec<String>> = HashMap::new();
                for id in ids {
                    if let Some(owner) = NodeId::owner_of(id).filter(|o| *o != self.node) {
                        by_node.entry(owner).or_default().push(id.clone());
                    }
                }
                for (owner, ids) in by_node {
                    self.publish_to(&self.channels.node(owner), hub, Target::Connections(ids), message);
                }
                return;
            }
        };
        self.publish_to(&channel, hub, target, message);
    }

    fn publish_to(&self, channel: &str, hub: &HubKey, to: Target, message: &Message) {
        let envelope = Envelope {
            origin: self.node.to_string(),
            tenant: hub.tenant().to_owned(),
            hub: hub.hub().to_owned(),
            to,
            method: message.target().to_owned(),
            arguments: message.arguments().to_owned(),
        };
        let payload = match serde_json::to_vec(&envelope) {
            Ok(payload) => payload,
            Err(error) => return tracing::error!(%error, "cannot encode backplane envelope"),
        };
        if let Err(error) = self.backplane.publish(channel, payload.into()) {
            tracing::warn!(%error, channel, "backplane publish failed; remote nodes miss this message");
        }
    }

    /// A message from another node.
    fn on_delivery(&self, delivery: Delivery) {
        let envelope: Envelope = match serde_json::from_slice(&delivery.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                return tracing::warn!(%error, channel = delivery.channel, "dropping malformed backplane message");
            }
        };
        if envelope.origin == self.node.to_string() {
            return;
        }
        let Some(hub) = envelope.hub_key() else {
            return tracing::warn!(channel = delivery.channel, "dropping backplane message for an invalid hub");
        };
        let message = Arc::new(Message::new(envelope.method, envelope.arguments));
        self.deliver_local(&hub, &envelope.to, &message);
    }

    /// Put connection `id` of `hub` into `group`.
    pub fn add_to_group(&self, hub: &HubKey, id: &str, group: &str) -> Result<(), GroupError> {
        check_group(group)?;
        let mut hubs = self.write();
        match hubs.get_mut(hub).and_then(|c| c.join(id, group)) {
            Some(Interest::Gained) => self.backplane.subscribe(&self.channels.group(hub, group)),
            Some(_) => {}
            None => return Err(self.not_here(id)),
        }
        Ok(())
    }

    /// Take connection `id` of `hub` out of `group`.
    pub fn remove_from_group(&self, hub: &HubKey, id: &str, group: &str) -> Result<(), GroupError> {
        check_group(group)?;
        let mut hubs = self.write();
        match hubs.get_mut(hub).and_then(|c| c.remove_from_group(id, group)) {
            Some(Interest::Lost) => self.backplane.unsubscribe(&self.channels.group(hub, group)),
            Some(_) => {}
            None => return Err(self.not_here(id)),
        }
        Ok(())
    }

    fn not_here(&self, id: &str) -> GroupError {
        match NodeId::owner_of(id) {
            Some(owner) if owner != self.node => GroupError::Remote(id.to_owned()),
            _ => GroupError::UnknownConnection(id.to_owned()),
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

fn check_group(group: &str) -> Result<(), GroupError> {
    if group.is_empty() || group.len() > MAX_NAME_BYTES { Err(GroupError::BadName) } else { Ok(()) }
}

async fn receive(manager: Weak<HubLifetimeManager>, mut incoming: tokio::sync::mpsc::Receiver<Delivery>) {
    while let Some(delivery) = incoming.recv().await {
        let Some(manager) = manager.upgrade() else { return };
        manager.on_delivery(delivery);
    }
}
