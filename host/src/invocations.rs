//! What a connection has open besides its queue: the streams its client
//! asked for (server streams) and the results hubs wait for from its client
//! (client results).
//!
//! Shared by the connection's reader, which hears the client's cancels and
//! completions, and the lifetime manager, through which a hub call on any
//! node reaches the connection. Nothing is allocated until the first stream
//! or result: an idle connection pays one pointer.
//!
//! Everything goes out through the connection's one queue, in order with its
//! other messages. A stream's items wait for room in the queue instead of
//! closing a slow client: a stream slows to its client's pace.

use crate::outbound::{Frame, Outbound, PushError};
use crate::protocol::Protocol;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a stream's item or end was not sent (the WIT's `stream-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StreamError {
    #[error("the client cancelled the stream")]
    Cancelled,
    #[error("no such open stream")]
    Closed,
    #[error("{0}")]
    Refused(String),
}

/// Why a client result did not come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ResultError {
    /// The client's own error text (its handler threw, or it has none).
    #[error("{0}")]
    Client(String),
    #[error("Connection disconnected.")]
    Disconnected,
    #[error("the client did not answer within {0} ms")]
    Timeout(u64),
    /// A limit refused the call; the text names it.
    #[error("{0}")]
    Refused(String),
}

/// One item of a client's upload stream (JSON), its end (`None`), or the
/// error the client ended it with.
pub type UploadItem = Result<Option<String>, String>;
/// A hub call's end of an upload stream.
pub type UploadRx = tokio::sync::mpsc::Receiver<UploadItem>;
/// The connection reader's end of an upload stream.
pub type UploadTx = tokio::sync::mpsc::Sender<UploadItem>;

/// Where a client's answer goes.
type ResultWaiter = oneshot::Sender<Result<String, ResultError>>;

/// Why a stream's item waited in vain for room in its client's queue.
pub const DID_NOT_READ: &str =
    "the client did not read the stream's items before the call's deadline";

/// How a stream still open ends when its connection leaves the node.
pub const STREAM_LEFT: &str = "The stream ended: its connection left the server it ran on.";

/// Cancelled streams remembered, so that a hub still sending to one learns
/// it was cancelled rather than that it never was.
const REMEMBER_CANCELLED: usize = 16;

/// One connection's open streams and awaited results.
#[derive(Debug)]
pub struct Invocations {
    protocol: Protocol,
    state: Mutex<Option<Box<State>>>,
}

#[derive(Debug, Default)]
struct State {
    /// Server streams open, by the client's invocation id.
    streams: HashSet<String>,
    cancelled: VecDeque<String>,
    /// Client results awaited, by the id this node gave the invocation.
    results: HashMap<String, ResultWaiter>,
    next_result: u64,
    /// The connection ended: nothing more opens.
    closed: bool,
}

impl Invocations {
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            state: Mutex::default(),
        }
    }

    /// The connection's hub protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn state(&self) -> MutexGuard<'_, Option<Box<State>>> {
        // Every change is one insert, remove or flag: a poisoned lock's
        // state is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many streams and results are open, against `limit`.
    fn open(state: &State) -> usize {
        state.streams.len() + state.results.len()
    }

    /// How many server streams and awaited results are open.
    pub fn open_count(&self) -> usize {
        self.state().as_deref().map_or(0, Self::open)
    }

    /// Open server stream `id`, unless it is open already (the client's
    /// error text then) or `limit` streams and results are.
    pub fn open_stream(&self, id: &str, limit: usize) -> Result<(), String> {
        let mut guard = self.state();
        let state = guard.get_or_insert_with(Box::default);
        if state.closed {
            return Err("Connection disconnected.".into());
        }
        if state.streams.contains(id) {
            return Err(format!("Invocation ID '{id}' is already in use."));
        }
        if Self::open(state) >= limit {
            return Err(format!(
                "The connection has {limit} streams and client results open, its limit \
                 (hub_limits.max_open_invocations_per_connection)."
            ));
        }
        state.cancelled.retain(|old| old != id);
        state.streams.insert(id.to_owned());
        Ok(())
    }

    /// Whether server stream `id` can take an item: open, or why not.
    fn stream_open(state: Option<&State>, id: &str) -> Result<(), StreamError> {
        match state {
            Some(state) if state.streams.contains(id) => Ok(()),
            Some(state) if state.closed || state.cancelled.iter().any(|c| c == id) => {
                Err(StreamError::Cancelled)
            }
            _ => Err(StreamError::Closed),
        }
    }

    /// Send `item` on stream `id`, waiting until `until` for room in the
    /// queue.
    pub async fn stream_item(
        &self,
        outbound: &Outbound,
        id: &str,
        item: &RawValue,
        until: Instant,
    ) -> Result<(), StreamError> {
        Self::stream_open(self.state().as_deref(), id)?;
        let frame = Frame::Own(self.protocol.stream_item(id, item));
        match outbound.push_when_room(frame, until).await {
            Ok(()) => Ok(()),
            Err(PushError::Gone) => Err(StreamError::Cancelled),
            Err(PushError::TimedOut) => Err(StreamError::Refused(DID_NOT_READ.into())),
            Err(PushError::TooLarge) => Err(StreamError::Refused(
                "the item is larger than the client's queue (connection.max_queued_bytes)".into(),
            )),
        }
    }

    /// End stream `id`: its Completion, with `error` if given.
    pub fn end_stream(
        &self,
        outbound: &Outbound,
        id: &str,
        error: Option<&str>,
    ) -> Result<(), StreamError> {
        {
            let mut guard = self.state();
            Self::stream_open(guard.as_deref(), id)?;
            if let Some(state) = guard.as_deref_mut() {
                state.streams.remove(id);
            }
        }
        let frame = match error {
            Some(error) => self.protocol.completion_error(id, error),
            None => self.protocol.completion_empty(id),
        };
        // The end must follow the items even when they fill the queue: a
        // plain push would close the client as too slow.
        outbound.push_past_limits(Frame::Own(frame));
        Ok(())
    }

    /// The client cancelled stream `id`: the hub's next item for it fails
    /// with [`StreamError::Cancelled`]. Its Completion is sent now, as
    /// ASP.NET Core sends one. Unknown ids are ignored.
    pub fn cancel_stream(&self, outbound: &Outbound, id: &str) {
        {
            let mut guard = self.state();
            let Some(state) = guard.as_deref_mut() else {
                return;
            };
            if !state.streams.remove(id) {
                return;
            }
            if state.cancelled.len() >= REMEMBER_CANCELLED {
                state.cancelled.pop_front();
            }
            state.cancelled.push_back(id.to_owned());
        }
        outbound.push_past_limits(Frame::Own(self.protocol.completion_empty(id)));
    }

    /// Ask the client for `method(arguments)`'s result; the answer arrives
    /// on the receiver. Fails at once if `limit` streams and results are
    /// open, or the connection is gone.
    pub fn ask(
        &self,
        outbound: &Outbound,
        method: &str,
        arguments: &RawValue,
        limit: usize,
    ) -> Result<AskedResult<'_>, ResultError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut guard = self.state();
            let state = guard.get_or_insert_with(Box::default);
            if state.closed {
                return Err(ResultError::Disconnected);
            }
            if Self::open(state) >= limit {
                return Err(ResultError::Refused(format!(
                    "the connection has {limit} streams and client results open, its limit \
                     (hub_limits.max_open_invocations_per_connection)"
                )));
            }
            state.next_result += 1;
            // `s`-prefixed, as ASP.NET Core's: never one of the client's own
            // ids, which are plain numbers.
            let id = format!("s{}", state.next_result);
            state.results.insert(id.clone(), tx);
            id
        };
        let frame = self.protocol.invocation_with_id(&id, method, arguments);
        if !outbound.push(Frame::Own(frame)) {
            self.forget(&id);
            return Err(ResultError::Disconnected);
        }
        Ok(AskedResult {
            invocations: self,
            id,
            rx,
        })
    }

    fn forget(&self, id: &str) {
        if let Some(state) = self.state().as_deref_mut() {
            state.results.remove(id);
        }
    }

    /// The client completed invocation `id`; false if no result was awaited
    /// under it (the reader then drops it).
    pub fn complete(&self, id: &str, result: Result<String, String>) -> bool {
        let waiter = self
            .state()
            .as_deref_mut()
            .and_then(|state| state.results.remove(id));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(result.map_err(ResultError::Client));
                true
            }
            None => false,
        }
    }

    /// The connection left this node: awaited results fail, open streams
    /// end with an error (queued, so that a connection a drain hands over
    /// takes them along), nothing more opens.
    pub fn close(&self, outbound: &Outbound) {
        let streams = {
            let mut guard = self.state();
            let state = guard.get_or_insert_with(Box::default);
            state.closed = true;
            for (_, waiter) in state.results.drain() {
                let _ = waiter.send(Err(ResultError::Disconnected));
            }
            std::mem::take(&mut state.streams)
        };
        for id in streams {
            let frame = self.protocol.completion_error(&id, STREAM_LEFT);
            outbound.push_past_limits(Frame::Own(frame));
        }
    }
}

/// A client result being awaited; dropped, it is forgotten.
pub struct AskedResult<'a> {
    invocations: &'a Invocations,
    id: String,
    rx: oneshot::Receiver<Result<String, ResultError>>,
}

impl AskedResult<'_> {
    /// The client's answer, or an error at `until`.
    pub async fn answer(mut self, until: Instant) -> Result<String, ResultError> {
        let waited = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout_at(until, &mut self.rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ResultError::Disconnected),
            Err(_) => Err(ResultError::Timeout(
                u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            )),
        }
    }
}

impl Drop for AskedResult<'_> {
    fn drop(&mut self) {
        self.invocations.forget(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound;
    use std::time::Duration;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.into()).unwrap_or_else(|_| unreachable!())
    }

    #[tokio::test]
    async fn a_stream_takes_items_until_cancelled_then_says_so() {
        let (outbound, receiver) = outbound::channel(16, 1 << 20);
        let calls = Invocations::new(Protocol::Json);
        let until = Instant::now() + Duration::from_secs(1);
        assert_eq!(calls.open_stream("1", 2), Ok(()));
        assert!(
            calls
                .open_stream("1", 2)
                .is_err_and(|e| e.contains("already in use"))
        );
        assert_eq!(
            calls.stream_item(&outbound, "1", &raw("7"), until).await,
            Ok(())
        );
        calls.cancel_stream(&outbound, "1");
        assert_eq!(
            calls.stream_item(&outbound, "1", &raw("8"), until).await,
            Err(StreamError::Cancelled)
        );
        assert_eq!(
            calls.stream_item(&outbound, "2", &raw("8"), until).await,
            Err(StreamError::Closed)
        );
        let mut frames = Vec::new();
        while let Some(Frame::Own(bytes)) = receiver.try_recv() {
            frames.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        assert_eq!(
            frames,
            [
                "{\"type\":2,\"invocationId\":\"1\",\"item\":7}\u{1e}",
                "{\"type\":3,\"invocationId\":\"1\"}\u{1e}"
            ]
        );
    }

    #[tokio::test]
    async fn results_are_limited_answered_and_failed_when_the_connection_goes() {
        let (outbound, receiver) = outbound::channel(16, 1 << 20);
        let calls = Invocations::new(Protocol::Json);
        let until = Instant::now() + Duration::from_secs(5);
        let asked = calls.ask(&outbound, "GetName", &raw("[]"), 1);
        let Ok(asked) = asked else {
            panic!("not asked")
        };
        assert!(matches!(
            calls.ask(&outbound, "GetName", &raw("[]"), 1),
            Err(ResultError::Refused(_))
        ));
        assert!(!calls.complete("s9", Ok("1".into())));
        assert!(calls.complete("s1", Ok("\"Ann\"".into())));
        assert_eq!(asked.answer(until).await, Ok("\"Ann\"".into()));
        let Ok(second) = calls.ask(&outbound, "GetName", &raw("[]"), 1) else {
            panic!("not asked")
        };
        assert_eq!(calls.open_stream("4", 5), Ok(()));
        calls.close(&outbound);
        assert_eq!(second.answer(until).await, Err(ResultError::Disconnected));
        assert!(calls.open_stream("3", 5).is_err());
        let mut last = None;
        while let Some(Frame::Own(bytes)) = receiver.try_recv() {
            last = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        assert!(
            last.is_some_and(|frame| frame.contains(STREAM_LEFT)),
            "the stream's end"
        );
    }
}
