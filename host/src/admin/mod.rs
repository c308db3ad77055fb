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

mod activity;
pub mod api;
pub mod client;
mod error;
mod routes;

pub use error::AdminError;
pub use routes::routes;

use crate::names::HubKey;
use crate::state::AppState;
use crate::tenants::{digests_equal, key_digest};
use axum::extract::{FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use std::collections::HashMap;
use std::sync::Arc;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    Tenant(String),
}

impl Principal {
    /// For logs.
    pub fn name(&self) -> &str {
        match self {
            Principal::Operator => "operator",
            Principal::Tenant(name) => name,
        }
    }
}

/// The caller of a route about one tenant (`/tenants/{tenant}/…`): an
/// operator, or that tenant's own key. Names in the path are checked first
/// (400), then the key (401, or 403 for another tenant's key).
#[derive(Debug)]
pub struct TenantAdmin {
    pub principal: Principal,
    pub tenant: String,
    /// The hub of `/tenants/{tenant}/hubs/{hub}/…` routes.
    pub hub: Option<HubKey>,
}

/// The caller of an operator-only route, with the path's tenant (checked)
/// where it has one.
#[derive(Debug)]
pub struct Operator {
    pub tenant: Option<String>,
}

impl FromRequestParts<Arc<AppState>> for TenantAdmin {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (tenant, hub) = path_names(parts, state).await?;
        let tenant = tenant.ok_or(AdminError::Internal)?;
        let principal = authorize(state, &parts.headers, Some(&tenant))?;
        Ok(Self {
            principal,
            tenant,
            hub,
        })
    }
}

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (tenant, _) = path_names(parts, state).await?;
        authorize(state, &parts.headers, None)?;
        Ok(Self { tenant })
    }
}

/// The `{tenant}` and `{hub}` of the path, checked against the name rules.
async fn path_names(
    parts: &mut Parts,
    state: &Arc<AppState>,
) -> Result<(Option<String>, Option<HubKey>), AdminError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|_| AdminError::NotFound("No such admin route.".to_owned()))?;
    let bad_name =
        |e: crate::names::InvalidName| AdminError::BadRequest(error::capitalized(&e.to_string()));
    let Some(tenant) = params.get("tenant") else {
        return Ok((None, None));
    };
    let hub = match params.get("hub") {
        Some(hub) => Some(HubKey::new(tenant, hub).map_err(bad_name)?),
        None => {
            crate::names::check_tenant(tenant).map_err(bad_name)?;
            None
        }
    };
    Ok((Some(tenant.clone()), hub))
}

/// The principal of a request, checked against `tenant` when the route is
/// about one (`None`: operator only).
fn authorize(
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
