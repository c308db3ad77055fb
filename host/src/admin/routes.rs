//! The admin API's handlers. Who may call each is in its extractor
//! ([`TenantAdmin`] or [`Operator`]); what it answers is a type of [`api`].

use super::api::{
    Activate, ActiveVersion, AuthKind, HubDeleted, HubInfo, HubList, LimitHits, SetVar,
    TenantDeleted, TenantInfo, TenantList, TenantStored, Uploaded, VarChanged, VarInfo, VarList,
};
use super::{AdminError, Operator, TenantAdmin, api};
use crate::auth::{AuthConfig, Authenticator};
use crate::names::HubKey;
use crate::state::AppState;
use crate::store::HubRecord;
use crate::tenants::{Origin, TenantConfig, TenantSettings};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

type Result<T> = std::result::Result<T, AdminError>;

/// The admin routes, to nest under `/admin/v1`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/tenants", get(list_tenants))
        .route("/drain", post(drain))
        .route(
            "/tenants/{tenant}",
            get(get_tenant).put(put_tenant).delete(delete_tenant),
        )
        .route("/tenants/{tenant}/hubs", get(list_hubs))
        .route("/tenants/{tenant}/limits", get(limit_hits))
        .route("/tenants/{tenant}/activity", get(super::activity::activity))
        .route("/tenants/{tenant}/errors", get(super::activity::errors))
        .route("/tenants/{tenant}/vars", get(list_vars))
        .route(
            "/tenants/{tenant}/vars/{name}",
            put(set_var).delete(delete_var),
        )
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
                Json(api::ErrorBody {
                    error: "Method not allowed on this admin route.".to_owned(),
                }),
            )
        })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("Invalid JSON body: {e}")))
}

/// The hub of a `/tenants/{tenant}/hubs/{hub}` route.
fn hub_of(admin: &TenantAdmin) -> Result<&HubKey> {
    admin.hub.as_ref().ok_or(AdminError::Internal)
}

/// Drain this node and let it exit, as SIGTERM does (see `crate::drain`).
async fn drain(
    State(state): State<Arc<AppState>>,
    _: Operator,
) -> (StatusCode, Json<api::Draining>) {
    let settings = &state.settings.drain;
    crate::drain::start(&state);
    tracing::info!("drain asked for through the admin API");
    (
        StatusCode::ACCEPTED,
        Json(api::Draining {
            connections: state.connection_counts.total(),
            window_ms: settings.window.as_millis() as u64,
        }),
    )
}

async fn list_tenants(State(state): State<Arc<AppState>>, _: Operator) -> Result<Json<TenantList>> {
    let table = state.tenants.current();
    let mut tenants: Vec<TenantInfo> = table
        .named()
        .map(|(name, t)| tenant_info(name, t))
        .collect();
    tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(Json(TenantList { tenants }))
}

fn tenant_info(name: &str, tenant: &TenantSettings) -> TenantInfo {
    TenantInfo {
        tenant: name.to_owned(),
        origin: tenant.origin,
        auth: match tenant.auth {
            Authenticator::Anonymous => AuthKind::Anonymous,
            Authenticator::Jwt { .. } => AuthKind::Jwt,
        },
        admin_keys: tenant.admin_keys.len(),
        max_component_bytes: tenant.max_component_bytes,
        max_connections: tenant.max_connections,
        max_messages_per_second: tenant.max_messages_per_second,
    }
}

async fn get_tenant(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
) -> Result<Json<TenantInfo>> {
    let table = state.tenants.current();
    Ok(Json(tenant_info(&admin.tenant, table.get(&admin.tenant))))
}

/// The path's tenant of an operator route.
fn operator_tenant(operator: Operator) -> Result<String> {
    operator.tenant.ok_or(AdminError::Internal)
}

async fn put_tenant(
    State(state): State<Arc<AppState>>,
    operator: Operator,
    body: Bytes,
) -> Result<Response> {
    let tenant = operator_tenant(operator)?;
    let config: TenantConfig = parse_json(&body)?;
    let tenants = &state.tenants;
    if tenants.is_declared(&tenant) {
        return Err(AdminError::Conflict(format!(
            "Tenant '{tenant}' is declared in the configuration file and cannot be changed here."
        )));
    }
    if matches!(&config.auth, AuthConfig::Jwt(jwt) if jwt.rs256_public_key_file.is_some()) {
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
    let stored = TenantStored {
        tenant,
        origin: Origin::Api,
    };
    Ok((status, Json(stored)).into_response())
}

async fn delete_tenant(
    State(state): State<Arc<AppState>>,
    operator: Operator,
) -> Result<Json<TenantDeleted>> {
    let tenant = operator_tenant(operator)?;
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
    Ok(Json(TenantDeleted {
        tenant,
        deleted_hubs,
    }))
}

/// A hub as the API shows it: the store's view and what this node serves.
fn hub_info(state: &AppState, key: &HubKey, record: Option<HubRecord>) -> HubInfo {
    let record = record.unwrap_or_default();
    let served = state.deployer.served(key);
    let served_world = state
        .hubs
        .get(key)
        .map(|slot| slot.active().world().version().to_owned());
    HubInfo {
        tenant: key.tenant().to_owned(),
        hub: key.hub().to_owned(),
        active: record.active(),
        versions: record.versions,
        history: record.history,
        served,
        served_world,
    }
}

async fn list_vars(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
) -> Result<Json<VarList>> {
    let vars = state.deployer.list_vars(&admin.tenant).await?;
    Ok(Json(VarList {
        tenant: admin.tenant,
        vars: vars
            .into_iter()
            .map(|var| VarInfo {
                name: var.name,
                secret: var.secret,
                value: var.value,
            })
            .collect(),
    }))
}

/// The `{name}` of a `/tenants/{tenant}/vars/{name}` route.
fn var_name(Path(params): Path<HashMap<String, String>>) -> Result<String> {
    params.get("name").cloned().ok_or(AdminError::Internal)
}

async fn set_var(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    path: Path<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<VarChanged>> {
    let name = var_name(path)?;
    let SetVar { value, secret } = parse_json(&body)?;
    state
        .deployer
        .set_var(&admin.tenant, &name, &value, secret)
        .await?;
    // The name and kind only: a value may be a secret.
    tracing::info!(tenant = admin.tenant, name, secret, "variable set");
    Ok(Json(VarChanged {
        tenant: admin.tenant,
        name,
    }))
}

async fn delete_var(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    path: Path<HashMap<String, String>>,
) -> Result<Json<VarChanged>> {
    let name = var_name(path)?;
    let existed = state.deployer.delete_var(&admin.tenant, &name).await?;
    if !existed {
        return Err(AdminError::NotFound(format!("No variable '{name}'.")));
    }
    tracing::info!(tenant = admin.tenant, name, "variable deleted");
    Ok(Json(VarChanged {
        tenant: admin.tenant,
        name,
    }))
}

async fn limit_hits(State(state): State<Arc<AppState>>, admin: TenantAdmin) -> Json<LimitHits> {
    let hits = state.limit_counters.of(&admin.tenant);
    Json(LimitHits {
        tenant: admin.tenant,
        hits,
    })
}

async fn list_hubs(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
) -> Result<Json<HubList>> {
    let tenant = admin.tenant;
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
        let key = HubKey::new(&tenant, &name).map_err(|e| AdminError::BadRequest(e.to_string()))?;
        let record = state.store.hub(&key).await?;
        hubs.push(hub_info(&state, &key, record));
    }
    Ok(Json(HubList { tenant, hubs }))
}

async fn get_hub(State(state): State<Arc<AppState>>, admin: TenantAdmin) -> Result<Json<HubInfo>> {
    let key = hub_of(&admin)?;
    let record = state.store.hub(key).await?;
    if record.is_none() && state.deployer.served(key).is_none() {
        return Err(AdminError::NotFound(format!("No hub '{key}'.")));
    }
    Ok(Json(hub_info(&state, key, record)))
}

async fn upload(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response> {
    let key = hub_of(&admin)?.clone();
    let tenant = admin.tenant;
    // Before the body is read: uploads waiting for a place hold no bodies.
    let permit = state.deployer.upload_permit(&tenant)?;
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
        state.limit_counters.hit(&tenant, "max_component_bytes");
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
        .upload(permit, &key, bytes.to_vec(), activate)
        .await?;
    let uploaded = Uploaded {
        info,
        tenant: key.tenant().to_owned(),
        hub: key.hub().to_owned(),
        active: activate,
    };
    Ok((StatusCode::CREATED, Json(uploaded)).into_response())
}

fn active_version(key: &HubKey, active: u64) -> Json<ActiveVersion> {
    Json(ActiveVersion {
        tenant: key.tenant().to_owned(),
        hub: key.hub().to_owned(),
        active,
    })
}

async fn activate(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
    body: Bytes,
) -> Result<Json<ActiveVersion>> {
    let key = hub_of(&admin)?;
    let Activate { version } = parse_json(&body)?;
    state.deployer.activate(key, version).await?;
    Ok(active_version(key, version))
}

async fn rollback(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
) -> Result<Json<ActiveVersion>> {
    let key = hub_of(&admin)?;
    let version = state.deployer.rollback(key).await?;
    Ok(active_version(key, version))
}

async fn delete_hub(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
) -> Result<Json<HubDeleted>> {
    let key = hub_of(&admin)?;
    if !state.deployer.delete(key).await? {
        return Err(AdminError::NotFound(format!(
            "No hub '{key}' in the store."
        )));
    }
    tracing::info!(hub = %key, by = admin.principal.name(), "hub deleted");
    Ok(Json(HubDeleted {
        tenant: key.tenant().to_owned(),
        hub: key.hub().to_owned(),
        deleted: true,
    }))
}
