//! The timers of a node alone, in memory: due order, leases, counts per
//! tenant, under one lock (every operation touches a few entries). With a
//! data directory, every timer is written to `timers.json` within a second
//! of a change and at shutdown, and read back at start (a timer that was
//! firing when the node stopped fires again: at least once).

use super::{LEASE, Timer, TimerBackend, TimerError};
use crate::names::HubKey;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Table {
    timers: HashMap<String, Timer>,
    /// (due or lease expiry, id) of every timer: pending ones by due time,
    /// claimed ones by the end of their lease.
    queue: BTreeSet<(u64, String)>,
    /// When each timer is in `queue`, and whether it is claimed.
    at: HashMap<String, (u64, bool)>,
    counts: HashMap<String, u64>,
}

#[derive(Default)]
pub struct MemoryTimers {
    table: Mutex<Table>,
    /// Where the timers are written, if anywhere, and whether they changed.
    file: Option<PathBuf>,
    dirty: AtomicBool,
}

impl MemoryTimers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Timers kept in `file` too: read now, written within a second of a
    /// change and by [`TimerBackend::flush`].
    pub fn open(file: &Path) -> anyhow::Result<Arc<Self>> {
        let timers = Self {
            file: Some(file.to_owned()),
            ..Self::default()
        };
        match std::fs::read(file) {
            Ok(bytes) => {
                let stored: Vec<Timer> = serde_json::from_slice(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                for timer in &stored {
                    timers.insert(&mut timers.table(), timer);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot read {}: {e}", file.display()),
        }
        let timers = Arc::new(timers);
        crate::snapshot::spawn("hubhost-timer-file", Arc::downgrade(&timers), Self::write);
        Ok(timers)
    }

    fn insert(&self, table: &mut Table, timer: &Timer) {
        *table.counts.entry(timer.tenant.clone()).or_default() += 1;
        table.queue.insert((timer.due_ms, timer.id.clone()));
        table.at.insert(timer.id.clone(), (timer.due_ms, false));
        table.timers.insert(timer.id.clone(), timer.clone());
        self.dirty.store(true, Ordering::Relaxed);
    }

    fn write(&self) {
        let Some(file) = &self.file else { return };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let timers: Vec<Timer> = self.table().timers.values().cloned().collect();
        let written = crate::snapshot::write_json(file, &timers);
        if let Err(error) = written {
            tracing::error!(%error, file = %file.display(), "cannot write timers");
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Each operation checks before it changes: a poisoned table is whole.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn lease_ms() -> u64 {
    LEASE.as_millis() as u64
}

impl TimerBackend for MemoryTimers {
    fn add(&self, timer: &Timer, max_per_tenant: u64) -> Result<(), TimerError> {
        let mut table = self.table();
        let count = table.counts.get(&timer.tenant).copied().unwrap_or(0);
        if count >= max_per_tenant {
            return Err(TimerError::Count(max_per_tenant));
        }
        self.insert(&mut table, timer);
        Ok(())
    }

    fn cancel(&self, hub: &HubKey, id: &str) -> Result<bool, TimerError> {
        let mut table = self.table();
        let mine = table
            .timers
            .get(id)
            .is_some_and(|t| t.tenant == hub.tenant() && t.hub == hub.hub());
        let Some(&(at, claimed)) = table.at.get(id) else {
            return Ok(false);
        };
        if !mine || claimed {
            return Ok(false);
        }
        table.queue.remove(&(at, id.to_owned()));
        table.at.remove(id);
        if let Some(timer) = table.timers.remove(id)
            && let Some(count) = table.counts.get_mut(&timer.tenant)
        {
            *count = count.saturating_sub(1);
        }
        self.dirty.store(true, Ordering::Relaxed);
        Ok(true)
    }

    fn claim(&self, now_ms: u64, max: usize) -> Result<Vec<Timer>, TimerError> {
        let mut table = self.table();
        let due: Vec<(u64, String)> = table
            .queue
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(max)
            .cloned()
            .collect();
        let mut claimed = Vec::new();
        for entry in due {
            table.queue.remove(&entry);
            let until = now_ms + lease_ms();
            table.queue.insert((until, entry.1.clone()));
            table.at.insert(entry.1.clone(), (until, true));
            if let Some(timer) = table.timers.get(&entry.1) {
                claimed.push(timer.clone());
            }
        }
        Ok(claimed)
    }

    fn renew(&self, ids: &[String]) -> Result<(), TimerError> {
        let mut table = self.table();
        let until = super::now_ms() + lease_ms();
        for id in ids {
            if let Some(&(at, true)) = table.at.get(id) {
                table.queue.remove(&(at, id.clone()));
                table.queue.insert((until, id.clone()));
                table.at.insert(id.clone(), (until, true));
            }
        }
        Ok(())
    }

    fn done(&self, timer: &Timer) -> Result<(), TimerError> {
        let mut table = self.table();
        if let Some((at, _)) = table.at.remove(&timer.id) {
            table.queue.remove(&(at, timer.id.clone()));
        }
        if table.timers.remove(&timer.id).is_some()
            && let Some(count) = table.counts.get_mut(&timer.tenant)
        {
            *count = count.saturating_sub(1);
        }
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn count(&self, tenant: &str) -> Result<u64, TimerError> {
        Ok(self.table().counts.get(tenant).copied().unwrap_or(0))
    }

    fn flush(&self) {
        self.write();
    }
}
