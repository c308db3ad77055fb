//! Node ids, connection ids and connection tokens (and hex, for digests).
//!
//! A connection id is 16 bytes in unpadded base64url (22 characters, the shape
//! of ASP.NET Core's): the owning node's 6-byte id, then 10 random bytes. Any
//! node can read the owner from the id, so a message to one connection goes
//! straight to its node without a subscription per connection.
//! A connection token is the negotiating node's id and 16 random bytes: the
//! random part is the secret that lets a transport attach to a negotiated
//! connection (never shown to others); the node part tells any node where
//! the connection lives, so requests that reach another node are passed on.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::fmt;
use std::sync::Arc;

const NODE_BYTES: usize = 6;
/// Length of a connection id in base64url: 16 bytes encode to 22 characters.
const ID_CHARS: usize = 22;

/// Lower-case hex, as digests are shown and stored.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes` in hex: how components are named (store
/// versions, the compiled-code cache, shared compiled code).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

/// The id of one hubhost process in a cluster.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId([u8; NODE_BYTES]);

impl NodeId {
    /// A fresh random node id.
    pub fn random() -> Self {
        Self(random_bytes())
    }

    /// The node that owns `connection_id`, if it is one of ours.
    pub fn owner_of(connection_id: &str) -> Option<Self> {
        if connection_id.len() != ID_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(connection_id).ok()?;
        Some(Self(bytes.get(..NODE_BYTES)?.try_into().ok()?))
    }

    /// A node id from its text form (see `Display`).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// A fresh connection id owned by this node.
    pub fn new_connection_id(&self) -> ConnectionId {
        let mut bytes = [0u8; 16];
        bytes[..NODE_BYTES].copy_from_slice(&self.0);
        bytes[NODE_BYTES..].copy_from_slice(&random_bytes::<10>());
        ConnectionId(URL_SAFE_NO_PAD.encode(bytes).into())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl NodeId {
    /// A fresh connection token owned by this node: its id, then 16 bytes
    /// from the OS's CSPRNG (30 characters).
    pub fn new_token(&self) -> ConnectionToken {
        let mut bytes = [0u8; NODE_BYTES + 16];
        bytes[..NODE_BYTES].copy_from_slice(&self.0);
        bytes[NODE_BYTES..].copy_from_slice(&random_bytes::<16>());
        ConnectionToken(URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// One send, cluster-wide: the node that made it and its number there.
/// Where a connection moves between nodes (a drain's handover), the same
/// send can reach it on both sides; the id is how the second copy is known.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MessageId {
    pub node: NodeId,
    pub seq: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.seq)
    }
}

impl MessageId {
    /// From its text form (see `Display`).
    pub fn parse(text: &str) -> Option<Self> {
        let (node, seq) = text.split_once('.')?;
        Some(Self {
            node: NodeId::parse(node)?,
            seq: seq.parse().ok()?,
        })
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not a message id"))
    }
}

/// A connection's id: public. Hubs see it and send to it, clients pass it
/// to each other; it names the owning node (see the module's doc).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionId(Arc<str>);

impl ConnectionId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node that owns this connection.
    pub fn owner(&self) -> Option<NodeId> {
        NodeId::owner_of(&self.0)
    }
}

impl serde::Serialize for ConnectionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl ConnectionId {
    /// An id another node made (a connection handed over by a drain),
    /// checked to be one of ours.
    pub fn moved(text: &str) -> Option<Self> {
        NodeId::owner_of(text).map(|_| Self(text.into()))
    }
}

impl From<ConnectionId> for Arc<str> {
    fn from(id: ConnectionId) -> Self {
        id.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId({})", self.0)
    }
}

/// A connection token: secret. Whoever holds it may attach a transport to
/// the negotiated connection, poll it and post to it, so it is never shown
/// to hubs or other clients, and `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionToken(String);

impl ConnectionToken {
    /// A token as a client sent it (the `id` query parameter), unchecked:
    /// the token table decides whether it means anything.
    pub fn from_client(text: String) -> Self {
        Self(text)
    }

    /// Negotiate version 0: the connection id is the token.
    pub fn version_0(id: &ConnectionId) -> Self {
        Self(id.as_str().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node that owns the connection of this token: a token of ours, or
    /// a connection id (negotiate version 0 uses the id as the token).
    pub fn owner(&self) -> Option<NodeId> {
        if self.0.len() == TOKEN_CHARS {
            let bytes = URL_SAFE_NO_PAD.decode(&self.0).ok()?;
            return Some(NodeId(bytes.get(..NODE_BYTES)?.try_into().ok()?));
        }
        NodeId::owner_of(&self.0)
    }
}

impl serde::Serialize for ConnectionToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Debug for ConnectionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConnectionToken(…)")
    }
}

/// Length of a connection token in base64url: 22 bytes encode to 30 characters.
const TOKEN_CHARS: usize = 30;

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source failing is unrecoverable for a server handing out
    // secrets; there is nothing sane to continue with.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_name_their_node() {
        let node = NodeId::random();
        let id = node.new_connection_id();
        assert_eq!(id.as_str().len(), 22);
        assert_eq!(id.owner(), Some(node));
        assert_ne!(node.new_connection_id(), id);
        assert_eq!(NodeId::owner_of("short"), None);
        assert_eq!(NodeId::owner_of("no-such-connection"), None);
        assert_eq!(NodeId::owner_of("!!!!!!!!xxxxxxxxxxxxxx"), None);
        let token = node.new_token();
        assert_eq!(token.as_str().len(), 30);
        assert_ne!(node.new_token(), token);
        assert_eq!(token.owner(), Some(node));
        assert_eq!(ConnectionToken::version_0(&id).owner(), Some(node));
        let garbage = ConnectionToken::from_client("!!!!!!!!xxxxxxxxxxxxxxxxxxxxxx".into());
        assert_eq!(garbage.owner(), None);
        assert!(
            !format!("{token:?}").contains(token.as_str()),
            "Debug hides tokens"
        );
        assert_eq!(NodeId::parse(&node.to_string()), Some(node));
        assert_eq!(NodeId::parse("x"), None);
        let message = MessageId { node, seq: 42 };
        assert_eq!(MessageId::parse(&message.to_string()), Some(message));
        assert_eq!(MessageId::parse("x.1"), None);
        assert_eq!(ConnectionId::moved(id.as_str()), Some(id));
        assert_eq!(ConnectionId::moved("short"), None);
    }
}
