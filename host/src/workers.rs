//! Hub calls on the async workers.
//!
//! A hub call is synchronous Wasm. Handing every call to tokio's blocking
//! pool and back costs two thread wake-ups, about half of a trivial call's
//! time (`docs/src/benchmarks.md`). So a call starts on the async worker
//! that read its message ([`run_inline`]), and leaves the worker only when
//! it turns out not to be short:
//!
//! - at the first epoch tick it sees (5 ms at most into the call), the
//!   epoch callback calls [`give_way`]: `block_in_place` moves the worker's
//!   other tasks to a new thread, and the call goes on where it is;
//! - a host import that waits (Redis, another node, a client) waits through
//!   [`wait`], which does the same before blocking.
//!
//! Guarantee: a call holds up the other tasks of its worker for one epoch
//! tick of its own computation (three at most, when no thread takes the
//! worker over within `HANDOVER_LIMIT` at a tick). After that it holds
//! none, unless a wait of its own ends just as another call hands that
//! worker on, and takes it back: rare, and bounded by the call's deadline. Elsewhere (a
//! current-thread runtime, a blocking thread, the timer thread) [`wait`]
//! blocks plainly and [`give_way`] does nothing.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;
use tokio::runtime::{Handle, RuntimeFlavor};

/// Longest `give_way` waits for another thread to take the worker over:
/// `block_in_place` takes the worker back if it is still free when its
/// closure returns, and starting a thread takes tens of microseconds.
const HANDOVER_LIMIT: Duration = Duration::from_millis(2);

/// Ticks at which a call still tries to leave its worker: a later tick
/// tries again if the new thread had not taken over in time.
const ATTEMPTS: u8 = 3;

thread_local! {
    /// On this thread, a call started on an async worker: how many times it
    /// has tried to leave it. `None` outside such a call.
    static INLINE: Cell<Option<u8>> = const { Cell::new(None) };
}

/// Whether a call may start on the current task's worker: only on a
/// multi-threaded runtime, where `block_in_place` can hand the worker on.
pub fn can_run_inline() -> bool {
    Handle::try_current().is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// Run the hub call `call` here, on the current worker (see the module).
pub fn run_inline<R>(call: impl FnOnce() -> R) -> R {
    /// Restores the thread's state, also when the call panics.
    struct Restore(Option<u8>);
    impl Drop for Restore {
        fn drop(&mut self) {
            INLINE.with(|inline| inline.set(self.0));
        }
    }
    let _restore = Restore(INLINE.with(|inline| inline.replace(Some(0))));
    call()
}

/// From the epoch callback: a call started on a worker has run for a tick,
/// so it leaves the worker's other tasks to another thread.
pub fn give_way() {
    let attempts = INLINE.with(Cell::get);
    if let Some(made) = attempts
        && made < ATTEMPTS
    {
        INLINE.with(|inline| inline.set(Some(made + 1)));
        let Ok(handle) = Handle::try_current() else {
            return;
        };
        tokio::task::block_in_place(|| {
            // A task spawned now runs once another thread serves the
            // runtime's queues: then the worker was taken over (or another
            // worker has room), and the call can go on.
            let (ran, taken_over) = std::sync::mpsc::sync_channel(1);
            handle.spawn(async move {
                let _ = ran.try_send(());
            });
            let _ = taken_over.recv_timeout(HANDOVER_LIMIT);
        });
    }
}

/// Wait for `future` on `handle` from inside a hub call: after handing the
/// worker's other tasks on when the call runs on a worker.
pub fn wait<F: Future>(handle: &Handle, future: F) -> F::Output {
    if INLINE.with(Cell::get).is_some() {
        tokio::task::block_in_place(|| handle.block_on(future))
    } else {
        handle.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_current_thread_runtime_runs_calls_on_blocking_threads() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        assert!(!runtime.block_on(async { can_run_inline() }));
        assert!(!can_run_inline(), "no runtime at all");
    }

    // One worker, and the other task spawned by the call's task (so it waits
    // in that worker's queue): it only runs while the call is still going
    // if the call gave its worker away.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_long_call_leaves_its_worker_to_the_other_tasks() {
        let call = tokio::spawn(async {
            assert!(can_run_inline());
            let (tx, rx) = std::sync::mpsc::channel();
            tokio::spawn(async move {
                let _ = tx.send(());
            });
            // As at the call's first ticks: each gives the worker away once.
            let answered = run_inline(|| {
                (0..ATTEMPTS).any(|_| {
                    give_way();
                    rx.recv_timeout(Duration::from_secs(2)).is_ok()
                })
            });
            (answered, INLINE.with(Cell::get))
        });
        let (answered, after) = call.await.expect("the call's task");
        assert!(answered, "the other task never ran");
        assert_eq!(after, None, "state restored");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_wait_inside_a_call_lets_the_worker_serve_what_it_waits_for() {
        let call = tokio::spawn(async {
            let handle = Handle::current();
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let _ = tx.send(7);
            });
            run_inline(|| wait(&handle, rx)).ok()
        });
        assert_eq!(call.await.ok().flatten(), Some(7));
    }
}
