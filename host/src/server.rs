//! The server: state, routes, and `run(listener, shutdown)`.

use crate::admin;
use crate::backplane::Backplane;
use crate::backplane::memory::MemoryBackplane;
use crate::backplane::redis::RedisBackplane;
use crate::config::{Config, Settings};
use crate::connection::outbound::CloseRequest;
use crate::deploy::Deployer;
use crate::hubs::{Hubs, Source};
use crate::ids::NodeId;
use crate::lifetime::{HubKey, HubLifetimeManager};
use crate::quotas::ConnectionCounts;
use crate::runtime::Runtime;
use crate::store::{HubStore, local::LocalStore, redis::RedisStore};
use crate::transport::{self, tokens::Tokens};
use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for connections to finish their Close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the request handlers share.
pub struct AppState {
    pub settings: Settings,
    pub hubs: Arc<Hubs>,
    /// Uploads, activations, deletes, and keeping `hubs` in step with the store.
    pub deployer: Arc<Deployer>,
    pub lifetime: Arc<HubLifetimeManager>,
    pub tokens: Tokens,
    /// Open connections per tenant, for the tenants' connection quotas.
    pub connection_counts: ConnectionCounts,
    /// Connection tasks, which outlive the HTTP request that upgraded them.
    pub tasks: TaskTracker,
    /// Passes requests for other nodes' connections on to them.
    pub forwarder: reqwest::Client,
    /// Cancelled when shutdown begins: handshakes still waiting stop, and
    /// requests and WebSockets passed on to other nodes end.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Build the state for `config`: on Redis when it names a Redis URL,
    /// else on the single-node memory backplane. Must run inside a tokio
    /// runtime. Redis need not be reachable yet (see `/readyz`).
    pub fn new(config: &Config) -> anyhow::Result<Arc<Self>> {
        let settings = config.settings()?;
        let backplane: Arc<dyn Backplane> = match settings.redis.clone() {
            Some(redis) => {
                tracing::info!(url = %redacted(&redis.url), prefix = config.cluster_prefix, "redis backplane");
                Arc::new(RedisBackplane::start(redis).context("invalid Redis URL")?)
            }
            None => Arc::new(MemoryBackplane::standalone()),
        };
        Self::with_backplane(config, settings, backplane)
    }

    /// Build the state for `config` on `backplane`, loading every configured
    /// hub file. Hubs in the store are loaded by [`run`].
    fn with_backplane(
        config: &Config,
        settings: Settings,
        backplane: Arc<dyn Backplane>,
    ) -> anyhow::Result<Arc<Self>> {
        let runtime = match &settings.cache_dir {
            Some(dir) => Runtime::new()?.with_cache(dir)?,
            None => Runtime::new()?,
        };
        let store = match &settings.redis {
            Some(redis) => HubStore::Redis(
                RedisStore::new(&redis.url, &config.cluster_prefix).context("invalid Redis URL")?,
            ),
            None => {
                if settings.data_dir.is_none() {
                    tracing::info!("no --data-dir: uploaded hubs last until this process exits");
                }
                HubStore::Local(LocalStore::open(settings.data_dir.as_deref())?)
            }
        };
        let hubs = Arc::new(Hubs::default());
        let tenants = settings.tenants.current();
        let mut files = std::collections::HashMap::new();
        for hub in &config.hubs {
            let key = HubKey::new(&hub.tenant, &hub.hub)?;
            let started = std::time::Instant::now();
            let version = runtime
                .load_file(key.clone(), &hub.path, &tenants.get(&hub.tenant).hub_limits)
                .with_context(|| format!("cannot load hub {key} from {}", hub.path.display()))?;
            hubs.install(
                version,
                Source::File {
                    path: hub.path.clone(),
                },
            );
            files.insert(key.clone(), hub.path.clone());
            tracing::info!(hub = %key, path = %hub.path.display(), ms = started.elapsed().as_millis() as u64, "hub loaded");
        }
        let node = NodeId::random();
        let lifetime = HubLifetimeManager::start(node, settings.lifetime.clone(), backplane);
        let deployer = Deployer::new(
            Arc::new(runtime),
            hubs.clone(),
            store,
            settings.tenants.clone(),
            lifetime.clone(),
            files,
        );
        Ok(Arc::new(Self {
            settings,
            hubs,
            deployer,
            lifetime,
            tokens: Tokens::default(),
            connection_counts: ConnectionCounts::default(),
            tasks: TaskTracker::new(),
            forwarder: transport::forwarder()?,
            shutdown: CancellationToken::new(),
        }))
    }
}

/// The routes, without binding anything.
pub fn app(state: Arc<AppState>) -> Router {
    let mut hubs = Router::new()
        .route("/{tenant}/{hub}/negotiate", post(transport::negotiate))
        .route(
            "/{tenant}/{hub}",
            get(transport::connect)
                .post(transport::post)
                .delete(transport::delete),
        );
    if let Some(cors) = state.settings.cors.clone() {
        hubs = hubs.layer(cors);
    }
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(hubs)
        .nest("/admin/v1", admin::routes());
    let router = match &state.settings.static_dir {
        Some(dir) => router.fallback_service(tower_http::services::ServeDir::new(dir)),
        None => router,
    };
    router.with_state(state)
}

/// 200 when the backplane is connected and the hub store has been read,
/// else 503; the body has the backplane's counters.
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let backplane = state.lifetime.backplane();
    let synced = state.deployer.is_synced();
    let ready = backplane.is_ready() && synced;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            serde_json::json!({ "ready": ready, "hubsLoaded": synced, "backplane": backplane.stats() }),
        ),
    )
}

/// A Redis URL with its password hidden, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
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
    state.deployer.start(state.settings.sync_interval);
    if let Some(dir) = &state.settings.watch_dir {
        tokio::spawn(crate::deploy::watch(
            Arc::downgrade(&state.deployer),
            dir.clone(),
        ));
    }
    let expiry = tokio::spawn(expire_tokens(state.clone()));
    let url = state.settings.advertise_url.clone().or_else(|| {
        let addr = listener.local_addr().ok()?;
        (!addr.ip().is_unspecified()).then(|| format!("http://{addr}"))
    });
    if url.is_none() && state.settings.redis.is_some() {
        tracing::warn!(
            "listening on a wildcard address without advertise_url: other nodes cannot pass on requests for this node's connections"
        );
    }
    state.lifetime.start_heartbeats(url);
    let closing = state.clone();
    // Hub messages are small and latency matters: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let result = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections");
            closing.lifetime.leave();
            closing.shutdown.cancel();
            closing.lifetime.close_all(&CloseRequest {
                error: None,
                allow_reconnect: true,
            });
        })
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
    result.context("server error")
}

/// Drop negotiated connections that no transport claimed in time, and
/// long-polling connections nobody polls any more.
async fn expire_tokens(state: Arc<AppState>) {
    let max_age = state.settings.disconnect_timeout;
    let mut tick = tokio::time::interval((max_age / 5).max(Duration::from_millis(1)));
    loop {
        tick.tick().await;
        let expired = state.tokens.expire(max_age);
        if expired > 0 {
            tracing::debug!(expired, "expired unused connection tokens");
        }
    }
}
