//! Compiled components on disk, so that a restart (or a second node on the
//! same disk) does not compile a large component again: a 12–18 MB Python or
//! JavaScript component takes seconds to compile and ~20 ms to load.
//!
//! Artifacts are named by the SHA-256 of the component's bytes and a hash
//! of the engine's compatibility hash: a tenant cannot make its component
//! collide with another's, an engine with other settings never loads them,
//! and a deleted or pruned version's artifact can be found and removed.
//! The directory must be writable by hubhost alone (see `load`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        self.path_of(engine, &crate::ids::sha256_hex(bytes))
    }

    /// The artifact of the component whose SHA-256 is `sha256` (hex).
    fn path_of(&self, engine: &Engine, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", engine_id(engine)))
    }

    /// Remove the artifact of the component whose SHA-256 is `sha256` (a
    /// version that was deleted or pruned). Another hub with the same
    /// component compiles it again when it next loads: a cost, not a fault.
    pub fn forget(&self, engine: &Engine, sha256: &str) {
        // Only names of our own making: 64 hex digits.
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return;
        }
        let path = self.path_of(engine, sha256);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(path = %path.display(), "compiled component removed"),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot remove a compiled component")
            }
        }
    }

    /// Whether `engine`'s code for `bytes` is here.
    pub fn contains(&self, engine: &Engine, bytes: &[u8]) -> bool {
        self.path(engine, bytes).exists()
    }

    /// The compiled form of `bytes`: loaded from the cache, or compiled and
    /// stored. A cache that cannot be read or written only costs time.
    pub fn compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let path = self.path(engine, bytes);
        if path.exists() {
            match load(engine, &path) {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "unusable cached component; compiling again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(error) = store(&component, &path) {
            tracing::warn!(path = %path.display(), %error, "cannot cache the compiled component");
        }
        Ok(component)
    }
}

/// `engine`'s settings, as far as compiled code depends on them: 16 hex
/// digits of the hash of wasmtime's compatibility hash (its version, the
/// target, the flags).
pub(super) fn engine_id(engine: &Engine) -> String {
    let mut hash = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hash);
    format!("{:016x}", hash.finish())
}

/// Compile `bytes` for `engine`, through `cache` when there is one.
pub fn compile(
    cache: Option<&ArtifactCache>,
    engine: &Engine,
    bytes: &[u8],
) -> wasmtime::Result<Component> {
    match cache {
        Some(cache) => cache.compile(engine, bytes),
        None => Component::new(engine, bytes),
    }
}

/// `engine`'s component for `bytes` from `artifact`, which an engine of the
/// same settings compiled in this process (`Engine::precompile_component`,
/// see `tiers`); stored in `cache` when there is one.
pub fn adopt(
    cache: Option<&ArtifactCache>,
    engine: &Engine,
    bytes: &[u8],
    artifact: &[u8],
) -> wasmtime::Result<Component> {
    if let Some(cache) = cache {
        let path = cache.path(engine, bytes);
        match write(&path, artifact) {
            Ok(()) => return load(engine, &path),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot cache the compiled component");
            }
        }
    }
    deserialize(engine, artifact)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize` trusts the bytes to be native code wasmtime
    // produced. These are: `adopt`'s only caller passes what
    // `Engine::precompile_component` returned in this process, moments ago,
    // from nothing but memory of ours. wasmtime also checks the artifact's
    // header (version, target, engine flags) against `engine` and refuses
    // a mismatch.
    unsafe { Component::deserialize(engine, artifact) }
}

#[allow(unsafe_code)]
fn load(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` trusts the file to be native code that
    // wasmtime itself produced. This file is: `store` wrote it, from
    // `Component::serialize`, under a name made of the SHA-256 of the source
    // component and the engine's compatibility hash, and only after writing
    // it completely (write to a temporary name, then rename). wasmtime also
    // checks the artifact's header (version, target, engine flags) and
    // refuses a mismatch. What remains is the operator's part: the cache
    // directory must not be writable by anyone but hubhost, as documented.
    unsafe { Component::deserialize_file(engine, path) }
}

fn store(component: &Component, path: &Path) -> wasmtime::Result<()> {
    write(path, &component.serialize()?)
}

/// Write `artifact` at `path` whole: under a temporary name, then renamed,
/// so that no reader ever sees part of it.
fn write(path: &Path, artifact: &[u8]) -> wasmtime::Result<()> {
    // Named apart from any other writer's, nodes in one process included.
    let unique = u64::from_le_bytes(crate::ids::random_bytes());
    let partial = path.with_extension(format!("partial-{}-{unique:x}", std::process::id()));
    std::fs::write(&partial, artifact)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}
