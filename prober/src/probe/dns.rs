//! DNS probe: one query over UDP to `ip:port`, checking the response code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

/// Largest response read; a probe needs the header, not the records.
const MAX_RESPONSE: usize = 4096;

/// Queries one server.
#[derive(Debug)]
pub(super) struct DnsProbe {
    server: SocketAddr,
    name: Name,
    rtype: RecordType,
    expect: ResponseCode,
}

impl DnsProbe {
    /// Params: `name` (default `.`), `type` (default `SOA`), `expect_rcode` (default
    /// `NOERROR`; e.g. `NXDOMAIN`).
    pub(super) fn new(address: &str, params: &HashMap<String, String>) -> Result<Self, String> {
        let server = address
            .parse()
            .map_err(|_| format!("invalid address {address:?}, expected ip:port"))?;
        let param = |k: &str, d: &str| params.get(k).map_or(d.to_owned(), Clone::clone);
        let name_text = param("name", ".");
        let name = Name::from_ascii(&name_text).map_err(|e| format!("name {name_text:?}: {e}"))?;
        let type_text = param("type", "SOA").to_ascii_uppercase();
        let rtype =
            RecordType::from_str(&type_text).map_err(|_| format!("type {type_text:?}: unknown"))?;
        let expect = match param("expect_rcode", "NOERROR")
            .to_ascii_uppercase()
            .as_str()
        {
            "NOERROR" => ResponseCode::NoError,
            "NXDOMAIN" => ResponseCode::NXDomain,
            "REFUSED" => ResponseCode::Refused,
            "SERVFAIL" => ResponseCode::ServFail,
            other => {
                return Err(format!(
                    "expect_rcode {other:?}: use NOERROR, NXDOMAIN, REFUSED or SERVFAIL"
                ));
            }
        };
        Ok(Self {
            server,
            name,
            rtype,
            expect,
        })
    }

    /// Sends one query and waits for its response; the caller bounds the wait.
    pub(super) async fn run(&self) -> Result<Duration, String> {
        let bind: SocketAddr = if self.server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
        socket
            .connect(self.server)
            .await
            .map_err(|e| e.to_string())?;
        let id: u16 = rand::random();
        let mut query = Message::new(id, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(self.name.clone(), self.rtype));
        let wire = query.to_vec().map_err(|e| format!("encode query: {e}"))?;
        let start = Instant::now();
        socket.send(&wire).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; MAX_RESPONSE];
        loop {
            let n = socket.recv(&mut buf).await.map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "port unreachable".to_owned(),
                _ => e.to_string(),
            })?;
            let Ok(response) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if response.metadata.id != id {
                continue;
            }
            let rtt = start.elapsed();
            let code = response.metadata.response_code;
            return if code == self.expect {
                Ok(rtt)
            } else {
                Err(format!("rcode {code}, expected {}", self.expect))
            };
        }
    }
}
