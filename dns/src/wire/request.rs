//! Parsing a DNS query: header, the one question, and the EDNS OPT record with its ECS option.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::name::NameKey;

/// Header length (RFC 1035 §4.1.1).
pub(crate) const HEADER_LEN: usize = 12;
const TYPE_OPT: u16 = 41;
const OPTION_ECS: u16 = 8;

/// What a request that cannot be answered normally gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Not even a header, or a response: nothing to answer.
    Drop,
    /// FORMERR; `question_end` is where the question ended when it parsed, so the
    /// response can echo it.
    FormErr { question_end: Option<usize> },
}

/// The EDNS Client Subnet option of a query (RFC 7871 §6), validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ecs {
    /// 1 = IPv4, 2 = IPv6.
    pub(crate) family: u16,
    pub(crate) source_prefix: u8,
    /// The address, zero-filled beyond the prefix.
    pub(crate) addr: IpAddr,
}

impl Ecs {
    /// Octets of ADDRESS on the wire: just enough for the prefix.
    pub(crate) fn addr_len(&self) -> usize {
        usize::from(self.source_prefix).div_ceil(8)
    }
}

/// The OPT pseudo-record of a query (RFC 6891 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edns {
    pub(crate) payload: u16,
    pub(crate) version: u8,
    pub(crate) dnssec_ok: bool,
    pub(crate) ecs: Option<Ecs>,
}

/// A parsed query. Borrows nothing: the question is re-read from the packet by offset.
pub(crate) struct Request {
    pub(crate) opcode: u8,
    pub(crate) recursion_desired: bool,
    /// The question's name, lowercased for lookups.
    pub(crate) qname: NameKey,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
    /// End of the question in the packet: `packet[12..question_end]` is echoed as sent.
    pub(crate) question_end: usize,
    pub(crate) edns: Option<Edns>,
}

/// Parses `packet` completely: every section must be well formed and nothing may follow
/// the last record. A query is exactly one question (RFC 9619).
pub(crate) fn parse(packet: &[u8]) -> Result<Request, Malformed> {
    if packet.len() < HEADER_LEN {
        return Err(Malformed::Drop);
    }
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        // A response: answering it could start a loop between two servers.
        return Err(Malformed::Drop);
    }
    let count = |i: usize| u16::from_be_bytes([packet[4 + 2 * i], packet[5 + 2 * i]]);
    let (qd, an, ns, ar) = (count(0), count(1), count(2), count(3));
    let formerr = Malformed::FormErr { question_end: None };
    if qd != 1 {
        return Err(formerr);
    }
    let mut at = HEADER_LEN;
    // Compression pointers cannot point anywhere useful from the question, which follows
    // the header directly; refusing them keeps the name parser trivial.
    let qname = NameKey::parse_uncompressed(packet, &mut at).ok_or(formerr)?;
    let fixed = packet.get(at..at + 4).ok_or(formerr)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    at += 4;
    let question_end = at;
    let formerr = Malformed::FormErr {
        question_end: Some(question_end),
    };

    for _ in 0..u32::from(an) + u32::from(ns) {
        skip_record(packet, &mut at).ok_or(formerr)?;
    }
    let mut edns = None;
    for _ in 0..ar {
        let start = at;
        let (rtype, rdata) = skip_record(packet, &mut at).ok_or(formerr)?;
        if rtype != TYPE_OPT {
            continue;
        }
        // RFC 6891 §6.1.1: one OPT, owned by the root.
        if edns.is_some() || packet[start] != 0 {
            return Err(formerr);
        }
        let ttl = &packet[start + 5..start + 9];
        let payload = u16::from_be_bytes([packet[start + 3], packet[start + 4]]);
        edns = Some(Edns {
            payload,
            version: ttl[1],
            dnssec_ok: ttl[2] & 0x80 != 0,
            ecs: parse_options(&packet[rdata]).ok_or(formerr)?,
        });
    }
    if at != packet.len() {
        return Err(formerr);
    }
    Ok(Request {
        opcode: ((flags >> 11) & 0xF) as u8,
        recursion_desired: flags & 0x0100 != 0,
        qname,
        qtype,
        qclass,
        question_end,
        edns,
    })
}

/// Skips a possibly compressed name (pointers are not followed: the packet is not
/// answered from them).
fn skip_name(packet: &[u8], at: &mut usize) -> Option<()> {
    loop {
        let len = *packet.get(*at)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                *at += 1;
                return Some(());
            }
            0x00 => *at += 1 + usize::from(len),
            0xC0 => {
                packet.get(*at + 1)?;
                *at += 2;
                return Some(());
            }
            _ => return None,
        }
    }
}

/// Skips one resource record, returning its type and RDATA range.
fn skip_record(packet: &[u8], at: &mut usize) -> Option<(u16, std::ops::Range<usize>)> {
    skip_name(packet, at)?;
    let fixed = packet.get(*at..*at + 10)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let start = *at + 10;
    let end = start + rdlen;
    if end > packet.len() {
        return None;
    }
    *at = end;
    Some((rtype, start..end))
}

/// Walks the EDNS options; unknown ones are ignored (RFC 6891 §6.1.2), a malformed ECS
/// option is an error (RFC 7871 §7.1.1), and so is a second one.
fn parse_options(mut data: &[u8]) -> Option<Option<Ecs>> {
    let mut ecs = None;
    while !data.is_empty() {
        let head = data.get(..4)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let body = data.get(4..4 + len)?;
        data = &data[4 + len..];
        if code == OPTION_ECS {
            if ecs.is_some() {
                return None;
            }
            ecs = Some(parse_ecs(body)?);
        }
    }
    Some(ecs)
}

fn parse_ecs(body: &[u8]) -> Option<Ecs> {
    let head = body.get(..4)?;
    let family = u16::from_be_bytes([head[0], head[1]]);
    let source_prefix = head[2];
    let addr = &body[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source_prefix > max || addr.len() != usize::from(source_prefix).div_ceil(8) {
        return None;
    }
    // No address bits beyond SOURCE PREFIX-LENGTH (RFC 7871 §6).
    if let Some(&last) = addr.last() {
        let used = source_prefix % 8;
        if used != 0 && last & (0xFF >> used) != 0 {
            return None;
        }
    }
    let addr = if family == 1 {
        let mut octets = [0u8; 4];
        octets[..addr.len()].copy_from_slice(addr);
        IpAddr::V4(Ipv4Addr::from(octets))
    } else {
        let mut octets = [0u8; 16];
        octets[..addr.len()].copy_from_slice(addr);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    Some(Ecs {
        family,
        source_prefix,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(tail: &[u8], ar: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, ar as u8];
        p.extend_from_slice(b"\x03WwW\x04test\x00\x00\x01\x00\x01");
        p.extend_from_slice(tail);
        p
    }

    fn opt(options: &[u8]) -> Vec<u8> {
        let mut o = vec![0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0];
        o.extend_from_slice(&(options.len() as u16).to_be_bytes());
        o.extend_from_slice(options);
        o
    }

    #[test]
    fn parses_question_and_edns_with_ecs() {
        let p = query(&opt(&[0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]), 1);
        let r = parse(&p).unwrap();
        assert_eq!(r.qname.as_bytes(), b"\x03www\x04test\x00");
        assert_eq!((r.qtype, r.qclass, r.question_end), (1, 1, 26));
        let edns = r.edns.unwrap();
        assert!(edns.dnssec_ok);
        assert_eq!(edns.payload, 1232);
        let ecs = edns.ecs.unwrap();
        assert_eq!(ecs.addr, "192.0.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(ecs.source_prefix, 24);
    }

    #[test]
    fn rejects_bad_ecs_and_garbage() {
        for ecs in [
            &[0, 8, 0, 7, 0, 3, 24, 0, 192, 0, 2][..],   // family 3
            &[0, 8, 0, 7, 0, 1, 23, 0, 192, 0, 3],       // bit beyond /23
            &[0, 8, 0, 8, 0, 1, 24, 0, 192, 0, 2, 0],    // address too long
            &[0, 8, 0, 9, 0, 1, 33, 0, 192, 0, 2, 0, 0], // /33
        ] {
            assert!(matches!(
                parse(&query(&opt(ecs), 1)),
                Err(Malformed::FormErr {
                    question_end: Some(26)
                })
            ));
        }
        assert!(matches!(
            parse(&query(b"x", 0)),
            Err(Malformed::FormErr { .. })
        ));
        assert_eq!(parse(&query(b"", 0)[..11]).err(), Some(Malformed::Drop));
        let mut two = query(b"", 0);
        two[5] = 2;
        assert!(matches!(
            parse(&two),
            Err(Malformed::FormErr { question_end: None })
        ));
    }
}
