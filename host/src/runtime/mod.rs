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
mod shared;
mod tiers;
mod version;
mod wasi;
mod worlds;

pub use error::{CallError, LoadError};
pub use host::{CallState, json_array};
pub use host_streams::stream_handle;
pub use shared::{Refused, SharedCode};
pub use version::{CallerInfo, CodeOrigin, HubVersion, bounded};
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
    /// The key of compiled code shared with the other nodes (see `shared`);
    /// none: this node neither gives nor takes compiled code.
    code_key: Option<ring::hmac::Key>,
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
            code_key: None,
        })
    }

    /// Share compiled code with the other nodes under `key` (derived from
    /// the secrets key): seal it after compiling an upload, and load what
    /// another node sealed instead of compiling (see `shared`).
    pub fn with_code_key(mut self, key: ring::hmac::Key) -> Self {
        self.code_key = Some(key);
        self
    }

    /// Whether this node shares compiled code.
    pub fn shares_code(&self) -> bool {
        self.code_key.is_some()
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
        Ok(self.compile(key, bytes, limits, false)?.0)
    }

    /// As [`Runtime::load`], and the code it compiled, sealed for the other
    /// nodes when this node shares code (`None` when it does not, or when
    /// sealing failed: the others then compile).
    pub fn load_to_share(
        &self,
        key: HubKey,
        bytes: &[u8],
        limits: &HubLimits,
    ) -> Result<(HubVersion, Option<SharedCode>), LoadError> {
        self.compile(key, bytes, limits, self.shares_code())
    }

    /// As [`Runtime::load`], with the code another node compiled (see
    /// `shared`) when it checks out; else compiled here, and why logged.
    pub fn load_shared(
        &self,
        key: HubKey,
        bytes: &[u8],
        limits: &HubLimits,
        shared: &SharedCode,
    ) -> Result<HubVersion, LoadError> {
        // Optimized code of its own beats another node's baseline code.
        if self.is_cached(bytes) {
            return self.load(key, bytes, limits);
        }
        match self.open_shared(bytes, shared) {
            Ok((component, tier)) => {
                let version = match (tier, &self.baseline) {
                    (shared::Tier::Baseline, Some(baseline)) => {
                        let code = prepare(&baseline.engine, &baseline.linker, &component)?;
                        let tiered = tiers::Tiered::new(code, false);
                        self.optimize_later(&key, bytes, &tiered);
                        self.version(key, tiered, limits, CodeOrigin::Shared)
                    }
                    _ => {
                        let code = prepare(&self.engine, &self.linker, &component)?;
                        self.version(
                            key,
                            tiers::Tiered::new(code, true),
                            limits,
                            CodeOrigin::Shared,
                        )
                    }
                };
                Ok(version)
            }
            Err(reason) => {
                tracing::warn!(hub = %key, %reason, "not loading the compiled code another node shared; compiling");
                self.load(key, bytes, limits)
            }
        }
    }

    fn open_shared(
        &self,
        bytes: &[u8],
        shared: &SharedCode,
    ) -> Result<(Component, shared::Tier), Refused> {
        let key = self.code_key.as_ref().ok_or(Refused::NoKey)?;
        let tier = shared::tier_of(shared)?;
        let engine = match tier {
            shared::Tier::Optimized => &self.engine,
            shared::Tier::Baseline => {
                &self
                    .baseline
                    .as_ref()
                    .ok_or(Refused::NoSuchCompiler("baseline"))?
                    .engine
            }
        };
        let component = shared::open(key, engine, &shared::sha256(bytes), shared)?;
        Ok((component, tier))
    }

    fn compile(
        &self,
        key: HubKey,
        bytes: &[u8],
        limits: &HubLimits,
        share: bool,
    ) -> Result<(HubVersion, Option<SharedCode>), LoadError> {
        let cached = self.is_cached(bytes);
        if let Some(baseline) = self
            .baseline
            .as_ref()
            .filter(|b| !cached && bytes.len() >= b.above)
        {
            let component = Component::new(&baseline.engine, bytes)
                .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
            let baseline_code = prepare(&baseline.engine, &baseline.linker, &component)?;
            let tiered = tiers::Tiered::new(baseline_code, false);
            let sealed = self.seal(
                share,
                &key,
                &baseline.engine,
                shared::Tier::Baseline,
                bytes,
                &component,
            );
            self.optimize_later(&key, bytes, &tiered);
            return Ok((
                self.version(key, tiered, limits, CodeOrigin::Compiled),
                sealed,
            ));
        }
        let component = cache::compile(self.cache.as_deref(), &self.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let pre = prepare(&self.engine, &self.linker, &component)?;
        let sealed = self.seal(
            share,
            &key,
            &self.engine,
            shared::Tier::Optimized,
            bytes,
            &component,
        );
        Ok((
            self.version(
                key,
                tiers::Tiered::new(pre, true),
                limits,
                CodeOrigin::Compiled,
            ),
            sealed,
        ))
    }

    /// Whether the cache has this engine's code for `bytes`.
    fn is_cached(&self, bytes: &[u8]) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| cache.contains(&self.engine, bytes))
    }

    /// `component`'s code sealed for the other nodes, if `share`.
    fn seal(
        &self,
        share: bool,
        hub: &HubKey,
        engine: &Engine,
        tier: shared::Tier,
        bytes: &[u8],
        component: &Component,
    ) -> Option<SharedCode> {
        let key = self.code_key.as_ref().filter(|_| share)?;
        shared::seal(key, engine, tier, &shared::sha256(bytes), component)
            .inspect_err(|error| {
                tracing::warn!(%hub, error = format!("{error:#}"), "cannot seal the compiled code; the other nodes compile it");
            })
            .ok()
    }

    /// Compile `bytes` with the optimizing compiler in the background, for
    /// `tiered` to run from then on (see `tiers`).
    fn optimize_later(&self, key: &HubKey, bytes: &[u8], tiered: &Arc<tiers::Tiered>) {
        let Some(baseline) = &self.baseline else {
            return;
        };
        tiers::Optimize {
            key: key.clone(),
            bytes: bytes.to_vec(),
            tiered: Arc::downgrade(tiered),
            engine: self.engine.clone(),
            compiler: baseline.background.clone(),
            linker: self.linker.clone(),
            cache: self.cache.clone(),
            turn: self.optimizing.clone(),
        }
        .start();
    }

    fn version(
        &self,
        key: HubKey,
        pre: Arc<tiers::Tiered>,
        limits: &HubLimits,
        origin: CodeOrigin,
    ) -> HubVersion {
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
            origin,
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
