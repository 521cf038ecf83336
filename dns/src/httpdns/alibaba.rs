//! The Alibaba EMAS dialect's request handling: `d`, `resolve`, `sign_d`, `sign_resolve`, `ss`.
//!
//! One synchronous function per request, from the peer address and the raw query string to a
//! finished [`Reply`]: rate limits, account, signature, parameters, then the engine. Bodies are
//! written by hand (every value is either validated text or an address), so an answer costs
//! the engine's selection plus one buffer.
//!
//! **Remaining TTL.** Answers are computed from the snapshot, so their age is measured from the
//! snapshot's generation time. Each client gets its own phase inside the TTL window (a hash
//! of its key), so a fleet of SDKs does not expire — and come back — in lockstep:
//! `ttl = origin_ttl − ((now − generated) + phase) mod origin_ttl`, in seconds, which lies in
//! `1..=origin_ttl` and counts down by one per second for a given client. The unprefixed
//! `/d` keeps answering the full TTL, as it always did.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{RData, RecordType};

use super::index::{Account, Index};
use super::limits::{account_key, client_key};
use super::metrics::{Code, Endpoint};
use super::query::{self, Params};
use super::sign::{self, SignError};
use crate::engine::{ClientKey, Engine, ServiceAnswer};
use crate::name::NameKey;
use crate::snapshot::ServingSnapshot;

/// Longest host name accepted, in presentation form without the trailing dot.
const MAX_HOST_LEN: usize = 253;
/// Most hosts, or client addresses, in one batch.
pub const MAX_BATCH: usize = 5;
/// Longest device id, bytes.
pub const MAX_DEVICE_ID: usize = 128;
/// `Cache-Control: max-age` of an `ss` answer, seconds.
const SS_MAX_AGE: u32 = 300;

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    /// The result code (`Ok` or the error).
    pub code: Code,
    /// JSON body.
    pub body: String,
    /// `Cache-Control: max-age` for a success.
    pub max_age: u32,
    /// `Retry-After` seconds for a 429.
    pub retry_after: u32,
}

impl Reply {
    fn error(code: Code, message: impl AsRef<str>) -> Self {
        let mut body = String::with_capacity(64);
        body.push_str("{\"code\":\"");
        body.push_str(code.as_str());
        body.push_str("\",\"message\":");
        body.push_str(&serde_json::Value::from(message.as_ref()).to_string());
        body.push('}');
        Self {
            code,
            body,
            max_age: 0,
            retry_after: 0,
        }
    }

    fn ok(body: String, max_age: u32) -> Self {
        Self {
            code: Code::Ok,
            body,
            max_age,
            retry_after: 0,
        }
    }
}

/// Which families a request asks for.
#[derive(Debug, Clone, Copy)]
struct Families {
    v4: bool,
    v6: bool,
}

fn parse_families(query: Option<&str>) -> Option<Families> {
    match query {
        None | Some("4") => Some(Families {
            v4: true,
            v6: false,
        }),
        Some("6") => Some(Families {
            v4: false,
            v6: true,
        }),
        Some("4,6" | "6,4") => Some(Families { v4: true, v6: true }),
        Some(_) => None,
    }
}

fn valid_host(host: &str) -> bool {
    let bare = host.strip_suffix('.').unwrap_or(host);
    !bare.is_empty()
        && bare.len() <= MAX_HOST_LEN
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bare
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
}

/// The lookup key of a host that passed [`valid_host`], the labels exactly as
/// `Name::from_ascii` then [`NameKey::new`] read them (hickory refuses a label that starts
/// with `-`), without building the `Name`: that parse was ≈ 4 % of an HTTP/2 answer's CPU.
fn host_key(host: &str) -> Option<NameKey> {
    let bare = host.strip_suffix('.').unwrap_or(host);
    if bare.split('.').any(|label| label.starts_with('-')) {
        return None;
    }
    NameKey::from_labels(bare.split('.').map(str::as_bytes))
}

/// A device id: 1 to [`MAX_DEVICE_ID`] printable ASCII characters, no blanks.
pub fn valid_device_id(did: &str) -> bool {
    (1..=MAX_DEVICE_ID).contains(&did.len()) && did.bytes().all(|b| b.is_ascii_graphic())
}

/// The remaining TTL of an answer for a client with `phase`, `now_ms` into a window that
/// started when the snapshot was generated (see the module docs). 0 only when `ttl` is 0.
pub fn remaining_ttl(ttl: u32, generated_unix_ms: i64, now_unix_ms: i64, phase: u64) -> u32 {
    if ttl == 0 {
        return 0;
    }
    let age = (now_unix_ms.saturating_sub(generated_unix_ms).max(0) / 1000) as u64;
    let ttl64 = u64::from(ttl);
    ttl - ((age % ttl64 + phase % ttl64) % ttl64) as u32
}

/// Everything one request brings.
pub(crate) struct Request<'a> {
    pub(crate) endpoint: Endpoint,
    /// `None` on the unprefixed `/d`.
    pub(crate) account: Option<&'a str>,
    pub(crate) peer: IpAddr,
    pub(crate) query: &'a str,
    pub(crate) device_header: Option<&'a str>,
    pub(crate) now_ms: u64,
    pub(crate) now_unix_ms: i64,
}

/// The addresses found for one host.
enum Found {
    Service(ServiceAnswer),
    Static {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
        ttl: u32,
    },
}

impl Found {
    fn v4(&self) -> &[Ipv4Addr] {
        match self {
            Self::Service(a) => a.ipv4(),
            Self::Static { v4, .. } => v4,
        }
    }
    fn v6(&self) -> &[Ipv6Addr] {
        match self {
            Self::Service(a) => a.ipv6(),
            Self::Static { v6, .. } => v6,
        }
    }
    fn ttl(&self) -> u32 {
        match self {
            Self::Service(a) => a.ttl(),
            Self::Static { ttl, .. } => *ttl,
        }
    }
}

/// Serves one request against `snapshot` and its HTTPDNS `index`.
pub(crate) fn serve(
    frontend: &super::HttpdnsFrontend,
    engine: &Engine,
    snapshot: &ServingSnapshot,
    index: &Index,
    req: &Request<'_>,
) -> (Reply, Option<String>) {
    let mut host_for_log = None;
    let reply = serve_inner(frontend, engine, snapshot, index, req, &mut host_for_log)
        .unwrap_or_else(|e| e);
    (reply, host_for_log)
}

fn serve_inner(
    frontend: &super::HttpdnsFrontend,
    engine: &Engine,
    snapshot: &ServingSnapshot,
    index: &Index,
    req: &Request<'_>,
    host_for_log: &mut Option<String>,
) -> Result<Reply, Reply> {
    if let Err(wait) = frontend
        .clients
        .check(client_key(req.peer), index.per_client, req.now_ms)
    {
        let mut reply = Reply::error(Code::TooManyRequests, "too many requests from this client");
        reply.retry_after = wait;
        return Err(reply);
    }
    let account: Option<&Account> = match req.account {
        None => None,
        Some(id) => {
            let Some(account) = index.accounts.get(id) else {
                return Err(Reply::error(
                    Code::InvalidAccount,
                    format!("account {id:?} does not exist"),
                ));
            };
            if let Err(wait) =
                frontend
                    .accounts
                    .check(account_key(id), index.per_account, req.now_ms)
            {
                let mut reply =
                    Reply::error(Code::TooManyRequests, "too many requests for this account");
                reply.retry_after = wait;
                return Err(reply);
            }
            Some(account)
        }
    };
    if snapshot.version() == 0 {
        return Err(Reply::error(
            Code::NotReady,
            "no steering snapshot received yet",
        ));
    }
    let params =
        query::parse(req.query).map_err(|e| Reply::error(Code::InvalidQuery, e.to_string()))?;
    if let Some(host) = &params.host {
        *host_for_log = Some(host.as_ref().to_owned());
    }
    if req.endpoint == Endpoint::Ss {
        return service_ips(index, &params);
    }
    if let Some(account) = account {
        authorize(account, req, &params)?;
    }

    let device = match (params.did.as_deref(), req.device_header) {
        (Some(did), _) | (None, Some(did)) => {
            if !valid_device_id(did) {
                return Err(Reply::error(
                    Code::InvalidDeviceId,
                    format!(
                        "the device id must be 1 to {MAX_DEVICE_ID} printable ASCII characters without blanks"
                    ),
                ));
            }
            Some(isobar_proto::hash::client_key_device(did))
        }
        (None, None) => None,
    };
    let families = parse_families(params.query.as_deref())
        .ok_or_else(|| Reply::error(Code::InvalidQuery, "query must be 4, 6 or 4,6"))?;
    let host_param = params.host.as_deref().unwrap_or_default();
    let ip_param = params.ip.as_deref();
    let parse_ip = |text: &str| -> Result<IpAddr, Reply> {
        text.parse::<IpAddr>()
            .map(|ip| ip.to_canonical())
            .map_err(|_| Reply::error(Code::InvalidIp, format!("{text:?} is not an IP address")))
    };
    let key_for = |ip: IpAddr| ClientKey {
        source: ip,
        subnet: None,
        device,
    };
    // A client's phase in the TTL window: its device, else its address.
    let phase = |ip: IpAddr| device.unwrap_or_else(|| super::limits::client_key(ip));
    let remaining = |ttl: u32, ip: IpAddr| {
        if account.is_some() {
            remaining_ttl(
                ttl,
                snapshot.generated_unix_ms(),
                req.now_unix_ms,
                phase(ip),
            )
        } else {
            ttl
        }
    };

    if !req.endpoint.batch() {
        let client = match ip_param {
            Some(ip) => parse_ip(ip)?,
            None => req.peer,
        };
        let found = lookup(engine, snapshot, host_param, key_for(client), families)?;
        let ttl = remaining(found.ttl(), client);
        let mut body = String::with_capacity(160);
        body.push_str("{\"host\":\"");
        body.push_str(host_param);
        body.push_str("\",\"ips\":");
        push_ips(
            &mut body,
            found.v4().iter().copied().filter(|_| families.v4),
        );
        body.push_str(",\"ipsv6\":");
        push_ips(
            &mut body,
            found.v6().iter().copied().filter(|_| families.v6),
        );
        body.push_str(",\"ttl\":");
        push_u32(&mut body, ttl);
        body.push_str(",\"origin_ttl\":");
        push_u32(&mut body, found.ttl());
        body.push_str(",\"client_ip\":\"");
        push_ip(&mut body, client);
        body.push_str("\"}");
        return Ok(Reply::ok(body, ttl));
    }

    // Batch: up to 5 hosts for one client, or one host for up to 5 clients.
    let hosts: Vec<&str> = host_param.split(',').collect();
    let clients: Vec<IpAddr> = match ip_param {
        Some(list) => {
            let parts: Vec<&str> = list.split(',').collect();
            if parts.len() > MAX_BATCH {
                return Err(Reply::error(
                    Code::LimitExceeded,
                    format!("at most {MAX_BATCH} client addresses per request"),
                ));
            }
            parts.into_iter().map(parse_ip).collect::<Result<_, _>>()?
        }
        None => vec![req.peer],
    };
    if hosts.len() > MAX_BATCH {
        return Err(Reply::error(
            Code::LimitExceeded,
            format!("at most {MAX_BATCH} hosts per request"),
        ));
    }
    if hosts.len() > 1 && clients.len() > 1 {
        return Err(Reply::error(
            Code::LimitExceeded,
            "several hosts or several client addresses, not both",
        ));
    }
    let mut body = String::with_capacity(64 + 200 * hosts.len() * clients.len());
    body.push_str("{\"dns\":[");
    let mut first = true;
    let mut max_age = u32::MAX;
    for host in &hosts {
        for &client in &clients {
            let found = lookup(engine, snapshot, host, key_for(client), families)?;
            let ttl = remaining(found.ttl(), client);
            max_age = max_age.min(ttl);
            let lists: [(bool, u16, &mut dyn Iterator<Item = IpAddr>); 2] = [
                (
                    families.v4,
                    1,
                    &mut found.v4().iter().map(|&a| IpAddr::V4(a)),
                ),
                (
                    families.v6,
                    28,
                    &mut found.v6().iter().map(|&a| IpAddr::V6(a)),
                ),
            ];
            for (wanted, rtype, ips) in lists {
                if !wanted {
                    continue;
                }
                if !first {
                    body.push(',');
                }
                first = false;
                body.push_str("{\"host\":\"");
                body.push_str(host);
                body.push_str("\",\"client_ip\":\"");
                push_ip(&mut body, client);
                body.push_str("\",\"ips\":");
                push_ips(&mut body, ips);
                body.push_str(",\"type\":");
                push_u32(&mut body, u32::from(rtype));
                body.push_str(",\"ttl\":");
                push_u32(&mut body, ttl);
                body.push_str(",\"origin_ttl\":");
                push_u32(&mut body, found.ttl());
                body.push('}');
            }
        }
    }
    body.push_str("]}");
    Ok(Reply::ok(
        body,
        if max_age == u32::MAX { 0 } else { max_age },
    ))
}

fn push_ips<T: Into<IpAddr>>(body: &mut String, ips: impl Iterator<Item = T>) {
    body.push('[');
    for (i, ip) in ips.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push('"');
        push_ip(body, ip.into());
        body.push('"');
    }
    body.push(']');
}

/// Appends `ip` as its `Display` text; IPv4 (the common case) without the formatter.
fn push_ip(body: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    body.push('.');
                }
                push_u32(body, u32::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(body, "{v6}");
        }
    }
}

/// Appends `n` in decimal.
fn push_u32(body: &mut String, n: u32) {
    body.push_str(itoa::Buffer::new().format(n));
}

/// Signed interfaces check the signature; unsigned ones need the account's permission.
fn authorize(account: &Account, req: &Request<'_>, params: &Params<'_>) -> Result<(), Reply> {
    if !req.endpoint.signed() {
        if account.unsigned_allowed {
            return Ok(());
        }
        return Err(Reply::error(
            Code::UnsignedInterfaceDisabled,
            "this account only accepts signed requests (sign_d, sign_resolve)",
        ));
    }
    if account.secret.is_empty() {
        return Err(Reply::error(
            Code::InvalidSignature,
            "this account has no signing secret",
        ));
    }
    let payload = params.host.as_deref().unwrap_or_default();
    let now = req.now_unix_ms.div_euclid(1000);
    sign::verify(
        payload,
        &account.secret,
        params.t.as_deref(),
        params.s.as_deref(),
        now,
    )
    .map_err(|e| {
        let code = match e {
            SignError::Missing => Code::MissingSignature,
            SignError::BadTimestamp => Code::InvalidTimestamp,
            SignError::Expired => Code::SignatureExpired,
            SignError::TooFarAhead => Code::InvalidDuration,
            SignError::Invalid => Code::InvalidSignature,
        };
        Reply::error(code, e.to_string())
    })
}

fn service_ips(index: &Index, params: &Params<'_>) -> Result<Reply, Reply> {
    let region = params.region.as_deref().unwrap_or_default();
    match index.service_ips.get(region) {
        Some(body) => Ok(Reply::ok(body.to_string(), SS_MAX_AGE)),
        None => Err(Reply::error(
            Code::InvalidRegion,
            format!("no service addresses for region {region:?}"),
        )),
    }
}

/// The addresses of `host` for `client`: the engine's answer for a GSLB name, static records
/// for another name of a served zone (empty lists when it has none: the name is ours and the
/// honest answer is "no addresses"), `InvalidHost` outside every zone (we never recurse).
fn lookup(
    engine: &Engine,
    snapshot: &ServingSnapshot,
    host: &str,
    client: ClientKey,
    families: Families,
) -> Result<Found, Reply> {
    let invalid = |why: &str| Reply::error(Code::InvalidHost, format!("{host:?} {why}"));
    if !valid_host(host) {
        return Err(invalid("is not a valid host name"));
    }
    let Some(key) = host_key(host) else {
        return Err(invalid("is not a valid host name"));
    };
    let Some(zone) = snapshot.find_zone(&key) else {
        return Err(invalid("is not in any zone served here"));
    };
    if let Some(service) = snapshot.find_service(&key) {
        return Ok(Found::Service(engine.select(snapshot, service, client)));
    }
    // Static records: the smallest TTL among what is returned; the zone's negative-caching
    // TTL when nothing is.
    let (mut v4, mut v6, mut ttl) = (Vec::new(), Vec::new(), None::<u32>);
    for (wanted, rtype) in [
        (families.v4, RecordType::A),
        (families.v6, RecordType::AAAA),
    ] {
        if !wanted {
            continue;
        }
        for record in zone.static_records(&key, rtype).unwrap_or_default() {
            match &record.data {
                RData::A(a) => v4.push(a.0),
                RData::AAAA(aaaa) => v6.push(aaaa.0),
                // A CNAME: not chased, so no address to give.
                _ => continue,
            }
            ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
        }
    }
    Ok(Found::Static {
        v4,
        v6,
        ttl: ttl.unwrap_or_else(|| zone.negative_ttl()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::parse_absolute;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn host_keys_are_hickory_s(host in "[a-zA-Z0-9_.-]{1,80}|([a-z0-9-]{1,63}\\.){1,5}[a-z]{0,3}\\.?") {
            prop_assume!(valid_host(&host));
            let ours = host_key(&host).map(|k| k.as_bytes().to_vec());
            let hickory = parse_absolute(&host)
                .as_ref()
                .and_then(NameKey::new)
                .map(|k| k.as_bytes().to_vec());
            prop_assert_eq!(ours, hickory);
        }
    }

    #[test]
    fn host_keys_refuse_what_hickory_refuses() {
        for host in ["-a.test", "a.-b.test", "a.b-.test", "A.Test.", "_srv.x"] {
            let ours = host_key(host).map(|k| k.as_bytes().to_vec());
            let hickory = parse_absolute(host)
                .as_ref()
                .and_then(NameKey::new)
                .map(|k| k.as_bytes().to_vec());
            assert_eq!(ours, hickory, "{host}");
        }
        assert!(host_key("-a.test").is_none());
        assert_eq!(
            host_key("A.Test.").unwrap().as_bytes(),
            b"\x01a\x04test\x00"
        );
    }

    #[test]
    fn addresses_and_numbers_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "192.0.2.10",
            "::",
            "::1",
            "2001:db8::10",
            "::ffff:1.2.3.4",
            "fe80::1:2:3:4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut body = String::new();
            push_ip(&mut body, ip);
            assert_eq!(body, ip.to_string());
        }
        for n in [0, 7, 10, 300, 86_400, u32::MAX] {
            let mut body = String::new();
            push_u32(&mut body, n);
            assert_eq!(body, n.to_string());
        }
        let mut body = String::new();
        let v4: [Ipv4Addr; 2] = [[192, 0, 2, 10].into(), [192, 0, 2, 11].into()];
        push_ips(&mut body, v4.iter().copied());
        assert_eq!(body, r#"["192.0.2.10","192.0.2.11"]"#);
    }

    #[test]
    fn remaining_ttl_counts_down_within_the_window_and_never_hits_zero() {
        let generated = 1_700_000_000_000;
        // Phase 0: the window starts at generation.
        assert_eq!(remaining_ttl(600, generated, generated, 0), 600);
        assert_eq!(remaining_ttl(600, generated, generated + 4_000, 0), 596);
        assert_eq!(remaining_ttl(600, generated, generated + 599_999, 0), 1);
        assert_eq!(remaining_ttl(600, generated, generated + 600_000, 0), 600);
        // A clock behind the scheduler's counts as age 0.
        assert_eq!(remaining_ttl(600, generated, generated - 5_000, 0), 600);
        // A phase shifts the window per client; the countdown is the same.
        assert_eq!(remaining_ttl(600, generated, generated, 100), 500);
        assert_eq!(remaining_ttl(600, generated, generated + 1_000, 100), 499);
        assert_eq!(remaining_ttl(600, generated, generated + 500_000, 100), 600);
        for age in (0..2_000_000).step_by(777) {
            for phase in [0, 1, 599, u64::MAX] {
                let ttl = remaining_ttl(600, generated, generated + age, phase);
                assert!((1..=600).contains(&ttl), "age {age} phase {phase}: {ttl}");
            }
        }
        assert_eq!(remaining_ttl(0, generated, generated + 5, 3), 0);
        assert_eq!(remaining_ttl(1, generated, generated + 12_345, 7), 1);
    }

    #[test]
    fn device_ids_are_bounded_printable_ascii() {
        assert!(valid_device_id("a"));
        assert!(valid_device_id(&"x".repeat(MAX_DEVICE_ID)));
        assert!(!valid_device_id(""));
        assert!(!valid_device_id(&"x".repeat(MAX_DEVICE_ID + 1)));
        assert!(!valid_device_id("has space"));
        assert!(!valid_device_id("ünïcode"));
    }
}
