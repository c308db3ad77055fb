//! The little WASI a hub gets for real: randomness.
//!
//! Guest standard libraries reach for it without the hub asking (Rust's
//! `HashMap` seeds its hasher from `wasi:random/insecure-seed`), and it grants
//! no authority. Everything else WASI that toolchains link in (files, clocks,
//! streams, environment) is a stub that traps when called; see
//! `STUBBED_IMPORT_PREFIXES`.

use super::CallState;
use wasmtime::component::Linker;

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
