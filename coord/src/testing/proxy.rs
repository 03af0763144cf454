//! [`FaultProxy`]: a TCP proxy on loopback in front of one etcd member, which a test cuts,
//! silences or slows down to play a network fault between one client and one member.
//!
//! What it promises is on [`FaultProxy`] itself, where users of `coord::testing` read it.
//!
//! Everything runs as tasks on the tokio runtime that called [`FaultProxy::start`].

use std::net::SocketAddr;
use std::ops::Index;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::HarnessError;
use crate::client_config::ClientConfig;

/// How many bytes a link reads at a time.
const CHUNK_BYTES: usize = 16 * 1024;
/// How many chunks a direction holds between reading and writing (delayed or blackholed)
/// before it stops reading: the proxy's own buffer, on top of the sockets'.
const CHUNKS_IN_FLIGHT: usize = 64;
/// The pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// What the proxy does to traffic now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Open,
    Blackholed,
    /// Requests pass, answers are held.
    AnswersHeld,
    Partitioned,
}

/// Which way a pump carries bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Client to member: requests.
    Requests,
    /// Member to client: answers.
    Answers,
}

impl Mode {
    /// True if bytes going `direction` are delivered now.
    fn carries(self, direction: Direction) -> bool {
        match self {
            Mode::Open => true,
            Mode::AnswersHeld => direction == Direction::Requests,
            Mode::Blackholed | Mode::Partitioned => false,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Faults {
    mode: Mode,
    latency: Duration,
    /// Bumped by every `partition` (and by drop): each link remembers the value it started
    /// under and resets itself when it changes, so even a partition healed before a link
    /// looked is not missed.
    cuts: u64,
}

/// A TCP proxy on `127.0.0.1` in front of one etcd member, for partitions, blackholes and
/// latency between a client and that member.
///
/// What a proxy promises:
/// - **Healed, it is a plain pipe.** Bytes pass unchanged and in order in both directions; a
///   side that closes its half is passed on as a half-close (FIN) once its bytes are through.
/// - **[`partition`](FaultProxy::partition) is a cut the client notices at once.** Every open
///   connection is reset (TCP RST, on both sides), and until [`heal`](FaultProxy::heal) each
///   new connection is accepted and reset straight away, so a call fails fast with
///   [`Error::Unavailable`](crate::Error::Unavailable) as it would against a refused port.
///   The port stays bound throughout: healing needs no rebind, and no other process can take
///   the port meanwhile.
/// - **[`blackhole`](FaultProxy::blackhole) is silence.** Open connections stay open and new
///   ones are accepted, but nothing is forwarded either way: a dropped route or a peer that
///   stopped answering. Calls hang until their deadline ([`Error::Timeout`](crate::Error::Timeout))
///   or until the client's keep-alive gives up on the connection. Nothing is lost: the proxy
///   stops reading (so the sender's socket buffers fill, as behind a real outage) and delivers
///   what it holds, in order, on heal, as TCP retransmission would after a short outage.
/// - **[`hold_answers`](FaultProxy::hold_answers) loses the way back.** Requests reach the
///   member, which does the work, but its answers are held (and delivered on heal): a write
///   is applied and the client never hears of it, as when a connection breaks after the
///   request went out.
/// - **[`set_latency`](FaultProxy::set_latency) delays every chunk**, in each direction, by at
///   least the latency, counted from when the proxy read the chunk. Chunks are never
///   reordered, and a later chunk does not wait for an earlier one's delay on top of its own.
/// - **Faults take effect on open connections at once**, not only on new ones.
/// - **Dropping the proxy** closes its port and resets every connection through it.
///
/// [`EtcdCluster::proxies`](super::EtcdCluster::proxies) starts one per member and hands the
/// client config that goes through them.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use coord::testing::{EtcdServer, FaultProxy};
///
/// let server = EtcdServer::start().await?;
/// let proxy = FaultProxy::start(&server.endpoint()).await?;
/// let coord = coord::Coord::connect(server.client_config().with_endpoints(vec![proxy.endpoint()])).await?;
///
/// proxy.partition();
/// assert!(coord.store().get("/k").await.is_err());
/// proxy.heal();
/// # tokio::time::sleep(std::time::Duration::from_millis(200)).await;
/// # let mut tries = 0;
/// # while coord.store().get("/k").await.is_err() && tries < 50 { tries += 1; tokio::time::sleep(std::time::Duration::from_millis(100)).await; }
/// coord.store().get("/k").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    scheme: &'static str,
    faults: watch::Sender<Faults>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a healed proxy on a free `127.0.0.1` port in front of `upstream`, a client URL
    /// such as [`EtcdCluster::endpoint`](super::EtcdCluster::endpoint) returns
    /// (`http://127.0.0.1:2379`; `https://` is passed through untouched, TLS and all: the
    /// test certificates name `127.0.0.1`, which the proxy's address is too).
    ///
    /// # Errors
    ///
    /// [`HarnessError::InvalidArgument`] if `upstream` is not `http(s)://ip:port`;
    /// [`HarnessError::Io`] if no port can be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: nothing runs until it returns the proxy.
    pub async fn start(upstream: &str) -> Result<Self, HarnessError> {
        let (scheme, address) = if let Some(rest) = upstream.strip_prefix("https://") {
            ("https", rest)
        } else if let Some(rest) = upstream.strip_prefix("http://") {
            ("http", rest)
        } else {
            ("http", upstream)
        };
        let upstream_addr: SocketAddr = address.trim_end_matches('/').parse().map_err(|_| {
            HarnessError::invalid_argument(
                "upstream",
                format!("`{upstream}` is not an `http://ip:port` endpoint"),
            )
        })?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(HarnessError::io("cannot bind a proxy port"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("cannot read the proxy's port"))?;
        let (faults, receiver) = watch::channel(Faults {
            mode: Mode::Open,
            latency: Duration::ZERO,
            cuts: 0,
        });
        let accept = tokio::spawn(accept_loop(listener, upstream_addr, receiver));
        Ok(FaultProxy {
            addr,
            upstream: upstream_addr,
            scheme,
            faults,
            accept,
        })
    }

    /// The proxy's address on `127.0.0.1`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as a client URL, with the upstream's scheme: give it to `ClientConfig`.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The address of the member behind the proxy.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Cuts the client off: resets every open connection, and resets new ones as soon as they
    /// are accepted, until [`heal`](Self::heal).
    pub fn partition(&self) {
        self.faults.send_modify(|f| {
            f.mode = Mode::Partitioned;
            f.cuts += 1;
        });
    }

    /// Silences the proxy: connections, open and new, stay up but carry nothing either way
    /// until [`heal`](Self::heal), which delivers what was held. A partitioned proxy stays
    /// partitioned.
    pub fn blackhole(&self) {
        self.faults.send_modify(|f| {
            if f.mode == Mode::Open {
                f.mode = Mode::Blackholed;
            }
        });
    }

    /// Passes requests on to the member but holds its answers until [`heal`](Self::heal), on
    /// open connections and new ones: the member applies a write whose answer the client
    /// never gets (the client's deadline passes first). A partitioned or blackholed proxy
    /// stays as it is.
    pub fn hold_answers(&self) {
        self.faults.send_modify(|f| {
            if f.mode == Mode::Open {
                f.mode = Mode::AnswersHeld;
            }
        });
    }

    /// Delays every chunk in each direction by `latency` from now on, on open connections
    /// too. `Duration::ZERO` removes the delay.
    pub fn set_latency(&self, latency: Duration) {
        self.faults.send_modify(|f| f.latency = latency);
    }

    /// Clears every fault: no partition, no blackhole, no held answers, no latency. Held bytes
    /// are delivered;
    /// connections reset by a partition stay reset (the client reconnects).
    pub fn heal(&self) {
        self.faults.send_modify(|f| {
            f.mode = Mode::Open;
            f.latency = Duration::ZERO;
        });
    }

    /// True if no fault is on.
    pub fn is_healed(&self) -> bool {
        let faults = self.faults.borrow();
        faults.mode == Mode::Open && faults.latency.is_zero()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // The links hold no handle of the proxy: a last cut tells them to reset and end.
        self.faults.send_modify(|f| {
            f.mode = Mode::Partitioned;
            f.cuts += 1;
        });
    }
}

/// One [`FaultProxy`] in front of each member of a cluster, and the client config that goes
/// through them; from [`EtcdCluster::proxies`](super::EtcdCluster::proxies). `proxies[i]` is
/// the proxy of member `i`.
#[derive(Debug)]
pub struct Proxies {
    proxies: Vec<FaultProxy>,
    config: ClientConfig,
}

impl Proxies {
    pub(super) fn new(proxies: Vec<FaultProxy>, config: ClientConfig) -> Self {
        Proxies { proxies, config }
    }

    /// The cluster's [`client_config`](super::EtcdCluster::client_config) with the proxies as
    /// endpoints: a `Coord` connected with it reaches etcd only through them.
    pub fn client_config(&self) -> ClientConfig {
        self.config.clone()
    }

    /// The number of proxies (one per member).
    pub fn len(&self) -> usize {
        self.proxies.len()
    }

    /// True if there are none (never, for a cluster's proxies).
    pub fn is_empty(&self) -> bool {
        self.proxies.is_empty()
    }

    /// The proxies, in member order.
    pub fn iter(&self) -> std::slice::Iter<'_, FaultProxy> {
        self.proxies.iter()
    }

    /// [`partition`](FaultProxy::partition)s every proxy: the client is cut off from the
    /// whole cluster.
    pub fn partition(&self) {
        self.proxies.iter().for_each(FaultProxy::partition);
    }

    /// [`heal`](FaultProxy::heal)s every proxy.
    pub fn heal(&self) {
        self.proxies.iter().for_each(FaultProxy::heal);
    }
}

impl Index<usize> for Proxies {
    type Output = FaultProxy;

    fn index(&self, member: usize) -> &FaultProxy {
        &self.proxies[member]
    }
}

impl<'a> IntoIterator for &'a Proxies {
    type Item = &'a FaultProxy;
    type IntoIter = std::slice::Iter<'a, FaultProxy>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, faults: watch::Receiver<Faults>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(link(client, upstream, faults.clone()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "fault proxy cannot accept; retrying");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}

/// Carries one client connection to the upstream until either side ends it or a partition
/// cuts it.
async fn link(mut client: TcpStream, upstream: SocketAddr, faults: watch::Receiver<Faults>) {
    let cuts = {
        let now = faults.borrow();
        if now.mode == Mode::Partitioned {
            drop(now);
            reset(client);
            return;
        }
        now.cuts
    };
    let mut cut_watch = faults.clone();
    // Also resolves when the proxy is gone (the sender dropped): that is a cut too.
    let cut = async move {
        let _ = cut_watch.wait_for(|f| f.cuts != cuts).await.map(|_| ());
    };
    tokio::pin!(cut);
    // Latency is the one thing that favours no delay here: etcd's gRPC frames are small.
    let _ = client.set_nodelay(true);
    let mut server = tokio::select! {
        connected = TcpStream::connect(upstream) => match connected {
            Ok(server) => server,
            // The member is down: the client sees what it would see connecting to it.
            Err(_) => {
                reset(client);
                return;
            }
        },
        () = &mut cut => {
            reset(client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let was_cut = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let both_ways = async {
            tokio::join!(
                pump(
                    client_read,
                    server_write,
                    faults.clone(),
                    Direction::Requests
                ),
                pump(
                    server_read,
                    client_write,
                    faults.clone(),
                    Direction::Answers
                ),
            )
        };
        tokio::select! {
            _ = both_ways => false,
            () = &mut cut => true,
        }
    };
    if was_cut {
        reset(client);
        reset(server);
    }
}

/// Copies `from` to `to` chunk by chunk, holding chunks while the proxy does not carry
/// `direction` and delaying each by the latency; half-closes `to` once `from` ends and
/// everything is written.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    mut faults: watch::Receiver<Faults>,
    direction: Direction,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (chunks, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0; CHUNK_BYTES];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if chunks
                        .send((Instant::now(), buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((read_at, chunk)) = queued.recv().await {
            let latency = match faults.wait_for(|f| f.mode.carries(direction)).await {
                Ok(open) => open.latency,
                Err(_) => return,
            };
            tokio::time::sleep_until(read_at + latency).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// Closes `stream` with a RST instead of a FIN: the peer's next read or write fails at once
/// rather than seeing a clean end of stream.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut back = vec![0; message.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn a_healed_proxy_carries_bytes_both_ways() {
        let proxy = FaultProxy::start(&format!("http://{}", echo_server().await))
            .await
            .unwrap();
        assert!(proxy.endpoint().starts_with("http://127.0.0.1:"));
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"hello").await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn partition_resets_open_connections_and_new_ones_until_healed() {
        let proxy = FaultProxy::start(&echo_server().await.to_string())
            .await
            .unwrap();
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut open, b"before").await.unwrap();

        proxy.partition();
        assert!(
            round_trip(&mut open, b"during").await.is_err(),
            "an open connection is cut"
        );
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            round_trip(&mut fresh, b"during").await.is_err(),
            "a new connection is reset"
        );

        proxy.heal();
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut after, b"after").await.unwrap(), b"after");
    }

    #[tokio::test]
    async fn blackhole_holds_bytes_and_heal_delivers_them_in_order() {
        let proxy = FaultProxy::start(&echo_server().await.to_string())
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut stream, b"warm").await.unwrap();

        proxy.blackhole();
        stream.write_all(b"held").await.unwrap();
        let mut back = [0; 4];
        let silent =
            tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut back)).await;
        assert!(silent.is_err(), "nothing comes back while blackholed");

        proxy.heal();
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"held");
    }

    #[tokio::test]
    async fn held_answers_let_requests_through_and_heal_delivers_the_answers() {
        // An upstream that counts what it received, and answers it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        let (got, mut received) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let got = got.clone();
                tokio::spawn(async move {
                    let mut buf = [0; 64];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || got.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                        if socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = FaultProxy::start(&upstream.to_string()).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut stream, b"warm").await.unwrap();
        assert_eq!(received.recv().await.unwrap(), b"warm");

        proxy.hold_answers();
        stream.write_all(b"sent").await.unwrap();
        assert_eq!(
            received.recv().await.unwrap(),
            b"sent",
            "the request got through"
        );
        let mut back = [0; 4];
        let silent =
            tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut back)).await;
        assert!(silent.is_err(), "its answer is held");

        proxy.heal();
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"sent");
    }

    #[tokio::test]
    async fn latency_delays_each_direction_by_at_least_the_setting() {
        let proxy = FaultProxy::start(&echo_server().await.to_string())
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut stream, b"warm").await.unwrap();

        let latency = Duration::from_millis(150);
        proxy.set_latency(latency);
        let started = std::time::Instant::now();
        round_trip(&mut stream, b"slow").await.unwrap();
        // Once on the way there, once on the way back.
        assert!(started.elapsed() >= 2 * latency, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_dead_upstream_resets_the_client() {
        let gone = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap()
        };
        let proxy = FaultProxy::start(&gone.to_string()).await.unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut stream, b"anyone?").await.is_err());
    }

    #[tokio::test]
    async fn dropping_the_proxy_resets_its_connections() {
        let proxy = FaultProxy::start(&echo_server().await.to_string())
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut stream, b"warm").await.unwrap();
        drop(proxy);
        assert!(round_trip(&mut stream, b"gone").await.is_err());
    }

    #[tokio::test]
    async fn an_upstream_that_is_no_endpoint_is_an_invalid_argument() {
        let err = FaultProxy::start("etcd.example:2379").await.unwrap_err();
        assert!(
            matches!(&err, HarnessError::InvalidArgument { field, .. } if field == "upstream"),
            "{err:?}"
        );
    }
}
