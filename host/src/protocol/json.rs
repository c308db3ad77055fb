//! The JSON hub protocol: reading client messages and writing server ones.
//!
//! Keys are camelCase and may come in any order; unknown keys are ignored, as
//! ASP.NET Core does. Arguments and results stay raw JSON text end to end: the
//! host checks that they are well formed but never re-encodes them.

use super::{Incoming, ProtocolError, RECORD_SEPARATOR};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage<'a> {
    #[serde(rename = "type")]
    kind: Option<u64>,
    invocation_id: Option<String>,
    target: Option<String>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
    stream_ids: Option<Vec<String>>,
    #[serde(borrow)]
    item: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<String>,
    sequence_id: Option<u64>,
}

/// Reads one message (without its separator).
pub fn parse(message: &[u8]) -> Result<Incoming, ProtocolError> {
    let raw: RawMessage<'_> =
        serde_json::from_slice(message).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let kind = raw.kind.ok_or(ProtocolError::Missing("type"))?;
    Ok(match kind {
        1 => Incoming::Invocation {
            // .NET treats an empty id like a missing one.
            invocation_id: raw.invocation_id.filter(|id| !id.is_empty()),
            target: raw.target.ok_or(ProtocolError::Missing("target"))?,
            arguments: array(raw.arguments)?.get().to_owned(),
            stream_ids: raw.stream_ids.unwrap_or_default(),
        },
        4 => Incoming::StreamInvocation {
            invocation_id: required_id(raw.invocation_id)?,
            target: raw.target.ok_or(ProtocolError::Missing("target"))?,
            arguments: array(raw.arguments)?.get().to_owned(),
            stream_ids: raw.stream_ids.unwrap_or_default(),
        },
        // `item` may be `null`, which serde reads as a missing field: a
        // missing item is taken as `null` too, as the JS client never
        // leaves it out.
        2 => Incoming::StreamItem {
            invocation_id: required_id(raw.invocation_id)?,
            item: raw
                .item
                .map_or_else(|| "null".to_owned(), |item| item.get().to_owned()),
        },
        3 => Incoming::Completion {
            invocation_id: required_id(raw.invocation_id)?,
            result: match (raw.result, raw.error) {
                (Some(_), Some(_)) => {
                    return Err(ProtocolError::Invalid(
                        "completion",
                        "a result or an error, not both",
                    ));
                }
                (_, Some(error)) => Err(error),
                (result, None) => {
                    Ok(result.map_or_else(|| "null".to_owned(), |r| r.get().to_owned()))
                }
            },
        },
        5 => Incoming::CancelInvocation {
            invocation_id: required_id(raw.invocation_id)?,
        },
        6 => Incoming::Ping,
        7 => Incoming::Close { error: raw.error },
        8 => Incoming::Ack(
            raw.sequence_id
                .ok_or(ProtocolError::Missing("sequenceId"))?,
        ),
        9 => Incoming::Sequence(
            raw.sequence_id
                .ok_or(ProtocolError::Missing("sequenceId"))?,
        ),
        kind => Incoming::Ignored { kind },
    })
}

fn required_id(id: Option<String>) -> Result<String, ProtocolError> {
    id.ok_or(ProtocolError::Missing("invocationId"))
}

fn array(arguments: Option<&RawValue>) -> Result<&RawValue, ProtocolError> {
    let arguments = arguments.ok_or(ProtocolError::Missing("arguments"))?;
    if arguments.get().starts_with('[') {
        Ok(arguments)
    } else {
        Err(ProtocolError::Invalid("arguments", "an array"))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outgoing<'a> {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    invocation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    // .NET writes it only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    allow_reconnect: bool,
}

impl Outgoing<'_> {
    const fn new(kind: u8) -> Self {
        Self {
            kind,
            invocation_id: None,
            target: None,
            arguments: None,
            item: None,
            result: None,
            error: None,
            allow_reconnect: false,
        }
    }
}

fn frame(message: &Outgoing<'_>) -> String {
    // Serializing strings, bools and already-validated raw JSON cannot fail.
    let mut out = serde_json::to_string(message).unwrap_or_default();
    out.push(char::from(RECORD_SEPARATOR));
    out
}

/// An Invocation without id: the server calls a client method.
pub fn invocation(target: &str, arguments: &RawValue) -> String {
    frame(&Outgoing {
        target: Some(target),
        arguments: Some(arguments),
        ..Outgoing::new(1)
    })
}

/// An Invocation with an id: the server asks the client for a result.
pub fn invocation_with_id(invocation_id: &str, target: &str, arguments: &RawValue) -> String {
    frame(&Outgoing {
        invocation_id: Some(invocation_id),
        target: Some(target),
        arguments: Some(arguments),
        ..Outgoing::new(1)
    })
}

/// The next item of a stream the client asked for.
pub fn stream_item(invocation_id: &str, item: &RawValue) -> String {
    frame(&Outgoing {
        invocation_id: Some(invocation_id),
        item: Some(item),
        ..Outgoing::new(2)
    })
}

/// A Completion with neither result nor error: a stream's end.
pub fn completion_empty(invocation_id: &str) -> String {
    frame(&Outgoing {
        invocation_id: Some(invocation_id),
        ..Outgoing::new(3)
    })
}

/// A Completion with a result (`null` for methods without one).
pub fn completion_result(invocation_id: &str, result: &RawValue) -> String {
    frame(&Outgoing {
        invocation_id: Some(invocation_id),
        result: Some(result),
        ..Outgoing::new(3)
    })
}

/// A Completion with an error.
pub fn completion_error(invocation_id: &str, error: &str) -> String {
    frame(&Outgoing {
        invocation_id: Some(invocation_id),
        error: Some(error),
        ..Outgoing::new(3)
    })
}

/// A Ping.
pub const PING: &str = "{\"type\":6}\u{1e}";

/// An Ack (8) or a Sequence (9), framed.
pub fn numbered(kind: u8, sequence_id: u64) -> String {
    format!("{{\"type\":{kind},\"sequenceId\":{sequence_id}}}\u{1e}")
}

/// A Close, with an optional error and whether the client may reconnect.
pub fn close(error: Option<&str>, allow_reconnect: bool) -> String {
    frame(&Outgoing {
        error,
        allow_reconnect,
        ..Outgoing::new(7)
    })
}

/// `text` as one JSON value, read in full: a number too large for a double
/// (`1e400`) is refused here, where merely skipping over it would let it
/// through to fail later, when it is transcoded for a MessagePack client.
pub fn checked_value(text: String) -> Result<Box<RawValue>, serde_json::Error> {
    let mut reader = serde_json::Deserializer::from_str(&text);
    Checked::deserialize(&mut reader)?;
    reader.end()?;
    RawValue::from_string(text)
}

/// Any JSON value, every number parsed, nothing kept.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Checked, A::Error> {
        while items.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_values_refuse_numbers_no_double_holds() {
        assert!(checked_value("[1e400]".into()).is_err());
        assert!(checked_value("[1, {\"a\": [-1.5e300, \"x\"]}, null]".into()).is_ok());
        assert!(checked_value("[1] x".into()).is_err());
    }

    /// Checks that `text` is one well-formed JSON value and returns it raw.
    pub fn raw_value(text: &str) -> Result<&RawValue, ProtocolError> {
        serde_json::from_str(text).map_err(|e| ProtocolError::Json(e.to_string()))
    }

    /// Checks that `text` is a well-formed JSON array and returns it raw.
    pub fn raw_array(text: &str) -> Result<&RawValue, ProtocolError> {
        array(Some(raw_value(text)?))
    }

    #[test]
    fn parses_invocations_in_any_key_order() -> Result<(), ProtocolError> {
        let message =
            br#"{"arguments":[1,"a"],"target":"Echo","x":{},"invocationId":"7","type":1}"#;
        match parse(message)? {
            Incoming::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => {
                assert_eq!(invocation_id.as_deref(), Some("7"));
                assert_eq!(target, "Echo");
                assert_eq!(arguments, r#"[1,"a"]"#);
                assert!(stream_ids.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn rejects_broken_messages() {
        assert_eq!(
            parse(br#"{"target":"x"}"#).err(),
            Some(ProtocolError::Missing("type"))
        );
        assert_eq!(
            parse(br#"{"type":1,"target":"x"}"#).err(),
            Some(ProtocolError::Missing("arguments"))
        );
        assert_eq!(
            parse(br#"{"type":1,"target":"x","arguments":{}}"#).err(),
            Some(ProtocolError::Invalid("arguments", "an array"))
        );
        assert!(matches!(parse(b"{\"type\":"), Err(ProtocolError::Json(_))));
    }

    #[test]
    fn ignores_what_servers_do_not_act_on() {
        assert!(matches!(
            parse(br#"{"type":99,"foo":1}"#),
            Ok(Incoming::Ignored { kind: 99 })
        ));
        assert!(matches!(parse(br#"{"type":6}"#), Ok(Incoming::Ping)));
    }

    #[test]
    fn reads_stream_items_completions_and_cancels() {
        assert!(matches!(
            parse(br#"{"type":3,"invocationId":"1"}"#),
            Ok(Incoming::Completion { result: Ok(r), .. }) if r == "null"
        ));
        assert!(matches!(
            parse(br#"{"type":3,"invocationId":"1","result":{"a":1}}"#),
            Ok(Incoming::Completion { result: Ok(r), .. }) if r == r#"{"a":1}"#
        ));
        assert!(matches!(
            parse(br#"{"type":3,"invocationId":"1","error":"no"}"#),
            Ok(Incoming::Completion { result: Err(e), .. }) if e == "no"
        ));
        assert!(parse(br#"{"type":3,"invocationId":"1","error":"no","result":1}"#).is_err());
        assert!(parse(br#"{"type":3}"#).is_err());
        assert!(matches!(
            parse(br#"{"type":2,"invocationId":"0","item":null}"#),
            Ok(Incoming::StreamItem { item, .. }) if item == "null"
        ));
        assert!(matches!(
            parse(br#"{"type":5,"invocationId":"9"}"#),
            Ok(Incoming::CancelInvocation { invocation_id }) if invocation_id == "9"
        ));
        assert!(matches!(
            parse(br#"{"type":4,"invocationId":"2","target":"Counter","arguments":[3],"streamIds":["0"]}"#),
            Ok(Incoming::StreamInvocation { arguments, stream_ids, .. })
                if arguments == "[3]" && stream_ids == ["0"]
        ));
    }

    #[test]
    fn writes_messages() -> Result<(), ProtocolError> {
        assert_eq!(
            completion_result("1", raw_value("null")?),
            "{\"type\":3,\"invocationId\":\"1\",\"result\":null}\u{1e}"
        );
        assert_eq!(
            completion_error("2", "no \"way\""),
            "{\"type\":3,\"invocationId\":\"2\",\"error\":\"no \\\"way\\\"\"}\u{1e}"
        );
        assert_eq!(
            invocation("ReceiveMessage", raw_array(r#"["a","b"]"#)?),
            "{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"a\",\"b\"]}\u{1e}"
        );
        assert_eq!(
            close(None, true),
            "{\"type\":7,\"allowReconnect\":true}\u{1e}"
        );
        assert_eq!(
            close(Some("bye"), false),
            "{\"type\":7,\"error\":\"bye\"}\u{1e}"
        );
        assert!(raw_array("{}").is_err());
        assert!(raw_value("[1,").is_err());
        Ok(())
    }
}
