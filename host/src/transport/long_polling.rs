//! Long polling: `GET` without an upgrade or `Accept: text/event-stream`,
//! and `DELETE` to leave.
//!
//! The first poll of a negotiated connection answers at once (200, empty)
//! and starts the connection. Each later poll waits for messages: 200 with
//! them, 200 empty after the poll timeout (poll again), 204 when a newer poll
//! took over or the connection is over (stop). A connection nobody polls for
//! the disconnect timeout is disposed of (see [`crate::sessions`]).

use super::{HubRequest, admit, forbidden, forward, transport_changed, unknown_connection};
use crate::connection::io::TransportKind;
use crate::connection::serve;
use crate::ids::ConnectionToken;
use crate::sessions::{Claim, Found, HttpSession, Poll};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tracing::Instrument;

pub(super) async fn poll(state: Arc<AppState>, request: HubRequest) -> Response {
    let token = match request.token() {
        Ok(token) => token.clone(),
        Err(response) => return response,
    };
    let session = match state.tokens.find(&token, &request.key, request.user()) {
        Found::Unknown => return forward::http(&state, &request, Bytes::new()).await,
        Found::Forbidden => return forbidden(),
        Found::Negotiated => return start(state, request, token),
        Found::WebSocket => return transport_changed(),
        Found::Http(session) if session.kind() != TransportKind::LongPolling => {
            return transport_changed();
        }
        Found::Http(session) => session,
    };
    match session.poll(state.settings.connection.poll_timeout).await {
        Poll::Data(bytes) => reply(StatusCode::OK, bytes),
        Poll::Timeout => reply(StatusCode::OK, Bytes::new()),
        Poll::Superseded => reply(StatusCode::NO_CONTENT, Bytes::new()),
        Poll::Closed => {
            // The client stops polling now; nothing more to keep.
            state.tokens.release(&token);
            reply(StatusCode::NO_CONTENT, Bytes::new())
        }
    }
}

/// The first poll: start the connection and answer at once.
fn start(state: Arc<AppState>, request: HubRequest, token: ConnectionToken) -> Response {
    let (session, ends) = HttpSession::new(TransportKind::LongPolling);
    let connection_id =
        match state
            .tokens
            .claim(&token, &request.key, request.user(), Some(session))
        {
            Claim::Claimed(id) => id,
            Claim::Forbidden => return forbidden(),
            // Another request claimed it in between.
            Claim::Unknown => return unknown_connection(),
            Claim::InUse(TransportKind::LongPolling) => return reply(StatusCode::OK, Bytes::new()),
            // A WebSocket holds it.
            Claim::InUse(_) | Claim::Resume(_) => return transport_changed(),
        };
    let (ctx, admission, span) =
        match admit(&state, request, connection_id, TransportKind::LongPolling) {
            Ok(admitted) => admitted,
            Err(response) => {
                state.tokens.release(&token);
                return response;
            }
        };
    // The token stays after the connection ends, until the client's last
    // poll (which gets 204) or the disconnect timeout.
    state.tasks.spawn(
        async move {
            serve(ends.inbound, ends.outlet, ctx, None).await;
            drop(admission);
        }
        .instrument(span),
    );
    reply(StatusCode::OK, Bytes::new())
}

/// A poll response, with the headers that keep caches out of it.
pub(super) fn reply(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, Body::from(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    if status == StatusCode::OK {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    response
}

/// `DELETE /TENANT/HUB?id=TOKEN`: the long-polling client leaves (202).
pub async fn delete(State(state): State<Arc<AppState>>, request: HubRequest) -> Response {
    let token = match request.token() {
        Ok(token) => token,
        Err(response) => return response,
    };
    match state.tokens.find(token, &request.key, request.user()) {
        Found::Unknown => forward::http(&state, &request, Bytes::new()).await,
        Found::Forbidden => forbidden(),
        Found::Http(session) if session.kind() == TransportKind::LongPolling => {
            session.dispose();
            (StatusCode::ACCEPTED, "").into_response()
        }
        Found::Negotiated | Found::WebSocket | Found::Http(_) => (
            StatusCode::BAD_REQUEST,
            "Cannot terminate this connection using the DELETE endpoint.",
        )
            .into_response(),
    }
}
