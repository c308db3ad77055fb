//! `POST /{tenant}/{hub}/negotiate`: any node answers, and owns the
//! connection it negotiates (its token names it).
//!
//! Protocol errors are answered with HTTP 200 and `{"error": …}`, which is
//! what the official clients expect; only an unknown hub is a 404.

use super::{authenticate, find_hub};
use crate::ids::ConnectionToken;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// The highest negotiate version we speak.
const MAX_NEGOTIATE_VERSION: i64 = 1;

pub async fn negotiate(
    State(state): State<Arc<AppState>>,
    Path((tenant, hub)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (key, _) = match find_hub(&state, &tenant, &hub) {
        Ok(found) => found,
        Err(missing) => return missing.into_response(),
    };
    if state.draining.is_cancelled() {
        return super::draining();
    }
    let identity = match authenticate(&state, key.tenant(), &headers, &query) {
        Ok(identity) => identity,
        Err(unauthorized) => return unauthorized.into_response(),
    };
    let version = match negotiate_version(&query) {
        Ok(version) => version,
        Err(text) => return error(&text),
    };
    if version == 0 && !state.settings.connection.allow_negotiate_v0 {
        // Version 0 makes the connection id, which other clients learn, the
        // token: whoever knows it could poll and post as this client.
        return error(
            "Negotiate version 0 is not allowed on this server; use a client that sends negotiateVersion=1 (any official client since ASP.NET Core 3.0).",
        );
    }
    let tenants = state.tenants.current();
    let tenant = tenants.get(key.tenant());
    if let Err(quota) = state
        .connection_counts
        .check(key.tenant(), tenant.max_connections)
    {
        state.limit_counters.hit(key.tenant(), quota.setting());
        tracing::info!(tenant = key.tenant(), "negotiate refused: {quota}");
        return error(&quota.to_string());
    }
    let connection_id = state.cluster.node().new_connection_id();
    // Version 0 clients connect with the connection id itself.
    let token = if version >= 1 {
        state.cluster.node().new_token()
    } else {
        ConnectionToken::version_0(&connection_id)
    };
    // Stateful reconnect when asked for and allowed (it is used only over
    // WebSockets with handshake version 2; the clients ask only for that).
    let stateful = version >= 1
        && state.settings.connection.allow_stateful_reconnect
        && query
            .get("useStatefulReconnect")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if let Err(full) = state.tokens.negotiated(
        token.clone(),
        key.clone(),
        identity.user_id,
        connection_id.clone(),
        stateful,
    ) {
        state
            .limit_counters
            .hit(key.tenant(), "connection.max_pending_negotiations");
        tracing::warn!(hub = %key, pending = state.tokens.pending(), "negotiate refused: {full}");
        return error(&full.to_string());
    }
    let transports = json!([
        { "transport": "WebSockets", "transferFormats": ["Text", "Binary"] },
        { "transport": "ServerSentEvents", "transferFormats": ["Text"] },
        { "transport": "LongPolling", "transferFormats": ["Text", "Binary"] },
    ]);
    let body = if version >= 1 {
        let mut body = json!({
            "negotiateVersion": version,
            "connectionId": connection_id,
            "connectionToken": token,
            "availableTransports": transports,
        });
        if stateful {
            body["useStatefulReconnect"] = true.into();
        }
        body
    } else {
        json!({
            "negotiateVersion": 0,
            "connectionId": connection_id,
            "availableTransports": transports,
        })
    };
    Json(body).into_response()
}

/// The negotiate version to answer with, from the client's query: what it
/// asked for, at most ours; 0 when it does not say. The error is the text
/// the client gets.
pub fn negotiate_version(query: &HashMap<String, String>) -> Result<i64, String> {
    match query.get("negotiateVersion").map(|v| v.parse::<i64>()) {
        None => Ok(0),
        Some(Err(_)) => Err("The client requested a non-integer protocol version.".into()),
        Some(Ok(v)) if v < 0 => Err(format!(
            "The client requested version '{v}', but the server does not support this version."
        )),
        Some(Ok(v)) => Ok(v.min(MAX_NEGOTIATE_VERSION)),
    }
}

fn error(text: &str) -> Response {
    Json(json!({ "error": text })).into_response()
}
