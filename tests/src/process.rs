//! A `hubhost serve` process of a test's own, for what an in-process
//! [`crate::TestServer`] cannot show: the process's own environment (its
//! trust store), and its log, which in-process servers would write through a
//! tracing subscriber shared by every test of the binary.

use crate::redis_server::NOTICE;
use crate::{PATIENCE, binary, wait_until};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `hubhost serve`; killed on drop. Every line it writes to
/// stdout (its log) is kept, in order.
pub struct Node {
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    child: Child,
}

impl Node {
    /// `hubhost serve --listen 127.0.0.1:0` with `args` and `env`; returns
    /// once it listens.
    pub async fn start(args: &[String], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_binary(&binary(), args, env).await
    }

    /// [`Node::start`] with another build of `hubhost` (a release one, for
    /// a benchmark).
    pub async fn start_binary(
        binary: &std::path::Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut reader = BufReader::new(stdout).lines();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let line = tokio::time::timeout(NOTICE, reader.next_line())
                .await??
                .context("hubhost exited")?;
            let addr = line.split("listening on http://").nth(1).map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .parse::<SocketAddr>()
            });
            push(&lines, line);
            if let Some(addr) = addr {
                break addr?;
            }
        };
        // Keep reading, so the process never blocks on a full pipe.
        let kept = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                push(&kept, line);
            }
        });
        Ok(Self { addr, lines, child })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `VmHWM` (peak) and `VmRSS` of the process, in KiB.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let pid = self.pid().context("the process is gone")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
            let kib = line.split_whitespace().nth(1).context("no value")?;
            Ok(kib.parse()?)
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }

    /// The process's proportional set size in KiB: memory it shares (the
    /// same file mapped twice, as compiled code from one cache file) counts
    /// once.
    pub fn pss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("the process is gone")?;
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        let line = rollup
            .lines()
            .find(|l| l.starts_with("Pss:"))
            .context("no Pss in smaps_rollup")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?)
    }

    /// The log lines written so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wait (up to [`PATIENCE`]) until a log line contains `text`; all the
    /// lines up to and including the first such line.
    pub async fn log_until(&self, text: &str) -> anyhow::Result<Vec<String>> {
        let lines = self.lines.clone();
        wait_until(PATIENCE, move || {
            lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|l| l.contains(text))
        })
        .await
        .with_context(|| format!("no log line with {text:?}"))?;
        let lines = self.lines();
        let end = lines.iter().position(|l| l.contains(text)).unwrap_or(0);
        Ok(lines[..=end].to_vec())
    }
}

fn push(lines: &Mutex<Vec<String>>, line: String) {
    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
}
