//! Calls that need one connection's node and its answer: asking the client
//! for a result (client results), and a stream's item or end.
//!
//! A local connection is served at once. Another node's goes to that node's
//! channel of the hub as a [`CallRequest`] (as a group change does, so a
//! connection a drain moved is found the same way); the holder runs it and
//! answers with a [`CallReply`] on the asking node's channel. The caller
//! waits until its deadline, and no longer than the cluster takes to count
//! that node gone.

use super::{HubLifetimeManager, Wire};
use crate::ids::NodeId;
use crate::invocations::{ResultError, StreamError};
use crate::names::HubKey;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// What a hub asks of one connection.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionCall {
    /// Call `method` on the client and return its result.
    Invoke {
        method: String,
        arguments: Box<RawValue>,
    },
    /// The next item of server stream `stream`.
    StreamItem { stream: String, item: Box<RawValue> },
    /// The end of server stream `stream`.
    StreamEnd {
        stream: String,
        error: Option<String>,
    },
}

/// Why a [`ConnectionCall`] failed: a result's reason or a stream's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub enum CallError {
    #[error(transparent)]
    Result(ResultError),
    #[error(transparent)]
    Stream(StreamError),
}

impl ConnectionCall {
    /// The failure for a connection that is not there (or whose node is
    /// gone): a result's client is disconnected, a stream is closed.
    fn gone(&self) -> CallError {
        match self {
            Self::Invoke { .. } => CallError::Result(ResultError::Disconnected),
            Self::StreamItem { .. } | Self::StreamEnd { .. } => {
                CallError::Stream(StreamError::Closed)
            }
        }
    }
}

/// A [`ConnectionCall`] for a connection of another node.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallRequest {
    /// The asking node, which gets the reply on its node channel.
    pub origin: String,
    pub request: u64,
    pub tenant: String,
    pub hub: String,
    pub connection: String,
    pub call: ConnectionCall,
    /// How long the asking node waits, in milliseconds.
    pub wait_ms: u64,
    /// Streams and results the connection may have open (the tenant's
    /// limit, as the asking node has it).
    pub limit: usize,
}

/// The answer to a [`CallRequest`]: a client's result as JSON, `None` for
/// a stream's item or end.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallReply {
    pub request: u64,
    pub result: Result<Option<String>, CallError>,
}

/// Where the holder's answer goes.
pub(super) type Waiter = oneshot::Sender<Result<Option<String>, CallError>>;

/// How often a caller waiting for another node checks that the node is
/// still alive: the cluster notes deaths by missed heartbeats, not by an
/// event.
const LIVENESS_CHECK: Duration = Duration::from_millis(250);

impl HubLifetimeManager {
    /// Run `call` on connection `id` of `hub`, wherever it is, waiting until
    /// `until`; `limit` bounds its open streams and results.
    pub async fn call_connection(
        &self,
        hub: &HubKey,
        id: &str,
        call: ConnectionCall,
        until: Instant,
        limit: usize,
    ) -> Result<Option<String>, CallError> {
        let local = self
            .hub(hub)
            .and_then(|connections| super::read(&connections).get(id).cloned());
        if let Some(connection) = local {
            return run_local(&connection, call, until, limit).await;
        }
        let Some(home) = NodeId::owner_of(id).filter(|_| self.backplane.has_peers()) else {
            return Err(call.gone());
        };
        let elsewhere = if home == self.node {
            self.was_handed_over(id)
        } else {
            !self.cluster.is_dead(home) || self.cluster.adopted_elsewhere(home)
        };
        if !elsewhere {
            return Err(call.gone());
        }
        let gone = call.gone();
        let (tx, mut rx) = oneshot::channel();
        let request = self.call_requests.add(tx);
        let wait = until.saturating_duration_since(Instant::now());
        let wire = Wire::Call(CallRequest {
            origin: self.cluster.node_name().to_owned(),
            request,
            tenant: hub.tenant().to_owned(),
            hub: hub.hub().to_owned(),
            connection: id.to_owned(),
            call,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            limit,
        });
        self.publish_wire(hub.tenant(), &self.channels.hub_node(hub, home), &wire);
        let result = loop {
            let check = (Instant::now() + LIVENESS_CHECK).min(until);
            match tokio::time::timeout_at(check, &mut rx).await {
                Ok(Ok(result)) => break result,
                Ok(Err(_)) => break Err(gone),
                Err(_) if Instant::now() >= until => {
                    break Err(match gone {
                        CallError::Result(_) => CallError::Result(ResultError::Timeout(
                            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        )),
                        stream => stream,
                    });
                }
                // Its node died, and nobody holds its moved connections.
                Err(_) if self.cluster.is_dead(home) && !self.cluster.adopted_elsewhere(home) => {
                    break Err(gone);
                }
                Err(_) => {}
            }
        };
        self.call_requests.take(request);
        result
    }

    /// Another node asks something of one of our connections.
    pub(super) fn on_call_request(self: &Arc<Self>, request: CallRequest) {
        let Some(origin) = self.requesting_peer(&request.origin, "connection call") else {
            return;
        };
        let local = HubKey::new(&request.tenant, &request.hub)
            .ok()
            .and_then(|hub| self.hub(&hub))
            .and_then(|connections| super::read(&connections).get(&request.connection).cloned());
        let connection = match local {
            Some(connection) => Some(connection),
            None if self.answers_for_missing(&request.connection) => None,
            None => return,
        };
        let manager = self.clone();
        let channel = self.channels.node(origin);
        // Waiting for the client or for room must not hold up the delivery
        // of other messages.
        tokio::spawn(async move {
            let result = match connection {
                Some(connection) => {
                    let until = Instant::now() + Duration::from_millis(request.wait_ms);
                    run_local(&connection, request.call, until, request.limit).await
                }
                None => Err(request.call.gone()),
            };
            let reply = Wire::CallReply(CallReply {
                request: request.request,
                result,
            });
            manager.publish_wire(&request.tenant, &channel, &reply);
        });
    }

    /// The holder answered one of our connection calls.
    pub(super) fn on_call_reply(&self, reply: CallReply) {
        if let Some(waiter) = self.call_requests.take(reply.request) {
            let _ = waiter.send(reply.result);
        }
    }
}

/// Run `call` on a connection of this node.
async fn run_local(
    connection: &super::LocalConnection,
    call: ConnectionCall,
    until: Instant,
    limit: usize,
) -> Result<Option<String>, CallError> {
    let (outbound, invocations) = (&connection.outbound, &connection.invocations);
    match call {
        ConnectionCall::Invoke { method, arguments } => {
            let asked = invocations
                .ask(outbound, &method, &arguments, limit)
                .map_err(CallError::Result)?;
            asked
                .answer(until)
                .await
                .map(Some)
                .map_err(CallError::Result)
        }
        ConnectionCall::StreamItem { stream, item } => invocations
            .stream_item(outbound, &stream, &item, until)
            .await
            .map(|()| None)
            .map_err(CallError::Stream),
        ConnectionCall::StreamEnd { stream, error } => invocations
            .end_stream(outbound, &stream, error.as_deref())
            .map(|()| None)
            .map_err(CallError::Stream),
    }
}
