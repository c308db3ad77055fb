//! Reading hub messages and dispatching them to the hub, one at a time.
//! What only stateful-reconnect connections do (new sockets, Acks, being
//! handed to another node) is in `stateful`; streams both ways and client
//! results, whose calls run in the background, in `streams`; running a
//! hub call (call slots, counting, the client's text) in `calls`.

mod calls;
mod stateful;
mod streams;

use calls::{Parts, call_hub, finished};

pub(in crate::connection) use stateful::Resumable;
use stateful::{Event, Handled};

use super::io::{Inbound, Read};
use super::resume::Verdict;
use super::writer::Control;
use super::{ConnectionContext, close_with_error};
use crate::invocations::{Invocations, UploadTx};
use crate::lifetime::HubLifetimeManager;
use crate::outbound::{CloseRequest, Frame, Outbound};
use crate::protocol::{Incoming, Protocol, ProtocolError};
use crate::quotas::RateLimit;
use crate::runtime::{CallerInfo, HubVersion};
use std::collections::HashMap;
use std::future::pending;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

/// How the read loop ended.
pub(super) struct Outcome {
    /// Why the connection ended, for the hub's `on-disconnected`.
    pub error: Option<String>,
    /// The writer, if it is still running.
    pub writer: Option<JoinHandle<()>>,
    /// Whether the hub hears about the disconnect (it saw the connect).
    pub notify_hub: bool,
}

pub(super) struct Dispatcher<'a> {
    ctx: &'a ConnectionContext,
    outbound: Outbound,
    protocol: Protocol,
    invocations: Arc<Invocations>,
    /// The client's upload streams still open, by id.
    uploads: HashMap<String, UploadTx>,
    rate: Option<RateLimit>,
    /// With stateful reconnect.
    resumable: Option<Box<Resumable>>,
}

enum Flow {
    Continue,
    /// Stop reading; the error (if any) goes to `on-disconnected`.
    Stop(Option<String>),
}

impl<'a> Dispatcher<'a> {
    pub fn new(
        ctx: &'a ConnectionContext,
        outbound: Outbound,
        invocations: Arc<Invocations>,
        resumable: Option<Box<Resumable>>,
    ) -> Self {
        let rate = ctx.limits.rate_limit().map(RateLimit::new);
        Self {
            ctx,
            outbound,
            protocol: invocations.protocol(),
            invocations,
            uploads: HashMap::new(),
            rate,
            resumable,
        }
    }

    async fn call_hub<R: Send + 'static>(
        &self,
        call: impl FnOnce(&HubVersion, &Arc<HubLifetimeManager>, &CallerInfo) -> R + Send + 'static,
    ) -> Option<R> {
        call_hub(Parts::of(self.ctx), call).await
    }

    /// Run the hub's `on-connected`; false if it refused the client.
    pub async fn connected(&mut self) -> bool {
        let result = self
            .call_hub(|version, lifetime, caller| version.on_connected(lifetime, caller))
            .await;
        let error = match result {
            Some(Ok(Ok(()))) => return true,
            Some(Ok(Err(error))) => format!("{error:?}"),
            Some(Err(error)) => error.to_string(),
            None => "host error".to_owned(),
        };
        tracing::warn!(%error, "on-connected failed; closing the connection");
        self.outbound.close(CloseRequest {
            error: Some("Connection closed with an error.".into()),
            allow_reconnect: false,
            handover: false,
        });
        false
    }

    /// Run the hub's `on-disconnected`.
    pub async fn disconnected(&mut self, error: Option<String>) {
        let result = self
            .call_hub(move |version, lifetime, caller| {
                version.on_disconnected(lifetime, caller, error.as_deref())
            })
            .await;
        if let Some(Err(error)) = result {
            tracing::warn!(%error, "on-disconnected failed");
        }
    }

    /// Read and dispatch until the client leaves, the writer stops, or a
    /// protocol error or timeout closes the connection.
    pub async fn read(
        &mut self,
        inbound: &mut Inbound,
        mut buffer: Vec<u8>,
        mut writer: JoinHandle<()>,
    ) -> Outcome {
        let limits = &self.ctx.limits;
        // The client timeout starts with the client's first Ping: clients that
        // never ping are never timed out, as in ASP.NET Core.
        let mut pinged = false;
        let mut last_received = Instant::now();
        let mut pending_input = !buffer.is_empty();
        let outcome = |error, writer| Outcome {
            error,
            writer,
            notify_hub: true,
        };
        loop {
            if !pending_input {
                let client_deadline = async {
                    if pinged {
                        sleep_until(last_received + limits.client_timeout).await;
                    } else {
                        pending::<()>().await;
                    }
                };
                let next = tokio::select! {
                    next = inbound.read(&mut buffer) => next,
                    Some(event) = async {
                        match self.resumable.as_mut() {
                            Some(r) => r.next().await,
                            None => pending().await,
                        }
                    } => {
                        match event {
                            // The client reconnected before this socket
                            // showed it was gone, or another node takes
                            // the connection. Boxed, as the resume below:
                            // what a reconnect needs would otherwise make
                            // every connection's future bigger.
                            Event::Resume(resume) => {
                                match Box::pin(self.handle(resume, inbound, &mut buffer)).await {
                                    Handled::Resumed | Handled::Waiting => {}
                                    Handled::Over { handed_over } => {
                                        return Outcome {
                                            error: Some("Connection lost.".into()),
                                            writer: Some(writer),
                                            notify_hub: !handed_over,
                                        };
                                    }
                                }
                            }
                            Event::AckTick => self.acknowledge(),
                        }
                        continue;
                    }
                    () = client_deadline => {
                        let text = format!(
                            "The client sent nothing for {:?} (client timeout).",
                            limits.client_timeout
                        );
                        self.outbound.close(close_with_error(&text, true));
                        return outcome(Some(text), Some(writer));
                    }
                    _ = &mut writer => return outcome(Some("Connection lost.".into()), None),
                };
                if let Read::End(error) = next {
                    match Box::pin(self.resume(inbound, &mut buffer)).await {
                        Handled::Resumed | Handled::Waiting => {
                            last_received = Instant::now();
                            continue;
                        }
                        Handled::Over { handed_over } => {
                            return Outcome {
                                error,
                                writer: Some(writer),
                                notify_hub: !handed_over,
                            };
                        }
                    }
                }
            }
            pending_input = false;

            let (messages, used) = match self.protocol.split(&buffer) {
                Ok(split) => split,
                Err(error) => return outcome(self.stop(error), Some(writer)),
            };
            for message in messages {
                let flow = if message.len() > limits.max_message_size {
                    self.too_large(message.len())
                } else {
                    self.dispatch(message, &mut pinged).await
                };
                if let Flow::Stop(error) = flow {
                    return outcome(error, Some(writer));
                }
            }
            buffer.drain(..used);
            if buffer.len() > limits.max_message_size
                && let Flow::Stop(error) = self.too_large(buffer.len())
            {
                return outcome(error, Some(writer));
            }
            // Time spent dispatching does not count against the client.
            last_received = Instant::now();
        }
    }

    fn too_large(&self, size: usize) -> Flow {
        self.ctx
            .counters
            .hit(self.ctx.hub.tenant(), "connection.max_message_size");
        let error = ProtocolError::TooLarge {
            size,
            limit: self.ctx.limits.max_message_size,
        };
        self.protocol_error(error)
    }

    fn protocol_error(&self, error: ProtocolError) -> Flow {
        Flow::Stop(self.stop(error))
    }

    /// Close the connection over a protocol error; the text for the hub.
    fn stop(&self, error: ProtocolError) -> Option<String> {
        tracing::info!(%error, "closing connection: protocol error");
        self.outbound.close(close_with_error(&error, false));
        Some(error.to_string())
    }

    async fn dispatch(&mut self, message: &[u8], pinged: &mut bool) -> Flow {
        if let Some(rate) = &mut self.rate
            && !rate.allow()
        {
            let limit = self.ctx.limits.max_messages_per_second;
            let text = format!("The client sent more than {limit} messages per second.");
            tracing::info!(
                tenant = self.ctx.hub.tenant(),
                limit,
                "closing connection: message rate"
            );
            self.ctx
                .counters
                .hit(self.ctx.hub.tenant(), "max_messages_per_second");
            self.outbound.close(close_with_error(&text, false));
            return Flow::Stop(Some(text));
        }
        let message = match self.protocol.parse(message) {
            Ok(message) => message,
            Err(error) => return self.protocol_error(error),
        };
        if let Some(resumable) = self.resumable.as_mut() {
            match resumable.numbering.judge(&message) {
                Verdict::Handle => {}
                Verdict::Skip => return Flow::Continue,
                Verdict::Fatal(text) => {
                    tracing::info!(text, "closing connection: stateful reconnect");
                    self.outbound.close(close_with_error(text, false));
                    return Flow::Stop(Some(text.to_owned()));
                }
            }
        }
        match message {
            Incoming::Invocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => {
                if stream_ids.is_empty() {
                    self.invoke(invocation_id.as_deref(), target, arguments)
                        .await;
                } else {
                    self.invoke_uploading(invocation_id, target, arguments, stream_ids);
                }
            }
            Incoming::StreamInvocation {
                invocation_id,
                target,
                arguments,
                stream_ids,
            } => self.open_stream(invocation_id, target, arguments, stream_ids),
            Incoming::StreamItem {
                invocation_id,
                item,
            } => self.upload_item(&invocation_id, Ok(Some(item))).await,
            Incoming::Completion {
                invocation_id,
                result,
            } => self.completion(invocation_id, result).await,
            Incoming::CancelInvocation { invocation_id } => {
                self.invocations
                    .cancel_stream(&self.outbound, &invocation_id);
            }
            Incoming::Ping => *pinged = true,
            Incoming::Ack(id) => {
                // Acks are cumulative: one lost to a full channel is
                // covered by the next.
                if let Some(resumable) = &self.resumable {
                    let _ = resumable.writer.try_send(Control::Ack(id));
                }
            }
            // Judged above.
            Incoming::Sequence(_) => {}
            Incoming::Close { error } => return Flow::Stop(error),
            Incoming::Ignored { kind } => tracing::trace!(kind, "ignoring message"),
        }
        Flow::Continue
    }

    async fn invoke(&mut self, invocation_id: Option<&str>, method: String, args: String) {
        let started = std::time::Instant::now();
        self.ctx.slot.invoked();
        let result = self
            .call_hub({
                let method = method.clone();
                move |version, lifetime, caller| version.invoke(lifetime, caller, &method, &args)
            })
            .await;
        match finished(&Parts::of(self.ctx), &method, started, result) {
            Ok(value) => {
                if let Some(id) = invocation_id {
                    self.outbound
                        .push(Frame::Own(self.protocol.completion_result(id, &value)));
                }
            }
            Err(error) => self.complete_with_error(invocation_id, &error),
        }
    }

    fn complete_with_error(&self, invocation_id: Option<&str>, error: &str) {
        // Without an id the client wants no reply, not even an error.
        if let Some(id) = invocation_id {
            self.outbound
                .push(Frame::Own(self.protocol.completion_error(id, error)));
        }
    }
}
