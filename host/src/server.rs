//! The server: state, routes, and `run(listener, shutdown)`.

use crate::backplane::channels::Channels;
use crate::backplane::memory::MemoryBackplane;
use crate::backplane::Backplane;
use crate::config::{Config, Settings};
use crate::connection::outbound::CloseRequest;
use crate::hubs::Hubs;
use crate::ids::NodeId;
use crate::lifetime::{HubKey, HubLifetimeManager};
use crate::runtime::Runtime;
use crate::transport::{self, tokens::Tokens};
use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for connections to finish their Close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the request handlers share.
pub struct AppState {
    pub settings: Settings,
    pub runtime: Runtime,
    pub hubs: Hubs,
    pub lifetime: Arc<HubLifetimeManager>,
    pub tokens: Tokens,
    /// Connection tasks, which outlive the HTTP request that upgraded them.
    pub tasks: TaskTracker,
}

impl AppState {
    /// Build the state for `config` on the single-node memory backplane.
    /// Must run inside a tokio runtime.
    pub fn new(config: &Config) -> anyhow::Result<Arc<Self>> {
        Self::with_backplane(config, Arc::new(MemoryBackplane::standalone()))
    }

    /// Build the state for `config` on `backplane`, loading every configured hub.
    pub fn with_backplane(config: &Config, backplane: Arc<dyn Backplane>) -> anyhow::Result<Arc<Self>> {
        let settings = config.settings()?;
        let runtime = Runtime::new(settings.hub_limits.clone())?;
        let hubs = Hubs::default();
        for hub in &config.hubs {
            let key = HubKey::new(&hub.tenant, &hub.hub)?;
            let version = runtime
                .load_file(key.clone(), &hub.path)
                .with_context(|| format!("cannot load hub {key} from {}", hub.path.display()))?;
            hubs.install(version);
            tracing::info!(hub = %key, path = %hub.path.display(), "hub loaded");
        }
        let node = NodeId::random();
        let lifetime =
            HubLifetimeManager::start(node, Channels::new(settings.cluster_prefix.clone()), backplane);
        Ok(Arc::new(Self { settings, runtime, hubs, lifetime, tokens: Tokens::default(), tasks: TaskTracker::new() }))
    }
}

/// The routes, without binding anything.
pub fn app(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/{tenant}/{hub}/negotiate", post(transport::negotiate))
        .route("/{tenant}/{hub}", get(transport::connect));
    let router = match &state.settings.static_dir {
        Some(dir) => router.fallback_service(tower_http::services::ServeDir::new(dir)),
        None => router,
    };
    router.with_state(state)
}

/// Serve on `listener` until `shutdown` completes, then close every connection
/// with a Close that allows reconnecting, and wait (briefly) for them.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let expiry = tokio::spawn(expire_tokens(state.clone()));
    let closing = state.clone();
    let result = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections");
            closing.lifetime.close_all(&CloseRequest { error: None, allow_reconnect: true });
        })
        .await;
    expiry.abort();
    state.tasks.close();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    loop {
        // Again and again: a connection still in its handshake registers
        // after the first round, and is closed by a later one.
        state.lifetime.close_all(&CloseRequest { error: None, allow_reconnect: true });
        let round = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
        if tokio::time::timeout_at(round, state.tasks.wait()).await.is_ok() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(left = state.tasks.len(), "connections still open after the shutdown grace period");
            break;
        }
    }
    result.context("server error")
}

/// Drop negotiated connections that no transport claimed in time.
async fn expire_tokens(state: Arc<AppState>) {
    let max_age = state.settings.disconnect_timeout;
    let mut tick = tokio::time::interval((max_age / 3).max(Duration::from_millis(1)));
    loop {
        tick.tick().await;
        let expired = state.tokens.expire(max_age);
        if expired > 0 {
            tracing::debug!(expired, "expired unused connection tokens");
        }
    }
}
