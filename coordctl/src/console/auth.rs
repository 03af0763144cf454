//! Who may write, and the checks every request and every write passes.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::Console;
use crate::error::{CliError, CliResult};

/// The header a write carries its token in.
pub const TOKEN_HEADER: &str = "x-coord-token";
/// The header a write carries the page's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The write tokens, the CSRF token of this server, and whether it serves loopback only.
#[derive(Debug)]
pub struct Access {
    /// (name, token) per line of the token file; empty: read-only.
    tokens: Vec<(String, String)>,
    csrf: String,
    loopback: bool,
}

/// The person a write is by, as the write guard found them.
#[derive(Clone, Debug)]
pub struct Writer {
    /// The name their token has in the token file.
    pub name: String,
}

impl Writer {
    /// What history shows as the release's author.
    pub fn author(&self) -> String {
        format!("{} (console)", self.name)
    }
}

impl Access {
    /// No writes at all.
    pub fn read_only(loopback: bool) -> Self {
        Access {
            tokens: Vec::new(),
            csrf: new_csrf(),
            loopback,
        }
    }

    /// Writes for the holders of `tokens` (name, token).
    pub fn with_tokens(tokens: Vec<(String, String)>, loopback: bool) -> Self {
        Access {
            tokens,
            csrf: new_csrf(),
            loopback,
        }
    }

    /// Reads the token file: one `NAME:TOKEN` or bare `TOKEN` (named `console`) per line;
    /// blank lines and `#` comments are skipped.
    pub fn from_token_file(path: &Path, loopback: bool) -> CliResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let tokens: Vec<(String, String)> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| match line.split_once(':') {
                Some((name, token)) => (name.trim().to_owned(), token.trim().to_owned()),
                None => ("console".to_owned(), line.to_owned()),
            })
            .collect();
        // A short token is guessable by anyone who can reach the port.
        if let Some((name, _)) = tokens.iter().find(|(_, token)| token.len() < 16) {
            return Err(CliError::Usage(format!(
                "{}: the token of {name} is shorter than 16 characters",
                path.display()
            )));
        }
        if tokens.is_empty() {
            return Err(CliError::Usage(format!(
                "{} holds no token: one NAME:TOKEN per line",
                path.display()
            )));
        }
        Ok(Self::with_tokens(tokens, loopback))
    }

    /// True if some token allows writes.
    pub fn writable(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The CSRF token the page carries.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Every check a write passes, in order: writable at all, same origin, CSRF token, write
    /// token. Returns who the token belongs to.
    pub fn writer(&self, headers: &HeaderMap) -> Result<Writer, ApiError> {
        if !self.writable() {
            return Err(ApiError::ReadOnly);
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let host = headers.get(HOST).and_then(|h| h.to_str().ok());
            let same = match (origin.to_str(), host) {
                (Ok(origin), Some(host)) => {
                    origin == format!("http://{host}") || origin == format!("https://{host}")
                }
                _ => false,
            };
            if !same {
                return Err(ApiError::Forbidden(format!(
                    "a write from origin {} to this console is refused",
                    origin.to_str().unwrap_or("(not text)")
                )));
            }
        }
        let csrf = headers.get(CSRF_HEADER).map(|v| v.as_bytes());
        if !csrf.is_some_and(|csrf| same_bytes(csrf, self.csrf.as_bytes())) {
            return Err(ApiError::Forbidden(
                "missing or stale CSRF token: reload the page".into(),
            ));
        }
        let token = headers.get(TOKEN_HEADER).map(|v| v.as_bytes());
        let Some(token) = token else {
            return Err(ApiError::Unauthorized(
                "a write needs the write token (header X-Coord-Token)".into(),
            ));
        };
        // Every token is compared, matched or not, so the time taken says nothing of which.
        let mut found = None;
        for (name, known) in &self.tokens {
            if same_bytes(token, known.as_bytes()) && found.is_none() {
                found = Some(name.clone());
            }
        }
        found.map(|name| Writer { name }).ok_or_else(|| {
            ApiError::Unauthorized("the write token is not in the console's token file".into())
        })
    }

    /// True if `host` (a `Host` header) may reach this console.
    fn host_allowed(&self, host: &str) -> bool {
        if !self.loopback {
            return true;
        }
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        matches!(name, "localhost" | "127.0.0.1" | "::1")
    }
}

/// Compares without stopping at the first difference (the time says nothing of the match).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn new_csrf() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses a request whose `Host` is not a loopback name while the console is on loopback.
pub async fn check_host(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    match host {
        Some(host) if !console.access.host_allowed(&host) => ApiError::Forbidden(format!(
            "this console serves loopback only; {host} is not a loopback name"
        ))
        .into_response(),
        _ => next.run(request).await,
    }
}

/// The write guard: the request goes on with its [`Writer`] in its extensions, or is refused
/// before its body is read.
pub async fn require_writer(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    match console.access.writer(request.headers()) {
        Ok(writer) => {
            request.extensions_mut().insert(writer);
            next.run(request).await
        }
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_console_accepts_only_loopback_host_names() {
        let access = Access::read_only(true);
        assert!(access.host_allowed("127.0.0.1:8080"));
        assert!(access.host_allowed("localhost:8080"));
        assert!(access.host_allowed("[::1]:8080"));
        assert!(!access.host_allowed("evil.example:8080"));
        assert!(!access.host_allowed("127.0.0.1.evil.example"));
        assert!(Access::read_only(false).host_allowed("console.internal:8080"));
    }

    #[test]
    fn token_file_names_writers_and_refuses_short_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "# ops\nana:0123456789abcdef0123\n\nfedcba9876543210fedc\n",
        )
        .unwrap();
        let access = Access::from_token_file(&path, true).unwrap();
        assert_eq!(
            access.tokens,
            vec![
                ("ana".to_owned(), "0123456789abcdef0123".to_owned()),
                ("console".to_owned(), "fedcba9876543210fedc".to_owned())
            ]
        );
        std::fs::write(&path, "ana:short\n").unwrap();
        assert!(Access::from_token_file(&path, true).is_err());
    }

    #[test]
    fn each_server_has_its_own_csrf_token() {
        assert_ne!(Access::read_only(true).csrf, Access::read_only(true).csrf);
        assert_eq!(Access::read_only(true).csrf.len(), 64);
    }
}
