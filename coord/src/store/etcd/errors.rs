//! Errors: the one place where etcd-client's errors become coord's, and the words that
//! explain a transport failure.

use std::time::Duration;

use tonic::Code;

use crate::error::Error;

/// What a request was about: everything [`map_error`] needs to name it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Request<'a> {
    /// The operation, e.g. `"range"`.
    pub(super) op: &'static str,
    /// The key or prefix ("" for cluster-wide requests).
    pub(super) key: &'a str,
    /// The lease of a lease request (0 otherwise).
    pub(super) lease: i64,
    /// The revision asked for (0 for none).
    pub(super) revision: i64,
    /// True if it changes the store: its failure after sending is [`Error::OutcomeUnknown`].
    pub(super) write: bool,
}

impl<'a> Request<'a> {
    pub(super) fn new(op: &'static str, key: &'a str) -> Self {
        Request {
            op,
            key,
            lease: 0,
            revision: 0,
            write: false,
        }
    }

    /// The same request, as a write.
    pub(super) fn write(self) -> Self {
        Request {
            write: true,
            ..self
        }
    }

    pub(super) fn lease(op: &'static str, lease: i64) -> Self {
        Request {
            lease,
            ..Request::new(op, "")
        }
    }

    pub(super) fn revision(self, revision: i64) -> Self {
        Request { revision, ..self }
    }

    /// "range /a/b", "lease_grant": the operation as [`Error::Timeout`] names it.
    fn describe(&self) -> String {
        match (self.key.is_empty(), self.lease) {
            (false, _) => format!("{} {}", self.op, self.key),
            (true, 0) => self.op.to_string(),
            (true, lease) => format!("{} {lease:x}", self.op),
        }
    }
}

/// Where errors are reported: the endpoints and the deadline of the failed request.
pub(super) struct ErrorContext<'a> {
    pub(super) endpoints: &'a str,
    pub(super) request_timeout: Duration,
}

/// The one place where etcd-client's errors become coord's.
pub(super) fn map_error(
    err: etcd_client::Error,
    request: Request<'_>,
    context: &ErrorContext<'_>,
) -> Error {
    use etcd_client::Error as E;
    let unavailable = |reason: String| Error::Unavailable {
        endpoints: context.endpoints.to_owned(),
        reason,
    };
    let backend = |reason: String| Error::Backend {
        key: request.key.to_owned(),
        reason,
    };
    match err {
        E::GRpcStatus(status) => {
            let message = status.message();
            // etcd's own errors come by message ("etcdserver: …"); the code alone is ambiguous
            // (a wrong password is InvalidArgument, a compacted revision OutOfRange).
            if message.contains("authentication failed")
                || message.contains("invalid auth token")
                || message.contains("user name is empty")
                // Credentials given to an etcd without auth: a configuration mistake to report,
                // not a reason to send requests unauthenticated.
                || message.contains("authentication is not enabled")
                || status.code() == Code::Unauthenticated
            {
                return Error::Unauthenticated {
                    reason: message.to_owned(),
                };
            }
            if message.contains("permission denied") || status.code() == Code::PermissionDenied {
                return Error::PermissionDenied {
                    key: request.key.to_owned(),
                    reason: message.to_owned(),
                };
            }
            if message.contains("requested lease not found") {
                return Error::LeaseNotFound {
                    lease: request.lease,
                };
            }
            if message.contains("required revision has been compacted") {
                return Error::Compacted {
                    key: request.key.to_owned(),
                    requested: request.revision,
                    // A unary answer does not say which revision etcd compacted to.
                    compact_revision: 0,
                };
            }
            if message.contains("required revision is a future revision") {
                return Error::invalid_argument(
                    "revision",
                    format!("{}: {message}", request.revision),
                );
            }
            // tonic's own per-request timeout (`ConnectOptions::with_timeout`) comes back as
            // Cancelled with TimeoutExpired under it.
            let timed_out = sources(std::error::Error::source(&status))
                .any(|e| e.is::<tonic::TimeoutExpired>());
            match status.code() {
                Code::DeadlineExceeded => timeout_error(request, context.request_timeout),
                Code::Cancelled if timed_out => timeout_error(request, context.request_timeout),
                // Unavailable: connect failures, "no leader", etcd's own "request timed out";
                // Cancelled: the connection broke under the request.
                Code::Unavailable | Code::Cancelled => unavailable(status_reason(&status)),
                // A status made on this side from a broken connection (an h2 error) carries
                // its cause; one from etcd does not.
                Code::Unknown | Code::Internal if std::error::Error::source(&status).is_some() => {
                    unavailable(status_reason(&status))
                }
                _ => backend(message.to_owned()),
            }
        }
        E::TransportError(e) => unavailable(transport_reason(&e)),
        E::IoError(e) => unavailable(transport_reason(&e)),
        E::WatchError(m) => unavailable(format!("watch stream: {m}")),
        E::LeaseKeepAliveError(m) if m.contains("not found") => Error::LeaseNotFound {
            lease: request.lease,
        },
        E::LeaseKeepAliveError(m) => unavailable(format!("lease keep-alive stream: {m}")),
        E::InvalidUri(e) => Error::invalid_argument("endpoints", e.to_string()),
        E::InvalidArgs(m) if request.op == "connect" => Error::invalid_argument("endpoints", m),
        E::InvalidArgs(m) => Error::invalid_argument(request.key, m),
        E::InvalidMetadataValue(e) => Error::Unauthenticated {
            reason: format!("etcd sent an unusable auth token: {e}"),
        },
        other => backend(other.to_string()),
    }
}

/// The error of `request` that failed with `err`, mapped: a write that failed after it may
/// have reached etcd is [`Error::OutcomeUnknown`] around the mapped error.
pub(super) fn request_error(
    err: etcd_client::Error,
    request: Request<'_>,
    context: &ErrorContext<'_>,
) -> Error {
    let not_applied = known_not_applied(&err);
    let mapped = map_error(err, request, context);
    if request.write && mapped.is_transient() && !not_applied {
        outcome_unknown(request, mapped)
    } else {
        mapped
    }
}

/// The error of `request` whose deadline passed: for a write, [`Error::OutcomeUnknown`] (it
/// may have been sent, and etcd may apply it yet).
pub(super) fn deadline_error(request: Request<'_>, after: Duration) -> Error {
    let timeout = timeout_error(request, after);
    if request.write {
        outcome_unknown(request, timeout)
    } else {
        timeout
    }
}

fn outcome_unknown(request: Request<'_>, cause: Error) -> Error {
    Error::OutcomeUnknown {
        operation: request.describe(),
        key: request.key.to_owned(),
        source: Box::new(cause),
    }
}

/// True if a request that failed with `err` is known not to have been applied: it never
/// reached etcd (no connection could be made), or etcd refused it before proposing it to
/// raft (no leader, a proposal dropped for want of one, too many requests pending). Anything
/// else that broke after sending (a deadline, a reset connection, etcd's own "request timed
/// out") may have been applied.
pub(super) fn known_not_applied(err: &etcd_client::Error) -> bool {
    if never_connected(err) {
        return true;
    }
    let etcd_client::Error::GRpcStatus(status) = err else {
        return false;
    };
    let message = status.message();
    [
        "etcdserver: no leader",
        "raft proposal dropped",
        "etcdserver: too many requests",
        "etcdserver: not capable",
    ]
    .iter()
    .any(|refusal| message.contains(refusal))
}

pub(super) fn timeout_error(request: Request<'_>, after: Duration) -> Error {
    Error::Timeout {
        operation: request.describe(),
        after,
    }
}

/// True if the request failed before a connection to etcd existed, so it never reached etcd.
pub(super) fn never_connected(err: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = err else {
        return false;
    };
    status.code() == Code::Unavailable
        && sources(std::error::Error::source(status)).any(|e| {
            e.is::<tonic::ConnectError>()
                || e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        })
}

/// The text of a status made from a transport failure: its message and the causes under it.
fn status_reason(status: &tonic::Status) -> String {
    let message = status.message();
    let causes = chain_text(std::error::Error::source(status));
    let text = if causes.is_empty() || message.contains(&causes) {
        message.to_owned()
    } else if causes.contains(message) {
        causes
    } else {
        format!("{message}: {causes}")
    };
    explain(text)
}

/// The text of a transport error with all its causes: tonic's own text is often just
/// "transport error", the cause (connection refused, an unknown certificate issuer) is below.
fn transport_reason(err: &(dyn std::error::Error + 'static)) -> String {
    explain(chain_text(Some(err)))
}

/// Says that a transport failure is a TLS problem when it is one: the text at the top of the
/// chain ("transport error") would not.
fn explain(text: String) -> String {
    let lower = text.to_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        format!(
            "TLS handshake failed (check tls.ca_file, the client certificate and the server \
             name): {text}"
        )
    } else {
        text
    }
}

/// True for a reason [`explain`] called a TLS failure.
pub(super) fn is_tls_failure(reason: &str) -> bool {
    reason.starts_with("TLS handshake failed")
}

/// An error and its sources, each once: wrappers often repeat the text of their cause.
fn chain_text(err: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in sources(err) {
        let text = e.to_string();
        if text.is_empty() || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

fn sources<'a>(
    err: Option<&'a (dyn std::error::Error + 'static)>,
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(err, |e| e.source())
}

/// Why a watch stream failed, in words.
pub(super) fn stream_error_reason(e: etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => status_reason(&status),
        other => transport_reason(&other),
    }
}

pub(super) fn watch_canceled(key: &str, reason: &str) -> Error {
    if reason.contains("permission denied") {
        Error::PermissionDenied {
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    } else {
        Error::Backend {
            key: key.to_owned(),
            reason: format!("etcd canceled the watch: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ErrorContext<'static> {
        ErrorContext {
            endpoints: "http://127.0.0.1:2379",
            request_timeout: Duration::from_secs(2),
        }
    }

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn etcd_errors_map_to_coord_errors_naming_the_key() {
        let get = Request::new("range", "/a/b").revision(7);
        let cases = [
            (
                status(Code::PermissionDenied, "etcdserver: permission denied"),
                "PermissionDenied",
            ),
            (
                status(
                    Code::InvalidArgument,
                    "etcdserver: authentication failed, invalid user ID or password",
                ),
                "Unauthenticated",
            ),
            (
                status(Code::Unauthenticated, "etcdserver: invalid auth token"),
                "Unauthenticated",
            ),
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision has been compacted",
                ),
                "Compacted",
            ),
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision is a future revision",
                ),
                "InvalidArgument",
            ),
            (
                status(Code::Unavailable, "etcdserver: no leader"),
                "Unavailable",
            ),
            (status(Code::DeadlineExceeded, "deadline"), "Timeout"),
            (
                status(
                    Code::InvalidArgument,
                    "etcdserver: duplicate key given in txn request",
                ),
                "Backend",
            ),
        ];
        for (err, variant) in cases {
            let mapped = map_error(err, get, &context());
            let debug = format!("{mapped:?}");
            assert!(debug.starts_with(variant), "{debug}");
            match mapped {
                Error::PermissionDenied { key, .. } | Error::Backend { key, .. } => {
                    assert_eq!(key, "/a/b")
                }
                Error::Compacted { key, requested, .. } => {
                    assert_eq!((key.as_str(), requested), ("/a/b", 7))
                }
                Error::Timeout { operation, .. } => assert_eq!(operation, "range /a/b"),
                _ => {}
            }
        }
    }

    #[test]
    fn a_write_that_failed_after_sending_has_an_unknown_outcome() {
        let put = Request::new("put", "/a/b").write();
        let get = Request::new("range", "/a/b");
        // Sent, answer lost: unknown for a write, as it was for a read.
        for lost in [
            status(Code::DeadlineExceeded, "deadline"),
            status(Code::Unavailable, "etcdserver: request timed out"),
            status(Code::Cancelled, "h2 protocol error: connection reset"),
        ] {
            let text = format!("{lost:?}");
            let mapped = request_error(lost, put, &context());
            assert!(
                matches!(mapped, Error::OutcomeUnknown { ref operation, ref key, ref source }
                    if operation == "put /a/b" && key == "/a/b" && source.is_transient()),
                "{text}: {mapped:?}"
            );
            assert!(!mapped.is_transient() && mapped.is_outcome_unknown());
            let read = request_error(status(Code::DeadlineExceeded, "deadline"), get, &context());
            assert!(read.is_transient(), "{read:?}");
        }
        assert!(deadline_error(put, Duration::from_secs(1)).is_outcome_unknown());
        assert!(matches!(
            deadline_error(get, Duration::from_secs(1)),
            Error::Timeout { .. }
        ));
        // Refused before being proposed: not applied, so Unavailable as before.
        for refused in ["etcdserver: no leader", "etcdserver: too many requests"] {
            let mapped = request_error(status(Code::Unavailable, refused), put, &context());
            assert!(matches!(mapped, Error::Unavailable { .. }), "{mapped:?}");
        }
        // A definite answer of etcd is the answer.
        let denied = request_error(
            status(Code::PermissionDenied, "etcdserver: permission denied"),
            put,
            &context(),
        );
        assert!(
            matches!(denied, Error::PermissionDenied { .. }),
            "{denied:?}"
        );
        let text =
            request_error(status(Code::DeadlineExceeded, "deadline"), put, &context()).to_string();
        assert!(
            text.starts_with("outcome unknown: put /a/b may or may not have been applied"),
            "{text}"
        );
    }

    #[test]
    fn missing_lease_is_lease_not_found() {
        let revoke = Request::lease("lease_revoke", 0x2a);
        let err = map_error(
            status(Code::NotFound, "etcdserver: requested lease not found"),
            revoke,
            &context(),
        );
        assert!(
            matches!(err, Error::LeaseNotFound { lease: 0x2a }),
            "{err:?}"
        );
        let err = map_error(
            etcd_client::Error::LeaseKeepAliveError("lease not found".into()),
            revoke,
            &context(),
        );
        assert!(
            matches!(err, Error::LeaseNotFound { lease: 0x2a }),
            "{err:?}"
        );
    }

    #[test]
    fn certificate_failures_say_tls() {
        let text = explain("invalid peer certificate: UnknownIssuer".into());
        assert!(text.starts_with("TLS handshake failed"), "{text}");
        assert_eq!(explain("connection refused".into()), "connection refused");
    }
}
