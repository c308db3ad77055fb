//! Stateful reconnect (ASP.NET Core 8's, as the official clients speak it):
//! each direction numbers its messages of types 1 to 5 implicitly (1, 2, 3…
//! in send order); the receiver acknowledges what it has (`Ack`); the sender
//! keeps what is not acknowledged. When the WebSocket drops, the client
//! reconnects with the same token; each side then says where its replay
//! starts (`Sequence`) and sends again what the other may have missed, and
//! the receiver skips what it already had.
//!
//! Guarantee: between a client and this node, nothing is lost or seen twice
//! across a reconnect within `connection.disconnect_timeout`, as long as
//! what the client has not acknowledged fits in the connection's replay
//! buffer (`hub_limits.stateful_reconnect_buffer_bytes`); past it the
//! connection is closed with a reason, as a slow client is, rather than
//! losing messages silently.

use super::handover::Kept;
use crate::ids::MessageId;
use crate::protocol::Incoming;
use bytes::Bytes;
use std::collections::VecDeque;

/// What this node sent and the client has not acknowledged (the writer's),
/// each with its number and, for a hub's send, the send's id.
#[derive(Debug)]
pub(super) struct Replay {
    buffer: VecDeque<(u64, Bytes, Option<MessageId>)>,
    bytes: usize,
    limit: usize,
    /// The number of the last message sent.
    sent: u64,
}

/// The replay buffer would pass its limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "The client acknowledged too little: more than {0} bytes of messages wait for its acknowledgement (hub_limits.stateful_reconnect_buffer_bytes)."
)]
pub(super) struct Full(pub usize);

impl Replay {
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: VecDeque::new(),
            bytes: 0,
            limit,
            sent: 0,
        }
    }

    /// The replay another node kept (a drain's handover): its messages,
    /// numbered from `first`, and the number of the last one it sent.
    pub fn restore(limit: usize, first: u64, kept: Vec<Kept>) -> Self {
        let mut replay = Self::new(limit);
        replay.sent = first.saturating_sub(1);
        for Kept { bytes, id } in kept {
            replay.sent += 1;
            replay.bytes += bytes.len();
            replay.buffer.push_back((replay.sent, bytes, id));
        }
        replay
    }

    /// Number and keep one framed message that is being sent.
    pub fn record(&mut self, bytes: &Bytes, id: Option<MessageId>) -> Result<(), Full> {
        if self.bytes + bytes.len() > self.limit {
            return Err(Full(self.limit));
        }
        self.sent += 1;
        self.bytes += bytes.len();
        self.buffer.push_back((self.sent, bytes.clone(), id));
        Ok(())
    }

    /// The client has every message up to `id`.
    pub fn ack(&mut self, id: u64) {
        while let Some((first, bytes, _)) = self.buffer.front() {
            if *first > id {
                break;
            }
            self.bytes -= bytes.len();
            self.buffer.pop_front();
        }
    }

    /// Where a replay starts: the oldest message kept, or the next one.
    pub fn first(&self) -> u64 {
        self.buffer.front().map_or(self.sent + 1, |(id, ..)| *id)
    }

    /// The messages kept, in order.
    pub fn kept(&self) -> impl Iterator<Item = &Bytes> {
        self.buffer.iter().map(|(_, bytes, _)| bytes)
    }

    /// The ids of the sends kept.
    pub fn ids(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.buffer.iter().filter_map(|(_, _, id)| *id)
    }

    /// Everything kept, for another node (a drain's handover): where the
    /// numbers start, and the messages.
    pub fn hand_over(self) -> (u64, Vec<Kept>) {
        let first = self.first();
        let kept = self
            .buffer
            .into_iter()
            .map(|(_, bytes, id)| Kept { bytes, id })
            .collect();
        (first, kept)
    }
}

/// What the client sent, by number (the reader's).
#[derive(Debug)]
pub(super) struct Numbering {
    /// The number the next numbered message carries.
    next: u64,
    /// The highest number handled.
    handled: u64,
    /// The highest number acknowledged to the client.
    acked: u64,
    /// After a reconnect, everything but a Sequence is ignored.
    awaiting_sequence: bool,
}

/// What to do with one message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Handle,
    /// Already handled before a reconnect, or sent before its Sequence.
    Skip,
    /// The client claims a replay from past what it sent.
    Fatal(&'static str),
}

impl Numbering {
    pub fn new() -> Self {
        Self {
            next: 1,
            handled: 0,
            acked: 0,
            awaiting_sequence: false,
        }
    }

    /// Numbering that goes on from another node's (a drain's handover),
    /// which handled every message up to `handled`.
    pub fn restore(handled: u64) -> Self {
        Self {
            next: handled + 1,
            handled,
            acked: handled,
            awaiting_sequence: false,
        }
    }

    /// The highest number handled.
    pub fn handled(&self) -> u64 {
        self.handled
    }

    /// A new socket took over: wait for the client's Sequence.
    pub fn resumed(&mut self) {
        self.awaiting_sequence = true;
    }

    pub fn judge(&mut self, message: &Incoming) -> Verdict {
        if let Incoming::Sequence(id) = *message {
            if id > self.handled + 1 {
                return Verdict::Fatal(
                    "Sequence ID greater than amount of messages we've received.",
                );
            }
            self.next = id;
            self.awaiting_sequence = false;
            return Verdict::Skip;
        }
        if self.awaiting_sequence {
            return Verdict::Skip;
        }
        if !message.is_numbered() {
            return Verdict::Handle;
        }
        let id = self.next;
        self.next += 1;
        if id <= self.handled {
            return Verdict::Skip;
        }
        self.handled = id;
        Verdict::Handle
    }

    /// The number to acknowledge, if it moved since the last Ack.
    pub fn ack_due(&mut self) -> Option<u64> {
        (self.handled > self.acked).then(|| {
            self.acked = self.handled;
            self.handled
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation() -> Incoming {
        Incoming::Invocation {
            invocation_id: None,
            target: "t".into(),
            arguments: "[]".into(),
            stream_ids: Vec::new(),
        }
    }

    #[test]
    fn the_replay_keeps_what_is_unacknowledged_within_its_limit() {
        let mut replay = Replay::new(10);
        assert_eq!(replay.first(), 1);
        for text in ["abc", "de", "fgh"] {
            assert!(replay.record(&Bytes::from(text), None).is_ok());
        }
        assert!(
            replay.record(&Bytes::from("ijk"), None).is_err(),
            "11 bytes"
        );
        replay.ack(1);
        assert_eq!(replay.first(), 2);
        assert!(replay.record(&Bytes::from("ijk"), None).is_ok());
        assert_eq!(
            replay.kept().cloned().collect::<Vec<_>>(),
            ["de", "fgh", "ijk"]
        );
        let (first, kept) = replay.hand_over();
        let mut moved = Replay::restore(10, first, kept);
        assert_eq!(moved.first(), 2, "numbers carry over");
        assert!(moved.record(&Bytes::from("l"), None).is_ok());
        moved.ack(4);
        assert_eq!(moved.kept().cloned().collect::<Vec<_>>(), ["l"]);
        moved.ack(5);
        assert_eq!((moved.first(), moved.bytes), (6, 0));
    }

    #[test]
    fn numbering_skips_what_was_handled_and_waits_for_a_sequence() {
        let mut numbering = Numbering::new();
        for _ in 0..3 {
            assert_eq!(numbering.judge(&invocation()), Verdict::Handle);
        }
        assert_eq!(numbering.judge(&Incoming::Ping), Verdict::Handle);
        assert_eq!(numbering.ack_due(), Some(3));
        assert_eq!(numbering.ack_due(), None);
        numbering.resumed();
        assert_eq!(
            numbering.judge(&invocation()),
            Verdict::Skip,
            "before the Sequence"
        );
        // The client replays from 2: 2 and 3 were handled, 4 is new.
        assert_eq!(numbering.judge(&Incoming::Sequence(2)), Verdict::Skip);
        assert_eq!(numbering.judge(&invocation()), Verdict::Skip);
        assert_eq!(numbering.judge(&invocation()), Verdict::Skip);
        assert_eq!(numbering.judge(&invocation()), Verdict::Handle);
        assert!(matches!(
            numbering.judge(&Incoming::Sequence(9)),
            Verdict::Fatal(_)
        ));
    }
}
