//! The MessagePack hub protocol: binary framing and messages as arrays.
//!
//! Each message is a MessagePack array whose first element is the type,
//! prefixed with its length as a VarInt (7-bit groups, low group first, at
//! most 5 bytes, at most 2^31 − 1). Hubs speak JSON only, so arguments and
//! results are transcoded: MessagePack → JSON on the way in, JSON →
//! MessagePack on the way out. `bin` values reach the hub as base64 strings
//! (as a .NET `byte[]` is written in JSON) and timestamps as RFC 3339 text.

use super::{Incoming, ProtocolError};
use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{Map, Number, Value as Json};

/// The largest message length a VarInt may give.
const MAX_LENGTH: u64 = (1 << 31) - 1;

/// A framed Ping: `[6]`.
pub const PING: &[u8] = &[0x02, 0x91, 0x06];

/// Splits a buffer into complete messages (without their length prefixes).
/// Returns the messages and the bytes they took; the rest waits for more.
pub fn split(buffer: &[u8]) -> Result<(Vec<&[u8]>, usize), ProtocolError> {
    let mut messages = Vec::new();
    let mut consumed = 0;
    loop {
        let rest = &buffer[consumed..];
        let Some((length, prefix)) = read_varint(rest)? else {
            break;
        };
        let Some(message) = rest.get(prefix..prefix + length) else {
            break;
        };
        messages.push(message);
        consumed += prefix + length;
    }
    Ok((messages, consumed))
}

/// The length and prefix size at the start of `bytes`; `None` if incomplete.
fn read_varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, ProtocolError> {
    let mut length: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        length |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if length > MAX_LENGTH {
                return Err(ProtocolError::Invalid("message length", "at most 2^31 - 1"));
            }
            // Fits: at most 2^31 − 1.
            return Ok(Some((length as usize, i + 1)));
        }
    }
    if bytes.len() >= 5 {
        return Err(ProtocolError::Invalid("message length", "at most 5 bytes"));
    }
    Ok(None)
}

fn frame(body: Vec<u8>) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + 5);
    let mut length = body.len();
    loop {
        let low = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    out.extend_from_slice(&body);
    out.into()
}

/// Reads one message (without its length prefix).
pub fn parse(message: &[u8]) -> Result<Incoming, ProtocolError> {
    let value = rmpv::decode::read_value(&mut &message[..])
        .map_err(|e| ProtocolError::MessagePack(e.to_string()))?;
    let Mp::Array(items) = value else {
        return Err(ProtocolError::Invalid("message", "an array"));
    };
    let kind = items
        .first()
        .and_then(Mp::as_u64)
        .ok_or(ProtocolError::Invalid("message type", "an integer"))?;
    Ok(match kind {
        1 | 4 => {
            // [type, headers, id, target, arguments, streamIds?]; the JS
            // client leaves out empty stream ids.
            if items.len() < 5 {
                return Err(ProtocolError::Invalid("invocation", "5 or 6 elements"));
            }
            let invocation_id = match &items[2] {
                Mp::Nil => None,
                Mp::String(id) => id.as_str().filter(|id| !id.is_empty()).map(str::to_owned),
                _ => return Err(ProtocolError::Invalid("invocationId", "a string")),
            };
            let target = items[3]
                .as_str()
                .ok_or(ProtocolError::Invalid("target", "a string"))?
                .to_owned();
            let Mp::Array(arguments) = &items[4] else {
                return Err(ProtocolError::Invalid("arguments", "an array"));
            };
            let arguments = transcode_arguments(arguments)?;
            if kind == 4 {
                Incoming::StreamInvocation {
                    invocation_id: invocation_id.ok_or(ProtocolError::Missing("invocationId"))?,
                    target,
                    arguments,
                    stream_ids: stream_ids(items.get(5))?,
                }
            } else {
                Incoming::Invocation {
                    invocation_id,
                    target,
                    arguments,
                    stream_ids: stream_ids(items.get(5))?,
                }
            }
        }
        // [2, headers, id, item]
        2 => Incoming::StreamItem {
            invocation_id: required_id(items.get(2))?,
            item: json_text(items.get(3).unwrap_or(&Mp::Nil))?,
        },
        // [3, headers, id, kind, result?]: 1 an error, 2 nothing, 3 a result.
        3 => {
            let invocation_id = required_id(items.get(2))?;
            let result = match items.get(3).and_then(Mp::as_u64) {
                Some(1) => Err(items
                    .get(4)
                    .and_then(Mp::as_str)
                    .ok_or(ProtocolError::Invalid("completion error", "a string"))?
                    .to_owned()),
                Some(2) => Ok("null".to_owned()),
                Some(3) => Ok(json_text(
                    items.get(4).ok_or(ProtocolError::Missing("result"))?,
                )?),
                _ => return Err(ProtocolError::Invalid("completion kind", "1, 2 or 3")),
            };
            Incoming::Completion {
                invocation_id,
                result,
            }
        }
        // [5, headers, id]
        5 => Incoming::CancelInvocation {
            invocation_id: required_id(items.get(2))?,
        },
        6 => Incoming::Ping,
        // [7, error|nil, allowReconnect?]: JS writes two elements.
        7 => Incoming::Close {
            error: items.get(1).and_then(Mp::as_str).map(str::to_owned),
        },
        // [8 or 9, sequenceId], any integer width.
        8 | 9 => {
            let id = items
                .get(1)
                .and_then(Mp::as_u64)
                .ok_or(ProtocolError::Invalid("sequenceId", "an integer"))?;
            if kind == 8 {
                Incoming::Ack(id)
            } else {
                Incoming::Sequence(id)
            }
        }
        kind => Incoming::Ignored { kind },
    })
}

fn stream_ids(value: Option<&Mp>) -> Result<Vec<String>, ProtocolError> {
    match value {
        None | Some(Mp::Nil) => Ok(Vec::new()),
        Some(Mp::Array(ids)) => ids
            .iter()
            .map(|id| {
                id.as_str()
                    .map(str::to_owned)
                    .ok_or(ProtocolError::Invalid("streamIds", "strings"))
            })
            .collect(),
        Some(_) => Err(ProtocolError::Invalid("streamIds", "an array")),
    }
}

fn required_id(value: Option<&Mp>) -> Result<String, ProtocolError> {
    match value {
        Some(Mp::String(id)) => id
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or(ProtocolError::Missing("invocationId")),
        _ => Err(ProtocolError::Missing("invocationId")),
    }
}

/// One value as the JSON text a hub sees.
fn json_text(value: &Mp) -> Result<String, ProtocolError> {
    serde_json::to_string(&to_json(value)?).map_err(|e| ProtocolError::Json(e.to_string()))
}

fn transcode_arguments(arguments: &[Mp]) -> Result<String, ProtocolError> {
    let values = arguments
        .iter()
        .map(to_json)
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string(&values).map_err(|e| ProtocolError::Json(e.to_string()))
}

/// A MessagePack value as the JSON a hub sees.
pub fn to_json(value: &Mp) -> Result<Json, ProtocolError> {
    Ok(match value {
        Mp::Nil => Json::Null,
        Mp::Boolean(b) => Json::Bool(*b),
        Mp::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Json::from(u),
            (None, Some(s)) => Json::from(s),
            (None, None) => Json::Null,
        },
        // JSON has no NaN or infinities; they become null, as in serde_json.
        Mp::F32(f) => Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number),
        Mp::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Mp::String(s) => Json::String(match s.as_str() {
            Some(text) => text.to_owned(),
            None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        }),
        Mp::Binary(bytes) => {
            use base64::Engine as _;
            Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Mp::Array(items) => Json::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Mp::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (key, value) in entries {
                let key = match key {
                    Mp::String(s) => match s.as_str() {
                        Some(text) => text.to_owned(),
                        None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    },
                    // Scalars become their JSON text. A map or array key would
                    // too, but each level would escape the text of the one
                    // inside it: 90 nested one-entry maps (180 bytes) would
                    // grow to 2^90 bytes (found by the transcode fuzz target).
                    Mp::Nil | Mp::Boolean(_) | Mp::Integer(_) | Mp::F32(_) | Mp::F64(_) => {
                        to_json(key)?.to_string()
                    }
                    _ => {
                        return Err(ProtocolError::MessagePack(
                            "map keys must be strings, numbers, booleans or nil".into(),
                        ));
                    }
                };
                map.insert(key, to_json(value)?);
            }
            Json::Object(map)
        }
        Mp::Ext(-1, data) => Json::String(timestamp(data)?),
        Mp::Ext(kind, _) => {
            return Err(ProtocolError::MessagePack(format!(
                "unsupported extension type {kind}"
            )));
        }
    })
}

/// The MessagePack timestamp extension (-1) as RFC 3339 UTC text.
fn timestamp(data: &[u8]) -> Result<String, ProtocolError> {
    let bad = || ProtocolError::MessagePack("malformed timestamp".into());
    let (seconds, nanos): (i64, u32) = match data.len() {
        4 => (
            i64::from(u32::from_be_bytes(data.try_into().map_err(|_| bad())?)),
            0,
        ),
        8 => {
            let raw = u64::from_be_bytes(data.try_into().map_err(|_| bad())?);
            ((raw & 0x3_ffff_ffff) as i64, (raw >> 34) as u32)
        }
        12 => {
            let nanos = u32::from_be_bytes(data[..4].try_into().map_err(|_| bad())?);
            let seconds = i64::from_be_bytes(data[4..].try_into().map_err(|_| bad())?);
            (seconds, nanos)
        }
        _ => return Err(bad()),
    };
    if nanos >= 1_000_000_000 {
        return Err(bad());
    }
    let days = seconds.div_euclid(86_400);
    let time = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        time / 3600,
        time / 60 % 60,
        time % 60
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Ok(text)
}

/// Howard Hinnant's days-from-civil inverse: days since 1970-01-01 → date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes JSON text (a hub's arguments or result) as MessagePack.
fn write_json(out: &mut Vec<u8>, json: &str) {
    // The host only ever holds validated JSON here; should that ever fail,
    // the client gets nil rather than a broken frame.
    match serde_json::from_str::<Json>(json) {
        Ok(value) => write_value(out, &value),
        Err(_) => write_nil(out),
    }
}

// Writing into a Vec cannot fail, so the writers' results are ignored.
fn write_nil(out: &mut Vec<u8>) {
    let _ = rmp::encode::write_nil(out);
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    let _ = rmp::encode::write_str(out, text);
}

fn write_value(out: &mut Vec<u8>, value: &Json) {
    match value {
        Json::Null => write_nil(out),
        Json::Bool(b) => {
            let _ = rmp::encode::write_bool(out, *b);
        }
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                let _ = rmp::encode::write_uint(out, u);
            } else if let Some(i) = n.as_i64() {
                let _ = rmp::encode::write_sint(out, i);
            } else {
                let _ = rmp::encode::write_f64(out, n.as_f64().unwrap_or_default());
            }
        }
        Json::String(s) => write_str(out, s),
        Json::Array(items) => {
            let _ = rmp::encode::write_array_len(out, items.len() as u32);
            for item in items {
                write_value(out, item);
            }
        }
        Json::Object(map) => {
            let _ = rmp::encode::write_map_len(out, map.len() as u32);
            for (key, value) in map {
                write_str(out, key);
                write_value(out, value);
            }
        }
    }
}

fn start(out: &mut Vec<u8>, elements: u32, kind: u8) {
    let _ = rmp::encode::write_array_len(out, elements);
    let _ = rmp::encode::write_pfix(out, kind);
}

/// No headers: an empty map.
const NO_HEADERS: u8 = 0x80;

/// `[1, {}, nil, target, arguments, []]`: the server calls a client method.
/// `arguments` is a JSON array.
pub fn invocation(target: &str, arguments: &str) -> Bytes {
    invocation_with_id(None, target, arguments)
}

/// `[1, {}, id|nil, target, arguments, []]`; with an id, the server wants
/// the client's result.
pub fn invocation_with_id(invocation_id: Option<&str>, target: &str, arguments: &str) -> Bytes {
    let mut out = Vec::with_capacity(16 + target.len() + arguments.len());
    start(&mut out, 6, 1);
    out.push(NO_HEADERS);
    match invocation_id {
        Some(id) => write_str(&mut out, id),
        None => write_nil(&mut out),
    }
    write_str(&mut out, target);
    write_json(&mut out, arguments);
    let _ = rmp::encode::write_array_len(&mut out, 0);
    frame(out)
}

/// `[3, {}, id, kind, body]`: a Completion; `kind` 1 is an error, 3 a result.
fn completion(
    invocation_id: &str,
    kind: u8,
    body: &str,
    write_body: fn(&mut Vec<u8>, &str),
) -> Bytes {
    let mut out = Vec::with_capacity(16 + invocation_id.len() + body.len());
    start(&mut out, 5, 3);
    out.push(NO_HEADERS);
    write_str(&mut out, invocation_id);
    let _ = rmp::encode::write_pfix(&mut out, kind);
    write_body(&mut out, body);
    frame(out)
}

/// `[2, {}, id, item]`: the next item of a stream (JSON text).
pub fn stream_item(invocation_id: &str, item: &str) -> Bytes {
    let mut out = Vec::with_capacity(16 + invocation_id.len() + item.len());
    start(&mut out, 4, 2);
    out.push(NO_HEADERS);
    write_str(&mut out, invocation_id);
    write_json(&mut out, item);
    frame(out)
}

/// `[3, {}, id, 2]`: a Completion without result, a stream's end.
pub fn completion_empty(invocation_id: &str) -> Bytes {
    let mut out = Vec::with_capacity(8 + invocation_id.len());
    start(&mut out, 4, 3);
    out.push(NO_HEADERS);
    write_str(&mut out, invocation_id);
    let _ = rmp::encode::write_pfix(&mut out, 2);
    frame(out)
}

/// `[3, {}, id, 3, result]`: a Completion with a result (JSON text).
pub fn completion_result(invocation_id: &str, result: &str) -> Bytes {
    completion(invocation_id, 3, result, write_json)
}

/// `[3, {}, id, 1, error]`: a Completion with an error.
pub fn completion_error(invocation_id: &str, error: &str) -> Bytes {
    completion(invocation_id, 1, error, write_str)
}

/// An Ack (8) or a Sequence (9), framed: `[kind, sequenceId]`.
pub fn numbered(kind: u8, sequence_id: u64) -> Bytes {
    let mut out = Vec::new();
    start(&mut out, 2, kind);
    let _ = rmp::encode::write_uint(&mut out, sequence_id);
    frame(out)
}

/// `[7, error|nil, allowReconnect]`.
pub fn close(error: Option<&str>, allow_reconnect: bool) -> Bytes {
    let mut out = Vec::new();
    start(&mut out, 3, 7);
    match error {
        Some(error) => write_str(&mut out, error),
        None => write_nil(&mut out),
    }
    let _ = rmp::encode::write_bool(&mut out, allow_reconnect);
    frame(out)
}

#[cfg(test)]
#[path = "msgpack_tests.rs"]
mod tests;
