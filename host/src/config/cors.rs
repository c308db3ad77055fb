//! CORS for the hub endpoints, so browser clients served from another origin
//! can negotiate and use the transports. The official client sends
//! credentials (`withCredentials` is true by default) and its own headers,
//! so origins are named (or mirrored, for `*`), never the wildcard, and
//! credentials and those headers are allowed. WebSockets need no CORS; the
//! negotiate that precedes them does.

use super::CorsSettings;
use anyhow::Context as _;
use axum::http::{HeaderName, HeaderValue, Method, header};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers the official clients send.
const CLIENT_HEADERS: [&str; 2] = ["x-requested-with", "x-signalr-user-agent"];

/// The layer for `config`; `None` when no origin is allowed.
pub fn layer(config: &CorsSettings) -> anyhow::Result<Option<CorsLayer>> {
    if config.allowed_origins.is_empty() {
        return Ok(None);
    }
    let origin = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        let mut origins = Vec::new();
        for origin in &config.allowed_origins {
            if origin.ends_with('/') || !origin.contains("://") {
                anyhow::bail!(
                    "cors origin '{origin}' must look like https://host[:port], without a path"
                );
            }
            origins.push(
                HeaderValue::from_str(origin)
                    .with_context(|| format!("invalid cors origin '{origin}'"))?,
            );
        }
        AllowOrigin::list(origins)
    };
    let mut headers = vec![header::AUTHORIZATION, header::CONTENT_TYPE];
    headers.extend(CLIENT_HEADERS.map(HeaderName::from_static));
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(headers)
            .max_age(Duration::from_secs(config.max_age_secs)),
    ))
}
