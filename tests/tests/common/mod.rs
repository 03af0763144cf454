//! Shared by the integration tests: one way to get a store of each backend.
#![allow(dead_code)]

pub mod health;
pub mod proxy;

use std::future::Future;
use std::time::Duration;

use coord::testing::EtcdServer;
use coord::{ClientConfig, Coord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `sync_interval` far beyond any test: the periodic relist (the test profile's is 10 s)
/// cannot rescue a broken watch, so what a test sees came through the watch path.
pub const NO_RESYNC: Duration = Duration::from_secs(3600);

/// A `Coord` on one backend, keeping its etcd server (if any) alive for the test.
pub struct Backend {
    pub coord: Coord,
    pub server: Option<EtcdServer>,
}

impl Backend {
    pub fn memory() -> Self {
        Backend {
            coord: Coord::in_memory(),
            server: None,
        }
    }

    pub async fn etcd() -> Self {
        Self::etcd_with(|config| config).await
    }

    /// etcd, with the periodic relist out of the way ([`NO_RESYNC`]): for tests that prove
    /// the watch path itself.
    pub async fn etcd_without_resync() -> Self {
        Self::etcd_with(|config| config.with_sync_interval(NO_RESYNC)).await
    }

    /// etcd, connected with the test profile's `ClientConfig` as `adjust` changes it.
    pub async fn etcd_with(adjust: impl FnOnce(ClientConfig) -> ClientConfig) -> Self {
        let server = EtcdServer::start()
            .await
            .expect("start etcd (see the error for how to install it)");
        let coord = Coord::connect(adjust(server.client_config()))
            .await
            .expect("connect to the test etcd");
        Backend {
            coord,
            server: Some(server),
        }
    }

    pub fn store(&self) -> &coord::Store {
        self.coord.store()
    }
}

/// Polls `check` every 50 ms until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `store` has `n` watches open. A contended lock, ID or campaign watches the key
/// queued before its own, so with no other watch about, its watch being open says it waits.
pub async fn until_watching(store: &coord::Store, n: i64, what: &str) {
    eventually(Duration::from_secs(10), what, || async {
        store.stats().open_watches() == n
    })
    .await;
}

/// Watchers etcd has open, from its `/metrics`: how a test sees an `etcdctl lock` or `elect`
/// waiting (Go's `waitDeletes` watches the key queued before its own).
pub async fn etcd_watchers(endpoint: &str) -> f64 {
    etcd_metric(endpoint, "etcd_debugging_mvcc_watcher_total").await
}

/// A gauge or counter from etcd's own `/metrics` endpoint, served on its client URL.
pub async fn etcd_metric(endpoint: &str, name: &str) -> f64 {
    let addr = endpoint.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr} for /metrics: {e}"));
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut body = String::new();
    socket.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("etcd reports no `{name}`"))
}

/// Runs each named case of a module against both backends: `memory::<case>` and
/// `etcd::<case>`, each case an `async fn(&Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($cases:ident: $($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = $crate::common::Backend::memory();
                    super::$cases::$name(&backend).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = $crate::common::Backend::etcd().await;
                    super::$cases::$name(&backend).await;
                }
            )*
        }
    };
}
