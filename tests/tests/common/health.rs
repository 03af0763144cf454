//! A tonic-health server on a free loopback port, plain or TLS, that counts the calls it
//! answers (past the handshake): the registry tests' instances behind a balanced channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// Stops serving when dropped.
pub struct TestServer {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// Serves plain HTTP/2.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// Serves TLS with `tls`.
    pub async fn start_tls(tls: ServerTlsConfig) -> Self {
        Self::serve(Some(tls)).await
    }

    async fn serve(tls: Option<ServerTlsConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let service = HealthServer::with_interceptor(
            HealthService::from_health_reporter(HealthReporter::new()),
            move |request| {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(request)
            },
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let mut server = match tls {
            Some(tls) => Server::builder().tls_config(tls).unwrap(),
            None => Server::builder(),
        };
        tokio::spawn(server.add_service(service).serve_with_incoming_shutdown(
            TcpIncoming::from(listener),
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            calls,
            stop: Some(stop),
        }
    }

    /// Calls answered so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// `127.0.0.1:{port}`, as a registration's address.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
