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

use crate::quotas::LimitCounters;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

mod message;

pub use message::Message;

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

/// One connection's queue, shared by its senders and its writer: frames in
/// order, and the close asked for. A mutex around a `VecDeque` rather than a
/// channel: an idle connection's queue holds no allocation (a channel keeps
/// its first block of slots, 1.3 KiB per connection), and every push is one
/// short critical section.
#[derive(Debug)]
struct Queue {
    state: Mutex<State>,
    frame_ready: Notify,
    close_ready: Notify,
    /// A frame left the queue, for senders waiting for room (streams).
    room_ready: Notify,
    /// Someone once waited for room: only then do pops wake them.
    room_wanted: AtomicBool,
    /// Bytes of the frames waiting (see [`Frame::size`]).
    queued: AtomicUsize,
    capacity: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    /// [`Outbound`]s alive: with none left and no frame, the writer is done.
    senders: usize,
    /// The writer is gone: nothing more is queued.
    receiver_gone: bool,
    /// The close asked for, until the writer takes it.
    close: Option<CloseRequest>,
    /// A close was asked for: later ones are ignored.
    close_asked: bool,
}

/// A queue emptied with more room than this gives it back.
const KEEP_CAPACITY: usize = 64;

impl Queue {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is one push, pop or flag: a poisoned queue is whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half, cloned into the lifetime manager.
#[derive(Debug)]
pub struct Outbound {
    queue: Arc<Queue>,
    /// Where an overflow is counted: the connection's tenant.
    charged: Option<Arc<(LimitCounters, String)>>,
}

impl Clone for Outbound {
    fn clone(&self) -> Self {
        self.queue.state().senders += 1;
        Self {
            queue: self.queue.clone(),
            charged: self.charged.clone(),
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let last = {
            let mut state = self.queue.state();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.queue.frame_ready.notify_one();
        }
    }
}

/// The receiving half, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboundReceiver {
    queue: Arc<Queue>,
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        {
            let mut state = self.queue.state();
            state.receiver_gone = true;
            state.frames = VecDeque::new();
            self.queue.queued.store(0, Ordering::Relaxed);
        }
        // Senders waiting for room learn that none will come.
        self.queue.room_ready.notify_waiters();
    }
}

/// A queue of at most `capacity` frames and `max_bytes` bytes.
pub fn channel(capacity: usize, max_bytes: usize) -> (Outbound, OutboundReceiver) {
    let queue = Arc::new(Queue {
        state: Mutex::new(State {
            senders: 1,
            ..State::default()
        }),
        frame_ready: Notify::new(),
        close_ready: Notify::new(),
        room_ready: Notify::new(),
        room_wanted: AtomicBool::new(false),
        queued: AtomicUsize::new(0),
        capacity: capacity.max(1),
        max_bytes,
    });
    (
        Outbound {
            queue: queue.clone(),
            charged: None,
        },
        OutboundReceiver { queue },
    )
}

impl OutboundReceiver {
    /// The next frame, waiting for one; `None` once every sender is gone
    /// and no frame is left.
    pub async fn recv(&self) -> Option<Frame> {
        loop {
            // A push between the check and the wait leaves a permit: the
            // wait then ends at once.
            let ready = self.queue.frame_ready.notified();
            {
                let mut state = self.queue.state();
                if let Some(frame) = self.pop(&mut state) {
                    return Some(frame);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&self) -> Option<Frame> {
        let mut state = self.queue.state();
        self.pop(&mut state)
    }

    fn pop(&self, state: &mut State) -> Option<Frame> {
        let frame = state.frames.pop_front()?;
        self.queue.queued.fetch_sub(frame.size(), Ordering::Relaxed);
        if self.queue.room_wanted.load(Ordering::Relaxed) {
            self.queue.room_ready.notify_waiters();
        }
        if state.frames.is_empty() && state.frames.capacity() > KEEP_CAPACITY {
            // A burst is over: an idle connection holds nothing for it.
            state.frames = VecDeque::new();
        }
        Some(frame)
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.state().frames.is_empty()
    }

    /// Bytes of the frames waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queue.queued.load(Ordering::Relaxed)
    }

    /// The close asked for, once it is (and only once).
    pub async fn closing(&self) -> CloseRequest {
        loop {
            let ready = self.queue.close_ready.notified();
            if let Some(request) = self.take_close() {
                return request;
            }
            ready.await;
        }
    }

    /// The close asked for, if one is and was not taken yet.
    pub fn take_close(&self) -> Option<CloseRequest> {
        self.queue.state().close.take()
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
        let queue = &*self.queue;
        let size = frame.size();
        let before = queue.queued.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > queue.max_bytes {
            queue.queued.fetch_sub(size, Ordering::Relaxed);
            tracing::info!(
                queued = before,
                size,
                limit = queue.max_bytes,
                "client too slow: its queue is over its byte limit"
            );
            self.count("connection.max_queued_bytes");
            self.too_slow();
            return false;
        }
        let mut state = queue.state();
        if state.receiver_gone {
            drop(state);
            queue.queued.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        if state.frames.len() >= queue.capacity {
            drop(state);
            queue.queued.fetch_sub(size, Ordering::Relaxed);
            tracing::info!(
                limit = "connection.outbound_queue",
                "client too slow: its queue is full"
            );
            self.count("connection.outbound_queue");
            self.too_slow();
            return false;
        }
        state.frames.push_back(frame);
        drop(state);
        queue.frame_ready.notify_one();
        true
    }

    /// Queue `frame` past the queue's limits: for a stream's end, which
    /// must follow its items even when they fill the queue (one per stream,
    /// and a connection has few open). False if the connection is gone.
    pub fn push_past_limits(&self, frame: Frame) -> bool {
        let queue = &*self.queue;
        let mut state = queue.state();
        if state.receiver_gone {
            return false;
        }
        queue.queued.fetch_add(frame.size(), Ordering::Relaxed);
        state.frames.push_back(frame);
        drop(state);
        queue.frame_ready.notify_one();
        true
    }

    /// Queue `frame` once the queue has room for it, waiting until `until`:
    /// for a sender that would rather slow down than lose the client (a
    /// stream's items). Such frames fill at most half the queue, leaving
    /// the rest for everything else the client is sent, which would
    /// otherwise find the queue full and close the client as too slow.
    pub async fn push_when_room(
        &self,
        frame: Frame,
        until: tokio::time::Instant,
    ) -> Result<(), PushError> {
        let queue = &*self.queue;
        let size = frame.size();
        let (max_bytes, max_frames) = (queue.max_bytes / 2, (queue.capacity / 2).max(1));
        if size > max_bytes {
            return Err(PushError::TooLarge);
        }
        queue.room_wanted.store(true, Ordering::Relaxed);
        loop {
            let room = queue.room_ready.notified();
            tokio::pin!(room);
            // Registered before the check: a pop after it wakes us.
            room.as_mut().enable();
            {
                let mut state = queue.state();
                if state.receiver_gone || state.close_asked {
                    return Err(PushError::Gone);
                }
                let queued = queue.queued.load(Ordering::Relaxed);
                if queued.saturating_add(size) <= max_bytes && state.frames.len() < max_frames {
                    queue.queued.fetch_add(size, Ordering::Relaxed);
                    state.frames.push_back(frame);
                    drop(state);
                    queue.frame_ready.notify_one();
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(until, room).await.is_err() {
                return Err(PushError::TimedOut);
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
        {
            let mut state = self.queue.state();
            if state.close_asked {
                return;
            }
            state.close_asked = true;
            state.close = Some(request);
        }
        self.queue.close_ready.notify_one();
        // Senders waiting for room stop: the connection is closing.
        self.queue.room_ready.notify_waiters();
    }
}

/// Why [`Outbound::push_when_room`] did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is closing or gone.
    Gone,
    /// No room came in time.
    TimedOut,
    /// The frame is larger than the whole queue may hold.
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::{Duration, Instant};

    #[tokio::test]
    async fn a_sender_waits_for_room_then_gives_up_at_its_deadline() {
        // Waiting senders fill at most half: 5 bytes here.
        let (out, rx) = channel(100, 10);
        assert!(out.push(Frame::Own(Bytes::from_static(b"12345678"))));
        let soon = Instant::now() + Duration::from_millis(50);
        let frame = || Frame::Own(Bytes::from_static(b"abcd"));
        assert_eq!(
            out.push_when_room(frame(), soon).await,
            Err(PushError::TimedOut)
        );
        let later = Instant::now() + Duration::from_secs(5);
        let (pushed, popped) = tokio::join!(out.push_when_room(frame(), later), async {
            rx.recv().await.map(|f| f.size())
        });
        assert_eq!((pushed, popped), (Ok(()), Some(8)));
        let too_big = Frame::Own(Bytes::from_static(b"012345"));
        assert_eq!(
            out.push_when_room(too_big, later).await,
            Err(PushError::TooLarge)
        );
        // Past the limits, the end of a stream still goes in.
        assert!(out.push_past_limits(Frame::Own(Bytes::from_static(b"0123456789"))));
        drop(rx);
        assert_eq!(
            out.push_when_room(frame(), later).await,
            Err(PushError::Gone)
        );
    }

    #[test]
    fn a_queue_over_its_bytes_closes_with_a_reason() {
        let (out, rx) = channel(100, 10);
        assert!(out.push(Frame::Own(Bytes::from_static(b"123456"))));
        assert!(out.push(Frame::Own(Bytes::from_static(b"7890"))));
        assert_eq!(rx.queued_bytes(), 10);
        assert!(!out.push(Frame::Own(Bytes::from_static(b"x"))), "11 bytes");
        let request = rx.take_close();
        assert!(request.is_some_and(|r| r.error.is_some_and(|e| e.contains("fast enough"))));
        assert!(rx.try_recv().is_some());
        assert_eq!(rx.queued_bytes(), 4, "what the writer took is freed");
    }

    #[test]
    fn full_queue_closes_with_a_reason() {
        let (out, rx) = channel(1, 1 << 20);
        assert!(out.push(Frame::Own(Bytes::from_static(b"a"))));
        assert!(!out.push(Frame::Own(Bytes::from_static(b"b"))));
        // The first reason sticks.
        out.close(CloseRequest {
            error: None,
            allow_reconnect: false,
            handover: false,
        });
        let request = rx.take_close();
        assert!(request.is_some_and(
            |r| r.allow_reconnect && r.error.is_some_and(|e| e.contains("fast enough"))
        ));
        assert_eq!(rx.take_close(), None, "taken once");
        assert!(matches!(rx.try_recv(), Some(Frame::Own(_))));
    }

    #[tokio::test]
    async fn the_writer_waits_for_frames_and_ends_with_the_last_sender() {
        let (out, rx) = channel(4, 1 << 20);
        let other = out.clone();
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await.is_some();
            let end = rx.recv().await.is_none();
            (first, end)
        });
        tokio::task::yield_now().await;
        assert!(other.push(Frame::Own(Bytes::from_static(b"a"))));
        drop(other);
        drop(out);
        assert!(matches!(waiting.await, Ok((true, true))));
        let (out, rx) = channel(4, 1 << 20);
        drop(rx);
        assert!(
            !out.push(Frame::Own(Bytes::from_static(b"a"))),
            "writer gone"
        );
    }
}
