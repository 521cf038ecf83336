//! TCP connect probe: the round-trip time of a three-way handshake to `host:port`.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Where to connect. A literal socket address skips name resolution; a name is resolved on
/// every probe so DNS changes are followed, and resolution time is kept out of the RTT.
#[derive(Debug)]
pub(super) enum TcpProbe {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

impl TcpProbe {
    /// Parses `host:port`, `v4:port` or `[v6]:port`.
    pub(super) fn new(address: &str) -> Result<Self, String> {
        if let Ok(addr) = address.parse::<SocketAddr>() {
            return Ok(Self::Addr(addr));
        }
        let invalid = || format!("invalid address {address:?}, expected host:port");
        let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
        let port = port.parse::<u16>().map_err(|_| invalid())?;
        // A bare IPv6 literal without brackets is ambiguous about where the port starts.
        if host.is_empty() || host.contains(':') {
            return Err(invalid());
        }
        Ok(Self::Name {
            host: host.to_owned(),
            port,
        })
    }

    /// Connects once and closes the connection; the caller bounds the whole call with the
    /// target's timeout.
    pub(super) async fn run(&self) -> Result<Duration, String> {
        let addr = match self {
            Self::Addr(addr) => *addr,
            Self::Name { host, port } => tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| format!("resolve {host}: {e}"))?
                .next()
                .ok_or_else(|| format!("resolve {host}: no addresses"))?,
        };
        let start = Instant::now();
        let stream = TcpStream::connect(addr).await.map_err(describe)?;
        let rtt = start.elapsed();
        drop(stream);
        Ok(rtt)
    }
}

/// Short, stable error strings: the scheduler and dashboards group failures by them.
fn describe(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut => "timeout".to_owned(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert!(matches!(
            TcpProbe::new("127.0.0.1:80"),
            Ok(TcpProbe::Addr(_))
        ));
        assert!(matches!(TcpProbe::new("[::1]:80"), Ok(TcpProbe::Addr(_))));
        assert!(matches!(
            TcpProbe::new("localhost:8080"),
            Ok(TcpProbe::Name { ref host, port: 8080 }) if host == "localhost"
        ));
        for bad in ["localhost", "::1:80", ":80", "host:99999", "host:"] {
            assert!(TcpProbe::new(bad).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn resolves_names() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = TcpProbe::new(&format!("localhost:{port}")).unwrap();
        // localhost may resolve to ::1 first on some hosts; only the v4 listener exists.
        match probe.run().await {
            Ok(rtt) => assert!(rtt < Duration::from_secs(1)),
            Err(e) => assert_eq!(e, "connection refused"),
        }
    }
}
