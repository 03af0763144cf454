//! What the etcd backend needs to connect, as plain values: [`EtcdOptions`].
//!
//! The layer above builds them (the client module, from a `ClientConfig`, reading the PEM files
//! there), so the store depends on nothing above it; this module only turns them into
//! etcd-client's `ConnectOptions`.

use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

/// Connection settings of the etcd backend.
///
/// No `Debug`: it holds the password and the client's private key.
#[derive(Clone)]
pub(crate) struct EtcdOptions {
    /// etcd client URLs (`http://host:port`, `https://host:port`, or a bare `host:port`).
    pub endpoints: Vec<String>,
    /// How long connecting may take, the first request included.
    pub dial_timeout: Duration,
    /// Deadline of each unary request.
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive ping interval.
    pub keep_alive_time: Duration,
    /// How long a keep-alive ping may go unanswered before the connection is dropped.
    pub keep_alive_timeout: Duration,
    /// etcd user auth; `None` to send requests unauthenticated.
    pub credentials: Option<Credentials>,
    /// TLS; `None` for plain text.
    pub tls: Option<TlsMaterial>,
    /// Offline start: if etcd does not answer within `dial_timeout`, connect anyway (the
    /// client dials again at each request) instead of failing.
    pub start_offline: bool,
}

/// A user name and password for etcd's user auth.
#[derive(Clone)]
pub(crate) struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

/// TLS material already read into memory, so connecting does no file I/O.
#[derive(Clone, Default)]
pub(crate) struct TlsMaterial {
    /// PEM of the CA that signed etcd's server certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of the client certificate and of its private key, for client-certificate auth.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check the server certificate against; `None` for the endpoint's host.
    pub domain_name: Option<String>,
}

impl EtcdOptions {
    /// etcd-client's options for these settings.
    pub(super) fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(self.keep_alive_time, self.keep_alive_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum refuses requests and cancels watches at once
            // ("no leader") instead of serving stale reads or stalling until the deadline, so a
            // client with several endpoints moves on (what Go's clientv3 asks for on watches).
            .with_require_leader(true);
        if let Some(credentials) = &self.credentials {
            // etcd's auth tokens expire (and do not survive a restart with simple tokens): log
            // in again when the server says the token is invalid.
            options = options
                .with_user(credentials.username.clone(), credentials.password.clone())
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = &self.tls {
            let mut tls_options = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                tls_options = tls_options.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity_pem {
                tls_options = tls_options.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &tls.domain_name {
                tls_options = tls_options.domain_name(domain.clone());
            }
            options = options.with_tls(tls_options);
        }
        options
    }
}
