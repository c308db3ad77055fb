//! The subscriber's connection: classic pub/sub on one server, or sharded
//! pub/sub (`SSUBSCRIBE`) on a Redis Cluster, behind one face so the
//! subscriber task (`redis.rs`) keeps one loop for both.
//!
//! On a cluster the client holds a connection per shard and, when the slot
//! map changes, subscribes again where each slot now lives. A shard's
//! connection dropping is reported as [`Event::ShardLost`] rather than the
//! end of everything: the other shards' subscriptions keep delivering while
//! the subscriber repairs (see `redis.rs`).

use super::Delivery;
use super::channels::hash_tag;
use crate::redis_endpoint::RedisEndpoint;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// What the connection brought.
pub(super) enum Event {
    Message(Delivery),
    /// A cluster shard's connection dropped; the others still deliver.
    ShardLost,
    /// A shard dropped this subscription (its slot moved to another shard,
    /// or the subscriber asked): to subscribe again if still wanted.
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

    /// Subscribe to `channels`; on a cluster, one command per hash tag (a
    /// command's channels must share a slot).
    pub(super) async fn subscribe(&mut self, channels: &[&String]) -> redis::RedisResult<()> {
        if channels.is_empty() {
            return Ok(());
        }
        match self {
            Self::Server { sink, .. } => sink.subscribe(channels).await,
            Self::Cluster { connection, .. } => {
                let mut by_tag: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
                for channel in channels {
                    by_tag.entry(hash_tag(channel)).or_default().push(channel);
                }
                for same_slot in by_tag.values() {
                    connection.ssubscribe(same_slot).await?;
                }
                Ok(())
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
