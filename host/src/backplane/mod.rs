//! The backplane: thin node-to-node pub/sub that scale-out rides on.
//!
//! Guarantees a [`Backplane`] gives its user, the lifetime manager:
//! - `publish` never blocks and never waits on the network: it queues or drops,
//!   so a hub call never hangs on the backplane;
//! - delivery is at most once, in publish order per publishing node and channel;
//! - a node receives what is published on the channels it subscribes to,
//!   including its own publications (the caller filters its own echo);
//! - channel names are matched literally: no patterns, so no user-chosen name
//!   can reach another tenant's channels.
//!
//! Subscriptions are per node, not per connection: the lifetime manager counts
//! references and subscribes once per channel.

mod buffer;
pub mod channels;
pub mod memory;
pub mod redis;
mod sharded;
mod subscription;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The `[backplane]` section: buffering while Redis is away, and how long
/// nodes wait for each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackplaneSettings {
    /// Bytes of cross-node messages kept while Redis is unreachable.
    pub max_buffer_bytes: usize,
    /// How long a cross-node message may wait for Redis before it is dropped.
    #[serde(rename = "max_buffer_age_ms", with = "crate::millis")]
    pub max_buffer_age: Duration,
    /// After Redis returns, how long to hold buffered messages so that other
    /// nodes (which reconnect within the backoff maximum) have resubscribed.
    #[serde(rename = "resubscribe_grace_ms", with = "crate::millis")]
    pub resubscribe_grace: Duration,
    /// How long a group change for a connection on another node may take.
    #[serde(rename = "group_timeout_ms", with = "crate::millis::positive")]
    pub group_timeout: Duration,
    /// How often each node says it is alive; silent for three is dead.
    #[serde(rename = "heartbeat_interval_ms", with = "crate::millis::positive")]
    pub heartbeat_interval: Duration,
    /// URL prefixes of other nodes this node passes requests on to (their
    /// advertised URLs arrive through Redis). Empty: http(s) to a private or
    /// loopback address only.
    pub peer_urls: Vec<String>,
}

impl Default for BackplaneSettings {
    fn default() -> Self {
        Self {
            max_buffer_bytes: 16 << 20,
            max_buffer_age: Duration::from_secs(30),
            resubscribe_grace: Duration::from_secs(1),
            group_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(2),
            peer_urls: Vec::new(),
        }
    }
}

/// One message received from the backplane.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: String,
    pub payload: Bytes,
}

/// Counters of a backplane, for logs, `/readyz` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackplaneStats {
    /// Messages handed to the medium.
    pub published: u64,
    /// Messages received from it.
    pub received: u64,
    /// Outgoing messages waiting (for Redis to come back, say).
    pub buffered: u64,
    /// Outgoing messages dropped because the buffer was full.
    pub dropped_overflow: u64,
    /// Outgoing messages dropped because they waited too long.
    pub dropped_expired: u64,
    /// Outgoing messages lost in flight when the connection failed.
    pub dropped_in_flight: u64,
    /// Incoming messages dropped because this node did not keep up.
    pub dropped_incoming: u64,
}

/// Resolves when subscriptions are in effect, so that a message published
/// after it cannot be missed. Dropping it is fine: subscribing goes on.
#[derive(Debug, Default)]
#[must_use = "await `ready` where a missed message matters"]
pub struct Subscribed(Vec<oneshot::Receiver<()>>);

impl Subscribed {
    /// Already in effect.
    pub fn done() -> Self {
        Self::default()
    }

    /// In effect once `ack` fires.
    pub fn pending(ack: oneshot::Receiver<()>) -> Self {
        Self(vec![ack])
    }

    /// Both.
    pub fn and(mut self, other: Self) -> Self {
        self.0.extend(other.0);
        self
    }

    /// Wait until in effect, or at most `limit` (the backplane may be down;
    /// the subscription then takes effect when it is back). Returns whether
    /// everything is in effect.
    pub async fn ready(self, limit: Duration) -> bool {
        let all = futures_util::future::join_all(self.0);
        matches!(tokio::time::timeout(limit, all).await, Ok(results) if results.iter().all(Result::is_ok))
    }
}

/// The account of the node's own messages (heartbeats, control); no tenant
/// name is empty.
pub const NODE_ACCOUNT: &str = "";

/// Publish `message` as JSON on `channel`, charged to `account`, best
/// effort: a message that cannot be encoded or queued is logged, and other
/// nodes miss it.
pub fn publish_json<T: Serialize>(
    backplane: &dyn Backplane,
    account: &str,
    channel: &str,
    message: &T,
) {
    let payload = match serde_json::to_vec(message) {
        Ok(payload) => payload,
        Err(error) => return tracing::error!(%error, channel, "cannot encode a backplane message"),
    };
    if let Err(error) = backplane.publish(account, channel, payload.into()) {
        tracing::warn!(%error, channel, "backplane publish failed; other nodes miss this message");
    }
}

/// Why a publish was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    #[error("backplane is closed")]
    Closed,
}

/// Node-level publish/subscribe.
pub trait Backplane: Send + Sync + 'static {
    /// Queue `payload` for every node subscribed to `channel`, charged to
    /// `account` (a tenant, or [`NODE_ACCOUNT`]) where the medium buffers.
    fn publish(&self, account: &str, channel: &str, payload: Bytes) -> Result<(), BackplaneError>;
    /// Start receiving `channel` (idempotent).
    fn subscribe(&self, channel: &str) -> Subscribed;
    /// Stop receiving `channel` (idempotent).
    fn unsubscribe(&self, channel: &str);
    /// Whether any other node may be listening. When false, publishing is
    /// pointless and the caller may skip encoding a message at all.
    fn has_peers(&self) -> bool {
        true
    }
    /// Whether the backplane is connected and delivering (for `/readyz`).
    fn is_ready(&self) -> bool {
        true
    }
    /// Counters so far.
    fn stats(&self) -> BackplaneStats {
        BackplaneStats::default()
    }
    /// The stream of incoming messages; taken once, by the lifetime manager.
    fn take_incoming(&self) -> Option<mpsc::Receiver<Delivery>>;
}
