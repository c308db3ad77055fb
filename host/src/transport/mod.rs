//! The HTTP side of SignalR: negotiate and the WebSocket transport.
//!
//! Routes, for a hub `HUB` of tenant `TENANT`:
//! - `POST /TENANT/HUB/negotiate`: hands out a connection id and token;
//! - `GET /TENANT/HUB?id=TOKEN` with a WebSocket upgrade: the connection;
//!   without `id` (the client's `skipNegotiation`), a fresh connection.

mod negotiate;
pub mod tokens;
mod websocket;

pub use negotiate::negotiate;
pub use websocket::connect;

use crate::hubs::HubSlot;
use crate::lifetime::HubKey;
use crate::server::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The hub a request names, or the 404 to answer with.
fn find_hub(state: &AppState, tenant: &str, hub: &str) -> Result<(HubKey, Arc<HubSlot>), Response> {
    let not_found = || (StatusCode::NOT_FOUND, format!("No hub '{tenant}/{hub}'.")).into_response();
    let key = HubKey::new(tenant, hub).map_err(|_| not_found())?;
    let slot = state.hubs.get(&key).ok_or_else(not_found)?;
    Ok((key, slot))
}
