//! The page and its script and style, compiled into the binary.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::Console;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// `GET /`: the page, carrying this server's CSRF token, whether writes are allowed and
/// whether reads need a token. (The router's layer sets its content policy and `no-store`:
/// the CSRF token is per server start, a cached page would carry a stale one.)
pub async fn index(State(console): State<Arc<Console>>) -> Response {
    let flag = |on: bool| if on { "true" } else { "false" };
    let page = INDEX
        .replace("{{csrf}}", console.access.csrf())
        .replace("{{writable}}", flag(console.access.writable()))
        .replace("{{read_token}}", flag(console.access.reads_need_token()));
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

/// `GET /assets/app.js`.
pub async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

/// `GET /assets/app.css`.
pub async fn style() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}
