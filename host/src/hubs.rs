//! The hubs this node serves and the active version of each.
//!
//! Each hub has a [`HubSlot`] whose active version sits behind an atomic
//! pointer: a call takes its own `Arc` of the version, so replacing the
//! version never disturbs calls in flight (they finish on the old one), and
//! connections (which live in the host, not the component) never notice.

use crate::monitoring;
use crate::names::HubKey;
use crate::runtime::HubVersion;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Where a served version came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "from")]
pub enum Source {
    /// `--hub` or `[[hubs]]` in the configuration.
    File { path: PathBuf },
    /// A version in the hub store (uploaded through the admin API).
    Store { version: u64 },
    /// A file in the watched directory (`--watch-dir`).
    Watch { path: PathBuf },
}

/// A version as served: the compiled component and where it came from.
pub struct Installed {
    pub version: HubVersion,
    pub source: Source,
}

impl std::ops::Deref for Installed {
    type Target = HubVersion;
    fn deref(&self) -> &HubVersion {
        &self.version
    }
}

/// One hub's active version.
pub struct HubSlot {
    active: ArcSwap<Installed>,
    /// Client invocations on this node, every version (the dashboard's rate).
    invocations: AtomicU64,
}

impl HubSlot {
    fn new(installed: Installed) -> Self {
        Self {
            active: ArcSwap::from_pointee(installed),
            invocations: AtomicU64::new(0),
        }
    }

    /// Count one client invocation.
    pub fn invoked(&self) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }

    /// The version new calls run on.
    pub fn active(&self) -> Arc<Installed> {
        self.active.load_full()
    }
}

/// Every hub on this node, by tenant and name.
#[derive(Default)]
pub struct Hubs {
    slots: RwLock<HashMap<HubKey, Arc<HubSlot>>>,
}

impl Hubs {
    pub fn get(&self, key: &HubKey) -> Option<Arc<HubSlot>> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Serve `version` for its hub: a new hub, or a new active version.
    pub fn install(&self, version: HubVersion, source: Source) {
        let key = version.key().clone();
        let stored = match &source {
            Source::Store { version } => *version,
            _ => 0,
        };
        monitoring::installed(key.tenant(), key.hub(), stored);
        let installed = Installed { version, source };
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        match slots.get(&key) {
            Some(slot) => slot.active.store(Arc::new(installed)),
            None => {
                slots.insert(key, Arc::new(HubSlot::new(installed)));
            }
        }
    }

    /// Stop serving `key`; its connections keep their slot until closed.
    pub fn remove(&self, key: &HubKey) -> bool {
        monitoring::active_version(key.tenant(), key.hub(), 0);
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
            .is_some()
    }

    /// Every hub served, with where its active version came from.
    pub fn list(&self) -> Vec<(HubKey, Source)> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .map(|(key, slot)| (key.clone(), slot.active().source.clone()))
            .collect()
    }
}
