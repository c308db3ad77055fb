//! `GET /{tenant}/{hub}[?id=TOKEN]`: the WebSocket transport.

use super::tokens::{Claim, Tokens};
use super::{authenticate, find_hub};
use crate::connection::{ConnectionContext, serve};
use crate::runtime::CallerInfo;
use crate::server::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

/// Releases a claimed token when the connection ends, or when the upgrade
/// never happens (the closure holding it is dropped either way).
struct TokenGuard {
    tokens: Tokens,
    token: Option<String>,
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.tokens.release(&token);
        }
    }
}

/// Bytes read from a WebSocket at a time.
const READ_BUFFER: usize = 4 * 1024;

pub async fn connect(
    State(state): State<Arc<AppState>>,
    Path((tenant, hub)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (key, slot) = match find_hub(&state, &tenant, &hub) {
        Ok(found) => found,
        Err(missing) => return missing.into_response(),
    };
    let identity = match authenticate(&state, key.tenant(), &headers, &query) {
        Ok(identity) => identity,
        Err(unauthorized) => return unauthorized.into_response(),
    };
    let token = query.get("id");
    let Ok(upgrade) = upgrade else {
        // Server-Sent Events and long polling are not served yet.
        return match token {
            None => (StatusCode::BAD_REQUEST, "Connection ID required").into_response(),
            Some(_) => (
                StatusCode::BAD_REQUEST,
                "This hub is served over WebSockets only.",
            )
                .into_response(),
        };
    };
    let (connection_id, guard) = match token {
        // skipNegotiation: the connection is created on the spot.
        None => (
            state.lifetime.node().new_connection_id(),
            TokenGuard {
                tokens: state.tokens.clone(),
                token: None,
            },
        ),
        Some(token) => match state.tokens.claim(token, &key) {
            Claim::Claimed(id) => (
                id,
                TokenGuard {
                    tokens: state.tokens.clone(),
                    token: Some(token.clone()),
                },
            ),
            Claim::Unknown => {
                return (StatusCode::NOT_FOUND, "No Connection with that ID").into_response();
            }
            Claim::InUse => {
                return (StatusCode::CONFLICT, "Connection ID is already in use").into_response();
            }
        },
    };
    let tenants = state.deployer.tenants().current();
    let tenant = tenants.get(key.tenant());
    let admission = match state
        .connection_counts
        .admit(key.tenant(), tenant.max_connections)
    {
        Ok(admission) => admission,
        Err(quota) => {
            tracing::info!(tenant = key.tenant(), "connection refused: {quota}");
            return (StatusCode::TOO_MANY_REQUESTS, quota.to_string()).into_response();
        }
    };
    let mut limits = state.settings.connection.clone();
    limits.max_messages_per_second = tenant.max_messages_per_second;
    let span = tracing::info_span!(
        "connection",
        hub = %key,
        id = %connection_id,
        user = identity.user_id.as_deref().unwrap_or("")
    );
    let ctx = ConnectionContext {
        hub: key,
        slot,
        lifetime: state.lifetime.clone(),
        caller: Arc::new(CallerInfo {
            connection_id: connection_id.into(),
            user_id: identity.user_id,
            claims: identity.claims,
        }),
        limits,
    };
    let tasks = state.tasks.clone();
    upgrade
        .max_message_size(state.settings.max_websocket_message)
        // tungstenite's 128 KiB default read buffer is allocated and zeroed per
        // connection: 10,000 idle clients cost 1.3 GB. Hub messages are small
        // (32 KiB at most by default); a bigger one is read in more steps.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            tasks.track_future(
                async move {
                    serve(socket, ctx).await;
                    drop(guard);
                    drop(admission);
                }
                .instrument(span),
            )
        })
}
