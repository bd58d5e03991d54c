//! The web console at `/console/`: a few static files compiled into the binary (no CDN, no
//! build step, works offline), served with a strict Content-Security-Policy — scripts and
//! styles from this origin only, so nothing injected into a page could run.

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::error::ApiError;

/// Every file of the console: its path under `/console/`, content type and content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/dom.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/live.js"),
    ),
    (
        "views/customer.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/views/customer.js"),
    ),
    (
        "views/staff.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/views/staff.js"),
    ),
    (
        "views/admin.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/views/admin.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../console/console.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../console/icon.svg"),
    ),
];

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    // `/console/` arrives as `/console`: trailing slashes are trimmed before routing.
    Router::new()
        .route("/console", get(|| async { file("index.html") }))
        .route(
            "/console/{*path}",
            get(|Path(path): Path<String>| async move { file(&path) }),
        )
}

fn file(path: &str) -> Response {
    let Some((_, content_type, content)) = FILES.iter().find(|(name, _, _)| *name == path) else {
        return ApiError::NotFound("No such console file.").into_response();
    };
    let mut response = (*content).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, *content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::REFERRER_POLICY, "no-referrer"),
        // Small files, always current after a deploy.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
