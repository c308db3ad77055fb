//! Hub state of a cluster, in its Redis: every operation is one call of one
//! Lua script (`kv.lua`), atomic and one round trip.
//!
//! Keys, under `{cluster}:kv:{TENANT}:` (the tenant is the hash tag, so a
//! tenant's state and its usage sit on one Redis Cluster slot and a script
//! may touch both): `HUB:v`, `HUB:x`, `HUB:k`, `HUB:lb`, `HUB:l:KEY` (see the
//! script) and `#usage`, the tenant's keys and bytes. A key's text only ever
//! follows the hub's name, which has no `:`, so no hub's keys can be another's.

use super::{KvBackend, KvError, Quota};
use crate::names::HubKey;
use crate::redis_script::{ScriptClient, ScriptError};
use std::time::Duration;

pub struct RedisKv {
    prefix: String,
    script: ScriptClient,
}

/// An operation and its arguments, as the script takes them.
struct Op {
    args: Vec<String>,
}

impl Op {
    fn new(name: &str) -> Self {
        Self {
            args: vec![name.to_owned()],
        }
    }

    fn arg(mut self, arg: impl ToString) -> Self {
        self.args.push(arg.to_string());
        self
    }

    fn quota(self, quota: Quota) -> Self {
        self.arg(quota.max_keys).arg(quota.max_bytes)
    }
}

impl RedisKv {
    /// State at `url` under `{cluster}:kv:`; connects on first use. Must be
    /// made inside the tokio runtime its operations will wait on.
    pub fn new(url: &str, cluster: &str) -> anyhow::Result<Self> {
        Ok(Self {
            prefix: format!("{cluster}:kv:"),
            script: ScriptClient::new(url, include_str!("kv.lua"))?,
        })
    }

    fn base(&self, hub: &HubKey) -> String {
        format!("{}{{{}}}:{}", self.prefix, hub.tenant(), hub.hub())
    }

    fn usage_key(&self, tenant: &str) -> String {
        format!("{}{{{tenant}}}#usage", self.prefix)
    }

    /// Run `op` for `tenant` (and `hub`, for hub operations), waiting on the
    /// runtime from inside the hub call (see `workers`).
    fn run<T: redis::FromRedisValue>(
        &self,
        tenant: &str,
        base: String,
        op: Op,
    ) -> Result<T, KvError> {
        match self.script.run(&[base, self.usage_key(tenant)], &op.args) {
            Ok(value) => Ok(value),
            Err(ScriptError::Redis(error)) => Err(self.failed(error)),
            Err(ScriptError::Timeout) => {
                Err(KvError::Unavailable("Redis did not answer in time".into()))
            }
        }
    }

    fn failed(&self, error: redis::RedisError) -> KvError {
        let text = error.to_string();
        let code = ["KVKEYS", "KVBYTES", "KVNOTINTEGER", "KVOVERFLOW", "KVREAD"]
            .into_iter()
            .find(|code| text.contains(code));
        match code {
            // The quota's figure is the caller's; filled in by `with_quota`.
            Some("KVKEYS") => KvError::Keys(0),
            Some("KVBYTES") => KvError::Bytes(0),
            Some("KVNOTINTEGER") => KvError::NotInteger,
            Some("KVOVERFLOW") => KvError::Overflow,
            Some(_) => {
                // "KVREAD <count>", however the client formats the reply.
                let count = text
                    .split("KVREAD")
                    .nth(1)
                    .map(|rest| rest.trim_start_matches(|c: char| !c.is_ascii_digit()))
                    .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                KvError::ReadItems { count, limit: 0 }
            }
            None => KvError::Unavailable(text),
        }
    }

    fn hub_op<T: redis::FromRedisValue>(&self, hub: &HubKey, op: Op) -> Result<T, KvError> {
        self.run(hub.tenant(), self.base(hub), op)
    }
}

/// `result` with the quota's figures in its error.
fn with_quota<T>(result: Result<T, KvError>, quota: Quota) -> Result<T, KvError> {
    result.map_err(|error| match error {
        KvError::Keys(_) => KvError::Keys(quota.max_keys),
        KvError::Bytes(_) => KvError::Bytes(quota.max_bytes),
        other => other,
    })
}

impl KvBackend for RedisKv {
    fn get(&self, hub: &HubKey, key: &str) -> Result<Option<String>, KvError> {
        self.hub_op(hub, Op::new("get").arg(key))
    }

    fn set(
        &self,
        hub: &HubKey,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
        quota: Quota,
    ) -> Result<(), KvError> {
        let ttl = ttl.map_or(0, |ttl| ttl.as_millis().max(1));
        let op = Op::new("set").arg(key).arg(value).arg(ttl).quota(quota);
        with_quota(self.hub_op::<i64>(hub, op), quota).map(drop)
    }

    fn delete(&self, hub: &HubKey, key: &str) -> Result<bool, KvError> {
        self.hub_op::<i64>(hub, Op::new("delete").arg(key))
            .map(|n| n == 1)
    }

    fn increment(&self, hub: &HubKey, key: &str, delta: i64, quota: Quota) -> Result<i64, KvError> {
        let op = Op::new("incr").arg(key).arg(delta).quota(quota);
        let text: String = with_quota(self.hub_op(hub, op), quota)?;
        text.parse()
            .map_err(|_| KvError::Unavailable(format!("increment answered {text:?}")))
    }

    fn compare_and_swap(
        &self,
        hub: &HubKey,
        key: &str,
        expected: Option<&str>,
        value: &str,
        quota: Quota,
    ) -> Result<bool, KvError> {
        let op = Op::new("cas")
            .arg(key)
            .arg(u8::from(expected.is_some()))
            .arg(expected.unwrap_or_default())
            .arg(value)
            .quota(quota);
        with_quota(self.hub_op::<i64>(hub, op), quota).map(|n| n == 1)
    }

    fn list_keys(
        &self,
        hub: &HubKey,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let op = Op::new("keys")
            .arg(prefix)
            .arg(after.unwrap_or_default())
            .arg(u8::from(after.is_some()))
            .arg(limit);
        self.hub_op(hub, op)
    }

    fn list_push(
        &self,
        hub: &HubKey,
        key: &str,
        value: &str,
        keep: usize,
        quota: Quota,
    ) -> Result<usize, KvError> {
        let op = Op::new("push").arg(key).arg(value).arg(keep).quota(quota);
        with_quota(self.hub_op(hub, op), quota)
    }

    fn list_range(
        &self,
        hub: &HubKey,
        key: &str,
        start: i64,
        stop: i64,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let op = Op::new("range").arg(key).arg(start).arg(stop).arg(limit);
        self.hub_op(hub, op).map_err(|error| match error {
            KvError::ReadItems { count, .. } => KvError::ReadItems { count, limit },
            other => other,
        })
    }

    fn list_trim(&self, hub: &HubKey, key: &str, start: i64, stop: i64) -> Result<(), KvError> {
        let op = Op::new("trim").arg(key).arg(start).arg(stop);
        self.hub_op::<i64>(hub, op).map(drop)
    }

    fn delete_hub(&self, hub: &HubKey) -> Result<(), KvError> {
        self.hub_op::<i64>(hub, Op::new("delete-hub")).map(drop)
    }

    fn usage(&self, tenant: &str) -> Result<(u64, u64), KvError> {
        let base = format!("{}{{{tenant}}}#none", self.prefix);
        let (keys, bytes): (i64, i64) = self.run(tenant, base, Op::new("usage"))?;
        Ok((keys.max(0) as u64, bytes.max(0) as u64))
    }
}
