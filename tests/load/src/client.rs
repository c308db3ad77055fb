//! The two wire protocols the load tool speaks over WebSockets: SignalR's
//! JSON hub protocol (hubhost, and the bare relay) and Socket.IO 4's
//! (Engine.IO v4 framing). Both carry the same chat contract:
//! `SendMessage(user, text)` broadcast as `ReceiveMessage(user, text)`, and
//! `Echo(value)` answered with `value`.

use anyhow::{Context as _, bail};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const RS: char = '\u{1e}';
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames a connection may have waiting to be written.
const WRITE_QUEUE: usize = 1024;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// SignalR JSON over WebSockets (skipNegotiation).
    Signalr,
    /// Socket.IO 4 over WebSockets.
    Socketio,
}

/// What a connection received, as far as the benchmark cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A `ReceiveMessage`'s text.
    Broadcast(String),
    /// The answer to `Echo` number `id`.
    Reply(u64),
    /// The server closed the connection (with its reason, if any).
    Closed(String),
}

/// Sends on one connection, through its writer task.
#[derive(Clone)]
pub struct Writer {
    proto: Proto,
    tx: mpsc::Sender<Message>,
}

/// Receives on one connection.
pub struct Reader {
    proto: Proto,
    stream: SplitStream<Ws>,
    /// For Engine.IO's pongs.
    tx: mpsc::Sender<Message>,
}

/// Open a connection to `base` (an `http://` hub URL, or a Socket.IO
/// server's root) and complete the protocol's handshake.
pub async fn connect(proto: Proto, base: &str) -> anyhow::Result<(Writer, Reader)> {
    tokio::time::timeout(CONNECT_TIMEOUT, open(proto, base))
        .await
        .context("connect timed out")?
}

async fn open(proto: Proto, base: &str) -> anyhow::Result<(Writer, Reader)> {
    let ws_base = base.replacen("http", "ws", 1);
    let url = match proto {
        Proto::Signalr => ws_base,
        Proto::Socketio => format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            ws_base.trim_end_matches('/')
        ),
    };
    // The load tool holds thousands of sockets: small read buffers.
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.read_buffer_size = 4 * 1024;
    let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        let _ = tcp.set_nodelay(true);
    }
    let (mut sink, mut stream) = ws.split();
    let mut next_text = async || -> anyhow::Result<String> {
        loop {
            match stream
                .next()
                .await
                .context("closed during the handshake")??
            {
                Message::Text(text) => return Ok(text.to_string()),
                Message::Close(_) => bail!("closed during the handshake"),
                _ => {}
            }
        }
    };
    match proto {
        Proto::Signalr => {
            sink.send(Message::text(format!(
                "{{\"protocol\":\"json\",\"version\":1}}{RS}"
            )))
            .await?;
            let reply = next_text().await?;
            if !reply.starts_with("{}") {
                bail!("handshake refused: {reply}");
            }
        }
        Proto::Socketio => {
            let open = next_text().await?;
            if !open.starts_with('0') {
                bail!("expected an Engine.IO open packet, got {open}");
            }
            sink.send(Message::text("40")).await?;
            let connected = next_text().await?;
            if !connected.starts_with("40") {
                bail!("namespace connect refused: {connected}");
            }
        }
    }
    let (tx, mut rx) = mpsc::channel::<Message>(WRITE_QUEUE);
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(message) = rx.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    Ok((
        Writer {
            proto,
            tx: tx.clone(),
        },
        Reader { proto, stream, tx },
    ))
}

impl Writer {
    async fn send(&self, text: String) -> anyhow::Result<()> {
        self.tx
            .send(Message::text(text))
            .await
            .context("connection closed")
    }

    /// Broadcast `text` as `user` to every client.
    pub async fn send_message(&self, user: &str, text: &str) -> anyhow::Result<()> {
        self.send(match self.proto {
            Proto::Signalr => format!(
                "{}{RS}",
                json!({"type": 1, "target": "SendMessage", "arguments": [user, text]})
            ),
            Proto::Socketio => format!("42{}", json!(["SendMessage", user, text])),
        })
        .await
    }

    /// Ask for `Echo(value)`, numbered `id`.
    pub async fn echo(&self, id: u64, value: &str) -> anyhow::Result<()> {
        self.send(match self.proto {
            Proto::Signalr => format!(
                "{}{RS}",
                json!({"type": 1, "invocationId": id.to_string(), "target": "Echo", "arguments": [value]})
            ),
            Proto::Socketio => format!("42{id}{}", json!(["Echo", value])),
        })
        .await
    }
}

impl Reader {
    /// What the next WebSocket message held; `None` once the socket ended.
    pub async fn next(&mut self) -> Option<Vec<Incoming>> {
        loop {
            let message = match self.stream.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => return Some(vec![Incoming::Closed(error.to_string())]),
                None => return None,
            };
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    return Some(vec![Incoming::Closed(
                        frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    )]);
                }
                _ => continue,
            };
            return Some(match self.proto {
                Proto::Signalr => text
                    .split(RS)
                    .filter(|r| !r.is_empty())
                    .filter_map(signalr)
                    .collect(),
                Proto::Socketio => {
                    if text.as_str() == "2" {
                        // Engine.IO ping: answer, or the server drops us.
                        let _ = self.tx.try_send(Message::text("3"));
                    }
                    socketio(&text).into_iter().collect()
                }
            });
        }
    }
}

fn signalr(record: &str) -> Option<Incoming> {
    let message: Value = serde_json::from_str(record).ok()?;
    match message["type"].as_u64()? {
        1 if message["target"] == "ReceiveMessage" => Some(Incoming::Broadcast(
            message["arguments"][1].as_str()?.to_owned(),
        )),
        3 => Some(Incoming::Reply(
            message["invocationId"].as_str()?.parse().ok()?,
        )),
        7 => Some(Incoming::Closed(
            message["error"].as_str().unwrap_or("").to_owned(),
        )),
        _ => None,
    }
}

fn socketio(text: &str) -> Option<Incoming> {
    if let Some(event) = text.strip_prefix("42") {
        let event: Value = serde_json::from_str(event).ok()?;
        return (event[0] == "ReceiveMessage")
            .then(|| Incoming::Broadcast(event[2].as_str().unwrap_or("").to_owned()));
    }
    if let Some(ack) = text.strip_prefix("43") {
        let digits: String = ack.chars().take_while(char::is_ascii_digit).collect();
        return Some(Incoming::Reply(digits.parse().ok()?));
    }
    (text.starts_with("41") || text == "1")
        .then(|| Incoming::Closed("disconnected by the server".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_protocols() {
        assert_eq!(
            signalr(r#"{"type":1,"target":"ReceiveMessage","arguments":["u","t"]}"#),
            Some(Incoming::Broadcast("t".into()))
        );
        assert_eq!(
            signalr(r#"{"type":3,"invocationId":"7","result":"x"}"#),
            Some(Incoming::Reply(7))
        );
        assert_eq!(signalr(r#"{"type":6}"#), None);
        assert_eq!(
            socketio(r#"42["ReceiveMessage","u","t"]"#),
            Some(Incoming::Broadcast("t".into()))
        );
        assert_eq!(socketio(r#"4312["x"]"#), Some(Incoming::Reply(12)));
        assert_eq!(socketio("2"), None);
    }
}
