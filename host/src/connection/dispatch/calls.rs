//! Running a hub call for a connection: on its worker (see `workers`), within its
//! tenant's call slots, counted; and the client's text for a failure, as
//! ASP.NET Core words it.

use super::super::ConnectionContext;
use crate::hubs::HubSlot;
use crate::lifetime::HubLifetimeManager;
use crate::monitoring::{self, Outcome as CallOutcome};
use crate::names::HubKey;
use crate::quotas::LimitCounters;
use crate::runtime::{CallError, CallerInfo, HubError, HubVersion};
use crate::workers;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// What a hub call needs of its connection.
#[derive(Clone, Copy)]
pub(super) struct Parts<'a> {
    hub: &'a HubKey,
    slot: &'a Arc<HubSlot>,
    lifetime: &'a Arc<HubLifetimeManager>,
    caller: &'a Arc<CallerInfo>,
    calls: &'a Arc<tokio::sync::Semaphore>,
    counters: &'a LimitCounters,
}

impl<'a> Parts<'a> {
    pub(super) fn of(ctx: &'a ConnectionContext) -> Self {
        Self {
            hub: &ctx.hub,
            slot: &ctx.slot,
            lifetime: &ctx.lifetime,
            caller: &ctx.caller,
            calls: &ctx.calls,
            counters: &ctx.counters,
        }
    }
}

/// [`Parts`], owned: for the calls of streams, which run in the background
/// while the reader goes on.
#[derive(Clone)]
pub(super) struct Owned {
    hub: HubKey,
    slot: Arc<HubSlot>,
    lifetime: Arc<HubLifetimeManager>,
    caller: Arc<CallerInfo>,
    calls: Arc<tokio::sync::Semaphore>,
    counters: LimitCounters,
}

impl Owned {
    pub(super) fn of(ctx: &ConnectionContext) -> Self {
        Self {
            hub: ctx.hub.clone(),
            slot: ctx.slot.clone(),
            lifetime: ctx.lifetime.clone(),
            caller: ctx.caller.clone(),
            calls: ctx.calls.clone(),
            counters: ctx.counters.clone(),
        }
    }

    pub(super) fn parts(&self) -> Parts<'_> {
        Parts {
            hub: &self.hub,
            slot: &self.slot,
            lifetime: &self.lifetime,
            caller: &self.caller,
            calls: &self.calls,
            counters: &self.counters,
        }
    }
}

/// Run `call` on the hub's active version once one of the tenant's call
/// slots is free: here, on this task's worker, when the runtime has several
/// (a call that is not short leaves the worker to the other connections at
/// its first epoch tick or wait: `workers`), else on a blocking thread.
/// `None` if the call panicked (a host bug).
pub(super) async fn call_hub<R: Send + 'static>(
    ctx: Parts<'_>,
    call: impl FnOnce(&HubVersion, &Arc<HubLifetimeManager>, &CallerInfo) -> R + Send + 'static,
) -> Option<R> {
    // Wait for one of the tenant's call slots; the semaphore is never
    // closed, so an error cannot happen and would only skip the wait.
    let slot = match ctx.calls.clone().try_acquire_owned() {
        Ok(slot) => Ok(slot),
        Err(_) => {
            tracing::debug!("waiting for a call slot (hub_limits.max_concurrent_calls)");
            ctx.counters
                .hit(ctx.hub.tenant(), "hub_limits.max_concurrent_calls");
            ctx.calls.clone().acquire_owned().await
        }
    };
    let version = ctx.slot.active();
    let lifetime = ctx.lifetime.clone();
    let caller = ctx.caller.clone();
    let run = move || {
        let result = call(&version, &lifetime, &caller);
        drop(slot);
        result
    };
    if workers::can_run_inline() {
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| workers::run_inline(run)));
        return ran
            .inspect_err(|_| tracing::error!("hub call panicked"))
            .ok();
    }
    match tokio::task::spawn_blocking(run).await {
        Ok(result) => Some(result),
        Err(error) => {
            tracing::error!(%error, "hub call task failed");
            None
        }
    }
}

/// A finished call of `method`, counted: its value, or the client's text
/// for its failure (the detail goes to the log).
pub(super) fn finished<T>(
    ctx: &Parts<'_>,
    method: &str,
    started: std::time::Instant,
    result: Option<Result<Result<T, HubError>, CallError>>,
) -> Result<T, String> {
    let outcome = match &result {
        Some(Ok(Ok(_))) => CallOutcome::Ok,
        Some(Ok(Err(_))) => CallOutcome::HubError,
        _ => CallOutcome::Failed,
    };
    let (tenant, hub) = (ctx.hub.tenant(), ctx.hub.hub());
    monitoring::invocation(tenant, hub, outcome, started.elapsed());
    Err(match result {
        Some(Ok(Ok(value))) => return Ok(value),
        Some(Ok(Err(error))) => client_text(method, &error),
        Some(Err(error)) => {
            tracing::warn!(tenant, hub, method, %error, "hub call failed");
            if let Some(limit) = error.limit() {
                ctx.counters.hit(tenant, limit);
            }
            match limit_text(&error) {
                Some(limit) => format!(
                    "An unexpected error occurred invoking '{method}' on the server: {limit}."
                ),
                None => format!("An unexpected error occurred invoking '{method}' on the server."),
            }
        }
        None => format!("An unexpected error occurred invoking '{method}' on the server."),
    })
}

/// The limit a failed call hit, in words for the caller; `None` for other
/// failures, whose detail stays in the log.
fn limit_text(error: &CallError) -> Option<String> {
    Some(match error {
        CallError::Timeout(limit) => {
            format!(
                "the hub exceeded its time limit of {} ms",
                limit.as_millis()
            )
        }
        CallError::MemoryLimit(bytes) => {
            format!("the hub exceeded its memory limit of {bytes} bytes")
        }
        CallError::StackOverflow => "the hub overflowed its stack".into(),
        CallError::TableLimit(elements) => {
            format!("the hub exceeded its table limit of {elements} elements")
        }
        CallError::ResultTooLarge { limit, .. } => {
            format!("the hub's result exceeds the limit of {limit} bytes")
        }
        CallError::BadResult(_) | CallError::Trap(_) => return None,
    })
}

/// The text a client sees for a hub's own error, as ASP.NET Core words it.
fn client_text(method: &str, error: &HubError) -> String {
    match error {
        HubError::UnknownMethod(_) => format!("Unknown hub method '{method}'"),
        HubError::BadArguments(detail) => {
            tracing::info!(method, detail, "bad arguments");
            format!("Failed to invoke '{method}' due to an error on the server.")
        }
        HubError::Unauthorized(detail) => {
            tracing::info!(method, detail, "unauthorized");
            format!("Failed to invoke '{method}' because user is unauthorized")
        }
        HubError::Failed(text) => text.clone(),
    }
}
