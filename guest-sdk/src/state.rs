//! What a hub keeps: [`State`] (key-value state of the hub, on every node),
//! [`Items`] (values kept with the calling connection) and [`Presence`] (who
//! is connected). Values are stored as JSON text, typed through serde.
//!
//! Every error is a [`HubError::Failed`] with the host's text, which names
//! the limit when one was hit; return it with `?` and the client sees it.

use crate::bindings::hubhost::hub::{items, kv, presence};
use crate::methods::HubError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, HubError> {
    serde_json::to_string(value).map_err(|e| HubError::failed(format!("cannot store value: {e}")))
}

fn from_json<T: DeserializeOwned>(key: &str, text: &str) -> Result<T, HubError> {
    serde_json::from_str(text).map_err(|e| {
        HubError::failed(format!(
            "the value of '{key}' is not what was asked for: {e}"
        ))
    })
}

/// Key-value state of this hub: every node sees the same, a new version of
/// the hub keeps it, deleting the hub deletes it. Each operation is atomic.
/// Keys are any text of 1 to 512 bytes.
pub struct State {
    pub(crate) _private: (),
}

impl State {
    /// The value of `key`, if it has one.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, HubError> {
        match kv::get(key).map_err(HubError::Failed)? {
            Some(text) => from_json(key, &text).map(Some),
            None => Ok(None),
        }
    }

    /// Set `key` to `value`, kept until deleted.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), HubError> {
        kv::set(key, &to_json(value)?, None).map_err(HubError::Failed)
    }

    /// Set `key` to `value` for `ttl` (at least a millisecond).
    pub fn set_for<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), HubError> {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        kv::set(key, &to_json(value)?, Some(ttl)).map_err(HubError::Failed)
    }

    /// Remove `key` (its value and its list); whether there was either.
    pub fn delete(&self, key: &str) -> Result<bool, HubError> {
        kv::delete(key).map_err(HubError::Failed)
    }

    /// Add `delta` to the integer at `key` (0 if none); the new value.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, HubError> {
        kv::increment(key, delta).map_err(HubError::Failed)
    }

    /// Set `key` to `value` if it now holds `expected` (`None`: nothing);
    /// whether it did. Values are compared as their JSON text.
    pub fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        value: &T,
    ) -> Result<bool, HubError> {
        let expected = expected.map(to_json).transpose()?;
        kv::compare_and_swap(key, expected.as_deref(), &to_json(value)?).map_err(HubError::Failed)
    }

    /// Up to `limit` keys starting with `prefix`, after `after`, in order.
    pub fn keys(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, HubError> {
        kv::list_keys(prefix, after, limit).map_err(HubError::Failed)
    }

    /// Append `value` to the list at `key`, keeping its last `keep` items;
    /// the list's length.
    pub fn push<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        keep: u32,
    ) -> Result<u32, HubError> {
        kv::list_push(key, &to_json(value)?, keep).map_err(HubError::Failed)
    }

    /// Items `start..=stop` of the list at `key`, oldest first (negative
    /// counts from the end: `range(key, 0, -1)` is the whole list).
    pub fn range<T: DeserializeOwned>(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<T>, HubError> {
        kv::list_range(key, start, stop)
            .map_err(HubError::Failed)?
            .iter()
            .map(|text| from_json(key, text))
            .collect()
    }

    /// Keep only items `start..=stop` of the list at `key`.
    pub fn trim(&self, key: &str, start: i64, stop: i64) -> Result<(), HubError> {
        kv::list_trim(key, start, stop).map_err(HubError::Failed)
    }
}

/// Values kept with the calling connection (as ASP.NET Core's
/// `Context.Items`): seen by its later calls, kept across new versions of
/// the hub, gone when it disconnects.
pub struct Items {
    pub(crate) _private: (),
}

impl Items {
    /// The connection's value of `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, HubError> {
        items::get(key)
            .map(|text| from_json(key, &text))
            .transpose()
    }

    /// Set the connection's `key` to `value`.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), HubError> {
        items::set(key, Some(&to_json(value)?)).map_err(HubError::Failed)
    }

    /// Remove the connection's `key`.
    pub fn remove(&self, key: &str) -> Result<(), HubError> {
        items::set(key, None).map_err(HubError::Failed)
    }
}

/// Calls of this hub's own methods, later: once, on whichever node is alive
/// then, on the version active then, with no connection
/// ([`Context::from_timer`](crate::Context::from_timer) is true).
pub struct Timers {
    pub(crate) _private: (),
}

impl Timers {
    /// Call `method(args)` after `delay`; the timer's id.
    pub fn schedule<A: crate::ToArgs>(
        &self,
        delay: std::time::Duration,
        method: &str,
        args: A,
    ) -> Result<String, HubError> {
        let delay = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        crate::bindings::hubhost::hub::timers::schedule(delay, method, &args.to_args()?)
            .map_err(HubError::Failed)
    }

    /// Call `method(args)` at `at_ms` (Unix milliseconds); the timer's id.
    pub fn schedule_at<A: crate::ToArgs>(
        &self,
        at_ms: u64,
        method: &str,
        args: A,
    ) -> Result<String, HubError> {
        crate::bindings::hubhost::hub::timers::schedule_at(at_ms, method, &args.to_args()?)
            .map_err(HubError::Failed)
    }

    /// Cancel timer `id` of this hub; whether it was still pending.
    pub fn cancel(&self, id: &str) -> Result<bool, HubError> {
        crate::bindings::hubhost::hub::timers::cancel(id).map_err(HubError::Failed)
    }
}

/// Outbound HTTP, to the origins the operator allows the tenant.
pub struct Http {
    pub(crate) _private: (),
}

pub use crate::bindings::hubhost::hub::http::{Request, Response};

impl Http {
    /// Send `request` and wait for the whole response (within the call's
    /// deadline); redirects are followed within the allow-list.
    pub fn fetch(&self, request: &Request) -> Result<Response, HubError> {
        crate::bindings::hubhost::hub::http::fetch(request).map_err(HubError::Failed)
    }

    /// `GET url`.
    pub fn get(&self, url: &str) -> Result<Response, HubError> {
        self.fetch(&Request {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        })
    }
}

/// The tenant's variables and secrets (set with `hubhost vars set`).
pub struct Config {
    pub(crate) _private: (),
}

impl Config {
    /// The value of variable `name`, if the tenant has one. A secret reads
    /// as its value here only: keep it out of logs and messages.
    pub fn get(&self, name: &str) -> Option<String> {
        crate::bindings::hubhost::hub::config::get(name)
    }
}

/// Who is connected to this hub, on every node.
pub struct Presence {
    pub(crate) _private: (),
}

impl Presence {
    /// The hub's connections.
    pub fn connection_count(&self) -> Result<u64, HubError> {
        presence::connection_count().map_err(HubError::Failed)
    }

    /// The connections in `group`.
    pub fn group_count(&self, group: &str) -> Result<u64, HubError> {
        presence::group_count(group).map_err(HubError::Failed)
    }

    /// Up to `limit` connection ids of `group`.
    pub fn group_members(&self, group: &str, limit: u32) -> Result<Vec<String>, HubError> {
        presence::group_members(group, limit).map_err(HubError::Failed)
    }

    /// Up to `limit` connection ids of user `user_id`.
    pub fn user_connections(&self, user_id: &str, limit: u32) -> Result<Vec<String>, HubError> {
        presence::user_connections(user_id, limit).map_err(HubError::Failed)
    }

    /// Whether user `user_id` has a connection.
    pub fn is_online(&self, user_id: &str) -> Result<bool, HubError> {
        presence::is_online(user_id).map_err(HubError::Failed)
    }
}
