//! The SignalR hub protocol: handshake and hub messages, pure and without I/O.
//!
//! Only the JSON protocol is implemented; its text framing is one JSON object
//! followed by the record separator `0x1E`, several per transport message.

pub mod handshake;
pub mod json;

use serde_json::value::RawValue;

/// The record separator that ends every JSON protocol message.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// A hub message received from a client. Message kinds a server never acts
/// on (stream items, completions, acks…) arrive as [`Incoming::Ignored`], as
/// unknown types do: SignalR peers ignore what they do not know.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// Type 1. No `invocation_id` means fire-and-forget: never any reply.
    Invocation {
        invocation_id: Option<String>,
        target: String,
        /// The JSON array of arguments, as the client wrote it.
        arguments: &'a RawValue,
        stream_ids: Vec<String>,
    },
    /// Type 4; hubs have no streaming methods yet, so these get an error.
    StreamInvocation {
        invocation_id: String,
        target: String,
    },
    /// Type 6.
    Ping,
    /// Type 7: the client is leaving; `error` says why.
    Close { error: Option<String> },
    /// Types 2, 3, 5, 8, 9 and unknown types.
    Ignored { kind: u64 },
}

/// A message that breaks the protocol; the connection is closed with an error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("invalid JSON: {0}")]
    Json(String),
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
