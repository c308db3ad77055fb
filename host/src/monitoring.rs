//! What a node tells Prometheus about itself: every metric's name, kind,
//! labels and help, defined here once and recorded through the `metrics`
//! facade. Nothing is recorded until [`enable`] (`hubhost serve` installs
//! the Prometheus recorder when `--metrics-listen` is set): until then an
//! event costs one atomic load, not the label strings the facade would
//! build for a recorder that is not there.
//!
//! Labels are bounded: tenant, hub, transport, outcome, kind, limit and the
//! Redis use — never a connection, user or group, whose numbers clients
//! choose. Values a node can read at any time (the backplane's counters,
//! memory, open connections) are taken at scrape time instead (see the
//! `exporter` module).

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Record from now on (a recorder is installed).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub const CONNECTIONS: &str = "hubhost_connections";
pub const INVOCATIONS: &str = "hubhost_invocations_total";
pub const INVOCATION_SECONDS: &str = "hubhost_invocation_duration_seconds";
pub const DELIVERIES: &str = "hubhost_deliveries_total";
pub const HUB_ERRORS: &str = "hubhost_hub_errors_total";
pub const LIMIT_HITS: &str = "hubhost_limit_hits_total";
pub const INSTALLS: &str = "hubhost_hub_installs_total";
pub const SHARED_CODE: &str = "hubhost_shared_code_total";
pub const ACTIVE_VERSION: &str = "hubhost_hub_active_version";
pub const REDIS_SECONDS: &str = "hubhost_redis_round_trip_seconds";
pub const BACKPLANE_PUBLISHED: &str = "hubhost_backplane_published_total";
pub const BACKPLANE_RECEIVED: &str = "hubhost_backplane_received_total";
pub const BACKPLANE_BUFFERED: &str = "hubhost_backplane_buffered";
pub const BACKPLANE_DROPPED: &str = "hubhost_backplane_dropped_total";
pub const RESIDENT_BYTES: &str = "process_resident_memory_bytes";

/// Histogram buckets of hub calls and Redis round trips, in seconds: from
/// a warm call's tens of microseconds to the default call timeout.
pub const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Give every metric its help text (once, with the recorder).
pub fn describe() {
    describe_gauge!(
        CONNECTIONS,
        "Open client connections, by tenant, hub and transport."
    );
    describe_counter!(
        INVOCATIONS,
        "Hub method invocations by clients, by outcome."
    );
    describe_histogram!(
        INVOCATION_SECONDS,
        Unit::Seconds,
        "Time from a client's invocation to the hub's answer, waiting for a call slot included."
    );
    describe_counter!(
        DELIVERIES,
        "Messages queued to connections of this node by sends."
    );
    describe_counter!(
        HUB_ERRORS,
        "Hub calls that failed in the sandbox: a trap, or a limit (kind)."
    );
    describe_counter!(
        LIMIT_HITS,
        "Times a limit stopped something of a tenant, by its setting."
    );
    describe_counter!(INSTALLS, "Hub versions this node started serving.");
    describe_counter!(
        SHARED_CODE,
        "Compiled code another node shared, by outcome: loaded instead of compiling, or refused (the node compiled)."
    );
    describe_gauge!(
        ACTIVE_VERSION,
        "The stored version a hub serves on this node; 0 when served from a file or gone."
    );
    describe_histogram!(
        REDIS_SECONDS,
        Unit::Seconds,
        "Redis round trips: backplane publishes (one pipeline), state and timer scripts."
    );
    describe_counter!(BACKPLANE_PUBLISHED, "Messages handed to the backplane.");
    describe_counter!(BACKPLANE_RECEIVED, "Messages received from the backplane.");
    describe_gauge!(
        BACKPLANE_BUFFERED,
        "Outgoing messages waiting for the backplane."
    );
    describe_counter!(BACKPLANE_DROPPED, "Backplane messages lost, by reason.");
    describe_gauge!(
        RESIDENT_BYTES,
        Unit::Bytes,
        "Resident memory of the process."
    );
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The hub returned a result.
    Ok,
    /// The hub returned an error of its own (unknown method, bad arguments…).
    HubError,
    /// The call failed in the sandbox (a trap, a limit) or in the host.
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::HubError => "hub_error",
            Self::Failed => "failed",
        }
    }
}

/// One open connection, counted until dropped.
pub struct OpenConnection(metrics::Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

pub fn connection_opened(tenant: &str, hub: &str, transport: &'static str) -> OpenConnection {
    if !enabled() {
        return OpenConnection(metrics::Gauge::noop());
    }
    let open = gauge!(CONNECTIONS, "tenant" => tenant.to_owned(), "hub" => hub.to_owned(), "transport" => transport);
    open.increment(1.0);
    OpenConnection(open)
}

pub fn invocation(tenant: &str, hub: &str, outcome: Outcome, took: Duration) {
    if !enabled() {
        return;
    }
    let labels = [
        ("tenant", tenant.to_owned()),
        ("hub", hub.to_owned()),
        ("outcome", outcome.label().to_owned()),
    ];
    counter!(INVOCATIONS, &labels).increment(1);
    metrics::histogram!(INVOCATION_SECONDS, &labels).record(took.as_secs_f64());
}

pub fn delivered(tenant: &str, hub: &str, count: usize) {
    if !enabled() {
        return;
    }
    if count > 0 {
        counter!(DELIVERIES, "tenant" => tenant.to_owned(), "hub" => hub.to_owned())
            .increment(count as u64);
    }
}

/// A hub call failed in the sandbox; `kind` names the trap or the limit.
pub fn hub_error(tenant: &str, hub: &str, kind: &'static str) {
    if !enabled() {
        return;
    }
    counter!(HUB_ERRORS, "tenant" => tenant.to_owned(), "hub" => hub.to_owned(), "kind" => kind)
        .increment(1);
}

pub fn limit_hit(tenant: &str, limit: &'static str) {
    if !enabled() {
        return;
    }
    counter!(LIMIT_HITS, "tenant" => tenant.to_owned(), "limit" => limit).increment(1);
}

/// This node serves a new version of a hub (`version` 0: not from the store).
pub fn installed(tenant: &str, hub: &str, version: u64) {
    if !enabled() {
        return;
    }
    counter!(INSTALLS, "tenant" => tenant.to_owned(), "hub" => hub.to_owned()).increment(1);
    active_version(tenant, hub, version);
}

/// Compiled code another node shared was `loaded` or `refused` (its MAC,
/// component, compiler or engine did not check out).
pub fn shared_code(tenant: &str, outcome: &'static str) {
    if !enabled() {
        return;
    }
    counter!(SHARED_CODE, "tenant" => tenant.to_owned(), "outcome" => outcome).increment(1);
}

pub fn active_version(tenant: &str, hub: &str, version: u64) {
    if !enabled() {
        return;
    }
    gauge!(ACTIVE_VERSION, "tenant" => tenant.to_owned(), "hub" => hub.to_owned())
        .set(version as f64);
}

/// A Redis round trip for `what` (`publish`, `script`) took `took`.
pub fn redis_round_trip(what: &'static str, took: Duration) {
    if !enabled() {
        return;
    }
    metrics::histogram!(REDIS_SECONDS, "use" => what).record(took.as_secs_f64());
}
