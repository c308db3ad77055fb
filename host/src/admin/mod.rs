//! The admin API, under `/admin/v1/`, and its client (the CLI's
//! `hubhost deploy` and `hubhost hubs …`).
//!
//! Every request carries `Authorization: Bearer KEY`. An operator key (from
//! `[admin] operator_keys`) acts on every tenant; a tenant's key (from its
//! `admin_keys`) only on that tenant. No key or an unknown one is a 401; a
//! tenant key used on another tenant, or on an operator-only route, a 403.
//! Every answer is JSON; errors are `{"error": "…"}` with the status saying
//! what kind of failure it was.
//!
//! Routes (`T` = tenant, `H` = hub):
//! - `GET /tenants` (operator): tenants with their origin;
//! - `PUT /tenants/T` (operator): define or replace an API tenant;
//! - `DELETE /tenants/T` (operator): delete an API tenant and its hubs;
//! - `GET /tenants/T/hubs`, `GET /tenants/T/hubs/H`: versions, history, what this node serves;
//! - `POST /tenants/T/hubs/H/versions[?activate=false]`: upload a component (the body);
//! - `POST /tenants/T/hubs/H/activate` with `{"version": N}`;
//! - `POST /tenants/T/hubs/H/rollback`;
//! - `DELETE /tenants/T/hubs/H`: its clients get a Close with the reason.

pub mod client;
mod error;
mod routes;

pub use error::AdminError;
pub use routes::routes;

use crate::state::AppState;
use crate::tenants::{digests_equal, key_digest};
use axum::http::HeaderMap;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    Tenant(String),
}

/// The principal of a request, checked against `tenant` when the route is
/// about one (`None`: operator only).
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    tenant: Option<&str>,
) -> Result<Principal, AdminError> {
    let key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or(AdminError::Unauthorized(
            "An admin key is required: Authorization: Bearer KEY.",
        ))?;
    let digest = key_digest(key);
    let operator = state
        .operator_keys
        .iter()
        .fold(false, |found, k| found | digests_equal(k, &digest));
    if operator {
        return Ok(Principal::Operator);
    }
    let table = state.tenants.current();
    let Some(owner) = table.admin_key_owner(&digest) else {
        return Err(AdminError::Unauthorized("The admin key is not valid."));
    };
    match tenant {
        Some(tenant) if tenant == owner => Ok(Principal::Tenant(owner.to_owned())),
        Some(tenant) => Err(AdminError::Forbidden(format!(
            "This key cannot manage tenant '{tenant}'."
        ))),
        None => Err(AdminError::Forbidden(
            "This route needs an operator key.".to_owned(),
        )),
    }
}
