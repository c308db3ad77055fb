//! The imports of world 0.2.0: those it shares with 0.1.0 call the 0.1.0
//! implementations (`host.rs`); `kv`, `items` and `presence` translate into
//! their capability modules ([`crate::kv`], [`crate::items`], and the
//! lifetime manager's presence); `clock` reads the clocks `wasi:clocks` gets;
//! `config` reads the node's copy of the tenant's variables ([`crate::vars`]). Each counts the limits it hits once a call,
//! like the rest (see `CallState::refuse`).

use super::CallState;
use super::host::kv_limits;
use super::worlds::{v1, v2};
use crate::kv::{KvCall, KvError};
use crate::lifetime::PresenceQuery;
use v2::hubhost::hub::{clock, config, groups, http, items, kv, log, presence, timers};

impl groups::Host for CallState {
    fn add(&mut self, connection: String, group: String) -> Result<(), String> {
        v1::hubhost::hub::groups::Host::add(self, connection, group)
    }

    fn remove(&mut self, connection: String, group: String) -> Result<(), String> {
        v1::hubhost::hub::groups::Host::remove(self, connection, group)
    }
}

impl log::Host for CallState {
    fn log(&mut self, level: log::Level, message: String) {
        use v1::hubhost::hub::log::Level as V1;
        let level = match level {
            log::Level::Debug => V1::Debug,
            log::Level::Info => V1::Info,
            log::Level::Warn => V1::Warn,
            log::Level::Error => V1::Error,
        };
        v1::hubhost::hub::log::Host::log(self, level, message);
    }
}

impl CallState {
    /// Run `op` on the call's `kv` context; errors become the hub's text,
    /// limits counted, backend failures logged (the hub sees a generic text).
    fn kv<T>(
        &mut self,
        op: impl FnOnce(&mut crate::kv::KvCall) -> Result<T, KvError>,
    ) -> Result<T, String> {
        self.lifetime()?;
        let (state, hub, limits) = (&self.state, &self.hub, &self.limits);
        let call = self
            .kv
            .get_or_insert_with(|| KvCall::new(state.clone(), hub.clone(), kv_limits(limits)));
        let result = op(call);
        result.map_err(|error| {
            if let KvError::Unavailable(detail) = &error {
                tracing::error!(
                    tenant = self.hub.tenant(),
                    hub = self.hub.hub(),
                    detail,
                    "hub state operation failed"
                );
            }
            match error.limit() {
                Some(limit) => self.refuse(limit, error.to_string()),
                None => error.to_string(),
            }
        })
    }

    /// Ask who is connected, counted against the call's operations.
    fn presence(&mut self, query: PresenceQuery, limit: u32) -> Result<(u64, Vec<String>), String> {
        if self.presence_left == 0 {
            let text = format!(
                "this call reached its limit of {} presence queries (hub_limits.max_state_ops_per_call)",
                self.limits().max_state_ops_per_call
            );
            return Err(self.refuse("hub_limits.max_state_ops_per_call", text));
        }
        self.presence_left -= 1;
        if let PresenceQuery::Group(name)
        | PresenceQuery::User(name)
        | PresenceQuery::Connection(name) = &query
        {
            super::host::check_names([name])?;
        }
        let max = self.limits().max_state_read_items;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if limit > max {
            let text = format!(
                "this query asks for {limit} ids, over the limit of {max} (hub_limits.max_state_read_items)"
            );
            return Err(self.refuse("hub_limits.max_state_read_items", text));
        }
        let lifetime = self.lifetime()?.clone();
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "no runtime for presence".to_owned())?;
        let presence = crate::workers::wait(&handle, lifetime.presence(&self.hub, query, limit));
        Ok((presence.count, presence.ids))
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> Result<Option<String>, String> {
        self.kv(|kv| kv.get(&key))
    }

    fn set(&mut self, key: String, value: String, ttl_ms: Option<u64>) -> Result<(), String> {
        self.kv(|kv| kv.set(&key, &value, ttl_ms))
    }

    fn delete(&mut self, key: String) -> Result<bool, String> {
        self.kv(|kv| kv.delete(&key))
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, String> {
        self.kv(|kv| kv.increment(&key, delta))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        value: String,
    ) -> Result<bool, String> {
        self.kv(|kv| kv.compare_and_swap(&key, expected.as_deref(), &value))
    }

    fn list_keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<String>, String> {
        self.kv(|kv| kv.list_keys(&prefix, after.as_deref(), limit))
    }

    fn list_push(&mut self, key: String, value: String, keep: u32) -> Result<u32, String> {
        self.kv(|kv| kv.list_push(&key, &value, keep))
    }

    fn list_range(&mut self, key: String, start: i64, stop: i64) -> Result<Vec<String>, String> {
        self.kv(|kv| kv.list_range(&key, start, stop))
    }

    fn list_trim(&mut self, key: String, start: i64, stop: i64) -> Result<(), String> {
        self.kv(|kv| kv.list_trim(&key, start, stop))
    }
}

impl items::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.items.as_ref()?.get(&key)
    }

    fn set(&mut self, key: String, value: Option<String>) -> Result<(), String> {
        let limits = crate::items::ItemLimits {
            max_items: self.limits().max_items_per_connection,
            max_bytes: self.limits().max_item_bytes_per_connection,
        };
        let Some(items) = self.items.clone() else {
            return Err("this call has no connection to keep items with".into());
        };
        items
            .set(&key, value, limits)
            .map_err(|error| match error.limit() {
                Some(limit) => self.refuse(limit, error.to_string()),
                None => error.to_string(),
            })
    }
}

impl CallState {
    /// Schedule `method(args)` at `due_ms`, `delay_ms` from now.
    fn schedule(
        &mut self,
        delay_ms: u64,
        due_ms: u64,
        method: String,
        args_json: String,
    ) -> Result<String, String> {
        use crate::timers::{Timer, TimerError, new_id};
        self.take_timer_op()?;
        let (min, max) = (
            self.limits.min_timer_delay_ms,
            self.limits.max_timer_delay_ms,
        );
        if !(min..=max).contains(&delay_ms) {
            let error = TimerError::Delay { min, max };
            return Err(self.refuse("hub_limits.max_timer_delay_ms", error.to_string()));
        }
        if method.is_empty() || method.len() > crate::names::MAX_METHOD_BYTES {
            return Err(TimerError::BadMethod.to_string());
        }
        if args_json.len() > self.limits.max_state_value_bytes {
            let text = format!(
                "a timer's arguments are {} bytes, over the limit of {} bytes (hub_limits.max_state_value_bytes)",
                args_json.len(),
                self.limits.max_state_value_bytes
            );
            return Err(self.refuse("hub_limits.max_state_value_bytes", text));
        }
        let args = super::json_array(args_json)?;
        let timer = Timer {
            id: new_id().map_err(|e| e.to_string())?,
            tenant: self.hub.tenant().to_owned(),
            hub: self.hub.hub().to_owned(),
            method,
            args: args.get().to_owned(),
            due_ms,
        };
        match self.timers.add(&timer, self.limits.max_timers) {
            Ok(()) => Ok(timer.id),
            Err(error) => Err(self.timer_error(error)),
        }
    }

    /// Count one timer operation of the call.
    fn take_timer_op(&mut self) -> Result<(), String> {
        if self.timer_ops_left == 0 {
            let text = format!(
                "this call reached its limit of {} timer operations (hub_limits.max_state_ops_per_call)",
                self.limits.max_state_ops_per_call
            );
            return Err(self.refuse("hub_limits.max_state_ops_per_call", text));
        }
        self.timer_ops_left -= 1;
        Ok(())
    }

    fn timer_error(&mut self, error: crate::timers::TimerError) -> String {
        if let crate::timers::TimerError::Unavailable(detail) = &error {
            tracing::error!(
                tenant = self.hub.tenant(),
                hub = self.hub.hub(),
                detail,
                "timer operation failed"
            );
        }
        match error.limit() {
            Some(limit) => self.refuse(limit, error.to_string()),
            None => error.to_string(),
        }
    }
}

impl timers::Host for CallState {
    fn schedule(
        &mut self,
        delay_ms: u64,
        method: String,
        args_json: String,
    ) -> Result<String, String> {
        let due = crate::timers::now_ms().saturating_add(delay_ms);
        CallState::schedule(self, delay_ms, due, method, args_json)
    }

    fn schedule_at(
        &mut self,
        at_ms: u64,
        method: String,
        args_json: String,
    ) -> Result<String, String> {
        let delay = at_ms.saturating_sub(crate::timers::now_ms());
        CallState::schedule(self, delay, at_ms, method, args_json)
    }

    fn cancel(&mut self, id: String) -> Result<bool, String> {
        self.take_timer_op()?;
        let result = self.timers.cancel(&self.hub, &id);
        result.map_err(|error| self.timer_error(error))
    }
}

impl http::Host for CallState {
    fn fetch(&mut self, request: http::Request) -> Result<http::Response, String> {
        use crate::fetch::{FetchError, Request, Rules, deadline};
        let refuse = |this: &mut Self, error: FetchError| match error.limit() {
            Some(limit) => this.refuse(limit, error.to_string()),
            None => error.to_string(),
        };
        if self.http_left == 0 {
            let error = FetchError::Requests(self.limits.max_http_requests_per_call);
            return Err(refuse(self, error));
        }
        self.http_left -= 1;
        let rules = Rules {
            allow: self.limits.http_allow.clone(),
            allow_private: self.limits.http_allow_private,
            max_request_bytes: self.limits.max_http_request_bytes,
            max_response_bytes: self.limits.max_http_response_bytes,
        };
        let call_deadline = self.call_started + self.limits.call_timeout;
        let by = deadline(call_deadline, self.limits.call_timeout);
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "no runtime for HTTP requests".to_owned())?;
        let request = Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
        };
        let url = request.url.clone();
        match crate::workers::wait(&handle, rules.fetch(request, by)) {
            Ok(response) => Ok(http::Response {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Err(error) => {
                // A refusal by a rule is logged once a call by `refuse`.
                if error.limit().is_none() {
                    tracing::info!(
                        tenant = self.hub.tenant(),
                        hub = self.hub.hub(),
                        url,
                        %error,
                        "outbound request failed"
                    );
                }
                Err(refuse(self, error))
            }
        }
    }
}

impl config::Host for CallState {
    fn get(&mut self, name: String) -> Option<String> {
        self.vars.get(&self.hub, &name)
    }
}

impl clock::Host for CallState {
    fn now_ms(&mut self) -> u64 {
        crate::millis::unix_now()
    }

    fn monotonic_ns(&mut self) -> u64 {
        super::wasi::monotonic_ns()
    }
}

impl presence::Host for CallState {
    fn connection_count(&mut self) -> Result<u64, String> {
        self.presence(PresenceQuery::Hub, 0).map(|(count, _)| count)
    }

    fn group_count(&mut self, group: String) -> Result<u64, String> {
        self.presence(PresenceQuery::Group(group), 0)
            .map(|(count, _)| count)
    }

    fn group_members(&mut self, group: String, limit: u32) -> Result<Vec<String>, String> {
        self.presence(PresenceQuery::Group(group), limit)
            .map(|(_, ids)| ids)
    }

    fn user_connections(&mut self, user: String, limit: u32) -> Result<Vec<String>, String> {
        self.presence(PresenceQuery::User(user), limit)
            .map(|(_, ids)| ids)
    }

    fn is_online(&mut self, user: String) -> Result<bool, String> {
        self.presence(PresenceQuery::User(user), 0)
            .map(|(count, _)| count > 0)
    }
}
