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

pub mod channels;
pub mod memory;

use bytes::Bytes;
use tokio::sync::mpsc;

/// One message received from the backplane.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub channel: String,
    pub payload: Bytes,
}

/// Why a publish was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    #[error("backplane is closed")]
    Closed,
}

/// Node-level publish/subscribe.
pub trait Backplane: Send + Sync + 'static {
    /// Queue `payload` for every node subscribed to `channel`.
    fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackplaneError>;
    /// Start receiving `channel` (idempotent).
    fn subscribe(&self, channel: &str);
    /// Stop receiving `channel` (idempotent).
    fn unsubscribe(&self, channel: &str);
    /// Whether any other node may be listening. When false, publishing is
    /// pointless and the caller may skip encoding a message at all.
    fn has_peers(&self) -> bool {
        true
    }
    /// The stream of incoming messages; taken once, by the lifetime manager.
    fn take_incoming(&self) -> Option<mpsc::Receiver<Delivery>>;
}
