//! The metrics endpoint: `GET /metrics` in Prometheus' text format, on a
//! listener of its own (`--metrics-listen`), never on the public port, so
//! that what a node says about its tenants is reachable only where the
//! operator chose (a private interface, a sidecar).
//!
//! Events are recorded where they happen ([`crate::monitoring`]); the
//! values a node can read at any time — the backplane's counters, the
//! process's memory — are taken here, at scrape time.

use crate::monitoring::{self, BUCKETS};
use crate::state::AppState;
use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;

/// Install the process's Prometheus recorder: from here on every metric
/// of [`crate::monitoring`] is recorded. Once per process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .context("bad histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    monitoring::describe();
    monitoring::enable();
    Ok(handle)
}

/// The routes of the metrics listener.
pub fn routes(handle: PrometheusHandle, state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((handle, state))
}

async fn scrape(
    State((handle, state)): State<(PrometheusHandle, Arc<AppState>)>,
) -> impl IntoResponse {
    let stats = state.cluster.backplane().stats();
    counter!(monitoring::BACKPLANE_PUBLISHED).absolute(stats.published);
    counter!(monitoring::BACKPLANE_RECEIVED).absolute(stats.received);
    gauge!(monitoring::BACKPLANE_BUFFERED).set(stats.buffered as f64);
    for (reason, count) in [
        ("overflow", stats.dropped_overflow),
        ("expired", stats.dropped_expired),
        ("in_flight", stats.dropped_in_flight),
        ("incoming", stats.dropped_incoming),
    ] {
        counter!(monitoring::BACKPLANE_DROPPED, "reason" => reason).absolute(count);
    }
    if let Some(bytes) = resident_bytes() {
        gauge!(monitoring::RESIDENT_BYTES).set(bytes as f64);
    }
    // Histograms are summarized on upkeep; a scrape is the moment to do it.
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// The process's resident memory (Linux), from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
