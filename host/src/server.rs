//! The server: routes, and `run(listener, state, shutdown)`.

use crate::admin;
use crate::outbound::CloseRequest;
use crate::state::AppState;
use crate::transport;
use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for connections to finish their Close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The routes, without binding anything.
pub fn app(state: Arc<AppState>) -> Router {
    let mut hubs = Router::new()
        .route("/{tenant}/{hub}/negotiate", post(transport::negotiate))
        // Between nodes: a draining node hands its connections over.
        .route("/{tenant}/{hub}/handover", post(transport::handover_step))
        .route(
            "/{tenant}/{hub}",
            get(transport::connect)
                .post(transport::post)
                .delete(transport::delete),
        );
    // Checked when the settings were (`Config::checked`).
    if let Ok(Some(cors)) = state.settings.cors.layer() {
        hubs = hubs.layer(cors);
    }
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(hubs)
        .merge(crate::dashboard::routes())
        .nest("/admin/v1", admin::routes())
        .nest("/api/v1", crate::server_api::routes());
    let router = match &state.settings.static_dir {
        Some(dir) => router.fallback_service(tower_http::services::ServeDir::new(dir)),
        None => router,
    };
    router.with_state(state)
}

/// 200 when the backplane is connected, the hub store has been read and the
/// node is not draining,
/// else 503; the body has the backplane's counters.
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let backplane = state.cluster.backplane();
    let synced = state.deployer.is_synced();
    let draining = state.draining.is_cancelled();
    let ready = backplane.is_ready() && synced && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            serde_json::json!({ "ready": ready, "hubsLoaded": synced, "draining": draining, "backplane": backplane.stats() }),
        ),
    )
}

/// Load the hubs in the store (requests wait in the listen queue meanwhile,
/// so none meets a missing hub), serve on `listener` until `shutdown`
/// completes, then close every connection with a Close that allows
/// reconnecting, and wait (briefly) for them.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    match state.deployer.sync_all().await {
        Ok(()) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "hubs in the store loaded"
        ),
        Err(error) => {
            tracing::warn!("cannot read the hub store yet ({error}); retrying in the background")
        }
    }
    state.deployer.start(state.settings.admin.sync_interval);
    if let Some(dir) = &state.settings.watch_dir {
        tokio::spawn(crate::deploy::watch(
            Arc::downgrade(&state.deployer),
            dir.clone(),
        ));
    }
    let expiry = tokio::spawn(expire_tokens(state.clone()));
    crate::scheduler::start(&state);
    let url = state.settings.advertise_url.clone().or_else(|| {
        let addr = listener.local_addr().ok()?;
        (!addr.ip().is_unspecified()).then(|| format!("http://{addr}"))
    });
    if url.is_none() && state.settings.redis_url.is_some() {
        tracing::warn!(
            "listening on a wildcard address without advertise_url: other nodes cannot pass on requests for this node's connections"
        );
    }
    state.cluster.start_heartbeats(url);
    let closing = state.clone();
    let result = serve(
        listener,
        app(state.clone()),
        state.settings.connection.header_read_timeout,
        async move {
            tokio::select! {
                () = shutdown => {}
                () = closing.draining.cancelled() => {}
            }
            crate::drain::run(&closing).await;
            tracing::info!("shutting down: closing connections");
            closing.cluster.leave();
            closing.shutdown.cancel();
            closing.lifetime.close_all(&CloseRequest {
                error: None,
                allow_reconnect: true,
                handover: false,
            });
        },
    )
    .await;
    expiry.abort();
    state.tasks.close();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        // Again and again: a connection still in its handshake registers
        // after the first round, and is closed by a later one.
        state.lifetime.close_all(&CloseRequest {
            error: None,
            allow_reconnect: true,
            handover: false,
        });
        let round = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
        if tokio::time::timeout_at(round, state.tasks.wait())
            .await
            .is_ok()
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                left = state.tasks.len(),
                "connections still open after the shutdown grace period"
            );
            break;
        }
    }
    let (hub_state, timers) = (state.hub_state.clone(), state.timers.clone());
    let flushed = tokio::task::spawn_blocking(move || {
        hub_state.flush();
        timers.flush();
    });
    if let Err(error) = flushed.await {
        tracing::error!(%error, "hub state and timers not written at shutdown");
    }
    result.context("server error")
}

/// Accept HTTP/1 connections on `listener` for `router` until `shutdown`
/// completes, then wait (up to the grace period) for requests in progress.
/// A client must send a request's headers within `header_read_timeout`.
async fn serve(
    listener: TcpListener,
    router: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // Asks every open HTTP connection to finish its request and close.
    let closing = CancellationToken::new();
    let open = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Hub messages are small and latency matters: no Nagle delay.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let connection = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let closing = closing.clone();
        open.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            // Timeouts and clients that go away end here; nothing to report.
            if let Err(error) = ended {
                tracing::debug!(%error, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    closing.cancel();
    open.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, open.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in progress after the shutdown grace period");
    }
    Ok(())
}

/// Drop negotiated connections that no transport claimed in time, and
/// long-polling connections nobody polls any more.
async fn expire_tokens(state: Arc<AppState>) {
    let max_age = state.settings.connection.disconnect_timeout;
    let mut tick = tokio::time::interval((max_age / 5).max(Duration::from_millis(1)));
    loop {
        tick.tick().await;
        let expired = state.tokens.expire(max_age);
        if expired > 0 {
            tracing::debug!(expired, "expired unused connection tokens");
        }
    }
}
