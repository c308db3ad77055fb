//! The server API (`/api/v1/`): backends reach a hub's clients without being
//! a client, as ASP.NET Core's `IHubContext` does — send to any target, and
//! put connections into groups and take them out. Authorized like the admin
//! API's tenant routes (the tenant's keys, or an operator key); answers and
//! errors in its style.
//!
//! A message is delivered on every node exactly like a hub's send, under the
//! same limits of the tenant (`hub_limits.max_send_bytes` per message,
//! `max_names_per_send` per target, `max_sent_bytes_per_call` per request);
//! a batch is accepted whole or refused whole. Connections are closed (one,
//! or every one of a user) on whichever node holds them, with a reason.
//! Each tenant may make `hub_limits.max_api_requests_per_second` requests
//! of a node; more are answered 429 with `Retry-After`.

use crate::admin::api::{
    Accepted, ApiMessage, ApiMessages, ApiTarget, CloseQuery, CloseWhat, Closed, Presence,
};
use crate::admin::{AdminError, TenantAdmin};
use crate::lifetime::{GroupError, GroupLimits, PresenceQuery, Target};
use crate::names::{HubKey, MAX_METHOD_BYTES, MAX_NAME_BYTES};
use crate::outbound::{CloseRequest, Message};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

/// Messages one request may carry.
pub const MAX_BATCH: usize = 100;
/// Bytes of a request read at all (a larger one gets 413 before it is read).
const MAX_BODY_BYTES: usize = 16 << 20;
/// Bytes of a close reason.
pub const MAX_REASON_BYTES: usize = 1024;

type Result<T> = std::result::Result<T, AdminError>;

/// The server API routes, to nest under `/api/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/tenants/{tenant}/hubs/{hub}/messages",
            // Read up to the largest request a tenant may send by default;
            // each tenant's own limit is checked on the body.
            post(send).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .route(
            "/tenants/{tenant}/hubs/{hub}/groups/{group}/connections/{connection}",
            put(join).delete(leave),
        )
        .route("/tenants/{tenant}/hubs/{hub}/groups/{name}", get(group))
        .route(
            "/tenants/{tenant}/hubs/{hub}/users/{name}",
            get(user).delete(close_user),
        )
        .route(
            "/tenants/{tenant}/hubs/{hub}/connections/{name}",
            get(connection).delete(close_connection),
        )
}

/// The hub of a server API route, once the tenant is within its request rate.
fn hub_of<'a>(state: &AppState, admin: &'a TenantAdmin) -> Result<&'a HubKey> {
    let hub = admin.hub.as_ref().ok_or(AdminError::Internal)?;
    let rate = state
        .tenants
        .current()
        .get(hub.tenant())
        .hub_limits
        .max_api_requests_per_second;
    if !state.api_rates.allow(hub.tenant(), rate) {
        state
            .limit_counters
            .hit(hub.tenant(), "hub_limits.max_api_requests_per_second");
        return Err(AdminError::TooMany(format!(
            "Over the limit of {rate} server API requests a second (hub_limits.max_api_requests_per_second); retry after a second."
        )));
    }
    Ok(hub)
}

impl From<ApiTarget> for Target {
    fn from(target: ApiTarget) -> Self {
        match target {
            ApiTarget::All(_) => Self::All,
            ApiTarget::AllExcept(ids) => Self::AllExcept(ids),
            ApiTarget::Connection(id) => Self::Connection(id),
            ApiTarget::Connections(ids) => Self::Connections(ids),
            ApiTarget::Group(group) => Self::Group(group),
            ApiTarget::Groups(groups) => Self::Groups(groups),
            ApiTarget::User(user) => Self::User(user),
            ApiTarget::Users(users) => Self::Users(users),
        }
    }
}

/// `message` checked against the tenant's limits, ready to send.
fn checked(message: ApiMessage, state: &AppState, tenant: &str) -> Result<(Target, Message)> {
    let table = state.tenants.current();
    let limits = &table.get(tenant).hub_limits;
    if message.method.is_empty() || message.method.len() > MAX_METHOD_BYTES {
        return Err(AdminError::BadRequest(format!(
            "Method names must be 1 to {MAX_METHOD_BYTES} bytes."
        )));
    }
    let names: Vec<&String> = match &message.target {
        ApiTarget::All(true) => Vec::new(),
        ApiTarget::All(false) => {
            return Err(AdminError::BadRequest("\"all\" must be true.".into()));
        }
        ApiTarget::Connection(name) | ApiTarget::Group(name) | ApiTarget::User(name) => vec![name],
        ApiTarget::AllExcept(names)
        | ApiTarget::Connections(names)
        | ApiTarget::Groups(names)
        | ApiTarget::Users(names) => names.iter().collect(),
    };
    if names.len() > limits.max_names_per_send {
        state
            .limit_counters
            .hit(tenant, "hub_limits.max_names_per_send");
        return Err(AdminError::BadRequest(format!(
            "The target names {} connections, groups or users, over the limit of {} (hub_limits.max_names_per_send).",
            names.len(),
            limits.max_names_per_send
        )));
    }
    if names
        .iter()
        .any(|n| n.is_empty() || n.len() > MAX_NAME_BYTES)
    {
        return Err(AdminError::BadRequest(format!(
            "Group names, user ids and connection ids must be 1 to {MAX_NAME_BYTES} bytes."
        )));
    }
    let arguments = serde_json::to_string(&message.arguments)
        .map_err(|e| AdminError::BadRequest(format!("Invalid arguments: {e}")))?;
    if arguments.len() > limits.max_send_bytes {
        state
            .limit_counters
            .hit(tenant, "hub_limits.max_send_bytes");
        return Err(AdminError::TooLarge(format!(
            "A message's arguments are {} bytes, over the limit of {} bytes (hub_limits.max_send_bytes).",
            arguments.len(),
            limits.max_send_bytes
        )));
    }
    let arguments = RawValue::from_string(arguments)
        .map_err(|e| AdminError::BadRequest(format!("Invalid arguments: {e}")))?;
    Ok((
        message.target.into(),
        Message::new(message.method, arguments),
    ))
}

async fn send(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>)> {
    let hub = hub_of(&state, &admin)?.clone();
    let limit = state
        .tenants
        .current()
        .get(hub.tenant())
        .hub_limits
        .max_sent_bytes_per_call;
    if body.len() > limit {
        state
            .limit_counters
            .hit(hub.tenant(), "hub_limits.max_sent_bytes_per_call");
        return Err(AdminError::TooLarge(format!(
            "The request is {} bytes, over the limit of {limit} bytes (hub_limits.max_sent_bytes_per_call).",
            body.len()
        )));
    }
    let messages = match serde_json::from_slice::<ApiMessages>(&body) {
        Ok(ApiMessages::One(message)) => vec![message],
        Ok(ApiMessages::Batch(messages)) => messages,
        Err(e) => return Err(AdminError::BadRequest(format!("Invalid JSON body: {e}"))),
    };
    if messages.is_empty() || messages.len() > MAX_BATCH {
        return Err(AdminError::BadRequest(format!(
            "A request carries 1 to {MAX_BATCH} messages."
        )));
    }
    // Every message is checked before any is sent: all or none.
    let checked: Vec<(Target, Message)> = messages
        .into_iter()
        .map(|message| checked(message, &state, hub.tenant()))
        .collect::<Result<_>>()?;
    let accepted = checked.len();
    for (target, message) in checked {
        state.lifetime.send(&hub, target, message);
    }
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted })))
}

/// Ids a presence answer lists at most.
const MAX_LISTED: usize = 1_000;

async fn presence(
    state: &AppState,
    admin: &TenantAdmin,
    params: &HashMap<String, String>,
    query: fn(String) -> PresenceQuery,
) -> Result<Json<Presence>> {
    let hub = hub_of(state, admin)?;
    let name = params.get("name").cloned().ok_or(AdminError::Internal)?;
    let answer = state.lifetime.presence(hub, query(name), MAX_LISTED).await;
    Ok(Json(Presence {
        count: answer.count,
        connections: answer.ids,
    }))
}

async fn group(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Presence>> {
    presence(&state, &admin, &params, PresenceQuery::Group).await
}

async fn user(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Presence>> {
    presence(&state, &admin, &params, PresenceQuery::User).await
}

async fn connection(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<Presence>> {
    presence(&state, &admin, &params, PresenceQuery::Connection).await
}

/// `{group}` and `{connection}` of a group route.
fn group_and_connection(params: &HashMap<String, String>) -> Result<(String, String)> {
    match (params.get("group"), params.get("connection")) {
        (Some(group), Some(connection)) => Ok((group.clone(), connection.clone())),
        _ => Err(AdminError::Internal),
    }
}

fn group_error(error: GroupError) -> AdminError {
    match error {
        GroupError::UnknownConnection(id) => {
            AdminError::NotFound(format!("No connection '{id}' on this hub."))
        }
        GroupError::Timeout(_) => AdminError::Unavailable,
        GroupError::BadName => {
            AdminError::BadRequest(format!("Group names must be 1 to {MAX_NAME_BYTES} bytes."))
        }
        // The limits' texts, as a hub gets them, made a sentence.
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            let first = chars.next().map(|c| c.to_uppercase().collect::<String>());
            AdminError::Conflict(format!("{}{}.", first.unwrap_or_default(), chars.as_str()))
        }
    }
}

async fn join(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode> {
    let hub = hub_of(&state, &admin)?;
    let (group, connection) = group_and_connection(&params)?;
    let table = state.tenants.current();
    let limits = &table.get(hub.tenant()).hub_limits;
    let limits = GroupLimits {
        per_connection: limits.max_groups_per_connection,
        per_hub: limits.max_groups_per_hub,
    };
    state
        .lifetime
        .add_to_group(hub, &connection, &group, limits)
        .await
        .map_err(group_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn leave(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode> {
    let hub = hub_of(&state, &admin)?;
    let (group, connection) = group_and_connection(&params)?;
    state
        .lifetime
        .remove_from_group(hub, &connection, &group)
        .await
        .map_err(group_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Close the connection, or the user's connections, `{name}` names: 404
/// if there is none.
async fn close(
    state: &AppState,
    admin: &TenantAdmin,
    params: &HashMap<String, String>,
    close: CloseQuery,
    what: CloseWhat,
) -> Result<(StatusCode, Json<Closed>)> {
    let hub = hub_of(state, admin)?;
    let name = params.get("name").cloned().ok_or(AdminError::Internal)?;
    let (query, target, what) = match what {
        CloseWhat::Connection => (
            PresenceQuery::Connection(name.clone()),
            Target::Connection(name.clone()),
            "connection",
        ),
        CloseWhat::User => (
            PresenceQuery::User(name.clone()),
            Target::User(name.clone()),
            "user",
        ),
    };
    if close
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REASON_BYTES)
    {
        return Err(AdminError::BadRequest(format!(
            "A close reason is at most {MAX_REASON_BYTES} bytes."
        )));
    }
    // Asked first, so that a backend learns of a wrong id; a connection
    // that leaves in between is simply not there to close.
    let found = state.lifetime.presence(hub, query, 0).await;
    if found.count == 0 {
        return Err(AdminError::NotFound(format!(
            "No {what} '{name}' connected to this hub."
        )));
    }
    let request = CloseRequest {
        error: close.reason,
        allow_reconnect: close.allow_reconnect,
        handover: false,
    };
    state.lifetime.close(hub, target, request);
    Ok((
        StatusCode::ACCEPTED,
        Json(Closed {
            closed: found.count,
        }),
    ))
}

async fn close_connection(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<CloseQuery>,
) -> Result<(StatusCode, Json<Closed>)> {
    close(&state, &admin, &params, query, CloseWhat::Connection).await
}

async fn close_user(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<CloseQuery>,
) -> Result<(StatusCode, Json<Closed>)> {
    close(&state, &admin, &params, query, CloseWhat::User).await
}
