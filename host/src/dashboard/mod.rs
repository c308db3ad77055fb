//! The dashboard at `/admin/`: one static page over the admin API, built
//! into the binary. It holds no secret and reads nothing on the server; the
//! operator's (or tenant's) key is entered in the page and sent with each
//! admin API call, which checks it as for any other client.
//!
//! The page is served with a content security policy that allows only its
//! own script and style, and calls to its own origin: what a tenant or a
//! hub wrote (names, error texts) is shown as text, and even a mistake
//! there could not load or send anything elsewhere.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes (state-free, merged into the app).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route(
            "/admin/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/admin/dashboard.js",
            get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/admin/dashboard.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
}

fn page(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
