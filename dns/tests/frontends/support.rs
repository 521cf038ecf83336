//! Fixtures shared by the frontend tests: GeoIP and ASN databases, snapshots, and a DNS
//! client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use isobar_dns::{AsnDb, DnsLimits, DnsServer, Engine, GeoDb};
use isobar_proto::geo::{cell_count, cell_index};
use isobar_proto::v1::{AnswerSet, ClientGroupOverride, GeoGrid, ServiceMap, Snapshot, ZoneData};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const ZONE: &str = "demo.isobar.test.";
pub const WWW: &str = "www.demo.isobar.test.";
pub const NOECS: &str = "noecs.demo.isobar.test.";
pub const CELL_DEGREES: f64 = 5.0;

pub const FRANKFURT: (f64, f64) = (50.11, 8.68);
pub const PARIS: (f64, f64) = (48.85, 2.35);
pub const NEW_YORK: (f64, f64) = (40.71, -74.01);

/// Answer indexes of the fixture services.
pub const DEFAULT: u32 = 0;
pub const EUROPE: u32 = 1;
pub const AMERICA: u32 = 2;
pub const OFFICE: u32 = 3;

#[derive(Serialize)]
struct City {
    location: Option<Location>,
    country: Country,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
}

#[derive(Serialize)]
struct Country {
    iso_code: &'static str,
}

/// A City-shaped MMDB (IPv6 tree, IPv4 aliased like the real databases):
/// 198.51.100.0/24 Frankfurt, 198.51.96.0/24 Paris, 203.0.113.0/24 and 127.0.0.0/8
/// New York, 2001:db8::/32 Frankfurt, and 192.0.2.0/24 with a country but no location.
pub fn geo_db() -> Arc<GeoDb> {
    let mut w = mmdb_writer::Writer::new("GeoIP2-City");
    let city = |loc: (f64, f64), iso| City {
        location: Some(Location {
            latitude: loc.0,
            longitude: loc.1,
        }),
        country: Country { iso_code: iso },
    };
    let nets = [
        ("198.51.100.0/24", city(FRANKFURT, "DE")),
        ("198.51.96.0/24", city(PARIS, "FR")),
        ("203.0.113.0/24", city(NEW_YORK, "US")),
        ("127.0.0.0/8", city((NEW_YORK.0 + 0.01, NEW_YORK.1), "US")),
        (
            "2001:db8::/32",
            city((FRANKFURT.0 + 0.01, FRANKFURT.1), "DE"),
        ),
        (
            "192.0.2.0/24",
            City {
                location: None,
                country: Country { iso_code: "ZZ" },
            },
        ),
    ];
    for (net, record) in &nets {
        w.insert(net.parse::<ipnet::IpNet>().unwrap(), record)
            .unwrap();
    }
    Arc::new(GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap())
}

/// Answer index of the "isp" ASN group in [`asn_snapshot`].
pub const ISP: u32 = 4;

#[derive(Serialize)]
struct AsRecord {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

/// The networks of [`asn_db`]: (prefix, AS number).
pub const ASN_NETS: &[(&str, u32)] = &[
    // Holds the whole Paris GeoIP /24.
    ("198.51.96.0/22", 64500),
    // The upper half of the Frankfurt GeoIP /24.
    ("198.51.100.128/25", 64501),
    // Holds the New York GeoIP /24, and with it the "office" override 203.0.113.128/25.
    ("203.0.113.0/24", 64500),
    ("2001:db8:8000::/33", 64500),
    // An AS no client group lists.
    ("192.0.2.0/24", 64999),
];

/// A GeoLite2-ASN-shaped MMDB (IPv6 tree, IPv4 aliased like the real databases) holding
/// [`ASN_NETS`].
pub fn asn_db_bytes() -> Vec<u8> {
    let mut w = mmdb_writer::Writer::new("GeoLite2-ASN");
    for &(net, asn) in ASN_NETS {
        let record = AsRecord {
            autonomous_system_number: asn,
            autonomous_system_organization: "Example Networks",
        };
        w.insert(net.parse::<ipnet::IpNet>().unwrap(), &record)
            .unwrap();
    }
    w.to_bytes().unwrap()
}

pub fn asn_db() -> Arc<AsnDb> {
    Arc::new(AsnDb::from_bytes(asn_db_bytes()).unwrap())
}

/// [`snapshot`] plus the ASN group "isp" (AS64500 and AS64501), answered 192.0.2.40 by
/// every service.
pub fn asn_snapshot(version: u64) -> Snapshot {
    let mut s = snapshot(version, "192.0.2.1");
    s.overrides.push(ClientGroupOverride {
        group: "isp".into(),
        cidrs: Vec::new(),
        asns: vec![64500, 64501],
    });
    for service in &mut s.services {
        service
            .answers
            .push(answer(&["192.0.2.40"], &["2001:db8::40"], "isp"));
        service.group_answers.insert("isp".into(), ISP);
    }
    s
}

pub fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

pub fn wire(record: Record) -> Vec<u8> {
    record.to_bytes().unwrap()
}

/// The zone: SOA (TTL 3600, MINIMUM 300), NS, glue, TXT, MX, a CNAME, an empty
/// non-terminal (b), a delegation (sub) with glue, and a wildcard (*.wild).
pub fn zone(serial: u32) -> ZoneData {
    let soa = SOA::new(
        name("ns1.demo.isobar.test."),
        name("hostmaster.demo.isobar.test."),
        1,
        7200,
        900,
        1_209_600,
        300,
    );
    let a = |ip: &str| RData::A(A(ip.parse().unwrap()));
    let records = vec![
        Record::from_rdata(name(ZONE), 3600, RData::SOA(soa)),
        Record::from_rdata(
            name(ZONE),
            3600,
            RData::NS(NS(name("ns1.demo.isobar.test."))),
        ),
        Record::from_rdata(
            name(ZONE),
            3600,
            RData::MX(MX::new(10, name("mail.demo.isobar.test."))),
        ),
        Record::from_rdata(name("ns1.demo.isobar.test."), 3600, a("192.0.2.53")),
        Record::from_rdata(
            name("txt.demo.isobar.test."),
            120,
            RData::TXT(TXT::new(vec!["hello world".into()])),
        ),
        Record::from_rdata(
            name("alias.demo.isobar.test."),
            60,
            RData::CNAME(CNAME(name(WWW))),
        ),
        Record::from_rdata(name("a.b.demo.isobar.test."), 60, a("192.0.2.54")),
        Record::from_rdata(
            name("sub.demo.isobar.test."),
            3600,
            RData::NS(NS(name("ns.sub.demo.isobar.test."))),
        ),
        Record::from_rdata(name("ns.sub.demo.isobar.test."), 3600, a("192.0.2.55")),
        Record::from_rdata(name("*.wild.demo.isobar.test."), 90, a("192.0.2.56")),
    ];
    ZoneData {
        origin: ZONE.into(),
        serial,
        records: records.into_iter().map(wire).collect(),
    }
}

pub fn answer(v4: &[&str], v6: &[&str], pop: &str) -> AnswerSet {
    AnswerSet {
        ipv4: v4.iter().map(|s| s.to_string()).collect(),
        ipv6: v6.iter().map(|s| s.to_string()).collect(),
        pops: vec![pop.into()],
        ..Default::default()
    }
}

/// A service: default 192.0.2.1 (version-specific so swaps are visible), Europe
/// 192.0.2.10 for the Frankfurt and Paris cells, America 192.0.2.20 for New York, and
/// the "office" override group 192.0.2.30.
pub fn service(service_name: &str, use_ecs: bool, default_v4: &str) -> ServiceMap {
    let mut cells = vec![DEFAULT; cell_count(CELL_DEGREES)];
    for (loc, answer) in [(FRANKFURT, EUROPE), (PARIS, EUROPE), (NEW_YORK, AMERICA)] {
        cells[cell_index(CELL_DEGREES, loc.0, loc.1) as usize] = answer;
    }
    ServiceMap {
        name: service_name.into(),
        ttl: 30,
        use_ecs,
        answers: vec![
            answer(&[default_v4], &["2001:db8::1"], "default"),
            answer(&["192.0.2.10", "192.0.2.11"], &["2001:db8::10"], "fra"),
            answer(&["192.0.2.20"], &["2001:db8::20"], "nyc"),
            answer(&["192.0.2.30"], &[], "office"),
        ],
        cell_answers: cells,
        group_answers: HashMap::from([("office".to_string(), OFFICE)]),
        default_answer: DEFAULT,
        ..Default::default()
    }
}

/// The fixture snapshot. The "office" override is 203.0.113.128/25, inside the New York
/// GeoIP network, and 100.64.0.0/10, outside every GeoIP network.
pub fn snapshot(version: u64, default_v4: &str) -> Snapshot {
    Snapshot {
        version,
        config_version: version,
        generated_unix_ms: 1_700_000_000_000,
        grid: Some(GeoGrid {
            cell_degrees: CELL_DEGREES,
        }),
        zones: vec![zone(2024_0000 + version as u32)],
        services: vec![
            service(WWW, true, default_v4),
            service(NOECS, false, default_v4),
        ],
        overrides: vec![ClientGroupOverride {
            group: "office".into(),
            cidrs: vec!["203.0.113.128/25".into(), "100.64.0.0/10".into()],
            asns: Vec::new(),
        }],
        ..Default::default()
    }
}

pub fn engine_with(version: u64) -> Arc<Engine> {
    let engine = Engine::new(Some(geo_db()));
    engine.install(&snapshot(version, "192.0.2.1")).unwrap();
    engine
}

pub async fn dns_server(engine: Arc<Engine>) -> DnsServer {
    DnsServer::bind("127.0.0.1:0".parse().unwrap(), engine, DnsLimits::default())
        .await
        .unwrap()
}

/// A query message; `ecs` is "addr/len" or None; `edns` adds an OPT record.
pub fn query(qname: &str, qtype: RecordType, edns: bool, ecs: Option<&str>) -> Message {
    let mut msg = Message::new(0x4242, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(qname).unwrap(), qtype));
    msg.metadata.recursion_desired = true;
    if edns || ecs.is_some() {
        let mut opt = Edns::new();
        opt.set_max_payload(1232);
        if let Some(ecs) = ecs {
            let subnet: ClientSubnet = ecs.parse().unwrap();
            opt.options_mut().insert(EdnsOption::Subnet(subnet));
        }
        msg.set_edns(opt);
    }
    msg
}

/// Sends over UDP and waits up to `wait` for the answer.
pub async fn udp_exchange(server: SocketAddr, msg: &Message, wait: Duration) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&msg.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let (len, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..len]).unwrap())
}

pub async fn udp(server: SocketAddr, msg: &Message) -> Message {
    udp_exchange(server, msg, Duration::from_secs(5))
        .await
        .expect("no udp answer within 5 s")
}

pub async fn tcp(server: SocketAddr, msg: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let bytes = msg.to_vec().unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len))
        .await
        .expect("no tcp answer within 5 s")
        .unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// The addresses among `records`, in order.
pub fn addrs(records: &[Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// The ECS option echoed in a response: (address, source prefix, scope prefix).
pub fn echoed_ecs(msg: &Message) -> Option<(IpAddr, u8, u8)> {
    match msg.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.addr(), s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}
