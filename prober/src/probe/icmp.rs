//! ICMP echo probe: an unprivileged datagram ICMP socket where the kernel allows it
//! (`net.ipv4.ping_group_range`), a raw socket otherwise (needs CAP_NET_RAW).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Payload carried in every echo request, so replies to other processes' pings are ignored.
const PAYLOAD: &[u8; 8] = b"isobar01";

/// Probes one address.
#[derive(Debug)]
pub(super) struct IcmpProbe {
    target: IpAddr,
    ident: u16,
    seq: AtomicU16,
}

/// Which kind of ICMP socket was opened; raw sockets see the IPv4 header and every reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Datagram,
    Raw,
}

impl IcmpProbe {
    /// Accepts an address, or `address:port` (the port is ignored).
    pub(super) fn new(address: &str) -> Result<Self, String> {
        let target = address
            .parse::<IpAddr>()
            .or_else(|_| address.parse::<SocketAddr>().map(|s| s.ip()))
            .map_err(|_| format!("invalid address {address:?}, expected an IP address"))?;
        // Distinguishes this probe's replies on raw sockets, which receive every reply.
        let ident = (std::process::id() as u16) ^ (rand::random::<u16>());
        Ok(Self {
            target,
            ident,
            seq: AtomicU16::new(0),
        })
    }

    /// Sends one echo request and waits for the matching reply; the caller bounds the wait.
    pub(super) async fn run(&self) -> Result<Duration, String> {
        let (socket, flavor) = open(self.target).map_err(|e| format!("icmp socket: {e}"))?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let v6 = self.target.is_ipv6();
        let request = echo_request(v6, self.ident, seq);
        let dest = SocketAddr::new(self.target, 0);
        let start = Instant::now();
        socket
            .send_to(&request, dest)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = socket
                .recv_from(&mut buf)
                .await
                .map_err(|e| e.to_string())?;
            if from.ip() != self.target {
                continue;
            }
            let mut icmp = &buf[..n];
            if flavor == Flavor::Raw && !v6 {
                let ihl = usize::from(icmp.first().copied().unwrap_or(0) & 0x0f) * 4;
                icmp = icmp.get(ihl..).unwrap_or_default();
            }
            if matches_reply(icmp, v6, flavor, self.ident, seq) {
                return Ok(start.elapsed());
            }
        }
    }
}

fn open(target: IpAddr) -> io::Result<(UdpSocket, Flavor)> {
    let (domain, protocol) = match target {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let (socket, flavor) = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(s) => (s, Flavor::Datagram),
        Err(e)
            if matches!(e.kind(), io::ErrorKind::PermissionDenied)
                || e.raw_os_error() == Some(13)
                || e.raw_os_error() == Some(1) =>
        {
            (Socket::new(domain, Type::RAW, Some(protocol))?, Flavor::Raw)
        }
        Err(e) => return Err(e),
    };
    socket.set_nonblocking(true)?;
    // Tokio's UdpSocket only needs a datagram-style fd; ICMP sockets are that.
    Ok((UdpSocket::from_std(socket.into())?, flavor))
}

fn echo_request(v6: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + PAYLOAD.len());
    p.push(if v6 { 128 } else { 8 });
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    if !v6 {
        // ICMPv6 checksums cover a pseudo-header; the kernel fills them in.
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

fn matches_reply(icmp: &[u8], v6: bool, flavor: Flavor, ident: u16, seq: u16) -> bool {
    if icmp.len() < 8 + PAYLOAD.len() {
        return false;
    }
    let reply_type = if v6 { 129 } else { 0 };
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let got_seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    // Datagram sockets rewrite the identifier to the socket's and filter replies for us.
    icmp[0] == reply_type
        && (flavor == Flavor::Datagram || id == ident)
        && got_seq == seq
        && &icmp[8..8 + PAYLOAD.len()] == PAYLOAD
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_request_verifies() {
        let p = echo_request(false, 0x1234, 1);
        assert_eq!(
            checksum(&p),
            0,
            "a packet including its checksum sums to zero"
        );
        assert!(IcmpProbe::new("10.0.0.1:0").is_ok());
        assert!(IcmpProbe::new("::1").is_ok());
        assert!(IcmpProbe::new("host").is_err());
    }

    /// Needs either ping_group_range to include our group or CAP_NET_RAW; both absent is
    /// reported, not failed, because it is a property of the host, not of the code.
    #[tokio::test]
    async fn pings_loopback() {
        let probe = IcmpProbe::new("127.0.0.1").unwrap();
        match tokio::time::timeout(Duration::from_secs(2), probe.run()).await {
            Ok(Ok(rtt)) => assert!(rtt < Duration::from_millis(100), "{rtt:?}"),
            Ok(Err(e)) if e.starts_with("icmp socket") && std::env::var_os("CI").is_none() => {
                eprintln!("skipping: no ICMP socket allowed here: {e}");
            }
            other => panic!("ping 127.0.0.1: {other:?}"),
        }
    }
}
