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
//! In a cluster whose nodes share compiled code (`shared`), the node that
//! took the upload is the only one that runs the optimizing compile: the
//! others wait for its code (`Optimize::wait_for_others`), and compile their
//! own only if it does not come.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use wasmtime::component::Linker;
use wasmtime::{Engine, Strategy};

/// Where a version's code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOrigin {
    /// This node compiled it (or loaded it from its own cache).
    Compiled,
    /// Another node compiled it and left it in the store (see `shared`).
    Shared,
}

/// A version's code: the baseline compiler's until the optimizing
/// compiler's replaces it (this node's, or another node's: whichever comes
/// first). `generation` counts the replacements, so that instances of older
/// code are not reused.
pub(super) struct Tiered {
    pre: ArcSwap<Pre>,
    generation: AtomicU64,
    /// Where the optimizing compiler's code came from, once `pre` holds it.
    optimized: Mutex<Option<CodeOrigin>>,
    /// Told when `optimized` is set.
    replaced: Condvar,
}

impl Tiered {
    /// `pre`, the optimizing compiler's code if `optimized` says from where.
    pub fn new(pre: Pre, optimized: Option<CodeOrigin>) -> Arc<Self> {
        Arc::new(Self {
            pre: ArcSwap::from_pointee(pre),
            generation: AtomicU64::new(0),
            optimized: Mutex::new(optimized),
            replaced: Condvar::new(),
        })
    }

    fn optimized_lock(&self) -> std::sync::MutexGuard<'_, Option<CodeOrigin>> {
        self.optimized.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the optimizing compiler's code came from; `None` while the
    /// baseline compiler's is served.
    pub fn optimized(&self) -> Option<CodeOrigin> {
        *self.optimized_lock()
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

    /// Serve the optimizing compiler's `pre` from `origin`, unless such
    /// code is served already (false: `pre` is dropped).
    pub fn replace(&self, pre: Pre, origin: CodeOrigin) -> bool {
        let mut optimized = self.optimized_lock();
        if optimized.is_some() {
            return false;
        }
        self.pre.store(Arc::new(pre));
        self.generation.fetch_add(1, Ordering::Release);
        *optimized = Some(origin);
        self.replaced.notify_all();
        true
    }

    /// Wait until optimized code is served, `timeout` at most; whether it is.
    fn wait_optimized(&self, timeout: Duration) -> bool {
        let optimized = self.optimized_lock();
        let (optimized, _) = self
            .replaced
            .wait_timeout_while(optimized, timeout, |o| o.is_none())
            .unwrap_or_else(|e| e.into_inner());
        optimized.is_some()
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
    /// Wait this long first for another node's optimized code (this
    /// node's baseline code came from that node, which compiles it anyway).
    pub wait_for_others: Option<Duration>,
    /// Seal the code for the other nodes and hand it here (this node
    /// compiled the baseline code the others run).
    pub publish: Option<Publish>,
}

/// Where a node's optimized code goes for the other nodes (see `shared`).
pub(super) struct Publish {
    pub key: ring::hmac::Key,
    pub sha256: String,
    pub to: tokio::sync::mpsc::UnboundedSender<super::OptimizedCode>,
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
        if let Some(wait) = self.wait_for_others {
            let deadline = Instant::now() + wait;
            loop {
                // A second at a time, holding the version only meanwhile:
                // one replaced or removed meanwhile is not kept alive.
                let Some(tiered) = self.tiered.upgrade() else {
                    return;
                };
                let left = deadline.saturating_duration_since(Instant::now());
                if tiered.wait_optimized(left.min(Duration::from_secs(1))) {
                    return;
                }
                if left.is_zero() {
                    break;
                }
            }
            tracing::info!(hub = %self.key, "no optimized code from another node in time; compiling it here");
        }
        lowest_priority();
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let gone_or_done = self
            .tiered
            .upgrade()
            .is_none_or(|tiered| tiered.optimized().is_some());
        if gone_or_done {
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
        let component = component.map_err(|e| format!("{e:#}"));
        let pre = component
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|c| super::prepare(&self.engine, &self.linker, c).map_err(|e| e.to_string()));
        match (pre, self.tiered.upgrade()) {
            (Ok(pre), Some(tiered)) => {
                if !tiered.replace(pre, CodeOrigin::Compiled) {
                    return;
                }
                tracing::info!(
                    hub = %self.key,
                    ms = started.elapsed().as_millis() as u64,
                    "optimized code in service"
                );
                if let (Some(publish), Ok(component)) = (&self.publish, &component) {
                    publish.send(&self.key, &self.engine, component);
                }
            }
            (Ok(_), None) => {}
            (Err(error), _) => {
                tracing::warn!(hub = %self.key, %error, "optimizing compile failed; the hub keeps its baseline code");
            }
        }
    }
}

impl Publish {
    fn send(&self, hub: &HubKey, engine: &Engine, component: &wasmtime::component::Component) {
        let sealed = super::shared::seal(
            &self.key,
            engine,
            super::shared::Tier::Optimized,
            &self.sha256,
            component,
        );
        match sealed {
            // The receiver is gone only when the node is.
            Ok(code) => drop(self.to.send((hub.clone(), code))),
            Err(error) => {
                tracing::warn!(%hub, error = format!("{error:#}"), "cannot seal the optimized code; the other nodes compile it");
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
