//! The config format as a user meets it: parsing, normalization, error positions and
//! export.

mod common;

use common::{DEMO_ZONE, WORLD, edit, error, line_of, parse, parse_with};
use isobar_store::config::{ConfigError, load_world_file, to_toml};

#[test]
fn the_example_world_parses_and_is_normalized() {
    let parsed = parse(WORLD).unwrap();
    let world = &parsed.world;

    let server = parsed.server.expect("server table is returned");
    assert_eq!(server["dns_listen"].as_str(), Some("127.0.0.1:5353"));
    assert_eq!(parsed.files.keys().collect::<Vec<_>>(), ["zones/demo.zone"]);

    let zone_names: Vec<&str> = world.zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(zone_names, ["demo.isobar.test.", "static.test."]);
    assert_eq!(world.zones[0].file, None, "zone file contents are inlined");
    assert_eq!(
        world.zones[0].records,
        [
            "demo.isobar.test. 600 IN MX 10 mail.demo.isobar.test.",
            "demo.isobar.test. 600 IN NS ns1.demo.isobar.test.",
            "demo.isobar.test. 600 IN NS ns2.example.net.",
            "demo.isobar.test. 600 IN SOA ns1.demo.isobar.test. hostmaster.demo.isobar.test. \
             2024010101 7200 900 1209600 300",
            "mail.demo.isobar.test. 60 IN A 192.0.2.25",
            "ns1.demo.isobar.test. 600 IN A 192.0.2.53",
            "txt.demo.isobar.test. 600 IN TXT \"v=spf1 -all\" \"second string\"",
        ]
    );

    let service = world
        .service("www.demo.isobar.test.")
        .expect("service name is normalized");
    assert_eq!(service.ttl, Some(20));
    assert!(service.ecs, "ecs defaults to true");
    let addresses: Vec<&str> = service
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addresses, ["192.0.2.1", "2001:db8::1"]);
    assert_eq!(service.endpoints[0].weight, 100, "weight defaults to 100");
    assert_eq!(
        world.client_groups[0].cidrs,
        ["198.51.100.0/24", "2001:db8:1::/48"]
    );
    assert_eq!(world.pop("fra1").unwrap().labels["provider"], "acme");
}

#[test]
fn client_groups_may_name_as_numbers_instead_of_or_besides_prefixes() {
    let only = parse(&edit(
        "cidrs = [\"198.51.100.0/24\", \"2001:DB8:1::/48\"]",
        "asns = [3320, 64512]",
    ))
    .unwrap();
    let group = &only.world.client_groups[0];
    assert_eq!(group.asns, [3320, 64512]);
    assert!(group.cidrs.is_empty());
    let exported = to_toml(&only.world);
    assert!(!exported.contains("cidrs"), "{exported}");
    assert_eq!(parse(&exported).unwrap().world, only.world);

    let both = parse(&edit(
        "cidrs = [\"198.51.100.0/24\", \"2001:DB8:1::/48\"]",
        "cidrs = [\"198.51.100.0/24\"]\nasns = [4200000000]",
    ))
    .unwrap();
    let group = &both.world.client_groups[0];
    assert_eq!(group.cidrs, ["198.51.100.0/24"]);
    assert_eq!(group.asns, [4_200_000_000]);
    // A group without AS numbers exports without the key.
    assert!(!to_toml(&parse(WORLD).unwrap().world).contains("asns"));
}

/// Asserts that `text` fails with exactly `world.toml:<line of needle>:<col>: <rest>`.
fn assert_error_at(text: &str, needle: &str, column: usize, rest: &str) {
    let expected = format!("world.toml:{}:{column}: {rest}", line_of(text, needle));
    assert_eq!(error(text), expected);
}

#[test]
fn toml_syntax_errors_give_the_position() {
    let text = edit("[health]", "[health");
    assert_error_at(&text, "[health", 8, "unclosed table, expected `]`");
}

#[test]
fn type_errors_give_position_and_field_path() {
    let text = edit("capacity = 800", "capacity = \"x\"");
    assert_error_at(
        &text,
        "capacity = \"x\"",
        12,
        "pops[1].capacity: invalid type: string \"x\", expected u64",
    );
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let text = edit("replica_slots = 2", "replica_slots = 2\ncolour = \"red\"");
    let err = error(&text);
    let prefix = format!(
        "world.toml:{}:1: pops[1].colour: unknown field `colour`",
        line_of(&text, "colour")
    );
    assert!(err.starts_with(&prefix), "{err}");
}

#[test]
fn missing_fields_point_at_their_table() {
    let text = edit("name = \"us\"\nlat = 39.0\n", "name = \"us\"\n");
    let err = error(&text);
    assert!(err.ends_with("regions[1]: missing field `lat`"), "{err}");
    assert!(
        err.starts_with("world.toml:21:"),
        "the [[regions]] header is on line 21: {err}"
    );
}

#[test]
fn the_server_table_must_be_a_table() {
    let text = edit("[server]\ndns_listen = \"127.0.0.1:5353\"", "server = 5");
    let err = error(&text);
    assert!(
        err.starts_with("world.toml:2:10: server: invalid type: integer `5`"),
        "{err}"
    );
}

#[test]
fn semantic_errors_give_position_and_field_path() {
    let cases: &[(&str, &str, &str, usize, &str)] = &[
        (
            "region = \"us\"",
            "region = \"mars\"",
            "\"mars\"",
            10,
            "pops[1].region: unknown region mars",
        ),
        (
            "lat = 50.11",
            "lat = 95.0",
            "95.0",
            7,
            "pops[0].lat: latitude must be in [-90, 90], got 95",
        ),
        (
            "lon = -98.0",
            "lon = 181.0",
            "181.0",
            7,
            "regions[1].lon: longitude must be in [-180, 180], got 181",
        ),
        (
            "cell_degrees = 5.0",
            "cell_degrees = 0.0",
            "cell_degrees",
            16,
            "defaults.cell_degrees: must be in (0, 90], got 0",
        ),
        (
            "interval_ms = 1000",
            "interval_ms = 10",
            "interval_ms = 10",
            15,
            "health.interval_ms: must be at least 50, got 10",
        ),
        (
            "timeout_ms = 800",
            "timeout_ms = 5",
            "timeout_ms = 5",
            14,
            "health.timeout_ms: must be at least 10, got 5",
        ),
        (
            "fall = 3",
            "fall = 0",
            "fall = 0",
            8,
            "health.fall: must be at least 1, got 0",
        ),
        (
            "rise = 2",
            "rise = 0",
            "rise = 0",
            8,
            "health.rise: must be at least 1, got 0",
        ),
        (
            "answers = 2",
            "answers = 0",
            "answers = 0",
            11,
            "defaults.answers: must be at least 1",
        ),
        (
            "ttl = 20",
            "ttl = 20\nanswers = 0",
            "answers = 0",
            11,
            "services[0].answers: must be at least 1",
        ),
        (
            "name = \"iad1\"",
            "name = \"fra1\"",
            "name = \"fra1\"\nregion = \"us\"",
            8,
            "pops[1].name: duplicate pop fra1",
        ),
        (
            "pop = \"iad1\"",
            "pop = \"nowhere\"",
            "\"nowhere\"",
            7,
            "services[0].endpoints[1].pop: unknown pop nowhere",
        ),
        (
            "address = \"192.0.2.1\"",
            "address = \"web1\"",
            "\"web1\"",
            11,
            "services[0].endpoints[0].address: \"web1\" is not an IP address",
        ),
        (
            "check = \"192.0.2.1:80\"",
            "check = \"192.0.2.1\"",
            "check = \"192.0.2.1\"",
            9,
            "services[0].endpoints[0].check: \"192.0.2.1\" is not an address:port",
        ),
        (
            "\"198.51.100.0/24\"",
            "\"198.51.100.1/24\"",
            "\"198.51.100.1/24\"",
            10,
            "client_groups[0].cidrs[0]: 198.51.100.1/24 has host bits set (did you mean 198.51.100.0/24?)",
        ),
        (
            "\"198.51.100.0/24\"",
            "\"198.51.100.0\"",
            "\"198.51.100.0\"",
            10,
            "client_groups[0].cidrs[0]: \"198.51.100.0\" is not a CIDR prefix",
        ),
        (
            "name = \"office\"\nregion = \"eu\"",
            "name = \"office\"\nregion = \"asia\"",
            "\"asia\"",
            10,
            "client_groups[0].region: unknown region asia",
        ),
        (
            "cidrs = [\"198.51.100.0/24\", \"2001:DB8:1::/48\"]",
            "cidrs = []",
            "cidrs = []",
            9,
            "client_groups[0].cidrs: must list at least one prefix (or AS number in asns)",
        ),
        (
            "cidrs = [\"198.51.100.0/24\", \"2001:DB8:1::/48\"]",
            "asns = [3320, 0]",
            "0]",
            15,
            "client_groups[0].asns[1]: AS 0 is reserved (RFC 7607) and never announced",
        ),
        (
            "cidrs = [\"198.51.100.0/24\", \"2001:DB8:1::/48\"]",
            "asns = [23456]",
            "23456",
            9,
            "client_groups[0].asns[0]: AS 23456 is AS_TRANS (RFC 6793), a placeholder shared by many networks",
        ),
        (
            "cidrs = [\"198.51.100.0/24\", \"2001:DB8:1::/48\"]",
            "asns = [3320, 64512, 3320]",
            "3320]",
            22,
            "client_groups[0].asns[2]: AS3320 is listed twice",
        ),
        (
            "cidrs = [\"198.51.100.0/24\", \"2001:DB8:1::/48\"]",
            "asns = [3320]\n\n[[client_groups]]\nname = \"isp\"\nregion = \"us\"\nasns = [64512, 3320]",
            ", 3320]",
            16,
            "client_groups[1].asns[1]: AS3320 is already in client group office",
        ),
        (
            "cidrs = [\"198.51.100.0/24\", \"2001:DB8:1::/48\"]",
            "asns = [-5]",
            "asns",
            9,
            "client_groups[0].asns[0]: invalid value: integer `-5`, expected u32",
        ),
        (
            "demand = [\"eu\", \"us\"]",
            "demand = [\"eu\", \"asia\"]",
            "\"asia\"",
            17,
            "services[0].demand[1]: unknown region asia",
        ),
        (
            "WWW.demo.isobar.test",
            "www.elsewhere.test",
            "\"www.elsewhere.test\"",
            8,
            "services[0].name: www.elsewhere.test. is not inside any configured zone",
        ),
    ];
    for (from, to, needle, column, rest) in cases {
        assert_error_at(&edit(from, to), needle, *column, rest);
    }
}

#[test]
fn load_world_file_reads_zone_files_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    std::fs::write(dir.path().join("zones/demo.zone"), DEMO_ZONE).unwrap();
    let path = dir.path().join("world.toml");
    std::fs::write(&path, WORLD).unwrap();
    let loaded = load_world_file(&path).unwrap();
    assert_eq!(loaded, parse(WORLD).unwrap());

    let missing = load_world_file(&dir.path().join("absent.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }), "{missing:?}");
    assert!(
        missing.to_string().contains("absent.toml: cannot read:"),
        "{missing}"
    );

    std::fs::write(&path, edit("capacity = 800", "capacity = -1")).unwrap();
    let err = load_world_file(&path).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:", path.display())),
        "errors name the real path: {err}"
    );
}

#[test]
fn export_then_parse_gives_the_same_world() {
    let world = parse(WORLD).unwrap().world;
    let exported = to_toml(&world);
    assert!(
        !exported.contains("[server]"),
        "the server table is never exported"
    );
    let reparsed = parse_with(&exported, &[]).unwrap();
    assert_eq!(reparsed.world, world);
    assert!(reparsed.files.is_empty(), "exported zones are inline");
}
