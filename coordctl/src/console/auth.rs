//! Who may read and who may write, and the checks every request passes.
//!
//! Each token names its holder and the access-policy principal its writes are checked and
//! recorded as (by default the holder's name; see [`read_token_file`]).
//!
//! Tokens are kept as SHA-256 digests and compared digest to digest in constant time, so
//! neither a token's length nor its first differing byte shows in the time an answer takes.
//! After [`MAX_FAILURES`] wrong tokens within [`FAILURE_WINDOW`], every token check answers
//! 429 until that window ends: one guess in a dozen seconds, for the whole console.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::error::ApiError;
use super::Console;
use crate::error::{CliError, CliResult};

/// The header a request carries its token in (a read token or a write token).
pub const TOKEN_HEADER: &str = "x-coord-token";
/// The header a write carries the page's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The cookie the event stream accepts instead of the token header.
pub const EVENTS_COOKIE: &str = "coord_events";
/// The event stream's path: the only path the browser sends [`EVENTS_COOKIE`] to.
pub const EVENTS_PATH: &str = "/api/rollout/events";
/// Wrong tokens that close token checks for the rest of [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window failures are counted in, from the first failure.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Host names that reach a loopback console from this machine only.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

type Digest = [u8; 32];

fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// True if `a` and `b` are equal, in a time that depends on neither.
fn same_secret(a: &[u8], b: &Digest) -> bool {
    digest(a).ct_eq(b).into()
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One line of a token file as read: who holds the token, the principal of the access policy
/// they act as, and the token. `Debug` shows the names, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenLine {
    /// The holder's name (a release's author shows it).
    pub name: String,
    /// The principal the holder's writes are checked and recorded as.
    pub principal: String,
    /// The token.
    pub token: String,
}

impl TokenLine {
    /// A token whose holder acts as `principal`.
    pub fn new(
        name: impl Into<String>,
        principal: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        TokenLine {
            name: name.into(),
            principal: principal.into(),
            token: token.into(),
        }
    }
}

/// `(name, token)`: the holder acts as the principal of their own name.
impl From<(String, String)> for TokenLine {
    fn from((name, token): (String, String)) -> Self {
        TokenLine::new(name.clone(), name, token)
    }
}

impl fmt::Debug for TokenLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} as {}", self.name, self.principal)
    }
}

/// One line of a token file. Only digests are kept; the cookie is this server's own secret.
struct Token {
    name: String,
    principal: String,
    digest: Digest,
    /// What [`EVENTS_COOKIE`] holds for this token's holder: random, new each start, so a
    /// cookie dies with the server and never is the token itself.
    cookie: String,
    cookie_digest: Digest,
}

impl Token {
    fn new(line: TokenLine) -> Self {
        let cookie = random_hex();
        Token {
            name: line.name,
            principal: line.principal,
            digest: digest(line.token.as_bytes()),
            cookie_digest: digest(cookie.as_bytes()),
            cookie,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.principal == self.name {
            f.write_str(&self.name)
        } else {
            write!(f, "{} as {}", self.name, self.principal)
        }
    }
}

/// Wrong tokens in the current window.
#[derive(Default)]
struct Window {
    started: Option<Instant>,
    failures: u32,
}

impl Window {
    /// Forgets a window that has ended.
    fn roll(&mut self, now: Instant) {
        if self
            .started
            .is_some_and(|started| now.duration_since(started) >= FAILURE_WINDOW)
        {
            *self = Window::default();
        }
    }
}

/// Counts wrong tokens; at [`MAX_FAILURES`], refuses every token check until the window ends.
#[derive(Default)]
struct Throttle(Mutex<Window>);

impl Throttle {
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic elsewhere while holding the lock leaves two plain numbers: still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long token checks stay closed, if they are.
    fn closed_for(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut window = self.window();
        window.roll(now);
        let started = window.started?;
        (window.failures >= MAX_FAILURES)
            .then(|| FAILURE_WINDOW.saturating_sub(now.duration_since(started)))
    }

    fn failed(&self) {
        let now = Instant::now();
        let mut window = self.window();
        window.roll(now);
        window.started.get_or_insert(now);
        window.failures += 1;
    }
}

/// Who may read and write this console, its CSRF token, and the host names it answers to.
pub struct Access {
    /// Write tokens (which also read); empty: read-only.
    writers: Vec<Token>,
    /// Read tokens; empty on loopback: reads need no token.
    readers: Vec<Token>,
    csrf: String,
    loopback: bool,
    /// Host names (lowercase, without port) besides the loopback names on loopback.
    allowed_hosts: Vec<String>,
    throttle: Throttle,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("writers", &self.writers)
            .field("readers", &self.readers)
            .field("loopback", &self.loopback)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

/// The person a write is by, as the write guard found them.
#[derive(Clone, Debug)]
pub struct Writer {
    /// The name their token has in the token file.
    pub name: String,
    /// The principal of the access policy their writes are checked and recorded as.
    pub principal: String,
}

impl Writer {
    /// What history shows as the release's author.
    pub fn author(&self) -> String {
        format!("{} (console)", self.name)
    }
}

/// Where a read presented its credential.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presented {
    /// [`TOKEN_HEADER`] only.
    Header,
    /// [`TOKEN_HEADER`], or else [`EVENTS_COOKIE`].
    HeaderOrCookie,
}

impl Access {
    /// No writes at all; on loopback, reads need no token.
    pub fn read_only(loopback: bool) -> Self {
        Access {
            writers: Vec::new(),
            readers: Vec::new(),
            csrf: random_hex(),
            loopback,
            allowed_hosts: Vec::new(),
            throttle: Throttle::default(),
        }
    }

    /// Writes (and reads) for the holders of `tokens` (a [`TokenLine`], or `(name, token)`
    /// acting as the principal `name`).
    pub fn with_tokens<T: Into<TokenLine>>(tokens: Vec<T>, loopback: bool) -> Self {
        let mut access = Self::read_only(loopback);
        access.writers = tokens.into_iter().map(|t| Token::new(t.into())).collect();
        access
    }

    /// Reads for the holders of `tokens` too; from then on every read needs a token, on
    /// loopback as well.
    #[must_use]
    pub fn with_readers<T: Into<TokenLine>>(mut self, tokens: Vec<T>) -> Self {
        self.readers = tokens.into_iter().map(|t| Token::new(t.into())).collect();
        self
    }

    /// The host names (a port, if given, is ignored) a request's `Host` may name; on
    /// loopback the loopback names are allowed too.
    #[must_use]
    pub fn with_allowed_hosts<S: AsRef<str>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.allowed_hosts = hosts
            .into_iter()
            .map(|host| host_name(host.as_ref()).to_ascii_lowercase())
            .collect();
        self
    }

    /// True if some token allows writes.
    pub fn writable(&self) -> bool {
        !self.writers.is_empty()
    }

    /// True if a read must present a token: always off loopback, and on loopback once read
    /// tokens are given.
    pub fn reads_need_token(&self) -> bool {
        !self.loopback || !self.readers.is_empty()
    }

    /// The CSRF token the page carries.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The token among `tokens` whose digest (`pick`) matches `presented`. Every token is
    /// compared, matched or not, so the time taken says nothing of which matched.
    fn find<'a>(
        tokens: impl Iterator<Item = &'a Token>,
        presented: &[u8],
        pick: fn(&Token) -> &Digest,
    ) -> Option<&'a Token> {
        let mut found = None;
        for token in tokens {
            if same_secret(presented, pick(token)) && found.is_none() {
                found = Some(token);
            }
        }
        found
    }

    /// Checks a presented credential against `tokens`: refused while the throttle is
    /// closed, counted as a failure if nothing matches.
    fn check<'a>(
        &self,
        tokens: impl Iterator<Item = &'a Token>,
        presented: &[u8],
        pick: fn(&Token) -> &Digest,
        refused: &str,
    ) -> Result<&'a Token, ApiError> {
        if let Some(wait) = self.throttle.closed_for() {
            return Err(ApiError::TooManyFailures { retry_after: wait });
        }
        Self::find(tokens, presented, pick).ok_or_else(|| {
            self.throttle.failed();
            ApiError::Unauthorized(refused.to_owned())
        })
    }

    /// The token a read presents, if reads need one; `None` when reads are open.
    fn reader(
        &self,
        headers: &HeaderMap,
        presented: Presented,
    ) -> Result<Option<&Token>, ApiError> {
        if !self.reads_need_token() {
            return Ok(None);
        }
        let every = || self.writers.iter().chain(&self.readers);
        if let Some(token) = headers.get(TOKEN_HEADER) {
            let refused = "the token is not in the console's token files";
            return self
                .check(every(), token.as_bytes(), |t| &t.digest, refused)
                .map(Some);
        }
        if presented == Presented::HeaderOrCookie {
            if let Some(cookie) = cookie(headers, EVENTS_COOKIE) {
                let refused = "the event stream's cookie is stale: reload the page";
                return self
                    .check(every(), cookie.as_bytes(), |t| &t.cookie_digest, refused)
                    .map(Some);
            }
        }
        Err(ApiError::Unauthorized(
            "reading this console needs a token (header X-Coord-Token): enter it at the top of the page"
                .into(),
        ))
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
        if !csrf.is_some_and(|csrf| same_secret(csrf, &digest(self.csrf.as_bytes()))) {
            return Err(ApiError::Forbidden(
                "missing or stale CSRF token: reload the page".into(),
            ));
        }
        let Some(token) = headers.get(TOKEN_HEADER) else {
            return Err(ApiError::Unauthorized(
                "a write needs the write token (header X-Coord-Token)".into(),
            ));
        };
        let refused = "the write token is not in the console's token file";
        let token = self.check(
            self.writers.iter(),
            token.as_bytes(),
            |t| &t.digest,
            refused,
        )?;
        Ok(Writer {
            name: token.name.clone(),
            principal: token.principal.clone(),
        })
    }

    /// The writer a request's token belongs to, if it presents a write token: a read that
    /// asks what its holder may do (the review screen shows Approve only to who may). A
    /// token in neither file is refused (and counted as a wrong guess), whether or not reads
    /// need one; a read token, or none, is `None`.
    pub fn presented_writer(&self, headers: &HeaderMap) -> Result<Option<Writer>, ApiError> {
        let Some(presented) = headers.get(TOKEN_HEADER) else {
            return Ok(None);
        };
        let every = self.writers.iter().chain(&self.readers);
        let refused = "the token is not in the console's token files";
        let token = self.check(every, presented.as_bytes(), |t| &t.digest, refused)?;
        let is_writer = self.writers.iter().any(|w| std::ptr::eq(w, token));
        Ok(is_writer.then(|| Writer {
            name: token.name.clone(),
            principal: token.principal.clone(),
        }))
    }

    /// True if `host` (a `Host` header) may reach this console.
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        (self.loopback && LOOPBACK_NAMES.contains(&name.as_str()))
            || self.allowed_hosts.contains(&name)
    }
}

/// The name of a `Host` value: without its port, an IPv6 address without brackets.
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Reads a token file: one `NAME:TOKEN`, `NAME=PRINCIPAL:TOKEN` or bare `TOKEN` (named
/// `console`) per line; blank lines and `#` comments are skipped. The holder acts as
/// PRINCIPAL of the access policy, by default their NAME. A file other users could open, an
/// empty file and a token shorter than 16 characters are refused, each naming the file.
pub fn read_token_file(path: &Path) -> CliResult<Vec<TokenLine>> {
    let text = crate::files::read_private(path)?;
    let tokens: Vec<TokenLine> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| match line.split_once(':') {
            Some((holder, token)) => {
                let (name, principal) = holder.split_once('=').unwrap_or((holder, holder));
                TokenLine::new(name.trim(), principal.trim(), token.trim())
            }
            None => TokenLine::new("console", "console", line),
        })
        .collect();
    // A short token is guessable by anyone who can reach the port.
    if let Some(TokenLine { name, .. }) = tokens.iter().find(|t| t.token.len() < 16) {
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
    Ok(tokens)
}

/// Refuses a request whose `Host` this console does not answer to (DNS rebinding: a page
/// of another site whose name now points here still sends its own name).
pub async fn check_host(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request.headers().get(HOST).map(|h| h.to_str());
    match host {
        Some(Ok(host)) if console.access.host_allowed(host) => next.run(request).await,
        Some(Ok(host)) => ApiError::Forbidden(format!(
            "this console does not answer to {host}: start it with --allowed-host {}",
            host_name(host)
        ))
        .into_response(),
        _ => ApiError::Forbidden("a request must name the console's host (header Host)".into())
            .into_response(),
    }
}

/// The read guard of the API: a token in the header, when reads need one.
pub async fn require_reader(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    match console.access.reader(request.headers(), Presented::Header) {
        Ok(_) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// The read guard of the event stream: the header, or the cookie from [`login`] (an
/// `EventSource` cannot set headers).
pub async fn require_stream_reader(
    State(console): State<Arc<Console>>,
    request: Request,
    next: Next,
) -> Response {
    match console
        .access
        .reader(request.headers(), Presented::HeaderOrCookie)
    {
        Ok(_) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// `POST /api/login`: the token in the header buys the event stream's cookie (`HttpOnly`,
/// so the page's script never holds it; `SameSite=Strict`, so no other site's request
/// carries it; sent to the event stream's path only). 204 without a cookie when reads need
/// no token.
pub async fn login(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match console.access.reader(&headers, Presented::Header) {
        Ok(Some(token)) => {
            let cookie = format!(
                "{EVENTS_COOKIE}={}; Path={EVENTS_PATH}; HttpOnly; SameSite=Strict",
                token.cookie
            );
            match HeaderValue::from_str(&cookie) {
                Ok(value) => (StatusCode::NO_CONTENT, [(SET_COOKIE, value)]).into_response(),
                Err(e) => ApiError::Internal(format!("the cookie is not a header value: {e}"))
                    .into_response(),
            }
        }
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused.into_response(),
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

    const ANA: &str = "ana-token-0123456789";

    fn headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, HeaderValue::from_str(token).unwrap());
        headers
    }

    #[test]
    fn loopback_console_accepts_loopback_names_and_the_allowed_ones() {
        let access = Access::read_only(true);
        assert!(access.host_allowed("127.0.0.1:8080"));
        assert!(access.host_allowed("localhost:8080"));
        assert!(access.host_allowed("LOCALHOST"));
        assert!(access.host_allowed("[::1]:8080"));
        assert!(!access.host_allowed("evil.example:8080"));
        assert!(!access.host_allowed("127.0.0.1.evil.example"));
        let access = Access::read_only(true).with_allowed_hosts(["Console.Internal:8080"]);
        assert!(access.host_allowed("console.internal:9090"));
    }

    #[test]
    fn a_console_off_loopback_accepts_only_the_allowed_names() {
        let access = Access::read_only(false).with_allowed_hosts(["console.internal"]);
        assert!(access.host_allowed("console.internal:8080"));
        assert!(!access.host_allowed("localhost:8080"), "not this machine's");
        assert!(!access.host_allowed("evil.example:8080"));
        assert!(!Access::read_only(false).host_allowed("console.internal"));
    }

    fn private_file(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[test]
    fn token_file_names_writers_and_refuses_short_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(
            &dir,
            "# ops\nana:0123456789abcdef0123\n\nfedcba9876543210fedc\noncall = ops:abcdef0123456789abcd\n",
        );
        assert_eq!(
            read_token_file(&path).unwrap(),
            vec![
                TokenLine::new("ana", "ana", "0123456789abcdef0123"),
                TokenLine::new("console", "console", "fedcba9876543210fedc"),
                TokenLine::new("oncall", "ops", "abcdef0123456789abcd"),
            ]
        );
        let path = private_file(&dir, "ana:short\n");
        assert!(read_token_file(&path).is_err());
    }

    #[test]
    fn a_token_file_the_group_or_others_can_read_is_refused_naming_chmod_600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(&dir, "ana:0123456789abcdef0123\n");
        for mode in [0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let refused = read_token_file(&path).unwrap_err().to_string();
            assert!(refused.contains("chmod 600"), "{refused}");
            assert!(refused.contains(&path.display().to_string()), "{refused}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_token_file(&path).is_ok());
    }

    #[test]
    fn a_presented_write_token_names_its_principal_and_a_read_token_none() {
        let access = Access::with_tokens(vec![TokenLine::new("oncall", "ops", ANA)], true)
            .with_readers(vec![("viewer".into(), "viewer-token-0123456789".into())]);
        let writer = access.presented_writer(&headers(ANA)).unwrap().unwrap();
        assert_eq!(
            (writer.name.as_str(), writer.principal.as_str()),
            ("oncall", "ops")
        );
        assert_eq!(writer.author(), "oncall (console)");
        let reader = access.presented_writer(&headers("viewer-token-0123456789"));
        assert!(matches!(reader, Ok(None)), "{reader:?}");
        assert!(matches!(
            access.presented_writer(&HeaderMap::new()),
            Ok(None)
        ));
        let wrong = access.presented_writer(&headers("wrong-token-0123456789"));
        assert!(matches!(wrong, Err(ApiError::Unauthorized(_))), "{wrong:?}");
    }

    #[test]
    fn each_server_has_its_own_csrf_token() {
        assert_ne!(Access::read_only(true).csrf, Access::read_only(true).csrf);
        assert_eq!(Access::read_only(true).csrf.len(), 64);
    }

    #[test]
    fn debug_shows_names_never_tokens() {
        let access = Access::with_tokens(vec![("ana".into(), ANA.into())], true)
            .with_readers(vec![("viewer".into(), "viewer-token-0123456789".into())]);
        let shown = format!("{access:?}");
        assert!(shown.contains("ana") && shown.contains("viewer"), "{shown}");
        for secret in [ANA, "viewer-token-0123456789", access.csrf()] {
            assert!(!shown.contains(secret), "{shown}");
        }
        for token in access.writers.iter().chain(&access.readers) {
            assert!(!shown.contains(&token.cookie), "{shown}");
        }
    }

    #[test]
    fn a_token_of_another_length_or_a_prefix_of_the_token_is_refused() {
        let access = Access::with_tokens(vec![("ana".into(), ANA.into())], false);
        assert!(access.reader(&headers(ANA), Presented::Header).is_ok());
        for wrong in ["a", &ANA[..ANA.len() - 1], &format!("{ANA}0")] {
            let refused = access.reader(&headers(wrong), Presented::Header);
            assert!(
                matches!(refused, Err(ApiError::Unauthorized(_))),
                "{wrong}: {refused:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_five_wrong_tokens_in_a_minute_every_check_is_refused_until_it_ends() {
        let access = Access::with_tokens(vec![("ana".into(), ANA.into())], false);
        for _ in 0..MAX_FAILURES {
            let refused = access.reader(&headers("wrong-token-0123456789"), Presented::Header);
            assert!(
                matches!(refused, Err(ApiError::Unauthorized(_))),
                "{refused:?}"
            );
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        // Even the right token waits out the minute.
        let refused = access.reader(&headers(ANA), Presented::Header);
        match refused {
            Err(ApiError::TooManyFailures { retry_after }) => {
                assert_eq!(retry_after, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(access.reader(&headers(ANA), Presented::Header).is_ok());
    }
}
