//! coord's metrics on a Prometheus `/metrics` endpoint.
//!
//! The application picks the exporter; here `metrics-exporter-prometheus` renders what coord
//! records, served on `GET /metrics` by a few lines of tokio. The example does some work
//! (a reload, a rejected value, a lock), scrapes itself once and prints the coord lines; with
//! `--serve` it keeps serving on the printed address until Ctrl-C.

use std::time::Duration;

use coord::{Coord, CoordConfig};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(CoordConfig, Debug, Clone)]
#[coord(prefix = "/config/app")]
struct App {
    #[coord(default = 100)]
    rate: u32,
}

/// Answers every request on `listener` with the rendered metrics.
async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let body = handle.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// One `GET /metrics`, as Prometheus would scrape it.
async fn scrape(address: std::net::SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(listener, handle));
    println!("serving metrics on http://{address}/metrics");

    let coord = Coord::in_memory();
    let config = coord.config();
    let live = coord.live::<App>().await?;
    let mut updates = live.subscribe();
    config.set("/config/app/rate", &250).await?;
    updates.changed().await?;
    config.set("/config/app/rate", "not a number").await?;
    while live.last_error().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lock = coord
        .locks()
        .acquire("jobs", Duration::from_secs(10))
        .await?;

    let response = scrape(address).await?;
    for line in response.lines().filter(|line| line.starts_with("coord_")) {
        if line.contains("reloads") || line.contains("locks_held") || line.contains("op=\"put\"") {
            println!("{line}");
        }
    }
    lock.unlock().await?;

    if std::env::args().any(|arg| arg == "--serve") {
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    coord.close().await?;
    Ok(())
}
