//! One client connection, over any transport: handshake, then hub messages
//! in order, keep-alive both ways, and a clean close.
//!
//! Two tasks serve a connection. The reader (this module's [`serve`]) parses
//! what the client sends and dispatches invocations one at a time, in order,
//! like ASP.NET Core's default of one parallel invocation per client. The
//! writer (`writer`) owns the sending side ([`io::Outlet`]): it drains the
//! bounded outbound queue, batching what is waiting into one transport
//! message, pings when nothing was written for the keep-alive interval, and
//! sends the Close. Transports differ only in their [`io`] ends.

mod dispatch;
pub mod handover;
pub mod io;
mod resume;
mod writer;

use crate::backplane::Subscribed;
use crate::hubs::HubSlot;
use crate::invocations::Invocations;
use crate::lifetime::{HubLifetimeManager, LocalConnection};
use crate::monitoring;
use crate::names::HubKey;
use crate::outbound::{self, CloseRequest, Outbound, OutboundReceiver};
use crate::protocol::{Protocol, RECORD_SEPARATOR, handshake};
use crate::runtime::CallerInfo;
use bytes::Bytes;
use io::{Inbound, Outlet, Read, TransportKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, timeout_at};

/// The `[connection]` section: protocol timings and sizes, with ASP.NET
/// Core's defaults.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionSettings {
    /// Time allowed for the handshake, in milliseconds.
    #[arg(long = "handshake-timeout-ms", env = "HUBHOST_HANDSHAKE_TIMEOUT_MS", required = false, value_parser = crate::millis::positive::parse)]
    #[serde(rename = "handshake_timeout_ms", with = "crate::millis::positive")]
    pub handshake_timeout: Duration,
    /// Ping clients after this many idle milliseconds.
    #[arg(long = "keep-alive-ms", env = "HUBHOST_KEEP_ALIVE_MS", required = false, value_parser = crate::millis::positive::parse)]
    #[serde(rename = "keep_alive_interval_ms", with = "crate::millis::positive")]
    pub keep_alive_interval: Duration,
    /// Close clients silent for this many milliseconds after their first ping.
    #[arg(long = "client-timeout-ms", env = "HUBHOST_CLIENT_TIMEOUT_MS", required = false, value_parser = crate::millis::positive::parse)]
    #[serde(rename = "client_timeout_ms", with = "crate::millis::positive")]
    pub client_timeout: Duration,
    /// Largest message a client may send, handshake included, in bytes.
    #[arg(long = "max-message-size", env = "HUBHOST_MAX_MESSAGE_SIZE", required = false, value_parser = clap::value_parser!(usize))]
    pub max_message_size: usize,
    /// Frames that may wait for a slow client before it is closed.
    #[arg(skip)]
    pub outbound_queue: usize,
    /// Bytes that may wait for a slow client before it is closed: what one
    /// connection can make the node hold.
    #[arg(skip)]
    pub max_queued_bytes: usize,
    /// Longest a single write may take before the connection is dropped.
    #[arg(skip)]
    #[serde(rename = "send_timeout_ms", with = "crate::millis::positive")]
    pub send_timeout: Duration,
    /// How long a negotiated connection waits for its transport, and a
    /// long-polling connection for its next poll, in milliseconds.
    #[arg(long = "disconnect-timeout-ms", env = "HUBHOST_DISCONNECT_TIMEOUT_MS", required = false, value_parser = crate::millis::positive::parse)]
    #[serde(rename = "disconnect_timeout_ms", with = "crate::millis::positive")]
    pub disconnect_timeout: Duration,
    /// How long a long poll waits for messages before answering empty, in
    /// milliseconds.
    #[arg(long = "poll-timeout-ms", env = "HUBHOST_POLL_TIMEOUT_MS", required = false, value_parser = crate::millis::positive::parse)]
    #[serde(rename = "poll_timeout_ms", with = "crate::millis::positive")]
    pub poll_timeout: Duration,
    /// Messages per second one connection may send; more closes it. 0: no
    /// limit.
    #[arg(skip)]
    pub max_messages_per_second: u32,
    /// Grant stateful reconnect to the clients that ask for it in negotiate
    /// (over WebSockets, handshake version 2).
    #[arg(skip)]
    pub allow_stateful_reconnect: bool,
    /// The connection's replay buffer, in bytes: the tenant's
    /// `hub_limits.stateful_reconnect_buffer_bytes` (set per connection).
    #[arg(skip)]
    #[serde(skip)]
    pub stateful_reconnect_buffer_bytes: usize,
    /// Connections this node holds at once, every tenant together.
    #[arg(
        long = "max-connections",
        env = "HUBHOST_MAX_CONNECTIONS",
        required = false
    )]
    pub max_connections: usize,
    /// Negotiated connections waiting for their transport on this node.
    #[arg(skip)]
    pub max_pending_negotiations: usize,
    /// Answer negotiate version 0 (clients older than ASP.NET Core 3.0),
    /// whose connection token is the connection id: anyone who learns the
    /// id could use the connection, so it is refused unless allowed here.
    #[arg(skip)]
    pub allow_negotiate_v0: bool,
    /// How long a client may take to send a request's headers (and an idle
    /// keep-alive connection to start its next request) before it is
    /// closed: a client that trickles bytes holds no socket for long.
    #[arg(skip)]
    #[serde(rename = "header_read_timeout_ms", with = "crate::millis::positive")]
    pub header_read_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(15),
            keep_alive_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            max_message_size: 32 * 1024,
            outbound_queue: 1024,
            max_queued_bytes: 4 << 20,
            send_timeout: Duration::from_secs(10),
            disconnect_timeout: Duration::from_secs(15),
            poll_timeout: Duration::from_secs(90),
            max_messages_per_second: 0,
            allow_stateful_reconnect: true,
            stateful_reconnect_buffer_bytes: 100_000,
            max_connections: 50_000,
            max_pending_negotiations: 10_000,
            allow_negotiate_v0: false,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionSettings {
    /// The message rate limit, if any.
    pub fn rate_limit(&self) -> Option<u32> {
        Some(self.max_messages_per_second).filter(|rate| *rate > 0)
    }

    /// Largest WebSocket message (or SSE/long-polling body) accepted; above
    /// the protocol's message limit because one transport message may carry
    /// a batch of messages.
    pub fn max_transport_message(&self) -> usize {
        self.max_message_size.saturating_mul(16).max(1 << 20)
    }
}

/// Everything a connection needs from the server.
pub struct ConnectionContext {
    pub hub: HubKey,
    pub slot: Arc<HubSlot>,
    pub lifetime: Arc<HubLifetimeManager>,
    pub caller: Arc<CallerInfo>,
    pub limits: ConnectionSettings,
    /// The tenant's hub call slots ([`crate::quotas::CallSlots`]).
    pub calls: Arc<tokio::sync::Semaphore>,
    /// Where the limits this connection hits are counted.
    pub counters: crate::quotas::LimitCounters,
    pub transport: TransportKind,
    /// The server is shutting down: a connection still in its handshake ends.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Serve one connection until either side ends it. `resume`: where the
/// client's later sockets arrive, for a WebSocket negotiated with stateful
/// reconnect (used if the handshake asks for version 2).
pub async fn serve(
    mut inbound: Inbound,
    mut outlet: Outlet,
    ctx: ConnectionContext,
    resume: Option<handover::ResumeRx>,
) {
    let Some((protocol, version, leftover)) = handshake(&mut inbound, &mut outlet, &ctx).await
    else {
        outlet.finish().await;
        return;
    };
    let resume = resume.filter(|_| version >= 2 && ctx.transport == TransportKind::WebSockets);

    let _open =
        monitoring::connection_opened(ctx.hub.tenant(), ctx.hub.hub(), ctx.transport.name());
    let (outbound, receiver) = queue(&ctx);
    let invocations = Arc::new(Invocations::new(protocol));
    let subscribed = ctx
        .lifetime
        .add_connection(&ctx.hub, local(&ctx, &outbound, &invocations));
    // Messages from other nodes reach the client from here on (or, with the
    // backplane down, from when it is back).
    ctx.lifetime.settle(subscribed).await;
    // The client hears it is connected only now: a hub asked for this
    // connection's result (or sending to it) as soon as the client knows
    // its id finds it registered.
    let response = Bytes::from_static(handshake::SUCCESS_RESPONSE.as_bytes());
    if outlet.send(response).await.is_err() {
        ctx.lifetime
            .remove_connection(&ctx.hub, &ctx.caller.connection_id);
        outlet.finish().await;
        return;
    }
    let (stateful, resumable) = match resume {
        Some(sockets) => {
            let (control_tx, control) = tokio::sync::mpsc::channel(16);
            let replay = resume::Replay::new(ctx.limits.stateful_reconnect_buffer_bytes);
            (
                Some(writer::Stateful::new(replay, control)),
                Some(dispatch::Resumable::new(
                    sockets,
                    control_tx,
                    resume::Numbering::new(),
                )),
            )
        }
        None => (None, None),
    };
    let writer = tokio::spawn(writer::run(
        outlet,
        receiver,
        protocol,
        ctx.limits.clone(),
        ctx.transport.pings(),
        stateful,
    ));
    tracing::debug!(protocol = protocol.name(), transport = ?ctx.transport, stateful = resumable.is_some(), "connected");

    let mut dispatcher = dispatch::Dispatcher::new(&ctx, outbound, invocations, resumable);
    let outcome = if dispatcher.connected().await {
        dispatcher.read(&mut inbound, leftover, writer).await
    } else {
        dispatch::Outcome {
            error: None,
            writer: Some(writer),
            notify_hub: false,
        }
    };

    ctx.lifetime
        .remove_connection(&ctx.hub, &ctx.caller.connection_id);
    end(dispatcher, outcome).await;
}

/// The end of a connection that left the lifetime manager: the hub hears
/// of it (if it saw the connect), and the writer flushes what is queued
/// and finishes (dropping the last sender lets it).
async fn end(mut dispatcher: dispatch::Dispatcher<'_>, outcome: dispatch::Outcome) {
    if outcome.notify_hub {
        dispatcher.disconnected(outcome.error.clone()).await;
    }
    drop(dispatcher);
    if let Some(writer) = outcome.writer {
        let _ = writer.await;
    }
    tracing::debug!(error = ?outcome.error, "disconnected");
}

/// A connection's outbound queue, its overflows charged to its tenant.
fn queue(ctx: &ConnectionContext) -> (Outbound, OutboundReceiver) {
    let (outbound, receiver) =
        outbound::channel(ctx.limits.outbound_queue, ctx.limits.max_queued_bytes);
    (
        outbound.charge_to(ctx.counters.clone(), ctx.hub.tenant()),
        receiver,
    )
}

/// The connection as the lifetime manager knows it.
fn local(
    ctx: &ConnectionContext,
    outbound: &Outbound,
    invocations: &Arc<Invocations>,
) -> LocalConnection {
    LocalConnection {
        id: ctx.caller.connection_id.clone(),
        user_id: ctx.caller.user_id.clone(),
        outbound: outbound.clone(),
        invocations: invocations.clone(),
    }
}

/// A stateful-reconnect connection another node is handing over (a drain),
/// registered here while it is taken: from [`Adoption::register`] on, sends
/// to it queue here (the node handing it over has the earlier ones); then
/// [`Adoption::serve`] runs it on its client's new socket. Dropped unserved,
/// it leaves this node again.
pub struct Adoption {
    ctx: ConnectionContext,
    outbound: Outbound,
    receiver: OutboundReceiver,
    invocations: Arc<Invocations>,
    _registered: Registered,
}

/// Takes a connection out of the lifetime manager when dropped.
struct Registered {
    lifetime: Arc<HubLifetimeManager>,
    hub: HubKey,
    id: Arc<str>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.lifetime.remove_connection(&self.hub, &self.id);
    }
}

impl Adoption {
    /// Register the connection of `ctx` (its caller, with its items) here,
    /// in `groups`, speaking `protocol`. Await the result before asking for
    /// the rest.
    pub fn register(
        ctx: ConnectionContext,
        protocol: Protocol,
        groups: &[String],
    ) -> (Self, Subscribed) {
        let (outbound, receiver) = queue(&ctx);
        let invocations = Arc::new(Invocations::new(protocol));
        let subscribed =
            ctx.lifetime
                .add_connection_in(&ctx.hub, local(&ctx, &outbound, &invocations), groups);
        let registered = Registered {
            lifetime: ctx.lifetime.clone(),
            hub: ctx.hub.clone(),
            id: ctx.caller.connection_id.clone(),
        };
        let adoption = Self {
            ctx,
            outbound,
            receiver,
            invocations,
            _registered: registered,
        };
        (adoption, subscribed)
    }

    /// Serve the connection on `socket` until either side ends it: no
    /// handshake and no `on-connected` (the hub saw the connect where it
    /// started); the numbering and the replay go on from `snapshot`, the
    /// sends it holds are not delivered twice, and later sockets arrive
    /// through `sockets`.
    pub async fn serve(
        self,
        socket: axum::extract::ws::WebSocket,
        snapshot: handover::Snapshot,
        sockets: handover::ResumeRx,
    ) {
        let Self {
            ctx,
            outbound,
            receiver,
            invocations,
            _registered: registered,
        } = self;
        let protocol = invocations.protocol();
        let _open =
            monitoring::connection_opened(ctx.hub.tenant(), ctx.hub.hub(), ctx.transport.name());
        let (control_tx, control) = tokio::sync::mpsc::channel(16);
        let limit = ctx.limits.stateful_reconnect_buffer_bytes;
        let handover::Snapshot {
            handled,
            first,
            replay,
            queued,
        } = snapshot;
        let replay = resume::Replay::restore(limit, first, replay);
        let stateful = writer::Stateful::handed_over(replay, queued, control);
        let (sink, stream) = futures_util::StreamExt::split(socket);
        let outlet = Outlet::WebSocket {
            sink,
            binary: protocol.is_binary(),
        };
        let writer = tokio::spawn(writer::run(
            outlet,
            receiver,
            protocol,
            ctx.limits.clone(),
            true,
            Some(stateful),
        ));
        let mut numbering = resume::Numbering::restore(handled);
        numbering.resumed();
        let resumable = dispatch::Resumable::new(sockets, control_tx, numbering);
        tracing::info!(
            protocol = protocol.name(),
            "took over a connection another node handed over"
        );
        let mut dispatcher =
            dispatch::Dispatcher::new(&ctx, outbound, invocations, Some(resumable));
        let mut inbound = Inbound::WebSocket(stream);
        let outcome = dispatcher.read(&mut inbound, Vec::new(), writer).await;
        drop(registered);
        end(dispatcher, outcome).await;
    }
}

/// Read the handshake request and answer it. Returns the protocol, its
/// version and the bytes that followed the request (already hub messages),
/// or `None` when the connection must end.
async fn handshake(
    inbound: &mut Inbound,
    outlet: &mut Outlet,
    ctx: &ConnectionContext,
) -> Option<(Protocol, u64, Vec<u8>)> {
    let limits = &ctx.limits;
    let deadline = Instant::now() + limits.handshake_timeout;
    let mut buffer = Vec::new();
    let result = loop {
        let read = tokio::select! {
            read = timeout_at(deadline, inbound.read(&mut buffer)) => read,
            // Not registered yet, so no Close reaches it: it just ends.
            () = ctx.shutdown.cancelled() => return None,
        };
        match read {
            Err(_) => break Err(handshake::HandshakeError::Canceled),
            Ok(Read::End(_)) => return None,
            Ok(Read::Data) => {}
        }
        match buffer.iter().position(|&b| b == RECORD_SEPARATOR) {
            Some(end) if end <= limits.max_message_size => {
                break handshake::parse_request(&buffer[..end]).and_then(|(protocol, version)| {
                    if protocol.is_binary() && !ctx.transport.supports_binary() {
                        Err(handshake::HandshakeError::BinaryUnsupported(
                            protocol.name(),
                        ))
                    } else {
                        Ok((protocol, version, end))
                    }
                });
            }
            Some(_) => break Err(handshake::HandshakeError::Canceled),
            None if buffer.len() > limits.max_message_size => {
                break Err(handshake::HandshakeError::Canceled);
            }
            None => {}
        }
    };
    match result {
        Ok((protocol, version, end)) => {
            // The response is JSON, in the protocol's kind of frame.
            // Answered by the caller once the connection is registered.
            if let Outlet::WebSocket { binary, .. } = outlet {
                *binary = protocol.is_binary();
            }
            Some((protocol, version, buffer.split_off(end + 1)))
        }
        Err(error) => {
            tracing::info!(%error, "handshake refused");
            let _ = outlet
                .send(handshake::error_response(&error).into_bytes().into())
                .await;
            None
        }
    }
}

/// The Close a client gets when the server ends the connection over an error.
fn close_with_error(detail: impl std::fmt::Display, allow_reconnect: bool) -> CloseRequest {
    CloseRequest {
        error: Some(format!("Connection closed with an error. {detail}")),
        allow_reconnect,
        handover: false,
    }
}
