//! The subscriber's connection: classic pub/sub on one server, or sharded
//! pub/sub (`SSUBSCRIBE`) on a Redis Cluster, behind one face so the
//! subscriber task (`redis.rs`) keeps one loop for both.
//!
//! On a cluster the client holds a connection per shard. When a slot moves,
//! the shard that lost it drops its subscriptions ([`Event::Dropped`]), and
//! the subscriber starts again on a new connection (see `redis.rs`). A shard's
//! connection dropping is reported as [`Event::ShardLost`] rather than the
//! end of everything: the other shards' subscriptions keep delivering while
//! the subscriber repairs (see `redis.rs`).

use super::Delivery;
use crate::redis_endpoint::RedisEndpoint;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use tokio::sync::mpsc;

/// `SSUBSCRIBE` commands in flight at once when subscribing many channels.
const SUBSCRIBING_AT_ONCE: usize = 32;

/// What the connection brought.
pub(super) enum Event {
    Message(Delivery),
    /// A cluster shard's connection dropped; the others still deliver.
    ShardLost,
    /// A shard dropped this subscription (its slot moved to another shard,
    /// or the subscriber asked).
    Dropped(String),
    /// The connection is gone.
    Closed,
}

pub(super) enum Subscription {
    Server {
        sink: PubSubSink,
        stream: PubSubStream,
    },
    Cluster {
        connection: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    },
}

impl Subscription {
    /// A new connection to the server (or cluster) `endpoint` names now.
    pub(super) async fn connect(endpoint: &RedisEndpoint) -> Result<Self, String> {
        let (tx, pushes) = mpsc::unbounded_channel();
        if let Some(made) = endpoint.connect_cluster_subscriber(tx).await {
            let connection = made.map_err(|e| e.to_string())?;
            return Ok(Self::Cluster { connection, pushes });
        }
        let client = endpoint.client().await.map_err(|e| e.to_string())?;
        let made = tokio::time::timeout(
            crate::redis_endpoint::CONNECT_TIMEOUT,
            client.get_async_pubsub(),
        )
        .await;
        let pubsub = match made {
            Ok(made) => made.map_err(|e| e.to_string())?,
            Err(_) => return Err("connect timed out".into()),
        };
        let (sink, stream) = pubsub.split();
        Ok(Self::Server { sink, stream })
    }

    /// Subscribe to `channels`; on a cluster, one command per channel, a
    /// few at a time. Not one per slot: Redis confirms each channel of an
    /// `SSUBSCRIBE` with a push of its own, and the client takes the first
    /// for the reply and every further one for the reply to the next command
    /// in flight on that connection.
    pub(super) async fn subscribe(&mut self, channels: &[&String]) -> redis::RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Self::Server { sink, .. } => sink.subscribe(channels).await,
            Self::Cluster { connection, .. } => {
                // Owned, so the task holding this future stays `Send`.
                let each: Vec<_> = channels
                    .iter()
                    .map(|channel| {
                        let (mut connection, channel) = (connection.clone(), channel.to_string());
                        async move { connection.ssubscribe(channel).await }
                    })
                    .collect();
                futures_util::stream::iter(each)
                    .buffer_unordered(SUBSCRIBING_AT_ONCE)
                    .try_collect()
                    .await
            }
        }
    }

    pub(super) async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Server { sink, .. } => sink.unsubscribe(channel).await,
            Self::Cluster { connection, .. } => connection.sunsubscribe(channel).await,
        }
    }

    /// Check that the connection answers: on a cluster, every primary.
    pub(super) async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            // In subscribed mode Redis answers PING with an array
            // (["pong", ""]), not a string: read any value, or every ping
            // would drop the connection (and what it carries).
            Self::Server { sink, .. } => sink.ping::<redis::Value>().await.map(drop),
            Self::Cluster { connection, .. } => {
                let every_primary = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                connection
                    .route_command(redis::cmd("PING"), every_primary)
                    .await
                    .map(drop)
            }
        }
    }

    /// The next event. Cancel-safe: a message is only taken when returned.
    pub(super) async fn next(&mut self) -> Event {
        match self {
            Self::Server { stream, .. } => match stream.next().await {
                Some(message) => Event::Message(Delivery {
                    channel: message.get_channel_name().to_owned(),
                    payload: Bytes::copy_from_slice(message.get_payload_bytes()),
                }),
                None => Event::Closed,
            },
            Self::Cluster { pushes, .. } => loop {
                let Some(push) = pushes.recv().await else {
                    return Event::Closed;
                };
                match push.kind {
                    redis::PushKind::SMessage | redis::PushKind::Message => {
                        if let Some(delivery) = delivery(push.data) {
                            return Event::Message(delivery);
                        }
                    }
                    redis::PushKind::Disconnection => return Event::ShardLost,
                    redis::PushKind::SUnsubscribe => {
                        if let Some(redis::Value::BulkString(channel)) = push.data.first()
                            && let Ok(channel) = String::from_utf8(channel.clone())
                        {
                            return Event::Dropped(channel);
                        }
                    }
                    // Subscription confirmations, also after the client
                    // subscribes again by itself.
                    _ => {}
                }
            },
        }
    }
}

/// The channel and payload of a pushed message: `[channel, payload]`.
fn delivery(data: Vec<redis::Value>) -> Option<Delivery> {
    let mut data = data.into_iter();
    let (Some(redis::Value::BulkString(channel)), Some(redis::Value::BulkString(payload))) =
        (data.next(), data.next())
    else {
        return None;
    };
    Some(Delivery {
        channel: String::from_utf8(channel).ok()?,
        payload: Bytes::from(payload),
    })
}
