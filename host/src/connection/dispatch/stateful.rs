//! The reader's side of stateful reconnect: new sockets, Acks, and being
//! described and handed over to another node (a drain).

use super::super::handover::{Description, Resume, ResumeRx, Snapshot};
use super::super::io::{Inbound, Outlet};
use super::super::resume::Numbering;
use super::super::writer::Control;
use super::Dispatcher;
use crate::outbound::Frame;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How often a stateful-reconnect connection acknowledges what it received
/// (when something new arrived), as ASP.NET Core does.
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// A stateful-reconnect connection's side of the reader: what the client
/// sent, by number; where its new sockets arrive; the writer's controls
/// (new outlets, the client's Acks); when to acknowledge. Boxed: a plain
/// connection's future carries only a pointer for it.
pub(in crate::connection) struct Resumable {
    pub numbering: Numbering,
    pub sockets: ResumeRx,
    pub writer: mpsc::Sender<Control>,
    pub ack_tick: tokio::time::Interval,
}

/// What a stateful connection's reader waits for besides the client.
pub(super) enum Event {
    /// A new socket, or another node taking the connection over.
    Resume(Resume),
    /// Time to acknowledge what arrived.
    AckTick,
}

/// Where a stateful connection stands after something it was handed.
pub(super) enum Handled {
    /// It reads from a new socket.
    Resumed,
    /// Nothing changed (it described itself).
    Waiting,
    /// It is over: another node took it, or its writer is gone.
    Over { handed_over: bool },
}

impl Resumable {
    /// `numbering`: [`Numbering::new`], or the numbering of the node that
    /// handed the connection over.
    pub(in crate::connection) fn new(
        sockets: ResumeRx,
        writer: mpsc::Sender<Control>,
        numbering: Numbering,
    ) -> Box<Self> {
        Box::new(Self {
            numbering,
            sockets,
            writer,
            ack_tick: tokio::time::interval(ACK_INTERVAL),
        })
    }

    /// The next event, as a boxed future: its state lives on the heap, not
    /// in the connection's future.
    pub(super) fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Event>> + Send + '_>> {
        Box::pin(async {
            tokio::select! {
                resume = self.sockets.recv() => resume.map(Event::Resume),
                _ = self.ack_tick.tick() => Some(Event::AckTick),
            }
        })
    }
}

impl Dispatcher<'_> {
    /// The transport ended: with stateful reconnect, wait (up to the
    /// disconnect timeout) for the client's next socket and take it over,
    /// or for another node to take the connection.
    pub(super) async fn resume(&mut self, inbound: &mut Inbound, buffer: &mut Vec<u8>) -> Handled {
        let over = Handled::Over { handed_over: false };
        // The old socket goes (the writer drops its half too): a client
        // waits for it to close before it reconnects.
        *inbound = Inbound::gone();
        let deadline = Instant::now() + self.ctx.limits.disconnect_timeout;
        loop {
            let Some(resumable) = self.resumable.as_mut() else {
                return over;
            };
            let next = tokio::select! {
                next = tokio::time::timeout_at(deadline, resumable.sockets.recv()) => next,
                // The node is shutting down: no socket will come.
                () = self.ctx.shutdown.cancelled() => return over,
                // The writer ended (what the client left unacknowledged
                // passed its limit): nothing is left to resume.
                () = resumable.writer.closed() => return over,
            };
            let Ok(Some(resume)) = next else {
                tracing::debug!("no reconnect within the disconnect timeout");
                return over;
            };
            match Box::pin(self.handle(resume, inbound, buffer)).await {
                Handled::Waiting => continue,
                done => return done,
            }
        }
    }

    /// Act on what the connection was handed.
    pub(super) async fn handle(
        &mut self,
        resume: Resume,
        inbound: &mut Inbound,
        buffer: &mut Vec<u8>,
    ) -> Handled {
        match resume {
            Resume::Socket(socket) => {
                if self.take_over(socket, inbound, buffer).await {
                    Handled::Resumed
                } else {
                    Handled::Over { handed_over: false }
                }
            }
            Resume::Describe(reply) => {
                let _ = reply.send(self.describe());
                Handled::Waiting
            }
            Resume::HandOver(reply) => {
                let handed_over = self.hand_over(reply).await;
                Handled::Over { handed_over }
            }
        }
    }

    /// Who this connection is, for the node taking it over.
    fn describe(&self) -> Description {
        let id = &self.ctx.caller.connection_id;
        Description {
            connection_id: id.to_string(),
            protocol: self.protocol.name().to_owned(),
            groups: self.ctx.lifetime.groups_of(&self.ctx.hub, id),
            items: self.ctx.caller.items.entries(),
        }
    }

    /// Another node takes this connection: it stops receiving here, and
    /// what it kept and queued goes to `reply`. True once handed over.
    async fn hand_over(&mut self, reply: oneshot::Sender<Snapshot>) -> bool {
        let Some(resumable) = self.resumable.as_mut() else {
            return false;
        };
        // First out of every table: nothing reaches the queue after this.
        self.ctx
            .lifetime
            .hand_over(&self.ctx.hub, &self.ctx.caller.connection_id);
        let (tx, rx) = oneshot::channel();
        if resumable.writer.send(Control::HandOver(tx)).await.is_err() {
            return false;
        }
        let Ok((first, replay, queued)) = rx.await else {
            return false;
        };
        let snapshot = Snapshot {
            handled: resumable.numbering.handled(),
            first,
            replay,
            queued,
        };
        let handed_over = reply.send(snapshot).is_ok();
        tracing::info!(
            handed_over,
            "stateful connection handed over to another node"
        );
        handed_over
    }

    /// Acknowledge what arrived since the last Ack, if anything.
    pub(super) fn acknowledge(&mut self) {
        let due = self.resumable.as_mut().and_then(|r| r.numbering.ack_due());
        if let Some(id) = due {
            self.outbound.push(Frame::Control(self.protocol.ack(id)));
        }
    }

    /// Read from `socket` from now on, and have the writer send on it.
    pub(super) async fn take_over(
        &mut self,
        socket: Box<axum::extract::ws::WebSocket>,
        inbound: &mut Inbound,
        buffer: &mut Vec<u8>,
    ) -> bool {
        let Some(resumable) = self.resumable.as_mut() else {
            return false;
        };
        let (sink, stream) = (*socket).split();
        let outlet = Box::new(Outlet::WebSocket {
            sink,
            binary: self.protocol.is_binary(),
        });
        if resumable
            .writer
            .send(Control::Outlet(outlet))
            .await
            .is_err()
        {
            return false;
        }
        *inbound = Inbound::WebSocket(stream);
        // Part of a message from the old socket is no message.
        buffer.clear();
        resumable.numbering.resumed();
        tracing::debug!("stateful reconnect: resumed on a new socket");
        true
    }
}
