//! The imports of world 0.2.0 that complete the hub protocol: client
//! results (`clients.invoke`), streams to clients (`streams`) and from them
//! (`uploads`).
//!
//! Each waits for a client, on the call's thread (it leaves its async worker
//! first, see `workers`), at most
//! until the call's deadline: a call that waits holds one of its tenant's
//! call slots (`hub_limits.max_concurrent_calls`) and nothing of other
//! tenants'. The connection's side — what is open, the limits on it — is
//! [`crate::invocations`]; reaching a connection on another node is the
//! lifetime manager's (`lifetime/calls.rs`).

use super::CallState;
use super::host::json_array;
use super::worlds::v2::hubhost::hub::streams::StreamError as WitStreamError;
use super::worlds::v2::hubhost::hub::{streams, uploads};
use crate::invocations::{DID_NOT_READ, ResultError, StreamError};
use crate::lifetime::{CallError, ConnectionCall};
use std::time::Duration;
use tokio::time::Instant;

/// The limit on a connection's open streams and awaited results.
const OPEN_LIMIT: &str = "hub_limits.max_open_invocations_per_connection";

impl CallState {
    /// Let the call read `uploads`; their ids, in order.
    pub(super) fn give_uploads(
        &mut self,
        uploads: Vec<(String, crate::invocations::UploadRx)>,
    ) -> Vec<String> {
        let ids = uploads.iter().map(|(id, _)| id.clone()).collect();
        self.uploads = uploads.into_iter().map(|(id, rx)| (id, Some(rx))).collect();
        ids
    }

    /// When the call must be over, as a tokio instant.
    fn deadline(&self) -> Instant {
        let left = (self.call_started + self.limits.call_timeout)
            .saturating_duration_since(std::time::Instant::now());
        Instant::now() + left
    }

    /// Run `call` on `connection` of this hub, wherever it is, until `until`.
    fn call_connection(
        &mut self,
        connection: &str,
        call: ConnectionCall,
        until: Instant,
    ) -> Result<Option<String>, CallError> {
        let gone = || CallError::Result(ResultError::Refused("no call in progress".into()));
        let lifetime = self.lifetime().map_err(|_| gone())?.clone();
        let handle = tokio::runtime::Handle::try_current().map_err(|_| gone())?;
        let limit = self.limits.max_open_invocations_per_connection;
        crate::workers::wait(
            &handle,
            lifetime.call_connection(&self.hub, connection, call, until, limit),
        )
    }

    /// A stream's item or end, for `streams`' functions.
    fn stream_call(
        &mut self,
        stream: &str,
        call: impl FnOnce(String) -> ConnectionCall,
    ) -> Result<(), WitStreamError> {
        // A handle is `connection:invocation`; connection ids never hold a
        // colon, the client's invocation ids may.
        let Some((connection, invocation)) = stream.split_once(':') else {
            return Err(WitStreamError::Closed);
        };
        let until = self.deadline();
        match self.call_connection(connection, call(invocation.to_owned()), until) {
            Ok(_) => Ok(()),
            Err(CallError::Stream(StreamError::Cancelled)) => Err(WitStreamError::Cancelled),
            // Waiting for a slow client ran into the call's deadline.
            Err(CallError::Stream(StreamError::Refused(text))) if text == DID_NOT_READ => Err(
                WitStreamError::Refused(self.refuse("hub_limits.call_timeout_ms", text)),
            ),
            Err(CallError::Stream(StreamError::Refused(text))) => {
                Err(WitStreamError::Refused(text))
            }
            Err(CallError::Stream(StreamError::Closed) | CallError::Result(_)) => {
                Err(WitStreamError::Closed)
            }
        }
    }
}

/// The handle of server stream `invocation` of `connection`.
pub fn stream_handle(connection: &str, invocation: &str) -> String {
    format!("{connection}:{invocation}")
}

impl super::worlds::v2::hubhost::hub::clients::Host for CallState {
    fn send(
        &mut self,
        to: super::worlds::v1::hubhost::hub::types::Target,
        method: String,
        args_json: String,
    ) -> Result<(), String> {
        super::worlds::v1::hubhost::hub::clients::Host::send(self, to, method, args_json)
    }

    fn invoke(
        &mut self,
        connection: String,
        method: String,
        args_json: String,
        timeout_ms: Option<u64>,
    ) -> Result<String, String> {
        if *connection == *self.caller_connection() {
            // Its reader dispatches one call at a time: the answer would
            // wait behind this very call (as with ASP.NET Core's default of
            // one parallel invocation per client).
            return Err(
                "a hub method cannot wait for a result from its own caller: \
                        the caller's messages wait until the method returns"
                    .into(),
            );
        }
        self.charge_send(&method, args_json.len())?;
        let arguments = json_array(args_json)?;
        let mut until = self.deadline();
        if let Some(ms) = timeout_ms {
            until = until.min(Instant::now() + Duration::from_millis(ms));
        }
        let call = ConnectionCall::Invoke { method, arguments };
        match self.call_connection(&connection, call, until) {
            Ok(answer) => Ok(answer.unwrap_or_else(|| "null".to_owned())),
            Err(CallError::Result(ResultError::Refused(text))) => {
                Err(self.refuse(OPEN_LIMIT, text))
            }
            Err(error) => Err(error.to_string()),
        }
    }
}

impl streams::Host for CallState {
    fn send(&mut self, stream: String, item_json: String) -> Result<(), WitStreamError> {
        if item_json.len() > self.limits.max_send_bytes {
            let text = format!(
                "this item is {} bytes, over the limit of {} bytes (hub_limits.max_send_bytes)",
                item_json.len(),
                self.limits.max_send_bytes
            );
            return Err(WitStreamError::Refused(
                self.refuse("hub_limits.max_send_bytes", text),
            ));
        }
        let item = crate::protocol::json::checked_value(item_json).map_err(|e| {
            WitStreamError::Refused(format!("item-json must be one JSON value: {e}"))
        })?;
        self.stream_call(&stream, |stream| ConnectionCall::StreamItem {
            stream,
            item,
        })
    }

    fn complete(&mut self, stream: String, error: Option<String>) -> Result<(), WitStreamError> {
        if let Some(text) = &error
            && text.len() > self.limits.max_result_bytes
        {
            return Err(WitStreamError::Refused(format!(
                "the error text is over the limit of {} bytes (hub_limits.max_result_bytes)",
                self.limits.max_result_bytes
            )));
        }
        self.stream_call(&stream, |stream| ConnectionCall::StreamEnd {
            stream,
            error,
        })
    }
}

impl uploads::Host for CallState {
    fn next(&mut self, upload: String) -> Result<Option<String>, String> {
        let until = self.deadline();
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "no runtime for uploads".to_owned())?;
        let next = match self.uploads.get_mut(&upload) {
            None => return Err(format!("'{upload}' is not an upload stream of this call")),
            Some(None) => return Ok(None),
            Some(Some(rx)) => {
                crate::workers::wait(&handle, tokio::time::timeout_at(until, rx.recv()))
            }
        };
        let item = match next {
            Ok(Some(Ok(Some(item)))) => return Ok(Some(item)),
            Ok(Some(Ok(None))) => Ok(None),
            Ok(Some(Err(text))) => Err(text),
            Ok(None) => Err("the client went away before it ended the upload".to_owned()),
            Err(_) => {
                return Err(self.refuse(
                    "hub_limits.call_timeout_ms",
                    "no item of the upload came before the call's deadline".into(),
                ));
            }
        };
        // Ended: later reads see the end again.
        self.uploads.insert(upload, None);
        item
    }
}
