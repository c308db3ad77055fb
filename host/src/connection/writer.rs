//! The writer task: the only place that sends on a connection's socket.

use super::ConnectionLimits;
use super::Sink;
use super::outbound::{CloseRequest, Frame, OutboundReceiver};
use crate::protocol::json;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, close_code};
use futures_util::SinkExt;
use tokio::time::{Instant, sleep_until, timeout};

/// Largest batch written as one WebSocket message; a single larger frame is
/// still sent whole, since messages are never split.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Write until the connection is over: every queued frame in order, a Ping
/// whenever the connection was idle for the keep-alive interval, and a Close
/// when one is requested.
pub(super) async fn run(mut sink: Sink, mut rx: OutboundReceiver, limits: ConnectionLimits) {
    let mut idle_deadline = Instant::now() + limits.keep_alive_interval;
    let mut watching_close = true;
    loop {
        let text = tokio::select! {
            biased;
            changed = rx.close.changed(), if watching_close => {
                if changed.is_err() {
                    // Nobody can ask for a close any more: drain and finish.
                    watching_close = false;
                    continue;
                }
                let request = rx.close.borrow_and_update().clone();
                if let Some(request) = request {
                    close(&mut sink, &request, &limits).await;
                    return;
                }
                continue;
            }
            frame = rx.frames.recv() => match frame {
                Some(frame) => batch(frame, &mut rx),
                None => break,
            },
            () = sleep_until(idle_deadline) => Utf8Bytes::from_static(json::PING),
        };
        match timeout(limits.send_timeout, sink.send(WsMessage::Text(text))).await {
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
    let _ = timeout(limits.send_timeout, sink.close()).await;
}

fn bytes_of(frame: Frame) -> Utf8Bytes {
    match frame {
        Frame::Message(message) => message.json().clone(),
        Frame::Own(text) => text,
    }
}

/// `first` and whatever else is already queued, up to [`MAX_BATCH_BYTES`],
/// as one WebSocket message of complete protocol messages.
fn batch(first: Frame, rx: &mut OutboundReceiver) -> Utf8Bytes {
    let first = bytes_of(first);
    if rx.frames.is_empty() || first.len() >= MAX_BATCH_BYTES {
        return first;
    }
    let mut text = String::with_capacity(MAX_BATCH_BYTES.min(first.len() * 4));
    text.push_str(first.as_str());
    while text.len() < MAX_BATCH_BYTES {
        let Ok(frame) = rx.frames.try_recv() else {
            break;
        };
        text.push_str(bytes_of(frame).as_str());
    }
    text.into()
}

async fn close(sink: &mut Sink, request: &CloseRequest, limits: &ConnectionLimits) {
    let message = json::close(request.error.as_deref(), request.allow_reconnect);
    let frame = CloseFrame {
        code: close_code::NORMAL,
        reason: Utf8Bytes::from_static(""),
    };
    let _ = timeout(limits.send_timeout, async {
        sink.send(WsMessage::Text(message.into())).await?;
        sink.send(WsMessage::Close(Some(frame))).await
    })
    .await;
}
