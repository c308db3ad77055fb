//! The writer task: the only place that sends on a connection's transport.

use super::ConnectionSettings;
use super::io::Outlet;
use super::resume::Replay;
use crate::outbound::{CloseRequest, Frame, OutboundReceiver};
use crate::protocol::Protocol;
use bytes::{Bytes, BytesMut};
use std::future::pending;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

/// Largest batch written as one transport message; a single larger frame is
/// still sent whole, since messages are never split.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// A stateful-reconnect connection's side of the writer (`resume.rs`): what
/// it keeps for a replay, and what the reader tells it. Boxed, and one
/// channel: every plain connection's writer carries only a pointer for it.
pub(super) struct Stateful {
    pub replay: Replay,
    pub control: mpsc::Receiver<Control>,
}

/// What the reader tells a stateful connection's writer.
pub(super) enum Control {
    /// The client acknowledged every message up to this one.
    Ack(u64),
    /// The client reconnected: send on this from now on.
    Outlet(Box<Outlet>),
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
    let mut watching_close = true;
    // False between a lost transport and the next outlet (stateful only).
    let mut connected = true;
    loop {
        let bytes = tokio::select! {
            biased;
            changed = rx.close.changed(), if watching_close => {
                if changed.is_err() {
                    // Nobody can ask for a close any more: drain and finish.
                    watching_close = false;
                    continue;
                }
                let request = rx.close.borrow_and_update().clone();
                if let Some(request) = request {
                    if connected {
                        close(&mut outlet, &request, protocol, &limits).await;
                    }
                    return;
                }
                continue;
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
                        let mut bytes = BytesMut::from(protocol.sequence(s.replay.first()).as_ref());
                        for message in s.replay.kept() {
                            bytes.extend_from_slice(message);
                        }
                        bytes.freeze()
                    }
                }
            }
            () = outlet.closed(), if connected => {
                tracing::debug!("the client's transport went away");
                return;
            }
            frame = rx.frames.recv() => match frame {
                Some(frame) => match batch(frame, &mut rx, protocol, stateful.as_mut().map(|s| &mut s.replay)) {
                    Ok(bytes) => bytes,
                    Err(full) => {
                        tracing::info!(%full, "closing connection: replay buffer full");
                        if connected {
                            let request = super::close_with_error(&full, true);
                            close(&mut outlet, &request, protocol, &limits).await;
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
                connected = false;
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

/// The bytes of `frame`, numbered and kept in `replay` when it is a message
/// stateful reconnect counts.
fn bytes_of(
    frame: Frame,
    protocol: Protocol,
    replay: &mut Option<&mut Replay>,
) -> Result<Bytes, super::resume::Full> {
    let (bytes, numbered) = match frame {
        Frame::Message(message) => (message.encoded(protocol).clone(), true),
        Frame::Own(bytes) => (bytes, true),
        Frame::Control(bytes) => (bytes, false),
    };
    if numbered && let Some(replay) = replay {
        replay.record(&bytes)?;
    }
    Ok(bytes)
}

/// `first` and whatever else is already queued, up to [`MAX_BATCH_BYTES`],
/// as one transport message of complete protocol messages.
fn batch(
    first: Frame,
    rx: &mut OutboundReceiver,
    protocol: Protocol,
    mut replay: Option<&mut Replay>,
) -> Result<Bytes, super::resume::Full> {
    let first = bytes_of(first, protocol, &mut replay)?;
    if rx.frames.is_empty() || first.len() >= MAX_BATCH_BYTES {
        return Ok(first);
    }
    let mut out = BytesMut::with_capacity(MAX_BATCH_BYTES.min(first.len() * 4));
    out.extend_from_slice(&first);
    while out.len() < MAX_BATCH_BYTES {
        let Some(frame) = rx.frames.try_recv() else {
            break;
        };
        out.extend_from_slice(&bytes_of(frame, protocol, &mut replay)?);
    }
    Ok(out.freeze())
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
