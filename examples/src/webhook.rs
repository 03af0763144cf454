//! Forwards a prefix's release and proposal events to a webhook: the pattern for a chat
//! notification on every release or a review request on every proposal.
//!
//! `cargo run -p coord-examples --bin webhook` runs on the embedded store and starts its own
//! receiver on 127.0.0.1, which prints what it is sent. With `WEBHOOK_URL=http://host:port/path`
//! it posts there instead (plain HTTP/1.1; put a TLS-terminating proxy in front for https).
//!
//! Each event is one JSON POST, tried up to five times with a growing pause while the
//! receiver fails, then dropped with a message on stderr (a real forwarder would keep a
//! queue); the stream itself resumes across etcd outages (see `ConfigCenter::events`).

use std::collections::BTreeMap;
use std::time::Duration;

use coord::Coord;
use coord::access::Policy;
use coord::config::{ProposalState, ReleaseEvent};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PREFIX: &str = "/config/checkout";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let coord = Coord::in_memory();
    // A policy: ana proposes, bo approves; the prefix requires review.
    let access = coord.access();
    let policy = Policy::parse_toml(
        r#"
        [principals.ana]
        roles = ["editor"]
        [principals.bo]
        roles = ["owner"]
        [roles.editor]
        grants = [{ prefix = "/config/checkout", actions = ["propose"] }]
        [roles.owner]
        grants = [{ prefix = "/config/checkout", actions = ["approve"] }]
        [review."/config/checkout"]
        "#,
    )?;
    access
        .apply(&access.plan(&policy, &BTreeMap::new()).await?)
        .await?;

    let (url, receiver) = match std::env::var("WEBHOOK_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}/hooks/coord", listener.local_addr()?);
            (url, Some(tokio::spawn(receive(listener, 5))))
        }
    };
    let target = Target::parse(&url)?;
    let mut events = coord.config().events(PREFIX).await?;
    let forwarder = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => target.post(&payload(&event)).await,
                Err(e) => eprintln!("event stream: {e}"),
            }
        }
    });

    let ana = coord.config().as_principal("ana")?;
    let bo = coord.config().as_principal("bo")?;
    let limit = |n: i64| BTreeMap::from([("rate_limit/per_second".to_owned(), n.into())]);
    let first = ana
        .release_raw(PREFIX, limit(100))
        .message("black friday")
        .propose()
        .await?;
    bo.approve(PREFIX, &first.id).await?;
    let second = ana.release_raw(PREFIX, limit(1000)).propose().await?;
    bo.reject(PREFIX, &second.id, "too much at once").await?;

    match receiver {
        Some(receiver) => {
            tokio::time::timeout(Duration::from_secs(10), receiver).await???;
            println!("the receiver got every event");
        }
        None => tokio::time::sleep(Duration::from_secs(2)).await,
    }
    forwarder.abort();
    Ok(())
}

/// The JSON body posted for one event.
fn payload(event: &ReleaseEvent) -> String {
    let body = match event {
        ReleaseEvent::Released(release) => serde_json::json!({
            "event": "released",
            "prefix": PREFIX,
            "seq": release.seq,
            "by": release.principal,
            "approved_by": release.approved_by,
            "message": release.message,
        }),
        ReleaseEvent::Proposed(p) | ReleaseEvent::Approved(p) | ReleaseEvent::Rejected(p) => {
            let (event, by, reason) = match &p.state {
                ProposalState::Approved { by, .. } => ("approved", Some(by.clone()), None),
                ProposalState::Rejected { by, reason } => {
                    ("rejected", Some(by.clone()), Some(reason.clone()))
                }
                _ => ("proposed", Some(p.proposer.clone()), None),
            };
            serde_json::json!({
                "event": event,
                "prefix": p.prefix,
                "proposal": p.id,
                "by": by,
                "message": p.message,
                "reason": reason,
                "keys": p.changes.iter().map(|c| c.key.clone()).collect::<Vec<_>>(),
            })
        }
        other => serde_json::json!({ "event": format!("{other:?}") }),
    };
    body.to_string()
}

/// Where events are posted.
struct Target {
    host: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("WEBHOOK_URL `{url}` must start with http://"))?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        Ok(Target {
            host: host.to_owned(),
            path: format!("/{path}"),
        })
    }

    /// Posts `body`, retrying with backoff (at most 5 tries) while the receiver fails.
    async fn post(&self, body: &str) {
        let mut pause = Duration::from_millis(100);
        for attempt in 1..=5 {
            match self.try_post(body).await {
                Ok(()) => return,
                Err(e) => {
                    eprintln!("webhook attempt {attempt} failed: {e}");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        eprintln!("webhook: dropped {body}");
    }

    async fn try_post(&self, body: &str) -> std::io::Result<()> {
        let mut stream = TcpStream::connect(&self.host).await?;
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        let status = answer.split_whitespace().nth(1).unwrap_or("");
        if status.starts_with('2') {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "receiver answered {status:?}"
            )))
        }
    }
}

/// A stand-in receiver: prints the body of each of `count` posts and answers 204.
async fn receive(listener: TcpListener, count: usize) -> std::io::Result<()> {
    for _ in 0..count {
        let (mut stream, _) = listener.accept().await?;
        let mut request = Vec::new();
        let mut buf = [0_u8; 4096];
        // Headers, then as many body bytes as Content-Length says.
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    println!("webhook received: {body}");
                    break;
                }
            }
        }
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .await?;
    }
    Ok(())
}
