//! Every end-to-end test of hubhost, in one test binary (as wasmtime's
//! `tests/all`): hubhost and wasmtime are linked once instead of once per
//! file, and cargo runs all the tests on its threads in parallel, each
//! `#[tokio::test]` on a runtime of its own.
//!
//! Each module is one area, with a header comment saying what it covers; the
//! harness they share is the `hubhost_tests` crate (`tests/src`). Run one
//! area with `cargo test -p hubhost-tests --test all -- routing::`.
//!
//! Rules for a test here, since it shares the process with all the others:
//! - no process-wide state: no `std::env::set_var`, no `set_current_dir`
//!   (give a child process its environment and directory instead), no
//!   global tracing subscriber (read a `hubhost` process's output instead,
//!   see `hubhost_tests::process`);
//! - servers on port 0, `redis-server`s of a test's own on
//!   `redis_server::free_port()` (outside the ephemeral range, so no other
//!   test's port-0 socket takes it meanwhile), directories from
//!   `temp_dir`, Redis prefixes from `unique_prefix`;
//! - never assume to be alone on the machine's Redis or CPU: wait for evidence
//!   (a message, a counter, a state), not for time.

mod admin;
mod admin_quotas;
mod auth;
mod backplane_spec;
mod cli;
mod connect;
mod cors;
mod deploy;
mod drain;
mod fetch;
mod fuzz_corpus;
mod loading;
mod long_polling;
mod long_polling_errors;
mod metrics;
mod msgpack_ws;
mod protocol;
mod quotas;
mod redis;
mod redis_cluster;
mod redis_tls;
mod routing;
mod sandbox;
mod sentinel;
mod server_api;
mod shared_code;
mod sse;
mod state;
mod stateful;
mod streams;
mod targets;
mod tenants;
mod timers;
mod vars;
