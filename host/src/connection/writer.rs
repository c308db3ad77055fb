//! The writer task: the only place that sends on a connection's transport.

use super::ConnectionSettings;
use super::io::Outlet;
use crate::outbound::{CloseRequest, Frame, OutboundReceiver};
use crate::protocol::Protocol;
use bytes::{Bytes, BytesMut};
use std::future::pending;
use tokio::time::{Instant, sleep_until, timeout};

/// Largest batch written as one transport message; a single larger frame is
/// still sent whole, since messages are never split.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Write until the connection is over: every queued frame in order, a Ping
/// whenever the connection was idle for the keep-alive interval (if `pings`),
/// and a Close when one is requested.
pub(super) async fn run(
    mut outlet: Outlet,
    mut rx: OutboundReceiver,
    protocol: Protocol,
    limits: ConnectionSettings,
    pings: bool,
) {
    let mut idle_deadline = Instant::now() + limits.keep_alive_interval;
    let mut watching_close = true;
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
                    close(&mut outlet, &request, protocol, &limits).await;
                    return;
                }
                continue;
            }
            () = outlet.closed() => {
                tracing::debug!("the client's transport went away");
                return;
            }
            frame = rx.frames.recv() => match frame {
                Some(frame) => batch(frame, &mut rx, protocol),
                None => break,
            },
            () = async {
                if pings { sleep_until(idle_deadline).await } else { pending().await }
            } => protocol.ping(),
        };
        match timeout(limits.send_timeout, outlet.send(bytes)).await {
            Ok(Ok(())) => idle_deadline = Instant::now() + limits.keep_alive_interval,
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
    let _ = timeout(limits.send_timeout, outlet.finish()).await;
}

fn bytes_of(frame: Frame, protocol: Protocol) -> Bytes {
    match frame {
        Frame::Message(message) => message.encoded(protocol).clone(),
        Frame::Own(bytes) => bytes,
    }
}

/// `first` and whatever else is already queued, up to [`MAX_BATCH_BYTES`],
/// as one transport message of complete protocol messages.
fn batch(first: Frame, rx: &mut OutboundReceiver, protocol: Protocol) -> Bytes {
    let first = bytes_of(first, protocol);
    if rx.frames.is_empty() || first.len() >= MAX_BATCH_BYTES {
        return first;
    }
    let mut out = BytesMut::with_capacity(MAX_BATCH_BYTES.min(first.len() * 4));
    out.extend_from_slice(&first);
    while out.len() < MAX_BATCH_BYTES {
        let Some(frame) = rx.frames.try_recv() else {
            break;
        };
        out.extend_from_slice(&bytes_of(frame, protocol));
    }
    out.freeze()
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
