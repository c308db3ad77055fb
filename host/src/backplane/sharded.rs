//! Publishing on a Redis Cluster: `SPUBLISH`, one pipeline per shard, on a
//! connection of the publisher's own to each shard's primary.
//!
//! Why not the cluster client: a pipeline it routes must keep to one slot,
//! and a batch holds hundreds of hubs' slots; a pipeline per slot costs a
//! shard a read and a reply per message or two (measured: 3.3 µs of a
//! primary's CPU per message against 0.8 on one server). And it retries a
//! pipeline whole when one command is redirected, publishing again what
//! went through. So the publisher keeps its own copy of the slot map
//! (`CLUSTER SLOTS`) and sends each primary one pipeline of its messages.
//!
//! Guarantee: a message is published once at most, and the messages of one
//! hash tag (one hub) keep their order. A shard that answers a message with
//! an error (`MOVED` after a slot moved or a replica took over, `TRYAGAIN`,
//! `CLUSTERDOWN`…) did not publish it: the map is read again and those
//! messages are sent again, in order, up to [`ROUNDS`] times, then handed
//! back to wait as in an outage. Only a pipeline whose connection failed
//! mid-way may have been published in part: its messages are lost in flight
//! and counted, as on one server.

use super::buffer::Outgoing;
use super::channels::hash_tag;
use crate::redis_endpoint::RedisEndpoint;
use redis::aio::{ConnectionLike as _, MultiplexedConnection};
use std::collections::{BTreeMap, HashMap};

/// How many times one batch is sent again after redirects.
const ROUNDS: usize = 3;

/// What became of a batch.
#[derive(Debug, Default)]
pub(super) struct Sent {
    /// Messages (indexes into the batch, in order) that were not published
    /// and may be sent again.
    pub unsent: Vec<usize>,
    /// Messages that may or may not have been published.
    pub lost: u64,
    /// The last error, if anything went wrong.
    pub error: Option<String>,
}

/// A publisher's view of a cluster: its slot map and a connection to each
/// primary.
pub(super) struct Shards {
    endpoint: RedisEndpoint,
    /// Slot ranges and the primary (`host:port`) serving each.
    ranges: Vec<(u16, u16, String)>,
    connections: HashMap<String, MultiplexedConnection>,
}

impl Shards {
    /// Read the slot map from the first seed that answers.
    pub(super) async fn connect(endpoint: &RedisEndpoint) -> Result<Self, String> {
        let mut shards = Self {
            endpoint: endpoint.clone(),
            ranges: Vec::new(),
            connections: HashMap::new(),
        };
        shards.refresh().await?;
        Ok(shards)
    }

    /// Read the slot map again, from a primary already connected or a seed.
    async fn refresh(&mut self) -> Result<(), String> {
        let mut candidates: Vec<String> = self.connections.keys().cloned().collect();
        candidates.extend(self.endpoint.cluster_seeds().iter().cloned());
        let mut last = String::from("no seed");
        for address in &candidates {
            match self.slots_from(address).await {
                Ok(ranges) if !ranges.is_empty() => {
                    self.ranges = ranges;
                    // Drop connections to servers that serve no slot now.
                    let serving: Vec<&String> = self.ranges.iter().map(|(_, _, a)| a).collect();
                    self.connections.retain(|a, _| serving.contains(&a));
                    return Ok(());
                }
                Ok(_) => last = format!("{address} serves no slots"),
                Err(error) => last = format!("{address}: {error}"),
            }
        }
        Err(format!("cannot read the cluster's slot map ({last})"))
    }

    async fn slots_from(&mut self, address: &str) -> Result<Vec<(u16, u16, String)>, String> {
        let mut connection = self.connection(address).await?;
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await
            .map_err(|e| e.to_string())?;
        Ok(slots.iter().filter_map(slot_range).collect())
    }

    /// The connection to `address`, made if need be.
    async fn connection(&mut self, address: &str) -> Result<MultiplexedConnection, String> {
        if let Some(connection) = self.connections.get(address) {
            return Ok(connection.clone());
        }
        let made = self
            .endpoint
            .connect_cluster_node(address)
            .await
            .map_err(|e| e.to_string())?;
        self.connections.insert(address.to_owned(), made.clone());
        Ok(made)
    }

    /// The primary serving `slot`, by the map.
    fn primary(&self, slot: u16) -> Option<&str> {
        self.ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, address)| address.as_str())
    }

    /// Publish `batch` (see the module's guarantee).
    pub(super) async fn publish(&mut self, batch: &[Outgoing]) -> Sent {
        let mut sent = Sent::default();
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        for round in 0..ROUNDS {
            if round > 0
                && let Err(error) = self.refresh().await
            {
                sent.error = Some(error);
                break;
            }
            let mut by_shard: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for &index in &pending {
                let slot = slot(&batch[index].channel);
                let shard = self.primary(slot).unwrap_or("unknown").to_owned();
                by_shard.entry(shard).or_default().push(index);
            }
            let mut sends = Vec::new();
            let mut again = Vec::new();
            for (shard, indexes) in by_shard {
                match self.connection(&shard).await {
                    Ok(connection) => sends.push(send(connection, batch, indexes)),
                    Err(error) => {
                        // Nothing was sent to it.
                        sent.error = Some(format!("{shard}: {error}"));
                        self.connections.remove(&shard);
                        again.extend(indexes);
                    }
                }
            }
            for (outcome, shard_error) in futures_util::future::join_all(sends).await {
                match outcome {
                    Outcome::Refused(indexes) => again.extend(indexes),
                    Outcome::Lost(count) => sent.lost += count,
                }
                if let Some(error) = shard_error {
                    sent.error = Some(error);
                }
            }
            again.sort_unstable();
            pending = again;
            if pending.is_empty() {
                break;
            }
        }
        if sent.lost > 0 {
            // A connection failed: make new ones next time.
            self.connections.clear();
        }
        sent.unsent = pending;
        sent
    }
}

/// What one shard did with its pipeline.
enum Outcome {
    /// These were answered with an error, so not published (or the
    /// pipeline never left).
    Refused(Vec<usize>),
    /// The connection failed mid-way: so many may or may not be published.
    Lost(u64),
}

/// One pipeline of `SPUBLISH` for `indexes` of `batch` to one primary.
async fn send(
    mut connection: MultiplexedConnection,
    batch: &[Outgoing],
    indexes: Vec<usize>,
) -> (Outcome, Option<String>) {
    let mut pipe = redis::pipe();
    for &index in &indexes {
        pipe.cmd("SPUBLISH")
            .arg(&batch[index].channel)
            .arg(batch[index].payload.as_ref());
    }
    match connection
        .req_packed_commands(&pipe, 0, indexes.len())
        .await
    {
        Ok(answers) => {
            let mut error = None;
            let refused = indexes
                .into_iter()
                .zip(answers)
                .filter_map(|(index, answer)| match answer {
                    redis::Value::ServerError(e) => {
                        error = Some(format!("{}: {}", e.code(), e.details().unwrap_or("")));
                        Some(index)
                    }
                    _ => None,
                })
                .collect();
            (Outcome::Refused(refused), error)
        }
        Err(e) if e.is_connection_refusal() => (Outcome::Refused(indexes), Some(e.to_string())),
        Err(e) => (Outcome::Lost(indexes.len() as u64), Some(e.to_string())),
    }
}

/// `[start, end, [host, port, …], …]` of `CLUSTER SLOTS`.
fn slot_range(range: &redis::Value) -> Option<(u16, u16, String)> {
    let redis::Value::Array(fields) = range else {
        return None;
    };
    let start = redis::from_redis_value_ref::<u16>(fields.first()?).ok()?;
    let end = redis::from_redis_value_ref::<u16>(fields.get(1)?).ok()?;
    let redis::Value::Array(primary) = fields.get(2)? else {
        return None;
    };
    let host = redis::from_redis_value_ref::<String>(primary.first()?).ok()?;
    let port = redis::from_redis_value_ref::<u16>(primary.get(1)?).ok()?;
    Some((start, end, format!("{host}:{port}")))
}

/// The Redis Cluster slot of `channel`: CRC16 of its hash tag, mod 16384.
fn slot(channel: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(channel).as_bytes()) % 16_384
}

#[cfg(test)]
mod tests {
    #[test]
    fn slots_are_the_ones_redis_computes() {
        // `CLUSTER KEYSLOT` of the same names on Redis 7.0.
        assert_eq!(super::slot("foo"), 12_182);
        assert_eq!(super::slot("{user1000}.following"), 3_443);
        assert_eq!(super::slot("{}x"), 10_595);
        assert_eq!(super::slot("{hubhost:acme:chat}:group:{x}"), 11_789);
    }
}
