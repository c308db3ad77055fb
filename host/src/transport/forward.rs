//! Requests for connections of another node, passed on to that node.
//!
//! A connection lives on the node that negotiated it, and its token names
//! that node (see [`crate::ids`]). A request for a token this node does not
//! know goes to the owner at the URL its heartbeats give (see
//! [`crate::cluster::Heartbeat`]) — or, for a WebSocket whose owner is gone,
//! to each live node that holds connections of it, since a drain hands
//! stateful connections to other nodes (see `handover`): the HTTP request (SSE stream, poll,
//! POST, DELETE) with its headers and body, answered with the owner's status,
//! headers and streamed body; a WebSocket is relayed frame by frame. The
//! owner checks everything again (hub, credentials, token), so a forwarded
//! request gains nothing by being forwarded. It is marked, and a marked
//! request is never passed on again: no loops. An owner that is not alive or
//! cannot be reached means the connection is gone: 404, and the client
//! starts over. When this node shuts down, a poll it is passing on is
//! answered 200 empty (the client polls again elsewhere), an event stream
//! ends and a relayed WebSocket is closed with 1001: the clients reconnect.

use super::{HubRequest, unknown_connection};
use crate::ids::NodeId;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::ws::{self, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as UpMessage, client::IntoClientRequest};
use tokio_util::sync::CancellationToken;

/// Marks a request one node passed on to another.
pub const FORWARDED: &str = "x-hubhost-forwarded";

/// The request headers the owner needs: credentials (it checks them again,
/// and that the user is the one who negotiated), the body's type, and what
/// the clients send to say who they are. Nothing else goes: an owner reached
/// through a bad address would learn no cookies or other secrets.
const PASSED_ON: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "x-requested-with",
    "x-signalr-user-agent",
];

/// The headers of a request to send to the owner.
fn passed_on(headers: &HeaderMap) -> impl Iterator<Item = (HeaderName, &HeaderValue)> {
    PASSED_ON.iter().filter_map(|name| {
        let name = HeaderName::from_static(name);
        let value = headers.get(&name)?;
        Some((name, value))
    })
}

/// Headers that belong to one hop, not to the response.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    ) || name.as_str().starts_with("sec-websocket-")
}

/// The node `request`'s token names, unless that is this node or the
/// request was passed on already (it is never passed on again).
fn named_node(state: &AppState, request: &HubRequest) -> Option<NodeId> {
    if request.headers.contains_key(FORWARDED) {
        return None;
    }
    let owner = request.token.as_ref()?.owner()?;
    (owner != state.cluster.node()).then_some(owner)
}

/// The owner's URL for `request`'s token; `None` when this node owns it,
/// the request was passed on already, or the owner is not alive.
fn owner(state: &AppState, request: &HubRequest) -> Option<(NodeId, String)> {
    let owner = named_node(state, request)?;
    match state.cluster.node_url(owner) {
        Some(url) => Some((owner, url)),
        None => {
            tracing::debug!(%owner, "request for a connection of a node that is not alive");
            None
        }
    }
}

/// A `method` request to `url` on another node, on behalf of `request`:
/// the headers the owner needs, marked as passed on by this node.
pub(super) fn request_to(
    state: &AppState,
    request: &HubRequest,
    method: reqwest::Method,
    url: &str,
) -> reqwest::RequestBuilder {
    let mut outgoing = state.forwarder.request(method, url);
    for (name, value) in passed_on(&request.headers) {
        outgoing = outgoing.header(name, value);
    }
    outgoing.header(FORWARDED, state.cluster.node().to_string())
}

fn path_and_query(request: &HubRequest) -> &str {
    request.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// Pass an HTTP request on to the owner of its connection.
pub(super) async fn http(state: &AppState, request: &HubRequest, body: Bytes) -> Response {
    let Some((owner, base)) = owner(state, request) else {
        return unknown_connection();
    };
    let url = format!("{base}{}", path_and_query(request));
    let outgoing = request_to(state, request, request.method.clone(), &url).body(body);
    let sent = tokio::select! {
        sent = outgoing.send() => sent,
        // This node is going; the owner is not. A poll still waiting is
        // answered as if it had timed out: the client polls again, through
        // another node, and that poll supersedes this one on the owner.
        () = state.shutdown.cancelled() => {
            return super::long_polling::reply(StatusCode::OK, Bytes::new());
        }
    };
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            // The URL holds the connection token, and maybe an access
            // token: the log gets the node and the reason only.
            let error = error.without_url();
            tracing::warn!(%owner, node = base, %error, "cannot pass a request on to the connection's node");
            return unknown_connection();
        }
    };
    let mut reply = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if !hop_by_hop(name) {
            reply = reply.header(name, value);
        }
    }
    // Streamed: an event stream lasts, a poll's body arrives when it has one.
    // An event stream passed on ends when this node shuts down (the client
    // reconnects); it cannot move to another node.
    let body = response
        .bytes_stream()
        .take_until(state.shutdown.clone().cancelled_owned());
    reply
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// The nodes that may hold `request`'s connection, to try in turn: its
/// owner while it is alive; once it is gone, the live nodes that say they
/// hold connections of it (a drain handed them over). Only those: a made-up
/// token of a gone node costs no more requests than there are such nodes.
fn holders(state: &AppState, request: &HubRequest) -> Vec<(NodeId, String)> {
    let Some(owner) = named_node(state, request) else {
        return Vec::new();
    };
    if let Some(url) = state.cluster.node_url(owner) {
        return vec![(owner, url)];
    }
    let cluster = &state.cluster;
    cluster
        .adopters(owner)
        .into_iter()
        .filter_map(|node| Some((node, cluster.node_url(node)?)))
        .collect()
}

/// Relay a WebSocket to the node holding its connection: that node accepts
/// it first (or answers the status the client gets), then frames flow both
/// ways. A draining holder asks this node to take the connection over
/// instead (see `handover`).
pub(super) async fn websocket(
    state: &Arc<AppState>,
    request: HubRequest,
    upgrade: WebSocketUpgrade,
) -> Response {
    for (node, base) in holders(state, &request) {
        let url = format!(
            "ws{}{}",
            base.trim_start_matches("http"),
            path_and_query(&request)
        );
        let Ok(mut upstream) = url.as_str().into_client_request() else {
            // Not the URL: its query holds the connection token.
            tracing::warn!(%node, node_url = base, "cannot relay to an invalid node URL");
            continue;
        };
        for (name, value) in passed_on(&request.headers) {
            upstream.headers_mut().insert(name, value.clone());
        }
        if let Ok(this) = state.cluster.node().to_string().parse() {
            upstream.headers_mut().insert(FORWARDED, this);
        }
        let upstream = match tokio_tungstenite::connect_async(upstream).await {
            Ok((upstream, _)) => upstream,
            Err(tungstenite::Error::Http(response)) => {
                // A draining holder hands the connection over to this node.
                if super::handover::asked(response.status(), response.headers()) {
                    return super::handover::take(state, request, upgrade, node, &base).await;
                }
                // Not there: maybe on the next node.
                if response.status() == StatusCode::NOT_FOUND {
                    continue;
                }
                // The holder's answer (409, 401…) is the client's.
                return response.status().into_response();
            }
            Err(error) => {
                tracing::warn!(%node, %error, "cannot relay a WebSocket to the connection's node");
                continue;
            }
        };
        let tasks = state.tasks.clone();
        let shutdown = state.shutdown.clone();
        return upgrade
            .max_message_size(state.settings.connection.max_transport_message())
            .read_buffer_size(4 * 1024)
            .on_upgrade(move |socket| tasks.track_future(relay(socket, upstream, shutdown)));
    }
    unknown_connection()
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one side of a relay may take to finish once the other is done.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Copy frames both ways until both sides are done (the second one within
/// [`CLOSE_TIMEOUT`] of the first), or this node shuts down.
async fn relay(client: WebSocket, upstream: Upstream, shutdown: CancellationToken) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut owner_tx, mut owner_rx) = upstream.split();
    let going_away = {
        let to_owner = async {
            while let Some(Ok(message)) = client_rx.next().await {
                let message = match message {
                    WsMessage::Text(text) => UpMessage::text(text.as_str()),
                    WsMessage::Binary(bytes) => UpMessage::binary(bytes),
                    WsMessage::Close(frame) => {
                        let frame = frame.map(|f| CloseFrame {
                            code: f.code.into(),
                            reason: f.reason.as_str().into(),
                        });
                        let _ = owner_tx.send(UpMessage::Close(frame)).await;
                        break;
                    }
                    WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                };
                if owner_tx.send(message).await.is_err() {
                    break;
                }
            }
            let _ = owner_tx.close().await;
        };
        let to_client = async {
            while let Some(Ok(message)) = owner_rx.next().await {
                let message = match message {
                    UpMessage::Text(text) => WsMessage::Text(text.as_str().into()),
                    UpMessage::Binary(bytes) => WsMessage::Binary(bytes),
                    UpMessage::Close(frame) => {
                        // The owner's close code (1000) is what the client checks.
                        let frame = frame.map(|f| ws::CloseFrame {
                            code: f.code.into(),
                            reason: f.reason.as_str().into(),
                        });
                        let _ = client_tx.send(WsMessage::Close(frame)).await;
                        break;
                    }
                    UpMessage::Ping(_) | UpMessage::Pong(_) | UpMessage::Frame(_) => continue,
                };
                if client_tx.send(message).await.is_err() {
                    break;
                }
            }
            let _ = client_tx.close().await;
        };
        tokio::pin!(to_owner, to_client);
        tokio::select! {
            () = &mut to_owner => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, to_client).await;
                false
            }
            () = &mut to_client => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, to_owner).await;
                false
            }
            () = shutdown.cancelled() => true,
        }
    };
    if going_away {
        // 1001 Going Away: the client's SignalR sees a lost connection and
        // (with automatic reconnect) starts over on a live node. The owner
        // sees its socket close and ends the connection there.
        let frame = ws::CloseFrame {
            code: ws::close_code::AWAY,
            reason: "This node is shutting down.".into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let _ = client_tx.send(WsMessage::Close(Some(frame))).await;
            let _ = owner_tx.close().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_owner_needs_is_passed_on() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer t"),
            ("content-type", "text/plain"),
            ("x-signalr-user-agent", "Microsoft SignalR/8.0"),
            ("cookie", "session=secret"),
            ("x-api-key", "secret"),
            ("host", "a"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let mut names: Vec<_> = passed_on(&headers).map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            ["authorization", "content-type", "x-signalr-user-agent"]
        );
    }
}
