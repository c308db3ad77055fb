//! Development: serve `DIR/TENANT/HUB.wasm` files and reload each when it
//! changes (`--watch-dir`). Polling, not file-system events: it works the
//! same on every platform and in containers, and a build that writes a file
//! in several steps is picked up once its size and time settle.
//!
//! Watched hubs are served by this node only; they never reach the store.
//! A version in the store wins over a watched file.

use super::Deployer;
use crate::hubs::Source;
use crate::names::HubKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, SystemTime};

const POLL: Duration = Duration::from_millis(300);

/// What a file looked like when last seen.
type Stamp = (u64, Option<SystemTime>);

/// Every `DIR/TENANT/HUB.wasm` with valid names.
fn scan(dir: &Path) -> HashMap<HubKey, (PathBuf, Stamp)> {
    let mut found = HashMap::new();
    let Ok(tenants) = std::fs::read_dir(dir) else {
        return found;
    };
    for tenant in tenants.flatten() {
        let Ok(files) = std::fs::read_dir(tenant.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|ext| ext != "wasm") {
                continue;
            }
            let (Some(tenant), Some(hub)) = (
                tenant.file_name().to_str().map(str::to_owned),
                path.file_stem().and_then(|s| s.to_str()).map(str::to_owned),
            ) else {
                continue;
            };
            let Ok(key) = HubKey::new(&tenant, &hub) else {
                tracing::warn!(path = %path.display(), "watched file ignored: not TENANT/HUB.wasm with valid names");
                continue;
            };
            if let Ok(meta) = file.metadata() {
                found.insert(key, (path, (meta.len(), meta.modified().ok())));
            }
        }
    }
    found
}

/// Watch `dir` until the deployer is dropped.
pub async fn watch(deployer: Weak<Deployer>, dir: PathBuf) {
    tracing::info!(dir = %dir.display(), "watching for hub components (TENANT/HUB.wasm)");
    let mut seen: HashMap<HubKey, Stamp> = HashMap::new();
    loop {
        let scan_dir = dir.clone();
        let found = tokio::task::spawn_blocking(move || scan(&scan_dir))
            .await
            .unwrap_or_default();
        let Some(deployer) = deployer.upgrade() else {
            return;
        };
        for (key, (path, stamp)) in &found {
            if seen.get(key) == Some(stamp) {
                continue;
            }
            seen.insert(key.clone(), *stamp);
            if matches!(deployer.served(key), Some(Source::Store { .. })) {
                tracing::warn!(hub = %key, "watched file ignored: the store has an active version");
                continue;
            }
            let bytes = match tokio::fs::read(path).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(hub = %key, %error, "cannot read watched file");
                    continue;
                }
            };
            match deployer.compile(key, bytes.into()).await {
                Ok(version) => {
                    deployer
                        .hubs
                        .install(version, Source::Watch { path: path.clone() });
                    tracing::info!(hub = %key, path = %path.display(), "watched hub (re)loaded");
                }
                Err(error) => {
                    tracing::error!(hub = %key, path = %path.display(), "watched hub not loaded: {error}")
                }
            }
        }
        seen.retain(|key, _| {
            let present = found.contains_key(key);
            if !present && matches!(deployer.served(key), Some(Source::Watch { .. })) {
                deployer.unserve(key);
            }
            present
        });
        drop(deployer);
        tokio::time::sleep(POLL).await;
    }
}
