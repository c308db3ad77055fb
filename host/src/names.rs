//! Names of tenants and hubs, and the scope they make.
//!
//! Tenant and hub names are `[a-z0-9][a-z0-9-]{0,62}`: they sit in URLs,
//! backplane channels and store keys, so they must never hold a separator.
//! Group names and user ids may be any UTF-8 up to [`MAX_NAME_BYTES`]: they
//! only ever extend a tenant's fixed prefix (see `backplane::channels`).

use std::fmt;
use std::sync::Arc;

/// Longest group name or user id, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;

/// Longest client method a message may call (a hub's send, a backend's), in
/// bytes.
pub const MAX_METHOD_BYTES: usize = 256;

/// One hub of one tenant: the scope of every connection, group and user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HubKey {
    tenant: Arc<str>,
    hub: Arc<str>,
}

/// A tenant or hub name that is not `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} name '{name}': use 1-63 of a-z, 0-9 and '-', not starting with '-'")]
pub struct InvalidName {
    kind: &'static str,
    name: String,
}

fn check_name(kind: &'static str, name: &str) -> Result<(), InvalidName> {
    let bytes = name.as_bytes();
    let valid = (1..=63).contains(&bytes.len())
        && bytes[0] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}

/// Check a tenant name alone (the same rule as in [`HubKey::new`]).
pub fn check_tenant(tenant: &str) -> Result<(), InvalidName> {
    check_name("tenant", tenant)
}

impl HubKey {
    pub fn new(tenant: &str, hub: &str) -> Result<Self, InvalidName> {
        check_name("tenant", tenant)?;
        check_name("hub", hub)?;
        Ok(Self {
            tenant: tenant.into(),
            hub: hub.into(),
        })
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn hub(&self) -> &str {
        &self.hub
    }
}

impl fmt::Display for HubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.hub)
    }
}
