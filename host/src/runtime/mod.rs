//! Running hub components: one wasmtime [`Engine`], the `bindgen!` of each
//! version of the `hub-component` world (`worlds.rs`; 0.1.0 and 0.2.0 load
//! side by side), and [`HubVersion`]s ready to call.
//!
//! Calls run on warm instances: each [`HubVersion`] keeps a few idle
//! instances (each in its own [`Store`]) and reuses them, because a fresh
//! instance per call costs ~50 µs of page faults for a Rust hub (over a ms
//! for Python and JS) against ~2 µs for a call on a warm one (see `make
//! bench`). An instance that traps or hits a limit is dropped, never
//! reused. So a hub may find globals left
//! by an earlier call on the same instance, but must not rely on them: which
//! instance serves a call, and how long it lives, is the host's choice, and
//! every node has its own. Connection state belongs in the host (groups,
//! users, items), and what a hub remembers in its state ([`crate::kv`]).
//! Each call has a memory limit and a deadline (epoch interruption).

mod cache;
mod error;
mod host;
mod host_v2;
mod idle;
mod limits;
mod tiers;
mod wasi;
mod worlds;

pub use error::{CallError, LoadError};
pub use host::{CallState, json_array};
pub use worlds::{HubError, World};

use crate::items::Items;
use crate::kv::KvBackend;
use crate::kv::memory::MemoryKv;
use crate::lifetime::HubLifetimeManager;
use crate::names::HubKey;
use crate::quotas::LimitCounters;
use crate::timers::TimerBackend;
use crate::timers::memory::MemoryTimers;
use crate::vars::Vars;
pub use limits::HubLimits;
use limits::{LimitHit, Limiter};
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store, Trap};
use worlds::Caller as WitCaller;

/// How often the epoch advances; a call's deadline is a whole number of ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Interface names a component may import besides our own world. Guest
/// toolchains link these in (Rust's std, for one) but a hub never needs them,
/// so they are satisfied by functions that trap when called — except
/// `wasi:random`, which is real (see [`wasi`]).
const STUBBED_IMPORT_PREFIXES: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];
const OWN_IMPORT_PREFIX: &str = "hubhost:hub/";

/// The engine and what every hub shares.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<Arc<cache::ArtifactCache>>,
    /// The baseline compiler, for large components (see `tiers`).
    baseline: Option<tiers::Baseline>,
    /// One optimizing compile at a time, in the background.
    optimizing: Arc<Mutex<()>>,
    idle: Arc<idle::IdleMemory>,
    counters: LimitCounters,
    /// Where hubs keep their state (the `kv` import).
    state: Arc<dyn KvBackend>,
    /// Tenant variables, as hubs read them (the `config` import).
    vars: Arc<Vars>,
    /// Where hubs' timers wait (the `timers` import).
    timers: Arc<dyn TimerBackend>,
}

impl Runtime {
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        worlds::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking host imports: {e}"))?;
        spawn_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker,
            cache: None,
            baseline: None,
            optimizing: Arc::default(),
            idle: Arc::default(),
            counters: LimitCounters::default(),
            state: Arc::new(MemoryKv::new()),
            vars: Arc::default(),
            timers: Arc::new(MemoryTimers::new()),
        })
    }

    /// Keep hubs' timers in `timers` (memory on this node by default).
    pub fn with_timers(mut self, timers: Arc<dyn TimerBackend>) -> Self {
        self.timers = timers;
        self
    }

    /// Let hubs read tenant variables from `vars` (this node's copy).
    pub fn with_vars(mut self, vars: Arc<Vars>) -> Self {
        self.vars = vars;
        self
    }

    /// Keep hub state in `state` (memory on this node by default).
    pub fn with_state(mut self, state: Arc<dyn KvBackend>) -> Self {
        self.state = state;
        self
    }

    /// Where hubs keep their state.
    pub fn state(&self) -> &Arc<dyn KvBackend> {
        &self.state
    }

    /// Count the limits hub calls hit in `counters`.
    pub fn counting(mut self, counters: LimitCounters) -> Self {
        self.counters = counters;
        self
    }

    /// Keep compiled components in `dir` (which only hubhost may write) and
    /// load them from there instead of compiling again.
    pub fn with_cache(mut self, dir: &Path) -> anyhow::Result<Self> {
        let cache = cache::ArtifactCache::new(dir)
            .map_err(|e| anyhow::anyhow!("cannot use cache directory {}: {e}", dir.display()))?;
        self.cache = Some(Arc::new(cache));
        Ok(self)
    }

    /// Serve components of `above` bytes or more first with the baseline
    /// compiler's code, while the optimizing compiler works (see `tiers`);
    /// 0: never.
    pub fn with_baseline(mut self, above: usize) -> anyhow::Result<Self> {
        self.baseline = match above {
            0 => None,
            above => Some(tiers::Baseline::new(above)?),
        };
        Ok(self)
    }

    /// Drop the cached compiled code of the component whose SHA-256 is
    /// `sha256` (hex), if there is a cache.
    pub fn forget(&self, sha256: &str) {
        if let Some(cache) = &self.cache {
            cache.forget(&self.engine, sha256);
        }
    }

    /// Compile and check a component for `key`, to run under `limits`. A
    /// large one not in the cache is served with baseline code until its
    /// optimized code is ready (see `tiers`).
    pub fn load(
        &self,
        key: HubKey,
        bytes: &[u8],
        limits: &HubLimits,
    ) -> Result<HubVersion, LoadError> {
        let cached = self
            .cache
            .as_ref()
            .is_some_and(|cache| cache.contains(&self.engine, bytes));
        if let Some(baseline) = self
            .baseline
            .as_ref()
            .filter(|b| !cached && bytes.len() >= b.above)
        {
            let component = Component::new(&baseline.engine, bytes)
                .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
            let baseline_code = prepare(&baseline.engine, &baseline.linker, &component)?;
            let tiered = tiers::Tiered::new(baseline_code, false);
            tiers::Optimize {
                key: key.clone(),
                bytes: bytes.to_vec(),
                tiered: Arc::downgrade(&tiered),
                engine: self.engine.clone(),
                linker: self.linker.clone(),
                cache: self.cache.clone(),
                turn: self.optimizing.clone(),
            }
            .start();
            return Ok(self.version(key, tiered, limits));
        }
        let component = match &self.cache {
            Some(cache) => cache.compile(&self.engine, bytes),
            None => Component::new(&self.engine, bytes),
        }
        .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let pre = prepare(&self.engine, &self.linker, &component)?;
        Ok(self.version(key, tiers::Tiered::new(pre, true), limits))
    }

    fn version(&self, key: HubKey, pre: Arc<tiers::Tiered>, limits: &HubLimits) -> HubVersion {
        let world = pre.current().0.world();
        HubVersion {
            key,
            world,
            pre,
            state: self.state.clone(),
            vars: self.vars.clone(),
            timers: self.timers.clone(),
            limits: limits.clone(),
            idle: Mutex::default(),
            idle_memory: self.idle.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Read, compile and check a component file for `key`, to run under `limits`.
    pub fn load_file(
        &self,
        key: HubKey,
        path: &Path,
        limits: &HubLimits,
    ) -> Result<HubVersion, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load(key, &bytes, limits)
    }
}

/// Check a compiled component (its world, its imports) and make it ready to
/// instantiate with `linker`'s host imports.
fn prepare(
    engine: &Engine,
    linker: &Linker<CallState>,
    component: &Component,
) -> Result<worlds::Pre, LoadError> {
    let world = worlds::World::of(component).ok_or_else(|| {
        LoadError::WrongWorld(
            "it exports no hubhost:hub/hub interface of version 0.1.0 or 0.2.0".into(),
        )
    })?;
    let mut linker = linker.clone();
    for (name, _) in component.component_type().imports(engine) {
        if name.starts_with(OWN_IMPORT_PREFIX) {
            continue;
        }
        if !STUBBED_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p)) {
            return Err(LoadError::ForbiddenImport(name.to_owned()));
        }
        let defined = wasi::add_random(&mut linker, name)
            .and_then(|done| Ok(done || wasi::add_clocks(&mut linker, name)?))
            .and_then(|done| Ok(done || wasi::add_output(&mut linker, name)?));
        defined.map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
    }
    linker
        .define_unknown_imports_as_traps(component)
        .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
    worlds::Pre::new(pre, world).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))
}

/// Advance the engine's epoch until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("hubhost-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(error) = spawned {
        // Without the ticker deadlines never fire; calls still run.
        tracing::error!(%error, "cannot start the epoch thread; hub call deadlines are off");
    }
}

/// Who is calling, as the hub sees it.
#[derive(Debug, Clone)]
pub struct CallerInfo {
    pub connection_id: Arc<str>,
    pub user_id: Option<Arc<str>>,
    pub claims: Vec<(String, String)>,
    /// The connection's items, kept by the connection across versions.
    pub items: Arc<Items>,
}

impl CallerInfo {
    fn to_wit(&self) -> WitCaller {
        WitCaller {
            connection_id: self.connection_id.to_string(),
            user_id: self.user_id.as_deref().map(str::to_owned),
            claims: self.claims.clone(),
        }
    }
}

/// Idle instances kept per hub version.
const MAX_IDLE_INSTANCES: usize = 8;

/// An instance with its store.
struct Warm {
    store: Store<CallState>,
    hub: worlds::Instance,
    /// Of the code it was made from (see `tiers`).
    generation: u64,
}

/// An idle instance and the part of its tenant's idle budget it holds.
struct Idle {
    warm: Warm,
    _kept: idle::Kept,
}

/// One compiled, checked version of a hub, ready to instantiate.
pub struct HubVersion {
    key: HubKey,
    world: World,
    /// Its code (see `tiers`).
    pre: Arc<tiers::Tiered>,
    state: Arc<dyn KvBackend>,
    vars: Arc<Vars>,
    timers: Arc<dyn TimerBackend>,
    limits: HubLimits,
    idle: Mutex<Vec<Idle>>,
    idle_memory: Arc<idle::IdleMemory>,
    counters: LimitCounters,
}

impl HubVersion {
    pub fn key(&self) -> &HubKey {
        &self.key
    }

    /// The world the component was built for.
    pub fn world(&self) -> World {
        self.world
    }

    /// Whether new instances run the optimizing compiler's code (not the
    /// baseline's, which a large component gets first: see `tiers`).
    pub fn optimized(&self) -> bool {
        self.pre.optimized()
    }

    fn instantiate(&self) -> Result<Warm, CallError> {
        let (pre, generation) = self.pre.current();
        let limiter = Limiter::new(&self.limits);
        let mut store = Store::new(
            pre.engine(),
            CallState::new(
                self.key.clone(),
                limiter,
                self.counters.clone(),
                self.state.clone(),
                self.vars.clone(),
                self.timers.clone(),
            ),
        );
        store.limiter(|state| &mut state.limiter);
        // With epochs on, a new store's deadline is already due: set one
        // before anything runs, instantiation included.
        store.set_epoch_deadline(self.deadline_ticks());
        match pre.instantiate(&mut store) {
            Ok(hub) => Ok(Warm {
                store,
                hub,
                generation,
            }),
            Err(error) => Err(self.classify(&error, store.data_mut().limiter.take_hit())),
        }
    }

    fn deadline_ticks(&self) -> u64 {
        let ticks = self
            .limits
            .call_timeout
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis())
            + 1;
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The vector is only pushed to and popped from; poisoning is harmless.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn call<R>(
        &self,
        what: &str,
        lifetime: &Arc<HubLifetimeManager>,
        caller: &CallerInfo,
        run: impl FnOnce(&mut Store<CallState>, &worlds::Instance, &WitCaller) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let reused = if self.limits.reuse_instances {
            // Of older code (a version whose optimized code took over):
            // dropped, not reused.
            self.idle()
                .pop()
                .map(|idle| idle.warm)
                .filter(|warm| warm.generation == self.pre.generation())
        } else {
            None
        };
        let mut warm = match reused {
            Some(warm) => warm,
            None => self.instantiate().map_err(|e| self.failed(what, e))?,
        };
        warm.store
            .data_mut()
            .begin(lifetime, &caller.connection_id, &caller.items, &self.limits);
        warm.store.set_epoch_deadline(self.deadline_ticks());
        let result = run(&mut warm.store, &warm.hub, &caller.to_wit());
        let hit = warm.store.data_mut().end();
        match result {
            Ok(value) => {
                // Only an instance that finished cleanly is reused.
                if self.limits.reuse_instances {
                    self.keep(warm);
                }
                Ok(value)
            }
            Err(error) => Err(self.failed(what, self.classify(&error, hit))),
        }
    }

    /// `error` ended a call of `what` (a method, `on-connected`…): counted
    /// by kind, and kept among the tenant's recent errors with its detail.
    fn failed(&self, what: &str, error: CallError) -> CallError {
        let (tenant, hub) = (self.key.tenant(), self.key.hub());
        crate::monitoring::hub_error(tenant, hub, error.kind());
        self.counters
            .hub_failed(tenant, hub, what, &error.to_string());
        error
    }

    /// Keep `warm` for the next call if there is room, in this version's
    /// idle list and in its tenant's idle memory budget.
    fn keep(&self, warm: Warm) {
        let mut idle = self.idle();
        if idle.len() >= MAX_IDLE_INSTANCES || warm.generation != self.pre.generation() {
            return;
        }
        let bytes = warm.store.data().limiter.memory_used();
        let tenant = self.key.tenant();
        match self
            .idle_memory
            .reserve(tenant, bytes, self.limits.max_idle_memory_bytes)
        {
            Some(kept) => idle.push(Idle { warm, _kept: kept }),
            None => {
                self.counters
                    .hit(tenant, "hub_limits.max_idle_memory_bytes");
                tracing::debug!(
                    tenant,
                    hub = self.key.hub(),
                    bytes,
                    "instance dropped: its tenant's idle instances are at hub_limits.max_idle_memory_bytes"
                );
            }
        }
    }

    /// Name the limit behind a failed call, if one was hit.
    fn classify(&self, error: &wasmtime::Error, hit: Option<LimitHit>) -> CallError {
        match (hit, error.downcast_ref::<Trap>()) {
            (Some(LimitHit::Memory), _) => CallError::MemoryLimit(self.limits.memory_bytes),
            (Some(LimitHit::Table), _) => CallError::TableLimit(self.limits.max_table_elements),
            (None, Some(Trap::Interrupt)) => CallError::Timeout(self.limits.call_timeout),
            (None, Some(Trap::StackOverflow)) => CallError::StackOverflow,
            _ => CallError::Trap(format!("{error:#}")),
        }
    }

    /// Call hub method `method` with `args` (a JSON array). The outer error is
    /// the host's (trap, limit); the inner one the hub's.
    pub fn invoke(
        &self,
        lifetime: &Arc<HubLifetimeManager>,
        caller: &CallerInfo,
        method: &str,
        args: &str,
    ) -> Result<Result<Box<RawValue>, HubError>, CallError> {
        let result = self.call(method, lifetime, caller, |store, hub, caller| {
            hub.invoke(store, caller, method, args)
        })?;
        let json = match result {
            Ok(json) => json,
            Err(error) => return Ok(Err(bounded(error, self.limits.max_result_bytes))),
        };
        if json.len() > self.limits.max_result_bytes {
            let error = CallError::ResultTooLarge {
                size: json.len(),
                limit: self.limits.max_result_bytes,
            };
            return Err(self.failed(method, error));
        }
        let value = crate::protocol::json::checked_value(json)
            .map_err(|e| self.failed(method, CallError::BadResult(e.to_string())))?;
        Ok(Ok(value))
    }

    /// A client connected; an inner error refuses it.
    pub fn on_connected(
        &self,
        lifetime: &Arc<HubLifetimeManager>,
        caller: &CallerInfo,
    ) -> Result<Result<(), HubError>, CallError> {
        let result = self.call("on-connected", lifetime, caller, |store, hub, caller| {
            hub.on_connected(store, caller)
        })?;
        Ok(result.map_err(|error| bounded(error, self.limits.max_result_bytes)))
    }

    /// A client left.
    pub fn on_disconnected(
        &self,
        lifetime: &Arc<HubLifetimeManager>,
        caller: &CallerInfo,
        error: Option<&str>,
    ) -> Result<(), CallError> {
        self.call("on-disconnected", lifetime, caller, |store, hub, caller| {
            hub.on_disconnected(store, caller, error)
        })
    }
}

/// A hub's error with its text cut to `limit` bytes (at a character
/// boundary, marked with `…`): the text reaches the client and the log, and
/// is held like a result.
pub fn bounded(error: HubError, limit: usize) -> HubError {
    let cut = |text: String| {
        if text.len() <= limit {
            return text;
        }
        let end = text.floor_char_boundary(limit.saturating_sub('…'.len_utf8()));
        format!("{}…", &text[..end])
    };
    match error {
        HubError::UnknownMethod(text) => HubError::UnknownMethod(cut(text)),
        HubError::BadArguments(text) => HubError::BadArguments(cut(text)),
        HubError::Unauthorized(text) => HubError::Unauthorized(cut(text)),
        HubError::Failed(text) => HubError::Failed(cut(text)),
    }
}
