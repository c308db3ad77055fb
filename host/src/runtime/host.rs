//! The host side of the imports of world 0.1.0 (which 0.2.0 shares):
//! generated `Host` traits, translated into the domain's
//! [`HubLifetimeManager`]; and the state of an instance's store.
//!
//! Import functions never trap on a hub's mistakes: bad input is an `Err` the
//! hub can handle. Limits (sends per call, log lines) are counted here.

use super::HubLimits;
use super::limits::{LimitHit, Limiter};
use super::worlds::v1::hubhost::hub::log::Level;
use super::worlds::v1::hubhost::hub::types::Target as WitTarget;
use super::worlds::v1::hubhost::hub::{clients, groups, log, types};
use crate::items::Items;
use crate::kv::{KvBackend, KvCall, KvLimits, Quota};
use crate::lifetime::{GroupError, GroupLimits, HubLifetimeManager, Target};
use crate::names::{HubKey, MAX_METHOD_BYTES, MAX_NAME_BYTES};
use crate::outbound::Message;
use crate::quotas::LimitCounters;
use crate::timers::TimerBackend;
use crate::vars::Vars;
use serde_json::value::RawValue;
use std::sync::Arc;

/// The data of an instance's store. The per-call part is set by `begin`
/// and cleared by `end`, since an instance serves many calls.
pub struct CallState {
    pub(super) hub: HubKey,
    pub(super) limiter: Limiter,
    /// The tenant's limits, as of the call.
    pub(super) limits: HubLimits,
    pub(super) state: Arc<dyn KvBackend>,
    /// Tenant variables, for `config`.
    pub(super) vars: Arc<Vars>,
    pub(super) timers: Arc<dyn TimerBackend>,
    /// Timer operations the call has left (`hub_limits.max_state_ops_per_call`).
    pub(super) timer_ops_left: u32,
    /// When the call began: HTTP requests end by its deadline.
    pub(super) call_started: std::time::Instant,
    /// Epoch ticks until the call's deadline (`version.rs` counts them down).
    pub(super) ticks_left: u64,
    pub(super) http_left: u32,
    /// The call's `kv` context, made by its first state operation.
    pub(super) kv: Option<KvCall>,
    /// The calling connection's items.
    pub(super) items: Option<Arc<Items>>,
    pub(super) presence_left: u32,
    /// The client's upload streams of this call, by id; `None` once ended.
    pub(super) uploads: std::collections::HashMap<String, Option<crate::invocations::UploadRx>>,
    /// The node's lifetime manager, while a call runs.
    lifetime: Option<Arc<HubLifetimeManager>>,
    connection_id: Arc<str>,
    sends_left: u32,
    /// Bytes of arguments this call has sent.
    sent_bytes: usize,
    /// Largest arguments of one send, and of all the call's sends.
    max_send_bytes: usize,
    max_sent_bytes: usize,
    /// Names one send's target may hold.
    max_names: usize,
    group_changes_left: u32,
    group_limits: GroupLimits,
    log_lines_left: u32,
    /// Where limits hit are counted, and those hit in this call so far
    /// (each is counted and logged once a call).
    counters: LimitCounters,
    hit: Vec<&'static str>,
}

impl CallState {
    pub(super) fn new(
        hub: HubKey,
        limiter: Limiter,
        counters: LimitCounters,
        state: Arc<dyn KvBackend>,
        vars: Arc<Vars>,
        timers: Arc<dyn TimerBackend>,
    ) -> Self {
        Self {
            hub,
            limiter,
            limits: HubLimits::default(),
            state,
            vars,
            timers,
            timer_ops_left: 0,
            call_started: std::time::Instant::now(),
            ticks_left: 0,
            http_left: 0,
            kv: None,
            items: None,
            presence_left: 0,
            uploads: std::collections::HashMap::new(),
            lifetime: None,
            connection_id: "".into(),
            sends_left: 0,
            sent_bytes: 0,
            max_send_bytes: 0,
            max_sent_bytes: 0,
            max_names: 0,
            group_changes_left: 0,
            group_limits: GroupLimits::default(),
            log_lines_left: 0,
            counters,
            hit: Vec::new(),
        }
    }

    pub(super) fn begin(
        &mut self,
        lifetime: &Arc<HubLifetimeManager>,
        connection_id: &Arc<str>,
        items: &Arc<Items>,
        hub_limits: &HubLimits,
    ) {
        self.lifetime = Some(lifetime.clone());
        self.connection_id = connection_id.clone();
        self.items = Some(items.clone());
        self.kv = None;
        self.presence_left = hub_limits.max_state_ops_per_call;
        self.timer_ops_left = hub_limits.max_state_ops_per_call;
        self.call_started = std::time::Instant::now();
        self.http_left = hub_limits.max_http_requests_per_call;
        self.limits = hub_limits.clone();
        self.sends_left = hub_limits.max_sends_per_call;
        self.sent_bytes = 0;
        self.max_send_bytes = hub_limits.max_send_bytes;
        self.max_sent_bytes = hub_limits.max_sent_bytes_per_call;
        self.max_names = hub_limits.max_names_per_send;
        self.group_changes_left = hub_limits.max_group_changes_per_call;
        self.group_limits = GroupLimits {
            per_connection: hub_limits.max_groups_per_connection,
            per_hub: hub_limits.max_groups_per_hub,
        };
        self.log_lines_left = hub_limits.max_log_lines_per_call;
        self.hit.clear();
    }

    /// `limit` stopped something this call asked for: counted and logged
    /// (once a call); returns `text`, the hub's error.
    pub(super) fn refuse(&mut self, limit: &'static str, text: String) -> String {
        if !self.hit.contains(&limit) {
            self.hit.push(limit);
            self.counters.hit(self.hub.tenant(), limit);
            tracing::info!(
                tenant = self.hub.tenant(),
                hub = self.hub.hub(),
                connection = &*self.connection_id,
                limit,
                "hub call stopped at a limit: {text}"
            );
        }
        text
    }

    /// The call is over; returns the limit it hit, if any.
    pub(super) fn end(&mut self) -> Option<LimitHit> {
        self.lifetime = None;
        self.kv = None;
        self.items = None;
        // What the call left unread is dropped: the reader stops feeding it.
        self.uploads.clear();
        self.limiter.take_hit()
    }

    /// The calling connection's id (empty for a timer).
    pub(super) fn caller_connection(&self) -> &str {
        &self.connection_id
    }

    pub(super) fn limits(&self) -> &HubLimits {
        &self.limits
    }

    pub(super) fn lifetime(&self) -> Result<&Arc<HubLifetimeManager>, String> {
        // Imports only run inside a call, which always sets it.
        self.lifetime
            .as_ref()
            .ok_or_else(|| "no call in progress".to_owned())
    }

    /// Change a group, waiting for the owning node if it is another one.
    fn change_group(&mut self, connection: &str, group: &str, add: bool) -> Result<(), String> {
        if self.group_changes_left == 0 {
            return Err(self.refuse(
                "hub_limits.max_group_changes_per_call",
                "this call reached its limit of group changes (hub_limits.max_group_changes_per_call)"
                    .into(),
            ));
        }
        self.group_changes_left -= 1;
        let lifetime = self.lifetime()?;
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| "no runtime for group changes".to_owned())?;
        let change = async {
            if add {
                lifetime
                    .add_to_group(&self.hub, connection, group, self.group_limits)
                    .await
            } else {
                lifetime
                    .remove_from_group(&self.hub, connection, group)
                    .await
            }
        };
        match crate::workers::wait(&handle, change) {
            Ok(()) => Ok(()),
            Err(error @ GroupError::ConnectionGroups { .. }) => {
                Err(self.refuse("hub_limits.max_groups_per_connection", error.to_string()))
            }
            Err(error @ GroupError::HubGroups(_)) => {
                Err(self.refuse("hub_limits.max_groups_per_hub", error.to_string()))
            }
            Err(error) => Err(error.to_string()),
        }
    }
}

/// The `kv` part of a tenant's limits.
pub(super) fn kv_limits(limits: &HubLimits) -> KvLimits {
    KvLimits {
        quota: Quota {
            max_keys: limits.max_state_keys,
            max_bytes: limits.max_state_bytes,
        },
        max_value_bytes: limits.max_state_value_bytes,
        max_ops_per_call: limits.max_state_ops_per_call,
        max_list_items: limits.max_state_list_items,
        max_read_items: limits.max_state_read_items,
    }
}

/// A guest's `args-json`, checked: one JSON array. The error reaches the hub.
pub fn json_array(args_json: String) -> Result<Box<RawValue>, String> {
    let arguments = crate::protocol::json::checked_value(args_json)
        .map_err(|e| format!("args-json must be a JSON array: {e}"))?;
    if !arguments.get().starts_with('[') {
        return Err("args-json must be a JSON array".into());
    }
    Ok(arguments)
}

pub(super) fn check_names<'a>(names: impl IntoIterator<Item = &'a String>) -> Result<(), String> {
    if names
        .into_iter()
        .any(|n| n.is_empty() || n.len() > MAX_NAME_BYTES)
    {
        Err(format!(
            "group names and user ids must be 1 to {MAX_NAME_BYTES} bytes"
        ))
    } else {
        Ok(())
    }
}

impl From<WitTarget> for Target {
    fn from(target: WitTarget) -> Self {
        match target {
            WitTarget::All => Self::All,
            WitTarget::AllExcept(ids) => Self::AllExcept(ids),
            WitTarget::Connection(id) => Self::Connection(id),
            WitTarget::Connections(ids) => Self::Connections(ids),
            WitTarget::Group(group) => Self::Group(group),
            WitTarget::GroupExcept(g) => Self::GroupExcept {
                group: g.group,
                excluded: g.excluded,
            },
            WitTarget::Groups(groups) => Self::Groups(groups),
            WitTarget::User(user) => Self::User(user),
            WitTarget::Users(users) => Self::Users(users),
        }
    }
}

impl types::Host for CallState {}

impl CallState {
    /// Charge a send (or a client result's call) of `method` with
    /// `args_bytes` of arguments against the call's limits.
    pub(super) fn charge_send(&mut self, method: &str, args_bytes: usize) -> Result<(), String> {
        if self.sends_left == 0 {
            return Err(self.refuse(
                "hub_limits.max_sends_per_call",
                "this call reached its limit of sends".into(),
            ));
        }
        self.sends_left -= 1;
        if method.is_empty() || method.len() > MAX_METHOD_BYTES {
            return Err(format!(
                "method names must be 1 to {MAX_METHOD_BYTES} bytes"
            ));
        }
        if args_bytes > self.max_send_bytes {
            let text = format!(
                "this send's arguments are {args_bytes} bytes, over the limit of {} bytes (hub_limits.max_send_bytes)",
                self.max_send_bytes
            );
            return Err(self.refuse("hub_limits.max_send_bytes", text));
        }
        let sent = self.sent_bytes.saturating_add(args_bytes);
        if sent > self.max_sent_bytes {
            let text = format!(
                "this call reached its limit of {} bytes sent (hub_limits.max_sent_bytes_per_call)",
                self.max_sent_bytes
            );
            return Err(self.refuse("hub_limits.max_sent_bytes_per_call", text));
        }
        self.sent_bytes = sent;
        Ok(())
    }
}

impl clients::Host for CallState {
    fn send(&mut self, to: WitTarget, method: String, args_json: String) -> Result<(), String> {
        let to = Target::from(to);
        let names = match &to {
            Target::AllExcept(ids) | Target::Connections(ids) => ids.len(),
            Target::GroupExcept { excluded, .. } => excluded.len() + 1,
            Target::Groups(names) | Target::Users(names) => names.len(),
            Target::All | Target::Connection(_) | Target::Group(_) | Target::User(_) => 1,
        };
        if names > self.max_names {
            let text = format!(
                "this send's target names {names} connections, groups or users, over the limit of {} (hub_limits.max_names_per_send)",
                self.max_names
            );
            return Err(self.refuse("hub_limits.max_names_per_send", text));
        }
        match &to {
            Target::Group(name) | Target::GroupExcept { group: name, .. } | Target::User(name) => {
                check_names([name])?;
            }
            Target::Groups(names) | Target::Users(names) => check_names(names)?,
            _ => {}
        }
        self.charge_send(&method, args_json.len())?;
        let arguments = json_array(args_json)?;
        self.lifetime()?
            .send(&self.hub, to, Message::new(method, arguments));
        Ok(())
    }
}

impl groups::Host for CallState {
    fn add(&mut self, connection: String, group: String) -> Result<(), String> {
        self.change_group(&connection, &group, true)
    }

    fn remove(&mut self, connection: String, group: String) -> Result<(), String> {
        self.change_group(&connection, &group, false)
    }
}

impl CallState {
    /// What the guest wrote to stdout or stderr: into the log, line by line,
    /// counted against the call's log lines like the `log` import.
    pub(super) fn guest_output(&mut self, stderr: bool, bytes: &[u8]) {
        let (stream, level) = if stderr {
            ("stderr", Level::Warn)
        } else {
            ("stdout", Level::Info)
        };
        let text = String::from_utf8_lossy(bytes);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.write_log(level, &format!("{stream}: {line}"));
        }
    }
}

impl log::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        self.write_log(level, &message);
    }
}

impl CallState {
    fn write_log(&mut self, level: Level, message: &str) {
        if self.log_lines_left == 0 {
            return;
        }
        self.log_lines_left -= 1;
        let (tenant, hub, connection) = (self.hub.tenant(), self.hub.hub(), &*self.connection_id);
        // Keep a hub from writing unbounded lines into the host's log, or
        // lines of its own: line breaks and other control characters are
        // written escaped.
        let message = escape_controls(
            message
                .get(..message.floor_char_boundary(4096))
                .unwrap_or_default(),
        );
        match level {
            Level::Debug => tracing::debug!(tenant, hub, connection, "hub: {message}"),
            Level::Info => tracing::info!(tenant, hub, connection, "hub: {message}"),
            Level::Warn => tracing::warn!(tenant, hub, connection, "hub: {message}"),
            Level::Error => tracing::error!(tenant, hub, connection, "hub: {message}"),
        }
        if self.log_lines_left == 0 {
            self.counters
                .hit(tenant, "hub_limits.max_log_lines_per_call");
            tracing::warn!(
                tenant,
                hub,
                connection,
                limit = "hub_limits.max_log_lines_per_call",
                "hub reached its log limit for this call"
            );
        }
    }
}

/// `text` with every control character (line breaks, carriage returns,
/// terminal escapes) written as its Rust escape (`\n`, `\u{1b}`); other
/// characters, non-ASCII ones included, as they are.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped.into()
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("plain é 日本"), "plain é 日本");
        assert_eq!(
            escape_controls("a\nb\r\u{1b}[31m\t\u{7}"),
            r"a\nb\r\u{1b}[31m\t\u{7}"
        );
    }
}
