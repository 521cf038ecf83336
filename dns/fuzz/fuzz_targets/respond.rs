//! Feeds arbitrary packets to the DNS request handler over both transports: it must
//! never panic, and whatever it sends must be a well-formed DNS message.
#![no_main]

use std::sync::{Arc, OnceLock};

use hickory_proto::op::Message;
use hickory_proto::serialize::binary::BinEncodable;
use hickory_proto::serialize::txt::Parser;
use isobar_dns::{Engine, ServingSnapshot, Transport, respond};
use isobar_proto::v1::{Snapshot, ZoneData};
use libfuzzer_sys::fuzz_target;

const ZONE: &str = r#"$ORIGIN fuzz.test.
$TTL 300
@ SOA ns1 hostmaster 1 7200 900 1209600 60
@ NS ns1
@ MX 10 mail
ns1 A 192.0.2.53
mail A 192.0.2.25
www A 192.0.2.1
www AAAA 2001:db8::1
alias CNAME www
loop1 CNAME loop2
loop2 CNAME loop1
_sip._tcp SRV 1 1 5060 www
txt TXT "hello" "world"
sub NS ns.sub
ns.sub A 192.0.2.55
*.wild A 192.0.2.56
*.wc CNAME www
"#;

fn fixture() -> &'static (Arc<Engine>, Arc<ServingSnapshot>) {
    static FIXTURE: OnceLock<(Arc<Engine>, Arc<ServingSnapshot>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (origin, sets) = Parser::new(ZONE, None, None).parse().expect("zone parses");
        let records = sets
            .values()
            .flat_map(|s| s.records_without_rrsigs())
            .map(|r| r.to_bytes().expect("record encodes"))
            .collect();
        let engine = Engine::new(None);
        engine
            .install(&Snapshot {
                version: 1,
                zones: vec![ZoneData {
                    origin: origin.to_ascii(),
                    serial: 1,
                    records,
                }],
                ..Default::default()
            })
            .expect("snapshot installs");
        let snapshot = engine.current();
        (engine, snapshot)
    })
}

fuzz_target!(|packet: &[u8]| {
    let (engine, snapshot) = fixture();
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let source = "192.0.2.7".parse().expect("literal address");
        if respond(engine, snapshot, packet, source, transport, &mut out).is_some() {
            assert!(Message::from_vec(&out).is_ok(), "unparsable response {out:02x?}");
            if transport == Transport::Udp {
                assert!(out.len() <= 1232, "udp response of {} octets", out.len());
            }
        }
    }
});
