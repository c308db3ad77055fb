//! Negotiated connections, by connection token.
//!
//! Negotiate hands out a token; a transport then claims it. A token never
//! claimed expires after the disconnect timeout; a token in use cannot be
//! claimed again (409, or 400 by another transport); a token whose
//! connection ended is gone (404). Server-Sent Events and long-polling
//! connections keep their [`HttpSession`] here, for the requests that follow
//! the one that started them. A long-polling connection that ended stays
//! until its client's last poll, or the disconnect timeout, so that poll gets
//! a 204 (stop) rather than a 404 (error).
//!
//! A WebSocket connection negotiated with stateful reconnect keeps a way to
//! hand it a new socket ([`ResumeTx`]): the client's reconnect, with the
//! same token, claims it again ([`Claim::Resume`]) instead of getting 409.

mod http;

pub use http::{Ends, HttpSession, MAX_CONCURRENT_POSTS, Poll, PostPermit};

use crate::connection::handover::{ResumeRx, ResumeTx};
use crate::connection::io::TransportKind;
use crate::ids::{ConnectionId, ConnectionToken};
use crate::names::HubKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
enum State {
    /// Negotiated at this instant; no transport yet.
    Negotiated(Instant),
    /// A WebSocket holds it; with stateful reconnect, where a new socket
    /// for it goes.
    WebSocket(Option<ResumeTx>),
    /// Server-Sent Events or long polling.
    Http(Arc<HttpSession>),
}

#[derive(Debug)]
struct Entry {
    hub: HubKey,
    /// The user who negotiated it (the token's `sub`): every later request
    /// must be theirs, as in ASP.NET Core.
    user: Option<Arc<str>>,
    connection_id: ConnectionId,
    /// Negotiated with stateful reconnect.
    stateful: bool,
    state: State,
}

/// What claiming a token found.
#[derive(Debug)]
pub enum Claim {
    /// The token's connection id; the caller now holds the token.
    Claimed(ConnectionId),
    /// No such token for this hub.
    Unknown,
    /// A transport of this kind holds it.
    InUse(TransportKind),
    /// A stateful-reconnect WebSocket connection holds it: the new socket
    /// resumes it.
    Resume(ResumeTx),
    /// Another user negotiated it.
    Forbidden,
}

/// What a token stands for, to the requests after the first.
#[derive(Debug)]
pub enum Found {
    Unknown,
    /// Another user negotiated it.
    Forbidden,
    /// Negotiated, not started.
    Negotiated,
    WebSocket,
    Http(Arc<HttpSession>),
}

/// The node has as many negotiated connections waiting for a transport as
/// it keeps.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("The server has too many connections waiting to start; try again later.")]
pub struct TooManyPending;

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<ConnectionToken, Entry>,
    /// Entries still [`State::Negotiated`]: what negotiate alone can grow.
    pending: usize,
}

impl Table {
    /// Put `entry` under `token`, counting it if it waits for a transport.
    fn insert(&mut self, token: ConnectionToken, entry: Entry) {
        if matches!(entry.state, State::Negotiated(_)) {
            self.pending += 1;
        }
        // A token is random: never seen twice, but kept exact.
        if let Some(old) = self.entries.insert(token, entry)
            && matches!(old.state, State::Negotiated(_))
        {
            self.pending -= 1;
        }
    }

    fn remove(&mut self, token: &ConnectionToken) -> Option<Entry> {
        let entry = self.entries.remove(token)?;
        if matches!(entry.state, State::Negotiated(_)) {
            self.pending -= 1;
        }
        Some(entry)
    }
}

/// The table of tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    table: Arc<Mutex<Table>>,
    /// The most negotiated connections that may wait for a transport.
    max_pending: usize,
}

impl Tokens {
    /// A table keeping at most `max_pending` connections that were
    /// negotiated and not yet started.
    pub fn new(max_pending: usize) -> Self {
        Self {
            table: Arc::default(),
            max_pending,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Single inserts, updates and removes: a poisoned table is consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a negotiated connection, unless too many wait already.
    pub fn negotiated(
        &self,
        token: ConnectionToken,
        hub: HubKey,
        user: Option<Arc<str>>,
        connection_id: ConnectionId,
        stateful: bool,
    ) -> Result<(), TooManyPending> {
        let mut table = self.lock();
        if table.pending >= self.max_pending {
            return Err(TooManyPending);
        }
        let entry = Entry {
            hub,
            user,
            connection_id,
            stateful,
            state: State::Negotiated(Instant::now()),
        };
        table.insert(token, entry);
        Ok(())
    }

    /// Claim `token` of `hub` for a WebSocket (`session` is `None`) or for
    /// the Server-Sent Events or long-polling `session`.
    pub fn claim(
        &self,
        token: &ConnectionToken,
        hub: &HubKey,
        user: Option<&str>,
        session: Option<Arc<HttpSession>>,
    ) -> Claim {
        let mut table = self.lock();
        let Some(entry) = table.entries.get_mut(token).filter(|e| e.hub == *hub) else {
            return Claim::Unknown;
        };
        if entry.user.as_deref() != user {
            return Claim::Forbidden;
        }
        match &entry.state {
            State::Negotiated(_) => {
                entry.state = match session {
                    Some(session) => State::Http(session),
                    None => State::WebSocket(None),
                };
                let id = entry.connection_id.clone();
                table.pending -= 1;
                Claim::Claimed(id)
            }
            State::WebSocket(Some(resume)) => Claim::Resume(resume.clone()),
            State::WebSocket(None) => Claim::InUse(TransportKind::WebSockets),
            State::Http(session) => Claim::InUse(session.kind()),
        }
    }

    /// For a WebSocket connection negotiated with stateful reconnect and
    /// just claimed: where its later sockets will arrive. `None` otherwise.
    pub fn resumable(&self, token: &ConnectionToken) -> Option<ResumeRx> {
        let mut table = self.lock();
        let entry = table.entries.get_mut(token).filter(|e| e.stateful)?;
        if !matches!(entry.state, State::WebSocket(None)) {
            return None;
        }
        // One socket at a time: a second reconnect waits for the first.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        entry.state = State::WebSocket(Some(tx));
        Some(rx)
    }

    /// A stateful-reconnect WebSocket connection another node handed over
    /// (a drain) now lives here under its token: where its later sockets
    /// arrive.
    pub fn adopted(
        &self,
        token: ConnectionToken,
        hub: HubKey,
        user: Option<Arc<str>>,
        connection_id: ConnectionId,
    ) -> ResumeRx {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let entry = Entry {
            hub,
            user,
            connection_id,
            stateful: true,
            state: State::WebSocket(Some(tx)),
        };
        self.lock().insert(token, entry);
        rx
    }

    /// What `token` of `hub` stands for.
    pub fn find(&self, token: &ConnectionToken, hub: &HubKey, user: Option<&str>) -> Found {
        match self.lock().entries.get(token).filter(|e| e.hub == *hub) {
            None => Found::Unknown,
            Some(entry) if entry.user.as_deref() != user => Found::Forbidden,
            Some(entry) => match &entry.state {
                State::Negotiated(_) => Found::Negotiated,
                State::WebSocket(_) => Found::WebSocket,
                State::Http(session) => Found::Http(session.clone()),
            },
        }
    }

    /// The connection of `token` ended.
    pub fn release(&self, token: &ConnectionToken) {
        self.lock().remove(token);
    }

    /// Connections negotiated and not yet started.
    pub fn pending(&self) -> usize {
        self.lock().pending
    }

    /// Forget tokens negotiated longer than `max_age` ago and never claimed,
    /// and dispose of long-polling connections that nobody polled for as long
    /// (dropping them once ended). Returns how many entries went.
    pub fn expire(&self, max_age: Duration) -> usize {
        let mut table = self.lock();
        let before = table.entries.len();
        let mut expired_pending = 0;
        table.entries.retain(|_, entry| match &entry.state {
            State::Negotiated(at) => {
                let keep = at.elapsed() < max_age;
                expired_pending += usize::from(!keep);
                keep
            }
            State::WebSocket(_) => true,
            State::Http(session) => session.keep(max_age),
        });
        table.pending -= expired_pending;
        before - table.entries.len()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Releases a claimed token when dropped.
pub struct TokenGuard {
    pub tokens: Tokens,
    pub token: ConnectionToken,
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        self.tokens.release(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    fn tok(text: &str) -> ConnectionToken {
        ConnectionToken::from_client(text.to_owned())
    }

    #[test]
    fn claims_once_and_expires() -> anyhow::Result<()> {
        let tokens = Tokens::new(100);
        let hub = HubKey::new("t", "h")?;
        let id = NodeId::random().new_connection_id();
        tokens.negotiated(tok("tok"), hub.clone(), None, id.clone(), false)?;
        assert!(matches!(
            tokens.claim(&tok("tok"), &HubKey::new("t", "other")?, None, None),
            Claim::Unknown
        ));
        assert!(matches!(
            tokens.find(&tok("tok"), &hub, None),
            Found::Negotiated
        ));
        assert!(
            matches!(tokens.claim(&tok("tok"), &hub, None, None), Claim::Claimed(got) if got == id)
        );
        assert!(matches!(
            tokens.claim(&tok("tok"), &hub, None, None),
            Claim::InUse(TransportKind::WebSockets)
        ));
        assert!(matches!(
            tokens.find(&tok("tok"), &hub, None),
            Found::WebSocket
        ));
        assert_eq!(
            tokens.expire(Duration::ZERO),
            0,
            "claimed tokens do not expire"
        );
        tokens.release(&tok("tok"));
        assert!(matches!(
            tokens.claim(&tok("tok"), &hub, None, None),
            Claim::Unknown
        ));
        tokens.negotiated(
            tok("old"),
            hub.clone(),
            None,
            NodeId::random().new_connection_id(),
            false,
        )?;
        assert_eq!(tokens.expire(Duration::ZERO), 1);
        assert!(tokens.is_empty());
        Ok(())
    }

    #[test]
    fn a_stateful_websocket_is_resumed_not_refused() -> anyhow::Result<()> {
        let tokens = Tokens::new(100);
        let hub = HubKey::new("t", "h")?;
        let id = NodeId::random().new_connection_id();
        tokens.negotiated(tok("plain"), hub.clone(), None, id.clone(), false)?;
        tokens.negotiated(tok("sr"), hub.clone(), Some("ann".into()), id.clone(), true)?;
        assert!(matches!(
            tokens.claim(&tok("plain"), &hub, None, None),
            Claim::Claimed(_)
        ));
        assert!(
            tokens.resumable(&tok("plain")).is_none(),
            "not negotiated stateful"
        );
        assert!(matches!(
            tokens.claim(&tok("sr"), &hub, Some("ann"), None),
            Claim::Claimed(_)
        ));
        assert!(tokens.resumable(&tok("sr")).is_some());
        assert!(tokens.resumable(&tok("sr")).is_none(), "once");
        assert!(matches!(
            tokens.claim(&tok("sr"), &hub, Some("ann"), None),
            Claim::Resume(_)
        ));
        assert!(matches!(
            tokens.claim(&tok("sr"), &hub, Some("bob"), None),
            Claim::Forbidden
        ));
        Ok(())
    }

    #[test]
    fn http_sessions_stay_until_idle() -> anyhow::Result<()> {
        let tokens = Tokens::new(100);
        let hub = HubKey::new("t", "h")?;
        let id = NodeId::random().new_connection_id();
        tokens.negotiated(tok("lp"), hub.clone(), None, id.clone(), false)?;
        let (session, _ends) = HttpSession::new(TransportKind::LongPolling);
        assert!(matches!(
            tokens.claim(&tok("lp"), &hub, None, Some(session.clone())),
            Claim::Claimed(got) if got == id
        ));
        assert!(matches!(
            tokens.claim(&tok("lp"), &hub, None, None),
            Claim::InUse(TransportKind::LongPolling)
        ));
        assert!(matches!(
            tokens.find(&tok("lp"), &hub, None),
            Found::Http(_)
        ));
        assert_eq!(tokens.expire(Duration::from_secs(60)), 0);
        assert_eq!(tokens.expire(Duration::ZERO), 1, "never polled: disposed");
        assert!(session.is_disposed());
        Ok(())
    }

    #[test]
    fn negotiated_connections_waiting_are_bounded() -> anyhow::Result<()> {
        let tokens = Tokens::new(2);
        let hub = HubKey::new("t", "h")?;
        let id = || NodeId::random().new_connection_id();
        tokens.negotiated(tok("a"), hub.clone(), None, id(), false)?;
        tokens.negotiated(tok("b"), hub.clone(), None, id(), false)?;
        assert_eq!(
            tokens.negotiated(tok("c"), hub.clone(), None, id(), false),
            Err(TooManyPending)
        );
        assert!(matches!(
            tokens.claim(&tok("a"), &hub, None, None),
            Claim::Claimed(_)
        ));
        assert_eq!(tokens.pending(), 1, "a started connection waits no more");
        tokens.negotiated(tok("c"), hub.clone(), None, id(), false)?;
        tokens.release(&tok("b"));
        assert_eq!(tokens.expire(Duration::ZERO), 1, "c expired");
        assert_eq!(tokens.pending(), 0);
        assert_eq!(tokens.len(), 1, "a, started, stays");
        Ok(())
    }

    #[test]
    fn only_the_negotiating_user_may_use_a_token() -> anyhow::Result<()> {
        let tokens = Tokens::new(10);
        let hub = HubKey::new("t", "h")?;
        let id = NodeId::random().new_connection_id();
        tokens.negotiated(
            tok("ann"),
            hub.clone(),
            Some("ann".into()),
            id.clone(),
            false,
        )?;
        assert!(matches!(
            tokens.find(&tok("ann"), &hub, Some("bob")),
            Found::Forbidden
        ));
        assert!(matches!(
            tokens.find(&tok("ann"), &hub, None),
            Found::Forbidden
        ));
        assert!(matches!(
            tokens.claim(&tok("ann"), &hub, None, None),
            Claim::Forbidden
        ));
        assert!(
            matches!(tokens.claim(&tok("ann"), &hub, Some("ann"), None), Claim::Claimed(got) if got == id)
        );
        assert!(matches!(
            tokens.find(&tok("ann"), &hub, Some("bob")),
            Found::Forbidden
        ));
        Ok(())
    }
}
