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
