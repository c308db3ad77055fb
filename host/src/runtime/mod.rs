//! Running hub components: one wasmtime [`Engine`], the `bindgen!` of each
//! version of the `hub-component` world (`worlds.rs`; 0.1.0 and 0.2.0 load
//! side by side), and [`HubVersion`]s ready to call.
//!
//! Calls run on warm instances: each [`HubVersion`] keeps a few idle
//! instances (each in its own [`Store`](wasmtime::Store)) and reuses them, because a fresh
//! instance per call costs ~50 µs of page faults for a Rust hub (over a ms
//! for Python and JS) against ~2 µs for a call on a warm one (see `make
//! bench`). An instance that traps or hits a limit is dropped, never
//! reused. So a hub may find globals left
//! by an earlier call on the same instance, but must not rely on them: which
//! instance serves a call, and how long it lives, is the host's choice, and
//! every node has its own. Connection state belongs in the host (groups,
//! users, items), and what a hub remembers in its state ([`crate::kv`]).
//! Each call has a memory limit and a deadline (epoch interruption). A
//! large component runs on the baseline compiler's code until the
//! optimizing compiler's is ready (`tiers`); a version's instances and calls
//! are in `version`.

mod cache;
mod error;
mod host;
mod host_streams;
mod host_v2;
mod idle;
mod limits;
mod tiers;
mod version;
mod wasi;
mod worlds;

pub use error::{CallError, LoadError};
pub use host::{CallState, json_array};
pub use host_streams::stream_handle;
pub use version::{CallerInfo, HubVersion, bounded};
pub use worlds::{HubError, World};

use crate::kv::KvBackend;
use crate::kv::memory::MemoryKv;
use crate::names::HubKey;
use crate::quotas::LimitCounters;
use crate::timers::TimerBackend;
use crate::timers::memory::MemoryTimers;
use crate::vars::Vars;
pub use limits::HubLimits;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

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

/// The main engine's settings: Cranelift, deadlines by epochs.
pub(super) fn engine_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config
}

impl Runtime {
    pub fn new() -> anyhow::Result<Self> {
        let engine =
            Engine::new(&engine_config()).map_err(|e| anyhow::anyhow!("wasmtime engine: {e}"))?;
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
                compiler: baseline.background.clone(),
                linker: self.linker.clone(),
                cache: self.cache.clone(),
                turn: self.optimizing.clone(),
            }
            .start();
            return Ok(self.version(key, tiered, limits));
        }
        let component = cache::compile(self.cache.as_deref(), &self.engine, bytes)
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
