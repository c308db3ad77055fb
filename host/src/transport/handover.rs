//! A draining node hands its stateful-reconnect connections to the others.
//!
//! At the end of the drain window, the draining node drops the socket of
//! each stateful-reconnect connection (no Close message), and keeps the
//! connection. Its client reconnects at once with the same token, through
//! the load balancer, to a node that is not draining. That node passes the
//! WebSocket on to the owner as for any resume (`forward`); the draining
//! owner answers [`HANDOVER_STATUS`] instead of taking it, and the node
//! takes the connection over:
//! 1. `describe`: it asks the owner who the connection is (id, protocol,
//!    groups, items), registers it here in its groups and waits until its
//!    subscriptions are in effect: from then on it receives every send to
//!    the connection;
//! 2. it publishes a barrier to the owner after everything it published
//!    before (see `crate::lifetime`), so that once the owner has the
//!    barrier, the owner has received every send published before this
//!    node's subscriptions took effect;
//! 3. `take`: the owner waits for the barrier, takes the connection out of
//!    its tables, and answers with its numbering, the messages the client
//!    has not acknowledged and those still queued, each send with its id;
//! 4. this node upgrades the client's socket and serves the connection:
//!    Sequence and replay as for any resume, then the owner's queue, then
//!    what queued here, skipping sends the owner already had.
//!
//! Guarantee: a stateful-reconnect client of a draining node keeps its
//! connection id, groups, items and every message, as long as it is taken
//! within the drain (see `crate::drain`). Anything failing on the way
//! answers 404: the client starts over, as after a crash.
//!
//! Both steps are requests to the owner, marked as passed on, with the
//! client's credentials; the owner checks hub, user and token as for any
//! request, and answers only while it is draining.

use super::{HubRequest, admit, forward::FORWARDED, unknown_connection};
use crate::connection::Adoption;
use crate::connection::handover::{Description, Resume, ResumeTx, Snapshot};
use crate::connection::io::TransportKind;
use crate::ids::{ConnectionId, NodeId};
use crate::protocol::Protocol;
use crate::sessions::{Claim, TokenGuard};
use crate::state::AppState;
use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::Instrument;

/// What a draining owner answers a resume passed on to it: take the
/// connection over (`421 Misdirected Request`, with [`HANDOVER_HEADER`]).
pub const HANDOVER_STATUS: StatusCode = StatusCode::MISDIRECTED_REQUEST;
pub const HANDOVER_HEADER: &str = "x-hubhost-handover";

/// How long each step may take, barrier included.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The steps, as the query says them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Describe,
    Take,
}

/// `POST /TENANT/HUB/handover?id=TOKEN&step=…[&barrier=N]`'s query (the
/// token is read with the hub request).
#[derive(Debug, Serialize, Deserialize)]
pub struct StepQuery {
    pub step: Step,
    #[serde(default)]
    pub barrier: Option<u64>,
}

/// The owner's answer to a resume it will not take: hand it over.
pub(super) fn answer() -> Response {
    (HANDOVER_STATUS, [(HANDOVER_HEADER, "1")]).into_response()
}

/// Whether the owner's answer to a passed-on resume asks for a handover.
pub(super) fn asked(status: StatusCode, headers: &HeaderMap) -> bool {
    status == HANDOVER_STATUS && headers.contains_key(HANDOVER_HEADER)
}

/// The owner's side: one step of handing a connection over.
pub async fn step(
    State(state): State<Arc<AppState>>,
    request: HubRequest,
    Query(query): Query<StepQuery>,
) -> Response {
    // Only from another node, only while leaving: a client cannot use this
    // to end its own connection some other way than by closing it.
    if !request.headers.contains_key(FORWARDED) || !state.draining.is_cancelled() {
        return unknown_connection();
    }
    let Ok(token) = request.token() else {
        return unknown_connection();
    };
    let resume = match state
        .tokens
        .claim(token, &request.key, request.user(), None)
    {
        Claim::Resume(resume) => resume,
        _ => return unknown_connection(),
    };
    match query.step {
        Step::Describe => ask_connection(&resume, Resume::Describe).await,
        Step::Take => {
            let Some(barrier) = query.barrier else {
                return (StatusCode::BAD_REQUEST, "barrier required").into_response();
            };
            if !state.lifetime.barrier(barrier, STEP_TIMEOUT).await {
                tracing::warn!("handover: the taking node's barrier did not arrive in time");
                return StatusCode::GATEWAY_TIMEOUT.into_response();
            }
            ask_connection(&resume, Resume::HandOver).await
        }
    }
}

/// Hand the connection `ask` with a place for its answer, and answer that
/// as JSON (404 if the connection is gone or does not answer in time).
async fn ask_connection<T: Serialize>(
    resume: &ResumeTx,
    ask: impl FnOnce(oneshot::Sender<T>) -> Resume,
) -> Response {
    let (tx, rx) = oneshot::channel();
    if resume.send(ask(tx)).await.is_err() {
        return unknown_connection();
    }
    match tokio::time::timeout(STEP_TIMEOUT, rx).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        _ => unknown_connection(),
    }
}

/// Why taking a connection over failed (the log's; the client gets 404).
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("request to the owner failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("the owner answered {0}")]
    Status(StatusCode),
    #[error("the owner's answer is not understood: {0}")]
    Answer(#[from] serde_json::Error),
    #[error("the owner described a connection this node cannot serve")]
    Description,
    #[error("timed out")]
    Timeout,
    #[error("the owner's answer is over {0} bytes")]
    TooLarge(usize),
}

/// One step, asked of the owner at `base`; its answer at most `limit` bytes.
async fn ask<T: serde::de::DeserializeOwned>(
    state: &AppState,
    request: &HubRequest,
    base: &str,
    query: StepQuery,
    limit: usize,
) -> Result<T, Failed> {
    let url = format!(
        "{base}/{}/{}/handover",
        request.key.tenant(),
        request.key.hub()
    );
    let token = request.token.as_ref().map_or("", |t| t.as_str());
    let outgoing = super::forward::request_to(state, request, reqwest::Method::POST, &url)
        .query(&[("id", token)])
        .query(&query);
    let sent = tokio::time::timeout(STEP_TIMEOUT * 2, async {
        let response = outgoing.send().await?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failed::Status(status));
        }
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            body.extend_from_slice(&chunk?);
            if body.len() > limit {
                return Err(Failed::TooLarge(limit));
            }
        }
        Ok(body)
    });
    let body = sent.await.map_err(|_| Failed::Timeout)??;
    Ok(serde_json::from_slice(&body)?)
}

/// The taking node's side: take the connection of `request` over from its
/// draining `owner` at `base`, and serve it on the client's socket.
pub(super) async fn take(
    state: &Arc<AppState>,
    request: HubRequest,
    upgrade: WebSocketUpgrade,
    owner: NodeId,
    base: &str,
) -> Response {
    match taken(state, request, upgrade, owner, base).await {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(%owner, %error, "could not take over a connection of a draining node");
            unknown_connection()
        }
    }
}

async fn taken(
    state: &Arc<AppState>,
    request: HubRequest,
    upgrade: WebSocketUpgrade,
    owner: NodeId,
    base: &str,
) -> Result<Response, Failed> {
    // What a connection can hold (its replay and its queue, in base64 in
    // JSON), and room for its items and groups.
    let tenant_limits = state
        .tenants
        .current()
        .get(request.key.tenant())
        .hub_limits
        .clone();
    let limit = (tenant_limits.stateful_reconnect_buffer_bytes
        + state.settings.connection.max_queued_bytes)
        .saturating_mul(2)
        .saturating_add(1 << 20);
    let describe = StepQuery {
        step: Step::Describe,
        barrier: None,
    };
    let description: Description = ask(state, &request, base, describe, limit).await?;
    let protocol = Protocol::from_name(&description.protocol).ok_or(Failed::Description)?;
    let id = ConnectionId::moved(&description.connection_id).ok_or(Failed::Description)?;
    let token = request.token.clone().ok_or(Failed::Description)?;
    let (key, user) = (request.key.clone(), request.identity.user_id.clone());
    // Asked again for the take: the request itself goes into the context.
    let asking = request.clone();
    let (mut ctx, admission, span) = admit(state, request, id.clone(), TransportKind::WebSockets)
        .map_err(|response| Failed::Status(response.status()))?;
    if let Some(caller) = Arc::get_mut(&mut ctx.caller) {
        caller.items = Arc::new(crate::items::Items::from_entries(description.items));
    }
    let (adoption, subscribed) = Adoption::register(ctx, protocol, &description.groups);
    state.lifetime.settle(subscribed).await;
    let barrier = u64::from_le_bytes(crate::ids::random_bytes());
    state.lifetime.publish_barrier(&key, owner, barrier);
    let query = StepQuery {
        step: Step::Take,
        barrier: Some(barrier),
    };
    // On failure, dropping the adoption takes the connection out again.
    let snapshot: Snapshot = ask(state, &asking, base, query, limit).await?;
    let sockets = state.tokens.adopted(token.clone(), key, user, id);
    let guard = TokenGuard {
        tokens: state.tokens.clone(),
        token,
    };
    let tasks = state.tasks.clone();
    Ok(upgrade
        .max_message_size(state.settings.connection.max_transport_message())
        .read_buffer_size(super::websocket::READ_BUFFER)
        .on_upgrade(move |socket| {
            tasks.track_future(
                async move {
                    adoption.serve(socket, snapshot, sockets).await;
                    drop(guard);
                    drop(admission);
                }
                .instrument(span),
            )
        }))
}
