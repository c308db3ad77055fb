//! Tenant variables and secrets: named values set through the admin API and
//! read by the tenant's hubs (the `config` interface of world 0.2).
//!
//! Guarantees:
//! - a secret is stored encrypted (AES-256-GCM under the nodes' secrets key,
//!   bound to its tenant and name), so the store alone — Redis or the data
//!   directory — does not reveal it; the key is given to the nodes, never
//!   stored with the values;
//! - a secret's value never leaves a node except into its tenant's hubs: the
//!   admin API lists secrets without values, and nothing here logs a value;
//! - a hub reads only its own tenant's variables, from this node's copy
//!   ([`Vars`]), kept in step with the store like the hubs are.

use crate::names::HubKey;
use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::{hkdf, hmac};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Longest variable name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Why a variable could not be set or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VarError {
    #[error(
        "variable names are 1 to {MAX_NAME_BYTES} characters: letters, digits, '_', '-' and '.', starting with a letter or '_'"
    )]
    BadName,
    #[error("this node has no secrets key (secrets_key), so it cannot keep secrets")]
    NoKey,
    /// The stored secret does not open with this node's key (another key,
    /// or a value moved between names); the detail stays in the log.
    #[error("the secret cannot be read with this node's secrets key")]
    Undecryptable,
}

/// Check a variable name.
pub fn check_name(name: &str) -> Result<(), VarError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if first_ok && rest_ok && name.len() <= MAX_NAME_BYTES {
        Ok(())
    } else {
        Err(VarError::BadName)
    }
}

/// A variable as the store keeps it: a plain value, or a secret's
/// ciphertext (base64 of nonce and sealed bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVar {
    #[serde(default)]
    pub secret: bool,
    pub value: String,
}

/// The nodes' key for secrets: 32 bytes, given as base64. It also vouches
/// for compiled code the nodes pass each other ([`SecretsKey::code_key`]).
pub struct SecretsKey {
    key: LessSafeKey,
    /// An HMAC key of its own for compiled code, derived from the same
    /// bytes (HKDF-SHA256, its own label), so that no secret's ciphertext
    /// can ever serve as a MAC of code, or the reverse.
    code: hmac::Key,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(…)")
    }
}

/// What a secret is bound to: its tenant and name, so that a ciphertext
/// copied to another name or tenant does not open.
fn aad(tenant: &str, name: &str) -> String {
    format!("hubhost-secret\0{tenant}\0{name}")
}

impl SecretsKey {
    /// The key in `base64` (standard alphabet): exactly 32 bytes.
    pub fn from_base64(base64: &str) -> anyhow::Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(base64.trim())
            .map_err(|_| anyhow::anyhow!("secrets_key is not base64"))?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| anyhow::anyhow!("secrets_key must be 32 bytes (base64 of them)"))?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"hubhost").extract(&bytes);
        let code: hmac::Key = prk
            .expand(&[b"compiled-code-mac"], hmac::HMAC_SHA256)
            .map_err(|_| anyhow::anyhow!("deriving the code key failed"))?
            .into();
        Ok(Self {
            key: LessSafeKey::new(key),
            code,
        })
    }

    /// The key that vouches for compiled code one node passes another (see
    /// the runtime's shared code).
    pub fn code_key(&self) -> &hmac::Key {
        &self.code
    }

    /// `value` sealed for `name` of `tenant`.
    pub fn seal(&self, tenant: &str, name: &str, value: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("random source failed: {e}"))?;
        let mut sealed = value.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(tenant, name)),
                &mut sealed,
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// The value of a sealed secret.
    pub fn open(&self, tenant: &str, name: &str, sealed: &str) -> Result<String, VarError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| VarError::Undecryptable)?;
        if bytes.len() < NONCE_LEN {
            return Err(VarError::Undecryptable);
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VarError::Undecryptable)?;
        let mut rest = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad(tenant, name)), &mut rest)
            .map_err(|_| VarError::Undecryptable)?;
        String::from_utf8(plain.to_vec()).map_err(|_| VarError::Undecryptable)
    }
}

/// This node's copy of every tenant's variables, secrets opened: what hubs
/// read. Replaced a tenant at a time when the store changes.
#[derive(Default)]
pub struct Vars {
    tenants: RwLock<HashMap<String, Arc<HashMap<String, String>>>>,
}

/// Names the number of tenants only: the values include secrets.
impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner()).len();
        write!(f, "Vars({tenants} tenants)")
    }
}

impl Vars {
    /// The value of `name` for `hub`'s tenant.
    pub fn get(&self, hub: &HubKey, name: &str) -> Option<String> {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants.get(hub.tenant())?.get(name).cloned()
    }

    /// `tenant`'s variables are now `values`.
    pub fn replace(&self, tenant: &str, values: HashMap<String, String>) {
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        if values.is_empty() {
            tenants.remove(tenant);
        } else {
            tenants.insert(tenant.to_owned(), Arc::new(values));
        }
    }

    /// Tenants with variables on this node.
    pub fn tenants(&self) -> Vec<String> {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants.keys().cloned().collect()
    }
}

/// `stored` as hubs read it: secrets opened with `key`. A secret that does
/// not open is left out and logged by name (never by value).
pub fn open_all(
    tenant: &str,
    stored: HashMap<String, StoredVar>,
    key: Option<&SecretsKey>,
) -> HashMap<String, String> {
    let mut values = HashMap::new();
    for (name, var) in stored {
        if !var.secret {
            values.insert(name, var.value);
            continue;
        }
        match key.map(|key| key.open(tenant, &name, &var.value)) {
            Some(Ok(value)) => {
                values.insert(name, value);
            }
            Some(Err(error)) => tracing::error!(tenant, name, %error, "secret left out"),
            None => tracing::error!(
                tenant,
                name,
                "secret left out: this node has no secrets_key"
            ),
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn a_secret_opens_only_for_its_tenant_and_name_with_its_key() -> anyhow::Result<()> {
        let key = SecretsKey::from_base64(KEY)?;
        let sealed = key.seal("acme", "API_KEY", "s3cret")?;
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.open("acme", "API_KEY", &sealed), Ok("s3cret".into()));
        assert_eq!(
            key.open("acme", "OTHER", &sealed),
            Err(VarError::Undecryptable)
        );
        assert_eq!(
            key.open("evil", "API_KEY", &sealed),
            Err(VarError::Undecryptable)
        );
        let other = SecretsKey::from_base64("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=")?;
        assert_eq!(
            other.open("acme", "API_KEY", &sealed),
            Err(VarError::Undecryptable)
        );
        assert_eq!(
            key.open("acme", "API_KEY", "not base64!"),
            Err(VarError::Undecryptable)
        );
        // The same value seals differently every time (a fresh nonce).
        assert_ne!(key.seal("acme", "API_KEY", "s3cret")?, sealed);
        assert!(SecretsKey::from_base64("c2hvcnQ=").is_err());
        Ok(())
    }

    #[test]
    fn names_are_checked() {
        for good in ["API_KEY", "a", "_x", "model.name", "a-b", &"x".repeat(128)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", "1abc", "a b", "a:b", "é", "a\n", &"x".repeat(129)] {
            assert_eq!(check_name(bad), Err(VarError::BadName), "{bad:?}");
        }
    }
}
