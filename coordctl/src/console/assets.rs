//! The page and its script and style, compiled into the binary.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::Console;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// Scripts and styles from this server only, no inline script, no framing: an injected value
/// cannot run, and another site cannot overlay the console's buttons.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'none'";

/// `GET /`: the page, carrying this server's CSRF token and whether writes are allowed.
pub async fn index(State(console): State<Arc<Console>>) -> Response {
    let page = INDEX.replace("{{csrf}}", console.access.csrf()).replace(
        "{{writable}}",
        if console.access.writable() {
            "true"
        } else {
            "false"
        },
    );
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, POLICY),
            // The CSRF token is per server start: a cached page would carry a stale one.
            (CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `GET /assets/app.js`.
pub async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

/// `GET /assets/app.css`.
pub async fn style() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}
