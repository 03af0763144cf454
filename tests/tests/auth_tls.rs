//! TLS and etcd's user auth: the right settings connect, the wrong ones fail with an error that
//! says what is wrong.
//!
//! The servers come from `coord::testing` with a CA and certificates generated per test, and
//! the users `root` and `app` (read-write under `/app/` only).

use coord::store::KeyRange;
use coord::testing::{EtcdServer, APP_PASSWORD, APP_PREFIX, APP_USER};
use std::time::Duration;

use coord::{ClientConfig, Coord, Error, TlsConfig};

async fn tls_server() -> EtcdServer {
    EtcdServer::builder()
        .tls(true)
        .start()
        .await
        .expect("start etcd with TLS (the error says how to install etcd)")
}

async fn auth_server() -> EtcdServer {
    EtcdServer::builder()
        .auth(true)
        .start()
        .await
        .expect("start etcd with auth (the error says how to install etcd)")
}

fn mentions_tls(err: &Error) -> bool {
    let text = err.to_string().to_lowercase();
    text.contains("tls") || text.contains("certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_serves_a_client_that_trusts_its_ca() {
    let server = tls_server().await;
    assert!(server.endpoint().starts_with("https://"));

    let coord = Coord::connect(server.client_config()).await.unwrap();
    coord
        .store()
        .put("/tls/key", b"secret".to_vec(), 0)
        .await
        .unwrap();

    let (kv, _) = coord.store().get("/tls/key").await.unwrap();
    assert_eq!(kv.unwrap().value, b"secret");
    assert_eq!(
        server
            .etcdctl(&["get", "--print-value-only", "/tls/key"])
            .unwrap()
            .trim(),
        "secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_a_ca_fails_with_a_certificate_error() {
    let server = tls_server().await;
    let config = server.client_config().with_tls(TlsConfig::default());

    let err = Coord::connect(config).await.unwrap_err();

    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(
        mentions_tls(&err),
        "the message names the TLS problem: {err}"
    );
    assert!(err.to_string().contains(&server.endpoint()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trusting_another_ca_fails_with_a_certificate_error() {
    let server = tls_server().await;
    let other = tls_server().await;
    let foreign_ca = other.tls_files().unwrap().ca_file.clone();
    let config = server
        .client_config()
        .with_tls(TlsConfig::with_ca(foreign_ca));

    let err = Coord::connect(config).await.unwrap_err();

    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(mentions_tls(&err), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_to_a_tls_server_fails_with_a_hint_to_use_tls() {
    let server = tls_server().await;
    let mut config = server.client_config();
    config.tls = None;
    config.endpoints = vec![server.endpoint().replace("https://", "http://")];

    let err = Coord::connect(config).await.unwrap_err();

    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(mentions_tls(&err), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_auth_accepts_the_ca_signed_client_certificate() {
    let server = EtcdServer::builder()
        .client_cert_auth(true)
        .start()
        .await
        .expect("start etcd with client-certificate auth");
    let files = server.tls_files().unwrap().clone();

    let coord = Coord::connect(
        server
            .client_config()
            .with_tls(files.with_client_identity()),
    )
    .await
    .unwrap();
    coord.store().put("/mtls", b"1".to_vec(), 0).await.unwrap();

    let err = Coord::connect(server.client_config().with_tls(files.ca_only()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(mentions_tls(&err), "without a client certificate: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_user_reads_and_writes_under_its_prefix() {
    let server = auth_server().await;
    let app = server.client_config().with_user(APP_USER, APP_PASSWORD);
    let coord = Coord::connect(app).await.unwrap();
    let key = format!("{APP_PREFIX}feature");

    coord.store().put(&key, b"on".to_vec(), 0).await.unwrap();

    let (kv, _) = coord.store().get(&key).await.unwrap();
    assert_eq!(kv.unwrap().value, b"on");
    let listed = coord
        .store()
        .range(&KeyRange::prefix(APP_PREFIX), Default::default())
        .await
        .unwrap();
    assert_eq!(listed.count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_unauthenticated() {
    let server = auth_server().await;
    let config = server
        .client_config()
        .with_user(APP_USER, "not-the-password");

    let err = Coord::connect(config).await.unwrap_err();

    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_user_outside_its_prefix_is_permission_denied_naming_the_key() {
    let server = auth_server().await;
    server.etcdctl(&["put", "/other/key", "root-only"]).unwrap();
    let app = server.client_config().with_user(APP_USER, APP_PASSWORD);
    let coord = Coord::connect(app).await.unwrap();

    let read = coord.store().get("/other/key").await.unwrap_err();
    let write = coord
        .store()
        .put("/other/key", b"x".to_vec(), 0)
        .await
        .unwrap_err();
    let watch = coord
        .store()
        .watch(&KeyRange::prefix("/other/"), 0)
        .await
        .err()
        .expect("a watch outside the prefix is refused");

    for (err, key) in [
        (read, "/other/key"),
        (write, "/other/key"),
        (watch, "/other/"),
    ] {
        match &err {
            Error::PermissionDenied { key: denied, .. } => assert_eq!(denied, key),
            other => panic!("expected PermissionDenied on {key}, got {other:?}"),
        }
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_for_a_server_without_auth_are_refused() {
    let server = EtcdServer::start()
        .await
        .expect("start etcd (the error says how to install it)");
    let config = server.client_config().with_user(APP_USER, APP_PASSWORD);

    let err = Coord::connect(config).await.unwrap_err();

    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");
    assert!(err.to_string().contains("not enabled"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_on_an_auth_server_cannot_read() {
    let server = auth_server().await;
    let mut anonymous = server.client_config();
    anonymous.username = None;
    anonymous.password = None;

    // etcd answers a status request without a login, so connecting works; the read does not.
    let coord = Coord::connect(anonymous).await.unwrap();
    let err = coord.store().get("/app/x").await.unwrap_err();

    assert!(
        matches!(
            err,
            Error::PermissionDenied { .. } | Error::Unauthenticated { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_in_client_keeps_working_after_an_etcd_restart() {
    let mut server = auth_server().await;
    let app = server.client_config().with_user(APP_USER, APP_PASSWORD);
    let coord = Coord::connect(app).await.unwrap();
    coord.store().put("/app/a", b"1".to_vec(), 0).await.unwrap();

    // etcd's simple tokens live in memory: after a restart the old token is unknown and the
    // client must log in again by itself.
    server.kill().await.unwrap();
    server.restart().await.unwrap();

    coord.store().put("/app/a", b"2".to_vec(), 0).await.unwrap();
    let (kv, _) = coord.store().get("/app/a").await.unwrap();
    assert_eq!(kv.unwrap().value, b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_auth_together_connect_as_the_app_user() {
    let server = EtcdServer::builder()
        .tls(true)
        .auth(true)
        .start()
        .await
        .expect("start etcd with TLS and auth");
    let app = server.client_config().with_user(APP_USER, APP_PASSWORD);

    let coord = Coord::connect(app).await.unwrap();
    coord
        .store()
        .put("/app/both", b"1".to_vec(), 0)
        .await
        .unwrap();

    assert_eq!(
        server
            .etcdctl(&["get", "--print-value-only", "/app/both"])
            .unwrap()
            .trim(),
        "1"
    );
}

/// A `tracing` subscriber for this thread that writes into a buffer (the test runs on one
/// thread, so everything `connect` logs lands there).
fn capture_logs() -> (std::sync::Arc<std::sync::Mutex<Vec<u8>>>, impl Sized) {
    use tracing_subscriber::util::SubscriberInitExt;
    #[derive(Clone)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let buffer = Buffer(std::sync::Arc::clone(&logs));
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || buffer.clone())
        .with_ansi(false)
        .finish();
    (logs, subscriber.set_default())
}

/// The warnings about credentials in plain text logged so far.
fn plain_text_warnings(logs: &std::sync::Mutex<Vec<u8>>) -> Vec<String> {
    String::from_utf8(logs.lock().unwrap().clone())
        .unwrap()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("credentials over plain http://"))
        .map(str::to_owned)
        .collect()
}

/// User and password over `http://` to an etcd on another machine are warned about once
/// at connect (before dialing, so even a connect that fails warns), naming the endpoints
/// and never the password; over loopback, over TLS, or without credentials, nothing is said.
#[tokio::test(flavor = "current_thread")]
async fn credentials_over_plain_http_are_warned_about_once_at_connect() {
    let (logs, _guard) = capture_logs();
    // TEST-NET-1 (RFC 5737): never routed, so the dial times out, after the warning.
    let remote = "http://192.0.2.1:2379";
    let unreachable = Coord::connect(
        ClientConfig::profile("test")
            .with_endpoints([remote])
            .with_dial_timeout(Duration::from_millis(300))
            .with_user(APP_USER, APP_PASSWORD),
    )
    .await;
    assert!(unreachable.is_err(), "TEST-NET-1 answered");
    let warnings = plain_text_warnings(&logs);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(remote), "{}", warnings[0]);

    let plain = auth_server().await;
    let coord = Coord::connect(plain.client_config().with_user(APP_USER, APP_PASSWORD))
        .await
        .unwrap();
    coord.store().put("/app/x", b"1".to_vec(), 0).await.unwrap();
    coord.store().get("/app/x").await.unwrap();
    assert_eq!(
        plain_text_warnings(&logs).len(),
        1,
        "loopback crosses no network: no warning"
    );
    let all = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(!all.contains(APP_PASSWORD), "{all}");
    // Nor does the `Coord`'s Debug (its ClientConfig's is written by hand).
    let shown = format!("{coord:?}");
    assert!(
        shown.contains("<redacted>") && !shown.contains(APP_PASSWORD),
        "{shown}"
    );
    coord.close().await.unwrap();

    let secure = EtcdServer::builder()
        .tls(true)
        .auth(true)
        .start()
        .await
        .expect("start etcd with TLS and auth");
    let coord = Coord::connect(secure.client_config().with_user(APP_USER, APP_PASSWORD))
        .await
        .unwrap();
    coord.close().await.unwrap();
    let open = EtcdServer::start().await.expect("start etcd");
    let coord = Coord::connect(open.client_config()).await.unwrap();
    coord.close().await.unwrap();
    assert_eq!(plain_text_warnings(&logs).len(), 1, "no new warning");
}
