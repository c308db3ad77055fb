//! Streams both ways and client results.
//!
//! - [`Stream`]: a stream a client asked for (`connection.stream(...)`). Send
//!   its items, and the host ends it when the method returns, unless the
//!   method kept it open ([`Stream::keep_open`]) for later calls to send to
//!   through its handle ([`Stream::from_handle`]).
//! - [`Upload`]: a stream a client passes to a method (a `Subject` among its
//!   arguments); read its items within the call.
//! - Client results: [`crate::Clients::invoke`].

use crate::bindings::hubhost::hub::streams::{self as wit, StreamError as WitStreamError};
use crate::bindings::hubhost::hub::uploads;
use crate::methods::HubError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::Cell;
use std::fmt;

/// Why a stream's item or end was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The client cancelled the stream, or went away: stop producing.
    Cancelled,
    /// The stream has ended, or never was.
    Closed,
    /// A limit refused it; the text names the limit.
    Refused(String),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled => f.write_str("the client cancelled the stream"),
            Self::Closed => f.write_str("the stream has ended"),
            Self::Refused(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for StreamError {}

impl From<WitStreamError> for StreamError {
    fn from(error: WitStreamError) -> Self {
        match error {
            WitStreamError::Cancelled => Self::Cancelled,
            WitStreamError::Closed => Self::Closed,
            WitStreamError::Refused(text) => Self::Refused(text),
        }
    }
}

/// A stream error ends the method with it; the host sends the client
/// nothing more for a stream that was cancelled or has ended.
impl From<StreamError> for HubError {
    fn from(error: StreamError) -> Self {
        HubError::Failed(error.to_string())
    }
}

/// A stream to one client.
pub struct Stream {
    handle: String,
    kept_open: Cell<bool>,
}

impl Stream {
    pub(crate) fn new(handle: String) -> Self {
        Self {
            handle,
            kept_open: Cell::new(false),
        }
    }

    /// The stream `handle` names ([`Stream::keep_open`] gave it), in any
    /// later call of this hub, on any node.
    pub fn from_handle(handle: impl Into<String>) -> Self {
        Self {
            handle: handle.into(),
            kept_open: Cell::new(true),
        }
    }

    /// Send `item` as the next item. Waits while the client's queue is full
    /// (up to the call's deadline): the stream slows to its client's pace.
    pub fn send<T: Serialize + ?Sized>(&self, item: &T) -> Result<(), StreamError> {
        let json = serde_json::to_string(item)
            .map_err(|e| StreamError::Refused(format!("the item is not serializable: {e}")))?;
        wit::send(&self.handle, &json).map_err(Into::into)
    }

    /// End the stream; the client's stream completes.
    pub fn complete(&self) -> Result<(), StreamError> {
        wit::complete(&self.handle, None).map_err(Into::into)
    }

    /// End the stream with `error`, the client's error text.
    pub fn fail(&self, error: &str) -> Result<(), StreamError> {
        wit::complete(&self.handle, Some(error)).map_err(Into::into)
    }

    /// Leave the stream open when the method returns; its handle, for later
    /// calls to send to and end it with.
    pub fn keep_open(&self) -> String {
        self.kept_open.set(true);
        self.handle.clone()
    }

    pub(crate) fn is_kept_open(&self) -> bool {
        self.kept_open.get()
    }
}

/// A stream from the client, read within the call it was passed to.
pub struct Upload {
    id: String,
}

impl Upload {
    pub(crate) fn new(id: String) -> Self {
        Self { id }
    }

    /// The next item, waiting for it (up to the call's deadline); `None`
    /// once the client ended the stream. The client's error, a bad item or
    /// the deadline fail.
    pub fn next<T: DeserializeOwned>(&self) -> Result<Option<T>, HubError> {
        match uploads::next(&self.id).map_err(HubError::Failed)? {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| HubError::BadArguments(format!("stream item: {e}"))),
        }
    }
}
