//! Raw clients for the HTTP transports (long polling, Server-Sent Events) and
//! MessagePack framing, for the tests that check the wire protocol byte by
//! byte: every status code, header and malformed body.

use crate::{PATIENCE, negotiate_as};
use anyhow::{Context as _, bail};
use hubhost::ids::ConnectionToken;
use hubhost::names::HubKey;
use hubhost::sessions::Found;
use hubhost::state::AppState;
use serde_json::Value;
use std::net::SocketAddr;

pub mod msgpack;

/// The JSON handshake request, framed.
pub const JSON_HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
/// The MessagePack handshake request (always JSON text), framed.
pub const MSGPACK_HANDSHAKE: &str = "{\"protocol\":\"messagepack\",\"version\":1}\u{1e}";
/// The handshake's success response, framed.
pub const HANDSHAKE_OK: &[u8] = b"{}\x1e";

/// A connection negotiated with version 1.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub token: String,
    pub connection_id: String,
    /// The whole negotiate response.
    pub body: Value,
}

/// Negotiate (version 1) for `hub_path` at `addr`.
pub async fn negotiate(addr: SocketAddr, hub_path: &str) -> anyhow::Result<Negotiated> {
    let (status, body) = negotiate_as(addr, hub_path, None).await?;
    if status != 200 {
        bail!("negotiate answered {status}: {body}");
    }
    let body: Value = serde_json::from_str(&body)?;
    Ok(Negotiated {
        token: body["connectionToken"]
            .as_str()
            .context("no connectionToken")?
            .to_owned(),
        connection_id: body["connectionId"]
            .as_str()
            .context("no connectionId")?
            .to_owned(),
        body,
    })
}

/// One HTTP response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value as text (`None` if absent or not text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON protocol messages (each ended by `0x1E`).
    pub fn json_messages(&self) -> anyhow::Result<Vec<Value>> {
        json_messages(&self.body)
    }

    /// The body as MessagePack protocol messages (VarInt framed).
    pub fn msgpack_messages(&self) -> anyhow::Result<Vec<rmpv::Value>> {
        msgpack::unframe(&self.body)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Framed JSON protocol messages; an error if the last one is not ended by
/// the record separator.
pub fn json_messages(bytes: &[u8]) -> anyhow::Result<Vec<Value>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    if bytes.last() != Some(&0x1e) {
        bail!(
            "message without record separator: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    bytes
        .split(|&b| b == 0x1e)
        .filter(|part| !part.is_empty())
        .map(|part| Ok(serde_json::from_slice(part)?))
        .collect()
}

/// An HTTP client for the tests: no overall timeout (each request gets
/// [`PATIENCE`]), no proxy.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Send `request` and read the whole response, within [`PATIENCE`].
pub async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
    tokio::time::timeout(PATIENCE, async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    })
    .await
    .context("no response in time")?
}

/// A long-polling client for one connection token (or none, or any text):
/// polls, POSTs and DELETEs, with whatever headers the test adds.
#[derive(Debug, Clone)]
pub struct LongPoll {
    http: reqwest::Client,
    /// `http://ADDR/HUB` with `?id=TOKEN` if there is a token.
    url: String,
    /// The hub's path and the token, when made by [`Self::new`].
    hub_and_token: Option<(String, String)>,
    headers: Vec<(String, String)>,
}

impl LongPoll {
    pub fn new(addr: SocketAddr, hub_path: &str, token: &str) -> Self {
        let mut lp = Self::with_url(format!("http://{addr}{hub_path}?id={token}"));
        lp.hub_and_token = Some((hub_path.to_owned(), token.to_owned()));
        lp
    }

    /// Requests to `url` exactly (for a missing or odd `id`).
    pub fn with_url(url: String) -> Self {
        Self {
            http: http_client(),
            url,
            hub_and_token: None,
            headers: Vec::new(),
        }
    }

    /// Requests on `owner` (the node that negotiated the connection, in
    /// process) that hold this connection's session right now: a poll in
    /// progress there, or a POST, or a DELETE. `None` if `owner` has no
    /// session for the token (not started, or over).
    ///
    /// The session is shared (`Arc`) between the token table and each
    /// request handler that found it, for as long as that handler runs; so
    /// the handlers holding it are its references but the table's (and the
    /// one taken here to count them).
    /// (An anonymous connection: the token is looked up as no user's.)
    pub fn requests_on(&self, owner: &AppState) -> anyhow::Result<Option<usize>> {
        let (hub_path, token) = self
            .hub_and_token
            .as_ref()
            .context("a LongPoll made with_url has no token")?;
        let (tenant, hub) = hub_path
            .trim_start_matches('/')
            .split_once('/')
            .context("hub path is /TENANT/HUB")?;
        let key = HubKey::new(tenant, hub)?;
        let token = ConnectionToken::from_client(token.clone());
        Ok(match owner.tokens.find(&token, &key, None) {
            Found::Http(session) => Some(std::sync::Arc::strong_count(&session) - 2),
            _ => None,
        })
    }

    /// Start a poll in a task of its own and return once it is parked on
    /// `owner`: its request reached the handler there, which holds it, and it
    /// has not been answered. Call it with no other request of this
    /// connection in progress. The poll's reply comes from the task.
    pub async fn parked_poll(
        &self,
        owner: &AppState,
    ) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Reply>>> {
        let idle = self
            .requests_on(owner)?
            .context("the connection has no session on that node")?;
        anyhow::ensure!(idle == 0, "{idle} requests of the connection in progress");
        let poll = tokio::spawn({
            let lp = self.clone();
            async move { lp.poll().await }
        });
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.requests_on(owner)? != Some(1) {
            if poll.is_finished() {
                bail!("the poll was answered at once: {:?}", poll.await);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the poll never reached the connection's node");
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        anyhow::ensure!(!poll.is_finished(), "the poll was answered at once");
        Ok(poll)
    }

    /// Send `name: value` with every request.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
    }

    /// One poll, as the JS client sends it (`&_=<ms>`).
    pub async fn poll(&self) -> anyhow::Result<Reply> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}_={millis}", self.url);
        send(self.request(reqwest::Method::GET, &url)).await
    }

    /// POST `body` (messages for the connection).
    pub async fn post(&self, body: impl Into<Vec<u8>>) -> anyhow::Result<Reply> {
        send(
            self.request(reqwest::Method::POST, &self.url)
                .header("content-type", "text/plain;charset=UTF-8")
                .body(body.into()),
        )
        .await
    }

    /// DELETE: the client leaves.
    pub async fn delete(&self) -> anyhow::Result<Reply> {
        send(self.request(reqwest::Method::DELETE, &self.url)).await
    }

    /// Start the connection as the official client does: the first poll
    /// (200, empty), the handshake POST (200), then polls until the
    /// handshake response; returns what that poll carried.
    pub async fn start(&self, handshake: &str) -> anyhow::Result<Vec<u8>> {
        let first = self.poll().await?;
        if first.status != 200 || !first.body.is_empty() {
            bail!("first poll: {} {:?}", first.status, first.text());
        }
        let posted = self.post(handshake).await?;
        if posted.status != 200 {
            bail!("handshake POST: {} {:?}", posted.status, posted.text());
        }
        self.next_data().await
    }

    /// Poll until a poll carries data (empty 200s are poll timeouts); an
    /// error on any other status.
    pub async fn next_data(&self) -> anyhow::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let reply = self.poll().await?;
            if reply.status != 200 {
                bail!("poll answered {}: {:?}", reply.status, reply.text());
            }
            if !reply.body.is_empty() {
                return Ok(reply.body);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no data within {PATIENCE:?}");
            }
        }
    }
}

/// A Server-Sent Events response being read.
pub struct EventStream {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    /// Bytes read and not yet taken.
    buffer: Vec<u8>,
}

impl EventStream {
    /// GET `url` with `Accept: text/event-stream` (and `headers`); the
    /// response's head, its body left to read.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut request = http_client().get(url).header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(PATIENCE, request.send())
            .await
            .context("no response in time")??;
        Ok(Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            response,
            buffer: Vec::new(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Read one more chunk into the buffer; false at the end of the body.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        match tokio::time::timeout(PATIENCE, self.response.chunk())
            .await
            .context("nothing more in time")??
        {
            Some(chunk) => {
                self.buffer.extend_from_slice(&chunk);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Exactly the next `n` bytes.
    pub async fn take(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        while self.buffer.len() < n {
            if !self.fill().await? {
                bail!(
                    "stream ended after {:?}",
                    String::from_utf8_lossy(&self.buffer)
                );
            }
        }
        Ok(self.buffer.drain(..n).collect())
    }

    /// The next event, whole, with its `data: ` lines and the blank line
    /// that ends it (`\r\n\r\n`).
    pub async fn next_event(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 4).collect();
                return Ok(String::from_utf8(event)?);
            }
            if !self.fill().await? {
                bail!(
                    "stream ended inside an event: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                );
            }
        }
    }

    /// The JSON messages of the next event that is not a Ping.
    pub async fn next_messages(&mut self) -> anyhow::Result<Vec<Value>> {
        loop {
            let event = self.next_event().await?;
            let mut data = Vec::new();
            for line in event.trim_end_matches("\r\n").split("\r\n") {
                let line = line
                    .strip_prefix("data: ")
                    .with_context(|| format!("not a data line: {line:?} in {event:?}"))?;
                data.extend_from_slice(line.as_bytes());
            }
            let messages: Vec<Value> = json_messages(&data)?
                .into_iter()
                .filter(|m| m["type"] != 6)
                .collect();
            if !messages.is_empty() {
                return Ok(messages);
            }
        }
    }

    /// Whether the body ends (or the connection breaks) within `limit`,
    /// whatever it still carries.
    pub async fn ends_within(&mut self, limit: std::time::Duration) -> bool {
        tokio::time::timeout(limit, async {
            while let Ok(Some(chunk)) = self.response.chunk().await {
                self.buffer.extend_from_slice(&chunk);
            }
        })
        .await
        .is_ok()
    }

    /// Read until the body ends; what was left. Errors if it does not end
    /// within [`PATIENCE`].
    pub async fn rest(&mut self) -> anyhow::Result<Vec<u8>> {
        while self.fill().await? {}
        Ok(std::mem::take(&mut self.buffer))
    }
}

/// Shared by the long-polling tests: servers with short poll timeouts,
/// started connections, invocations and the headers of every poll answer.
pub mod long_polling {
    use super::{HANDSHAKE_OK, JSON_HANDSHAKE, LongPoll, Reply, json_messages, negotiate};
    use crate::{TestServer, config};
    use hubhost::config::Config;
    use serde_json::{Value, json};
    use std::time::Duration;

    /// The chat hub the tests use.
    pub const HUB: &str = "/demo/chat";

    /// A config whose polls wait `poll_ms` at most (well under [`crate::PATIENCE`]).
    pub fn config_with(poll_ms: u64, disconnect_ms: u64) -> Config {
        let mut config = config();
        config.connection.poll_timeout = Duration::from_millis(poll_ms);
        config.connection.disconnect_timeout = Duration::from_millis(disconnect_ms);
        config
    }

    pub async fn server() -> anyhow::Result<TestServer> {
        TestServer::start(config_with(5_000, 15_000)).await
    }

    /// Negotiate and return a long-polling client for the new token.
    pub async fn long_poll(server: &TestServer) -> anyhow::Result<LongPoll> {
        let negotiated = negotiate(server.addr, HUB).await?;
        Ok(LongPoll::new(server.addr, HUB, &negotiated.token))
    }

    /// A long-polling connection past its JSON handshake.
    pub async fn started(server: &TestServer) -> anyhow::Result<LongPoll> {
        let lp = long_poll(server).await?;
        assert_eq!(lp.start(JSON_HANDSHAKE).await?, HANDSHAKE_OK);
        Ok(lp)
    }

    pub fn invocation(id: &str, target: &str, args: Value) -> String {
        format!(
            "{}\u{1e}",
            json!({"type": 1, "invocationId": id, "target": target, "arguments": args})
        )
    }

    /// Poll until the JSON messages received include a Completion for each of
    /// `ids`; returns all the messages, in order.
    pub async fn completions(lp: &LongPoll, ids: &[&str]) -> anyhow::Result<Vec<Value>> {
        let mut seen = Vec::new();
        while !ids.iter().all(|id| {
            seen.iter()
                .any(|m: &Value| m["type"] == 3 && m["invocationId"] == *id)
        }) {
            seen.extend(json_messages(&lp.next_data().await?)?);
        }
        Ok(seen)
    }

    /// The headers every poll response carries.
    pub fn assert_no_cache(reply: &Reply) {
        assert_eq!(
            reply.header("cache-control"),
            Some("no-cache, no-store"),
            "{reply:?}"
        );
        assert_eq!(reply.header("pragma"), Some("no-cache"), "{reply:?}");
        assert_eq!(
            reply.header("expires"),
            Some("Thu, 01 Jan 1970 00:00:00 GMT"),
            "{reply:?}"
        );
    }
}
