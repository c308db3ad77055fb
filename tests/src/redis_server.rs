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

/// A port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl RedisServer {
    /// Start on `port` and wait until it accepts connections.
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        Self::start_with(port, &[]).await
    }

    /// Start on `port` with extra `redis-server` arguments.
    pub async fn start_with(port: u16, extra: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new("redis-server")
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
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start redis-server (is it installed?)")?;
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
        .context("redis-server did not start")?;
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
