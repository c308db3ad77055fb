//! The MessagePack hub protocol's framing and message shapes.

use anyhow::{Context as _, bail};
use rmpv::Value;

/// `body` with its VarInt length prefix.
pub fn frame_bytes(body: &[u8]) -> Vec<u8> {
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
    out.extend_from_slice(body);
    out
}

/// One message, encoded and framed.
pub fn frame(message: &Value) -> Vec<u8> {
    let mut body = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut body, message);
    frame_bytes(&body)
}

/// The messages of a buffer of complete frames; an error on a partial one.
pub fn unframe(mut bytes: &[u8]) -> anyhow::Result<Vec<Value>> {
    let mut messages = Vec::new();
    while !bytes.is_empty() {
        let mut length = 0usize;
        let mut prefix = 0;
        loop {
            let byte = *bytes.get(prefix).context("truncated length prefix")?;
            length |= usize::from(byte & 0x7f) << (7 * prefix);
            prefix += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if prefix == 5 {
                bail!("length prefix over 5 bytes");
            }
        }
        let body = bytes
            .get(prefix..prefix + length)
            .with_context(|| format!("frame of {length} bytes truncated"))?;
        let mut reader = body;
        messages.push(rmpv::decode::read_value(&mut reader)?);
        if !reader.is_empty() {
            bail!("{} bytes after the message in its frame", reader.len());
        }
        bytes = &bytes[prefix + length..];
    }
    Ok(messages)
}

pub fn s(text: &str) -> Value {
    Value::from(text)
}

/// No headers: an empty map.
pub fn headers() -> Value {
    Value::Map(Vec::new())
}

/// `[1, {}, id, target, args, []]` (6 elements, as .NET writes).
pub fn invocation(id: Option<&str>, target: &str, args: Vec<Value>) -> Value {
    Value::Array(vec![
        Value::from(1),
        headers(),
        id.map_or(Value::Nil, Value::from),
        s(target),
        Value::Array(args),
        Value::Array(Vec::new()),
    ])
}

/// `[1, {}, id, target, args]` (5 elements, as the JS client writes).
pub fn invocation5(id: Option<&str>, target: &str, args: Vec<Value>) -> Value {
    let mut message = invocation(id, target, args);
    if let Value::Array(items) = &mut message {
        items.pop();
    }
    message
}

/// `[3, {}, id, 3, result]`.
pub fn completion(id: &str, result: Value) -> Value {
    Value::Array(vec![
        Value::from(3),
        headers(),
        s(id),
        Value::from(3),
        result,
    ])
}

/// Whether `message` is of type `kind`.
pub fn is(message: &Value, kind: u64) -> bool {
    message
        .as_array()
        .and_then(|items| items.first())
        .and_then(Value::as_u64)
        == Some(kind)
}

/// The framed Ping `[6]`.
pub const PING: &[u8] = &[0x02, 0x91, 0x06];
