//! A message to clients and its wire forms.
//!
//! A hub's send becomes one [`Message`], shared by every local recipient and
//! encoded at most once per protocol, however many connections receive it.
//! Between nodes it travels as an [`Envelope`]: serialized once per send.

use super::{HubKey, Target};
use crate::protocol::json;
use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::OnceLock;

/// A client method call: `target(arguments...)`.
#[derive(Debug)]
pub struct Message {
    target: String,
    arguments: Box<RawValue>,
    json: OnceLock<Utf8Bytes>,
}

impl Message {
    /// `arguments` must be a JSON array (see [`json::raw_array`]).
    pub fn new(target: String, arguments: Box<RawValue>) -> Self {
        Self { target, arguments, json: OnceLock::new() }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn arguments(&self) -> &RawValue {
        &self.arguments
    }

    /// The framed JSON protocol Invocation, encoded on first use.
    pub fn json(&self) -> &Utf8Bytes {
        self.json.get_or_init(|| json::invocation(&self.target, &self.arguments).into())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_json_once() -> anyhow::Result<()> {
        let message = Message::new("M".into(), RawValue::from_string("[1]".into())?);
        let first = message.json().clone();
        assert_eq!(first.as_str(), "{\"type\":1,\"target\":\"M\",\"arguments\":[1]}\u{1e}");
        assert!(std::ptr::eq(first.as_str().as_ptr(), message.json().as_str().as_ptr()));
        Ok(())
    }
}
