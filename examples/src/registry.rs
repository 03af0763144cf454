//! Service registry and a balanced gRPC channel: two instances of a tiny tonic service
//! (the standard gRPC health service) register themselves; a client calls through
//! `registry.channel()` and the calls spread over both; one instance stops and all traffic
//! moves to the other.
//!
//! Runs on the embedded store, or on etcd if `COORD_ENDPOINTS` is set:
//! `cargo run -p coord-examples --bin registry`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coord::registry::{ServiceEvent, ServiceInfo};
use coord::{ClientConfig, Coord};
use futures::StreamExt;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// One instance: a health server on a free loopback port that counts the calls it answers.
struct Instance {
    address: String,
    calls: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
}

async fn start_instance() -> Result<Instance, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let service = HealthServer::with_interceptor(
        HealthService::from_health_reporter(HealthReporter::new()),
        move |request| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(request)
        },
    );
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    Ok(Instance {
        address,
        calls,
        stop,
    })
}

async fn call_many(channel: &Channel, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = HealthClient::new(channel.clone());
    for _ in 0..n {
        let request = HealthCheckRequest {
            service: String::new(),
        };
        tokio::time::timeout(Duration::from_secs(5), client.check(request)).await??;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let coord = if std::env::var_os("COORD_ENDPOINTS").is_some() {
        Coord::connect(ClientConfig::from_env()?).await?
    } else {
        Coord::in_memory()
    };
    let registry = coord.registry();
    let ttl = Duration::from_secs(5);

    let one = start_instance().await?;
    let two = start_instance().await?;
    let reg_one = registry
        .register(
            ServiceInfo::new("greeter", "greeter-1", one.address.as_str()).with_version("1.0.0"),
            ttl,
        )
        .await?;
    let reg_two = registry
        .register(
            ServiceInfo::new("greeter", "greeter-2", two.address.as_str()).with_version("1.0.0"),
            ttl,
        )
        .await?;
    // A shared, read-only view in id order: iterate or index it; `to_vec()` makes owned copies.
    let instances = registry.discover("greeter").await?;
    println!("{} instances of greeter", instances.len());
    for info in &instances {
        println!("registered {} at {}", info.id, info.address);
    }

    let channel = registry.channel("greeter").await?;
    call_many(&channel, 40).await?;
    let (a, b) = (
        one.calls.load(Ordering::Relaxed),
        two.calls.load(Ordering::Relaxed),
    );
    println!("40 calls through the channel: greeter-1 answered {a}, greeter-2 answered {b}");

    // greeter-2 shuts down cleanly: deregister first, then stop serving.
    let mut watch = registry.watch("greeter").await?;
    reg_two.deregister().await?;
    while let Some(event) = watch.next().await {
        if let ServiceEvent::Unregistered(info) = event {
            println!("{} left", info.id);
            break;
        }
    }
    let _ = two.stop.send(());

    call_many(&channel, 40).await?;
    println!(
        "40 more calls: greeter-1 answered {}, greeter-2 answered {}",
        one.calls.load(Ordering::Relaxed) - a,
        two.calls.load(Ordering::Relaxed) - b
    );

    reg_one.deregister().await?;
    let _ = one.stop.send(());
    Ok(())
}
