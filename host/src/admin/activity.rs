//! What a tenant's hubs are doing, for the dashboard: connections (on every
//! node) and invocations (on this node) per hub, and the last hub failures.

use super::TenantAdmin;
use super::api::{HubActivity, HubFailureInfo, HubFailures, TenantActivity};
use crate::lifetime::PresenceQuery;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use std::sync::Arc;

pub async fn activity(
    State(state): State<Arc<AppState>>,
    admin: TenantAdmin,
) -> Json<TenantActivity> {
    let mut served: Vec<_> = state
        .hubs
        .list()
        .into_iter()
        .filter(|(key, _)| key.tenant() == admin.tenant)
        .map(|(key, _)| key)
        .collect();
    served.sort_by(|a, b| a.hub().cmp(b.hub()));
    let mut hubs = Vec::with_capacity(served.len());
    for key in served {
        // Counts only (no ids): one question to every node per hub.
        let presence = state.lifetime.presence(&key, PresenceQuery::Hub, 0).await;
        hubs.push(HubActivity {
            hub: key.hub().to_owned(),
            connections: presence.count,
            invocations: state.hubs.get(&key).map_or(0, |slot| slot.invocations()),
        });
    }
    Json(TenantActivity {
        tenant: admin.tenant,
        at_ms: crate::millis::unix_now(),
        hubs,
    })
}

pub async fn errors(State(state): State<Arc<AppState>>, admin: TenantAdmin) -> Json<HubFailures> {
    let errors = state
        .limit_counters
        .recent_failures(&admin.tenant)
        .into_iter()
        .map(|failure| HubFailureInfo {
            at_ms: failure.at_ms,
            hub: failure.hub,
            call: failure.call,
            error: failure.error,
        })
        .collect();
    Json(HubFailures {
        tenant: admin.tenant,
        errors,
    })
}
