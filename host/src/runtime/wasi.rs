//! The little WASI a hub gets for real: randomness, the clocks, stdout and
//! stderr (into the log), and an empty environment.
//!
//! Guest standard libraries reach for these without the hub asking (Rust's
//! `HashMap` seeds its hasher from `wasi:random/insecure-seed`; a panic reads
//! the environment, then prints to stderr; JavaScript reads the monotonic
//! clock on every call), and they grant no authority. Waiting on a clock
//! (`subscribe-*`) traps: a call cannot sleep. Everything else WASI that
//! toolchains link in (files, input, sockets) is a stub that traps when
//! called; see `STUBBED_IMPORT_PREFIXES`.

use super::CallState;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::{Linker, Resource, ResourceType};

/// Most random bytes one call of `get-random-bytes` may ask for.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

fn random_bytes(len: u64) -> wasmtime::Result<Vec<u8>> {
    if len > MAX_RANDOM_BYTES {
        wasmtime::bail!("asked for {len} random bytes; the limit is {MAX_RANDOM_BYTES}");
    }
    let mut bytes = vec![0; usize::try_from(len)?];
    getrandom::fill(&mut bytes).map_err(|e| wasmtime::format_err!("random source failed: {e}"))?;
    Ok(bytes)
}

fn random_u64() -> wasmtime::Result<u64> {
    let bytes = random_bytes(8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes);
    Ok(u64::from_le_bytes(word))
}

/// Define `import` (for example `wasi:random/insecure-seed@0.2.6`) if it is
/// one of the random interfaces, under the exact name the component imports:
/// the trapping stubs for other WASI imports are defined under exact names
/// too, and an exact name would shadow a semver-compatible one.
/// Returns whether `import` was defined.
pub(super) fn add_random(linker: &mut Linker<CallState>, import: &str) -> wasmtime::Result<bool> {
    let interface = import.split('@').next().unwrap_or(import);
    let (bytes_fn, u64_fn) = match interface {
        "wasi:random/random" => ("get-random-bytes", "get-random-u64"),
        "wasi:random/insecure" => ("get-insecure-random-bytes", "get-insecure-random-u64"),
        "wasi:random/insecure-seed" => {
            linker
                .instance(import)?
                .func_wrap("insecure-seed", |_, (): ()| {
                    Ok(((random_u64()?, random_u64()?),))
                })?;
            return Ok(true);
        }
        _ => return Ok(false),
    };
    let mut instance = linker.instance(import)?;
    instance.func_wrap(bytes_fn, |_, (len,): (u64,)| Ok((random_bytes(len)?,)))?;
    instance.func_wrap(u64_fn, |_, (): ()| Ok((random_u64()?,)))?;
    Ok(true)
}

/// `wasi:clocks/wall-clock`'s `datetime`.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// Wall-clock time since the Unix epoch (zero if the clock is before it).
fn wall_clock() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Nanoseconds of the monotonic clock, from the first reading in this
/// process: the same origin for every hub, so values compare across calls.
pub(super) fn monotonic_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let nanos = ORIGIN.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX)
}

/// Define `import` if it is one of the clocks (exact names, as for
/// randomness). Returns whether it was defined.
pub(super) fn add_clocks(linker: &mut Linker<CallState>, import: &str) -> wasmtime::Result<bool> {
    let interface = import.split('@').next().unwrap_or(import);
    match interface {
        "wasi:clocks/wall-clock" => {
            let mut instance = linker.instance(import)?;
            instance.func_wrap("now", |_, (): ()| {
                let now = wall_clock();
                Ok((Datetime {
                    seconds: now.as_secs(),
                    nanoseconds: now.subsec_nanos(),
                },))
            })?;
            instance.func_wrap("resolution", |_, (): ()| {
                Ok((Datetime {
                    seconds: 0,
                    nanoseconds: 1,
                },))
            })?;
        }
        "wasi:clocks/monotonic-clock" => {
            let mut instance = linker.instance(import)?;
            // `use`d from wasi:io/poll: the same host type (see `add_output`).
            instance.resource("pollable", ResourceType::host::<Pollable>(), |_, _| Ok(()))?;
            instance.func_wrap("now", |_, (): ()| Ok((monotonic_ns(),)))?;
            instance.func_wrap("resolution", |_, (): ()| Ok((1u64,)))?;
            for subscribe in ["subscribe-instant", "subscribe-duration"] {
                instance.func_wrap(
                    subscribe,
                    |_, (_,): (u64,)| -> wasmtime::Result<(Resource<Pollable>,)> {
                        wasmtime::bail!("a hub call cannot wait on a clock")
                    },
                )?;
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `wasi:io/error`'s `error`, never created: every write succeeds.
pub(super) struct IoError;
/// `wasi:io/streams`' `output-stream`: rep 1 is stdout, 2 is stderr.
pub(super) struct OutputStream;
/// `wasi:io/poll`'s `pollable`, always ready: output never blocks.
pub(super) struct Pollable;

const STDOUT: u32 = 1;
const STDERR: u32 = 2;

/// `wasi:io/streams`' `stream-error`: the type the write functions return,
/// though writes into the log never fail.
#[allow(dead_code, reason = "the WIT type has these cases; writes never fail")]
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(variant)]
pub(super) enum StreamError {
    #[component(name = "last-operation-failed")]
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    Closed,
}

/// Each instance that names a resource type (its own or `use`d) must define
/// it as the same host type, hence the repetitions below.
///
/// Define `import` if it is part of guest output: stdout and stderr (which
/// go to the log, tagged and counted against the call's log lines), the
/// output streams they hand out, and an empty environment (Rust's panic
/// hook reads it before printing the panic to stderr). Exact names, as for
/// randomness. Returns whether `import` was defined.
pub(super) fn add_output(linker: &mut Linker<CallState>, import: &str) -> wasmtime::Result<bool> {
    let interface = import.split('@').next().unwrap_or(import);
    let mut instance = match interface {
        "wasi:io/error"
        | "wasi:io/poll"
        | "wasi:io/streams"
        | "wasi:cli/stdout"
        | "wasi:cli/stderr"
        | "wasi:cli/environment" => linker.instance(import)?,
        _ => return Ok(false),
    };
    match interface {
        "wasi:io/error" => {
            instance.resource("error", ResourceType::host::<IoError>(), |_, _| Ok(()))?;
        }
        "wasi:io/poll" => {
            instance.resource("pollable", ResourceType::host::<Pollable>(), |_, _| Ok(()))?;
            instance.func_wrap(
                "[method]pollable.block",
                |_, (_,): (Resource<Pollable>,)| Ok(()),
            )?;
            instance.func_wrap(
                "[method]pollable.ready",
                |_, (_,): (Resource<Pollable>,)| Ok((true,)),
            )?;
            instance.func_wrap("poll", |_, (all,): (Vec<Resource<Pollable>>,)| {
                Ok(((0..u32::try_from(all.len())?).collect::<Vec<u32>>(),))
            })?;
        }
        "wasi:io/streams" => {
            // Streams re-exports `error` and `pollable`: the same types.
            instance.resource("error", ResourceType::host::<IoError>(), |_, _| Ok(()))?;
            instance.resource("pollable", ResourceType::host::<Pollable>(), |_, _| Ok(()))?;
            instance.func_wrap(
                "[method]output-stream.subscribe",
                |_, (_,): (Resource<OutputStream>,)| Ok((Resource::<Pollable>::new_own(0),)),
            )?;
            instance.resource(
                "output-stream",
                ResourceType::host::<OutputStream>(),
                |_, _| Ok(()),
            )?;
            instance.func_wrap(
                "[method]output-stream.check-write",
                |_, (_,): (Resource<OutputStream>,)| Ok((Ok::<u64, StreamError>(4096),)),
            )?;
            for write in [
                "[method]output-stream.write",
                "[method]output-stream.blocking-write-and-flush",
            ] {
                instance.func_wrap(
                    write,
                    |mut store, (stream, contents): (Resource<OutputStream>, Vec<u8>)| {
                        store
                            .data_mut()
                            .guest_output(stream.rep() == STDERR, &contents);
                        Ok((Ok::<(), StreamError>(()),))
                    },
                )?;
            }
            for flush in [
                "[method]output-stream.flush",
                "[method]output-stream.blocking-flush",
            ] {
                instance.func_wrap(flush, |_, (_,): (Resource<OutputStream>,)| {
                    Ok((Ok::<(), StreamError>(()),))
                })?;
            }
        }
        "wasi:cli/stdout" | "wasi:cli/stderr" => {
            let (getter, rep) = if interface.ends_with("stdout") {
                ("get-stdout", STDOUT)
            } else {
                ("get-stderr", STDERR)
            };
            instance.resource(
                "output-stream",
                ResourceType::host::<OutputStream>(),
                |_, _| Ok(()),
            )?;
            instance.func_wrap(getter, move |_, (): ()| {
                Ok((Resource::<OutputStream>::new_own(rep),))
            })?;
        }
        _ => {
            // wasi:cli/environment: nothing to see.
            instance.func_wrap("get-environment", |_, (): ()| {
                Ok((Vec::<(String, String)>::new(),))
            })?;
            instance.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
            instance.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
        }
    }
    Ok(true)
}
