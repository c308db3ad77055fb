//! `rediss://`: a `hubhost` process reaches a TLS-only `redis-server` whose
//! certificate its trust store accepts, and refuses one it does not.
//! Certificates are made with the `openssl` command for this test alone.

use anyhow::{Context as _, ensure};
use hubhost_tests::process::Node;
use hubhost_tests::redis_server::{NOTICE, RedisServer, free_port};
use hubhost_tests::{guest, http, temp_dir, wait_until, wait_until_async};
use std::path::Path;
use std::process::Stdio;

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

/// Start `hubhost serve` with `ca_file` as its only trusted root.
async fn node(url: &str, ca_file: &Path) -> anyhow::Result<Node> {
    let args = [
        "--redis".to_owned(),
        url.to_owned(),
        "--hub".to_owned(),
        format!("demo/chat={}", guest("chat").display()),
    ];
    let ca = ca_file.display().to_string();
    Node::start(&args, &[("SSL_CERT_FILE", ca.as_str())]).await
}

async fn ready(node: &Node) -> anyhow::Result<()> {
    let addr = node.addr;
    wait_until_async(NOTICE, || async move {
        http(addr, "GET", "/readyz")
            .await
            .is_ok_and(|(s, _)| s == 200)
    })
    .await
}

/// TLS handshakes that clients have refused so far: Redis logs each failed
/// handshake, and one a client refused with the TLS alert it got
/// (`… tlsv1 alert decrypt error`, `… alert unknown ca`). Other failures,
/// like the plain TCP probe of [`RedisServer::start`] (`unexpected eof`),
/// are not refusals.
fn failed_handshakes(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.contains("Error accepting a client connection") && line.contains(" alert ")
        })
        .count()
}

#[tokio::test]
async fn rediss_urls_connect_over_tls_and_check_the_certificate() -> anyhow::Result<()> {
    let dir = temp_dir("tls")?;
    certificates(&dir)?;
    let port = free_port()?;
    let file = |name: &str| dir.join(name).display().to_string();
    let log = dir.join("redis.log");
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
        "--logfile",
        &file("redis.log"),
    ];
    let _redis = RedisServer::start_with(port, &tls).await?;
    let url = format!("rediss://localhost:{port}");

    let trusting = node(&url, &dir.join("ca.crt")).await?;
    ready(&trusting)
        .await
        .context("a node trusting the CA never became ready")?;

    // A node that does not trust the CA refuses the server: never ready.
    // Checked once Redis has seen it refuse several handshakes (each of its
    // two connections at least twice); the trusting nodes refuse none.
    let other = dir.join("other");
    std::fs::create_dir_all(&other)?;
    certificates(&other)?;
    let before = failed_handshakes(&log);
    let distrusting = node(&url, &other.join("ca.crt")).await?;
    let again = node(&url, &dir.join("ca.crt")).await?;
    wait_until(NOTICE, || failed_handshakes(&log) >= before + 4)
        .await
        .with_context(|| {
            format!(
                "Redis saw {} failed handshakes",
                failed_handshakes(&log) - before
            )
        })?;
    ready(&again).await?;
    let (status, body) = http(distrusting.addr, "GET", "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    let refusals = failed_handshakes(&log) - before;
    println!("tls: the distrusting node refused {refusals} handshakes");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
