//! `coordctl console`: a web console on the same library calls as the other commands.
//!
//! # What it promises
//!
//! - **Reads are guarded too.** On loopback without `--read-token-file`, reads are open (as
//!   to anyone with a shell on this machine). With it, and always off loopback (where the
//!   console refuses to start without one), every API read needs a read or write token in
//!   the `X-Coord-Token` header; the event stream, which a browser's `EventSource` opens
//!   without headers, takes instead a cookie that `POST /api/login` gives for a token
//!   (`HttpOnly`, `SameSite=Strict`, sent to the stream's path only, random per token and per
//!   server start). The page and its assets carry no data and need no token.
//! - **Only published prefixes.** The console serves (and writes) a prefix only if a schema is
//!   published for it (404 otherwise), and never anything under `/coord/` (403): no request
//!   reads the values of a prefix nobody described, nor coord's release records.
//! - **Read-only by default.** Without `--token-file` every write route answers 403 and the
//!   page shows no write controls. With it, a write needs a token from the file (header
//!   `X-Coord-Token`), the server's CSRF token (header `X-CSRF-Token`, embedded in the page
//!   and new each start) and, when the browser sends one, an `Origin` of the console itself.
//! - **Named hosts only.** Every request's `Host` must be a loopback name (on loopback) or
//!   one given with `--allowed-host` (required off loopback), so a web page cannot reach the
//!   console through DNS rebinding.
//! - **Tokens stay unguessable.** Token files other users can open are refused; tokens are
//!   compared as SHA-256 digests in constant time; after 5 wrong tokens within a minute every
//!   token check answers 429 until the minute ends. `Debug` output names token holders only.
//! - **Nothing secret leaves.** Every value shown (values, defaults, history, diffs, write
//!   answers, conflicts) passes through [`crate::schemas::Schemas::shown`]: secret fields,
//!   types holding a `Secret`, entries of a map of secrets and secret fields of nested map
//!   entries show as `<redacted>`. A store failure answers a generic sentence; etcd's
//!   address, credentials and the error's details stay in the server's log.
//! - **Bounded.** At most `--max-streams` event streams (two etcd watches each) are open at
//!   once; one more is a 503. A stream with no event for `--stream-idle` ends (the browser
//!   reconnects).
//! - **Every answer** carries `X-Content-Type-Options: nosniff`, `Referrer-Policy:
//!   no-referrer`, a `Content-Security-Policy` without inline script and `Cache-Control:
//!   no-store`, errors included.
//! - **Writes are attributed**: the release's author is the token's name, shown in history.
//! - **Writes are checked as the token's principal.** Each token acts as a principal of the
//!   access policy (`NAME=PRINCIPAL:TOKEN`; by default its NAME), and every write runs as
//!   `on_behalf_of(principal)`: the policy checks that principal's grants and the audit log
//!   records it, via the console's own etcd user or the principal `--as` claims (which the
//!   policy marks `delegate`). A write the policy refuses is a 403 with the policy's reason.
//!   The review screen offers Approve and Reject only to a principal the policy lets approve
//!   on the prefix; the routes refuse the others with 403 all the same. The plan view offers
//!   Pause, Resume and Cancel only to a principal the policy lets release on the prefix (a
//!   plan's steps are releases); its routes refuse the others with 403.
//! - **Checked before written**: an edit is checked field by field against the published
//!   schema and refused whole, with each field's expected type and doc, before any write; a
//!   release carries the latest release the person saw, and a release made meanwhile is a 409
//!   with the diff.

mod assets;
mod audit;
mod auth;
mod error;
mod permission;
mod plan;
mod review;
mod routes;
mod sse;
mod writes;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::HeaderValue;
use axum::routing::{get, post};
use axum::Router;
use coord::config::ConfigCenter;
use coord::Coord;
use tokio::sync::Semaphore;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::cli::ConsoleArgs;
use crate::error::{CliError, CliResult};

pub use auth::Access;

/// Scripts and styles from this server only, no inline script, no framing: an injected value
/// cannot run, and another site cannot overlay the console's buttons.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'none'";

/// How many event streams may be open at once, and how long one may go without an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Open streams at most; one more is a 503.
    pub max: usize,
    /// A stream with no event for this long ends.
    pub idle: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max: 16,
            idle: Duration::from_secs(5 * 60),
        }
    }
}

/// What every handler shares.
pub struct Console {
    coord: Coord,
    /// The config center writes act for a token's principal through: the connection's own
    /// principal (or the one `--as` claims) is the delegate the audit log names as `via`.
    delegate: ConfigCenter,
    access: Access,
    stream_limits: StreamLimits,
    /// One permit per event stream that may still open.
    streams: Arc<Semaphore>,
}

impl Console {
    /// A console on `coord`, readable and writable as `access` says, its writes acting for
    /// each token's principal through `delegate`, its event streams bounded by
    /// `stream_limits`.
    pub fn acting_as(
        coord: Coord,
        delegate: ConfigCenter,
        access: Access,
        stream_limits: StreamLimits,
    ) -> Arc<Self> {
        Arc::new(Console {
            coord,
            delegate,
            access,
            stream_limits,
            streams: Arc::new(Semaphore::new(stream_limits.max)),
        })
    }
}

/// Every route: the page and its assets (open), the JSON API behind the read guard, the
/// event stream behind the stream's read guard, the writes behind the write guard; the host
/// check and the security headers around all of them, errors included.
pub fn router(console: Arc<Console>) -> Router {
    let reads = Router::new()
        .route("/api/prefixes", get(routes::prefixes))
        .route("/api/config", get(routes::config))
        .route("/api/history", get(routes::history))
        .route("/api/rollout", get(routes::rollout))
        .route("/api/locks", get(routes::locks))
        .route("/api/ids", get(routes::ids))
        .route("/api/services", get(routes::services))
        .route("/api/proposals", get(review::proposals))
        .route("/api/plan", get(plan::plan))
        .route("/api/audit", get(audit::records))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::require_reader,
        ));
    let stream = Router::new()
        .route(auth::EVENTS_PATH, get(sse::rollout_events))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::require_stream_reader,
        ));
    let writes = Router::new()
        .route("/api/release", post(writes::release))
        .route("/api/rollback", post(writes::rollback))
        .route("/api/gray/start", post(writes::gray_start))
        .route("/api/gray/promote", post(writes::gray_promote))
        .route("/api/gray/abort", post(writes::gray_abort))
        .route("/api/proposals/approve", post(review::approve))
        .route("/api/proposals/reject", post(review::reject))
        .route("/api/plan/pause", post(plan::pause))
        .route("/api/plan/resume", post(plan::resume))
        .route("/api/plan/cancel", post(plan::cancel))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::require_writer,
        ));
    let router = Router::new()
        .route("/", get(assets::index))
        .route("/assets/app.js", get(assets::script))
        .route("/assets/app.css", get(assets::style))
        .route("/api/login", post(auth::login))
        .merge(reads)
        .merge(stream)
        .merge(writes)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::check_host,
        ));
    security_headers(router).with_state(console)
}

/// The headers every answer carries, set outermost so that refusals and errors (a foreign
/// host, an unknown route) carry them too.
fn security_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let set =
        |name, value| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    router
        .layer(set(X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(REFERRER_POLICY, "no-referrer"))
        .layer(set(CONTENT_SECURITY_POLICY, POLICY))
        // Answers hold config values and the page its CSRF token: nothing is for a cache.
        .layer(set(CACHE_CONTROL, "no-store"))
}

/// Refuses a console that would serve the network without read tokens or without naming
/// the hosts it answers to.
fn check_exposure(args: &ConsoleArgs) -> CliResult {
    if args.listen.ip().is_loopback() {
        return Ok(());
    }
    if args.read_token_file.is_none() {
        return Err(CliError::Usage(format!(
            "--listen {} is beyond this machine: every read there needs a token, so start with \
             --read-token-file FILE (one NAME:TOKEN per line, chmod 600)",
            args.listen
        )));
    }
    if args.allowed_host.is_empty() {
        return Err(CliError::Usage(format!(
            "--listen {} is beyond this machine: name each host browsers reach it by with \
             --allowed-host NAME (requests naming another host are refused)",
            args.listen
        )));
    }
    Ok(())
}

/// The access `args` describe: token files read and checked, hosts allowed. Each write
/// token's principal must be a name the access policy can hold (`coord` checks it as it
/// would for a write).
fn access(delegate: &ConfigCenter, args: &ConsoleArgs) -> CliResult<Access> {
    let loopback = args.listen.ip().is_loopback();
    let writers = match &args.token_file {
        Some(path) => {
            let writers = auth::read_token_file(path)?;
            for line in &writers {
                if let Err(e) = delegate.on_behalf_of(&line.principal) {
                    return Err(CliError::Usage(format!(
                        "{}: the token of {} acts as principal `{}`, which the access policy \
                         cannot hold ({e}): name one with NAME=PRINCIPAL:TOKEN",
                        path.display(),
                        line.name,
                        line.principal
                    )));
                }
            }
            writers
        }
        None => Vec::new(),
    };
    let mut access = Access::with_tokens(writers, loopback).with_allowed_hosts(&args.allowed_host);
    if let Some(path) = &args.read_token_file {
        access = access.with_readers(auth::read_token_file(path)?);
    }
    Ok(access)
}

/// `coordctl console`: serves until Ctrl-C, its writes acting for each token's principal
/// through `delegate` (the connection's principal, or the one `--as` claims).
pub async fn serve(coord: &Coord, delegate: &ConfigCenter, args: ConsoleArgs) -> CliResult {
    check_exposure(&args)?;
    if args.max_streams == 0 {
        return Err(CliError::Usage(
            "--max-streams 0 would refuse every page its live updates".into(),
        ));
    }
    let access = access(delegate, &args)?;
    let writable = access.writable();
    let reads = if access.reads_need_token() {
        "reads need a token"
    } else {
        "reads open to this machine"
    };
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
        eprintln!("warning: the console listens on {local}, beyond this machine, over plain HTTP: tokens cross the network in clear");
    }
    // One line on stdout, flushed: scripts (and the browser test) read the port from it.
    crate::output::Output::new(crate::cli::Format::Table).line(&format!(
        "console at http://{local}/ ({reads}; {})",
        if writable {
            "writes need a token from the token file"
        } else {
            "read-only: start with --token-file to allow writes"
        }
    ));
    let limits = StreamLimits {
        max: args.max_streams,
        idle: args.stream_idle,
    };
    let app = router(Console::acting_as(
        coord.clone(),
        delegate.clone(),
        access,
        limits,
    ));
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
