//! hubhost: a SignalR-compatible real-time server whose hub logic runs as
//! sandboxed WebAssembly components.
//!
//! The host owns everything that touches the network — negotiate, WebSockets,
//! the hub protocol, keep-alive, groups, users, scale-out — and the hub
//! component only decides what a method does and whom to send what.
//!
//! # Layout
//! - [`server`]: `AppState`, `app(state) -> Router`, `run(listener, state, shutdown)`.
//! - [`config`]: typed configuration (file, environment, flags) and its checks.
//! - [`transport`]: negotiate and the WebSocket transport; connection tokens.
//! - [`connection`]: one client connection — handshake, dispatch, keep-alive,
//!   the bounded outbound queue and the writer.
//! - [`protocol`]: the SignalR handshake and JSON hub protocol, pure.
//! - [`lifetime`]: `HubLifetimeManager` — delivery and groups across nodes.
//! - [`backplane`]: the node-to-node pub/sub seam and its in-memory implementation.
//! - [`runtime`]: the wasmtime engine, the host imports, hub versions and limits.
//! - [`hubs`]: the hubs a node serves and their active versions.
//! - [`tenants`]: per-tenant limits and quotas (connections, message rate).
//! - [`ids`]: node ids, connection ids, connection tokens.

pub mod backplane;
pub mod config;
pub mod connection;
pub mod hubs;
pub mod ids;
pub mod lifetime;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod tenants;
pub mod transport;
