//! The DNS frontend: UDP and TCP on one address, answering from the engine's snapshot.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_server::proto::rr::{DNSClass, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::{ClientKey, EcsSubnet, Engine, ServiceAnswer};
use crate::name::NameKey;
use crate::snapshot::ServingSnapshot;
use crate::zone::ZoneAnswer;

/// Largest UDP payload we send, whatever the client advertises: the DNS Flag Day 2020
/// value, which avoids IP fragmentation on practically every path.
const MAX_UDP_PAYLOAD: u16 = 1232;
/// Responses queued per TCP connection before hickory applies backpressure.
const TCP_RESPONSE_BUFFER: usize = 32;
/// How many fresh ports to try when port 0 gives a UDP port whose TCP twin is taken.
const BIND_ATTEMPTS: usize = 16;

/// Resource bounds of the DNS frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsLimits {
    /// A TCP connection that sends no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Queries being answered at once, UDP and TCP together. Queries over the cap are
    /// dropped unanswered and counted ([`DnsServer::dropped_queries`]): a UDP client
    /// retries, and answering even SERVFAIL would cost the work being shed.
    pub max_in_flight: usize,
}

impl Default for DnsLimits {
    fn default() -> Self {
        Self {
            tcp_idle_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
        }
    }
}

/// A running DNS server: UDP and TCP on the same address.
pub struct DnsServer {
    server: Server<Handler>,
    local_addr: SocketAddr,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    dropped: Arc<AtomicU64>,
}

impl DnsServer {
    /// Binds UDP and then TCP on the UDP socket's port (so port 0 yields one port for
    /// both) and starts answering from `engine`.
    pub async fn bind(
        addr: SocketAddr,
        engine: Arc<Engine>,
        limits: DnsLimits,
    ) -> io::Result<DnsServer> {
        if limits.max_in_flight == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max_in_flight must be at least 1",
            ));
        }
        let (udp, tcp) = bind_pair(addr).await?;
        let local_addr = udp.local_addr()?;
        let max_in_flight = limits.max_in_flight.min(Semaphore::MAX_PERMITS) as u32;
        let in_flight = Arc::new(Semaphore::new(max_in_flight as usize));
        let dropped = Arc::new(AtomicU64::new(0));
        // hickory spawns one task per UDP datagram with no cap of its own; the permit taken
        // first thing in the handler is what bounds the work, and a task without one ends
        // at once.
        let mut server = Server::new(Handler {
            engine,
            in_flight: Arc::clone(&in_flight),
            dropped: Arc::clone(&dropped),
        });
        server.register_socket(udp);
        server.register_listener(tcp, limits.tcp_idle_timeout, TCP_RESPONSE_BUFFER);
        tracing::info!(%local_addr, "dns listening on udp and tcp");
        Ok(DnsServer {
            server,
            local_addr,
            in_flight,
            max_in_flight,
            dropped,
        })
    }

    /// The bound address (the real port when bound to port 0), UDP and TCP alike.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Queries dropped because `max_in_flight` were already being answered.
    pub fn dropped_queries(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

    /// Stops accepting queries and waits for the listeners to finish.
    pub async fn shutdown(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::warn!(%error, "dns server stopped with an error");
        }
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

struct Handler {
    engine: Arc<Engine>,
    in_flight: Arc<Semaphore>,
    dropped: Arc<AtomicU64>,
}

/// What to send back, borrowing records from the snapshot wherever possible.
struct Reply<'a> {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<&'a Record>,
    authority: Vec<&'a Record>,
    additionals: Vec<&'a Record>,
    /// ECS SCOPE PREFIX-LENGTH; 0 when the answer does not depend on the client.
    scope: u8,
}

impl<'a> Reply<'a> {
    fn code(code: ResponseCode) -> Self {
        Self {
            code,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
            scope: 0,
        }
    }

    fn authoritative(answers: Vec<&'a Record>) -> Self {
        Self {
            authoritative: true,
            answers,
            ..Self::code(ResponseCode::NoError)
        }
    }

    fn negative(code: ResponseCode, soa: &'a [Record]) -> Self {
        Self {
            authoritative: true,
            authority: soa.iter().collect(),
            ..Self::code(code)
        }
    }
}

/// A request the handler cannot answer normally.
enum Refusal {
    Code(ResponseCode),
    /// RFC 6891 §6.1.3: unknown EDNS version.
    BadVersion,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let Ok(_permit) = self.in_flight.try_acquire() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return header_info(&request.metadata, ResponseCode::ServFail);
        };
        let snapshot = self.engine.current();
        let ecs = match check_request(request) {
            Ok(ecs) => ecs,
            Err(refusal) => return send_refusal(request, refusal, response_handle).await,
        };
        let client = ClientKey {
            source: request.src().ip(),
            subnet: ecs.map(|s| EcsSubnet {
                addr: s.addr(),
                source_prefix: s.source_prefix(),
            }),
        };
        // Kept alive here because the reply borrows records from them.
        let mut selected: Option<ServiceAnswer> = None;
        let mut synthesized: Vec<Record> = Vec::new();
        let reply = self.answer(request, &snapshot, client, &mut selected, &mut synthesized);
        send(request, reply, ecs, response_handle).await
    }
}

impl Handler {
    fn answer<'a>(
        &self,
        request: &Request,
        snapshot: &'a ServingSnapshot,
        client: ClientKey,
        selected: &'a mut Option<ServiceAnswer>,
        synthesized: &'a mut Vec<Record>,
    ) -> Reply<'a> {
        let Ok(info) = request.request_info() else {
            return Reply::code(ResponseCode::FormErr);
        };
        let query = info.query;
        if snapshot.version() == 0 {
            return Reply::code(ResponseCode::ServFail);
        }
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return Reply::code(ResponseCode::Refused);
        }
        let Some(key) = NameKey::new(query.name()) else {
            return Reply::code(ResponseCode::FormErr);
        };
        // No recursion and no cache: a name outside our zones is not ours to answer.
        let Some(zone) = snapshot.find_zone(&key) else {
            return Reply::code(ResponseCode::Refused);
        };
        // The original-case name: synthesized owners then match the question as sent.
        match zone.lookup(query.original().name(), &key, qtype) {
            ZoneAnswer::Rrset(records) => Reply::authoritative(records.iter().collect()),
            ZoneAnswer::All(node) => {
                Reply::authoritative(node.rrsets.iter().flat_map(|s| s.records.iter()).collect())
            }
            ZoneAnswer::Synthesized(records) => {
                *synthesized = records;
                Reply::authoritative(synthesized.iter().collect())
            }
            ZoneAnswer::NoData => Reply::negative(ResponseCode::NoError, zone.negative_soa()),
            ZoneAnswer::NxDomain => Reply::negative(ResponseCode::NXDomain, zone.negative_soa()),
            ZoneAnswer::Referral { ns, glue } => Reply {
                authority: ns.iter().collect(),
                additionals: glue,
                ..Reply::code(ResponseCode::NoError)
            },
            ZoneAnswer::Service { service, node } => {
                let service = snapshot.service_at(service);
                let chosen: &'a ServiceAnswer =
                    selected.insert(self.engine.select(snapshot, service, client));
                let answer = chosen.answer();
                let records: Vec<&Record> = match qtype {
                    RecordType::ANY => answer
                        .records(RecordType::A)
                        .iter()
                        .chain(answer.records(RecordType::AAAA))
                        .chain(node.rrsets.iter().flat_map(|s| s.records.iter()))
                        .collect(),
                    _ => answer.records(qtype).iter().collect(),
                };
                let mut reply = if records.is_empty() {
                    Reply::negative(ResponseCode::NoError, zone.negative_soa())
                } else {
                    Reply::authoritative(records)
                };
                reply.scope = chosen.scope_prefix();
                reply
            }
        }
    }
}

/// Checks what must hold before any lookup, returning the query's ECS option if valid.
fn check_request(request: &Request) -> Result<Option<ClientSubnet>, Refusal> {
    if request.metadata.op_code != OpCode::Query {
        return Err(Refusal::Code(ResponseCode::NotImp));
    }
    let Some(edns) = request.edns.as_ref() else {
        return Ok(None);
    };
    if edns.version() > 0 {
        return Err(Refusal::BadVersion);
    }
    let mut subnets = edns.options().get_all(EdnsCode::Subnet).into_iter();
    let Some(first) = subnets.next() else {
        return Ok(None);
    };
    // RFC 7871 §7.1.1/§6: at most one ECS option, no address bits beyond SOURCE
    // PREFIX-LENGTH. (Unknown families and over-long prefixes fail to decode earlier and
    // hickory answers FORMERR itself.)
    let EdnsOption::Subnet(subnet) = first else {
        return Err(Refusal::Code(ResponseCode::FormErr));
    };
    if subnets.next().is_some() || !is_truncated(subnet.addr(), subnet.source_prefix()) {
        return Err(Refusal::Code(ResponseCode::FormErr));
    }
    Ok(Some(*subnet))
}

fn is_truncated(addr: IpAddr, prefix: u8) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            prefix <= 32 && bits.checked_shl(u32::from(prefix)).unwrap_or(0) == 0
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            prefix <= 128 && bits.checked_shl(u32::from(prefix)).unwrap_or(0) == 0
        }
    }
}

/// The OPT record of a response to an EDNS query.
fn response_edns(request: &Request, ecs: Option<(ClientSubnet, u8)>) -> Option<Edns> {
    let req = request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    edns.set_version(0);
    if let Some((mut subnet, scope)) = ecs {
        // RFC 7871 §7.2.1: FAMILY, SOURCE PREFIX-LENGTH and ADDRESS are copied from the
        // query; SCOPE says how widely the answer may be reused.
        subnet.set_scope_prefix(scope);
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    Some(edns)
}

async fn send<R: ResponseHandler>(
    request: &Request,
    reply: Reply<'_>,
    ecs: Option<ClientSubnet>,
    mut response_handle: R,
) -> ResponseInfo {
    let edns = response_edns(request, ecs.map(|s| (s, reply.scope)));
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = &edns {
        builder.edns(edns);
    }
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = reply.authoritative;
    metadata.response_code = reply.code;
    let response = builder.build(
        metadata,
        reply.answers,
        reply.authority,
        std::iter::empty(),
        reply.additionals,
    );
    match response_handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, src = %request.src(), "cannot send dns response");
            header_info(&request.metadata, ResponseCode::ServFail)
        }
    }
}

async fn send_refusal<R: ResponseHandler>(
    request: &Request,
    refusal: Refusal,
    response_handle: R,
) -> ResponseInfo {
    let code = match refusal {
        Refusal::Code(code) => code,
        Refusal::BadVersion => ResponseCode::BADVERS,
    };
    send(request, Reply::code(code), None, response_handle).await
}

fn header_info(request: &Metadata, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = code;
    Header {
        metadata,
        counts: Default::default(),
    }
    .into()
}
