//! Loading a component: compiled here (through the cache, the baseline
//! compiler first for a large one: `tiers`), or from the code another node
//! compiled and shared (`shared`), and later upgraded to another node's
//! optimized code.

use super::shared::{self, Refused, SharedCode, Tier};
use super::tiers::{CodeOrigin, Optimize, Publish, Tiered};
use super::{HubLimits, HubVersion, LoadError, Runtime, cache, prepare};
use crate::names::HubKey;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::Component;

impl Runtime {
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
    /// sealing failed: the others then compile). Baseline code shared this
    /// way is followed by the optimized code ([`Runtime::optimized_code`]).
    pub fn load_to_share(
        &self,
        key: HubKey,
        bytes: &[u8],
        limits: &HubLimits,
    ) -> Result<(HubVersion, Option<SharedCode>), LoadError> {
        self.compile(key, bytes, limits, self.shares_code())
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
        let sha256 = crate::ids::sha256_hex(bytes);
        let opened = self.engine_for(shared).and_then(|(tier, engine)| {
            Ok((tier, shared::open(self.key()?, engine, &sha256, shared)?))
        });
        let (tier, component) = match opened {
            Ok(opened) => opened,
            Err(reason) => {
                crate::monitoring::shared_code(key.tenant(), "refused");
                tracing::warn!(hub = %key, %reason, "not loading the compiled code another node shared; compiling");
                return self.load(key, bytes, limits);
            }
        };
        crate::monitoring::shared_code(key.tenant(), "loaded");
        let sha256 = Some(sha256);
        match (tier, &self.baseline) {
            (Tier::Baseline, Some(baseline)) => {
                let code = prepare(&baseline.engine, &baseline.linker, &component)?;
                let tiered = Tiered::new(code, None);
                self.optimize_later(&key, bytes, &tiered, Some(self.wait_for_optimized), None);
                Ok(self.version(key, tiered, limits, CodeOrigin::Shared, sha256))
            }
            _ => {
                let code = prepare(&self.engine, &self.linker, &component)?;
                let tiered = Tiered::new(code, Some(CodeOrigin::Shared));
                Ok(self.version(key, tiered, limits, CodeOrigin::Shared, sha256))
            }
        }
    }

    /// Serve another node's optimized code for `version`, which runs
    /// baseline code from that node: true if it does from now on, false if
    /// it already ran optimized code.
    pub fn upgrade(&self, version: &HubVersion, shared: &SharedCode) -> Result<bool, Refused> {
        if version.optimized() {
            return Ok(false);
        }
        let upgraded = self.upgrade_to(version, shared);
        // Code that checked out but lost the race to other optimized code
        // was not loaded, nor refused.
        match upgraded {
            Ok(true) => crate::monitoring::shared_code(version.key().tenant(), "loaded"),
            Ok(false) => {}
            Err(_) => crate::monitoring::shared_code(version.key().tenant(), "refused"),
        }
        upgraded
    }

    fn upgrade_to(&self, version: &HubVersion, shared: &SharedCode) -> Result<bool, Refused> {
        let sha256 = version.sha256.as_deref().ok_or(Refused::NoKey)?;
        let (tier, engine) = self.engine_for(shared)?;
        if tier != Tier::Optimized {
            return Err(Refused::NotOptimized);
        }
        let component = shared::open(self.key()?, engine, sha256, shared)?;
        let code = prepare(&self.engine, &self.linker, &component)
            .map_err(|e| Refused::Unloadable(e.to_string()))?;
        Ok(version.pre.replace(code, CodeOrigin::Shared))
    }

    fn key(&self) -> Result<&ring::hmac::Key, Refused> {
        self.code_key.as_ref().ok_or(Refused::NoKey)
    }

    /// The tier `shared` claims, and this node's engine for it.
    fn engine_for(&self, shared: &SharedCode) -> Result<(Tier, &Engine), Refused> {
        let tier = shared::tier_of(shared)?;
        let engine = match tier {
            Tier::Optimized => &self.engine,
            Tier::Baseline => {
                &self
                    .baseline
                    .as_ref()
                    .ok_or(Refused::NoSuchCompiler("baseline"))?
                    .engine
            }
        };
        Ok((tier, engine))
    }

    fn compile(
        &self,
        key: HubKey,
        bytes: &[u8],
        limits: &HubLimits,
        share: bool,
    ) -> Result<(HubVersion, Option<SharedCode>), LoadError> {
        let sha256 = self.shares_code().then(|| crate::ids::sha256_hex(bytes));
        let cached = self.is_cached(bytes);
        if let Some(baseline) = self
            .baseline
            .as_ref()
            .filter(|b| !cached && bytes.len() >= b.above)
        {
            let component = Component::new(&baseline.engine, bytes)
                .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
            let code = prepare(&baseline.engine, &baseline.linker, &component)?;
            let tiered = Tiered::new(code, None);
            let sealed = self.seal(
                share,
                &key,
                &baseline.engine,
                Tier::Baseline,
                sha256.as_deref(),
                &component,
            );
            // The others run this code until they have the optimized code.
            let publish = sealed.as_ref().and_then(|sealed| {
                Some(Publish {
                    key: self.code_key.clone()?,
                    sha256: sealed.sha256.clone(),
                    to: self.optimized_code.0.clone(),
                })
            });
            self.optimize_later(&key, bytes, &tiered, None, publish);
            let version = self.version(key, tiered, limits, CodeOrigin::Compiled, sha256);
            return Ok((version, sealed));
        }
        let component = cache::compile(self.cache.as_deref(), &self.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let code = prepare(&self.engine, &self.linker, &component)?;
        let sealed = self.seal(
            share,
            &key,
            &self.engine,
            Tier::Optimized,
            sha256.as_deref(),
            &component,
        );
        let tiered = Tiered::new(code, Some(CodeOrigin::Compiled));
        let version = self.version(key, tiered, limits, CodeOrigin::Compiled, sha256);
        Ok((version, sealed))
    }

    /// Whether the cache has this engine's code for `bytes`.
    fn is_cached(&self, bytes: &[u8]) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| cache.contains(&self.engine, bytes))
    }

    /// `component`'s code sealed for the other nodes, if `share` (and this
    /// node shares code: then `sha256` is the component's).
    fn seal(
        &self,
        share: bool,
        hub: &HubKey,
        engine: &Engine,
        tier: Tier,
        sha256: Option<&str>,
        component: &Component,
    ) -> Option<SharedCode> {
        let (key, sha256) = (self.code_key.as_ref()?, sha256?);
        if !share {
            return None;
        }
        shared::seal(key, engine, tier, sha256, component)
            .inspect_err(|error| {
                tracing::warn!(%hub, error = format!("{error:#}"), "cannot seal the compiled code; the other nodes compile it");
            })
            .ok()
    }

    /// Compile `bytes` with the optimizing compiler in the background, for
    /// `tiered` to run from then on (see `tiers`).
    fn optimize_later(
        &self,
        key: &HubKey,
        bytes: &[u8],
        tiered: &Arc<Tiered>,
        wait_for_others: Option<Duration>,
        publish: Option<Publish>,
    ) {
        let Some(baseline) = &self.baseline else {
            return;
        };
        Optimize {
            key: key.clone(),
            bytes: bytes.to_vec(),
            tiered: Arc::downgrade(tiered),
            engine: self.engine.clone(),
            compiler: baseline.background.clone(),
            linker: self.linker.clone(),
            cache: self.cache.clone(),
            turn: self.optimizing.clone(),
            wait_for_others,
            publish,
        }
        .start();
    }

    fn version(
        &self,
        key: HubKey,
        pre: Arc<Tiered>,
        limits: &HubLimits,
        origin: CodeOrigin,
        sha256: Option<String>,
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
            sha256,
        }
    }
}
