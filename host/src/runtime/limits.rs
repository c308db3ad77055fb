//! The limits of hub calls ([`HubLimits`], a setting per tenant), and the
//! [`Limiter`] of one store: what one hub instance may take: memory for the whole store (all its
//! linear memories, and its tables at [`TABLE_ELEMENT_BYTES`] an element,
//! together), table elements, and how many instances, tables and memories
//! it may create. A limit that is hit traps the call, and is recorded so
//! that the caller's error can name it.

use crate::lifetime::GroupLimits;
use std::time::Duration;
use wasmtime::ResourceLimiter;

/// Limits applied to every call of a hub: the `[hub_limits]` section, and
/// each tenant's `hub_limits` over it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct HubLimits {
    /// Memory per instance, in bytes: its linear memories and its tables
    /// (8 bytes an element) together.
    #[arg(
        long = "hub-memory-bytes",
        env = "HUBHOST_HUB_MEMORY_BYTES",
        required = false
    )]
    pub memory_bytes: usize,
    /// Wall-clock deadline of one hub call, in milliseconds.
    #[arg(long = "call-timeout-ms", env = "HUBHOST_CALL_TIMEOUT_MS", required = false, value_parser = crate::millis::positive::parse)]
    #[serde(rename = "call_timeout_ms", with = "crate::millis::positive")]
    pub call_timeout: Duration,
    /// Messages one call may send.
    #[arg(skip)]
    pub max_sends_per_call: u32,
    /// Log lines one call may write; further lines are dropped.
    #[arg(skip)]
    pub max_log_lines_per_call: u32,
    /// Size of one call's JSON result, and of a hub's error text, in bytes.
    #[arg(skip)]
    pub max_result_bytes: usize,
    /// Size of one send's arguments (its JSON array), in bytes.
    #[arg(skip)]
    pub max_send_bytes: usize,
    /// Bytes of arguments one call may send, all its sends together: what a
    /// call can make the host hold for its recipients.
    #[arg(skip)]
    pub max_sent_bytes_per_call: usize,
    /// Connection ids, group names or user ids one send's target may name
    /// (excluded ids included): delivery's work per send.
    #[arg(skip)]
    pub max_names_per_send: usize,
    /// Group additions and removals one call may make.
    #[arg(skip)]
    pub max_group_changes_per_call: u32,
    /// Groups one connection may be in.
    #[arg(skip)]
    pub max_groups_per_connection: usize,
    /// Groups with members one hub may have on a node (each is a backplane
    /// subscription).
    #[arg(skip)]
    pub max_groups_per_hub: usize,
    /// Reuse instances between calls (the default), or instantiate afresh
    /// for every call (slower; nothing can carry over between calls).
    #[arg(skip)]
    pub reuse_instances: bool,
    /// Core instances one hub instance may create. Toolchains differ
    /// (componentize-py links several modules), so these counts are
    /// generous; memory is what is really bounded.
    #[arg(skip)]
    pub max_instances: usize,
    /// Tables one hub instance may create.
    #[arg(skip)]
    pub max_tables: usize,
    /// Memories one hub instance may create.
    #[arg(skip)]
    pub max_memories: usize,
    /// Elements per table.
    #[arg(skip)]
    pub max_table_elements: usize,
    /// Memory the tenant's idle instances may keep between calls, all its
    /// hubs and versions together, on each node.
    #[arg(skip)]
    pub max_idle_memory_bytes: usize,
    /// Hub calls the tenant runs at once on each node, all its connections
    /// together; more wait for one to finish. Bounds the tenant's running
    /// instances (each up to `memory_bytes`) and threads.
    #[arg(skip)]
    pub max_concurrent_calls: usize,
    /// Keys the tenant's hub state may hold, all its hubs together
    /// (cluster-wide on Redis, per node otherwise).
    #[arg(skip)]
    pub max_state_keys: u64,
    /// Bytes the tenant's hub state may hold (keys, values and list items).
    #[arg(skip)]
    pub max_state_bytes: u64,
    /// Size of one state value or list item, in bytes.
    #[arg(skip)]
    pub max_state_value_bytes: usize,
    /// State operations one call may make, and presence queries (each).
    #[arg(skip)]
    pub max_state_ops_per_call: u32,
    /// Items a state list may keep.
    #[arg(skip)]
    pub max_state_list_items: usize,
    /// Keys, list items or connection ids one read may return.
    #[arg(skip)]
    pub max_state_read_items: usize,
    /// Items a hub may keep with one connection.
    #[arg(skip)]
    pub max_items_per_connection: usize,
    /// Streams (either way) and awaited client results one connection may
    /// have open at once: each may hold a hub call, and so a call slot.
    #[arg(skip)]
    pub max_open_invocations_per_connection: usize,
    /// Bytes of items (keys and values) a hub may keep with one connection.
    #[arg(skip)]
    pub max_item_bytes_per_connection: usize,
    /// Bytes of messages a stateful-reconnect connection keeps until the
    /// client acknowledges them, to replay after a reconnect; past it the
    /// connection is closed (ASP.NET Core's default).
    #[arg(skip)]
    pub stateful_reconnect_buffer_bytes: usize,
    /// Timers the tenant may have pending (cluster-wide on Redis).
    #[arg(skip)]
    pub max_timers: u64,
    /// Shortest delay of a timer, in milliseconds.
    #[arg(skip)]
    pub min_timer_delay_ms: u64,
    /// Longest delay of a timer, in milliseconds.
    #[arg(skip)]
    pub max_timer_delay_ms: u64,
    /// Origins (`scheme://host[:port]`) the tenant's hubs may send HTTP
    /// requests to; none by default.
    #[arg(skip)]
    pub http_allow: Vec<String>,
    /// Let those requests reach private and loopback addresses.
    #[arg(skip)]
    pub http_allow_private: bool,
    /// HTTP requests one call may send.
    #[arg(skip)]
    pub max_http_requests_per_call: u32,
    /// Size of one request's body, in bytes.
    #[arg(skip)]
    pub max_http_request_bytes: usize,
    /// Size of one response's body, in bytes.
    #[arg(skip)]
    pub max_http_response_bytes: usize,
    /// Server API requests per second a tenant may make of one node
    /// (bursts of as many); more are answered 429.
    #[arg(skip)]
    pub max_api_requests_per_second: u32,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(5),
            max_sends_per_call: 1_000,
            max_log_lines_per_call: 100,
            max_result_bytes: 1 << 20,
            max_send_bytes: 1 << 20,
            max_sent_bytes_per_call: 16 << 20,
            max_names_per_send: 1_000,
            max_group_changes_per_call: 100,
            max_groups_per_connection: GroupLimits::default().per_connection,
            max_groups_per_hub: GroupLimits::default().per_hub,
            reuse_instances: true,
            max_instances: 64,
            max_tables: 64,
            max_memories: 16,
            max_table_elements: 1 << 20,
            max_idle_memory_bytes: 128 << 20,
            max_concurrent_calls: 8,
            max_state_keys: 10_000,
            max_state_bytes: 16 << 20,
            max_state_value_bytes: 64 << 10,
            max_state_ops_per_call: 100,
            max_state_list_items: 1_000,
            max_state_read_items: 1_000,
            max_items_per_connection: 64,
            max_open_invocations_per_connection: 16,
            max_item_bytes_per_connection: 16 << 10,
            stateful_reconnect_buffer_bytes: 100_000,
            max_timers: 1_000,
            min_timer_delay_ms: 10,
            max_timer_delay_ms: 30 * 24 * 3600 * 1000,
            http_allow: Vec::new(),
            http_allow_private: false,
            max_http_requests_per_call: 10,
            max_http_request_bytes: 1 << 20,
            max_http_response_bytes: 1 << 20,
            max_api_requests_per_second: 200,
        }
    }
}

/// What the host spends on one table element (a pointer), counted against
/// the memory limit: 64 tables of a million elements would otherwise be
/// half a gigabyte outside it.
pub const TABLE_ELEMENT_BYTES: usize = 8;

/// Which limit stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Memory,
    Table,
}

/// The limiter of one store.
#[derive(Debug)]
pub struct Limiter {
    memory_limit: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
    /// Bytes the store holds, all memories and tables together.
    memory_used: usize,
    /// The limit hit since the last [`Limiter::take_hit`].
    hit: Option<LimitHit>,
}

impl Limiter {
    pub fn new(limits: &HubLimits) -> Self {
        Self {
            memory_limit: limits.memory_bytes,
            table_elements: limits.max_table_elements,
            instances: limits.max_instances,
            tables: limits.max_tables,
            memories: limits.max_memories,
            memory_used: 0,
            hit: None,
        }
    }

    /// The limit hit since the last call, if any; clears it.
    pub fn take_hit(&mut self) -> Option<LimitHit> {
        self.hit.take()
    }

    /// Bytes the store holds now, memories and tables together.
    pub fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// Count `more` bytes against the memory limit, or record the hit.
    fn grow(&mut self, more: usize) -> wasmtime::Result<()> {
        let total = self.memory_used.saturating_add(more);
        if total > self.memory_limit {
            self.hit = Some(LimitHit::Memory);
            wasmtime::bail!(
                "hub exceeded its memory limit of {} bytes",
                self.memory_limit
            );
        }
        self.memory_used = total;
        Ok(())
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))?;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.hit = Some(LimitHit::Table);
            wasmtime::bail!(
                "hub exceeded its table limit of {} elements",
                self.table_elements
            );
        }
        self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )?;
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_memory_of_the_store() -> wasmtime::Result<()> {
        let mut limiter = Limiter::new(&HubLimits {
            memory_bytes: 100,
            ..HubLimits::default()
        });
        assert!(limiter.memory_growing(0, 60, None)?);
        assert!(
            limiter.memory_growing(0, 40, None)?,
            "a second memory shares the budget"
        );
        assert!(limiter.memory_growing(40, 41, None).is_err());
        assert_eq!(limiter.take_hit(), Some(LimitHit::Memory));
        assert_eq!(limiter.take_hit(), None);
        Ok(())
    }

    #[test]
    fn tables_count_against_the_memory_limit() -> wasmtime::Result<()> {
        let mut limiter = Limiter::new(&HubLimits {
            memory_bytes: 1000,
            max_table_elements: 1 << 20,
            ..HubLimits::default()
        });
        assert!(limiter.memory_growing(0, 600, None)?);
        assert!(limiter.table_growing(0, 40, None)?, "320 bytes fit");
        assert_eq!(limiter.memory_used(), 600 + 40 * TABLE_ELEMENT_BYTES);
        // Many tables, each within its element limit, share the one budget.
        assert!(limiter.table_growing(0, 20, None).is_err());
        assert_eq!(limiter.take_hit(), Some(LimitHit::Memory));
        assert!(
            limiter.table_growing(40, 50, None)?,
            "growth counts the new elements only"
        );
        Ok(())
    }
}
