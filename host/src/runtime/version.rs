//! One compiled, checked version of a hub: instances made from its code,
//! calls under the limits, idle instances kept for the next call, and who
//! is calling.

use super::idle;
use super::limits::{LimitHit, Limiter};
use super::tiers::{CodeOrigin, Tiered};
use super::worlds::{self, Caller as WitCaller};
use super::{CallError, CallState, EPOCH_TICK, HubError, HubLimits, World};
use crate::items::Items;
use crate::kv::KvBackend;
use crate::lifetime::HubLifetimeManager;
use crate::names::HubKey;
use crate::quotas::LimitCounters;
use crate::timers::TimerBackend;
use crate::vars::Vars;
use serde_json::value::RawValue;
use std::sync::{Arc, Mutex};
use wasmtime::{Store, Trap, UpdateDeadline};

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
pub(super) struct Idle {
    warm: Warm,
    _kept: idle::Kept,
}

/// One compiled, checked version of a hub, ready to instantiate.
pub struct HubVersion {
    pub(super) key: HubKey,
    pub(super) world: World,
    /// Its code (see `tiers`).
    pub(super) pre: Arc<Tiered>,
    pub(super) state: Arc<dyn KvBackend>,
    pub(super) vars: Arc<Vars>,
    pub(super) timers: Arc<dyn TimerBackend>,
    pub(super) limits: HubLimits,
    pub(super) idle: Mutex<Vec<Idle>>,
    pub(super) idle_memory: Arc<idle::IdleMemory>,
    pub(super) counters: LimitCounters,
    /// Where its first code came from.
    pub(super) origin: CodeOrigin,
    /// The component's SHA-256 (hex), as this node computed it, when this
    /// node shares compiled code (to check another node's code against).
    pub(super) sha256: Option<String>,
}

impl HubVersion {
    pub fn key(&self) -> &HubKey {
        &self.key
    }

    /// The world the component was built for.
    pub fn world(&self) -> World {
        self.world
    }

    /// The tenant's limits this version runs under.
    pub fn limits(&self) -> &HubLimits {
        &self.limits
    }

    /// Whether new instances run the optimizing compiler's code (not the
    /// baseline's, which a large component gets first: see `tiers`).
    pub fn optimized(&self) -> bool {
        self.pre.optimized().is_some()
    }

    /// Where its first code came from.
    pub fn origin(&self) -> CodeOrigin {
        self.origin
    }

    /// The component's SHA-256 (hex), when this node shares compiled code.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    /// Where its optimizing compiler's code came from, once it runs that.
    pub fn optimized_origin(&self) -> Option<CodeOrigin> {
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
        // Every epoch tick a call sees: the deadline counted down, and the
        // call leaves the async worker it started on, if it did (`workers`).
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            if state.ticks_left <= 1 {
                return Err(Trap::Interrupt.into());
            }
            state.ticks_left -= 1;
            crate::workers::give_way();
            Ok(UpdateDeadline::Continue(1))
        });
        // With epochs on, a new store's deadline is already due: set one
        // before anything runs, instantiation included.
        self.arm_deadline(&mut store);
        match pre.instantiate(&mut store) {
            Ok(hub) => Ok(Warm {
                store,
                hub,
                generation,
            }),
            Err(error) => Err(self.classify(&error, store.data_mut().limiter.take_hit())),
        }
    }

    /// Start the call's deadline: a whole number of ticks from now.
    fn arm_deadline(&self, store: &mut Store<CallState>) {
        store.data_mut().ticks_left = self.deadline_ticks();
        store.set_epoch_deadline(1);
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
        self.arm_deadline(&mut warm.store);
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
        self.checked_result(method, result)
    }

    /// A method's result, within the result limit and valid JSON.
    fn checked_result(
        &self,
        method: &str,
        result: Result<String, HubError>,
    ) -> Result<Result<Box<RawValue>, HubError>, CallError> {
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

    /// Call `method` with `args` and the client's upload streams, read
    /// through `uploads` (their ids, in the client's order).
    pub fn invoke_with_uploads(
        &self,
        lifetime: &Arc<HubLifetimeManager>,
        caller: &CallerInfo,
        call: (&str, &str),
        uploads: Vec<(String, crate::invocations::UploadRx)>,
    ) -> Result<Result<Box<RawValue>, HubError>, CallError> {
        let (method, args) = call;
        let result = self.call(method, lifetime, caller, |store, hub, caller| {
            let ids = store.data_mut().give_uploads(uploads);
            hub.invoke_with_uploads(store, caller, method, args, &ids)
        })?;
        self.checked_result(method, result)
    }

    /// Open server stream `stream` (its handle) of `method`: the hub sends
    /// its items in this call or later ones.
    pub fn open_stream(
        &self,
        lifetime: &Arc<HubLifetimeManager>,
        caller: &CallerInfo,
        call: (&str, &str),
        uploads: Vec<(String, crate::invocations::UploadRx)>,
        stream: &str,
    ) -> Result<Result<(), HubError>, CallError> {
        let (method, args) = call;
        let result = self.call(method, lifetime, caller, |store, hub, caller| {
            let ids = store.data_mut().give_uploads(uploads);
            hub.open_stream(store, caller, (method, args, &ids), stream)
        })?;
        Ok(result.map_err(|error| bounded(error, self.limits.max_result_bytes)))
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
