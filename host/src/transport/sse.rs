//! Server-Sent Events (`GET` with `Accept: text/event-stream`), and the
//! `POST` that carries client messages for both SSE and long polling.

use super::{HubRequest, admit, forbidden, forward, transport_changed, unknown_connection};
use crate::connection::io::TransportKind;
use crate::connection::serve;
use crate::sessions::{Claim, Found, HttpSession, TokenGuard};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

pub(super) async fn connect(state: Arc<AppState>, request: HubRequest) -> Response {
    let token = match request.token() {
        Ok(token) => token.clone(),
        Err(response) => return response,
    };
    let (session, ends) = HttpSession::new(TransportKind::ServerSentEvents);
    let connection_id =
        match state
            .tokens
            .claim(&token, &request.key, request.user(), Some(session.clone()))
        {
            Claim::Claimed(id) => id,
            Claim::Forbidden => return forbidden(),
            Claim::Unknown => return forward::http(&state, &request, Bytes::new()).await,
            Claim::InUse(TransportKind::ServerSentEvents) => {
                return (StatusCode::CONFLICT, "Connection ID is already in use").into_response();
            }
            // A WebSocket holds it.
            Claim::InUse(_) | Claim::Resume(_) => return transport_changed(),
        };
    let guard = TokenGuard {
        tokens: state.tokens.clone(),
        token,
    };
    let (ctx, admission, span) = match admit(
        &state,
        request,
        connection_id,
        TransportKind::ServerSentEvents,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let Some(events) = ends.events else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    state.tasks.spawn(
        async move {
            serve(ends.inbound, ends.outlet, ctx, None).await;
            drop(guard);
            drop(admission);
        }
        .instrument(span),
    );
    let stream = EventStream {
        events,
        session,
        opened: false,
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache,no-store"),
            (header::PRAGMA, "no-cache"),
            (header::CONTENT_ENCODING, "identity"),
        ],
        Body::from_stream(stream::unfold(stream, EventStream::next)),
    )
        .into_response()
}

/// The response body: a comment line first (browsers fire `open` on the
/// first bytes), then one event per transport message. Dropped when the
/// client goes away, which ends the connection.
struct EventStream {
    events: mpsc::Receiver<Bytes>,
    session: Arc<HttpSession>,
    opened: bool,
}

impl EventStream {
    async fn next(mut self) -> Option<(Result<Bytes, std::convert::Infallible>, Self)> {
        if !self.opened {
            self.opened = true;
            return Some((Ok(Bytes::from_static(b":\r\n")), self));
        }
        let message = self.events.recv().await?;
        Some((Ok(event(&message)), self))
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.session.dispose();
    }
}

/// `data: LINE\r\n` for every line of `message`, then an empty line.
fn event(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 16);
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.into()
}

/// `POST /TENANT/HUB?id=TOKEN`: messages for an SSE or long-polling
/// connection. 200 once the connection has taken them.
pub async fn post(State(state): State<Arc<AppState>>, request: HubRequest, body: Body) -> Response {
    let token = match request.token() {
        Ok(token) => token,
        Err(response) => return response,
    };
    let read = |body: Body| async {
        let limit = state.settings.connection.max_transport_message();
        axum::body::to_bytes(body, limit).await.map_err(|error| {
            tracing::info!(%error, "unreadable POST body");
            (StatusCode::BAD_REQUEST, "Unable to read the request body").into_response()
        })
    };
    match state.tokens.find(token, &request.key, request.user()) {
        Found::Unknown => match read(body).await {
            Ok(body) => forward::http(&state, &request, body).await,
            Err(response) => response,
        },
        Found::Forbidden => forbidden(),
        Found::Negotiated => unknown_connection(),
        Found::WebSocket => (
            StatusCode::METHOD_NOT_ALLOWED,
            "POST requests are not allowed on WebSocket connections.",
        )
            .into_response(),
        Found::Http(session) => {
            // Before the body is read: a client cannot make the node hold
            // more than this many bodies for one connection.
            let Some(_permit) = session.begin_post() else {
                state
                    .limit_counters
                    .hit(request.key.tenant(), "posts_in_progress_per_connection");
                tracing::info!("POST refused: too many in progress on one connection");
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many sends in progress on this connection.",
                )
                    .into_response();
            };
            let body = match read(body).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            if session.send(body).await {
                StatusCode::OK.into_response()
            } else {
                unknown_connection()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn events_have_a_data_line_per_line() {
        assert_eq!(
            &super::event(b"{\"type\":6}\x1e")[..],
            b"data: {\"type\":6}\x1e\r\n\r\n"
        );
        assert_eq!(
            &super::event(b"a\r\nb\n")[..],
            b"data: a\r\ndata: b\r\ndata: \r\n\r\n"
        );
    }
}
