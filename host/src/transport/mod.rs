//! The HTTP side of SignalR: negotiate and the three transports.
//!
//! Routes, for a hub `HUB` of tenant `TENANT`:
//! - `POST /TENANT/HUB/negotiate`: hands out a connection id and token;
//! - `GET /TENANT/HUB?id=TOKEN`: a WebSocket upgrade (`websocket`); else
//!   with `Accept: text/event-stream` Server-Sent Events (`sse`); else a
//!   long poll (`long_polling`). A WebSocket without `id` (the client's
//!   `skipNegotiation`) is a fresh connection;
//! - `POST /TENANT/HUB?id=TOKEN`: messages for an SSE or long-polling
//!   connection; `DELETE`: ends a long-polling connection.
//!
//! Every request authenticates the client as its tenant says (see
//! [`crate::auth`]). A token names the node that negotiated it, which owns
//! the connection: a request for a token of another node is passed on to it
//! (`forward`), so no load balancer needs session affinity.

// The error side of these helpers is the response a handler returns at
// once; boxing it would only add an allocation to every refused request.
#![allow(clippy::result_large_err)]

mod forward;
mod handover;
mod long_polling;
mod negotiate;
mod sse;
mod websocket;

pub use handover::step as handover_step;
pub use long_polling::delete;
pub use negotiate::{negotiate, negotiate_version};
pub use sse::post;

use crate::auth::Identity;
use crate::connection::io::TransportKind;
use crate::connection::{ConnectionContext, ConnectionSettings};
use crate::hubs::HubSlot;
use crate::ids::{ConnectionId, ConnectionToken};
use crate::names::HubKey;
use crate::quotas::Admission;
use crate::runtime::CallerInfo;
use crate::state::AppState;
use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequestParts, OriginalUri, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// A request named a hub this node does not serve.
struct NoSuchHub(String);

impl IntoResponse for NoSuchHub {
    fn into_response(self) -> Response {
        (StatusCode::NOT_FOUND, format!("No hub '{}'.", self.0)).into_response()
    }
}

/// The hub a request names.
fn find_hub(
    state: &AppState,
    tenant: &str,
    hub: &str,
) -> Result<(HubKey, Arc<HubSlot>), NoSuchHub> {
    let not_found = || NoSuchHub(format!("{tenant}/{hub}"));
    let key = HubKey::new(tenant, hub).map_err(|_| not_found())?;
    let slot = state.hubs.get(&key).ok_or_else(not_found)?;
    Ok((key, slot))
}

/// A request without valid credentials: 401, and nothing more for the client.
struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "Unauthorized",
        )
            .into_response()
    }
}

/// The identity a request proves for `tenant`, or the 401 to answer. The
/// client learns only "401"; the log says why.
fn authenticate(
    state: &AppState,
    tenant: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Identity, Unauthorized> {
    let table = state.tenants.current();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    table
        .get(tenant)
        .auth
        .authenticate(authorization, query)
        .map_err(|error| {
            tracing::info!(tenant, %error, "client not authenticated");
            Unauthorized
        })
}

/// One request to a hub's connection endpoint, checked: the hub exists and
/// the client may use it. Extracted by every transport handler; the
/// rejection is the 404 or 401 to answer.
#[derive(Clone)]
pub struct HubRequest {
    key: HubKey,
    slot: Arc<HubSlot>,
    identity: Identity,
    /// The `id` query parameter: the connection token.
    token: Option<ConnectionToken>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<AppState>> for HubRequest {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let Path((tenant, hub)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(mut query) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let (key, slot) = find_hub(state, &tenant, &hub).map_err(IntoResponse::into_response)?;
        let identity = authenticate(state, key.tenant(), &parts.headers, &query)
            .map_err(IntoResponse::into_response)?;
        let uri = match parts.extensions.get::<OriginalUri>() {
            Some(OriginalUri(uri)) => uri.clone(),
            None => parts.uri.clone(),
        };
        Ok(Self {
            key,
            slot,
            identity,
            token: query.remove("id").map(ConnectionToken::from_client),
            method: parts.method.clone(),
            uri,
            headers: parts.headers.clone(),
        })
    }
}

impl HubRequest {
    /// The user the request is authenticated as, if any.
    fn user(&self) -> Option<&str> {
        self.identity.user_id.as_deref()
    }

    /// The token, or the 400 the protocol gives when it is missing.
    fn token(&self) -> Result<&ConnectionToken, Response> {
        self.token
            .as_ref()
            .ok_or_else(|| (StatusCode::BAD_REQUEST, "Connection ID required").into_response())
    }
}

/// 403: another user negotiated the connection (as ASP.NET Core answers).
fn forbidden() -> Response {
    StatusCode::FORBIDDEN.into_response()
}

/// 404: the connection does not exist (any more).
fn unknown_connection() -> Response {
    (StatusCode::NOT_FOUND, "No Connection with that ID").into_response()
}

/// 400: the token belongs to a connection of another transport.
fn transport_changed() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "Cannot change transports mid-connection",
    )
        .into_response()
}

/// Admit a connection of `request` with `connection_id` over `transport`:
/// the tenant's connection quota, limits and caller record. `Err` is the
/// response to give instead.
fn admit(
    state: &AppState,
    request: HubRequest,
    connection_id: ConnectionId,
    transport: TransportKind,
) -> Result<(ConnectionContext, Admission, tracing::Span), Response> {
    let tenants = state.tenants.current();
    let tenant = tenants.get(request.key.tenant());
    let admission = state
        .connection_counts
        .admit(request.key.tenant(), tenant.max_connections)
        .map_err(|quota| {
            state
                .limit_counters
                .hit(request.key.tenant(), quota.setting());
            tracing::info!(tenant = request.key.tenant(), "connection refused: {quota}");
            (StatusCode::TOO_MANY_REQUESTS, quota.to_string()).into_response()
        })?;
    let limits = ConnectionSettings {
        max_messages_per_second: tenant.max_messages_per_second.unwrap_or(0),
        stateful_reconnect_buffer_bytes: tenant.hub_limits.stateful_reconnect_buffer_bytes,
        ..state.settings.connection.clone()
    };
    let span = tracing::info_span!(
        "connection",
        hub = %request.key,
        id = %connection_id,
        user = request.identity.user_id.as_deref().unwrap_or("")
    );
    let calls = state
        .call_slots
        .of(request.key.tenant(), tenant.hub_limits.max_concurrent_calls);
    let ctx = ConnectionContext {
        hub: request.key,
        slot: request.slot,
        lifetime: state.lifetime.clone(),
        caller: Arc::new(CallerInfo {
            connection_id: connection_id.into(),
            user_id: request.identity.user_id,
            claims: request.identity.claims,
            items: Default::default(),
        }),
        limits,
        calls,
        counters: state.limit_counters.clone(),
        transport,
        shutdown: state.shutdown.clone(),
    };
    Ok((ctx, admission, span))
}

/// The answer to a new connection on a draining node: 503, which load
/// balancers and the official clients' reconnects take as "try elsewhere".
pub(crate) fn draining() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(serde_json::json!({ "error": "This server is shutting down; connect again." })),
    )
        .into_response()
}

/// `GET /TENANT/HUB`: a WebSocket, an event stream or a long poll.
pub async fn connect(
    State(state): State<Arc<AppState>>,
    request: HubRequest,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Ok(upgrade) = upgrade {
        return websocket::connect(state, request, upgrade).await;
    }
    let wants_events = request
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"));
    if wants_events {
        sse::connect(state, request).await
    } else {
        long_polling::poll(state, request).await
    }
}
