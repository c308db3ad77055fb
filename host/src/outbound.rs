//! A connection's outbound side: a bounded queue of frames and a close
//! signal; and the [`Message`] every recipient of a send shares.
//!
//! A hub's send becomes one [`Message`], shared by every local recipient and
//! encoded at most once per protocol, however many connections receive it.
//!
//! Everything a connection is sent goes through one queue, so a client sees
//! messages in the order they were queued. The queue is bounded: a client that
//! falls that far behind is closed with a reason instead of growing memory
//! without end or silently losing messages.

use crate::protocol::Protocol;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::sync::{Arc, OnceLock};
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

/// A client method call: `target(arguments...)`.
#[derive(Debug)]
pub struct Message {
    target: String,
    arguments: Box<RawValue>,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl Message {
    /// `arguments` must be a JSON array.
    pub fn new(target: String, arguments: Box<RawValue>) -> Self {
        Self {
            target,
            arguments,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn arguments(&self) -> &RawValue {
        &self.arguments
    }

    /// The framed Invocation in `protocol`, encoded on first use: once per
    /// protocol however many connections receive it.
    pub fn encoded(&self, protocol: Protocol) -> &Bytes {
        let cell = match protocol {
            Protocol::Json => &self.json,
            Protocol::MessagePack => &self.msgpack,
        };
        cell.get_or_init(|| protocol.invocation(&self.target, &self.arguments))
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

    #[test]
    fn encodes_once_per_protocol() -> anyhow::Result<()> {
        let message = Message::new("M".into(), RawValue::from_string("[1]".into())?);
        let first = message.encoded(Protocol::Json).clone();
        assert_eq!(
            &first[..],
            b"{\"type\":1,\"target\":\"M\",\"arguments\":[1]}\x1e"
        );
        assert_eq!(first.as_ptr(), message.encoded(Protocol::Json).as_ptr());
        let binary = message.encoded(Protocol::MessagePack).clone();
        assert_eq!(&binary[..], b"\x09\x96\x01\x80\xc0\xa1M\x91\x01\x90");
        assert_eq!(
            binary.as_ptr(),
            message.encoded(Protocol::MessagePack).as_ptr()
        );
        Ok(())
    }
}
