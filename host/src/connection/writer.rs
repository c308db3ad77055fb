//! The writer task: the only place that sends on a connection's transport.

use super::ConnectionSettings;
use super::handover::Kept;
use super::io::Outlet;
use super::resume::{Full, Replay};
use crate::ids::MessageId;
use crate::outbound::{CloseRequest, Frame, OutboundReceiver};
use crate::protocol::Protocol;
use bytes::{Bytes, BytesMut};
use std::collections::HashSet;
use std::future::pending;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};

/// Largest batch written as one transport message; a single larger frame is
/// still sent whole, since messages are never split.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// A stateful-reconnect connection's side of the writer (`resume.rs`): what
/// it keeps for a replay, and what the reader tells it. Boxed, and one
/// channel: every plain connection's writer carries only a pointer for it.
pub(super) struct Stateful {
    replay: Replay,
    control: mpsc::Receiver<Control>,
    /// Start (or go on, after a new outlet) with a Sequence and the replay,
    /// then `preload`: what the node that handed the connection over had
    /// queued…
    resend: bool,
    preload: Vec<Kept>,
    /// …and skip the sends that node had kept or queued, should they arrive
    /// here too.
    skip: HashSet<MessageId>,
}

impl Stateful {
    pub fn new(replay: Replay, control: mpsc::Receiver<Control>) -> Box<Self> {
        Box::new(Self {
            replay,
            control,
            resend: false,
            preload: Vec::new(),
            skip: HashSet::new(),
        })
    }

    /// For a connection another node handed over with `replay` (restored)
    /// and `queued`: the first socket gets both, and the sends among them
    /// are not sent again should they arrive here too.
    pub fn handed_over(
        replay: Replay,
        queued: Vec<Kept>,
        control: mpsc::Receiver<Control>,
    ) -> Box<Self> {
        let skip = replay
            .ids()
            .chain(queued.iter().filter_map(|kept| kept.id))
            .collect();
        Box::new(Self {
            replay,
            control,
            resend: true,
            preload: queued,
            skip,
        })
    }

    /// What a new socket starts with: a Sequence, then every message the
    /// client has not acknowledged (and what is preloaded, now numbered).
    fn resend(&mut self, protocol: Protocol) -> Result<Bytes, Full> {
        for kept in std::mem::take(&mut self.preload) {
            self.replay.record(&kept.bytes, kept.id)?;
        }
        let mut bytes = BytesMut::from(protocol.sequence(self.replay.first()).as_ref());
        for message in self.replay.kept() {
            bytes.extend_from_slice(message);
        }
        Ok(bytes.freeze())
    }
}

/// What another node takes over: where the replay's numbers start, the
/// replay, and what was queued.
pub(super) type HandedOver = (u64, Vec<Kept>, Vec<Kept>);

/// What the reader tells a stateful connection's writer.
pub(super) enum Control {
    /// The client acknowledged every message up to this one.
    Ack(u64),
    /// The client reconnected: send on this from now on.
    Outlet(Box<Outlet>),
    /// Another node takes the connection over: hand it what is kept and
    /// queued, and stop.
    HandOver(oneshot::Sender<HandedOver>),
}

/// Write until the connection is over: every queued frame in order, a Ping
/// whenever the connection was idle for the keep-alive interval (if `pings`),
/// and a Close when one is requested. With `stateful`, a lost transport is
/// not the end: frames are kept until the next outlet arrives, which gets a
/// Sequence and every frame the client has not acknowledged.
pub(super) async fn run(
    mut outlet: Outlet,
    mut rx: OutboundReceiver,
    protocol: Protocol,
    limits: ConnectionSettings,
    pings: bool,
    mut stateful: Option<Box<Stateful>>,
) {
    let mut idle_deadline = Instant::now() + limits.keep_alive_interval;
    // False between a lost transport and the next outlet (stateful only).
    let mut connected = true;
    loop {
        if let Some(s) = stateful.as_mut().filter(|s| s.resend && connected) {
            s.resend = false;
            let sent = match s.resend(protocol) {
                Ok(bytes) => timeout(limits.send_timeout, outlet.send(bytes)).await,
                Err(full) => return overflowed(&full, &mut outlet, protocol, &limits).await,
            };
            if !matches!(sent, Ok(Ok(()))) {
                lost(&mut outlet, &mut connected);
            }
            idle_deadline = Instant::now() + limits.keep_alive_interval;
            continue;
        }
        let bytes = tokio::select! {
            biased;
            request = rx.closing() => {
                if request.handover && stateful.is_some() {
                    // The node is leaving: drop the socket (no Close), so
                    // the client resumes through another node, which takes
                    // the connection over from here.
                    if connected {
                        let _ = timeout(limits.send_timeout, outlet.finish()).await;
                        lost(&mut outlet, &mut connected);
                    }
                    continue;
                }
                if connected {
                    close(&mut outlet, &request, protocol, &limits).await;
                }
                return;
            }
            Some(control) = async {
                match stateful.as_mut() {
                    Some(s) => s.control.recv().await,
                    None => pending().await,
                }
            } => {
                let Some(s) = stateful.as_mut() else { continue };
                match control {
                    Control::Ack(id) => {
                        s.replay.ack(id);
                        continue;
                    }
                    Control::Outlet(next) => {
                        // The client reconnected: Sequence, then everything
                        // it may have missed, on the new socket.
                        outlet = *next;
                        connected = true;
                        s.resend = true;
                        continue;
                    }
                    Control::HandOver(reply) => {
                        let replay = std::mem::replace(&mut s.replay, Replay::new(0));
                        let (first, kept) = replay.hand_over();
                        let mut queued = Vec::new();
                        while let Some(frame) = rx.try_recv() {
                            queued.extend(kept_of(frame, protocol, &mut s.skip));
                        }
                        let _ = reply.send((first, kept, queued));
                        return;
                    }
                }
            }
            () = outlet.closed(), if connected => {
                tracing::debug!("the client's transport went away");
                return;
            }
            frame = rx.recv() => match frame {
                Some(frame) => match batch(frame, &mut rx, protocol, stateful.as_deref_mut()) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => continue,
                    Err(full) => {
                        if connected {
                            overflowed(&full, &mut outlet, protocol, &limits).await;
                        }
                        return;
                    }
                },
                None => break,
            },
            () = async {
                if pings && connected { sleep_until(idle_deadline).await } else { pending().await }
            } => protocol.ping(),
        };
        if !connected {
            // Kept in the replay; sent when the client is back.
            continue;
        }
        match timeout(limits.send_timeout, outlet.send(bytes)).await {
            Ok(Ok(())) => idle_deadline = Instant::now() + limits.keep_alive_interval,
            Ok(Err(_)) | Err(_) if stateful.is_some() => {
                tracing::debug!("transport lost; keeping messages for a reconnect");
                lost(&mut outlet, &mut connected);
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "send failed; connection lost");
                return;
            }
            Err(_) => {
                tracing::info!(timeout = ?limits.send_timeout, "send timed out; dropping connection");
                return;
            }
        }
    }
    if connected {
        let _ = timeout(limits.send_timeout, outlet.finish()).await;
    }
}

/// What the client left unacknowledged passed its limit: close with the
/// reason (and allow reconnecting, as for a client too slow).
async fn overflowed(
    full: &Full,
    outlet: &mut Outlet,
    protocol: Protocol,
    limits: &ConnectionSettings,
) {
    tracing::info!(%full, "closing connection: replay buffer full");
    let request = super::close_with_error(full, true);
    close(outlet, &request, protocol, limits).await;
}

/// A stateful connection's transport is gone: its half of the socket is
/// dropped (the reader drops the other), so the socket closes, and the
/// client, which waits for that, reconnects.
fn lost(outlet: &mut Outlet, connected: &mut bool) {
    *outlet = Outlet::gone();
    *connected = false;
}

/// The bytes of `frame`, numbered and kept in the replay when it is a
/// message stateful reconnect counts; `None` for a send the node that
/// handed the connection over delivered already.
fn bytes_of(
    frame: Frame,
    protocol: Protocol,
    stateful: &mut Option<&mut Stateful>,
) -> Result<Option<Bytes>, Full> {
    let Some(s) = stateful else {
        return Ok(Some(framed(frame, protocol).0));
    };
    let id = send_id(&frame);
    if skipped(id, &mut s.skip) {
        return Ok(None);
    }
    let (bytes, numbered) = framed(frame, protocol);
    if numbered {
        s.replay.record(&bytes, id)?;
    }
    Ok(Some(bytes))
}

/// The id of the send a frame carries, if it is one.
fn send_id(frame: &Frame) -> Option<MessageId> {
    match frame {
        Frame::Message(message) => message.id(),
        _ => None,
    }
}

/// Whether the send `id` is one to skip (and no longer, once it was).
fn skipped(id: Option<MessageId>, skip: &mut HashSet<MessageId>) -> bool {
    id.is_some_and(|id| !skip.is_empty() && skip.remove(&id))
}

/// A frame's bytes, and whether stateful reconnect numbers it.
fn framed(frame: Frame, protocol: Protocol) -> (Bytes, bool) {
    match frame {
        Frame::Message(message) => (message.encoded(protocol).clone(), true),
        Frame::Own(bytes) => (bytes, true),
        Frame::Control(bytes) => (bytes, false),
    }
}

/// A numbered frame as kept for a replay, with its send's id; `None` for a
/// control frame, or a send in `skip` (which it leaves).
fn kept_of(frame: Frame, protocol: Protocol, skip: &mut HashSet<MessageId>) -> Option<Kept> {
    let id = send_id(&frame);
    if skipped(id, skip) {
        return None;
    }
    match framed(frame, protocol) {
        (bytes, true) => Some(Kept { bytes, id }),
        (_, false) => None,
    }
}

/// `first` and whatever else is already queued, up to [`MAX_BATCH_BYTES`],
/// as one transport message of complete protocol messages; `None` when
/// nothing of it is to be sent.
fn batch(
    first: Frame,
    rx: &mut OutboundReceiver,
    protocol: Protocol,
    mut stateful: Option<&mut Stateful>,
) -> Result<Option<Bytes>, Full> {
    let first = bytes_of(first, protocol, &mut stateful)?.unwrap_or_default();
    if rx.is_empty() || first.len() >= MAX_BATCH_BYTES {
        return Ok(Some(first).filter(|b| !b.is_empty()));
    }
    let mut out = BytesMut::with_capacity(MAX_BATCH_BYTES.min(first.len().max(256) * 4));
    out.extend_from_slice(&first);
    while out.len() < MAX_BATCH_BYTES {
        let Some(frame) = rx.try_recv() else {
            break;
        };
        if let Some(bytes) = bytes_of(frame, protocol, &mut stateful)? {
            out.extend_from_slice(&bytes);
        }
    }
    Ok(Some(out.freeze()).filter(|b| !b.is_empty()))
}

async fn close(
    outlet: &mut Outlet,
    request: &CloseRequest,
    protocol: Protocol,
    limits: &ConnectionSettings,
) {
    let message = protocol.close(request.error.as_deref(), request.allow_reconnect);
    let _ = timeout(limits.send_timeout, async {
        if outlet.send(message).await.is_ok() {
            outlet.finish().await;
        }
    })
    .await;
}
