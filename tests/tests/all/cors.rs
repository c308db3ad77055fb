//! CORS on the hub endpoints: what a browser on another origin needs for
//! the official client (credentials, its headers), and nothing for origins
//! not allowed.

use hubhost::config::Config;
use hubhost_tests::{TestServer, config, http_response};
use std::net::SocketAddr;

/// The whole response (status line, headers, body), lower-cased.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<String> {
    Ok(http_response(addr, method, path, headers)
        .await?
        .to_lowercase())
}

fn with_origins(origins: &[&str]) -> Config {
    let mut config = config();
    config.cors.allowed_origins = origins.iter().map(|o| o.to_string()).collect();
    config
}

const PREFLIGHT: [(&str, &str); 3] = [
    ("Origin", "https://app.example"),
    ("Access-Control-Request-Method", "POST"),
    (
        "Access-Control-Request-Headers",
        "authorization,x-requested-with,x-signalr-user-agent",
    ),
];

#[tokio::test]
async fn allowed_origins_get_credentials_and_the_clients_headers() -> anyhow::Result<()> {
    let server = TestServer::start(with_origins(&["https://app.example"])).await?;
    let preflight = request(
        server.addr,
        "OPTIONS",
        "/demo/chat/negotiate?negotiateVersion=1",
        &PREFLIGHT,
    )
    .await?;
    assert!(preflight.starts_with("http/1.1 200"), "{preflight}");
    assert!(
        preflight.contains("access-control-allow-origin: https://app.example\r\n"),
        "{preflight}"
    );
    assert!(
        preflight.contains("access-control-allow-credentials: true\r\n"),
        "{preflight}"
    );
    for header in ["authorization", "x-requested-with", "x-signalr-user-agent"] {
        assert!(
            preflight.contains(header),
            "{header} not allowed: {preflight}"
        );
    }
    let negotiate = request(
        server.addr,
        "POST",
        "/demo/chat/negotiate?negotiateVersion=1",
        &[("Origin", "https://app.example")],
    )
    .await?;
    assert!(
        negotiate.contains("access-control-allow-origin: https://app.example\r\n"),
        "{negotiate}"
    );
    assert!(negotiate.contains("\"connectionid\""), "{negotiate}");

    // Another origin gets no grant (the browser then refuses the response).
    let other = request(
        server.addr,
        "POST",
        "/demo/chat/negotiate",
        &[("Origin", "https://evil.example")],
    )
    .await?;
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    // The admin API is never opened to browsers.
    let admin = request(
        server.addr,
        "GET",
        "/admin/v1/tenants",
        &[("Origin", "https://app.example")],
    )
    .await?;
    assert!(!admin.contains("access-control-allow-origin"), "{admin}");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn no_origins_means_no_cross_origin_access_and_star_mirrors() -> anyhow::Result<()> {
    let closed = TestServer::start(with_origins(&[])).await?;
    let preflight = request(closed.addr, "OPTIONS", "/demo/chat/negotiate", &PREFLIGHT).await?;
    assert!(
        !preflight.contains("access-control-allow-origin"),
        "{preflight}"
    );
    closed.stop().await?;

    let open = TestServer::start(with_origins(&["*"])).await?;
    let preflight = request(open.addr, "OPTIONS", "/demo/chat/negotiate", &PREFLIGHT).await?;
    assert!(
        preflight.contains("access-control-allow-origin: https://app.example\r\n"),
        "{preflight}"
    );
    assert!(
        preflight.contains("access-control-allow-credentials: true\r\n"),
        "{preflight}"
    );
    open.stop().await?;

    assert!(
        with_origins(&["https://app.example/"]).checked().is_err(),
        "a path is not an origin"
    );
    assert!(
        with_origins(&["app.example"]).checked().is_err(),
        "an origin has a scheme"
    );
    Ok(())
}
