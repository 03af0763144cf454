//! The options every harness start takes (TLS, client certificates, user auth, extra flags),
//! and where the generated TLS material is.

use std::path::PathBuf;

use crate::client_config::TlsConfig;

/// Options of a test server or cluster: TLS, client-certificate auth, user auth.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use coord::testing::{EtcdServer, APP_PASSWORD, APP_USER};
///
/// let server = EtcdServer::builder().tls(true).auth(true).start().await?;
/// // client_config() trusts the generated CA and logs in as root.
/// let app = server.client_config().with_user(APP_USER, APP_PASSWORD);
/// let coord = coord::Coord::connect(app).await?;
/// coord.store().put("/app/key", b"v".to_vec(), 0).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct EtcdBuilder {
    pub(super) tls: bool,
    pub(super) client_cert_auth: bool,
    pub(super) auth: bool,
    pub(super) extra_args: Vec<String>,
}

impl EtcdBuilder {
    /// Serves clients over TLS (`https://`) with a server certificate for `127.0.0.1` and
    /// `localhost`, signed by a CA generated for this server ([`TlsFiles`]).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Requires clients to present a certificate signed by the test CA (implies TLS);
    /// [`EtcdCluster::client_config`](super::EtcdCluster::client_config) then includes the generated client certificate.
    pub fn client_cert_auth(mut self, on: bool) -> Self {
        self.client_cert_auth = on;
        if on {
            self.tls = true;
        }
        self
    }

    /// Turns on etcd's user auth after start, with users [`ROOT_USER`](super::ROOT_USER) (all access) and
    /// [`APP_USER`](super::APP_USER) (read-write under [`APP_PREFIX`](super::APP_PREFIX) only).
    pub fn auth(mut self, on: bool) -> Self {
        self.auth = on;
        self
    }

    /// Passes more flags to every member's `etcd` (after the harness's own), for behaviour
    /// the builder has no option for, such as
    /// `--experimental-watch-progress-notify-interval 500ms`.
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// Where the generated TLS material is: PEM files in the server's temporary directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed every certificate below.
    pub ca_file: PathBuf,
    /// The server certificate (for `127.0.0.1` and `localhost`).
    pub server_cert_file: PathBuf,
    /// The server certificate's key.
    pub server_key_file: PathBuf,
    /// A client certificate signed by the CA (for `--client-cert-auth`).
    pub client_cert_file: PathBuf,
    /// The client certificate's key.
    pub client_key_file: PathBuf,
}

impl TlsFiles {
    /// Client TLS settings trusting the CA, without a client certificate.
    pub fn ca_only(&self) -> TlsConfig {
        TlsConfig::with_ca(&self.ca_file)
    }

    /// Client TLS settings trusting the CA and presenting the client certificate.
    pub fn with_client_identity(&self) -> TlsConfig {
        self.ca_only()
            .with_client_identity(&self.client_cert_file, &self.client_key_file)
    }
}
