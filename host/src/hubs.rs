//! The hubs this node serves and the active version of each.
//!
//! Each hub has a [`HubSlot`] whose active version sits behind an atomic
//! pointer: a call takes its own `Arc` of the version, so replacing the
//! version never disturbs calls in flight, and connections (which live in the
//! host, not the component) never notice.

use crate::lifetime::HubKey;
use crate::runtime::HubVersion;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One hub's active version.
pub struct HubSlot {
    active: ArcSwap<HubVersion>,
}

impl HubSlot {
    pub fn new(version: HubVersion) -> Self {
        Self {
            active: ArcSwap::from_pointee(version),
        }
    }

    /// The version new calls run on.
    pub fn active(&self) -> Arc<HubVersion> {
        self.active.load_full()
    }

    /// Make `version` active; calls already running finish on the old one.
    pub fn replace(&self, version: HubVersion) {
        self.active.store(Arc::new(version));
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
    pub fn install(&self, version: HubVersion) {
        let key = version.key().clone();
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        match slots.get(&key) {
            Some(slot) => slot.replace(version),
            None => {
                slots.insert(key, Arc::new(HubSlot::new(version)));
            }
        }
    }
}
