//! Where a node's Redis is: one server (`redis://…`, `rediss://…`), the
//! primary that Redis Sentinel names
//! (`redis+sentinel://[user:password@]host:port[,host:port…]/PRIMARY[/db]`),
//! or a Redis Cluster found from seed nodes
//! (`redis+cluster://[user:password@]host:port[,host:port…]`, or
//! `rediss+cluster://` for TLS).
//!
//! Guarantee: every (re)connection asks [`RedisEndpoint::connect`] afresh,
//! so a node follows a Sentinel failover without a restart — its broken
//! connections reconnect to whichever server the sentinels name then — and
//! a cluster connection starts from the cluster's current slot map. While
//! no server is there, connecting fails as in an outage: the backplane
//! buffers, state calls fail with their usual error, and every user retries.
//!
//! The user and password (if any) are the data servers'; sentinels are
//! asked without authentication.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use std::time::Duration;

/// How long one sentinel may take to connect and answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a connection may take to be made (a cluster's slot map included).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest one command may wait for a cluster shard's answer (the callers'
/// own time limits are the ones that matter; this one frees the client).
const CLUSTER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The scheme of a Sentinel endpoint.
const SENTINEL_SCHEME: &str = "redis+sentinel://";
/// The schemes of a cluster endpoint, and the scheme its seeds take.
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid Redis URL: {0}")]
    Invalid(String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("no sentinel named a primary '{primary}' ({detail})")]
    NoPrimary { primary: String, detail: String },
    #[error("Redis did not answer within {CONNECT_TIMEOUT:?}")]
    Timeout,
}

#[derive(Debug, Clone)]
enum Kind {
    Server(redis::Client),
    Sentinel {
        sentinels: Vec<redis::Client>,
        primary: String,
        /// `user:password@`, or empty.
        auth: String,
        db: u32,
    },
    /// A Redis Cluster: its client (RESP3, so that a connection can carry
    /// sharded pub/sub too), and how to reach one of its servers.
    Cluster {
        /// Boxed: it is most of the endpoint's size, and most endpoints
        /// are not clusters.
        client: Box<redis::cluster::ClusterClient>,
        /// `redis://user:password@` or the like: a server's URL without
        /// its `host:port`.
        base: String,
        seeds: Vec<String>,
    },
}

/// A Redis to connect to (see the module's guarantee).
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    kind: Kind,
}

impl RedisEndpoint {
    /// Parse `url`; nothing is contacted.
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        if url.starts_with("rediss") {
            // rustls needs one process-wide crypto provider; a second
            // install is refused harmlessly.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if let Some((rest, scheme)) = CLUSTER_SCHEMES
            .iter()
            .find_map(|(cluster, seed)| Some((url.strip_prefix(cluster)?, seed)))
        {
            return Self::cluster(rest, scheme);
        }
        let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) else {
            return Ok(Self {
                kind: Kind::Server(redis::Client::open(url)?),
            });
        };
        let invalid =
            |why: &str| EndpointError::Invalid(format!("{why} in a {SENTINEL_SCHEME} URL"));
        let (auth, rest) = split_auth(rest);
        let (hosts, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("no /PRIMARY name"))?;
        let (primary, db) = match path.split_once('/') {
            Some((primary, db)) => (primary, db.parse().map_err(|_| invalid("a bad db number"))?),
            None => (path, 0),
        };
        if primary.is_empty() {
            return Err(invalid("an empty primary name"));
        }
        let sentinels = addresses(hosts)
            .ok_or_else(|| invalid("an empty sentinel address"))?
            .into_iter()
            .map(|host| redis::Client::open(format!("redis://{host}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            kind: Kind::Sentinel {
                sentinels,
                primary: primary.to_owned(),
                auth,
                db,
            },
        })
    }

    /// A cluster from `hosts`, `[auth@]host:port[,host:port…]`, each a seed
    /// spoken to with `scheme`.
    fn cluster(hosts: &str, scheme: &str) -> Result<Self, EndpointError> {
        let invalid = |why: &str| EndpointError::Invalid(format!("{why} in a cluster URL"));
        let (auth, hosts) = split_auth(hosts);
        let hosts = hosts.trim_end_matches('/');
        if hosts.contains('/') {
            return Err(invalid("a path (a cluster has no databases)"));
        }
        let seeds = addresses(hosts).ok_or_else(|| invalid("an empty seed address"))?;
        let base = format!("{scheme}{auth}");
        let client =
            redis::cluster::ClusterClientBuilder::new(seeds.iter().map(|h| format!("{base}{h}")))
                .use_protocol(redis::ProtocolVersion::RESP3)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(CLUSTER_RESPONSE_TIMEOUT)
                // Few retries: the callers' own (backoff, buffering) decide
                // what waits for a dead shard, not the client.
                .retries(2)
                .build()?;
        Ok(Self {
            kind: Kind::Cluster {
                client: Box::new(client),
                base,
                seeds,
            },
        })
    }

    /// Whether this is a Sentinel endpoint.
    pub fn is_sentinel(&self) -> bool {
        matches!(self.kind, Kind::Sentinel { .. })
    }

    /// Whether this is a Redis Cluster: keys that one script or transaction
    /// touches must share a hash tag, and pub/sub is sharded.
    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster { .. })
    }

    /// The seeds of a cluster (`host:port`); none for another endpoint.
    pub fn cluster_seeds(&self) -> &[String] {
        match &self.kind {
            Kind::Cluster { seeds, .. } => seeds,
            _ => &[],
        }
    }

    /// A connection to one server of a cluster, at `address` (`host:port`),
    /// with the cluster's credentials and TLS, made now; it follows no
    /// redirect. For publishing to each shard directly.
    pub async fn connect_cluster_node(
        &self,
        address: &str,
    ) -> Result<MultiplexedConnection, EndpointError> {
        let Kind::Cluster { base, .. } = &self.kind else {
            return Err(EndpointError::Invalid("not a cluster".into()));
        };
        let client = redis::Client::open(format!("{base}{address}"))?;
        let made = tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection());
        Ok(made.await.map_err(|_| EndpointError::Timeout)??)
    }

    /// A connection for commands, made now (see the module's guarantee).
    pub async fn connect(&self) -> Result<RedisConnection, EndpointError> {
        let made = tokio::time::timeout(CONNECT_TIMEOUT, async {
            Ok::<_, EndpointError>(match &self.kind {
                Kind::Cluster { client, .. } => {
                    RedisConnection::Cluster(client.get_async_connection().await?)
                }
                _ => RedisConnection::Server(
                    self.client()
                        .await?
                        .get_multiplexed_async_connection()
                        .await?,
                ),
            })
        })
        .await;
        made.unwrap_or(Err(EndpointError::Timeout))
    }

    /// A cluster connection whose sharded pub/sub messages (and other
    /// pushes) go to `pushes`, made now; `None` for an endpoint that is not
    /// a cluster.
    pub async fn connect_cluster_subscriber(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Option<Result<ClusterConnection, EndpointError>> {
        let Kind::Cluster { client, .. } = &self.kind else {
            return None;
        };
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CLUSTER_RESPONSE_TIMEOUT)
            .set_push_sender(pushes);
        let made = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.get_async_connection_with_config(config),
        )
        .await;
        Some(match made {
            Ok(made) => made.map_err(EndpointError::from),
            Err(_) => Err(EndpointError::Timeout),
        })
    }

    /// The client of the server to connect to now: the one server, or the
    /// primary the first answering sentinel names. A cluster has no one
    /// server: use [`RedisEndpoint::connect`].
    pub async fn client(&self) -> Result<redis::Client, EndpointError> {
        match &self.kind {
            Kind::Server(client) => Ok(client.clone()),
            Kind::Cluster { .. } => Err(EndpointError::Invalid(
                "a cluster has no single server to connect to".into(),
            )),
            Kind::Sentinel {
                sentinels,
                primary,
                auth,
                db,
            } => {
                let mut detail = String::from("no sentinel answered");
                for sentinel in sentinels {
                    match ask(sentinel, primary).await {
                        Ok(Some((host, port))) => {
                            let url = format!("redis://{auth}{host}:{port}/{db}");
                            return Ok(redis::Client::open(url)?);
                        }
                        Ok(None) => detail = "a sentinel does not know it".into(),
                        Err(error) => detail = error,
                    }
                }
                Err(EndpointError::NoPrimary {
                    primary: primary.clone(),
                    detail,
                })
            }
        }
    }
}

/// `user:password@rest` as (`user:password@`, `rest`); no credentials: ("", all).
fn split_auth(text: &str) -> (String, &str) {
    match text.rsplit_once('@') {
        Some((auth, rest)) if !auth.is_empty() => (format!("{auth}@"), rest),
        _ => (String::new(), text),
    }
}

/// `host:port[,host:port…]` as a list; `None` if one is empty or has spaces.
fn addresses(hosts: &str) -> Option<Vec<String>> {
    hosts
        .split(',')
        .map(|host| {
            (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| host.to_owned())
        })
        .collect()
}

/// A connection for commands to one server or to a cluster; cheap to clone
/// (both kinds are multiplexed). On a cluster, each command goes to the
/// shard of its keys, and a pipeline's keys must share one slot.
#[derive(Clone)]
pub enum RedisConnection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Server(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// `SENTINEL get-master-addr-by-name` of one sentinel.
async fn ask(sentinel: &redis::Client, primary: &str) -> Result<Option<(String, u16)>, String> {
    let answer = tokio::time::timeout(SENTINEL_TIMEOUT, async {
        let mut connection = sentinel.get_multiplexed_async_connection().await?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(primary)
            .query_async::<Option<(String, u16)>>(&mut connection)
            .await
    })
    .await;
    match answer {
        Ok(Ok(address)) => Ok(address),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("a sentinel did not answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_are_parsed_and_bad_ones_refused() -> anyhow::Result<()> {
        let endpoint = RedisEndpoint::parse("redis+sentinel://u:p@127.0.0.1:1,127.0.0.1:2/main/3")?;
        let Kind::Sentinel {
            sentinels,
            primary,
            auth,
            db,
        } = &endpoint.kind
        else {
            anyhow::bail!("not a sentinel endpoint");
        };
        assert_eq!(
            (sentinels.len(), primary.as_str(), auth.as_str(), *db),
            (2, "main", "u:p@", 3)
        );
        assert!(!RedisEndpoint::parse("redis://127.0.0.1:6379")?.is_sentinel());
        let cluster = RedisEndpoint::parse("redis+cluster://u:p@127.0.0.1:1,127.0.0.1:2")?;
        assert!(cluster.is_cluster() && !cluster.is_sentinel());
        for bad in [
            "redis+cluster://",
            "redis+cluster://127.0.0.1:1,",
            "redis+cluster://127.0.0.1:1/2",
            "redis+sentinel://127.0.0.1:1",
            "redis+sentinel://127.0.0.1:1/",
            "redis+sentinel://127.0.0.1:1,/main",
            "redis+sentinel://127.0.0.1:1/main/x",
        ] {
            assert!(RedisEndpoint::parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
