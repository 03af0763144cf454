//! A throwaway certificate authority for TLS tests.

use std::path::Path;

use super::HarnessError;
use super::options::TlsFiles;

/// Generates a CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, and writes them as PEM files into `dir`.
pub(super) fn write_certificates(dir: &Path) -> Result<TlsFiles, HarnessError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let tls_error = |e: rcgen::Error| HarnessError::Certificates {
        reason: e.to_string(),
    };

    let ca_key = KeyPair::generate().map_err(tls_error)?;
    let mut ca_params = CertificateParams::new(Vec::new()).map_err(tls_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "coord test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_error)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>, common_name: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(names).map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).map_err(tls_error)?;
        Ok::<_, HarnessError>((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "127.0.0.1",
        // etcd's gateway also dials etcd itself with the server certificate.
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let (client_cert, client_key) = leaf(
        Vec::new(),
        "coord-test-client",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;

    let files = TlsFiles {
        ca_file: dir.join("ca.pem"),
        server_cert_file: dir.join("server.pem"),
        server_key_file: dir.join("server-key.pem"),
        client_cert_file: dir.join("client.pem"),
        client_key_file: dir.join("client-key.pem"),
    };
    for (path, pem) in [
        (&files.ca_file, ca_cert.pem()),
        (&files.server_cert_file, server_cert),
        (&files.server_key_file, server_key),
        (&files.client_cert_file, client_cert),
        (&files.client_key_file, client_key),
    ] {
        std::fs::write(path, pem)
            .map_err(HarnessError::io(format!("cannot write {}", path.display())))?;
    }
    Ok(files)
}
