//! Streams both ways, and the client's answers to client results.
//!
//! A method the client passes upload streams to, and a stream the client
//! asks for, run in the background, as in ASP.NET Core: the reader goes on
//! reading, so the items of the uploads, the client's cancels and its other
//! calls reach the hub while the call runs. Each open stream, either way,
//! counts against `hub_limits.max_open_invocations_per_connection`, which
//! bounds the calls one connection runs at once.
//!
//! An upload's items wait in a channel of [`UPLOAD_BUFFER`] items; while it
//! is full the reader waits (ASP.NET Core's `StreamBufferCapacity`), so a
//! client cannot make the node hold more than that per upload. A call ends
//! its uploads: items for them afterwards are dropped, as are items for ids
//! never opened.

use super::Dispatcher;
use super::calls::{Owned, call_hub, finished};
use crate::invocations::{Invocations, UploadItem, UploadRx};
use crate::lifetime::HubLifetimeManager;
use crate::outbound::{Frame, Outbound};
use crate::protocol::Protocol;
use crate::runtime::{CallError, CallerInfo, HubError, HubVersion, stream_handle};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Items of one upload waiting for the hub.
const UPLOAD_BUFFER: usize = 10;

/// Where a background call's end goes.
struct Reply {
    outbound: Outbound,
    protocol: Protocol,
    invocations: Arc<Invocations>,
}

impl Dispatcher<'_> {
    fn open_limit(&self) -> usize {
        self.ctx
            .slot
            .active()
            .limits()
            .max_open_invocations_per_connection
    }

    /// Open upload streams `ids`, for a call; `Err` with the client's text
    /// if one is open already or there would be too many.
    fn open_uploads(&mut self, ids: Vec<String>) -> Result<Vec<(String, UploadRx)>, String> {
        let limit = self.open_limit();
        // Uploads whose call is over are closed.
        self.uploads.retain(|_, tx| !tx.is_closed());
        if self.uploads.len() + ids.len() + self.invocations.open_count() > limit {
            self.ctx.counters.hit(
                self.ctx.hub.tenant(),
                "hub_limits.max_open_invocations_per_connection",
            );
            return Err(format!(
                "The connection may have {limit} streams open \
                 (hub_limits.max_open_invocations_per_connection)."
            ));
        }
        if let Some(id) = ids.iter().find(|id| self.uploads.contains_key(*id)) {
            return Err(format!("Stream ID '{id}' is already in use."));
        }
        let mut opened = Vec::with_capacity(ids.len());
        for id in ids {
            let (tx, rx) = mpsc::channel(UPLOAD_BUFFER);
            self.uploads.insert(id.clone(), tx);
            opened.push((id, rx));
        }
        Ok(opened)
    }

    fn reply(&self) -> Reply {
        Reply {
            outbound: self.outbound.clone(),
            protocol: self.protocol,
            invocations: self.invocations.clone(),
        }
    }

    /// An invocation with upload streams: runs in the background.
    pub(super) fn invoke_uploading(
        &mut self,
        invocation_id: Option<String>,
        method: String,
        args: String,
        stream_ids: Vec<String>,
    ) {
        let uploads = match self.open_uploads(stream_ids) {
            Ok(uploads) => uploads,
            Err(error) => return self.complete_with_error(invocation_id.as_deref(), &error),
        };
        let reply = self.reply();
        let call = move |version: &HubVersion, lifetime: &_, caller: &_, method: &str| {
            version.invoke_with_uploads(lifetime, caller, (method, &args), uploads)
        };
        self.in_background(method, call, move |result| {
            let Some(id) = invocation_id else { return };
            let frame = match result {
                Ok(value) => reply.protocol.completion_result(&id, &value),
                Err(error) => reply.protocol.completion_error(&id, &error),
            };
            reply.outbound.push(Frame::Own(frame));
        });
    }

    /// The client asks for a stream: the hub's `open-stream` runs in the
    /// background and sends the items, then or later.
    pub(super) fn open_stream(
        &mut self,
        invocation_id: String,
        method: String,
        args: String,
        stream_ids: Vec<String>,
    ) {
        // Open uploads take places too.
        let limit = self.open_limit().saturating_sub(self.uploads.len());
        if let Err(error) = self.invocations.open_stream(&invocation_id, limit) {
            if error.contains("hub_limits.") {
                self.ctx.counters.hit(
                    self.ctx.hub.tenant(),
                    "hub_limits.max_open_invocations_per_connection",
                );
            }
            return self.complete_with_error(Some(&invocation_id), &error);
        }
        let uploads = match self.open_uploads(stream_ids) {
            Ok(uploads) => uploads,
            Err(error) => {
                let _ = self
                    .invocations
                    .end_stream(&self.outbound, &invocation_id, Some(&error));
                return;
            }
        };
        let handle = stream_handle(&self.ctx.caller.connection_id, &invocation_id);
        let reply = self.reply();
        let call = move |version: &HubVersion, lifetime: &_, caller: &_, method: &str| {
            version.open_stream(lifetime, caller, (method, &args), uploads, &handle)
        };
        self.in_background(method, call, move |result| {
            // A failed call ends its stream with the error, unless the hub
            // ended it already (then this is refused, and nothing is sent).
            if let Err(error) = result {
                let _ = reply
                    .invocations
                    .end_stream(&reply.outbound, &invocation_id, Some(&error));
            }
        });
    }

    /// Run `call` of `method` in the background (its own task),
    /// counted; `then` gets its value or the client's text for its failure.
    fn in_background<T: Send + 'static>(
        &self,
        method: String,
        call: impl FnOnce(
            &HubVersion,
            &Arc<HubLifetimeManager>,
            &CallerInfo,
            &str,
        ) -> Result<Result<T, HubError>, CallError>
        + Send
        + 'static,
        then: impl FnOnce(Result<T, String>) + Send + 'static,
    ) {
        self.ctx.slot.invoked();
        let owned = Owned::of(self.ctx);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = call_hub(owned.parts(), {
                let method = method.clone();
                move |version, lifetime, caller| call(version, lifetime, caller, &method)
            })
            .await;
            then(finished(&owned.parts(), &method, started, result));
        });
    }

    /// The next item of upload `id`, or its end: handed to the call
    /// reading it, waiting while its buffer is full. Dropped if no call
    /// reads it (never opened, or its call is over).
    pub(super) async fn upload_item(&mut self, id: &str, item: UploadItem) {
        let ended = !matches!(item, Ok(Some(_)));
        let Some(tx) = self.uploads.get(id) else {
            return tracing::trace!(id, "dropping an item of a stream that is not open");
        };
        if tx.send(item).await.is_err() || ended {
            self.uploads.remove(id);
        }
    }

    /// A Completion from the client: the end of one of its uploads, else
    /// the answer to a client result; else dropped, as ASP.NET Core does.
    pub(super) async fn completion(&mut self, id: String, result: Result<String, String>) {
        if self.uploads.contains_key(&id) {
            let end = result.map(|_| None);
            return self.upload_item(&id, end).await;
        }
        if !self.invocations.complete(&id, result) {
            tracing::trace!(id, "dropping a completion nobody waits for");
        }
    }
}
