//! The admin API's handlers.

use super::error::capitalized;
use super::{AdminError, Principal, authorize};
use crate::hubs::Source;
use crate::names::HubKey;
use crate::state::AppState;
use crate::store::HubRecord;
use crate::tenants::{Origin, TenantConfig};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

type Result<T> = std::result::Result<T, AdminError>;

/// The admin routes, to nest under `/admin/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/tenants", get(list_tenants))
        .route(
            "/tenants/{tenant}",
            get(get_tenant).put(put_tenant).delete(delete_tenant),
        )
        .route("/tenants/{tenant}/hubs", get(list_hubs))
        .route(
            "/tenants/{tenant}/hubs/{hub}",
            get(get_hub).delete(delete_hub),
        )
        .route("/tenants/{tenant}/hubs/{hub}/versions", post(upload))
        .route("/tenants/{tenant}/hubs/{hub}/activate", post(activate))
        .route("/tenants/{tenant}/hubs/{hub}/rollback", post(rollback))
        .fallback(|| async { AdminError::NotFound("No such admin route.".to_owned()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({ "error": "Method not allowed on this admin route." })),
            )
        })
}

fn hub_key(tenant: &str, hub: &str) -> Result<HubKey> {
    HubKey::new(tenant, hub).map_err(|e| AdminError::BadRequest(capitalized(&e.to_string())))
}

fn check_tenant_name(tenant: &str) -> Result<()> {
    hub_key(tenant, "x").map(drop)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("Invalid JSON body: {e}")))
}

async fn list_tenants(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    authorize(&state, &headers, None)?;
    let table = state.tenants.current();
    let mut tenants: Vec<Value> = table
        .named()
        .map(|(name, t)| tenant_json(name, t))
        .collect();
    tenants.sort_by(|a, b| a["tenant"].as_str().cmp(&b["tenant"].as_str()));
    Ok(Json(json!({ "tenants": tenants })))
}

fn tenant_json(name: &str, tenant: &crate::tenants::TenantSettings) -> Value {
    json!({
        "tenant": name,
        "origin": tenant.origin,
        "auth": match tenant.auth {
            crate::auth::Authenticator::Anonymous => "anonymous",
            crate::auth::Authenticator::Jwt { .. } => "jwt",
        },
        "admin_keys": tenant.admin_keys.len(),
        "max_component_bytes": tenant.max_component_bytes,
        "max_connections": tenant.max_connections,
        "max_messages_per_second": tenant.max_messages_per_second,
    })
}

async fn get_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>> {
    check_tenant_name(&tenant)?;
    authorize(&state, &headers, Some(&tenant))?;
    let table = state.tenants.current();
    Ok(Json(tenant_json(&tenant, table.get(&tenant))))
}

async fn put_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Response> {
    check_tenant_name(&tenant)?;
    authorize(&state, &headers, None)?;
    let config: TenantConfig = parse_json(&body)?;
    let tenants = &state.tenants;
    if tenants.is_declared(&tenant) {
        return Err(AdminError::Conflict(format!(
            "Tenant '{tenant}' is declared in the configuration file and cannot be changed here."
        )));
    }
    if matches!(&config.auth, crate::auth::AuthConfig::Jwt(jwt) if jwt.rs256_public_key_file.is_some())
    {
        return Err(AdminError::BadRequest(
            "rs256_public_key_file is for the configuration file; send the PEM as rs256_public_key.".to_owned(),
        ));
    }
    tenants
        .check(&tenant, &config)
        .map_err(|e| AdminError::BadRequest(format!("Invalid tenant: {e:#}")))?;
    let existed = state.store.tenants().await?.contains_key(&tenant);
    state.store.put_tenant(&tenant, &config.hashed()).await?;
    state.deployer.sync_tenants().await?;
    state.deployer.announce_tenants();
    tracing::info!(tenant, "tenant stored");
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({ "tenant": tenant, "origin": Origin::Api })).into_response(),
    )
        .into_response())
}

async fn delete_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Response> {
    check_tenant_name(&tenant)?;
    authorize(&state, &headers, None)?;
    if state.tenants.is_declared(&tenant) {
        return Err(AdminError::Conflict(format!(
            "Tenant '{tenant}' is declared in the configuration file and cannot be deleted here."
        )));
    }
    let hubs: Vec<HubKey> = state.store.hubs().await?;
    let mut deleted_hubs = 0;
    for key in hubs.iter().filter(|k| k.tenant() == tenant) {
        deleted_hubs += usize::from(state.deployer.delete(key).await?);
    }
    let existed = state.store.delete_tenant(&tenant).await?;
    state.deployer.sync_tenants().await?;
    state.deployer.announce_tenants();
    if !existed && deleted_hubs == 0 {
        return Err(AdminError::NotFound(format!(
            "No tenant '{tenant}' defined through the API."
        )));
    }
    tracing::info!(tenant, deleted_hubs, "tenant deleted");
    Ok(Json(json!({ "tenant": tenant, "deleted_hubs": deleted_hubs })).into_response())
}

/// A hub as the API shows it: the store's view and what this node serves.
fn hub_json(key: &HubKey, record: Option<&HubRecord>, served: Option<Source>) -> Value {
    json!({
        "tenant": key.tenant(),
        "hub": key.hub(),
        "active": record.and_then(HubRecord::active),
        "versions": record.map(|r| r.versions.clone()).unwrap_or_default(),
        "history": record.map(|r| r.history.clone()).unwrap_or_default(),
        "served": served,
    })
}

async fn list_hubs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>> {
    check_tenant_name(&tenant)?;
    authorize(&state, &headers, Some(&tenant))?;
    let mut names: BTreeSet<String> = BTreeSet::new();
    for key in state.store.hubs().await? {
        if key.tenant() == tenant {
            names.insert(key.hub().to_owned());
        }
    }
    for (key, _) in state.hubs.list() {
        if key.tenant() == tenant {
            names.insert(key.hub().to_owned());
        }
    }
    let mut hubs = Vec::new();
    for name in names {
        let key = hub_key(&tenant, &name)?;
        let record = state.store.hub(&key).await?;
        hubs.push(hub_json(&key, record.as_ref(), state.deployer.served(&key)));
    }
    Ok(Json(json!({ "tenant": tenant, "hubs": hubs })))
}

async fn get_hub(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, hub)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let key = hub_key(&tenant, &hub)?;
    authorize(&state, &headers, Some(&tenant))?;
    let record = state.store.hub(&key).await?;
    let served = state.deployer.served(&key);
    if record.is_none() && served.is_none() {
        return Err(AdminError::NotFound(format!("No hub '{key}'.")));
    }
    Ok(Json(hub_json(&key, record.as_ref(), served)))
}

async fn upload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, hub)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response> {
    let key = hub_key(&tenant, &hub)?;
    authorize(&state, &headers, Some(&tenant))?;
    let activate = match query.get("activate").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(AdminError::BadRequest(format!(
                "activate must be true or false, not '{other}'."
            )));
        }
    };
    let limit = state.tenants.current().get(&tenant).max_component_bytes;
    let too_large = || {
        AdminError::TooLarge(format!(
            "The component is over the tenant's limit of {limit} bytes."
        ))
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    // Read at most one byte over the limit, so a lying or absent length cannot
    // make the server buffer more.
    let bytes = axum::body::to_bytes(body, limit.saturating_add(1))
        .await
        .map_err(|_| too_large())?;
    if bytes.is_empty() {
        return Err(AdminError::BadRequest(
            "The body must be a WebAssembly component.".to_owned(),
        ));
    }
    let info = state
        .deployer
        .upload(&key, bytes.to_vec(), activate)
        .await?;
    let mut body = serde_json::to_value(&info).map_err(|_| AdminError::Internal)?;
    body["tenant"] = json!(key.tenant());
    body["hub"] = json!(key.hub());
    body["active"] = json!(activate);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Activate {
    version: u64,
}

async fn activate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, hub)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>> {
    let key = hub_key(&tenant, &hub)?;
    authorize(&state, &headers, Some(&tenant))?;
    let Activate { version } = parse_json(&body)?;
    state.deployer.activate(&key, version).await?;
    Ok(Json(
        json!({ "tenant": tenant, "hub": hub, "active": version }),
    ))
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, hub)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let key = hub_key(&tenant, &hub)?;
    authorize(&state, &headers, Some(&tenant))?;
    let version = state.deployer.rollback(&key).await?;
    Ok(Json(
        json!({ "tenant": tenant, "hub": hub, "active": version }),
    ))
}

async fn delete_hub(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, hub)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let key = hub_key(&tenant, &hub)?;
    let principal = authorize(&state, &headers, Some(&tenant))?;
    if !state.deployer.delete(&key).await? {
        return Err(AdminError::NotFound(format!(
            "No hub '{key}' in the store."
        )));
    }
    tracing::info!(hub = %key, by = ?principal_name(&principal), "hub deleted");
    Ok(Json(
        json!({ "tenant": tenant, "hub": hub, "deleted": true }),
    ))
}

fn principal_name(principal: &Principal) -> &str {
    match principal {
        Principal::Operator => "operator",
        Principal::Tenant(name) => name,
    }
}
