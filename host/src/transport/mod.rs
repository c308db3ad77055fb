//! The HTTP side of SignalR: negotiate and the WebSocket transport.
//!
//! Routes, for a hub `HUB` of tenant `TENANT`:
//! - `POST /TENANT/HUB/negotiate`: hands out a connection id and token;
//! - `GET /TENANT/HUB?id=TOKEN` with a WebSocket upgrade: the connection;
//!   without `id` (the client's `skipNegotiation`), a fresh connection.
//!
//! Both authenticate the client as its tenant says (see [`crate::auth`]).

pub mod cors;
mod negotiate;
pub mod tokens;
mod websocket;

pub use negotiate::negotiate;
pub use websocket::connect;

use crate::auth::Identity;
use crate::hubs::HubSlot;
use crate::lifetime::HubKey;
use crate::server::AppState;
use axum::http::{HeaderMap, StatusCode, header};
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
    let table = state.deployer.tenants().current();
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
