//! Where a node's Redis is: one server (`redis://…`, `rediss://…`), or the
//! primary that Redis Sentinel names
//! (`redis+sentinel://[user:password@]host:port[,host:port…]/PRIMARY[/db]`).
//!
//! Guarantee: every (re)connection asks [`RedisEndpoint::client`] afresh,
//! so a node follows a Sentinel failover without a restart — its broken
//! connections reconnect to whichever server the sentinels name then. While
//! none is named, connecting fails as in an outage: the backplane buffers,
//! state calls fail with their usual error, and every user retries.
//!
//! The user and password (if any) are the data servers'; sentinels are
//! asked without authentication.

use std::time::Duration;

/// How long one sentinel may take to connect and answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);
/// The scheme of a Sentinel endpoint.
const SENTINEL_SCHEME: &str = "redis+sentinel://";

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid Redis URL: {0}")]
    Invalid(String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("no sentinel named a primary '{primary}' ({detail})")]
    NoPrimary { primary: String, detail: String },
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
}

/// A Redis to connect to (see the module's guarantee).
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    kind: Kind,
}

impl RedisEndpoint {
    /// Parse `url`; nothing is contacted.
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) else {
            if url.starts_with("rediss://") {
                // rustls needs one process-wide crypto provider; a second
                // install is refused harmlessly.
                let _ = rustls::crypto::ring::default_provider().install_default();
            }
            return Ok(Self {
                kind: Kind::Server(redis::Client::open(url)?),
            });
        };
        let invalid =
            |why: &str| EndpointError::Invalid(format!("{why} in a {SENTINEL_SCHEME} URL"));
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) if !auth.is_empty() => (format!("{auth}@"), rest),
            _ => (String::new(), rest),
        };
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
        let sentinels = hosts
            .split(',')
            .map(|host| {
                if host.is_empty() || host.contains(char::is_whitespace) {
                    return Err(invalid("an empty sentinel address"));
                }
                Ok(redis::Client::open(format!("redis://{host}"))?)
            })
            .collect::<Result<Vec<_>, EndpointError>>()?;
        Ok(Self {
            kind: Kind::Sentinel {
                sentinels,
                primary: primary.to_owned(),
                auth,
                db,
            },
        })
    }

    /// Whether this is a Sentinel endpoint.
    pub fn is_sentinel(&self) -> bool {
        matches!(self.kind, Kind::Sentinel { .. })
    }

    /// The client of the server to connect to now: the one server, or the
    /// primary the first answering sentinel names.
    pub async fn client(&self) -> Result<redis::Client, EndpointError> {
        match &self.kind {
            Kind::Server(client) => Ok(client.clone()),
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
        for bad in [
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
