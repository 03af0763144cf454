//! Connecting: dial etcd and prove it answers, within the dial timeout, or say why not.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::time::Instant;

use super::errors::{is_tls_failure, map_error, ErrorContext, Request};
use super::{mux, EtcdStore};
use crate::client::{read_pem, ClientConfig};
use crate::error::{Error, Result};

impl EtcdStore {
    /// Connects and checks that etcd answers, all within `config.dial_timeout`.
    pub(crate) async fn connect(config: &ClientConfig) -> Result<Self> {
        let endpoints: Arc<str> = config.endpoints.join(",").into();
        let options = connect_options(config)?;
        let context = ErrorContext {
            endpoints: &endpoints,
            request_timeout: config.dial_timeout,
        };
        let deadline = Instant::now() + config.dial_timeout;
        let mut last_error: Option<String> = None;
        // etcd-client connects lazily and a request routed to an endpoint that is down fails at
        // once, so one failed probe says little: an etcd that is starting, or a dead endpoint
        // among live ones, is retried until the deadline.
        loop {
            let attempt = async {
                let client = Client::connect(&config.endpoints, Some(options.clone())).await?;
                client.maintenance_client().status().await?;
                Ok::<_, etcd_client::Error>(client)
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(client)) => {
                    let client = Arc::new(client);
                    return Ok(EtcdStore {
                        watches: Arc::new(mux::WatchMux::new(Arc::clone(&client))),
                        client,
                        endpoint_count: config.endpoints.len(),
                        endpoints,
                        request_timeout: config.request_timeout,
                        keepers: Arc::default(),
                    });
                }
                Ok(Err(e)) => match map_error(e, Request::new("connect", ""), &context) {
                    // Retrying cannot fix a refusal.
                    err @ (Error::Unauthenticated { .. }
                    | Error::PermissionDenied { .. }
                    | Error::InvalidArgument { .. }) => return Err(err),
                    // Keep a TLS failure over what follows it: the next try on the same
                    // connection may only see the hang-up ("broken pipe").
                    Error::Unavailable { reason, .. } => {
                        if !last_error.as_deref().is_some_and(is_tls_failure) {
                            last_error = Some(reason);
                        }
                    }
                    other => last_error = Some(other.to_string()),
                },
                Err(_) => break,
            }
            if Instant::now() + CONNECT_RETRY_DELAY >= deadline {
                break;
            }
            tokio::time::sleep(CONNECT_RETRY_DELAY).await;
        }
        let reason = match last_error {
            Some(reason) if !is_tls_failure(&reason) && is_hang_up(&reason) => {
                if config.tls.is_none() {
                    // What a TLS server does to a plain-text HTTP/2 client.
                    format!("{reason} (if etcd serves TLS, use an https:// endpoint and set tls)")
                } else {
                    // What etcd with --client-cert-auth does to a client without a certificate.
                    format!(
                        "{reason} (etcd hung up after the TLS handshake: if it requires a client \
                         certificate, set tls.cert_file and tls.key_file)"
                    )
                }
            }
            Some(reason) => reason,
            None => format!(
                "no answer within the dial timeout of {:?}",
                config.dial_timeout
            ),
        };
        Err(Error::Unavailable {
            endpoints: endpoints.to_string(),
            reason,
        })
    }
}

/// How long `connect` waits between probes of an etcd that did not answer.
const CONNECT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// etcd-client options from a [`ClientConfig`]. Unreadable PEM files are
/// [`Error::InvalidArgument`] naming the field.
fn connect_options(config: &ClientConfig) -> Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.dial_timeout)
        .with_timeout(config.request_timeout)
        .with_keep_alive(config.keep_alive_time, config.keep_alive_timeout)
        .with_keep_alive_while_idle(true)
        // A member cut off from the quorum refuses requests and cancels watches at once
        // ("no leader") instead of serving stale reads or stalling until the deadline, so a
        // client with several endpoints moves on (what Go's clientv3 asks for on watches).
        .with_require_leader(true);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        // etcd's auth tokens expire (and do not survive a restart with simple tokens): log in
        // again when the server says the token is invalid.
        options = options
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = &config.tls {
        let mut tls_options = TlsOptions::new();
        if let Some(ca) = &tls.ca_file {
            tls_options =
                tls_options.ca_certificate(Certificate::from_pem(read_pem("tls.ca_file", ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            tls_options = tls_options.identity(Identity::from_pem(
                read_pem("tls.cert_file", cert)?,
                read_pem("tls.key_file", key)?,
            ));
        }
        if let Some(domain) = &tls.domain_name {
            tls_options = tls_options.domain_name(domain.clone());
        }
        options = options.with_tls(tls_options);
    }
    Ok(options)
}

/// True for the ways a connection ends when the server drops it right after it opened: a TLS
/// server spoken to in plain text, or one that wants a client certificate it did not get.
fn is_hang_up(reason: &str) -> bool {
    let lower = reason.to_lowercase();
    [
        "broken pipe",
        "connection reset",
        "connection closed",
        "frame with invalid size",
        "protocol error",
    ]
    .iter()
    .any(|sign| lower.contains(sign))
}
