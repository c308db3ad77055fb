//! The two ends of a connection, whatever its transport.
//!
//! A WebSocket carries both directions itself. Server-Sent Events and long
//! polling are several HTTP requests: POST bodies arrive through a channel
//! ([`Inbound::Channel`]) and what the connection writes goes into another
//! ([`Outlet::Channel`]), drained by the event stream or by each poll.

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, close_code};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::future::pending;
use tokio::sync::mpsc;

/// The transports of the SignalR protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSockets,
    ServerSentEvents,
    LongPolling,
}

impl TransportKind {
    /// Whether it carries binary data (MessagePack).
    pub fn supports_binary(self) -> bool {
        self != Self::ServerSentEvents
    }

    /// Its name in metrics, as the negotiate answer spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::WebSockets => "WebSockets",
            Self::ServerSentEvents => "ServerSentEvents",
            Self::LongPolling => "LongPolling",
        }
    }

    /// Whether the server pings it: a poll is its own keep-alive.
    pub fn pings(self) -> bool {
        self != Self::LongPolling
    }
}

/// What reading the client's side gave.
pub enum Read {
    /// More bytes were appended to the buffer.
    Data,
    /// The client is gone; `Some` says what went wrong.
    End(Option<String>),
}

/// Where a connection's bytes come from.
pub enum Inbound {
    WebSocket(SplitStream<WebSocket>),
    /// POST bodies, in the order they were accepted.
    Channel(mpsc::Receiver<Bytes>),
}

impl Inbound {
    /// Nothing to read: what a stateful connection holds between sockets,
    /// so that the old socket is dropped (closed) rather than kept.
    pub fn gone() -> Self {
        Self::Channel(mpsc::channel(1).1)
    }

    /// Append the next bytes the client sent to `buffer`.
    pub async fn read(&mut self, buffer: &mut Vec<u8>) -> Read {
        match self {
            Self::WebSocket(stream) => loop {
                match stream.next().await {
                    None | Some(Ok(WsMessage::Close(_))) => return Read::End(None),
                    Some(Err(error)) => return Read::End(Some(error.to_string())),
                    Some(Ok(WsMessage::Text(text))) => buffer.extend_from_slice(text.as_bytes()),
                    Some(Ok(WsMessage::Binary(bytes))) => buffer.extend_from_slice(&bytes),
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                }
                return Read::Data;
            },
            Self::Channel(rx) => match rx.recv().await {
                Some(bytes) => {
                    buffer.extend_from_slice(&bytes);
                    Read::Data
                }
                None => Read::End(None),
            },
        }
    }
}

/// Where a connection's bytes go: complete framed messages, one unit per
/// WebSocket message, event or (part of a) poll response.
pub enum Outlet {
    WebSocket {
        sink: SplitSink<WebSocket, WsMessage>,
        /// Binary frames (MessagePack) or text frames (JSON).
        binary: bool,
    },
    Channel(mpsc::Sender<Bytes>),
}

/// The other side stopped taking data.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Gone(String);

impl Outlet {
    /// Nowhere to send: what a stateful connection's writer holds between
    /// sockets (see [`Inbound::gone`]).
    pub fn gone() -> Self {
        Self::Channel(mpsc::channel(1).0)
    }

    pub async fn send(&mut self, bytes: Bytes) -> Result<(), Gone> {
        match self {
            Self::WebSocket { sink, binary } => {
                let message = if *binary {
                    WsMessage::Binary(bytes)
                } else {
                    // Every JSON frame is built from Rust strings.
                    WsMessage::Text(
                        Utf8Bytes::try_from(bytes).map_err(|e| Gone(format!("not UTF-8: {e}")))?,
                    )
                };
                sink.send(message).await.map_err(|e| Gone(e.to_string()))
            }
            Self::Channel(tx) => tx
                .send(bytes)
                .await
                .map_err(|_| Gone("the client's request ended".into())),
        }
    }

    /// End the transport after the last message (a WebSocket Close frame).
    pub async fn finish(&mut self) {
        if let Self::WebSocket { sink, .. } = self {
            let frame = CloseFrame {
                code: close_code::NORMAL,
                reason: Utf8Bytes::from_static(""),
            };
            let _ = sink.send(WsMessage::Close(Some(frame))).await;
            let _ = sink.close().await;
        }
    }

    /// Resolves when the client can no longer receive (an event stream or
    /// session that was dropped); never for a WebSocket, whose loss shows
    /// when reading or writing.
    pub async fn closed(&self) {
        match self {
            Self::WebSocket { .. } => pending().await,
            Self::Channel(tx) => tx.closed().await,
        }
    }
}
