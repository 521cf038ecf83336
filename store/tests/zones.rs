//! Zones as a user writes them: zone files, inline records, canonical form, apex records
//! and the rules records must follow.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::{DEMO_ZONE, WORLD, edit, error, line_of, parse, parse_with};
use hickory_proto::rr::rdata::{CAA, MX, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};
use isobar_store::config::{ConfigError, to_toml, zone_records};

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

#[test]
fn a_zone_without_soa_or_ns_gets_synthesized_ones() {
    let world = parse(WORLD).unwrap().world;
    assert_eq!(
        world.zones[1].records,
        [
            "static.test. 3600 IN A 192.0.2.10",
            "static.test. 3600 IN NS ns1.static.test.",
            "static.test. 3600 IN SOA ns1.static.test. hostmaster.static.test. 1 7200 900 1209600 300",
            "www.static.test. 300 IN CNAME static.test.",
        ]
    );
}

#[test]
fn a_given_apex_ns_suppresses_only_the_synthesized_ns() {
    let text = edit(
        "\"@ A 192.0.2.10\",",
        "\"@ A 192.0.2.10\", \"@ NS ns.example.net.\",",
    );
    let records = &parse(&text).unwrap().world.zones[1].records;
    assert!(records.contains(&"static.test. 3600 IN NS ns.example.net.".to_owned()));
    assert!(
        !records.iter().any(|r| r.contains("NS ns1.static.test.")),
        "{records:?}"
    );
    assert!(
        records.iter().any(|r| r.contains(" IN SOA ")),
        "{records:?}"
    );
}

#[test]
fn a_service_must_not_shadow_static_address_records() {
    for (record, rtype) in [
        ("\"api A 192.0.2.7\"", "A"),
        ("\"api AAAA 2001:db8::7\"", "AAAA"),
        ("\"api CNAME www\"", "CNAME"),
    ] {
        let text = edit(
            "\"www 300 IN CNAME @\",",
            &format!("\"www 300 IN CNAME @\", {record},"),
        ) + "\n[[services]]\nname = \"api.static.test\"\n";
        let err = error(&text);
        let line = line_of(&text, "\"api.static.test\"");
        assert_eq!(
            err,
            format!(
                "world.toml:{line}:8: services[1].name: service api.static.test. conflicts with the static \
                 {rtype} record in zone static.test."
            )
        );
    }
}

#[test]
fn inline_record_errors_point_at_the_entry() {
    let text = edit(
        "\"www 300 IN CNAME @\",",
        "\"www 300 IN CNAME @\",\n  \"mx MX ten mail\",",
    );
    let err = error(&text);
    let line = line_of(&text, "\"mx MX");
    assert!(
        err.starts_with(&format!(
            "world.toml:{line}:3: zones[1].records[2]: MX record:"
        )),
        "{err}"
    );
}

#[test]
fn zone_file_errors_name_the_zone_file_and_line() {
    let cases = [
        (
            "mail 60 IN A 192.0.2.25",
            "mail 60 IN A bogus",
            "A record: network address parse error",
        ),
        (
            "mail 60 IN A 192.0.2.25",
            "mail 60 IN SOA a b 1 2 3 4 5",
            "SOA record must be at the zone apex demo.isobar.test., not at mail.demo.isobar.test.",
        ),
        (
            "mail 60 IN A 192.0.2.25",
            "mail.example.org. 60 IN A 192.0.2.1",
            "owner mail.example.org. is outside zone demo.isobar.test.",
        ),
        (
            "mail 60 IN A 192.0.2.25",
            "mail 60 IN CNAME www\nmail 60 IN TXT \"x\"",
            "CNAME at mail.demo.isobar.test. must be the only record at that name",
        ),
        (
            "mail 60 IN A 192.0.2.25",
            "$INCLUDE other.zone",
            "$INCLUDE is not supported",
        ),
        (
            "mail 60 IN A 192.0.2.25",
            "mail 60 CH A 192.0.2.25",
            "class CH is not supported (only IN)",
        ),
        (
            "mail 60 IN A 192.0.2.25",
            "mail 60 IN TXT \"unterminated",
            "line break inside a quoted string",
        ),
    ];
    for (from, to, message) in cases {
        let zone = DEMO_ZONE.replace(from, to);
        let err = parse_with(WORLD, &[("zones/demo.zone", &zone)])
            .unwrap_err()
            .to_string();
        let expected = format!(
            "zones/demo.zone:{}:1: zones[0].file: {message}",
            line_of(&zone, to)
        );
        assert!(err.starts_with(&expected), "got: {err}\nwanted: {expected}");
    }
}

#[test]
fn an_unreadable_zone_file_is_reported_where_the_config_names_it() {
    let err = parse_with(WORLD, &[]).unwrap_err();
    assert!(matches!(err, ConfigError::ZoneFile { .. }), "{err:?}");
    let line = line_of(WORLD, "file = ");
    assert_eq!(
        err.to_string(),
        format!("world.toml:{line}:8: zones[0].file: cannot read zones/demo.zone: no such file")
    );
}

#[test]
fn a_zone_may_not_have_both_a_file_and_records() {
    let text = edit(
        "file = \"zones/demo.zone\"",
        "file = \"zones/demo.zone\"\nrecords = [\"x A 192.0.2.1\"]",
    );
    let line = line_of(&text, "file = ");
    assert_eq!(
        error(&text),
        format!("world.toml:{line}:8: zones[0].file: set either `file` or `records`, not both")
    );
}

#[test]
fn overlong_txt_strings_are_refused() {
    let long = "x".repeat(256);
    let text = edit(
        "\"@ A 192.0.2.10\",",
        &format!("\"@ A 192.0.2.10\", 't TXT \"{long}\"',"),
    );
    let err = error(&text);
    assert!(
        err.contains("zones[1].records[1]: TXT record cannot be encoded"),
        "{err}"
    );
}

#[test]
fn zone_file_directives_and_ttl_inheritance() {
    let zone = "\
$ORIGIN demo.isobar.test.
@ 300 IN SOA ns1 hostmaster ( 7 3600 600
    86400 60 )
  NS ns1            ; inherits owner and the previous TTL (no $TTL yet)
$TTL 1h
ns1 A 192.0.2.53    ; takes $TTL
$ORIGIN sub.demo.isobar.test.
www 30 A 192.0.2.80 ; relative to the new origin
";
    let world = parse_with(WORLD, &[("zones/demo.zone", zone)])
        .unwrap()
        .world;
    assert_eq!(
        world.zones[0].records,
        [
            "demo.isobar.test. 300 IN NS ns1.demo.isobar.test.",
            "demo.isobar.test. 300 IN SOA ns1.demo.isobar.test. hostmaster.demo.isobar.test. 7 3600 600 86400 60",
            "ns1.demo.isobar.test. 3600 IN A 192.0.2.53",
            "www.sub.demo.isobar.test. 30 IN A 192.0.2.80",
        ]
    );
}

/// Every supported type, written loosely, must come out canonical and parse back to the
/// same records: same owner, TTL, class and RDATA.
#[test]
fn canonical_records_round_trip_to_identical_records() {
    let inputs = [
        ("@ A 192.0.2.1", "example.test. 3600 IN A 192.0.2.1"),
        (
            "v6 120 AAAA 2001:DB8:0:0::1",
            "v6.example.test. 120 IN AAAA 2001:db8::1",
        ),
        (
            "@ NS NS1.Example.Net.",
            "example.test. 3600 IN NS ns1.example.net.",
        ),
        (
            "Alias CNAME target",
            "alias.example.test. 3600 IN CNAME target.example.test.",
        ),
        (
            "@ IN 60 MX 10 mail",
            "example.test. 60 IN MX 10 mail.example.test.",
        ),
        (
            r#"t TXT "hello world" "say \"hi\"" back\\slash "semi;colon""#,
            r#"t.example.test. 3600 IN TXT "hello world" "say \"hi\"" "back\\slash" "semi;colon""#,
        ),
        (
            "_sip._tcp SRV 10 60 5060 sip",
            "_sip._tcp.example.test. 3600 IN SRV 10 60 5060 sip.example.test.",
        ),
        (
            r#"@ CAA 0 issue "ca.example.net""#,
            r#"example.test. 3600 IN CAA 0 issue "ca.example.net""#,
        ),
        (
            r#"@ CAA 128 iodef "mailto:a@b.test""#,
            r#"example.test. 3600 IN CAA 128 iodef "mailto:a@b.test""#,
        ),
        (
            "@ SOA ns1 hostmaster 5 7200 900 1209600 300",
            "example.test. 3600 IN SOA ns1.example.test. hostmaster.example.test. 5 7200 900 1209600 300",
        ),
        (
            "1.2 PTR host.example.net.",
            "1.2.example.test. 3600 IN PTR host.example.net.",
        ),
    ];
    let records: Vec<String> = inputs.iter().map(|(i, _)| format!("{i:?}")).collect();
    let text = format!(
        "[[zones]]\nname = \"example.test\"\nrecords = [{}]\n",
        records.join(", ")
    );
    let world = parse_with(&text, &[]).unwrap().world;
    let zone = &world.zones[0];
    let mut expected: Vec<&str> = inputs.iter().map(|(_, c)| *c).collect();
    expected.sort_unstable();
    assert_eq!(zone.records, expected);

    // Re-parsing the canonical text gives exactly the records the loose text gave.
    let parsed = zone_records(zone).unwrap();
    let again = parse_with(&to_toml(&world), &[]).unwrap().world;
    assert_eq!(again, world, "canonical text is a fixed point");
    let find = |owner: &str, rtype: &str| -> &Record {
        let owner = name(owner);
        parsed
            .iter()
            .find(|r| r.name == owner && r.record_type().to_string() == rtype)
            .unwrap_or_else(|| panic!("{owner} {rtype} missing"))
    };
    let txt = find("t.example.test.", "TXT");
    assert_eq!(
        txt.data,
        RData::TXT(TXT::new(vec![
            "hello world".into(),
            "say \"hi\"".into(),
            "back\\slash".into(),
            "semi;colon".into()
        ]))
    );
    assert_eq!(txt.ttl, 3600);
    let soa = find("example.test.", "SOA");
    assert_eq!(
        soa.data,
        RData::SOA(SOA::new(
            name("ns1.example.test."),
            name("hostmaster.example.test."),
            5,
            7200,
            900,
            1209600,
            300
        ))
    );
    assert_eq!(
        find("example.test.", "MX").data,
        RData::MX(MX::new(10, name("mail.example.test.")))
    );
    assert_eq!(find("example.test.", "MX").ttl, 60);
    assert_eq!(
        find("_sip._tcp.example.test.", "SRV").data,
        RData::SRV(SRV::new(10, 60, 5060, name("sip.example.test.")))
    );
    assert_eq!(
        find("v6.example.test.", "AAAA").data,
        RData::AAAA("2001:db8::1".parse::<Ipv6Addr>().unwrap().into())
    );
    assert_eq!(
        find("example.test.", "A").data,
        RData::A(Ipv4Addr::new(192, 0, 2, 1).into())
    );
    let caa: Vec<&CAA> = parsed
        .iter()
        .filter_map(|r| match &r.data {
            RData::CAA(caa) => Some(caa),
            _ => None,
        })
        .collect();
    assert_eq!(caa.len(), 2);
    assert!(
        caa.iter()
            .any(|c| c.issuer_critical && c.tag == "iodef" && c.value == b"mailto:a@b.test")
    );
    assert!(
        zone.records
            .iter()
            .all(|r| r.split(' ').nth(2) == Some("IN"))
    );
    assert_eq!(parsed.len(), zone.records.len());
}
