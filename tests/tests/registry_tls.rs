//! The registry's balanced channel over TLS: real tonic servers on loopback serving
//! certificates of a CA made per test (rcgen), registered in an embedded registry, called
//! through `Registry::channel_with` with `ChannelOptions::tls`.

use std::time::Duration;

mod common;

use common::health::TestServer;
use coord::Coord;
use coord::registry::{ChannelOptions, ServiceInfo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::time::timeout;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const TTL: Duration = Duration::from_secs(10);
/// A ceiling for one call, handshake included, on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

/// A test CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn certificate(&self) -> Certificate {
        Certificate::from_pem(&self.pem)
    }

    /// A certificate and key (PEM) for `names`, signed by this CA.
    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity::from_pem(cert.pem(), key.serialize_pem())
    }

    /// A server certificate for `names`.
    fn server(&self, names: &[&str]) -> Identity {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    fn client(&self) -> Identity {
        self.leaf(&[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// One health check through `channel`: its answer, or a note that none came within `WAIT`.
async fn call(channel: &Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel.clone());
    match timeout(
        WAIT,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(format!("{status:?}")),
        Err(_) => Err("no answer".to_owned()),
    }
}

/// Registers both servers as instances of `greeter` in `coord`.
async fn register(coord: &Coord, servers: [&TestServer; 2]) -> Vec<coord::Registration> {
    let mut held = Vec::new();
    for (id, server) in ["a", "b"].into_iter().zip(servers) {
        held.push(
            coord
                .registry()
                .register(ServiceInfo::new("greeter", id, server.address()), TTL)
                .await
                .unwrap(),
        );
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_channel_trusting_the_ca_reaches_both_instances() {
    let ca = Ca::new("coord registry test CA");
    let tls = || ServerTlsConfig::new().identity(ca.server(&["127.0.0.1", "localhost"]));
    let (a, b) = (
        TestServer::start_tls(tls()).await,
        TestServer::start_tls(tls()).await,
    );
    let coord = Coord::in_memory();
    let _held = register(&coord, [&a, &b]).await;

    let channel = coord
        .registry()
        .channel_with(
            "greeter",
            ChannelOptions::default().tls(ClientTlsConfig::new().ca_certificate(ca.certificate())),
        )
        .await
        .unwrap();
    for i in 0..100 {
        call(&channel)
            .await
            .unwrap_or_else(|e| panic!("call {i} over TLS: {e}"));
    }
    assert_eq!(a.calls() + b.calls(), 100);
    assert!(
        a.calls() > 0 && b.calls() > 0,
        "both reached: a {}, b {}",
        a.calls(),
        b.calls()
    );

    // The same servers in plain text: no call gets through (the default channel does not
    // speak TLS).
    let plain = coord.registry().channel("greeter").await.unwrap();
    assert!(call(&plain).await.is_err());
    assert_eq!(a.calls() + b.calls(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_channel_refuses_servers_whose_certificate_another_ca_signed() {
    let trusted = Ca::new("the CA the client trusts");
    let other = Ca::new("another CA");
    let tls = || ServerTlsConfig::new().identity(other.server(&["127.0.0.1", "localhost"]));
    let (a, b) = (
        TestServer::start_tls(tls()).await,
        TestServer::start_tls(tls()).await,
    );
    let coord = Coord::in_memory();
    let _held = register(&coord, [&a, &b]).await;

    let channel = coord
        .registry()
        .channel_with(
            "greeter",
            ChannelOptions::default()
                .tls(ClientTlsConfig::new().ca_certificate(trusted.certificate())),
        )
        .await
        .unwrap();
    for _ in 0..10 {
        let error = call(&channel)
            .await
            .expect_err("a server the client does not trust is not called");
        // Refused by the certificate check, at once: not a timeout, not another failure.
        assert!(
            error.contains("invalid peer certificate: UnknownIssuer"),
            "{error}"
        );
    }
    assert_eq!(
        a.calls() + b.calls(),
        0,
        "no request got past the handshake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_domain_name_reaches_a_server_that_wants_a_client_certificate() {
    let ca = Ca::new("coord registry mTLS CA");
    // Named for the service, not for its address: the client names it.
    let tls = || {
        ServerTlsConfig::new()
            .identity(ca.server(&["greeter.internal"]))
            .client_ca_root(ca.certificate())
    };
    let (a, b) = (
        TestServer::start_tls(tls()).await,
        TestServer::start_tls(tls()).await,
    );
    let coord = Coord::in_memory();
    let _held = register(&coord, [&a, &b]).await;
    let client_tls = || {
        ClientTlsConfig::new()
            .ca_certificate(ca.certificate())
            .domain_name("greeter.internal")
    };

    let with_identity = coord
        .registry()
        .channel_with(
            "greeter",
            ChannelOptions::default().tls(client_tls().identity(ca.client())),
        )
        .await
        .unwrap();
    for i in 0..20 {
        call(&with_identity)
            .await
            .unwrap_or_else(|e| panic!("call {i} with a client certificate: {e}"));
    }
    assert_eq!(a.calls() + b.calls(), 20);

    let without = coord
        .registry()
        .channel_with("greeter", ChannelOptions::default().tls(client_tls()))
        .await
        .unwrap();
    assert!(call(&without).await.is_err(), "no client certificate");
    assert_eq!(a.calls() + b.calls(), 20);
}

#[tokio::test]
async fn tls_settings_that_do_not_parse_are_refused_by_channel_with() {
    let coord = Coord::in_memory();
    let broken = Identity::from_pem(
        "-----BEGIN CERTIFICATE-----\nbm90\n-----END CERTIFICATE-----\n",
        "-----BEGIN PRIVATE KEY-----\nbm90\n-----END PRIVATE KEY-----\n",
    );
    let result = coord
        .registry()
        .channel_with(
            "greeter",
            ChannelOptions::default().tls(ClientTlsConfig::new().identity(broken)),
        )
        .await;
    match result {
        Err(coord::Error::InvalidArgument { field, .. }) => assert_eq!(field, "tls"),
        other => panic!("expected InvalidArgument on tls, got {other:?}"),
    }
}
