//! A connection's outbound side: a bounded queue of frames and a close signal.
//!
//! Everything a connection is sent goes through one queue, so a client sees
//! messages in the order they were queued. The queue is bounded: a client that
//! falls that far behind is closed with a reason instead of growing memory
//! without end or silently losing messages.

use crate::lifetime::Message;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// One thing to write to the client.
#[derive(Debug)]
pub enum Frame {
    /// A message shared by every recipient, encoded once per protocol.
    Message(Arc<Message>),
    /// A message for this connection alone (a completion), already framed
    /// in the connection's protocol.
    Own(Bytes),
}

/// Why and how to close a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// Sent to the client in the Close message.
    pub error: Option<String>,
    /// Whether the client may reconnect.
    pub allow_reconnect: bool,
}

/// The sending half, cloned into the lifetime manager.
#[derive(Debug, Clone)]
pub struct Outbound {
    frames: mpsc::Sender<Frame>,
    close: Arc<watch::Sender<Option<CloseRequest>>>,
}

/// The receiving half, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboundReceiver {
    pub frames: mpsc::Receiver<Frame>,
    pub close: watch::Receiver<Option<CloseRequest>>,
}

/// A queue of at most `capacity` frames.
pub fn channel(capacity: usize) -> (Outbound, OutboundReceiver) {
    let (frames_tx, frames_rx) = mpsc::channel(capacity.max(1));
    let (close_tx, close_rx) = watch::channel(None);
    (
        Outbound {
            frames: frames_tx,
            close: Arc::new(close_tx),
        },
        OutboundReceiver {
            frames: frames_rx,
            close: close_rx,
        },
    )
}

impl Outbound {
    /// Queue `frame`. A full queue closes the connection (the client is too
    /// slow) and returns false; so does a connection that is already gone.
    pub fn push(&self, frame: Frame) -> bool {
        match self.frames.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseRequest {
                    error: Some(
                        "Connection closed with an error. The client did not read its messages \
                         fast enough."
                            .into(),
                    ),
                    allow_reconnect: true,
                });
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Ask the connection to close. The first request wins; later ones are
    /// ignored, so the client learns the original reason.
    pub fn close(&self, request: CloseRequest) {
        self.close.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(request);
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_closes_with_a_reason() {
        let (out, mut rx) = channel(1);
        assert!(out.push(Frame::Own(Bytes::from_static(b"a"))));
        assert!(!out.push(Frame::Own(Bytes::from_static(b"b"))));
        let request = rx.close.borrow_and_update().clone();
        assert!(request.is_some_and(|r| r.error.is_some_and(|e| e.contains("fast enough"))));
        // The first reason sticks.
        out.close(CloseRequest {
            error: None,
            allow_reconnect: false,
        });
        assert!(
            rx.close
                .borrow()
                .as_ref()
                .is_some_and(|r| r.allow_reconnect)
        );
        assert!(matches!(rx.frames.try_recv(), Ok(Frame::Own(_))));
    }
}
