//! The store of a cluster, in its Redis.
//!
//! Keys, under `CLUSTER:store:` (on a Redis Cluster under the hash tag
//! `{CLUSTER:store}:`, so that transactions may span them):
//! - `hubs`: set of `tenant/hub`;
//! - `hub:{tenant}/{hub}:seq`: last version number (kept after a delete, so
//!   numbers are never reused);
//! - `hub:{tenant}/{hub}:versions`: hash of version → [`VersionInfo`] JSON;
//! - `hub:{tenant}/{hub}:history`: list of activations, last = active;
//! - `hub:{tenant}/{hub}:wasm:{n}`: the component;
//! - `tenants`: hash of tenant → [`TenantConfig`] JSON (keys as digests);
//! - `vars`: hash of `tenant/name` → [`StoredVar`] JSON (secrets sealed);
//! - `code:{tenant}`: hash of the tenant's newest upload's compiled code
//!   ([`SharedCode`]'s fields), for a few minutes (see `put_code`).
//!
//! Tenant and hub names are `[a-z0-9-]`, so no key of one hub can be a key
//! of another. Multi-key changes run in MULTI/EXEC or a script, so readers
//! never see a version listed without its component.

use super::{HubRecord, MAX_HISTORY, StoreError, VersionInfo, hub_name, parse_hub_name};
use crate::names::HubKey;
use crate::redis_endpoint::{EndpointError, RedisConnection, RedisEndpoint};
use crate::runtime::SharedCode;
use crate::tenants::TenantConfig;
use crate::vars::StoredVar;
use redis::AsyncCommands as _;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// Longest a store operation may take (a 20 MB component included).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Pop the active version unless it is the only one; returns the new active.
const ROLLBACK: &str = r"
if redis.call('LLEN', KEYS[1]) < 2 then return false end
redis.call('RPOP', KEYS[1])
return redis.call('LINDEX', KEYS[1], -1)
";

pub struct RedisStore {
    endpoint: RedisEndpoint,
    prefix: String,
    /// The connection, once made; dropped after an error so the next
    /// operation reconnects.
    connection: Mutex<Option<RedisConnection>>,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl RedisStore {
    /// A store at `url` under `CLUSTER:store:`; connects on first use.
    pub fn new(url: &str, cluster: &str) -> Result<Self, EndpointError> {
        let endpoint = RedisEndpoint::parse(url)?;
        // On a Redis Cluster the prefix is one hash tag: every key sits on
        // one slot. One server keeps the plain prefix, so stores written
        // before clusters were supported are found where they are.
        let prefix = if endpoint.is_cluster() {
            format!("{{{cluster}:store}}")
        } else {
            format!("{cluster}:store")
        };
        Ok(Self {
            endpoint,
            prefix,
            connection: Mutex::new(None),
        })
    }

    fn hub_key(&self, key: &HubKey, part: &str) -> String {
        format!("{}:hub:{}:{part}", self.prefix, hub_name(key))
    }

    fn hubs_key(&self) -> String {
        format!("{}:hubs", self.prefix)
    }

    fn tenants_key(&self) -> String {
        format!("{}:tenants", self.prefix)
    }

    /// Run `op` on the connection, connecting first if need be.
    async fn run<T, F>(&self, op: impl FnOnce(RedisConnection) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let connection = {
            let mut slot = self.connection.lock().await;
            match slot.as_ref() {
                Some(connection) => connection.clone(),
                None => {
                    let connection = self.endpoint.connect().await.map_err(unavailable)?;
                    *slot = Some(connection.clone());
                    connection
                }
            }
        };
        let result = match tokio::time::timeout(TIMEOUT, op(connection)).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(unavailable("Redis did not answer in time")),
        };
        if result.is_err() {
            *self.connection.lock().await = None;
        }
        result
    }

    async fn exists(&self, key: &HubKey) -> Result<bool, StoreError> {
        let (hubs, name) = (self.hubs_key(), hub_name(key));
        self.run(|mut c| async move { c.sismember(hubs, name).await })
            .await
    }

    pub async fn add_version(
        &self,
        key: &HubKey,
        bytes: &[u8],
        activate: bool,
    ) -> Result<VersionInfo, StoreError> {
        let seq = self.hub_key(key, "seq");
        let version: u64 = self
            .run(|mut c| async move { c.incr(seq, 1u64).await })
            .await?;
        let info = VersionInfo::new(version, bytes);
        let json = serde_json::to_string(&info).map_err(unavailable)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set(self.hub_key(key, &format!("wasm:{version}")), bytes)
            .ignore()
            .hset(self.hub_key(key, "versions"), version, json)
            .ignore();
        if activate {
            let history = self.hub_key(key, "history");
            pipe.rpush(&history, version).ignore();
            pipe.ltrim(&history, -(MAX_HISTORY as isize), -1).ignore();
        }
        pipe.sadd(self.hubs_key(), hub_name(key)).ignore();
        self.run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        Ok(info)
    }

    pub async fn activate(&self, key: &HubKey, version: u64) -> Result<(), StoreError> {
        if !self.exists(key).await? {
            return Err(StoreError::NoSuchHub);
        }
        let versions = self.hub_key(key, "versions");
        let known: bool = self
            .run(|mut c| async move { c.hexists(versions, version).await })
            .await?;
        if !known {
            return Err(StoreError::NoSuchVersion(version));
        }
        let history = self.hub_key(key, "history");
        let active: Option<u64> = {
            let history = history.clone();
            self.run(|mut c| async move { c.lindex(history, -1).await })
                .await?
        };
        if active != Some(version) {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .rpush(&history, version)
                .ignore()
                .ltrim(&history, -(MAX_HISTORY as isize), -1)
                .ignore();
            self.run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                .await?;
        }
        Ok(())
    }

    pub async fn rollback(&self, key: &HubKey) -> Result<u64, StoreError> {
        if !self.exists(key).await? {
            return Err(StoreError::NoSuchHub);
        }
        let history = self.hub_key(key, "history");
        let active: Option<u64> = self
            .run(|mut c| async move {
                redis::Script::new(ROLLBACK)
                    .key(history)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        active.ok_or(StoreError::NoEarlierVersion)
    }

    pub async fn hub(&self, key: &HubKey) -> Result<Option<HubRecord>, StoreError> {
        if !self.exists(key).await? {
            return Ok(None);
        }
        let (versions, history) = (self.hub_key(key, "versions"), self.hub_key(key, "history"));
        let (versions, history): (HashMap<u64, String>, Vec<u64>) = self
            .run(|mut c| async move {
                redis::pipe()
                    .hgetall(versions)
                    .lrange(history, 0, -1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut versions: Vec<VersionInfo> = versions
            .into_values()
            .filter_map(|json| match serde_json::from_str(&json) {
                Ok(info) => Some(info),
                Err(error) => {
                    tracing::error!(hub = %key, %error, "skipping an unreadable version record");
                    None
                }
            })
            .collect();
        versions.sort_by_key(|v| v.version);
        Ok(Some(HubRecord { versions, history }))
    }

    pub async fn hubs(&self) -> Result<Vec<HubKey>, StoreError> {
        let hubs = self.hubs_key();
        let names: Vec<String> = self
            .run(|mut c| async move { c.smembers(hubs).await })
            .await?;
        Ok(names
            .iter()
            .filter_map(|name| parse_hub_name(name))
            .collect())
    }

    pub async fn bytes(&self, key: &HubKey, version: u64) -> Result<Vec<u8>, StoreError> {
        let wasm = self.hub_key(key, &format!("wasm:{version}"));
        let bytes: Option<Vec<u8>> = self.run(|mut c| async move { c.get(wasm).await }).await?;
        bytes.ok_or(StoreError::NoSuchVersion(version))
    }

    pub async fn remove_versions(&self, key: &HubKey, versions: &[u64]) -> Result<(), StoreError> {
        if versions.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hdel(self.hub_key(key, "versions"), versions)
            .ignore();
        let history = self.hub_key(key, "history");
        for version in versions {
            pipe.lrem(&history, 0, version)
                .ignore()
                .del(self.hub_key(key, &format!("wasm:{version}")))
                .ignore();
        }
        self.run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    pub async fn delete_hub(&self, key: &HubKey) -> Result<bool, StoreError> {
        let (hubs, name) = (self.hubs_key(), hub_name(key));
        let removed: u64 = self
            .run(|mut c| async move { c.srem(hubs, name).await })
            .await?;
        let versions = self.hub_key(key, "versions");
        let numbers: Vec<u64> = {
            let versions = versions.clone();
            self.run(|mut c| async move { c.hkeys(versions).await })
                .await?
        };
        let mut doomed = vec![versions, self.hub_key(key, "history")];
        doomed.extend(
            numbers
                .iter()
                .map(|n| self.hub_key(key, &format!("wasm:{n}"))),
        );
        self.run(|mut c| async move { c.del::<_, ()>(doomed).await })
            .await?;
        Ok(removed > 0)
    }

    pub async fn tenants(&self) -> Result<HashMap<String, TenantConfig>, StoreError> {
        let key = self.tenants_key();
        let stored: HashMap<String, String> = self
            .run(|mut c| async move { c.hgetall(key).await })
            .await?;
        Ok(stored
            .into_iter()
            .filter_map(|(name, json)| match serde_json::from_str(&json) {
                Ok(config) => Some((name, config)),
                Err(error) => {
                    tracing::error!(tenant = name, %error, "skipping an unreadable stored tenant");
                    None
                }
            })
            .collect())
    }

    pub async fn put_tenant(&self, name: &str, config: &TenantConfig) -> Result<(), StoreError> {
        let json = serde_json::to_string(config).map_err(unavailable)?;
        let (key, name) = (self.tenants_key(), name.to_owned());
        self.run(|mut c| async move { c.hset::<_, _, _, ()>(key, name, json).await })
            .await
    }

    pub async fn delete_tenant(&self, name: &str) -> Result<bool, StoreError> {
        let (key, name) = (self.tenants_key(), name.to_owned());
        let removed: u64 = self
            .run(|mut c| async move { c.hdel(key, name).await })
            .await?;
        Ok(removed > 0)
    }

    fn vars_key(&self) -> String {
        format!("{}:vars", self.prefix)
    }

    pub async fn vars(&self) -> Result<HashMap<String, HashMap<String, StoredVar>>, StoreError> {
        let key = self.vars_key();
        let stored: HashMap<String, String> = self
            .run(|mut c| async move { c.hgetall(key).await })
            .await?;
        let mut vars: HashMap<String, HashMap<String, StoredVar>> = HashMap::new();
        for (field, json) in stored {
            let (Some((tenant, name)), Ok(var)) = (
                field.split_once('/'),
                serde_json::from_str::<StoredVar>(&json),
            ) else {
                tracing::error!(field, "skipping an unreadable stored variable");
                continue;
            };
            vars.entry(tenant.to_owned())
                .or_default()
                .insert(name.to_owned(), var);
        }
        Ok(vars)
    }

    pub async fn put_var(
        &self,
        tenant: &str,
        name: &str,
        var: &StoredVar,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(var).map_err(unavailable)?;
        let (key, field) = (self.vars_key(), format!("{tenant}/{name}"));
        self.run(|mut c| async move { c.hset::<_, _, _, ()>(key, field, json).await })
            .await
    }

    pub async fn delete_var(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let (key, field) = (self.vars_key(), format!("{tenant}/{name}"));
        let removed: u64 = self
            .run(|mut c| async move { c.hdel(key, field).await })
            .await?;
        Ok(removed > 0)
    }

    fn code_key(&self, tenant: &str) -> String {
        format!("{}:code:{tenant}", self.prefix)
    }

    pub async fn put_code(
        &self,
        tenant: &str,
        code: &SharedCode,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.code_key(tenant);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .hset_multiple(
                &key,
                &[
                    ("sha256", code.sha256.as_bytes()),
                    ("tier", code.tier.as_bytes()),
                    ("engine", code.engine.as_bytes()),
                    ("mac", code.mac.as_slice()),
                    ("code", code.code.as_slice()),
                ],
            )
            .ignore()
            .pexpire(&key, ttl.as_millis() as i64)
            .ignore();
        self.run(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    pub async fn code(
        &self,
        tenant: &str,
        sha256: &str,
        tier: Option<&str>,
    ) -> Result<Option<SharedCode>, StoreError> {
        let key = self.code_key(tenant);
        let header: (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<Vec<u8>>,
        ) = {
            let key = key.clone();
            self.run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg(&["sha256", "tier", "engine", "mac"])
                    .query_async(&mut c)
                    .await
            })
            .await?
        };
        let (Some(stored_sha), Some(stored_tier), Some(engine), Some(mac)) = header else {
            return Ok(None);
        };
        if stored_sha != sha256 || tier.is_some_and(|wanted| wanted != stored_tier) {
            return Ok(None);
        }
        let code: Option<Vec<u8>> = self
            .run(|mut c| async move { c.hget(key, "code").await })
            .await?;
        Ok(code.map(|code| SharedCode {
            sha256: stored_sha,
            tier: stored_tier,
            engine,
            mac,
            code,
        }))
    }

    pub async fn code_tier(
        &self,
        tenant: &str,
        sha256: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = self.code_key(tenant);
        let (stored_sha, tier): (Option<String>, Option<String>) = self
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg(&["sha256", "tier"])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(tier.filter(|_| stored_sha.as_deref() == Some(sha256)))
    }

    pub async fn delete_code(&self, tenant: &str) -> Result<(), StoreError> {
        let key = self.code_key(tenant);
        self.run(|mut c| async move { c.del::<_, ()>(key).await })
            .await
    }
}
