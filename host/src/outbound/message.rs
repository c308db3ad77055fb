//! [`Message`]: one hub send, shared by every local recipient and encoded
//! at most once per protocol, however many connections receive it.

use crate::protocol::Protocol;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::sync::OnceLock;

/// A client method call: `target(arguments...)`.
#[derive(Debug)]
pub struct Message {
    /// Set when the lifetime manager sends it (or receives it from another
    /// node); `None` only for a message no node numbered.
    pub(super) id: Option<crate::ids::MessageId>,
    pub(super) target: String,
    pub(super) arguments: Box<RawValue>,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl Message {
    /// `arguments` must be a JSON array.
    pub fn new(target: String, arguments: Box<RawValue>) -> Self {
        Self {
            id: None,
            target,
            arguments,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    /// The same message, numbered.
    pub fn with_id(mut self, id: crate::ids::MessageId) -> Self {
        self.id = Some(id);
        self
    }

    pub fn id(&self) -> Option<crate::ids::MessageId> {
        self.id
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

#[cfg(test)]
mod tests {
    use super::*;

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
