//! A `redis-server` of a test's own, on a free port, for fault tests that
//! stop and restart Redis (the machine's shared Redis is never touched).

use anyhow::Context as _;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running `redis-server`; killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

/// A port nothing listens on right now, for a server a test starts later
/// (a `redis-server`, or one a node must find missing at first).
///
/// Taken below the kernel's ephemeral range and never twice by one process:
/// a port from the ephemeral range could meanwhile be handed to another
/// test's port-0 listener or outgoing connection (all the tests share one
/// process), and a node told to wait for Redis there would find that instead.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = 10_000.min(low.saturating_sub(1_024));
    if span < 100 {
        // No room below the ephemeral range: fall back to asking the kernel.
        return Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port());
    }
    // Processes (two test runs at once) start at different places.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(low - span + offset)?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port below {low}")
}

impl RedisServer {
    /// Start on `port` and wait until it accepts connections.
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        Self::start_with(port, &[]).await
    }

    /// Start on `port` with extra `redis-server` arguments.
    pub async fn start_with(port: u16, extra: &[&str]) -> anyhow::Result<Self> {
        // A replica writes the primary's snapshot to its directory even with
        // saving off: never the working directory (the repository).
        let dir = crate::temp_dir("redis")?;
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.to_string_lossy(),
            ])
            .args(extra);
        Self::spawn(command, port, "redis-server").await
    }

    /// A Redis Sentinel on `port` watching the primary at `primary_port`
    /// as `name`, quick to act (down after 1 s, failover timeout 3 s).
    /// Sentinel rewrites its configuration file: it lives in `dir`.
    pub async fn sentinel(
        port: u16,
        name: &str,
        primary_port: u16,
        dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {name} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 3000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.display()
            ),
        )?;
        let mut command = Command::new("redis-server");
        command.arg(&conf).arg("--sentinel");
        Self::spawn(command, port, "redis-server --sentinel").await
    }

    /// Run `command` (a `redis-server` of some kind) and wait until it
    /// accepts connections on `port`.
    async fn spawn(mut command: Command, port: u16, what: &str) -> anyhow::Result<Self> {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {what} (is it installed?)"))?;
        let server = Self {
            port,
            child: Some(child),
        };
        crate::wait_until_async(crate::PATIENCE, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await
        .with_context(|| format!("{what} did not start"))?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill it (as a crash would) and wait until it is gone.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        let port = self.port;
        crate::wait_until_async(crate::PATIENCE, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        })
        .await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// How long fault tests give a node to notice Redis coming or going.
pub const NOTICE: Duration = Duration::from_secs(15);

/// One figure of a Redis `INFO` section, as a number (0 when absent): `field`
/// is `name:` for a plain field (`total_connections_received:`), or
/// `name:key=` inside a field of several (`errorstat_WRONGPASS:count=`,
/// `cmdstat_ping:calls=`).
pub async fn info_number(
    redis: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg(section).query_async(redis).await?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split([',', '\r']).next()?.parse().ok())
        .unwrap_or(0))
}

/// A connection to the Redis at `url`, for [`info_number`].
pub async fn probe(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?)
}

/// Wait (up to [`NOTICE`]) until Redis counts at least `n` in
/// [`info_number`]`(section, field)`; the count then.
pub async fn info_at_least(
    redis: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
    n: u64,
) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + NOTICE;
    loop {
        let count = info_number(redis, section, field).await?;
        if count >= n {
            return Ok(count);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{section} {field} reached {count}, not {n}, within {NOTICE:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A Redis Cluster of the test's own: `primaries` primaries, each with
/// `replicas` replicas, made by `redis-cli --cluster create`, quick to fail
/// over (node timeout 1 s). Shards keep serving while another fails
/// (`cluster-require-full-coverage no`, as the capacity chapter advises).
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    pub async fn start(primaries: usize, replicas: usize) -> anyhow::Result<Self> {
        let dir = crate::temp_dir("redis-cluster")?;
        let mut servers = Vec::new();
        let total = primaries * (1 + replicas);
        for _ in 0..total {
            // A cluster node also listens on its port + 10000 (the bus).
            let port = loop {
                let port = free_port()?;
                if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                    break port;
                }
            };
            let conf = dir.join(format!("nodes-{port}.conf"));
            let conf = conf.to_string_lossy();
            let dir = dir.to_string_lossy();
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
                "--dir",
                &dir,
            ];
            servers.push(RedisServer::start_with(port, &extra).await?);
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for server in &servers {
            create.arg(format!("127.0.0.1:{}", server.port));
        }
        let output = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .context("cannot run redis-cli (is it installed?)")?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { servers, dir };
        // Every node agrees the cluster is up, and every replica has synced.
        crate::wait_until_async(NOTICE, || async {
            for server in &cluster.servers {
                let Ok(nodes) = cluster_nodes(server.port).await else {
                    return false;
                };
                let Ok(mut connection) = probe(&server.url()).await else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut connection)
                    .await
                    .unwrap_or_default();
                // A replica that never synced would refuse to take over.
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut connection)
                    .await
                    .unwrap_or_default();
                let synced = replication.contains("role:master")
                    || replication.contains("master_link_status:up");
                if !info.contains("cluster_state:ok")
                    || !synced
                    || nodes.iter().filter(|n| n.primary).count() != primaries
                    || nodes.len() != total
                {
                    return false;
                }
            }
            true
        })
        .await
        .context("the Redis Cluster did not come up")?;
        Ok(cluster)
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The nodes as some live node sees them.
    pub async fn nodes(&self) -> anyhow::Result<Vec<ClusterNode>> {
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            if let Ok(nodes) = cluster_nodes(server.port).await {
                return Ok(nodes);
            }
        }
        anyhow::bail!("no cluster node answers")
    }

    /// The port of the primary that owns `key`'s slot now.
    pub async fn owner(&self, key: &str) -> anyhow::Result<u16> {
        let live = self
            .servers
            .iter()
            .find(|s| s.child.is_some())
            .context("no live node")?;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut probe(&live.url()).await?)
            .await?;
        self.nodes()
            .await?
            .into_iter()
            .find(|n| n.primary && !n.failed && n.slots.iter().any(|r| r.contains(&slot)))
            .map(|n| n.port)
            .with_context(|| format!("no live primary owns slot {slot}"))
    }

    /// Move the (keyless) slot of `key` to the primary on `to`, as a
    /// resharding would: importing, migrating, then every primary is told
    /// its new owner.
    pub async fn move_slot(&self, key: &str, to: u16) -> anyhow::Result<()> {
        let from = self.owner(key).await?;
        let nodes = self.nodes().await?;
        let id = |port: u16| {
            nodes
                .iter()
                .find(|n| n.port == port)
                .map(|n| n.id.clone())
                .with_context(|| format!("no node on {port}"))
        };
        let (from_id, to_id) = (id(from)?, id(to)?);
        let mut source = probe(&format!("redis://127.0.0.1:{from}")).await?;
        let mut target = probe(&format!("redis://127.0.0.1:{to}")).await?;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut source)
            .await?;
        let set = |state: &str, node: &str| {
            let mut command = redis::cmd("CLUSTER");
            command.arg("SETSLOT").arg(slot).arg(state).arg(node);
            command
        };
        set("IMPORTING", &from_id)
            .query_async::<()>(&mut target)
            .await?;
        set("MIGRATING", &to_id)
            .query_async::<()>(&mut source)
            .await?;
        for node in nodes.iter().filter(|n| n.primary && !n.failed) {
            let mut connection = probe(&format!("redis://127.0.0.1:{}", node.port)).await?;
            set("NODE", &to_id)
                .query_async::<()>(&mut connection)
                .await?;
        }
        Ok(())
    }

    /// Take the server on `port` out of the cluster, to kill it.
    pub fn take(&mut self, port: u16) -> Option<RedisServer> {
        let at = self.servers.iter().position(|s| s.port == port)?;
        Some(self.servers.remove(at))
    }

    /// A figure of `INFO section` on each primary, by port.
    pub async fn on_primaries(
        &self,
        section: &str,
        field: &str,
    ) -> anyhow::Result<Vec<(u16, u64)>> {
        let mut figures = Vec::new();
        for node in self
            .nodes()
            .await?
            .iter()
            .filter(|n| n.primary && !n.failed)
        {
            let mut connection = probe(&format!("redis://127.0.0.1:{}", node.port)).await?;
            figures.push((
                node.port,
                info_number(&mut connection, section, field).await?,
            ));
        }
        Ok(figures)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    pub failed: bool,
    pub slots: Vec<std::ops::RangeInclusive<u16>>,
}

async fn cluster_nodes(port: u16) -> anyhow::Result<Vec<ClusterNode>> {
    let mut connection = probe(&format!("redis://127.0.0.1:{port}")).await?;
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut connection)
        .await?;
    // `<id> <ip:port@cport> <flags> <primary> <ping> <pong> <epoch> <link> <slot>…`
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields
                .get(1)
                .and_then(|a| a.split(['@', ',']).next()?.rsplit(':').next()?.parse().ok())
                .with_context(|| format!("a CLUSTER NODES line without a port: {line}"))?;
            let flags = fields.get(2).copied().unwrap_or_default();
            let slots = fields
                .iter()
                .skip(8)
                .filter_map(|range| {
                    let (low, high) = range.split_once('-').unwrap_or((range, range));
                    Some(low.parse().ok()?..=high.parse().ok()?)
                })
                .collect();
            Ok(ClusterNode {
                id: fields.first().copied().unwrap_or_default().to_owned(),
                port,
                primary: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
            })
        })
        .collect()
}
