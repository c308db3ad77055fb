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
use crate::quotas::LimitCounters;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// A message about the connection itself (a stateful-reconnect Ack),
    /// already framed: not numbered, never replayed.
    Control(Bytes),
}

/// Why and how to close a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    /// Sent to the client in the Close message.
    pub error: Option<String>,
    /// Whether the client may reconnect.
    pub allow_reconnect: bool,
    /// The node is leaving (a drain): a stateful-reconnect connection only
    /// drops its socket, so that its client resumes through another node,
    /// which takes the connection over; any other gets the Close.
    pub handover: bool,
}

impl Frame {
    /// The bytes this frame will take on the wire, about: what it makes
    /// the connection hold while it waits.
    pub fn size(&self) -> usize {
        match self {
            // The arguments as they are, the target, and the framing.
            Frame::Message(message) => message.arguments.get().len() + message.target.len() + 32,
            Frame::Own(bytes) | Frame::Control(bytes) => bytes.len(),
        }
    }
}

/// The sending half, cloned into the lifetime manager.
#[derive(Debug, Clone)]
pub struct Outbound {
    frames: mpsc::Sender<Frame>,
    close: Arc<watch::Sender<Option<CloseRequest>>>,
    /// Bytes of the frames waiting (see [`Frame::size`]).
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    /// Where an overflow is counted: the connection's tenant.
    charged: Option<Arc<(LimitCounters, String)>>,
}

/// The receiving half, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboundReceiver {
    pub frames: Frames,
    pub close: watch::Receiver<Option<CloseRequest>>,
}

/// The queued frames, taken in order; taking one frees its bytes.
#[derive(Debug)]
pub struct Frames {
    rx: mpsc::Receiver<Frame>,
    queued: Arc<AtomicUsize>,
}

/// A queue of at most `capacity` frames and `max_bytes` bytes.
pub fn channel(capacity: usize, max_bytes: usize) -> (Outbound, OutboundReceiver) {
    let (frames_tx, frames_rx) = mpsc::channel(capacity.max(1));
    let (close_tx, close_rx) = watch::channel(None);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbound {
            frames: frames_tx,
            close: Arc::new(close_tx),
            queued: queued.clone(),
            max_bytes,
            charged: None,
        },
        OutboundReceiver {
            frames: Frames {
                rx: frames_rx,
                queued,
            },
            close: close_rx,
        },
    )
}

impl Frames {
    /// The next frame, waiting for one; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Frame> {
        let frame = self.rx.recv().await?;
        self.queued.fetch_sub(frame.size(), Ordering::Relaxed);
        Some(frame)
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Frame> {
        let frame = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(frame.size(), Ordering::Relaxed);
        Some(frame)
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Bytes of the frames waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

impl Outbound {
    /// Count this queue's overflows in `counters`, as `tenant`'s.
    pub fn charge_to(mut self, counters: LimitCounters, tenant: &str) -> Self {
        self.charged = Some(Arc::new((counters, tenant.to_owned())));
        self
    }

    fn count(&self, limit: &'static str) {
        if let Some(charged) = &self.charged {
            charged.0.hit(&charged.1, limit);
        }
    }

    /// Queue `frame`. A full queue closes the connection (the client is too
    /// slow) and returns false; so does a connection that is already gone.
    pub fn push(&self, frame: Frame) -> bool {
        let size = frame.size();
        let before = self.queued.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.max_bytes {
            self.queued.fetch_sub(size, Ordering::Relaxed);
            tracing::info!(
                queued = before,
                size,
                limit = self.max_bytes,
                "client too slow: its queue is over its byte limit"
            );
            self.count("connection.max_queued_bytes");
            self.too_slow();
            return false;
        }
        match self.frames.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued.fetch_sub(size, Ordering::Relaxed);
                tracing::info!(
                    limit = "connection.outbound_queue",
                    "client too slow: its queue is full"
                );
                self.count("connection.outbound_queue");
                self.too_slow();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued.fetch_sub(size, Ordering::Relaxed);
                false
            }
        }
    }

    /// Close: the client does not keep up (its queue is full of frames, or
    /// of bytes).
    fn too_slow(&self) {
        self.close(CloseRequest {
            error: Some(
                "Connection closed with an error. The client did not read its messages \
                 fast enough."
                    .into(),
            ),
            allow_reconnect: true,
            handover: false,
        });
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
    /// Set when the lifetime manager sends it (or receives it from another
    /// node); `None` only for a message no node numbered.
    id: Option<crate::ids::MessageId>,
    target: String,
    arguments: Box<RawValue>,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl Message {
    /// `arguments` must be a JSON array.
    pub fn new(target: String, arguments: Box<RawValue>) -> Self {
        Self {
            id: None,
            target,
            arguments,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    /// The same message, numbered.
    pub fn with_id(mut self, id: crate::ids::MessageId) -> Self {
        self.id = Some(id);
        self
    }

    pub fn id(&self) -> Option<crate::ids::MessageId> {
        self.id
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
    fn a_queue_over_its_bytes_closes_with_a_reason() {
        let (out, mut rx) = channel(100, 10);
        assert!(out.push(Frame::Own(Bytes::from_static(b"123456"))));
        assert!(out.push(Frame::Own(Bytes::from_static(b"7890"))));
        assert_eq!(rx.frames.queued_bytes(), 10);
        assert!(!out.push(Frame::Own(Bytes::from_static(b"x"))), "11 bytes");
        let request = rx.close.borrow_and_update().clone();
        assert!(request.is_some_and(|r| r.error.is_some_and(|e| e.contains("fast enough"))));
        assert!(rx.frames.try_recv().is_some());
        assert_eq!(rx.frames.queued_bytes(), 4, "what the writer took is freed");
    }

    #[test]
    fn full_queue_closes_with_a_reason() {
        let (out, mut rx) = channel(1, 1 << 20);
        assert!(out.push(Frame::Own(Bytes::from_static(b"a"))));
        assert!(!out.push(Frame::Own(Bytes::from_static(b"b"))));
        let request = rx.close.borrow_and_update().clone();
        assert!(request.is_some_and(|r| r.error.is_some_and(|e| e.contains("fast enough"))));
        // The first reason sticks.
        out.close(CloseRequest {
            error: None,
            allow_reconnect: false,
            handover: false,
        });
        assert!(
            rx.close
                .borrow()
                .as_ref()
                .is_some_and(|r| r.allow_reconnect)
        );
        assert!(matches!(rx.frames.try_recv(), Some(Frame::Own(_))));
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
