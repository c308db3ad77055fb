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
//!
//! The optimizing compile in the background gives way to everything else:
//! it runs on one thread (an engine of the main engine's settings without
//! parallel compilation, whose code the main engine then loads) at the
//! lowest priority. So the node's calls, and on a shared machine other
//! nodes' baseline compiles, keep the cores; the optimized code comes a few
//! seconds later instead.

use super::CallState;
use super::cache::ArtifactCache;
use super::worlds::Pre;
use crate::names::HubKey;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;
use wasmtime::component::Linker;
use wasmtime::{Engine, Strategy};

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
    /// The optimizing compiler for the background: the main engine's
    /// settings, one thread.
    pub background: Engine,
}

impl Baseline {
    pub fn new(above: usize) -> anyhow::Result<Self> {
        let background =
            background_engine().map_err(|e| anyhow::anyhow!("wasmtime background engine: {e}"))?;
        // The main engine's settings, with the baseline compiler.
        let mut config = super::engine_config();
        config.strategy(Strategy::Winch);
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
            background,
        })
    }
}

/// The engine of the optimizing compile in the background: the main
/// engine's settings (so the main engine loads its code), on one thread.
fn background_engine() -> wasmtime::Result<Engine> {
    let mut config = super::engine_config();
    config.parallel_compilation(false);
    Engine::new(&config)
}

/// Run the calling thread at the lowest priority (nice 19), where the
/// system allows it: the optimizing compile is work that can wait.
#[allow(unsafe_code)]
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `setpriority` takes three integers and touches no memory
        // of this process. On Linux, `PRIO_PROCESS` with id 0 names the
        // calling thread alone (threads have their own nice values), so no
        // other thread of the node is affected. A failure only leaves the
        // priority as it was.
        let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0;
        if failed {
            tracing::debug!("cannot lower the optimizing compile's priority");
        }
    }
}

/// What the optimizing compile of one version needs.
pub(super) struct Optimize {
    pub key: HubKey,
    pub bytes: Vec<u8>,
    pub tiered: Weak<Tiered>,
    /// The engine the code is for.
    pub engine: Engine,
    /// The engine that compiles it ([`Baseline::background`]).
    pub compiler: Engine,
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
        lowest_priority();
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        if self.tiered.strong_count() == 0 {
            return;
        }
        let started = Instant::now();
        let cache = self.cache.as_deref();
        let component = match self.compiler.precompile_component(&self.bytes) {
            Ok(artifact) => super::cache::adopt(cache, &self.engine, &self.bytes, &artifact),
            Err(error) => Err(error),
        };
        let component = component.or_else(|error| {
            // Not expected (both engines have the main settings); the
            // main engine then compiles it as any other component.
            tracing::warn!(hub = %self.key, error = format!("{error:#}"), "background compile failed; compiling on the main engine");
            super::cache::compile(cache, &self.engine, &self.bytes)
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The background engine's code must load on the main engine, or every
    /// optimizing compile would fall back to the main engine's threads.
    #[test]
    fn the_background_engines_code_loads_on_the_main_engine() -> wasmtime::Result<()> {
        // An empty component: the magic, version 0x0d, layer 1.
        const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";
        let background = background_engine()?;
        let main = Engine::new(&super::super::engine_config())?;
        let artifact = background.precompile_component(EMPTY)?;
        super::super::cache::adopt(None, &main, EMPTY, &artifact)?;
        Ok(())
    }
}
