//! hubhost: a SignalR-compatible real-time server whose hub logic runs as
//! sandboxed WebAssembly components.
//!
//! The host owns everything that touches the network — negotiate, WebSockets,
//! Server-Sent Events, long polling, the hub protocols, keep-alive, groups,
//! users, scale-out — and the hub component only decides what a method does
//! and whom to send what.
//!
//! # Layout
//! Bottom layer first; a module imports only modules above it in this list,
//! so no two modules import each other.
//! - [`ids`]: node ids, connection ids and connection tokens (and hex).
//! - [`names`]: [`names::HubKey`], the tenant and hub name rules, the limit on
//!   group names and user ids.
//! - [`millis`]: durations in settings, as milliseconds, parsed once.
//! - [`workers`]: hub calls on the async workers — started there, leaving
//!   at their first epoch tick or wait.
//! - [`monitoring`]: every metric's name and help, recorded through the
//!   `metrics` facade where things happen.
//! - [`snapshot`]: a node alone's in-memory tables written to its data
//!   directory, atomically, every second.
//! - [`protocol`]: the SignalR handshake and the JSON and MessagePack hub
//!   protocols, pure.
//! - [`quotas`]: connections per tenant, messages per second per connection.
//! - [`auth`]: client authentication: anonymous or JWT (HS256 / RS256).
//! - [`outbound`]: a connection's bounded outbound queue, and the
//!   [`outbound::Message`] every recipient of a send shares.
//! - [`invocations`]: what a connection has open besides its queue — the
//!   streams its client asked for, the results hubs await from its client.
//! - [`redis_endpoint`]: where Redis is — one server, the primary Redis
//!   Sentinel names (asked again at every connection), or a Redis Cluster.
//! - [`backplane`]: the node-to-node pub/sub seam, its channel names, and
//!   its memory and Redis implementations.
//! - [`cluster`]: what makes a node part of a cluster — node id, the registry
//!   of nodes and their heartbeats, the control channel, where another
//!   node's connections live.
//! - [`lifetime`]: `HubLifetimeManager` — delivery, groups and presence
//!   across nodes.
//! - [`redis_script`]: one Lua script on a Redis connection, waited on from
//!   inside hub calls and the timer thread (the Redis backends of state and
//!   timers).
//! - [`kv`]: key-value state of hubs — memory, data directory, Redis — and
//!   the `kv` context of a hub call.
//! - [`items`]: the values a hub keeps with one connection.
//! - [`fetch`]: outbound HTTP from hubs, within the tenant's allow-list.
//! - [`timers`]: hub calls scheduled for later — memory and Redis backends,
//!   claimed with a lease.
//! - [`vars`]: tenant variables and secrets — sealing, and the node's copy
//!   hubs read.
//! - [`runtime`]: the wasmtime engine, the host imports, hub versions and
//!   limits, and compiled code passed between nodes under a MAC.
//! - [`hubs`]: the hubs a node serves and their active versions.
//! - [`tenants`]: tenants — admin keys, client auth, limits — declared or stored.
//! - [`store`]: the hub store — versions, activation history, API tenants,
//!   an upload's compiled code for a while — local (memory / data
//!   directory) or in Redis.
//! - [`connection`]: one client connection over any transport — handshake,
//!   dispatch, keep-alive, the writer, stateful reconnect, and what a
//!   connection is made of when a drain hands it to another node.
//! - [`deploy`]: uploads, activations, rollbacks, deletes; every node kept in
//!   step with the store (announcements, periodic sync, `--watch-dir`).
//! - [`sessions`]: connection tokens of negotiated connections, and the
//!   HTTP sessions of Server-Sent Events and long polling.
//! - [`config`]: every setting, defined once; file, environment and flags
//!   read in one step; CORS.
//! - [`state`]: `AppState`, everything the handlers share, built from a
//!   `Config`.
//! - [`drain`]: a node leaving: refuse new connections, serve the window,
//!   move the clients in batches (stateful ones handed to other nodes).
//! - [`scheduler`]: the thread that fires due timers as hub calls.
//! - [`transport`]: negotiate, WebSockets, Server-Sent Events, long polling;
//!   requests passed on to the connection's node; taking a connection over
//!   from a draining node.
//! - [`admin`]: the admin API (`/admin/v1/`), its keys, its request and
//!   answer types, and its client (the CLI).
//! - [`server_api`]: the server API (`/api/v1/`): backends send to clients,
//!   manage groups, close connections.
//! - [`dashboard`]: the page at `/admin/` over the admin API.
//! - [`exporter`]: `/metrics` in Prometheus' text format, on a listener of
//!   its own.
//! - [`server`]: `app(state) -> Router`, `run(listener, state, shutdown)`.

pub mod admin;
pub mod auth;
pub mod backplane;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod dashboard;
pub mod deploy;
pub mod drain;
pub mod exporter;
pub mod fetch;
pub mod hubs;
pub mod ids;
pub mod invocations;
pub mod items;
pub mod kv;
pub mod lifetime;
pub mod millis;
pub mod monitoring;
pub mod names;
pub mod outbound;
pub mod protocol;
pub mod quotas;
pub mod redis_endpoint;
pub mod redis_script;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod server_api;
pub mod sessions;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod tenants;
pub mod timers;
pub mod transport;
pub mod vars;
pub mod workers;

#[cfg(test)]
mod layout_tests;
