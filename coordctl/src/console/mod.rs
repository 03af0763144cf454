//! `coordctl console`: a web console on the same library calls as the other commands.
//!
//! # What it promises
//!
//! - **Read-only by default.** Without `--token-file` every write route answers 403 and the
//!   page shows no write controls. With it, a write needs a token from the file (header
//!   `X-Coord-Token`), the server's CSRF token (header `X-CSRF-Token`, embedded in the page
//!   and new each start) and, when the browser sends one, an `Origin` of the console itself.
//! - **Loopback by default**, and while on loopback a request whose `Host` is not a loopback
//!   name is refused, so a web page cannot reach the console through DNS rebinding.
//! - **Nothing secret leaves.** Secret fields show as `<redacted>` (values, defaults,
//!   history, diffs); etcd's address and credentials stay in the server.
//! - **Writes are attributed**: the release's author is the token's name, shown in history.
//! - **Checked before written**: an edit is checked field by field against the published
//!   schema and refused whole, with each field's expected type and doc, before any write; a
//!   release carries the latest release the person saw, and a release made meanwhile is a 409
//!   with the diff.

mod assets;
mod auth;
mod error;
mod routes;
mod sse;
mod writes;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use coord::Coord;

use crate::cli::ConsoleArgs;
use crate::error::{CliError, CliResult};

pub use auth::Access;

/// What every handler shares.
pub struct Console {
    coord: Coord,
    access: Access,
}

impl Console {
    /// A console on `coord`, writable for the holders of `access`'s tokens.
    pub fn new(coord: Coord, access: Access) -> Arc<Self> {
        Arc::new(Console { coord, access })
    }
}

/// Every route: the page, its assets, the JSON API (reads, then writes behind the write
/// guard), and the rollout event stream.
pub fn router(console: Arc<Console>) -> Router {
    let writes = Router::new()
        .route("/api/release", post(writes::release))
        .route("/api/rollback", post(writes::rollback))
        .route("/api/gray/start", post(writes::gray_start))
        .route("/api/gray/promote", post(writes::gray_promote))
        .route("/api/gray/abort", post(writes::gray_abort))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::require_writer,
        ));
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/app.js", get(assets::script))
        .route("/assets/app.css", get(assets::style))
        .route("/api/prefixes", get(routes::prefixes))
        .route("/api/config", get(routes::config))
        .route("/api/history", get(routes::history))
        .route("/api/rollout", get(routes::rollout))
        .route("/api/rollout/events", get(sse::rollout_events))
        .route("/api/locks", get(routes::locks))
        .route("/api/ids", get(routes::ids))
        .route("/api/services", get(routes::services))
        .merge(writes)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::check_host,
        ))
        .with_state(console)
}

/// `coordctl console`: serves until Ctrl-C.
pub async fn serve(coord: &Coord, args: ConsoleArgs) -> CliResult {
    let access = match &args.token_file {
        Some(path) => Access::from_token_file(path, args.listen.ip().is_loopback())?,
        None => Access::read_only(args.listen.ip().is_loopback()),
    };
    let writable = access.writable();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Io {
            what: format!("listening on {}", args.listen),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| CliError::Io {
        what: "reading the listening address".into(),
        source,
    })?;
    if !local.ip().is_loopback() {
        eprintln!("warning: the console listens on {local}, beyond this machine, over plain HTTP");
    }
    // One line on stdout, flushed: scripts (and the browser test) read the port from it.
    crate::output::Output::new(crate::cli::Format::Table).line(&format!(
        "console at http://{local}/ ({})",
        if writable {
            "writes need a token from the token file"
        } else {
            "read-only: start with --token-file to allow writes"
        }
    ));
    let app = router(Console::new(coord.clone(), access));
    // Open event streams never end on their own, so a graceful shutdown would wait forever:
    // Ctrl-C stops serving at once (every write is one transaction, never left half done).
    tokio::select! {
        served = axum::serve(listener, app) => served.map_err(|source| CliError::Io {
            what: format!("serving on {local}"),
            source,
        }),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
