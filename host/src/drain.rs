//! Graceful drain: how a node leaves without dropping its clients on the
//! floor. From SIGTERM (or `POST /admin/v1/drain`) it answers `/readyz`
//! with 503 and refuses new connections (negotiate, and WebSockets without
//! negotiation, answer 503), while it keeps serving the clients it has —
//! requests for them, from them or passed on by other nodes — for the drain
//! window, so that load balancers take it out of rotation. Then it closes
//! them in batches, each with a Close that allows reconnecting: the official
//! clients' automatic reconnect brings them back through the load balancer
//! to the other nodes, a batch at a time rather than all at once. Long polls
//! and event streams end with that Close too.
//!
//! A stateful-reconnect connection is not closed but handed over: its socket
//! is dropped, its client resumes through another node, and that node takes
//! the connection (id, groups, items, every message) from this one (see
//! `crate::transport`'s handover). The drain waits for that, up to
//! `drain.handover_timeout_ms`.
//!
//! Guarantee: when [`run`] returns, every connection the node held was asked
//! to close or to move; the shutdown that follows waits (briefly) for them to go.

use crate::outbound::CloseRequest;
use crate::state::AppState;
use std::time::Duration;
use tokio::time::Instant;

/// How often the window checks whether connections are left.
const POLL: Duration = Duration::from_millis(25);

/// Start draining now (idempotent): what the shutdown awaits.
pub fn start(state: &AppState) {
    state.draining.cancel();
}

/// Drain: refuse new connections, serve the window, move the clients.
pub async fn run(state: &AppState) {
    start(state);
    let settings = &state.settings.drain;
    let started = Instant::now();
    tracing::info!(
        connections = state.connection_counts.total(),
        window_ms = settings.window.as_millis() as u64,
        "draining: /readyz answers 503, new connections are refused"
    );
    // The window ends early once no client is left.
    let window_end = started + settings.window;
    while Instant::now() < window_end && state.connection_counts.total() > 0 {
        tokio::time::sleep(POLL.min(window_end - Instant::now())).await;
    }
    let connections = state.lifetime.local_outbounds();
    let request = CloseRequest {
        error: None,
        allow_reconnect: true,
        // Only where another node can take them.
        handover: !state.cluster.alive_nodes().is_empty(),
    };
    let batches = connections.chunks(settings.batch_size).count();
    for (i, batch) in connections.chunks(settings.batch_size).enumerate() {
        for connection in batch {
            connection.close(request.clone());
        }
        if i + 1 < batches {
            tokio::time::sleep(settings.batch_interval).await;
        }
    }
    // Connections asked to close go at once; a stateful one stays until
    // another node took it. (One still in its handshake was never
    // registered: the shutdown ends it.)
    let grace_end = Instant::now() + settings.handover_timeout;
    while Instant::now() < grace_end && !state.lifetime.local_outbounds().is_empty() {
        tokio::time::sleep(POLL.min(grace_end - Instant::now())).await;
    }
    tracing::info!(
        moved = connections.len(),
        left = state.lifetime.local_outbounds().len(),
        batches,
        ms = started.elapsed().as_millis() as u64,
        "drained: every connection was asked to reconnect elsewhere or was handed over"
    );
}
