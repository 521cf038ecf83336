//! Answering one DNS packet: parse it, resolve it against the snapshot, write the response.
//!
//! This is the whole DNS query path, synchronous and free of I/O, so the transports, the
//! fuzzer and the tests all drive the same code. It allocates nothing: the response goes
//! into the caller's buffer, and every record is copied from its pre-encoded form.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;

use crate::dynamic::{self, MAX_ANSWER_COUNT};
use crate::engine::{ClientKey, EcsSubnet, Engine};
use crate::name::NameKey;
use crate::snapshot::ServingSnapshot;
use crate::wire::request::{self, Edns, HEADER_LEN, Malformed, Request};
use crate::wire::{Section, WireRecord, Writer};
use crate::zone::{Found, Node, Zone};

/// Largest UDP payload we send, whatever the client advertises: the DNS Flag Day 2020
/// value, which avoids IP fragmentation on practically every path.
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// UDP payload without EDNS (RFC 1035 §4.2.1).
const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// CNAMEs followed inside a zone before giving up (a loop stops earlier).
const MAX_CHAIN: usize = 12;
/// Additional-section RRsets gathered at most (glue and MX/NS/SRV targets).
const MAX_ADDITIONAL: usize = 24;

const QR: u8 = 0x80;
const AA: u8 = 0x04;
const TC: u8 = 0x02;
const RD: u8 = 0x01;

const NOERROR: u16 = 0;
const FORMERR: u16 = 1;
const SERVFAIL: u16 = 2;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;
const BADVERS: u16 = 16;

const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;

/// How a query arrived; decides the response size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 octets without EDNS, else the client's size capped at 1232.
    Udp,
    /// TCP: up to 65535 octets.
    Tcp,
}

/// What became of one query, for metrics and rate limiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The RCODE, extended by EDNS (BADVERS = 16).
    pub rcode: u16,
    /// Whether the response had TC set because the answer did not fit.
    pub truncated: bool,
}

/// Answers `packet`, received from `source` over `transport`, writing the response into
/// `out` (cleared first). `None` means nothing is to be sent: the packet is shorter than a
/// header or is itself a response.
pub fn respond(
    engine: &Engine,
    snapshot: &ServingSnapshot,
    packet: &[u8],
    source: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    let request = match request::parse(packet) {
        Ok(request) => request,
        Err(Malformed::Drop) => return None,
        Err(Malformed::FormErr { question_end }) => {
            return Some(formerr(packet, question_end, out));
        }
    };
    let limit = match transport {
        Transport::Udp => request.edns.map_or(CLASSIC_UDP_PAYLOAD, |e| {
            e.payload.clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
        }),
        Transport::Tcp => u16::MAX,
    };
    let byte2 = QR | (request.opcode << 3) | if request.recursion_desired { RD } else { 0 };
    let question = &packet[HEADER_LEN..request.question_end];
    let mut w = Writer::new(
        out,
        usize::from(limit),
        [packet[0], packet[1], byte2, 0],
        Some((question, request.qname.as_bytes())),
    );
    let ecs = request.edns.and_then(|e| e.ecs);
    if request.edns.is_some() {
        w.reserve(opt_len(&request.edns));
    }
    let (rcode, scope) = if request.edns.is_some_and(|e| e.version > 0) {
        // RFC 6891 §6.1.3: answer in version 0 with BADVERS, nothing else.
        (BADVERS, None)
    } else if request.opcode != 0 {
        (NOTIMP, None)
    } else {
        let client = ClientKey {
            source,
            subnet: ecs.map(|e| EcsSubnet {
                addr: e.addr,
                source_prefix: e.source_prefix,
            }),
            device: None,
        };
        resolve(engine, snapshot, &request, client, transport, &mut w)
    };
    w.set_flags(0, (rcode & 0x0F) as u8);
    if let Some(edns) = request.edns {
        write_opt(&mut w, &edns, (rcode >> 4) as u8, scope.unwrap_or(0));
    }
    let truncated = w.flags()[0] & TC != 0;
    w.finish();
    Some(Outcome { rcode, truncated })
}

/// FORMERR, echoing the question when it parsed.
fn formerr(packet: &[u8], question_end: Option<usize>, out: &mut Vec<u8>) -> Outcome {
    let byte2 = QR | (packet[2] & 0x78) | (packet[2] & RD);
    let question = question_end.map(|end| {
        let sent = &packet[HEADER_LEN..end];
        (sent, &sent[..sent.len() - 4])
    });
    let mut w = Writer::new(
        out,
        usize::from(u16::MAX),
        [packet[0], packet[1], byte2, 0],
        question,
    );
    w.set_flags(0, FORMERR as u8);
    w.finish();
    Outcome {
        rcode: FORMERR,
        truncated: false,
    }
}

/// A short list of RRsets for one section, kept on the stack.
struct Sets<'a, const N: usize> {
    items: [(Option<&'a [u8]>, &'a [WireRecord]); N],
    len: usize,
}

impl<'a, const N: usize> Sets<'a, N> {
    fn new() -> Self {
        Self {
            items: [(None, &[]); N],
            len: 0,
        }
    }

    /// Adds an RRset once; an empty one or one over capacity is skipped (the sections
    /// that can overflow are the optional additional data).
    fn push(&mut self, owner: Option<&'a [u8]>, records: &'a [WireRecord]) {
        let seen = self.items[..self.len]
            .iter()
            .any(|(_, r)| std::ptr::eq(*r, records));
        if !records.is_empty() && self.len < N && !seen {
            self.items[self.len] = (owner, records);
            self.len += 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> impl Iterator<Item = &(Option<&'a [u8]>, &'a [WireRecord])> {
        self.items[..self.len].iter()
    }
}

/// Resolves the question into the writer; returns the RCODE and, for a GSLB answer, the
/// ECS scope it is valid for.
fn resolve<'a>(
    engine: &Engine,
    snapshot: &'a ServingSnapshot,
    request: &'a Request,
    client: ClientKey,
    transport: Transport,
    w: &mut Writer<'a, '_>,
) -> (u16, Option<u8>) {
    if snapshot.version() == 0 {
        return (SERVFAIL, None);
    }
    if request.qclass != CLASS_IN && request.qclass != CLASS_ANY {
        return (REFUSED, None);
    }
    match request.qtype {
        // No zone transfers. Over UDP AXFR is not even defined (RFC 5936 §4.2).
        TYPE_AXFR if transport == Transport::Udp => return (NOTIMP, None),
        TYPE_AXFR | TYPE_IXFR => return (REFUSED, None),
        _ => {}
    }
    // No recursion and no cache: a name outside our zones is not ours to answer.
    let Some(zone) = snapshot.find_zone(&request.qname) else {
        return (REFUSED, None);
    };
    let qtype = RecordType::from(request.qtype);
    let mut answer = Sets::<'a, { MAX_CHAIN + MAX_ANSWER_COUNT }>::new();
    let mut authority = Sets::<'a, 1>::new();
    let mut additional = Sets::<'a, MAX_ADDITIONAL>::new();
    let mut rcode = NOERROR;
    let mut authoritative = true;
    let mut scope = None;

    let mut name: &'a [u8] = request.qname.as_bytes();
    let mut chased;
    let mut key = &request.qname;
    for hop in 0..=MAX_CHAIN {
        let node = match zone.find(key, qtype) {
            Found::NxDomain => {
                rcode = NXDOMAIN;
                authority.push(None, zone.negative_soa_wire());
                break;
            }
            Found::Referral(cut) => {
                // A referral is not authoritative data, unless a CNAME of ours led here.
                authoritative = hop > 0;
                let ns = cut.wire(RecordType::NS).unwrap_or_default();
                authority.push(None, ns);
                add_targets(zone, ns, &mut additional);
                break;
            }
            Found::Node(node) | Found::Wildcard(node) => node,
        };
        if let Some(index) = node.service
            && matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY)
        {
            let service = snapshot.service_at(index);
            let chosen = engine.choose(snapshot, service, client);
            scope = Some(chosen.scope);
            let answer_set = chosen.answer();
            // RFC 8482: one RRset is enough for ANY: the A set, or AAAA when there is no A.
            let picks_for = |rtype: RecordType| chosen.picks(rtype == RecordType::AAAA);
            let rtype = match qtype {
                RecordType::ANY => {
                    let has_a = match picks_for(RecordType::A) {
                        Some(p) => !p.as_slice().is_empty(),
                        None => !answer_set.wire(RecordType::A).is_empty(),
                    };
                    if has_a {
                        RecordType::A
                    } else {
                        RecordType::AAAA
                    }
                }
                other => other,
            };
            let mut records = answer_set.wire(rtype);
            let before = answer.len();
            if let Some(picks) = picks_for(rtype) {
                records = &[];
                for &pick in picks.as_slice() {
                    let record = dynamic::wire_of(&chosen.arm.sites, pick, rtype);
                    answer.push(Some(name), std::slice::from_ref(record));
                }
            }
            if records.is_empty() && answer.len() == before {
                authority.push(None, zone.negative_soa_wire());
            }
            answer.push(Some(name), records);
            break;
        }
        let found = if qtype == RecordType::ANY {
            node.rrsets.first().map(|s| s.wire.as_slice())
        } else {
            node.wire(qtype)
        };
        if let Some(records) = found {
            answer.push(Some(name), records);
            let rtype = records.first().map_or(0, |r| r.rtype);
            if matches!(
                RecordType::from(rtype),
                RecordType::MX | RecordType::NS | RecordType::SRV
            ) {
                add_targets(zone, records, &mut additional);
            }
            break;
        }
        let Some(cname) = node.wire(RecordType::CNAME) else {
            authority.push(None, zone.negative_soa_wire());
            break;
        };
        answer.push(Some(name), cname);
        // Follow the chain inside this zone only, as Knot does: another zone's data is
        // the resolver's to fetch, and a loop ends where a name repeats.
        let Some(target) = cname.first().and_then(|r| r.target.as_deref()) else {
            break;
        };
        let looped = answer.iter().any(|(owner, _)| *owner == Some(target));
        let Some(next) = NameKey::parse_uncompressed(target, &mut 0) else {
            break;
        };
        if looped || hop == MAX_CHAIN || !in_zone(zone, &next) {
            break;
        }
        chased = next;
        key = &chased;
        name = target;
    }

    if authoritative {
        w.set_flags(AA, 0);
    }
    let fits = answer
        .iter()
        .all(|&(owner, records)| w.rrset(Section::Answer, owner, records))
        && authority
            .iter()
            .all(|&(owner, records)| w.rrset(Section::Authority, owner, records));
    if !fits {
        // Like Knot: a truncated response carries no records at all, so a resolver is
        // never tempted to use a partial RRset.
        w.truncate_to_question();
        w.set_flags(TC, 0);
        return (rcode, scope);
    }
    for &(owner, records) in additional.iter() {
        // Additional data is optional (RFC 2181 §9): what does not fit is left out.
        w.rrset(Section::Additional, owner, records);
    }
    (rcode, scope)
}

fn in_zone(zone: &Zone, key: &NameKey) -> bool {
    let origin = zone.origin_key();
    key.as_bytes().len() >= origin.len()
        && key.suffix(key.labels().saturating_sub(zone.origin_labels())) == origin
}

/// Additional-section processing (RFC 1035 §3.3, RFC 2782): the addresses of in-zone
/// targets of NS, MX and SRV records.
fn add_targets<'a, const N: usize>(
    zone: &'a Zone,
    records: &'a [WireRecord],
    additional: &mut Sets<'a, N>,
) {
    for record in records {
        let Some(node) = record.target.as_deref().and_then(|t| zone.node(t)) else {
            continue;
        };
        add_addresses(node, additional);
    }
}

fn add_addresses<'a, const N: usize>(node: &'a Node, additional: &mut Sets<'a, N>) {
    for rtype in [RecordType::A, RecordType::AAAA] {
        additional.push(None, node.wire(rtype).unwrap_or_default());
    }
}

fn opt_len(edns: &Option<Edns>) -> usize {
    11 + edns.and_then(|e| e.ecs).map_or(0, |ecs| 8 + ecs.addr_len())
}

/// The OPT record of a response (RFC 6891 §6.1.2), echoing ECS with our scope
/// (RFC 7871 §7.2.1: FAMILY, SOURCE PREFIX-LENGTH and ADDRESS as received).
fn write_opt(w: &mut Writer<'_, '_>, edns: &Edns, ext_rcode: u8, scope: u8) {
    let mut opt = [0u8; 35];
    opt[1..3].copy_from_slice(&41u16.to_be_bytes());
    opt[3..5].copy_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
    opt[5] = ext_rcode;
    opt[7] = if edns.dnssec_ok { 0x80 } else { 0 };
    let mut len = 11;
    if let Some(ecs) = edns.ecs {
        let addr_len = ecs.addr_len();
        opt[9..11].copy_from_slice(&((8 + addr_len) as u16).to_be_bytes());
        opt[11..13].copy_from_slice(&8u16.to_be_bytes());
        opt[13..15].copy_from_slice(&((4 + addr_len) as u16).to_be_bytes());
        opt[15..17].copy_from_slice(&ecs.family.to_be_bytes());
        opt[17] = ecs.source_prefix;
        opt[18] = scope;
        match ecs.addr {
            IpAddr::V4(v4) => opt[19..19 + addr_len].copy_from_slice(&v4.octets()[..addr_len]),
            IpAddr::V6(v6) => opt[19..19 + addr_len].copy_from_slice(&v6.octets()[..addr_len]),
        }
        len = 19 + addr_len;
    }
    w.raw(&opt[..len], true);
}

/// Turns the response in `out` into an empty truncated one (header and question, TC
/// set): what response rate limiting "slips" to a possibly real client.
pub(crate) fn slip(out: &mut Vec<u8>) {
    if out.len() < HEADER_LEN {
        return;
    }
    let mut end = HEADER_LEN;
    if out[5] == 1 && NameKey::parse_uncompressed(out, &mut end).is_some() {
        end = (end + 4).min(out.len());
    } else {
        end = HEADER_LEN;
    }
    out.truncate(end);
    out[2] |= TC;
    out[6..12].fill(0);
}
