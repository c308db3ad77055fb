//! Outbound HTTP (#16, item 4) against a local test server: an allowed
//! origin, a refused one, a refused private address, a redirect out of the
//! list and one within, an oversized response, a slow server against the
//! call's deadline, and one tenant's slow requests not slowing another's.

use axum::Router;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use hubhost::config::Config;
use hubhost::tenants::TenantConfig;
use hubhost_tests::{PATIENCE, RawClient, TestServer, config, wait_until};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The test server: `/ok`, `/big` (2 MiB), `/slow` (3 s; how many wait
/// there is counted), redirects.
async fn upstream() -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let waiting = Arc::new(AtomicUsize::new(0));
    let in_slow = waiting.clone();
    let app =
        Router::new()
            .route("/ok", get(|| async { "hello" }))
            .route(
                "/big",
                get(|| async { vec![b'x'; 2 << 20].into_response() }),
            )
            .route(
                "/slow",
                get(move || {
                    let in_slow = in_slow.clone();
                    async move {
                        in_slow.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        "late"
                    }
                }),
            )
            .route("/redirect-in", get(|| async { Redirect::to("/ok") }))
            .route(
                "/redirect-out",
                get(move || async move {
                    Redirect::to(&format!("http://localhost:{}/ok", addr.port()))
                }),
            );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, waiting))
}

/// `demo` may reach `allow` (private addresses as `private` says), with
/// `call_timeout_ms`; `other` may reach nothing.
fn node(allow: &str, private: bool, call_timeout_ms: u64) -> anyhow::Result<Config> {
    let mut config = config();
    config.tenants.insert(
        "demo".into(),
        TenantConfig {
            hub_limits: serde_json::from_value(json!({
                "http_allow": [allow],
                "http_allow_private": private,
                "call_timeout_ms": call_timeout_ms,
                "max_http_response_bytes": 1 << 20,
            }))?,
            ..TenantConfig::default()
        },
    );
    config.hubs.push(hubhost::config::HubConfig {
        tenant: "other".into(),
        hub: "chat".into(),
        path: hubhost_tests::guest("chat"),
    });
    Ok(config)
}

async fn fetch(client: &mut RawClient, url: &str) -> anyhow::Result<Result<Value, String>> {
    let reply = client.invoke("fetch", "Fetch", json!([url])).await?;
    Ok(match reply["error"].as_str() {
        Some(error) => Err(error.to_owned()),
        None => Ok(reply["result"].clone()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requests_follow_the_tenants_rules() -> anyhow::Result<()> {
    let (up, _) = upstream().await?;
    let base = format!("http://127.0.0.1:{}", up.port());
    let server = TestServer::start(node(&base, true, 1_000)?).await?;
    let (mut c, _) = RawClient::connect(&server, "/demo/chat").await?;

    assert_eq!(
        fetch(&mut c, &format!("{base}/ok")).await?,
        Ok(json!({"status": 200, "bytes": 5}))
    );
    assert_eq!(
        fetch(&mut c, &format!("{base}/redirect-in")).await?,
        Ok(json!({"status": 200, "bytes": 5}))
    );
    let refused = [
        (
            format!("http://localhost:{}/ok", up.port()),
            "hub_limits.http_allow",
        ),
        (format!("{base}/redirect-out"), "hub_limits.http_allow"),
        (format!("{base}/big"), "hub_limits.max_http_response_bytes"),
        ("file:///etc/passwd".to_owned(), "is not an http(s) URL"),
    ];
    for (url, text) in refused {
        let answer = fetch(&mut c, &url).await?;
        assert!(
            answer.as_ref().is_err_and(|e| e.contains(text)),
            "{url}: {answer:?}"
        );
    }
    // Another tenant may reach nothing.
    let (mut other, _) = RawClient::connect(&server, "/other/chat").await?;
    let answer = fetch(&mut other, &format!("{base}/ok")).await?;
    assert!(
        answer
            .as_ref()
            .is_err_and(|e| e.contains("hub_limits.http_allow")),
        "{answer:?}"
    );

    // A slow server: the call's deadline (1 s) ends the request.
    let started = Instant::now();
    let answer = fetch(&mut c, &format!("{base}/slow")).await?;
    assert!(answer.is_err(), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // And the connection goes on.
    assert_eq!(
        fetch(&mut c, &format!("{base}/ok")).await?,
        Ok(json!({"status": 200, "bytes": 5}))
    );
    server.stop().await?;

    // Without the operator's leave, a loopback address is refused.
    let strict = TestServer::start(node(&base, false, 1_000)?).await?;
    let (mut c, _) = RawClient::connect(&strict, "/demo/chat").await?;
    let answer = fetch(&mut c, &format!("{base}/ok")).await?;
    assert!(
        answer
            .as_ref()
            .is_err_and(|e| e.contains("hub_limits.http_allow_private")),
        "{answer:?}"
    );
    strict.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_slow_requests_do_not_slow_another() -> anyhow::Result<()> {
    let (up, waiting) = upstream().await?;
    let base = format!("http://127.0.0.1:{}", up.port());
    let server = TestServer::start(node(&base, true, 5_000)?).await?;
    // Eight of demo's connections wait on the slow server at once.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let (mut client, _) = RawClient::connect(&server, "/demo/chat").await?;
        client
            .send(json!({"type": 1, "invocationId": "s", "target": "Fetch", "arguments": [format!("{base}/slow")]}))
            .await?;
        slow.push(client);
    }
    wait_until(PATIENCE, || waiting.load(Ordering::SeqCst) == 8).await?;
    let (mut other, _) = RawClient::connect(&server, "/other/chat").await?;
    let started = Instant::now();
    let echo = other.invoke("e", "Echo", json!(["quick"])).await?;
    assert_eq!(echo["result"], "quick");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "another tenant's call took {:?}",
        started.elapsed()
    );
    for mut client in slow {
        let done = client.next_where(|m| m["type"] == 3).await?;
        assert_eq!(done["result"], json!({"status": 200, "bytes": 4}), "{done}");
    }
    server.stop().await?;
    Ok(())
}
