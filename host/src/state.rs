//! `AppState`: everything the request handlers share, and how a node's
//! parts are put together from its [`Config`].

use crate::backplane::Backplane;
use crate::backplane::memory::MemoryBackplane;
use crate::backplane::redis::{RedisBackplane, RedisSettings};
use crate::cluster::{Cluster, PeerUrls};
use crate::config::Config;
use crate::deploy::{DeploySettings, Deployer, VarLimits};
use crate::hubs::{Hubs, Source};
use crate::kv::{KvBackend, memory::MemoryKv, redis::RedisKv};
use crate::lifetime::HubLifetimeManager;
use crate::names::HubKey;
use crate::quotas::{CallSlots, ConnectionCounts, LimitCounters, TenantRates};
use crate::runtime::Runtime;
use crate::sessions::Tokens;
use crate::store::{HubStore, local::LocalStore, redis::RedisStore};
use crate::tenants::{TenantDefaults, Tenants, key_digest};
use crate::timers::{TimerBackend, memory::MemoryTimers, redis::RedisTimers};
use crate::vars::{SecretsKey, Vars};
use anyhow::Context as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything the request handlers share.
pub struct AppState {
    /// The settings this node runs with, checked.
    pub settings: Config,
    /// Digests of the operator keys.
    pub operator_keys: Vec<[u8; 32]>,
    pub hubs: Arc<Hubs>,
    /// Every tenant's settings, declared and stored.
    pub tenants: Tenants,
    /// Hub versions, activations and the API's tenants.
    pub store: Arc<HubStore>,
    /// Uploads, activations, deletes, and keeping `hubs` in step with the store.
    pub deployer: Arc<Deployer>,
    /// This node's membership: id, other nodes, announcements.
    pub cluster: Arc<Cluster>,
    /// Delivery and groups.
    pub lifetime: Arc<HubLifetimeManager>,
    /// Negotiated connections waiting for, or held by, a transport.
    pub tokens: Tokens,
    /// Open connections per tenant, for the tenants' connection quotas.
    pub connection_counts: ConnectionCounts,
    /// Hub calls each tenant runs at once.
    pub call_slots: CallSlots,
    /// How often each limit stopped each tenant.
    pub limit_counters: LimitCounters,
    /// Server API requests per tenant (`hub_limits.max_api_requests_per_second`).
    pub api_rates: TenantRates,
    /// Connection tasks, which outlive the HTTP request that upgraded them.
    pub tasks: TaskTracker,
    /// Passes requests for other nodes' connections on to them.
    pub forwarder: reqwest::Client,
    /// Cancelled when shutdown begins: handshakes still waiting stop, and
    /// requests and WebSockets passed on to other nodes end.
    pub shutdown: CancellationToken,
    /// Cancelled when the node starts draining (SIGTERM, `POST
    /// /admin/v1/drain`): `/readyz` answers 503, new connections are
    /// refused, and the drain leads to the shutdown.
    pub draining: CancellationToken,
    /// Where hubs keep their state; flushed at shutdown.
    pub hub_state: Arc<dyn KvBackend>,
    /// Where hubs' timers wait to fire (see [`crate::scheduler`]).
    pub timers: Arc<dyn TimerBackend>,
}

impl AppState {
    /// Build the state for `config`: on Redis when it names a Redis URL,
    /// else on the single-node memory backplane, loading every configured
    /// hub file (hubs in the store are loaded by [`crate::server::run`]).
    /// Must run inside a tokio runtime. Redis need not be reachable yet (see
    /// `/readyz`).
    pub fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let settings = config.checked()?;
        let backplane: Arc<dyn Backplane> = match &settings.redis_url {
            Some(url) => {
                tracing::info!(url = %redacted(url), prefix = settings.cluster_prefix, "redis backplane");
                let redis = RedisSettings {
                    backplane: settings.backplane.clone(),
                    ..RedisSettings::new(url.clone())
                };
                Arc::new(RedisBackplane::start(redis).context("invalid Redis URL")?)
            }
            None => Arc::new(MemoryBackplane::standalone()),
        };
        let runtime = match &settings.cache_dir {
            Some(dir) => Runtime::new()?.with_cache(dir)?,
            None => Runtime::new()?,
        }
        .with_baseline(settings.baseline_compile_above_bytes)?;
        // Hub state lives where the hubs do: in the cluster's Redis, else in
        // the data directory, else in memory.
        let hub_state: Arc<dyn KvBackend> = match (&settings.redis_url, &settings.data_dir) {
            (Some(url), _) => {
                Arc::new(RedisKv::new(url, &settings.cluster_prefix).context("invalid Redis URL")?)
            }
            (None, Some(dir)) => MemoryKv::open(&dir.join("kv"))
                .with_context(|| format!("cannot open hub state in {}", dir.display()))?,
            (None, None) => Arc::new(MemoryKv::new()),
        };
        let vars = Arc::new(Vars::default());
        let secrets_key = match &settings.admin.secrets_key {
            Some(key) => Some(Arc::new(SecretsKey::from_base64(key)?)),
            None => None,
        };
        let timers: Arc<dyn TimerBackend> = match &settings.redis_url {
            Some(url) => Arc::new(
                RedisTimers::new(url, &settings.cluster_prefix).context("invalid Redis URL")?,
            ),
            None => match &settings.data_dir {
                Some(dir) => MemoryTimers::open(&dir.join("timers.json"))
                    .with_context(|| format!("cannot open the timers in {}", dir.display()))?,
                None => Arc::new(MemoryTimers::new()),
            },
        };
        // Nodes that share the secrets key share compiled code too.
        let runtime = match &secrets_key {
            // The uploading node compiles the optimized code anyway (10–15 s
            // for a 12–18 MB component on a busy 2-core machine); waiting six
            // sync intervals (a minute by default) also covers its
            // announcement being lost and caught by a sync.
            Some(key) => runtime
                .with_code_key(key.code_key().clone())
                .waiting_for_optimized_code(settings.admin.sync_interval * 6),
            None => runtime,
        };
        let runtime = runtime
            .with_state(hub_state.clone())
            .with_vars(vars.clone())
            .with_timers(timers.clone());
        let limit_counters = LimitCounters::default();
        let runtime = runtime.counting(limit_counters.clone());
        let store = Arc::new(match &settings.redis_url {
            Some(url) => HubStore::Redis(
                RedisStore::new(url, &settings.cluster_prefix).context("invalid Redis URL")?,
            ),
            None => {
                if settings.data_dir.is_none() {
                    tracing::info!("no --data-dir: uploaded hubs last until this process exits");
                }
                HubStore::Local(LocalStore::open(settings.data_dir.as_deref())?)
            }
        });
        let tenants = Tenants::new(
            TenantDefaults {
                hub_limits: settings.hub_limits.clone(),
                max_messages_per_second: settings.connection.rate_limit(),
                max_component_bytes: settings.admin.max_component_bytes,
                storage: settings.admin.storage,
            },
            settings.tenants.clone(),
        )?;
        let hubs = Arc::new(Hubs::default());
        let table = tenants.current();
        let mut files = HashMap::new();
        for hub in &settings.hubs {
            let key = HubKey::new(&hub.tenant, &hub.hub)?;
            let started = std::time::Instant::now();
            let version = runtime
                .load_file(key.clone(), &hub.path, &table.get(&hub.tenant).hub_limits)
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
        let cluster = Cluster::start(
            &settings.cluster_prefix,
            settings.backplane.heartbeat_interval,
            PeerUrls::new(settings.backplane.peer_urls.clone()),
            backplane,
        );
        let lifetime = HubLifetimeManager::start(cluster.clone(), settings.backplane.group_timeout);
        let deployer = Deployer::new(
            Arc::new(runtime),
            hubs.clone(),
            store.clone(),
            tenants.clone(),
            cluster.clone(),
            lifetime.clone(),
            DeploySettings {
                files,
                uploads_in_progress: settings.admin.max_uploads_in_progress,
                concurrent_compiles: settings.admin.max_concurrent_compiles,
                counters: limit_counters.clone(),
                vars,
                secrets_key,
                var_limits: VarLimits {
                    max_per_tenant: settings.admin.max_vars_per_tenant,
                    max_bytes: settings.admin.max_var_bytes,
                },
            },
        );
        let tokens = Tokens::new(settings.connection.max_pending_negotiations);
        let connection_counts = ConnectionCounts::new(settings.connection.max_connections);
        Ok(Arc::new(Self {
            operator_keys: settings
                .admin
                .operator_keys
                .iter()
                .map(|k| key_digest(k))
                .collect(),
            settings,
            hubs,
            tenants,
            store,
            deployer,
            cluster,
            lifetime,
            tokens,
            connection_counts,
            call_slots: CallSlots::default(),
            limit_counters,
            api_rates: TenantRates::default(),
            tasks: TaskTracker::new(),
            forwarder: forwarder()?,
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            hub_state,
            timers,
        }))
    }
}

/// The HTTP client that passes requests on to other nodes. No overall
/// timeout: a passed-on poll waits up to the poll timeout and an event
/// stream lasts as long as its connection.
fn forwarder() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .context("cannot build the forwarding HTTP client")
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
