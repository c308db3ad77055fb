//! The state a Server-Sent Events or long-polling connection keeps between
//! its HTTP requests.
//!
//! POST bodies go into the connection through a bounded channel (a POST
//! waits while the connection is behind: backpressure, never loss). For
//! long polling, what the connection writes waits in another bounded channel
//! until a poll takes it; only one poll waits at a time, and a newer poll
//! supersedes it (the older one is answered 204). Polls also tell the
//! connection is alive: no poll for the disconnect timeout disposes of it.

use crate::connection::io::{Inbound, Outlet, TransportKind};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// POST bodies that may wait for the connection to read them.
const INBOUND_CAPACITY: usize = 16;
/// Transport messages that may wait for the next poll (or event write).
const OUTBOUND_CAPACITY: usize = 64;
/// POSTs of one connection in progress at once (each may hold a body of up
/// to the transport message limit while it waits). The official clients
/// send one at a time.
pub const MAX_CONCURRENT_POSTS: usize = 4;
/// Most bytes one poll returns, unless a single message is larger.
const MAX_POLL_BYTES: usize = 64 * 1024;

/// The connection's ends, for [`crate::connection::serve`], and for Server-
/// Sent Events the receiver its event stream drains.
pub struct Ends {
    pub inbound: Inbound,
    pub outlet: Outlet,
    pub events: Option<mpsc::Receiver<Bytes>>,
}

#[derive(Debug)]
struct Activity {
    /// Polls in progress.
    polls: usize,
    /// When the last poll ended (or the session began).
    since: Instant,
}

/// One SSE or long-polling connection's shared state.
#[derive(Debug)]
pub struct HttpSession {
    kind: TransportKind,
    /// Dropped on dispose: the connection then reads its end.
    inbound: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Long polling: what the connection wrote, for the polls.
    outbound: Option<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>,
    /// The newest poll's number; older polls give way when it changes.
    newest_poll: watch::Sender<u64>,
    activity: Mutex<Activity>,
    disposed: AtomicBool,
    /// POSTs in progress (see [`MAX_CONCURRENT_POSTS`]).
    posts: Arc<tokio::sync::Semaphore>,
}

/// A POST in progress; the next may start once it is dropped.
#[derive(Debug)]
pub struct PostPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// What a poll got.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Messages (200).
    Data(Bytes),
    /// Nothing within the poll timeout (200, empty): poll again.
    Timeout,
    /// A newer poll took over (204).
    Superseded,
    /// The connection is over (204): stop polling.
    Closed,
}

impl HttpSession {
    /// A session of `kind` and the connection's ends.
    pub fn new(kind: TransportKind) -> (Arc<Self>, Ends) {
        let (in_tx, in_rx) = mpsc::channel(INBOUND_CAPACITY);
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let (outbound, events) = match kind {
            TransportKind::LongPolling => (Some(tokio::sync::Mutex::new(out_rx)), None),
            _ => (None, Some(out_rx)),
        };
        let session = Arc::new(Self {
            kind,
            inbound: Mutex::new(Some(in_tx)),
            outbound,
            newest_poll: watch::Sender::new(0),
            activity: Mutex::new(Activity {
                polls: 0,
                since: Instant::now(),
            }),
            disposed: AtomicBool::new(false),
            posts: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_POSTS)),
        });
        let ends = Ends {
            inbound: Inbound::Channel(in_rx),
            outlet: Outlet::Channel(out_tx),
            events,
        };
        (session, ends)
    }

    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start a POST, unless [`MAX_CONCURRENT_POSTS`] are in progress.
    pub fn begin_post(&self) -> Option<PostPermit> {
        let permit = self.posts.clone().try_acquire_owned().ok()?;
        Some(PostPermit { _permit: permit })
    }

    /// Pass a POST body to the connection, waiting while it is behind.
    /// False if the connection is gone.
    pub async fn send(&self, body: Bytes) -> bool {
        let sender = self
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match sender {
            Some(sender) => sender.send(body).await.is_ok(),
            None => false,
        }
    }

    /// End the connection (DELETE, or no poll for too long): it reads the
    /// end of its input, says goodbye to the hub and stops.
    pub fn dispose(&self) {
        self.disposed.store(true, Ordering::Relaxed);
        self.inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // A waiting poll is answered 204.
        self.newest_poll.send_modify(|n| *n += 1);
    }

    pub fn is_disposed(&self) -> bool {
        self.disposed.load(Ordering::Relaxed)
    }

    /// Whether the table keeps this session: false (and disposed) once a
    /// long-polling client has not polled for `max_age`.
    pub fn keep(&self, max_age: Duration) -> bool {
        if self.kind != TransportKind::LongPolling {
            return true;
        }
        let activity = self.activity();
        if activity.polls > 0 || activity.since.elapsed() < max_age {
            return true;
        }
        drop(activity);
        if !self.is_disposed() {
            tracing::info!("no poll within the disconnect timeout; closing the connection");
        }
        self.dispose();
        false
    }

    /// One long poll: wait up to `timeout` for what the connection wrote.
    pub async fn poll(&self, timeout: Duration) -> Poll {
        let Some(outbound) = &self.outbound else {
            return Poll::Closed;
        };
        let mut mine = 0;
        self.newest_poll.send_modify(|n| {
            *n += 1;
            mine = *n;
        });
        let _active = PollGuard::new(self);
        let mut newer = self.newest_poll.subscribe();
        let superseded = async move {
            let _ = newer.wait_for(|n| *n != mine).await;
        };
        tokio::pin!(superseded);
        // The previous poll lets go of the receiver once it sees this one.
        let mut rx = tokio::select! {
            rx = outbound.lock() => rx,
            () = &mut superseded => return self.given_way(),
        };
        if *self.newest_poll.borrow() != mine {
            return self.given_way();
        }
        tokio::select! {
            first = rx.recv() => match first {
                None => Poll::Closed,
                Some(first) => Poll::Data(drain(first, &mut rx)),
            },
            () = tokio::time::sleep(timeout) => Poll::Timeout,
            () = &mut superseded => self.given_way(),
        }
    }

    fn given_way(&self) -> Poll {
        if self.is_disposed() {
            Poll::Closed
        } else {
            Poll::Superseded
        }
    }
}

/// `first` and whatever else waits, up to [`MAX_POLL_BYTES`].
fn drain(first: Bytes, rx: &mut mpsc::Receiver<Bytes>) -> Bytes {
    if rx.is_empty() || first.len() >= MAX_POLL_BYTES {
        return first;
    }
    let mut out = BytesMut::from(&first[..]);
    while out.len() < MAX_POLL_BYTES {
        match rx.try_recv() {
            Ok(more) => out.extend_from_slice(&more),
            Err(_) => break,
        }
    }
    out.freeze()
}

/// Counts a poll as active while it lasts; its end restarts the idle clock.
struct PollGuard<'a>(&'a HttpSession);

impl<'a> PollGuard<'a> {
    fn new(session: &'a HttpSession) -> Self {
        session.activity().polls += 1;
        Self(session)
    }
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        let mut activity = self.0.activity();
        activity.polls = activity.polls.saturating_sub(1);
        activity.since = Instant::now();
    }
}
