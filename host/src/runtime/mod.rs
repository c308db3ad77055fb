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
//! are in `version`. Nodes that share a secrets key compile an upload once
//! and pass the code through the store, checked by its MAC (`shared`); how
//! a component gets its code is in `load`.

mod cache;
mod error;
mod host;
mod host_streams;
mod host_v2;
mod idle;
mod limits;
mod load;
mod shared;
mod tiers;
mod version;
mod wasi;
mod worlds;

pub use error::{CallError, LoadError};
pub use host::{CallState, json_array};
pub use host_streams::stream_handle;
pub use shared::{Refused, SharedCode};
pub use tiers::CodeOrigin;
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
use tokio::sync::mpsc;
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
    /// The key of compiled code shared with the other nodes (see `shared`);
    /// none: this node neither gives nor takes compiled code.
    code_key: Option<ring::hmac::Key>,
    /// How long a node that runs another node's baseline code waits for
    /// that node's optimized code before compiling its own.
    wait_for_optimized: Duration,
    /// Optimized code this node compiled for code it shared: sent here by
    /// the background compile, taken once by the deployer.
    optimized_code: (
        mpsc::UnboundedSender<OptimizedCode>,
        Mutex<Option<mpsc::UnboundedReceiver<OptimizedCode>>>,
    ),
}

/// A hub's optimized code, sealed for the other nodes.
pub type OptimizedCode = (HubKey, SharedCode);

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
            code_key: None,
            wait_for_optimized: Duration::from_secs(60),
            optimized_code: {
                let (sender, receiver) = mpsc::unbounded_channel();
                (sender, Mutex::new(Some(receiver)))
            },
        })
    }

    /// Share compiled code with the other nodes under `key` (derived from
    /// the secrets key): seal it after compiling an upload, and load what
    /// another node sealed instead of compiling (see `shared`).
    pub fn with_code_key(mut self, key: ring::hmac::Key) -> Self {
        self.code_key = Some(key);
        self
    }

    /// Wait `wait` for another node's optimized code, when running that
    /// node's baseline code, before compiling it here (60 s by default).
    pub fn waiting_for_optimized_code(mut self, wait: Duration) -> Self {
        self.wait_for_optimized = wait;
        self
    }

    /// Whether this node shares compiled code.
    pub fn shares_code(&self) -> bool {
        self.code_key.is_some()
    }

    /// The optimized code this node compiles in the background for
    /// components whose baseline code it shared, sealed for the other
    /// nodes, as it comes (see `tiers`); `None` after the first call.
    pub fn optimized_code(&self) -> Option<mpsc::UnboundedReceiver<OptimizedCode>> {
        self.optimized_code
            .1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
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
