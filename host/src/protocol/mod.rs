//! The SignalR hub protocols, JSON and MessagePack: handshake, framing and
//! hub messages, pure and without I/O.
//!
//! JSON frames are a JSON object followed by the record separator `0x1E`;
//! MessagePack frames are a VarInt length and an array (see [`msgpack`]).
//! Either way a transport message may hold several. Hubs only ever see JSON:
//! MessagePack arguments and results are transcoded at this edge.

pub mod handshake;
pub mod json;
pub mod msgpack;

use bytes::Bytes;
use serde_json::value::RawValue;

/// The record separator that ends every JSON protocol message.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// The hub protocols a connection can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Json,
    MessagePack,
}

impl Protocol {
    /// The name clients give in the handshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::MessagePack => "messagepack",
        }
    }

    /// The protocol a client names in the handshake.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Self::Json),
            "messagepack" => Some(Self::MessagePack),
            _ => None,
        }
    }

    /// Whether the protocol needs a transport that carries binary data
    /// (WebSocket binary frames, long polling; not Server-Sent Events).
    pub fn is_binary(self) -> bool {
        self == Self::MessagePack
    }

    /// Splits a buffer into complete messages; see [`split_messages`].
    pub fn split(self, buffer: &[u8]) -> Result<(Vec<&[u8]>, usize), ProtocolError> {
        match self {
            Self::Json => Ok(split_messages(buffer)),
            Self::MessagePack => msgpack::split(buffer),
        }
    }

    /// Reads one message (without its framing).
    pub fn parse(self, message: &[u8]) -> Result<Incoming, ProtocolError> {
        match self {
            Self::Json => json::parse(message),
            Self::MessagePack => msgpack::parse(message),
        }
    }

    /// A framed Invocation of `target` with `arguments` (a JSON array).
    pub fn invocation(self, target: &str, arguments: &RawValue) -> Bytes {
        match self {
            Self::Json => json::invocation(target, arguments).into(),
            Self::MessagePack => msgpack::invocation(target, arguments.get()),
        }
    }

    /// A framed Completion with `result` (JSON text).
    pub fn completion_result(self, invocation_id: &str, result: &RawValue) -> Bytes {
        match self {
            Self::Json => json::completion_result(invocation_id, result).into(),
            Self::MessagePack => msgpack::completion_result(invocation_id, result.get()),
        }
    }

    /// A framed Invocation with an id: the server asks the client for a
    /// result (client results).
    pub fn invocation_with_id(
        self,
        invocation_id: &str,
        target: &str,
        arguments: &RawValue,
    ) -> Bytes {
        match self {
            Self::Json => json::invocation_with_id(invocation_id, target, arguments).into(),
            Self::MessagePack => {
                msgpack::invocation_with_id(Some(invocation_id), target, arguments.get())
            }
        }
    }

    /// A framed StreamItem of stream `invocation_id`; `item` is JSON text.
    pub fn stream_item(self, invocation_id: &str, item: &RawValue) -> Bytes {
        match self {
            Self::Json => json::stream_item(invocation_id, item).into(),
            Self::MessagePack => msgpack::stream_item(invocation_id, item.get()),
        }
    }

    /// A framed Completion without result: a stream's end.
    pub fn completion_empty(self, invocation_id: &str) -> Bytes {
        match self {
            Self::Json => json::completion_empty(invocation_id).into(),
            Self::MessagePack => msgpack::completion_empty(invocation_id),
        }
    }

    /// A framed Completion with an error.
    pub fn completion_error(self, invocation_id: &str, error: &str) -> Bytes {
        match self {
            Self::Json => json::completion_error(invocation_id, error).into(),
            Self::MessagePack => msgpack::completion_error(invocation_id, error),
        }
    }

    /// A framed Ping.
    pub fn ping(self) -> Bytes {
        match self {
            Self::Json => Bytes::from_static(json::PING.as_bytes()),
            Self::MessagePack => Bytes::from_static(msgpack::PING),
        }
    }

    /// A framed Ack (stateful reconnect): every message up to `sequence_id`
    /// arrived.
    pub fn ack(self, sequence_id: u64) -> Bytes {
        match self {
            Self::Json => json::numbered(8, sequence_id).into(),
            Self::MessagePack => msgpack::numbered(8, sequence_id),
        }
    }

    /// A framed Sequence (stateful reconnect): the messages that follow
    /// start at `sequence_id`.
    pub fn sequence(self, sequence_id: u64) -> Bytes {
        match self {
            Self::Json => json::numbered(9, sequence_id).into(),
            Self::MessagePack => msgpack::numbered(9, sequence_id),
        }
    }

    /// A framed Close.
    pub fn close(self, error: Option<&str>, allow_reconnect: bool) -> Bytes {
        match self {
            Self::Json => json::close(error, allow_reconnect).into(),
            Self::MessagePack => msgpack::close(error, allow_reconnect),
        }
    }
}

/// A hub message received from a client. Unknown types arrive as
/// [`Incoming::Ignored`]: SignalR peers ignore what they do not know.
#[derive(Debug)]
pub enum Incoming {
    /// Type 1. No `invocation_id` means fire-and-forget: never any reply.
    Invocation {
        invocation_id: Option<String>,
        target: String,
        /// The arguments as a JSON array (transcoded from MessagePack).
        arguments: String,
        stream_ids: Vec<String>,
    },
    /// Type 4: the client asks for a stream of items.
    StreamInvocation {
        invocation_id: String,
        target: String,
        /// As for an invocation.
        arguments: String,
        stream_ids: Vec<String>,
    },
    /// Type 2: the next item of one of the client's upload streams.
    StreamItem {
        invocation_id: String,
        /// One JSON value (transcoded from MessagePack).
        item: String,
    },
    /// Type 3: the end of an upload stream, or the client's result.
    Completion {
        invocation_id: String,
        /// The result as JSON (`null` when there is none), or the error.
        result: Result<String, String>,
    },
    /// Type 5: the client no longer wants the stream it asked for.
    CancelInvocation { invocation_id: String },
    /// Type 6.
    Ping,
    /// Type 7: the client is leaving; `error` says why.
    Close { error: Option<String> },
    /// Type 8 (stateful reconnect): the client has every message up to this.
    Ack(u64),
    /// Type 9 (stateful reconnect): the client's messages that follow start
    /// at this number.
    Sequence(u64),
    /// Unknown types.
    Ignored { kind: u64 },
}

impl Incoming {
    /// Whether stateful reconnect numbers it: types 1 to 5.
    pub fn is_numbered(&self) -> bool {
        match self {
            Self::Invocation { .. }
            | Self::StreamInvocation { .. }
            | Self::StreamItem { .. }
            | Self::Completion { .. }
            | Self::CancelInvocation { .. } => true,
            Self::Ignored { kind } => (1..=5).contains(kind),
            Self::Ping | Self::Close { .. } | Self::Ack(_) | Self::Sequence(_) => false,
        }
    }
}

/// A message that breaks the protocol; the connection is closed with an error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid MessagePack: {0}")]
    MessagePack(String),
    #[error("missing required property '{0}'")]
    Missing(&'static str),
    #[error("'{0}' must be {1}")]
    Invalid(&'static str, &'static str),
    #[error("message of {size} bytes exceeds the maximum message size of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

/// Splits a buffer into complete JSON protocol messages.
///
/// Returns the complete messages (without their separators) and how many bytes
/// they took; bytes after the last separator are an incomplete message that
/// waits for more input.
pub fn split_messages(buffer: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut messages = Vec::new();
    let mut consumed = 0;
    while let Some(end) = buffer[consumed..]
        .iter()
        .position(|&b| b == RECORD_SEPARATOR)
    {
        messages.push(&buffer[consumed..consumed + end]);
        consumed += end + 1;
    }
    (messages, consumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_complete_messages_and_keeps_the_rest() {
        let (messages, used) = split_messages(b"{\"type\":6}\x1e{}\x1e{\"ty");
        assert_eq!(messages, vec![&b"{\"type\":6}"[..], &b"{}"[..]]);
        assert_eq!(used, 14);
        let (messages, used) = split_messages(b"{\"type\":6}");
        assert!(messages.is_empty());
        assert_eq!(used, 0);
    }
}
