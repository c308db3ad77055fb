//! A cluster's timers, in its Redis under `{cluster}:timers:` — a queue
//! (sorted set of pending timers by due time and claimed ones by lease end),
//! the timers (hash), the claimed ids (set) and the counts per tenant (hash)
//! — changed only by one Lua script (`timers.lua`), one round trip each.

use super::{LEASE, Timer, TimerBackend, TimerError};
use crate::names::HubKey;
use crate::redis_script::{ScriptClient, ScriptError};

pub struct RedisTimers {
    keys: [String; 4],
    script: ScriptClient,
}

impl RedisTimers {
    /// Timers at `url` under `{cluster}:timers:`; connects on first use.
    /// Must be made inside the tokio runtime its operations will wait on.
    pub fn new(url: &str, cluster: &str) -> anyhow::Result<Self> {
        // One hash tag: the four keys sit on one Redis Cluster slot.
        let base = format!("{{{cluster}:timers}}");
        Ok(Self {
            keys: ["queue", "data", "claimed", "counts"].map(|k| format!("{base}:{k}")),
            script: ScriptClient::new(url, include_str!("timers.lua"))?,
        })
    }

    fn run<T: redis::FromRedisValue>(&self, args: &[String]) -> Result<T, TimerError> {
        match self.script.run(&self.keys, args) {
            Ok(value) => Ok(value),
            Err(ScriptError::Redis(error)) if error.to_string().contains("TIMERCOUNT") => {
                Err(TimerError::Count(0))
            }
            Err(ScriptError::Redis(error)) => Err(TimerError::Unavailable(error.to_string())),
            Err(ScriptError::Timeout) => Err(TimerError::Unavailable(
                "Redis did not answer in time".into(),
            )),
        }
    }
}

fn lease_ms() -> String {
    LEASE.as_millis().to_string()
}

impl TimerBackend for RedisTimers {
    fn add(&self, timer: &Timer, max_per_tenant: u64) -> Result<(), TimerError> {
        let json =
            serde_json::to_string(timer).map_err(|e| TimerError::Unavailable(e.to_string()))?;
        let args = [
            "add".into(),
            timer.id.clone(),
            timer.tenant.clone(),
            timer.due_ms.to_string(),
            json,
            max_per_tenant.to_string(),
        ];
        match self.run::<i64>(&args) {
            Err(TimerError::Count(_)) => Err(TimerError::Count(max_per_tenant)),
            other => other.map(drop),
        }
    }

    fn cancel(&self, hub: &HubKey, id: &str) -> Result<bool, TimerError> {
        let args = [
            "cancel".into(),
            id.to_owned(),
            hub.tenant().to_owned(),
            hub.hub().to_owned(),
        ];
        self.run::<i64>(&args).map(|n| n == 1)
    }

    fn claim(&self, now_ms: u64, max: usize) -> Result<Vec<Timer>, TimerError> {
        let args = [
            "claim".into(),
            now_ms.to_string(),
            lease_ms(),
            max.to_string(),
        ];
        let found: Vec<String> = self.run(&args)?;
        Ok(found
            .iter()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(timer) => Some(timer),
                Err(error) => {
                    tracing::error!(%error, "dropping an unreadable stored timer");
                    None
                }
            })
            .collect())
    }

    fn renew(&self, ids: &[String]) -> Result<(), TimerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = vec!["renew".into(), super::now_ms().to_string(), lease_ms()];
        args.extend_from_slice(ids);
        self.run::<i64>(&args).map(drop)
    }

    fn done(&self, timer: &Timer) -> Result<(), TimerError> {
        let args = ["done".into(), timer.id.clone(), timer.tenant.clone()];
        self.run::<i64>(&args).map(drop)
    }

    fn count(&self, tenant: &str) -> Result<u64, TimerError> {
        let n: i64 = self.run(&["count".into(), tenant.to_owned()])?;
        Ok(n.max(0) as u64)
    }
}
