//! The admin API's requests and answers, shared by the server's handlers
//! and the CLI's client: a renamed field breaks the build, not the output.

use crate::hubs::Source;
use crate::store::VersionInfo;
use crate::tenants::Origin;
use serde::{Deserialize, Serialize};

/// Every error: the status says what kind, `error` says what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// How a tenant's clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    Anonymous,
    Jwt,
}

/// A tenant as the API shows it (never its keys, only how many).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub tenant: String,
    pub origin: Origin,
    pub auth: AuthKind,
    pub admin_keys: usize,
    pub max_component_bytes: usize,
    pub max_connections: Option<usize>,
    pub max_messages_per_second: Option<u32>,
}

/// `GET /tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantList {
    pub tenants: Vec<TenantInfo>,
}

/// `PUT /tenants/T`: the tenant is stored (201 new, 200 replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantStored {
    pub tenant: String,
    pub origin: Origin,
}

/// `DELETE /tenants/T`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantDeleted {
    pub tenant: String,
    pub deleted_hubs: usize,
}

/// A hub: the store's view and what the answering node serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubInfo {
    pub tenant: String,
    pub hub: String,
    /// The active version in the store.
    pub active: Option<u64>,
    /// Every stored version, oldest first.
    pub versions: Vec<VersionInfo>,
    /// Activations, oldest first.
    pub history: Vec<u64>,
    /// What the answering node serves.
    pub served: Option<Source>,
    /// The world version (`0.1.0`, `0.2.0`) of what the answering node serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_world: Option<String>,
}

/// `GET /tenants/T/hubs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubList {
    pub tenant: String,
    pub hubs: Vec<HubInfo>,
}

/// `POST /tenants/T/hubs/H/versions`: the version stored (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    #[serde(flatten)]
    pub info: VersionInfo,
    pub tenant: String,
    pub hub: String,
    /// Whether it is active now.
    pub active: bool,
}

/// The body of `POST /tenants/T/hubs/H/activate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activate {
    pub version: u64,
}

/// `POST …/activate` and `POST …/rollback`: the version active now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveVersion {
    pub tenant: String,
    pub hub: String,
    pub active: u64,
}

/// One tenant variable as the API shows it: a secret without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VarInfo {
    pub name: String,
    pub secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `GET /tenants/T/vars`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VarList {
    pub tenant: String,
    pub vars: Vec<VarInfo>,
}

/// The body of `PUT /tenants/T/vars/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVar {
    pub value: String,
    /// Sealed in the store, never shown by the API.
    #[serde(default)]
    pub secret: bool,
}

/// `PUT` and `DELETE /tenants/T/vars/NAME`: which variable changed (never
/// its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VarChanged {
    pub tenant: String,
    pub name: String,
}

/// `DELETE /tenants/T/hubs/H`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubDeleted {
    pub tenant: String,
    pub hub: String,
    pub deleted: bool,
}

/// `GET /tenants/T/limits`: how often each limit stopped the tenant on the
/// answering node since it started, by the limit's setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitHits {
    pub tenant: String,
    pub hits: std::collections::BTreeMap<String, u64>,
}

/// Whom a message from a backend goes to, within one hub (the server API,
/// `/api/v1/`): `{"all": true}`, `{"allExcept": [ids]}`, `{"connection": id}`,
/// `{"connections": [ids]}`, `{"group": name}`, `{"groups": [names]}`,
/// `{"user": id}` or `{"users": [ids]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ApiTarget {
    All(bool),
    AllExcept(Vec<String>),
    Connection(String),
    Connections(Vec<String>),
    Group(String),
    Groups(Vec<String>),
    User(String),
    Users(Vec<String>),
}

/// One message from a backend: `method(arguments…)` to `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiMessage {
    pub target: ApiTarget,
    pub method: String,
    #[serde(default)]
    pub arguments: Vec<serde_json::Value>,
}

/// The body of `POST /api/v1/tenants/T/hubs/H/messages`: one message, or a
/// batch of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiMessages {
    One(ApiMessage),
    Batch(Vec<ApiMessage>),
}

/// `GET …/groups/G`, `…/users/U`, `…/connections/ID`: how many connections,
/// on every node, and up to 1,000 of their ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub count: u64,
    pub connections: Vec<String>,
}

/// `POST /drain` (202): the node drains, then exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    /// Its connections when the drain began.
    pub connections: usize,
    /// How long it keeps serving them before it moves them.
    pub window_ms: u64,
}

/// What one hub is doing (`GET /tenants/T/activity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubActivity {
    pub hub: String,
    /// Its connections on every node.
    pub connections: u64,
    /// Client invocations on the answering node since it started serving
    /// the hub: two answers a few seconds apart give a rate.
    pub invocations: u64,
}

/// What a tenant's hubs are doing, as the dashboard charts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantActivity {
    pub tenant: String,
    /// When this was read, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub hubs: Vec<HubActivity>,
}

/// One failed hub call: a trap or a limit, with its detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubFailureInfo {
    pub at_ms: u64,
    pub hub: String,
    /// The method, or `on-connected`, `on-disconnected`.
    pub call: String,
    pub error: String,
}

/// A tenant's last hub failures on the answering node, newest first
/// (`GET /tenants/T/errors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubFailures {
    pub tenant: String,
    pub errors: Vec<HubFailureInfo>,
}

/// Why a backend closes connections (the query of a server API `DELETE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseQuery {
    /// Sent to the client in its Close message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the client may reconnect (`false`: it should not).
    #[serde(default)]
    pub allow_reconnect: bool,
}

/// What a server API close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseWhat {
    Connection,
    /// Every connection of the user.
    User,
}

impl CloseWhat {
    /// Its path segment in the server API.
    pub fn segment(self) -> &'static str {
        match self {
            Self::Connection => "connections",
            Self::User => "users",
        }
    }
}

/// `202`: how many connections were asked to close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    pub closed: u64,
}

/// `202`: how many messages were accepted for delivery (all or none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub accepted: usize,
}
