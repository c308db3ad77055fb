//! The fuzz targets: every parser that reads bytes a client, a guest or an
//! admin sends. Each function takes arbitrary bytes, must never panic, hang
//! or allocate without bound, and asserts what must hold of what it parsed.
//!
//! cargo-fuzz runs them (`make fuzz`, `fuzz_targets/`); the integration
//! tests replay every corpus and regression input through them on stable
//! (`tests/tests/all/fuzz_corpus.rs`), so a crash once found stays fixed.

use hubhost::admin::api::Activate;
use hubhost::auth::{AuthConfig, Authenticator, JwtConfig};
use hubhost::ids::NodeId;
use hubhost::names::HubKey;
use hubhost::protocol::{self, Incoming, Protocol, handshake};
use hubhost::runtime::{HubError, bounded, json_array};
use hubhost::tenants::{TenantConfig, TenantDefaults, Tenants};
use serde_json::value::RawValue;
use std::collections::HashMap;

/// A fuzz target: arbitrary bytes in, a panic for a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name cargo-fuzz and the corpus directories use.
pub const TARGETS: &[(&str, Target)] = &[
    ("hub_json", hub_json),
    ("hub_msgpack", hub_msgpack),
    ("handshake", handshake),
    ("negotiate", negotiate),
    ("transcode", transcode),
    ("admin_bodies", admin_bodies),
    ("guest_values", guest_values),
];

/// What holds of every message a parser accepted: an invocation's
/// arguments are one JSON array, whichever protocol it came in.
fn check(incoming: &Incoming) {
    if let Incoming::Invocation { arguments, .. } = incoming {
        let parsed = RawValue::from_string(arguments.clone());
        assert!(
            parsed.is_ok_and(|raw| raw.get().starts_with('[')),
            "arguments are not a JSON array: {arguments}"
        );
    }
}

/// A WebSocket text frame, or an SSE or long-polling POST body, of the JSON
/// hub protocol: framing by record separators, then each message.
pub fn hub_json(data: &[u8]) {
    let (messages, consumed) = protocol::split_messages(data);
    assert!(consumed <= data.len());
    for message in messages {
        if let Ok(incoming) = Protocol::Json.parse(message) {
            check(&incoming);
        }
    }
}

/// A binary frame or POST body of the MessagePack hub protocol: varint
/// length prefixes, then each message, transcoded to JSON.
pub fn hub_msgpack(data: &[u8]) {
    if let Ok((messages, consumed)) = Protocol::MessagePack.split(data) {
        assert!(consumed <= data.len());
        for message in messages {
            if let Ok(incoming) = Protocol::MessagePack.parse(message) {
                check(&incoming);
            }
        }
    }
}

/// The first message of every connection.
pub fn handshake(data: &[u8]) {
    if let Err(error) = handshake::parse_request(data) {
        let response = handshake::error_response(&error);
        assert!(
            serde_json::from_str::<serde_json::Value>(response.trim_end_matches('\u{1e}')).is_ok()
        );
    }
}

/// A negotiate (or any hub) request's query: the version asked for, the
/// connection token, and an `access_token` JWT checked as a JWT tenant would.
pub fn negotiate(data: &[u8]) {
    let Ok(query) = serde_urlencoded::from_bytes::<HashMap<String, String>>(data) else {
        return;
    };
    if let Ok(version) = hubhost::transport::negotiate_version(&query) {
        assert!((0..=1).contains(&version));
    }
    if let Some(id) = query.get("id") {
        let _ = NodeId::owner_of(id);
        let _ = NodeId::parse(id);
    }
    let jwt = Authenticator::new(&AuthConfig::Jwt(JwtConfig {
        hs256_secret: Some("a-secret-of-at-least-thirty-two-bytes".into()),
        ..JwtConfig::default()
    }));
    if let Ok(jwt) = jwt {
        let header = query.get("authorization").map(String::as_str);
        let _ = jwt.authenticate(header, &query);
    }
}

/// JSON from a guest (arguments, results) to MessagePack for a client, and
/// back: what the host transcodes must read back as the same value.
pub fn transcode(data: &[u8]) {
    if let Ok(value) = rmpv::decode::read_value(&mut &data[..])
        && let Ok(json) = hubhost::protocol::msgpack::to_json(&value)
    {
        assert!(serde_json::to_string(&json).is_ok());
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(arguments) = json_array(text.to_owned()) else {
        return;
    };
    let frame = Protocol::MessagePack.invocation("m", &arguments);
    let Ok((messages, _)) = Protocol::MessagePack.split(&frame) else {
        panic!("the host's own frame does not split");
    };
    let Some(Ok(Incoming::Invocation {
        arguments: back, ..
    })) = messages.first().map(|m| Protocol::MessagePack.parse(m))
    else {
        panic!("the host's own invocation does not parse");
    };
    let (sent, got): (serde_json::Value, serde_json::Value) = match (
        serde_json::from_str(arguments.get()),
        serde_json::from_str(&back),
    ) {
        (Ok(sent), Ok(got)) => (sent, got),
        _ => panic!("transcoded arguments are not JSON: {back}"),
    };
    assert!(same(&sent, &got), "{sent} came back as {got}");
}

/// Equal as JSON values, numbers by value (MessagePack has no `1.0` that
/// reads back as the text `1.0` distinct from `1`).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Admin API bodies: a tenant's settings (checked as `PUT /tenants/T`
/// checks them) and an activation.
pub fn admin_bodies(data: &[u8]) {
    if let Ok(config) = serde_json::from_slice::<TenantConfig>(data) {
        let tenants = Tenants::new(
            TenantDefaults {
                hub_limits: Default::default(),
                max_messages_per_second: None,
                max_component_bytes: 1 << 20,
                storage: Default::default(),
            },
            HashMap::new(),
        );
        if let Ok(tenants) = tenants {
            let _ = tenants.check("t", &config.hashed());
        }
    }
    let _ = serde_json::from_slice::<Activate>(data);
}

/// What a guest hands the host: send arguments, results, error texts (cut
/// to the result limit at a character boundary), names.
pub fn guest_values(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Ok(arguments) = json_array(text.clone()) {
        let _ = Protocol::Json.invocation("m", &arguments);
        let _ = Protocol::Json.completion_result("1", &arguments);
        let _ = Protocol::MessagePack.completion_result("1", &arguments);
    }
    let limit = data.first().map_or(0, |&b| usize::from(b));
    if let HubError::Failed(cut) = bounded(HubError::Failed(text.clone()), limit) {
        assert!(
            cut.len() <= limit.max('…'.len_utf8()),
            "{} bytes over {limit}",
            cut.len()
        );
        assert!(cut == text || text.len() > limit);
    }
    if let Some((tenant, hub)) = text.split_once('/') {
        let _ = HubKey::new(tenant, hub);
    }
}
