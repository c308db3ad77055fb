//! `GET /{tenant}/{hub}[?id=TOKEN]` with an upgrade: the WebSocket transport.

use super::{HubRequest, admit, forbidden, forward, transport_changed};
use crate::connection::handover::{Resume, ResumeTx};
use crate::connection::io::{Inbound, Outlet, TransportKind};
use crate::connection::serve;
use crate::sessions::{Claim, TokenGuard};
use crate::state::AppState;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::sync::Arc;
use tracing::Instrument;

/// Bytes read from a WebSocket at a time: every open connection holds this
/// much, idle or not. At 1 KiB an idle connection takes 9.6 KiB of the
/// node's memory, against 10.6 at 2 KiB and 12.6 at 4 KiB (10,000 idle
/// connections, `hubhost-load idle`); most hub messages fit in one read.
pub(super) const READ_BUFFER: usize = 1024;

pub(super) async fn connect(
    state: Arc<AppState>,
    request: HubRequest,
    upgrade: WebSocketUpgrade,
) -> Response {
    let (connection_id, token) = match request.token.clone() {
        // skipNegotiation: the connection is created on the spot.
        None if state.draining.is_cancelled() => return super::draining(),
        None => (state.cluster.node().new_connection_id(), None),
        Some(token) => match state
            .tokens
            .claim(&token, &request.key, request.user(), None)
        {
            Claim::Claimed(id) => (id, Some(token)),
            Claim::Forbidden => return forbidden(),
            Claim::Unknown => return forward::websocket(&state, request, upgrade).await,
            // A draining node hands its stateful connections to the node
            // that passed their resume on (`handover`).
            Claim::Resume(_)
                if state.draining.is_cancelled()
                    && request.headers.contains_key(forward::FORWARDED) =>
            {
                return super::handover::answer();
            }
            Claim::Resume(sockets) => return resume(upgrade, sockets, &state),
            Claim::InUse(TransportKind::WebSockets) => {
                return (StatusCode::CONFLICT, "Connection ID is already in use").into_response();
            }
            Claim::InUse(_) => return transport_changed(),
        },
    };
    let resume = token
        .as_ref()
        .and_then(|token| state.tokens.resumable(token));
    // Releases the token when the connection ends, or when the upgrade never
    // happens (the closure holding it is dropped either way).
    let guard = token.map(|token| TokenGuard {
        tokens: state.tokens.clone(),
        token,
    });
    let (ctx, admission, span) =
        match admit(&state, request, connection_id, TransportKind::WebSockets) {
            Ok(admitted) => admitted,
            Err(response) => return response,
        };
    let tasks = state.tasks.clone();
    upgrade
        .max_message_size(state.settings.connection.max_transport_message())
        // tungstenite's 128 KiB default read buffer is allocated and zeroed per
        // connection: 10,000 idle clients cost 1.3 GB. Hub messages are small
        // (32 KiB at most by default); a bigger one is read in more steps.
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            tasks.track_future(
                async move {
                    let (sink, stream) = socket.split();
                    let outlet = Outlet::WebSocket {
                        sink,
                        binary: false,
                    };
                    serve(Inbound::WebSocket(stream), outlet, ctx, resume).await;
                    drop(guard);
                    drop(admission);
                }
                .instrument(span),
            )
        })
}

/// A stateful-reconnect client back with its token: its new socket goes to
/// the connection, which still runs (same id, groups, hub state), and which
/// replays what the client missed.
fn resume(upgrade: WebSocketUpgrade, sockets: ResumeTx, state: &AppState) -> Response {
    upgrade
        .max_message_size(state.settings.connection.max_transport_message())
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            // The connection ended meanwhile: the socket is dropped (closed).
            let _ = sockets.send(Resume::Socket(Box::new(socket))).await;
        })
}
