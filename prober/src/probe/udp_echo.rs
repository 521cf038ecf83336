//! UDP echo probe: one datagram to an Isobar echo responder, RTT from its return.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::echo::{EchoPacket, PACKET_LEN};

/// Probes one responder.
#[derive(Debug)]
pub(super) struct UdpEchoProbe {
    target: SocketAddr,
    seq: AtomicU64,
}

impl UdpEchoProbe {
    /// Parses the responder's `ip:port`.
    pub(super) fn new(address: &str) -> Result<Self, String> {
        let target = address
            .parse()
            .map_err(|_| format!("invalid address {address:?}, expected ip:port"))?;
        Ok(Self {
            target,
            seq: AtomicU64::new(0),
        })
    }

    /// Sends one datagram and waits for its echo; the caller bounds the wait. A fresh socket
    /// per probe means a late echo of an earlier probe can never be taken for this one.
    pub(super) async fn run(&self) -> Result<Duration, String> {
        let bind: SocketAddr = if self.target.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|_| "bind address".to_owned())?;
        let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
        socket
            .connect(self.target)
            .await
            .map_err(|e| e.to_string())?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let start = Instant::now();
        let packet = EchoPacket {
            seq,
            sent_ns: monotonic_ns(start),
            responder_unix_ns: 0,
        };
        socket
            .send(&packet.encode())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; PACKET_LEN + 1];
        loop {
            let n = socket.recv(&mut buf).await.map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "port unreachable".to_owned(),
                _ => e.to_string(),
            })?;
            match EchoPacket::decode(&buf[..n]) {
                Some(reply) if reply.seq == seq && reply.sent_ns == packet.sent_ns => {
                    return Ok(start.elapsed());
                }
                _ => continue,
            }
        }
    }
}

/// Nanoseconds since the first probe of this process, on the monotonic clock.
fn monotonic_ns(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::echo::Responder;

    #[tokio::test]
    async fn measures_a_responder_and_times_out_without_one() {
        let responder = Responder::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = responder.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(responder.run(stop.clone()));
        let probe = UdpEchoProbe::new(&addr.to_string()).unwrap();
        for _ in 0..3 {
            let rtt = probe.run().await.expect("echo");
            assert!(rtt < Duration::from_millis(100), "{rtt:?}");
        }
        stop.cancel();
        task.await.unwrap();
        // Nothing listens now: refused (ICMP port unreachable) or silence.
        let outcome = tokio::time::timeout(Duration::from_millis(200), probe.run()).await;
        assert!(!matches!(outcome, Ok(Ok(_))), "{outcome:?}");
    }
}
