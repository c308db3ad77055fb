//! Compiled code passed from node to node, so that a cluster compiles an
//! upload once. The node that takes an upload compiles it anyway (to check
//! it before anything changes); it leaves that code in the store, and the
//! other nodes load it in tens of milliseconds instead of compiling for
//! seconds (a 12–18 MB Python or JavaScript hub).
//!
//! wasmtime runs loaded code as it is: whoever could choose those bytes
//! could run anything in every node. Whoever can write the store (Redis)
//! must not be able to. So code is loaded only under a MAC (HMAC-SHA256)
//! with a key the nodes are given in their configuration and that is never
//! stored: one derived from `admin.secrets_key`
//! ([`crate::vars::SecretsKey::code_key`]). The MAC covers the code, the
//! compiler that made it, the engine settings it is for, and the SHA-256 of
//! the component it was compiled from; the loading node computes that hash
//! itself from the component it is about to serve, so code is never taken
//! for another component's. Without a secrets key nodes share nothing and
//! each compiles, as a node alone does.
//!
//! Guarantee: [`open`] returns a component only for code that a node
//! holding the same key sealed ([`seal`]) from its own compile of the same
//! component, for an engine of the same settings.

use super::cache::engine_id;
use ring::hmac;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Which compiler made the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// wasmtime's baseline compiler (Winch), for large components at first.
    Baseline,
    /// Cranelift: the code a node keeps.
    Optimized,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Baseline => "baseline",
            Tier::Optimized => "optimized",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "baseline" => Some(Tier::Baseline),
            "optimized" => Some(Tier::Optimized),
            _ => None,
        }
    }
}

/// Compiled code of one component, sealed, as the store keeps it. Nothing
/// in it is trusted until `open` has checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCode {
    /// SHA-256 (hex) of the component the code was compiled from.
    pub sha256: String,
    /// `Tier::name` of the compiler.
    pub tier: String,
    /// The engine settings the code is for (hex of their hash).
    pub engine: String,
    /// HMAC-SHA256 of all of the above and the code.
    pub mac: Vec<u8>,
    /// `Component::serialize`'s output.
    pub code: Vec<u8>,
}

/// Why shared code was not loaded; the node then compiles as it would
/// without it. Never the client's business: logged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("this node has no key to check it with (admin.secrets_key)")]
    NoKey,
    #[error("it was compiled from another component")]
    OtherComponent,
    #[error("it names an unknown compiler '{0}'")]
    UnknownTier(String),
    #[error("it is not the optimizing compiler's code")]
    NotOptimized,
    #[error("this node does not run the {0} compiler")]
    NoSuchCompiler(&'static str),
    #[error("it is for other engine settings (another build of hubhost?)")]
    OtherEngine,
    #[error("its MAC does not verify under this node's key")]
    BadMac,
    #[error("wasmtime refused it: {0}")]
    Unloadable(String),
}

fn mac_of(key: &hmac::Key, tier: &str, engine: &str, sha256: &str, code: &[u8]) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    // Every field but the last is free of NULs, so the encoding is one-to-one.
    for part in [
        b"hubhost-compiled-code-v1",
        tier.as_bytes(),
        engine.as_bytes(),
        sha256.as_bytes(),
    ] {
        context.update(part);
        context.update(b"\0");
    }
    context.update(code);
    context.sign()
}

/// `component`'s code, compiled on `engine` by `tier` from the component
/// whose SHA-256 is `sha256`, sealed under `key` for the other nodes.
pub fn seal(
    key: &hmac::Key,
    engine: &Engine,
    tier: Tier,
    sha256: &str,
    component: &Component,
) -> wasmtime::Result<SharedCode> {
    let code = component.serialize()?;
    let engine = engine_id(engine);
    let mac = mac_of(key, tier.name(), &engine, sha256, &code);
    Ok(SharedCode {
        sha256: sha256.to_owned(),
        tier: tier.name().to_owned(),
        engine,
        mac: mac.as_ref().to_vec(),
        code,
    })
}

/// The tier `shared` claims, before anything is checked (to choose the
/// engine for [`open`]).
pub fn tier_of(shared: &SharedCode) -> Result<Tier, Refused> {
    Tier::parse(&shared.tier).ok_or_else(|| Refused::UnknownTier(shared.tier.clone()))
}

/// The component in `shared`, for `engine`, if `shared` is code sealed
/// under `key` for `engine`'s settings from the component whose SHA-256 is
/// `sha256` (computed by the caller from the bytes it serves).
pub fn open(
    key: &hmac::Key,
    engine: &Engine,
    sha256: &str,
    shared: &SharedCode,
) -> Result<Component, Refused> {
    if shared.sha256 != sha256 {
        return Err(Refused::OtherComponent);
    }
    if shared.engine != engine_id(engine) {
        return Err(Refused::OtherEngine);
    }
    let expected = mac_of(key, &shared.tier, &shared.engine, sha256, &shared.code);
    // Compared in constant time, as `hmac::verify` does.
    let expected = expected.as_ref();
    let differ = expected.len() != shared.mac.len()
        || expected
            .iter()
            .zip(&shared.mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0;
    if differ {
        return Err(Refused::BadMac);
    }
    deserialize(engine, &shared.code).map_err(|e| Refused::Unloadable(format!("{e:#}")))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `Component::deserialize` requires bytes that wasmtime's own
    // `serialize` produced, for an engine of compatible settings. `open`
    // calls this only after the MAC verified: the bytes are, unchanged,
    // what `seal` took from `Component::serialize` on a node holding this
    // node's key (a key from configuration, never stored where the store's
    // writers could read it), compiled from the very component this node
    // serves, for an engine whose compatibility hash equals this engine's.
    // wasmtime also checks the code's header (its version, the target, the
    // engine's flags) and refuses a mismatch. The nodes that hold the key
    // are trusted as this node is: they run the same hubhost.
    unsafe { Component::deserialize(engine, code) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::sha256_hex as sha256;

    // An empty component: the magic, version 0x0d, layer 1.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    fn key(byte: u8) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &[byte; 32])
    }

    fn sealed(engine: &Engine) -> wasmtime::Result<SharedCode> {
        let component = Component::new(engine, EMPTY)?;
        seal(&key(1), engine, Tier::Optimized, &sha256(EMPTY), &component)
    }

    #[test]
    fn sealed_code_opens_with_the_same_key_for_the_same_component() -> wasmtime::Result<()> {
        let engine = Engine::new(&super::super::engine_config())?;
        let shared = sealed(&engine)?;
        assert_eq!(tier_of(&shared), Ok(Tier::Optimized));
        assert!(open(&key(1), &engine, &sha256(EMPTY), &shared).is_ok());
        Ok(())
    }

    #[test]
    fn anything_changed_is_refused() -> wasmtime::Result<()> {
        let engine = Engine::new(&super::super::engine_config())?;
        let shared = sealed(&engine)?;
        let sha = sha256(EMPTY);
        let refused =
            |shared: &SharedCode, key: &hmac::Key, sha: &str| open(key, &engine, sha, shared).err();
        // Another key: a store writer's own MAC.
        assert_eq!(refused(&shared, &key(2), &sha), Some(Refused::BadMac));
        // The code changed by one byte.
        let mut code = shared.clone();
        if let Some(last) = code.code.last_mut() {
            *last ^= 1;
        }
        assert_eq!(refused(&code, &key(1), &sha), Some(Refused::BadMac));
        // Another tier claimed.
        let mut tier = shared.clone();
        tier.tier = "baseline".into();
        assert_eq!(refused(&tier, &key(1), &sha), Some(Refused::BadMac));
        // Code moved to another component, or claiming to be for it.
        assert_eq!(
            refused(&shared, &key(1), &sha256(b"other")),
            Some(Refused::OtherComponent)
        );
        let mut moved = shared.clone();
        moved.sha256 = sha256(b"other");
        assert_eq!(
            refused(&moved, &key(1), &sha256(b"other")),
            Some(Refused::BadMac)
        );
        // Another engine's settings.
        let mut other = shared.clone();
        other.engine = "0000000000000000".into();
        assert_eq!(refused(&other, &key(1), &sha), Some(Refused::OtherEngine));
        // A MAC of the wrong length.
        let mut garbage = shared;
        garbage.mac = b"zz".to_vec();
        assert_eq!(refused(&garbage, &key(1), &sha), Some(Refused::BadMac));
        Ok(())
    }
}
