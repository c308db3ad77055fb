//! The ceiling of the comparison benchmark: a bare WebSocket relay over Redis
//! with no hub logic. It speaks just enough of the SignalR JSON protocol for
//! the load tool (handshake; `SendMessage` broadcast as `ReceiveMessage` to
//! every client of every relay process; `Echo` answered), so the same client
//! drives it, and does nothing else: no groups, no limits, no sandbox.
//!
//! Each broadcast is encoded once, published once on Redis, and handed to
//! every local socket as the same bytes.

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use redis::AsyncCommands as _;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const RS: char = '\u{1e}';

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The Redis channel every relay process shares.
    #[arg(long, default_value = "relay")]
    channel: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = redis::Client::open(args.redis.as_str())?;
    let publisher = client.get_multiplexed_async_connection().await?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&args.channel).await?;
    // Deep enough for bursts; a socket that falls further behind is closed.
    let (fanout, _) = broadcast::channel::<Utf8Bytes>(8192);
    let incoming = fanout.clone();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            if let Ok(text) = String::from_utf8(message.get_payload_bytes().to_vec()) {
                let _ = incoming.send(Utf8Bytes::from(text));
            }
        }
        eprintln!("relay: Redis subscription ended");
        std::process::exit(1);
    });
    let listener = TcpListener::bind(&args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (publisher, receiver, channel) =
            (publisher.clone(), fanout.subscribe(), args.channel.clone());
        tokio::spawn(async move {
            let _ = serve(stream, publisher, receiver, channel).await;
        });
    }
}

async fn serve(
    stream: TcpStream,
    mut publisher: redis::aio::MultiplexedConnection,
    mut fanout: broadcast::Receiver<Utf8Bytes>,
    channel: String,
) -> anyhow::Result<()> {
    // Small read buffers, as hubhost's: a fair memory comparison.
    let mut config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    config.read_buffer_size = 4 * 1024;
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let (mut sink, mut stream) = ws.split();
    // The handshake: whatever protocol is asked for, JSON is answered.
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) if text.contains(RS) => break,
            Some(Ok(_)) => continue,
            _ => return Ok(()),
        }
    }
    sink.send(Message::text(format!("{{}}{RS}"))).await?;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(Ok(message)) = message else { return Ok(()) };
                let Message::Text(text) = message else { continue };
                for record in text.split(RS).filter(|r| !r.is_empty()) {
                    let Ok(invocation) = serde_json::from_str::<Value>(record) else { continue };
                    if invocation["type"] != 1 {
                        continue;
                    }
                    let id = invocation.get("invocationId").cloned();
                    let arguments = invocation["arguments"].clone();
                    let result = match invocation["target"].as_str() {
                        Some("SendMessage") => {
                            let frame = format!("{}{RS}", json!({"type": 1, "target": "ReceiveMessage", "arguments": arguments}));
                            publisher.publish::<_, _, ()>(&channel, frame).await?;
                            Value::Null
                        }
                        Some("Echo") => arguments[0].clone(),
                        _ => continue,
                    };
                    if let Some(id) = id {
                        let reply = json!({"type": 3, "invocationId": id, "result": result});
                        sink.send(Message::text(format!("{reply}{RS}"))).await?;
                    }
                }
            }
            frame = fanout.recv() => {
                // Fell behind: closed, as hubhost closes a slow client.
                let Ok(frame) = frame else { return Ok(()) };
                // Everything already waiting goes out in one flush.
                sink.feed(Message::Text(frame)).await?;
                loop {
                    match fanout.try_recv() {
                        Ok(frame) => sink.feed(Message::Text(frame)).await?,
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(_) => return Ok(()),
                    }
                }
                sink.flush().await?;
            }
        }
    }
}
