//! The DNS frontend: UDP and TCP on one address, answering from the engine's snapshot.
//!
//! The transport loops are our own rather than a library's, so every packet reaches
//! [`respond`](crate::respond()) (a malformed one gets FORMERR instead of silence) and
//! every bound is ours: queries in flight, TCP connections, idle and I/O timeouts, and
//! response rate limiting.

#[cfg(target_os = "linux")]
mod batch;
mod rrl;
mod stats;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use rrl::RrlLimits;
pub use stats::{DnsStats, DnsStatsSnapshot};

use crate::engine::Engine;
use crate::respond::{Transport, respond, slip};
use rrl::{Rrl, Verdict};

/// How many fresh ports to try when port 0 gives a UDP port whose TCP twin is taken.
const BIND_ATTEMPTS: usize = 16;
/// Largest UDP datagram read; anything longer is cut and then fails to parse.
const UDP_RECV_BUFFER: usize = 4096;
/// A TCP client must deliver a whole query, and take a whole response, within this.
const TCP_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a blocked UDP thread looks at the cancellation token.
const UDP_CANCEL_POLL: Duration = Duration::from_millis(100);
/// UDP receive loops sharing the socket.
const MAX_UDP_WORKERS: usize = 4;

/// Resource bounds of the DNS frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsLimits {
    /// A TCP connection that sends no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Queries being answered at once, UDP and TCP together. Queries over the cap are
    /// dropped unanswered and counted: a UDP client retries, and answering even SERVFAIL
    /// would cost the work being shed.
    pub max_in_flight: usize,
    /// Open TCP connections at once; a connection over the cap is closed at once.
    pub max_tcp_connections: usize,
    /// Response rate limiting for UDP.
    pub rrl: RrlLimits,
}

impl Default for DnsLimits {
    fn default() -> Self {
        Self {
            tcp_idle_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
            max_tcp_connections: 256,
            rrl: RrlLimits::default(),
        }
    }
}

/// A running DNS server: UDP and TCP on the same address.
pub struct DnsServer {
    local_addr: SocketAddr,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    stats: Arc<DnsStats>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// What every loop shares.
struct Shared {
    engine: Arc<Engine>,
    in_flight: Arc<Semaphore>,
    stats: Arc<DnsStats>,
    rrl: Option<Rrl>,
    limits: DnsLimits,
    cancel: CancellationToken,
}

impl DnsServer {
    /// Binds UDP and then TCP on the UDP socket's port (so port 0 yields one port for
    /// both) and starts answering from `engine`.
    pub async fn bind(
        addr: SocketAddr,
        engine: Arc<Engine>,
        limits: DnsLimits,
    ) -> io::Result<DnsServer> {
        if limits.max_in_flight == 0 || limits.max_tcp_connections == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max_in_flight and max_tcp_connections must be at least 1",
            ));
        }
        let (udp, tcp) = bind_pair(addr).await?;
        let local_addr = udp.local_addr()?;
        let max_in_flight = limits.max_in_flight.min(Semaphore::MAX_PERMITS) as u32;
        let in_flight = Arc::new(Semaphore::new(max_in_flight as usize));
        let stats = Arc::new(DnsStats::default());
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            engine,
            in_flight: Arc::clone(&in_flight),
            stats: Arc::clone(&stats),
            rrl: Rrl::new(limits.rrl),
            limits,
            cancel: cancel.clone(),
        });
        let tasks = TaskTracker::new();
        // UDP is served by blocking threads: a plain recvfrom/sendto loop costs far less
        // per packet than async readiness wake-ups, and the work per packet is a few
        // microseconds of CPU with no await point anyway.
        let udp = udp.into_std()?;
        udp.set_nonblocking(false)?;
        udp.set_read_timeout(Some(UDP_CANCEL_POLL))?;
        #[cfg(target_os = "linux")]
        if let Err(error) = batch::disable_pmtu_discovery(&udp, local_addr.is_ipv6()) {
            tracing::warn!(%error, "could not turn off path-MTU discovery on the udp socket");
        }
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_UDP_WORKERS);
        for _ in 0..workers {
            let socket = udp.try_clone()?;
            let shared = Arc::clone(&shared);
            tasks.spawn_blocking(move || udp_loop(socket, shared));
        }
        tasks.spawn(tcp_accept_loop(tcp, shared, tasks.clone()));
        tracing::info!(%local_addr, "dns listening on udp and tcp");
        Ok(DnsServer {
            local_addr,
            in_flight,
            max_in_flight,
            stats,
            cancel,
            tasks,
        })
    }

    /// The bound address (the real port when bound to port 0), UDP and TCP alike.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Queries dropped because `max_in_flight` were already being answered.
    pub fn dropped_queries(&self) -> u64 {
        self.stats.in_flight_dropped.load(Ordering::Relaxed)
    }

    /// The frontend's counters.
    pub fn stats(&self) -> Arc<DnsStats> {
        Arc::clone(&self.stats)
    }

    /// Queries being answered right now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight as usize - self.in_flight.available_permits()
    }

    /// Takes every in-flight slot until the returned permit drops, as a burst of slow
    /// queries would. Lets tests observe load shedding through real sockets.
    #[doc(hidden)]
    pub fn occupy_all_slots(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.in_flight)
            .try_acquire_many_owned(self.max_in_flight)
            .ok()
    }

    /// Stops accepting queries, closes every connection and waits for the loops to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for DnsServer {
    /// A server dropped without [`DnsServer::shutdown`] (a panicking test, an early return)
    /// still stops its UDP threads; otherwise the runtime would wait for them forever.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let attempts = if addr.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both udp and tcp")))
}

impl Shared {
    /// Answers one packet into `out`; false when nothing is to be sent.
    fn answer(
        &self,
        packet: &[u8],
        peer: SocketAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        let counter = match transport {
            Transport::Udp => &self.stats.udp_queries,
            Transport::Tcp => &self.stats.tcp_queries,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let Ok(_permit) = self.in_flight.try_acquire() else {
            self.stats.in_flight_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let snapshot = self.engine.current();
        let Some(outcome) = respond(&self.engine, &snapshot, packet, peer.ip(), transport, out)
        else {
            self.stats.ignored.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if transport == Transport::Udp
            && let Some(rrl) = &self.rrl
        {
            match rrl.check(peer.ip()) {
                Verdict::Send => {}
                Verdict::Slip => {
                    self.stats.rrl_slipped.fetch_add(1, Ordering::Relaxed);
                    slip(out);
                    return true;
                }
                Verdict::Drop => {
                    self.stats.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
        }
        self.stats.count(&outcome);
        true
    }
}

#[cfg(target_os = "linux")]
fn udp_loop(socket: std::net::UdpSocket, shared: Arc<Shared>) {
    let mut batch = batch::Batch::new(
        UDP_RECV_BUFFER,
        usize::from(crate::respond::MAX_UDP_PAYLOAD),
    );
    // The cancellation token is checked once per batch (or read timeout), not per packet.
    while !shared.cancel.is_cancelled() {
        let n = match batch.receive(&socket) {
            Ok(n) => n,
            // The read timeout, a signal, or an ICMP error from an earlier send: go on.
            Err(error) => {
                if !matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    tracing::debug!(%error, "udp receive failed");
                }
                continue;
            }
        };
        for i in 0..n {
            let mut out = std::mem::take(&mut batch.out[i]);
            out.clear();
            if let Some((packet, peer)) = batch.packet(i)
                && !shared.answer(packet, peer, Transport::Udp, &mut out)
            {
                out.clear();
            }
            batch.out[i] = out;
        }
        batch.send(&socket, n);
    }
}

#[cfg(not(target_os = "linux"))]
fn udp_loop(socket: std::net::UdpSocket, shared: Arc<Shared>) {
    let mut packet = vec![0u8; UDP_RECV_BUFFER];
    let mut out = Vec::with_capacity(usize::from(crate::respond::MAX_UDP_PAYLOAD));
    while !shared.cancel.is_cancelled() {
        let (len, peer) = match socket.recv_from(&mut packet) {
            Ok(r) => r,
            // The read timeout: look at the cancellation token again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            // ICMP errors from earlier sends surface here on some systems; keep serving.
            Err(error) => {
                tracing::debug!(%error, "udp receive failed");
                continue;
            }
        };
        if shared.answer(&packet[..len], peer, Transport::Udp, &mut out)
            && let Err(error) = socket.send_to(&out, peer)
        {
            tracing::debug!(%error, %peer, "udp send failed");
        }
    }
}

async fn tcp_accept_loop(listener: TcpListener, shared: Arc<Shared>, tasks: TaskTracker) {
    let connections = Arc::new(Semaphore::new(shared.limits.max_tcp_connections));
    loop {
        let accepted = tokio::select! {
            () = shared.cancel.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            shared.stats.tcp_rejected.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = shared.cancel.cancelled() => {}
                () = tcp_connection(stream, peer, &shared) => {}
            }
        });
    }
}

/// Serves one TCP connection: queries are answered in order until the client closes,
/// stays idle too long, or breaks the framing.
async fn tcp_connection(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let mut packet = Vec::new();
    let mut out = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(shared.limits.tcp_idle_timeout, stream.read_exact(&mut len))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                shared.stats.tcp_idle_closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        packet.resize(usize::from(u16::from_be_bytes(len)), 0);
        match tokio::time::timeout(TCP_IO_TIMEOUT, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if !shared.answer(&packet, peer, Transport::Tcp, &mut out) {
            continue;
        }
        let frame = (out.len() as u16).to_be_bytes();
        let write = async {
            stream.write_all(&frame).await?;
            stream.write_all(&out).await
        };
        match tokio::time::timeout(TCP_IO_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
