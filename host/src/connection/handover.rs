//! What a connection is made of when a draining node hands it to another:
//! the types both nodes share, and how the connection is asked for them.
//!
//! A stateful-reconnect client whose node drains resumes through another
//! node (see `crate::transport`'s handover). That node first asks for a
//! [`Description`] (who the connection is: id, protocol, groups, items),
//! joins the connection's groups itself, and then takes the rest as a
//! [`Snapshot`]: the numbering of both directions, what the client has not
//! acknowledged and what was still queued, each send with its id, so that a
//! send that reached both nodes is delivered once.

use crate::ids::MessageId;
use axum::extract::ws::WebSocket;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// What a stateful-reconnect connection can be handed while it runs.
pub enum Resume {
    /// The client's next WebSocket: it resumes here.
    Socket(Box<WebSocket>),
    /// Another node is taking the connection over: who it is.
    Describe(oneshot::Sender<Description>),
    /// Another node takes it now: stop, and hand over what it holds.
    HandOver(oneshot::Sender<Snapshot>),
}

/// Where a stateful-reconnect connection is handed what it resumes with,
/// and where it takes it from.
pub type ResumeTx = mpsc::Sender<Resume>;
pub type ResumeRx = mpsc::Receiver<Resume>;

/// Who a connection is, for the node taking it over.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Description {
    pub connection_id: String,
    /// The hub protocol's name, as in the handshake.
    pub protocol: String,
    pub groups: Vec<String>,
    pub items: Vec<(String, String)>,
}

/// Everything a connection holds for its client, for the node taking it
/// over.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The highest number of the client's messages handled.
    pub handled: u64,
    /// The number of the first message in `replay`.
    pub first: u64,
    /// Sent and not acknowledged, in order.
    pub replay: Vec<Kept>,
    /// Not sent yet, in order.
    pub queued: Vec<Kept>,
}

/// One framed message for the client, in the connection's protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kept {
    #[serde(with = "base64_bytes")]
    pub bytes: Bytes,
    /// The send's id (`None` for a message to this connection alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
}

/// Bytes as base64 text: MessagePack frames are binary.
mod base64_bytes {
    use super::*;

    pub fn serialize<S: serde::Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    #[test]
    fn a_snapshot_round_trips() -> anyhow::Result<()> {
        let id = MessageId {
            node: NodeId::random(),
            seq: 3,
        };
        let snapshot = Snapshot {
            handled: 4,
            first: 2,
            replay: vec![Kept {
                bytes: Bytes::from_static(b"\x00\xff{}"),
                id: Some(id),
            }],
            queued: vec![Kept {
                bytes: Bytes::from_static(b"x"),
                id: None,
            }],
        };
        let back: Snapshot = serde_json::from_slice(&serde_json::to_vec(&snapshot)?)?;
        assert_eq!((back.handled, back.first), (4, 2));
        assert_eq!(&back.replay[0].bytes[..], b"\x00\xff{}");
        assert_eq!(back.replay[0].id, Some(id));
        assert_eq!(back.queued[0].id, None);
        Ok(())
    }
}
