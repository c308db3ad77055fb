//! Writing a node alone's in-memory tables (hub state, timers) to its data
//! directory: each file replaced whole by an atomic rename, so a crash
//! leaves the previous snapshot or the new one, from a thread that writes
//! what changed every [`EVERY`] (and by the owner at shutdown).

use serde::Serialize;
use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

/// How often changed tables are written.
pub const EVERY: Duration = Duration::from_secs(1);

/// Write `value` as JSON to `path`, through a `.partial` file renamed over it.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> std::io::Result<()> {
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, json)?;
    std::fs::rename(&partial, path)
}

/// Call `write` on `owner` every [`EVERY`], on a thread named `name`, until
/// the owner is dropped.
pub fn spawn<T: Send + Sync + 'static>(name: &str, owner: Weak<T>, write: fn(&T)) {
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                let Some(owner) = owner.upgrade() else { return };
                write(&owner);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, thread = name, "cannot start a snapshot thread; it is written at shutdown only");
    }
}
