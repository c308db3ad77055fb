//! Two compilers. A large component (Python and JavaScript hubs are 12–18
//! MB) is served first with code from wasmtime's baseline compiler, Winch —
//! about 4× faster to compile than Cranelift (0.9 s against 3.9 s for the
//! Python chat on the 2-core machine), and slower to run — while Cranelift
//! compiles it again on a thread of its own. Its code then takes over for
//! every new instance and goes into the cache (which only ever holds
//! Cranelift's code, so a restart serves optimized code at once). Calls in
//! flight finish on the code they started with; idle instances of the
//! baseline code are dropped rather than reused.
//!
//! Both engines run the same checks (the component is validated by either
//! compile) and the same limits: epochs tick for both.

use super::CallState;
use super::cache::ArtifactCache;
use super::worlds::Pre;
use crate::names::HubKey;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, Strategy};

/// A version's code: the baseline compiler's until the optimizing
/// compiler's replaces it. `generation` counts the replacements, so that
/// instances of older code are not reused.
pub(super) struct Tiered {
    pre: ArcSwap<Pre>,
    generation: AtomicU64,
    /// Whether `pre` holds the optimizing compiler's code.
    optimized: AtomicBool,
}

impl Tiered {
    /// `pre`, compiled by the optimizing compiler if `optimized`.
    pub fn new(pre: Pre, optimized: bool) -> Arc<Self> {
        Arc::new(Self {
            pre: ArcSwap::from_pointee(pre),
            generation: AtomicU64::new(0),
            optimized: AtomicBool::new(optimized),
        })
    }

    pub fn optimized(&self) -> bool {
        self.optimized.load(Ordering::Acquire)
    }

    /// The code to instantiate now, and its generation.
    pub fn current(&self) -> (Arc<Pre>, u64) {
        // Generation first: an instance is never taken for newer than it is.
        let generation = self.generation();
        (self.pre.load_full(), generation)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn replace(&self, pre: Pre) {
        self.pre.store(Arc::new(pre));
        self.generation.fetch_add(1, Ordering::Release);
        self.optimized.store(true, Ordering::Release);
    }
}

/// The baseline compiler's engine, and the host imports linked for it.
pub(super) struct Baseline {
    pub engine: Engine,
    pub linker: Linker<CallState>,
    /// Components from this many bytes on get the baseline compile first.
    pub above: usize,
}

impl Baseline {
    pub fn new(above: usize) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.strategy(Strategy::Winch);
        config.epoch_interruption(true);
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("wasmtime baseline engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        super::worlds::add_to_linker(&mut linker)
            .map_err(|e| anyhow::anyhow!("linking host imports: {e}"))?;
        super::spawn_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker,
            above,
        })
    }
}

/// What the optimizing compile of one version needs.
pub(super) struct Optimize {
    pub key: HubKey,
    pub bytes: Vec<u8>,
    pub tiered: Weak<Tiered>,
    pub engine: Engine,
    pub linker: Linker<CallState>,
    pub cache: Option<Arc<ArtifactCache>>,
    /// Held while compiling: one optimizing compile at a time per node.
    pub turn: Arc<Mutex<()>>,
}

impl Optimize {
    /// Compile on a thread of its own, then hand the code over, unless the
    /// version is gone by then.
    pub fn start(self) {
        let spawned = std::thread::Builder::new()
            .name("hubhost-optimize".into())
            .spawn(move || self.run());
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start an optimizing compile; the hub keeps its baseline code");
        }
    }

    fn run(self) {
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        if self.tiered.strong_count() == 0 {
            return;
        }
        let started = Instant::now();
        let component = super::cache::compile(self.cache.as_deref(), &self.engine, &self.bytes);
        let pre = component.map_err(|e| format!("{e:#}")).and_then(|c| {
            super::prepare(&self.engine, &self.linker, &c).map_err(|e| e.to_string())
        });
        match (pre, self.tiered.upgrade()) {
            (Ok(pre), Some(tiered)) => {
                tiered.replace(pre);
                tracing::info!(
                    hub = %self.key,
                    ms = started.elapsed().as_millis() as u64,
                    "optimized code in service"
                );
            }
            (Ok(_), None) => {}
            (Err(error), _) => {
                tracing::warn!(hub = %self.key, %error, "optimizing compile failed; the hub keeps its baseline code");
            }
        }
    }
}
