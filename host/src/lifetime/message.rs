//! A message to clients and its wire forms.
//!
//! A hub's send becomes one [`Message`], shared by every local recipient and
//! encoded at most once per protocol, however many connections receive it.
//! Between nodes it travels as an [`Envelope`]: serialized once per send.

use super::{HubKey, Target};
use crate::protocol::Protocol;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::OnceLock;

/// A client method call: `target(arguments...)`.
#[derive(Debug)]
pub struct Message {
    target: String,
    arguments: Box<RawValue>,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl Message {
    /// `arguments` must be a JSON array.
    pub fn new(target: String, arguments: Box<RawValue>) -> Self {
        Self {
            target,
            arguments,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn arguments(&self) -> &RawValue {
        &self.arguments
    }

    /// The framed Invocation in `protocol`, encoded on first use: once per
    /// protocol however many connections receive it.
    pub fn encoded(&self, protocol: Protocol) -> &Bytes {
        let cell = match protocol {
            Protocol::Json => &self.json,
            Protocol::MessagePack => &self.msgpack,
        };
        cell.get_or_init(|| protocol.invocation(&self.target, &self.arguments))
    }
}

/// Everything nodes say to each other over the backplane, serialized once
/// per publish.
#[derive(Debug, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum would buffer its content,
// which cannot hold the raw JSON arguments.
#[serde(rename_all = "camelCase")]
pub enum Wire {
    /// A hub's send, for the recipient's local connections.
    Send(Envelope),
    /// Change the groups of a connection the recipient owns.
    Group(GroupRequest),
    /// The owner's answer to a [`GroupRequest`].
    GroupReply(GroupReply),
    /// Hubs or tenants changed in the store (on the control channel).
    Control(Control),
    /// A node is alive, or leaving (on the nodes channel).
    Node(super::Heartbeat),
}

/// A change every node acts on: re-read the store for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Control {
    /// A hub's active version changed, or the hub was deleted.
    HubChanged { tenant: String, hub: String },
    /// The API's tenants changed.
    TenantsChanged,
}

/// A send as it crosses the backplane.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The publishing node, which ignores its own echo.
    pub origin: String,
    pub tenant: String,
    pub hub: String,
    pub to: Target,
    pub method: String,
    pub arguments: Box<RawValue>,
}

impl Envelope {
    pub fn hub_key(&self) -> Option<HubKey> {
        HubKey::new(&self.tenant, &self.hub).ok()
    }
}

/// Add a connection to, or remove it from, a group, on its owning node.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupRequest {
    /// The asking node, which gets the reply on its node channel.
    pub origin: String,
    pub request: u64,
    pub tenant: String,
    pub hub: String,
    pub connection: String,
    pub group: String,
    pub add: bool,
}

/// The result of a [`GroupRequest`]: `error` is `None` on success.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupReply {
    pub request: u64,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_messages_round_trip() -> anyhow::Result<()> {
        let wire = Wire::Send(Envelope {
            origin: "node".into(),
            tenant: "t".into(),
            hub: "h".into(),
            to: Target::GroupExcept {
                group: "g".into(),
                excluded: vec!["x".into()],
            },
            method: "M".into(),
            arguments: RawValue::from_string("[1,{\"a\":null}]".into())?,
        });
        let bytes = serde_json::to_vec(&wire)?;
        let Wire::Send(back) = serde_json::from_slice(&bytes)? else {
            anyhow::bail!("wrong kind")
        };
        assert_eq!(back.arguments.get(), "[1,{\"a\":null}]");
        assert_eq!(
            back.to,
            Target::GroupExcept {
                group: "g".into(),
                excluded: vec!["x".into()]
            }
        );
        Ok(())
    }

    #[test]
    fn encodes_once_per_protocol() -> anyhow::Result<()> {
        let message = Message::new("M".into(), RawValue::from_string("[1]".into())?);
        let first = message.encoded(Protocol::Json).clone();
        assert_eq!(
            &first[..],
            b"{\"type\":1,\"target\":\"M\",\"arguments\":[1]}\x1e"
        );
        assert_eq!(first.as_ptr(), message.encoded(Protocol::Json).as_ptr());
        let binary = message.encoded(Protocol::MessagePack).clone();
        assert_eq!(&binary[..], b"\x09\x96\x01\x80\xc0\xa1M\x91\x01\x90");
        assert_eq!(
            binary.as_ptr(),
            message.encoded(Protocol::MessagePack).as_ptr()
        );
        Ok(())
    }
}
