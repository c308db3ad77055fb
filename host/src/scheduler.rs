//! Firing timers: one thread per node claims due timers from the
//! [`TimerBackend`](crate::timers::TimerBackend) every [`POLL`], runs each as
//! a hub call with no connection (in the tenant's call slots, on the hub's
//! active version), then deletes it; while calls run, their claims are
//! renewed, so only a node that dies lets another fire its timers.

use crate::runtime::CallerInfo;
use crate::state::AppState;
use crate::timers::{LEASE, Timer, now_ms};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often due timers are looked for: a timer fires at most this late
/// (plus the call's wait for a slot).
pub const POLL: Duration = Duration::from_millis(20);
/// Timers claimed at once.
const BATCH: usize = 64;

type InFlight = Arc<Mutex<HashSet<String>>>;

/// Fire timers for `state` until it is dropped or shut down.
pub fn start(state: &Arc<AppState>) {
    let weak = Arc::downgrade(state);
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("hubhost-timers".into())
        .spawn(move || run(weak, runtime));
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the timer thread; timers will not fire on this node");
    }
}

fn run(state: Weak<AppState>, runtime: tokio::runtime::Handle) {
    let in_flight: InFlight = Arc::default();
    let mut renewed = Instant::now();
    // While the backend fails (Redis away), say so once, not every POLL.
    let mut failing = false;
    loop {
        std::thread::sleep(POLL);
        let Some(state) = state.upgrade() else { return };
        if state.shutdown.is_cancelled() {
            return;
        }
        if renewed.elapsed() >= LEASE / 3 {
            renewed = Instant::now();
            let ids: Vec<String> = lock(&in_flight).iter().cloned().collect();
            if let Err(error) = state.timers.renew(&ids)
                && !failing
            {
                tracing::warn!(%error, "cannot renew the claims of running timers");
            }
        }
        let due = match state.timers.claim(now_ms(), BATCH) {
            Ok(due) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("claiming due timers again");
                }
                due
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(?error, "cannot claim due timers; retrying every poll");
                }
                continue;
            }
        };
        for timer in due {
            lock(&in_flight).insert(timer.id.clone());
            runtime.spawn(fire(state.clone(), timer, in_flight.clone()));
        }
    }
}

fn lock(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    // Inserts and removes only: a poisoned set is still whole.
    set.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `timer`'s call, then forget it.
async fn fire(state: Arc<AppState>, timer: Timer, in_flight: InFlight) {
    let late_ms = now_ms().saturating_sub(timer.due_ms);
    let slot = timer.hub_key().and_then(|key| state.hubs.get(&key));
    let Some(slot) = slot else {
        tracing::warn!(
            tenant = timer.tenant,
            hub = timer.hub,
            "timer dropped: its hub is gone"
        );
        finish(&state, timer, &in_flight).await;
        return;
    };
    let limit = state
        .tenants
        .current()
        .get(&timer.tenant)
        .hub_limits
        .max_concurrent_calls;
    // Never closed: an error would only skip the wait.
    let permit = state
        .call_slots
        .of(&timer.tenant, limit)
        .acquire_owned()
        .await;
    let caller = CallerInfo {
        connection_id: "".into(),
        user_id: None,
        claims: Vec::new(),
        items: Default::default(),
    };
    let lifetime = state.lifetime.clone();
    let (call, timers) = (timer.clone(), state.timers.clone());
    // The timer is forgotten on the same thread, right after its call: the
    // window in which a node's death makes another node fire it again is
    // one Redis round trip, not a second task's wait for a thread.
    let result = tokio::task::spawn_blocking(move || {
        let result = slot
            .active()
            .invoke(&lifetime, &caller, &call.method, &call.args);
        drop(permit);
        let done = timers.done(&call);
        (result, done)
    })
    .await;
    let (tenant, hub, method, id) = (&timer.tenant, &timer.hub, &timer.method, &timer.id);
    let done = match result {
        Ok((result, done)) => {
            match result {
                Ok(Ok(_)) => tracing::debug!(tenant, hub, method, late_ms, "timer fired"),
                Ok(Err(error)) => {
                    tracing::info!(tenant, hub, method, ?error, "timer's call failed")
                }
                Err(error) => tracing::warn!(tenant, hub, method, %error, "timer's call stopped"),
            }
            done
        }
        Err(error) => {
            tracing::error!(tenant, hub, method, %error, "timer task failed");
            finish(&state, timer, &in_flight).await;
            return;
        }
    };
    if done.is_err() {
        tracing::warn!(id, "cannot forget a fired timer; it may fire again");
    }
    lock(&in_flight).remove(id);
}

async fn finish(state: &Arc<AppState>, timer: Timer, in_flight: &InFlight) {
    let timers = state.timers.clone();
    let id = timer.id.clone();
    let done = tokio::task::spawn_blocking(move || timers.done(&timer)).await;
    if !matches!(done, Ok(Ok(()))) {
        tracing::warn!(id, "cannot forget a fired timer; it may fire again");
    }
    lock(in_flight).remove(&id);
}
