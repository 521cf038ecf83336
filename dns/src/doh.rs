//! DNS over HTTPS: RFC 8484 (`application/dns-message`) and the Google/Cloudflare JSON form,
//! both answered by the DNS query path itself ([`crate::respond()`]).
//!
//! Routes:
//! - `GET /dns-query?dns=<base64url>` and `POST /dns-query` (`Content-Type:
//!   application/dns-message`, body ≤ 65535 octets): the query packet goes through
//!   [`crate::respond()`] exactly as a TCP query from the HTTP peer would (ECS in the packet
//!   honoured, no truncation, up to 65535 octets), and the response is returned as
//!   `application/dns-message`.
//! - `GET /dns-query?name=&type=` and `GET /resolve?name=&type=` (the JSON form, normally sent
//!   with `Accept: application/dns-json`): a query packet is built from the parameters
//!   (`type` by mnemonic or number, default A; `cd`, `do`; `edns_client_subnet=ADDR/LEN` as
//!   an ECS option, `0.0.0.0/0` meaning "do not tailor"), answered by the same path, and
//!   the response converted to `{Status, TC, RD, RA, AD, CD, Question, Answer, Authority,
//!   Additional, edns_client_subnet}`. On `/dns-query`, the `name` parameter selects this
//!   form whatever `Accept` says; repeated parameters: the first wins (as Google does).
//!
//! HTTP statuses follow RFC 8484: any DNS response, NXDOMAIN, REFUSED and FORMERR included,
//! is `200` with the RCODE inside. Only what never becomes a DNS exchange is an HTTP error,
//! with a JSON `{"code", "message"}` body: `400` for bad base64, a packet that is not a query
//! (shorter than a header, or a response) or bad JSON-form parameters, `413` for a message
//! over 65535 octets, `415` for a POST that is not `application/dns-message`.
//!
//! Caching (RFC 8484 §5.1): `Cache-Control: max-age` is the smallest TTL of the answer
//! section; for an answer with no records, the negative-caching TTL of the SOA in the
//! authority section (RFC 2308: the smaller of its TTL and MINIMUM); `0` when there is
//! neither.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as DnsQuery};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::Serialize;

use crate::engine::Engine;
use crate::respond::{Transport, respond};

/// Largest DNS message accepted or sent, octets (the TCP limit).
pub const MAX_MESSAGE: usize = 65535;
/// Longest `name` accepted by the JSON form, without the trailing dot.
const MAX_NAME_LEN: usize = 253;
/// The RFC 8484 media type.
const DNS_MESSAGE: &str = "application/dns-message";
/// The JSON form's media type (Cloudflare's).
const DNS_JSON: &str = "application/dns-json";

/// The DoH routes: `GET`/`POST /dns-query` and `GET /resolve`.
///
/// Serve with `into_make_service_with_connect_info::<SocketAddr>()`: the peer address is
/// the client address, as the source address of a DNS query is.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/dns-query", get(get_query).post(post_query))
        .route("/resolve", get(get_json))
        // One message plus slack; the handler turns the rejection into a JSON 413.
        .layer(DefaultBodyLimit::max(MAX_MESSAGE))
        .with_state(engine)
}

/// An HTTP-level failure: a status and a JSON `{"code", "message"}` body.
#[derive(Debug, Serialize)]
struct DohError {
    #[serde(skip)]
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl DohError {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for DohError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(&self)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

type Params = Vec<(String, String)>;

/// The first value of `key` (Google's rule for repeated parameters).
fn param<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn params_of(params: Result<Query<Params>, QueryRejection>) -> Result<Params, DohError> {
    params
        .map(|Query(p)| p)
        .map_err(|e| DohError::bad("InvalidQuery", e.body_text()))
}

async fn get_query(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Response, DohError> {
    let params = params_of(params)?;
    if let Some(encoded) = param(&params, "dns") {
        let packet = decode_dns_param(encoded)?;
        return answer_wire(&engine, &packet, peer.ip().to_canonical());
    }
    if param(&params, "name").is_some() {
        return answer_json(&engine, &params, peer.ip().to_canonical());
    }
    Err(DohError::bad(
        "MissingParameter",
        "give dns= (RFC 8484) or name= (JSON form)",
    ))
}

async fn post_query(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, DohError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case(DNS_MESSAGE) {
        return Err(DohError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "UnsupportedMediaType",
            message: format!("Content-Type must be {DNS_MESSAGE}, not {content_type:?}"),
        });
    }
    let body = body.map_err(|rejection| DohError {
        status: rejection.status(),
        code: if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "PayloadTooLarge"
        } else {
            "InvalidBody"
        },
        message: rejection.body_text(),
    })?;
    answer_wire(&engine, &body, peer.ip().to_canonical())
}

async fn get_json(
    State(engine): State<Arc<Engine>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Response, DohError> {
    let params = params_of(params)?;
    answer_json(&engine, &params, peer.ip().to_canonical())
}

/// Decodes `dns=`: base64url without padding (RFC 8484 §4.1); padding is tolerated.
fn decode_dns_param(encoded: &str) -> Result<Vec<u8>, DohError> {
    // Four characters carry three octets: anything longer cannot decode to a message.
    if encoded.len() > MAX_MESSAGE.div_ceil(3) * 4 {
        return Err(too_large());
    }
    let config = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    base64::engine::GeneralPurpose::new(&base64::alphabet::URL_SAFE, config)
        .decode(encoded)
        .map_err(|e| DohError::bad("InvalidBase64", format!("dns: {e}")))
}

fn too_large() -> DohError {
    DohError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "PayloadTooLarge",
        message: format!("a DNS message is at most {MAX_MESSAGE} octets"),
    }
}

/// Runs `packet` through the DNS query path as a TCP query from `source`.
fn run(engine: &Engine, packet: &[u8], source: IpAddr) -> Result<Vec<u8>, DohError> {
    if packet.len() > MAX_MESSAGE {
        return Err(too_large());
    }
    let snapshot = engine.current();
    let mut out = Vec::with_capacity(512);
    match respond(engine, &snapshot, packet, source, Transport::Tcp, &mut out) {
        Some(_) => Ok(out),
        None => Err(DohError::bad(
            "MalformedQuery",
            "not a DNS query: shorter than a header, or a response",
        )),
    }
}

fn answer_wire(engine: &Engine, packet: &[u8], source: IpAddr) -> Result<Response, DohError> {
    let out = run(engine, packet, source)?;
    let max_age = Message::from_vec(&out).map_or(0, |m| max_age(&m));
    Ok(with_caching(
        ([(header::CONTENT_TYPE, DNS_MESSAGE)], out).into_response(),
        max_age,
    ))
}

fn with_caching(mut response: Response, max_age: u32) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// The freshness lifetime of a response (see the module doc).
pub fn max_age(response: &Message) -> u32 {
    if let Some(min) = response.answers.iter().map(|r| r.ttl).min() {
        return min;
    }
    response
        .authorities
        .iter()
        .filter_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .min()
        .unwrap_or(0)
}

/// A JSON-form request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonQuery {
    /// The absolute query name.
    pub name: Name,
    /// The query type.
    pub rtype: RecordType,
    /// Checking Disabled.
    pub cd: bool,
    /// DNSSEC OK.
    pub dnssec_ok: bool,
    /// `edns_client_subnet`, as (network address, prefix length).
    pub ecs: Option<(IpAddr, u8)>,
}

fn flag(params: &Params, key: &str) -> Result<bool, DohError> {
    match param(params, key) {
        None | Some("" | "0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(DohError::bad(
            "InvalidFlag",
            format!("{key}: {other:?} is not 0, 1, false or true"),
        )),
    }
}

/// Validates the JSON form's parameters.
fn parse_json_query(params: &Params) -> Result<JsonQuery, DohError> {
    let raw = param(params, "name").unwrap_or_default();
    let bare = raw.strip_suffix('.').unwrap_or(raw);
    let valid_shape = raw == "."
        || (!bare.is_empty()
            && bare.len() <= MAX_NAME_LEN
            && bare.split('.').all(|l| !l.is_empty() && l.len() <= 63));
    let name = valid_shape
        .then(|| Name::from_ascii(raw).ok())
        .flatten()
        .ok_or_else(|| {
            DohError::bad("InvalidName", format!("name: {raw:?} is not a domain name"))
        })?;
    let mut name = name;
    name.set_fqdn(true);

    let rtype = match param(params, "type") {
        None | Some("") => RecordType::A,
        Some(t) => match t.parse::<u16>() {
            Ok(n) if n > 0 => RecordType::from(n),
            Ok(_) => return Err(DohError::bad("InvalidType", "type: 0 is not a type")),
            Err(_) => t.to_ascii_uppercase().parse::<RecordType>().map_err(|_| {
                DohError::bad("InvalidType", format!("type: {t:?} is not a record type"))
            })?,
        },
    };

    let ecs = match param(params, "edns_client_subnet") {
        None | Some("") => None,
        Some(text) => Some(parse_subnet(text).ok_or_else(|| {
            DohError::bad(
                "InvalidSubnet",
                format!("edns_client_subnet: {text:?} is not ADDRESS or ADDRESS/PREFIX"),
            )
        })?),
    };
    Ok(JsonQuery {
        name,
        rtype,
        cd: flag(params, "cd")?,
        dnssec_ok: flag(params, "do")?,
        ecs,
    })
}

/// `ADDR/LEN` (host bits cleared) or a bare address (full length).
fn parse_subnet(text: &str) -> Option<(IpAddr, u8)> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        return Some((addr, len));
    }
    let net: ipnet::IpNet = text.parse().ok()?;
    Some((net.network(), net.prefix_len()))
}

/// The query packet for a JSON-form request (RD set, like a stub resolver's query).
pub fn build_query(query: &JsonQuery) -> Vec<u8> {
    let mut msg = Message::new(0, MessageType::Query, OpCode::Query);
    msg.add_query(DnsQuery::query(query.name.clone(), query.rtype));
    msg.metadata.recursion_desired = true;
    msg.metadata.checking_disabled = query.cd;
    if query.ecs.is_some() || query.dnssec_ok {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_MESSAGE as u16);
        edns.set_dnssec_ok(query.dnssec_ok);
        if let Some((addr, len)) = query.ecs {
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr, len, 0)));
        }
        msg.edns = Some(edns);
    }
    // A name that parsed and a known type always encode.
    msg.to_vec().unwrap_or_default()
}

fn answer_json(engine: &Engine, params: &Params, source: IpAddr) -> Result<Response, DohError> {
    let query = parse_json_query(params)?;
    let packet = build_query(&query);
    let out = run(engine, &packet, source)?;
    let response = Message::from_vec(&out).map_err(|e| DohError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "InternalError",
        message: format!("the DNS response did not parse: {e}"),
    })?;
    let body = to_json(&response);
    let mut http = Json(body).into_response();
    http.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(DNS_JSON));
    Ok(with_caching(http, max_age(&response)))
}

/// The Google/Cloudflare JSON shape of a DNS response.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DnsJson {
    /// The RCODE (extended by EDNS).
    pub status: u16,
    /// Truncated.
    #[serde(rename = "TC")]
    pub tc: bool,
    /// Recursion Desired.
    #[serde(rename = "RD")]
    pub rd: bool,
    /// Recursion Available.
    #[serde(rename = "RA")]
    pub ra: bool,
    /// Authentic Data.
    #[serde(rename = "AD")]
    pub ad: bool,
    /// Checking Disabled.
    #[serde(rename = "CD")]
    pub cd: bool,
    /// The question.
    pub question: Vec<JsonQuestion>,
    /// The answer section.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answer: Vec<JsonRecord>,
    /// The authority section.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authority: Vec<JsonRecord>,
    /// The additional section (without the OPT pseudo-record).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<JsonRecord>,
    /// The echoed ECS option as `ADDRESS/SCOPE-PREFIX` (Google's form), when one was sent.
    #[serde(rename = "edns_client_subnet", skip_serializing_if = "Option::is_none")]
    pub edns_client_subnet: Option<String>,
}

/// One question.
#[derive(Debug, Serialize, PartialEq)]
pub struct JsonQuestion {
    /// Absolute name.
    pub name: String,
    /// Type number.
    #[serde(rename = "type")]
    pub rtype: u16,
}

/// One resource record.
#[derive(Debug, Serialize, PartialEq)]
pub struct JsonRecord {
    /// Absolute owner name.
    pub name: String,
    /// Type number.
    #[serde(rename = "type")]
    pub rtype: u16,
    /// TTL, seconds.
    #[serde(rename = "TTL")]
    pub ttl: u32,
    /// The RDATA in presentation form (TXT strings quoted, as Google does).
    pub data: String,
}

/// Converts a DNS response into the JSON shape.
pub fn to_json(response: &Message) -> DnsJson {
    let m = &response.metadata;
    let records = |list: &[Record]| list.iter().map(json_record).collect();
    DnsJson {
        status: u16::from(m.response_code),
        tc: m.truncation,
        rd: m.recursion_desired,
        ra: m.recursion_available,
        ad: m.authentic_data,
        cd: m.checking_disabled,
        question: response
            .queries
            .iter()
            .map(|q| JsonQuestion {
                name: q.name().to_ascii(),
                rtype: u16::from(q.query_type()),
            })
            .collect(),
        answer: records(&response.answers),
        authority: records(&response.authorities),
        additional: records(&response.additionals),
        edns_client_subnet: response.edns.as_ref().and_then(|e| {
            match e.option(EdnsCode::Subnet)? {
                EdnsOption::Subnet(s) => Some(format!("{}/{}", s.addr(), s.scope_prefix())),
                _ => None,
            }
        }),
    }
}

fn json_record(record: &Record) -> JsonRecord {
    JsonRecord {
        name: record.name.to_ascii(),
        rtype: u16::from(record.record_type()),
        ttl: record.ttl,
        data: presentation(&record.data),
    }
}

/// RDATA in presentation form; TXT as quoted, escaped strings.
pub fn presentation(data: &RData) -> String {
    match data {
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| {
                let mut out = String::with_capacity(s.len() + 2);
                out.push('"');
                for ch in String::from_utf8_lossy(s).chars() {
                    if matches!(ch, '"' | '\\') {
                        out.push('\\');
                    }
                    out.push(ch);
                }
                out.push('"');
                out
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(list: &[(&str, &str)]) -> Params {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn json_query_parses_types_flags_and_subnets() {
        let q = parse_json_query(&params(&[
            ("name", "www.example.test"),
            ("type", "aaaa"),
            ("cd", "1"),
            ("edns_client_subnet", "198.51.100.7/24"),
        ]))
        .unwrap();
        assert_eq!(q.name.to_ascii(), "www.example.test.");
        assert_eq!(q.rtype, RecordType::AAAA);
        assert!(q.cd && !q.dnssec_ok);
        assert_eq!(q.ecs, Some(("198.51.100.0".parse().unwrap(), 24)));

        let q = parse_json_query(&params(&[("name", "a.test."), ("type", "15")])).unwrap();
        assert_eq!(q.rtype, RecordType::MX);
        let q = parse_json_query(&params(&[("name", "a.test"), ("name", "b.test")])).unwrap();
        assert_eq!(q.name.to_ascii(), "a.test.", "the first value wins");
        assert_eq!(q.rtype, RecordType::A, "A by default");
    }

    #[test]
    fn json_query_rejects_bad_input_with_a_code() {
        let long = format!("{}.test", "a".repeat(64));
        for (list, code) in [
            (vec![("name", "")], "InvalidName"),
            (vec![("name", "a..b")], "InvalidName"),
            (vec![("name", long.as_str())], "InvalidName"),
            (vec![("name", "a.test"), ("type", "NOPE")], "InvalidType"),
            (vec![("name", "a.test"), ("type", "0")], "InvalidType"),
            (
                vec![("name", "a.test"), ("edns_client_subnet", "1.2.3.4/33")],
                "InvalidSubnet",
            ),
            (vec![("name", "a.test"), ("do", "yes")], "InvalidFlag"),
        ] {
            let err = parse_json_query(&params(&list)).unwrap_err();
            assert_eq!(err.code, code, "{list:?}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn dns_param_is_base64url_with_or_without_padding() {
        // Base64url of a 1-octet payload 0xfb is "-w" (standard base64 would be "+w==").
        assert_eq!(decode_dns_param("-w").unwrap(), vec![0xfb]);
        assert_eq!(decode_dns_param("-w==").unwrap(), vec![0xfb]);
        assert_eq!(decode_dns_param("+w").unwrap_err().code, "InvalidBase64");
        let huge = "A".repeat(MAX_MESSAGE.div_ceil(3) * 4 + 4);
        assert_eq!(
            decode_dns_param(&huge).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn max_age_is_the_smallest_answer_ttl_else_the_negative_ttl() {
        use hickory_proto::rr::rdata::{A, SOA};
        let name = Name::from_ascii("x.test.").unwrap();
        let mut msg = Message::new(1, MessageType::Response, OpCode::Query);
        let soa = SOA::new(name.clone(), name.clone(), 1, 2, 3, 4, 60);
        msg.authorities
            .push(Record::from_rdata(name.clone(), 300, RData::SOA(soa)));
        assert_eq!(max_age(&msg), 60, "min(SOA TTL, MINIMUM)");
        msg.answers.push(Record::from_rdata(
            name.clone(),
            30,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        msg.answers
            .push(Record::from_rdata(name, 20, RData::A(A::new(192, 0, 2, 2))));
        assert_eq!(max_age(&msg), 20);
        assert_eq!(
            max_age(&Message::new(1, MessageType::Response, OpCode::Query)),
            0
        );
    }

    #[test]
    fn txt_data_is_quoted_and_escaped() {
        let txt = RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![
            "hello world".into(),
            "say \"hi\"".into(),
        ]));
        assert_eq!(presentation(&txt), r#""hello world" "say \"hi\"""#);
    }
}
