//! What lifetime managers say to each other over the backplane.
//!
//! A hub's send travels between nodes as an [`Envelope`], serialized once
//! per send; group changes for another node's connection as a
//! [`GroupRequest`] and its [`GroupReply`].

use super::{GroupError, GroupLimits, PresenceQuery, Target};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
    /// Who of a hub is connected to the recipient.
    Presence(PresenceRequest),
    /// The answer to a [`PresenceRequest`].
    PresenceReply(PresenceReply),
    /// Close the recipient's connections that a target names.
    Close(CloseEnvelope),
    /// Everything published before this has arrived (see `barrier.rs`).
    Barrier(u64),
    /// Ask something of a connection the recipient holds (see `calls.rs`).
    Call(super::CallRequest),
    /// The answer to a [`Wire::Call`].
    CallReply(super::CallReply),
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
    /// The send's number on `origin` (see [`crate::ids::MessageId`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Close connections (one, or every one of a user), wherever they live:
/// sent like a send to the same target, so it takes the same channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct CloseEnvelope {
    /// The publishing node, which closed its own connections already.
    pub origin: String,
    pub tenant: String,
    pub hub: String,
    pub to: Target,
    /// For the client's Close message.
    pub reason: Option<String>,
    pub allow_reconnect: bool,
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
    /// The tenant's limits as the asking node has them (a join only).
    #[serde(default)]
    pub limits: GroupLimits,
}

/// The result of a [`GroupRequest`]: `error` is `None` on success.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupReply {
    pub request: u64,
    pub error: Option<String>,
    /// Why the owner refused, when it did (`error` has the text).
    #[serde(default)]
    pub refused: Option<GroupError>,
}

/// Ask a node about the connections of a hub it holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct PresenceRequest {
    /// The asking node, which gets the reply on its node channel.
    pub origin: String,
    pub request: u64,
    pub tenant: String,
    pub hub: String,
    pub query: PresenceQuery,
    /// Most ids to send back.
    pub limit: usize,
}

/// A node's part of the answer to a [`PresenceRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub struct PresenceReply {
    pub request: u64,
    /// The answering node.
    pub node: String,
    pub count: u64,
    pub ids: Vec<String>,
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
            seq: Some(7),
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
}
