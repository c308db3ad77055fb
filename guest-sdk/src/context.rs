//! The context of one call: who is calling, and handles to send to clients,
//! manage groups, and reach state, items and presence. Every send is scoped by the host to the calling hub of
//! the calling tenant.

use crate::args::ToArgs;
use crate::bindings::hubhost::hub::types::{Caller, GroupExcluding, Target};
use crate::bindings::hubhost::hub::{clients, groups};
use crate::methods::HubError;
use crate::state::{Config, Http, Items, Presence, State, Timers};

/// The call's context.
pub struct Context {
    caller: Caller,
}

impl Context {
    #[doc(hidden)]
    pub fn new(caller: Caller) -> Self {
        Self { caller }
    }

    /// The calling connection's id.
    pub fn connection_id(&self) -> &str {
        &self.caller.connection_id
    }

    /// The authenticated user's id, if the tenant authenticates clients.
    pub fn user_id(&self) -> Option<&str> {
        self.caller.user_id.as_deref()
    }

    /// The authenticated user's claims, as (name, value) pairs.
    pub fn claims(&self) -> &[(String, String)] {
        &self.caller.claims
    }

    /// Whom to send to.
    pub fn clients(&self) -> Clients<'_> {
        Clients { ctx: self }
    }

    /// Group membership.
    pub fn groups(&self) -> Groups {
        Groups { _private: () }
    }

    /// The hub's key-value state, shared by every node.
    pub fn state(&self) -> State {
        State { _private: () }
    }

    /// Values kept with the calling connection.
    pub fn items(&self) -> Items {
        Items { _private: () }
    }

    /// Who is connected to the hub.
    pub fn presence(&self) -> Presence {
        Presence { _private: () }
    }

    /// The tenant's variables and secrets.
    pub fn config(&self) -> Config {
        Config { _private: () }
    }

    /// Calls of this hub's methods, later.
    pub fn timers(&self) -> Timers {
        Timers { _private: () }
    }

    /// Outbound HTTP, within the tenant's allow-list.
    pub fn http(&self) -> Http {
        Http { _private: () }
    }

    /// Whether a timer made this call (it has no connection). Methods only
    /// timers should run check it: clients may call any method by name.
    pub fn from_timer(&self) -> bool {
        self.caller.connection_id.is_empty()
    }
}

/// Picks the connections a message goes to, like SignalR's `Clients`.
pub struct Clients<'a> {
    ctx: &'a Context,
}

impl Clients<'_> {
    /// Every connection of this hub.
    pub fn all(&self) -> ClientProxy {
        ClientProxy(Target::All)
    }

    /// Every connection but these.
    pub fn all_except<I: IntoIterator<Item = S>, S: Into<String>>(&self, ids: I) -> ClientProxy {
        ClientProxy(Target::AllExcept(ids.into_iter().map(Into::into).collect()))
    }

    /// The calling connection.
    pub fn caller(&self) -> ClientProxy {
        ClientProxy(Target::Connection(self.ctx.connection_id().to_owned()))
    }

    /// Every connection but the caller.
    pub fn others(&self) -> ClientProxy {
        ClientProxy(Target::AllExcept(vec![self.ctx.connection_id().to_owned()]))
    }

    /// One connection.
    pub fn client(&self, id: impl Into<String>) -> ClientProxy {
        ClientProxy(Target::Connection(id.into()))
    }

    /// These connections.
    pub fn clients<I: IntoIterator<Item = S>, S: Into<String>>(&self, ids: I) -> ClientProxy {
        ClientProxy(Target::Connections(
            ids.into_iter().map(Into::into).collect(),
        ))
    }

    /// The members of a group.
    pub fn group(&self, group: impl Into<String>) -> ClientProxy {
        ClientProxy(Target::Group(group.into()))
    }

    /// The members of a group but these connections.
    pub fn group_except<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        group: impl Into<String>,
        excluded: I,
    ) -> ClientProxy {
        ClientProxy(Target::GroupExcept(GroupExcluding {
            group: group.into(),
            excluded: excluded.into_iter().map(Into::into).collect(),
        }))
    }

    /// The members of any of these groups, each connection once.
    pub fn groups<I: IntoIterator<Item = S>, S: Into<String>>(&self, groups: I) -> ClientProxy {
        ClientProxy(Target::Groups(groups.into_iter().map(Into::into).collect()))
    }

    /// The caller's group members but the caller.
    pub fn others_in_group(&self, group: impl Into<String>) -> ClientProxy {
        self.group_except(group, [self.ctx.connection_id()])
    }

    /// Every connection of one user.
    pub fn user(&self, user_id: impl Into<String>) -> ClientProxy {
        ClientProxy(Target::User(user_id.into()))
    }

    /// Call `method(args)` on connection `connection_id` and wait for what
    /// its handler returns (a client result), read into `R`: up to
    /// `timeout`, and at most until the call's deadline. Fails with the
    /// client's error, or when it goes away or does not answer in time.
    pub fn invoke<A: ToArgs, R: serde::de::DeserializeOwned>(
        &self,
        connection_id: &str,
        method: &str,
        args: A,
        timeout: Option<std::time::Duration>,
    ) -> Result<R, HubError> {
        let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let json = clients::invoke(connection_id, method, &args.to_args()?, timeout_ms)
            .map_err(HubError::Failed)?;
        serde_json::from_str(&json)
            .map_err(|e| HubError::Failed(format!("the client's result did not fit: {e}")))
    }

    /// Every connection of these users.
    pub fn users<I: IntoIterator<Item = S>, S: Into<String>>(&self, user_ids: I) -> ClientProxy {
        ClientProxy(Target::Users(
            user_ids.into_iter().map(Into::into).collect(),
        ))
    }
}

/// Some connections, ready to be sent to.
pub struct ClientProxy(Target);

impl ClientProxy {
    /// Call `method` on these clients with `args` (a tuple, `()` for none).
    /// `Ok` means the host accepted the message for delivery.
    pub fn send<A: ToArgs>(&self, method: &str, args: A) -> Result<(), HubError> {
        clients::send(&self.0, method, &args.to_args()?).map_err(HubError::Failed)
    }
}

/// Group membership of this hub's connections.
pub struct Groups {
    _private: (),
}

impl Groups {
    /// Put a connection into a group (created on first use).
    pub fn add(&self, connection_id: &str, group: &str) -> Result<(), HubError> {
        groups::add(connection_id, group).map_err(HubError::Failed)
    }

    /// Take a connection out of a group.
    pub fn remove(&self, connection_id: &str, group: &str) -> Result<(), HubError> {
        groups::remove(connection_id, group).map_err(HubError::Failed)
    }
}
