//! hubhost: a SignalR-compatible real-time server whose hub logic runs as
//! sandboxed WebAssembly components.
//!
//! The host owns everything that touches the network — negotiate, WebSockets,
//! Server-Sent Events, long polling, the hub protocols, keep-alive, groups,
//! users, scale-out — and the hub component only decides what a method does
//! and whom to send what.
//!
//! # Layout
//! - [`server`]: `AppState`, `app(state) -> Router`, `run(listener, state, shutdown)`.
//! - [`config`]: typed configuration (file, environment, flags) and its checks.
//! - [`transport`]: negotiate, WebSockets, Server-Sent Events, long polling;
//!   connection tokens; requests passed on to the connection's node.
//! - [`connection`]: one client connection over any transport — handshake,
//!   dispatch, keep-alive, the bounded outbound queue and the writer.
//! - [`protocol`]: the SignalR handshake and the JSON and MessagePack hub
//!   protocols, pure.
//! - [`lifetime`]: `HubLifetimeManager` — delivery and groups across nodes;
//!   node heartbeats (addresses, liveness).
//! - [`backplane`]: the node-to-node pub/sub seam and its in-memory implementation.
//! - [`runtime`]: the wasmtime engine, the host imports, hub versions and limits.
//! - [`hubs`]: the hubs a node serves and their active versions.
//! - [`deploy`]: uploads, activations, rollbacks, deletes; every node kept in
//!   step with the store (announcements, periodic sync, `--watch-dir`).
//! - [`store`]: the hub store — versions, activation history, API tenants —
//!   local (memory / data directory) or in Redis.
//! - [`admin`]: the admin API (`/admin/v1/`), its keys, and its client (the CLI).
//! - [`tenants`]: tenants — admin keys, client auth, limits — declared or stored.
//! - [`auth`]: client authentication: anonymous or JWT (HS256 / RS256).
//! - [`quotas`]: connections per tenant, messages per second per connection.
//! - [`ids`]: node ids, connection ids, connection tokens.

pub mod admin;
pub mod auth;
pub mod backplane;
pub mod config;
pub mod connection;
pub mod deploy;
pub mod hubs;
pub mod ids;
pub mod lifetime;
pub mod protocol;
pub mod quotas;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tenants;
pub mod transport;
