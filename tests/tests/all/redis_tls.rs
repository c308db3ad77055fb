//! `rediss://`: a `hubhost` process reaches a TLS-only `redis-server` whose
//! certificate its trust store accepts, and refuses one it does not.
//! Certificates are made with the `openssl` command for this test alone.

use anyhow::{Context as _, ensure};
use hubhost_tests::redis_server::{NOTICE, RedisServer, free_port};
use hubhost_tests::{binary, guest, http, wait_until_async};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run openssl")?;
    ensure!(status.success(), "openssl {args:?} failed");
    Ok(())
}

/// A CA and a certificate for localhost signed by it, in `dir`.
fn certificates(dir: &Path) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=hubhost test CA",
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
            "-subj",
            "/CN=localhost",
        ],
    )?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "redis.crt",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    )
}

/// Start `hubhost serve` on port 0 with `ca_file` as its only trusted root;
/// returns the process and its address.
async fn node(url: &str, ca_file: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", url])
        .arg("--hub")
        .arg(format!("demo/chat={}", guest("chat").display()))
        .env("SSL_CERT_FILE", ca_file)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = tokio::time::timeout(NOTICE, lines.next_line())
            .await??
            .context("hubhost exited")?;
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .context("no address")?
                .parse()?;
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

#[tokio::test]
async fn rediss_urls_connect_over_tls_and_check_the_certificate() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("hubhost-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    certificates(&dir)?;
    let port = free_port()?;
    let file = |name: &str| dir.join(name).display().to_string();
    let tls = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &file("redis.crt"),
        "--tls-key-file",
        &file("redis.key"),
        "--tls-ca-cert-file",
        &file("ca.crt"),
        "--tls-auth-clients",
        "no",
    ];
    let _redis = RedisServer::start_with(port, &tls).await?;
    let url = format!("rediss://localhost:{port}");

    let (_trusting, trusting) = node(&url, &dir.join("ca.crt")).await?;
    wait_until_async(NOTICE, || async {
        http(trusting, "GET", "/readyz")
            .await
            .is_ok_and(|(s, _)| s == 200)
    })
    .await
    .context("a node trusting the CA never became ready")?;

    // A node that does not trust the CA refuses the server: never ready.
    // Checked after the trusting node is ready, having started later and
    // failed at least its first attempt by then.
    let other = dir.join("other");
    std::fs::create_dir_all(&other)?;
    certificates(&other)?;
    let (_distrusting, distrusting) = node(&url, &other.join("ca.crt")).await?;
    let (_again, again) = node(&url, &dir.join("ca.crt")).await?;
    wait_until_async(NOTICE, || async {
        http(again, "GET", "/readyz")
            .await
            .is_ok_and(|(s, _)| s == 200)
    })
    .await?;
    assert_eq!(http(distrusting, "GET", "/readyz").await?.0, 503);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
