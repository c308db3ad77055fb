//! Helpers for the end-to-end tests: in-process servers on port 0, the test
//! guests, and a raw SignalR JSON client over a real WebSocket.
//!
//! # Layout
//! - [`guest`]: paths of the built hub components.
//! - [`TestServer`]: a hubhost server on an ephemeral port, shut down on drop.
//! - [`RawClient`]: a WebSocket speaking the JSON hub protocol by hand, for
//!   the cases the official client would never produce.
//! - [`spec`]: the lifetime-manager scenarios every backplane must pass.
//! - [`redis_server`]: a `redis-server` of a test's own, for fault tests.
//! - [`process`]: a `hubhost serve` process of a test's own, and its log.
//! - [`admin`]: the admin API over HTTP, and waiting for nodes to serve a version.
//! - [`transports`]: raw long-polling and Server-Sent Events clients, and
//!   MessagePack framing, for the wire-protocol tests.
//! - [`traffic`]: numbered messages through a Redis failover, and what was lost.

pub mod admin;
pub mod process;
pub mod redis_server;
pub mod spec;
pub mod traffic;
pub mod transports;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use hubhost::config::{Config, HubConfig};
use hubhost::server;
use hubhost::state::AppState;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The machine's Redis, shared by every test: each uses a channel prefix of
/// its own and never flushes it.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A cluster prefix no other test or run uses.
pub fn unique_prefix(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "test-{name}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh, empty directory of a test's own (under the system's temp dir).
pub fn temp_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(unique_prefix(name));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Like [`wait_until`], for a condition that has to await.
pub async fn wait_until_async<F, Fut>(limit: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Poll `condition` every 10 ms until it holds; an error after `limit`.
pub async fn wait_until(
    limit: Duration,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The `hubhost` binary built by `make build`, for tests that need a process.
pub fn binary() -> PathBuf {
    let path = target_dir().join("debug/hubhost");
    assert!(
        path.exists(),
        "{} is missing: run `make build` (the README's test command does)",
        path.display()
    );
    path
}

/// The path of a test guest built by `make guests` (`chat` or `faulty`).
pub fn guest(name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/guest")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the guests first (`make guests`, which the README's test command runs)",
        path.display()
    );
    path
}

/// A config for one node of a cluster on Redis at `url` under `prefix`.
pub fn cluster_config(url: &str, prefix: &str) -> Config {
    let mut config = config();
    config.redis_url = Some(url.to_owned());
    config.cluster_prefix = prefix.to_owned();
    config
}

/// A config serving `demo/chat` and `demo/faulty` on an ephemeral port;
/// a stop moves its clients at once (no drain window: the drain tests set
/// their own).
pub fn config() -> Config {
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    config.drain.window = std::time::Duration::ZERO;
    for name in ["chat", "faulty"] {
        config.hubs.push(HubConfig {
            tenant: "demo".into(),
            hub: name.into(),
            path: guest(name),
        });
    }
    config
}

/// A running server; dropping it shuts it down.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The in-process servers' logs, when `HUBHOST_TEST_LOG` holds a filter
/// (`HUBHOST_TEST_LOG=hubhost=debug cargo test …`): off by default, since
/// a passing test's output is noise; for finding why one failed.
fn log_if_asked() {
    if let Ok(filter) = std::env::var("HUBHOST_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

impl TestServer {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        log_if_asked();
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let state = AppState::new(config)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::run(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shut down and wait for the server to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(PATIENCE, task)
                .await
                .context("shutdown hung")??,
            None => Ok(()),
        }
    }

    /// POST negotiate and return the JSON body.
    pub async fn negotiate(&self, hub_path: &str, query: &str) -> anyhow::Result<(u16, String)> {
        http(self.addr, "POST", &format!("{hub_path}/negotiate{query}")).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A minimal HTTP/1.1 request without body; returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    http_with(addr, method, path, &[]).await
}

/// [`http`] with extra request headers.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let text = http_response(addr, method, path, headers).await?;
    let status = text.get(9..12).context("short response")?.parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A minimal HTTP/1.1 request without body; the whole response (status
/// line, headers, body) as text.
pub async fn http_response(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response)).await??;
    Ok(String::from_utf8(response)?)
}

/// POST negotiate (version 1) for `hub_path`, with `access_token` as a
/// bearer token if given; status and body.
pub async fn negotiate_as(
    addr: SocketAddr,
    hub_path: &str,
    access_token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let bearer = access_token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("Authorization", b.as_str()))
        .collect();
    http_with(
        addr,
        "POST",
        &format!("{hub_path}/negotiate?negotiateVersion=1"),
        &headers,
    )
    .await
}

/// Percent-encode everything but unreserved characters.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An HS256 token for `sub`, valid for `ttl_secs` (negative: already expired).
pub fn jwt(secret: &str, sub: &str, ttl_secs: i64) -> anyhow::Result<String> {
    let exp = jsonwebtoken::get_current_timestamp() as i64 + ttl_secs;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "sub": sub, "exp": exp, "tenant-claim": "yes" }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// A tenant whose clients authenticate with HS256 JWTs signed with `secret`.
pub fn jwt_tenant(secret: &str) -> hubhost::tenants::TenantConfig {
    hubhost::tenants::TenantConfig {
        auth: hubhost::auth::AuthConfig::Jwt(hubhost::auth::JwtConfig {
            hs256_secret: Some(secret.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A WebSocket speaking the JSON hub protocol by hand.
pub struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Messages received but not yet taken.
    pending: std::collections::VecDeque<Value>,
}

impl RawClient {
    /// Negotiate with stateful reconnect at `addr` and open a WebSocket with
    /// handshake version 2: (client, connection id, token).
    pub async fn stateful(
        addr: SocketAddr,
        hub_path: &str,
    ) -> anyhow::Result<(Self, String, String)> {
        let query = "negotiateVersion=1&useStatefulReconnect=true";
        let (status, body) = http(addr, "POST", &format!("{hub_path}/negotiate?{query}")).await?;
        anyhow::ensure!(status == 200, "{body}");
        let body: Value = serde_json::from_str(&body)?;
        anyhow::ensure!(body["useStatefulReconnect"] == true, "not granted: {body}");
        let token = body["connectionToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let id = body["connectionId"].as_str().unwrap_or_default().to_owned();
        let mut client = Self::open(addr, &format!("{hub_path}?id={token}")).await?;
        client
            .send_text("{\"protocol\":\"json\",\"version\":2}\u{1e}")
            .await?;
        anyhow::ensure!(client.next().await? == json!({}), "handshake");
        Ok((client, id, token))
    }

    /// Open a WebSocket to `path` (with its query) without any handshake.
    pub async fn open(addr: SocketAddr, path: &str) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await?;
        Ok(Self {
            ws,
            pending: Default::default(),
        })
    }

    /// Negotiate, open the WebSocket and complete the JSON handshake.
    pub async fn connect(server: &TestServer, hub_path: &str) -> anyhow::Result<(Self, String)> {
        Self::connect_as(server.addr, hub_path, None).await
    }

    /// [`Self::connect`] to the node at `addr`, with an access token if given
    /// (in the negotiate's Authorization header and the WebSocket's query,
    /// as the official browser client does).
    pub async fn connect_as(
        addr: SocketAddr,
        hub_path: &str,
        access_token: Option<&str>,
    ) -> anyhow::Result<(Self, String)> {
        let (status, body) = negotiate_as(addr, hub_path, access_token).await?;
        if status != 200 {
            bail!("negotiate answered {status}: {body}");
        }
        let body: Value = serde_json::from_str(&body)?;
        let token = body["connectionToken"].as_str().context("no token")?;
        let query = match access_token {
            Some(access) => format!("{hub_path}?id={token}&access_token={}", url_encode(access)),
            None => format!("{hub_path}?id={token}"),
        };
        let mut client = Self::open(addr, &query).await?;
        client
            .send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}")
            .await?;
        let reply = client.next().await?;
        if reply != serde_json::json!({}) {
            bail!("handshake failed: {reply}");
        }
        let id = body["connectionId"].as_str().context("no id")?.to_owned();
        Ok((client, id))
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Send one message, framed.
    pub async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        self.send_text(&format!("{message}\u{1e}")).await
    }

    /// Invoke `target` with `args` and wait for its completion, skipping
    /// other messages (they stay available to [`Self::next`]).
    pub async fn invoke(&mut self, id: &str, target: &str, args: Value) -> anyhow::Result<Value> {
        self.send(
            serde_json::json!({"type": 1, "invocationId": id, "target": target, "arguments": args}),
        )
        .await?;
        self.next_where(|m| m["type"] == 3 && m["invocationId"] == id)
            .await
    }

    /// The next message (as JSON), waiting up to [`PATIENCE`].
    pub async fn next(&mut self) -> anyhow::Result<Value> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(message);
        }
        self.read().await?;
        self.pending.pop_front().context("no message")
    }

    /// Messages received and not yet taken, in order.
    pub fn pending(&self) -> &std::collections::VecDeque<Value> {
        &self.pending
    }

    /// Take the messages received and not yet taken, in order.
    pub fn take_pending(&mut self) -> Vec<Value> {
        self.pending.drain(..).collect()
    }

    /// The first message matching `pred`; others are kept in order.
    pub async fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        loop {
            if let Some(i) = self.pending.iter().position(&pred) {
                return self.pending.remove(i).context("vanished");
            }
            self.read().await?;
        }
    }

    /// Read one WebSocket message into `pending`; errors when the socket ends.
    async fn read(&mut self) -> anyhow::Result<()> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .context("no message in time")?
                .context("socket ended")??;
            let text = match message {
                Message::Text(text) => text.to_string(),
                Message::Close(_) => bail!("socket closed"),
                _ => continue,
            };
            for part in text.split('\u{1e}').filter(|p| !p.is_empty()) {
                self.pending.push_back(serde_json::from_str(part)?);
            }
            if !text.ends_with('\u{1e}') {
                bail!("message without record separator: {text:?}");
            }
            return Ok(());
        }
    }

    /// Read until the socket ends; returns every message seen (including the
    /// ones already pending) and whether the server sent a WebSocket close.
    pub async fn drain(&mut self) -> (Vec<Value>, bool) {
        let (seen, code) = self.until_closed().await;
        (seen, code.is_some())
    }

    /// Read until the socket ends; returns every message seen (including the
    /// ones already pending) and the code of the WebSocket close frame that
    /// ended it (1005 for a close frame without one), or `None` if it ended
    /// without a close frame, or did not end within [`PATIENCE`].
    pub async fn until_closed(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut seen: Vec<Value> = self.pending.drain(..).collect();
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => seen.extend(
                    text.split('\u{1e}')
                        .filter(|p| !p.is_empty())
                        .filter_map(|p| serde_json::from_str(p).ok()),
                ),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return (seen, Some(frame.map_or(1005, |f| u16::from(f.code))));
                }
                Ok(Some(Ok(_))) => {}
                _ => return (seen, None),
            }
        }
    }
}
