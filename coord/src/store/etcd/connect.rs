//! Connecting: dial etcd and prove it answers, within the dial timeout, or say why not.
//! With `start_offline`, an etcd that does not answer is not an error: the store is made
//! anyway and its requests dial again each time (offline start).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use tokio::time::Instant;
use tracing::Instrument;

use super::errors::{ErrorContext, Request, is_tls_failure, map_error};
use super::{EtcdOptions, EtcdStore, keepalive, mux};
use crate::error::{Error, Result};

impl EtcdStore {
    /// Connects and checks that etcd answers, all within `config.dial_timeout`; with
    /// `config.start_offline`, a store whose client connects later if etcd did not answer.
    /// Warns once if credentials are to cross the network in plain text.
    pub(crate) async fn connect(config: &EtcdOptions) -> Result<Self> {
        let endpoints: Arc<str> = config.endpoints.join(",").into();
        let span = tracing::info_span!("store.connect", endpoints = %endpoints);
        Self::dial(config, endpoints).instrument(span).await
    }

    async fn dial(config: &EtcdOptions, endpoints: Arc<str>) -> Result<Self> {
        let plain = plain_text_endpoints(&config.endpoints, config.tls.is_some());
        if config.credentials.is_some() && !plain.is_empty() {
            // Not refused: a sidecar proxy or a private network may make plain text safe, and
            // only the deployment knows; but the user should know what is sent in the clear.
            // Loopback endpoints are left out: nothing crosses a network.
            tracing::warn!(
                plain_endpoints = %plain.join(","),
                "etcd credentials over plain http://: the password (at each login) and the auth \
                 token (in every request) cross the network unencrypted; use https:// endpoints \
                 with `tls` set"
            );
        }
        let options = config.connect_options();
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
                let status = client.maintenance_client().status().await?;
                let cluster_id = status.header().map_or(0, |h| h.cluster_id());
                Ok::<_, etcd_client::Error>((client, cluster_id))
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok((client, cluster_id))) => {
                    return Ok(Self::on_client(client, config, endpoints, cluster_id));
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
        // A TLS problem or a hang-up is a setting to fix, not an outage to wait out.
        if config.start_offline
            && config.credentials.is_none()
            && !is_tls_failure(&reason)
            && !is_hang_up(&reason)
        {
            // Without credentials etcd-client sends nothing here (with them it logs in first,
            // which needs etcd): its channel dials at each request, so later calls reconnect.
            match Client::connect(&config.endpoints, Some(options)).await {
                Ok(client) => {
                    tracing::warn!(
                        endpoints = %endpoints,
                        %reason,
                        "etcd unreachable; starting offline, requests fail until it answers"
                    );
                    // The cluster is not known until etcd answers a status request.
                    return Ok(Self::on_client(client, config, endpoints, 0));
                }
                Err(e) => tracing::debug!(error = %e, "cannot make an offline client"),
            }
        }
        Err(Error::Unavailable {
            endpoints: endpoints.to_string(),
            reason,
        })
    }

    fn on_client(
        client: Client,
        config: &EtcdOptions,
        endpoints: Arc<str>,
        cluster_id: u64,
    ) -> Self {
        let client = Arc::new(client);
        EtcdStore {
            watches: Arc::new(mux::WatchMux::new(Arc::clone(&client))),
            client,
            endpoint_count: config.endpoints.len(),
            endpoints,
            request_timeout: config.request_timeout,
            keep_alives: Arc::new(keepalive::KeepAliveMux::new(config.request_timeout)),
            cluster_id: Arc::new(std::sync::atomic::AtomicU64::new(cluster_id)),
        }
    }
}

/// How long `connect` waits between probes of an etcd that did not answer.
const CONNECT_RETRY_DELAY: Duration = Duration::from_millis(100);

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

/// The endpoints etcd-client dials in plain text across a network: `http://` ones, and bare
/// `host:port` ones when no TLS is set (with TLS it dials those over https); loopback ones
/// are left out.
fn plain_text_endpoints(endpoints: &[String], tls: bool) -> Vec<&str> {
    endpoints
        .iter()
        .map(String::as_str)
        .filter(|e| e.starts_with("http://") || (!tls && !e.contains("://")))
        .filter(|e| !is_loopback(e))
        .collect()
}

/// True if `endpoint` (`http://host:port`, `host:port`, `[::1]:port`) names this machine.
fn is_loopback(endpoint: &str) -> bool {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_endpoints_are_http_ones_and_bare_ones_without_tls() {
        let endpoints: Vec<String> = ["http://a:2379", "https://b:2379", "c:2379"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            plain_text_endpoints(&endpoints, false),
            ["http://a:2379", "c:2379"]
        );
        assert_eq!(plain_text_endpoints(&endpoints, true), ["http://a:2379"]);
        let secure = vec!["https://b:2379".to_owned(), "c:2379".to_owned()];
        assert!(plain_text_endpoints(&secure, true).is_empty());
    }

    #[test]
    fn loopback_endpoints_cross_no_network() {
        let endpoints: Vec<String> = [
            "http://127.0.0.1:2379",
            "http://localhost:2379",
            "[::1]:2379",
            "http://127.8.9.1:2379",
            "http://10.0.0.7:2379",
            "http://etcd.internal:2379",
            "http://[fd00::1]:2379",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            plain_text_endpoints(&endpoints, false),
            [
                "http://10.0.0.7:2379",
                "http://etcd.internal:2379",
                "http://[fd00::1]:2379"
            ]
        );
    }
}
