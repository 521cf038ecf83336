//! Shared fixtures: a complete world config with one zone file, and helpers to parse it.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::BTreeMap;

use isobar_store::config::{ConfigError, Parsed, parse_world};

/// A config exercising every section, with a zone file and an inline zone.
pub const WORLD: &str = r#"# Isobar test world
[server]
dns_listen = "127.0.0.1:5353"

[defaults]
ttl = 30
answers = 2
cell_degrees = 5.0

[health]
interval_ms = 1000
timeout_ms = 800
fall = 3
rise = 2

[[regions]]
name = "eu"
lat = 50.0
lon = 10.0

[[regions]]
name = "us"
lat = 39.0
lon = -98.0

[[pops]]
name = "fra1"
region = "eu"
lat = 50.11
lon = 8.68
capacity = 1000
replica_slots = 4
labels = { provider = "acme" }

[[pops]]
name = "iad1"
region = "us"
lat = 38.95
lon = -77.45
capacity = 800
replica_slots = 2

[[zones]]
name = "Demo.Isobar.Test"
file = "zones/demo.zone"

[[zones]]
name = "static.test."
records = [
  "@ A 192.0.2.10",
  "www 300 IN CNAME @",
]

[[services]]
name = "WWW.demo.isobar.test"
ttl = 20
demand = ["eu", "us"]

[[services.endpoints]]
pop = "fra1"
address = "192.0.2.1"
check = "192.0.2.1:80"

[[services.endpoints]]
pop = "iad1"
address = "2001:DB8::1"
weight = 50

[[client_groups]]
name = "office"
region = "eu"
cidrs = ["198.51.100.0/24", "2001:DB8:1::/48"]
"#;

/// The zone file `WORLD` refers to.
pub const DEMO_ZONE: &str = r#"; demo zone
$ORIGIN demo.isobar.test.
$TTL 600
@   IN SOA ns1 hostmaster (
        2024010101 ; serial
        7200       ; refresh
        900        ; retry
        1209600    ; expire
        300 )      ; minimum
    IN NS ns1
    IN NS ns2.example.net.
ns1 IN A 192.0.2.53
mail 60 IN A 192.0.2.25
@ IN MX 10 mail
txt IN TXT "v=spf1 -all" "second string"
"#;

/// Parses `text` as `world.toml`, with `files` as the only readable zone files.
pub fn parse_with(text: &str, files: &[(&str, &str)]) -> Result<Parsed, ConfigError> {
    let files: BTreeMap<String, String> = files
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let read = move |path: &str| {
        files
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    };
    parse_world("world.toml", text, &read)
}

/// Parses `text` as `world.toml` with the demo zone file available.
pub fn parse(text: &str) -> Result<Parsed, ConfigError> {
    parse_with(text, &[("zones/demo.zone", DEMO_ZONE)])
}

/// The error message of a config that must fail.
pub fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("config unexpectedly accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

/// `WORLD` with `from` replaced by `to` (which must occur exactly once).
pub fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        WORLD.matches(from).count(),
        1,
        "fixture edit {from:?} is ambiguous"
    );
    WORLD.replacen(from, to, 1)
}

/// The 1-based line of the first occurrence of `needle` in `text`.
pub fn line_of(text: &str, needle: &str) -> usize {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in text"));
    text[..offset].matches('\n').count() + 1
}
