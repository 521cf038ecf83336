//! Isobar's UDP echo protocol and the responder that ships with the prober.
//!
//! A probe is one datagram: `ISOB`, version 1, three zero bytes, the sender's sequence number
//! (u64, big endian), the sender's send time (u64 nanoseconds on its own monotonic clock) and
//! room for the responder's receive time (u64 Unix nanoseconds). The responder writes its
//! receive time and sends the datagram back unchanged otherwise, so the prober gets an exact
//! RTT and a per-packet sequence for loss and reordering, and the responder stays stateless.
//! Replies are never larger than requests, so the responder cannot amplify traffic.

use std::io;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Size of an echo datagram.
pub const PACKET_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"ISOB";
const VERSION: u8 = 1;

/// A decoded echo datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoPacket {
    /// The prober's sequence number.
    pub seq: u64,
    /// The prober's send time, nanoseconds on its monotonic clock.
    pub sent_ns: u64,
    /// The responder's receive time, Unix nanoseconds; 0 in a request.
    pub responder_unix_ns: u64,
}

impl EchoPacket {
    /// Encodes the datagram.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut b = [0u8; PACKET_LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[8..16].copy_from_slice(&self.seq.to_be_bytes());
        b[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
        b[24..32].copy_from_slice(&self.responder_unix_ns.to_be_bytes());
        b
    }

    /// Decodes a datagram; `None` for anything that is not an echo datagram.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != PACKET_LEN || &b[..4] != MAGIC || b[4] != VERSION {
            return None;
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(w)
        };
        Some(Self {
            seq: word(8),
            sent_ns: word(16),
            responder_unix_ns: word(24),
        })
    }
}

/// A bound echo responder.
#[derive(Debug)]
pub struct Responder {
    socket: UdpSocket,
}

impl Responder {
    /// Binds the responder's UDP socket.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            socket: UdpSocket::bind(addr).await?,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answers echo datagrams until `shutdown`; anything else is ignored.
    pub async fn run(self, shutdown: CancellationToken) {
        // One byte more than a valid packet, so oversized datagrams are recognised and dropped.
        let mut buf = [0u8; PACKET_LEN + 1];
        loop {
            let (n, peer) = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                res = self.socket.recv_from(&mut buf) => match res {
                    Ok(v) => v,
                    Err(e) => {
                        // ICMP errors from earlier replies surface here on some systems.
                        tracing::debug!(error = %e, "echo responder receive failed");
                        continue;
                    }
                },
            };
            let Some(mut packet) = EchoPacket::decode(&buf[..n]) else {
                continue;
            };
            packet.responder_unix_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            if let Err(e) = self.socket.send_to(&packet.encode(), peer).await {
                tracing::debug!(error = %e, %peer, "echo responder send failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let p = EchoPacket {
            seq: 7,
            sent_ns: 11,
            responder_unix_ns: 0,
        };
        assert_eq!(EchoPacket::decode(&p.encode()), Some(p));
        assert_eq!(EchoPacket::decode(b"ISOB"), None);
        let mut bad = p.encode();
        bad[4] = 2;
        assert_eq!(EchoPacket::decode(&bad), None);
    }
}
