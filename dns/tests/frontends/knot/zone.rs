//! The zone both servers serve in the differential test: every conformance point has a
//! name here (see docs/dns-conformance.md).

/// The zone origin.
pub const ORIGIN: &str = "diff.test.";

/// The zone in RFC 1035 master-file format.
pub fn text() -> String {
    let long = (0..2)
        .map(|_| format!("\"{}\"", "l".repeat(200)))
        .collect::<Vec<_>>()
        .join(" ");
    let huge = (0..6)
        .map(|_| format!("\"{}\"", "h".repeat(250)))
        .collect::<Vec<_>>()
        .join(" ");
    let many = (1..=40)
        .map(|i| format!("many A 192.0.2.{i}\n"))
        .collect::<String>();
    format!(
        r#"$ORIGIN diff.test.
$TTL 3600
@ SOA ns1 hostmaster 2024010101 7200 900 1209600 300
@ NS ns1
@ NS ns2.elsewhere.example.
@ MX 10 mail
@ MX 20 mail.elsewhere.example.
@ TXT "v=spf1 -all"
@ CAA 0 issue "letsencrypt.org"
ns1 A 192.0.2.53
ns1 AAAA 2001:db8::53
mail A 192.0.2.25
mail AAAA 2001:db8::25
www 300 A 192.0.2.1
www 300 A 192.0.2.2
www 300 AAAA 2001:db8::1
alias CNAME www
chain1 CNAME chain2
chain2 CNAME chain3
chain3 CNAME www
loop1 CNAME loop2
loop2 CNAME loop1
self CNAME self
dangling CNAME nothere
outside CNAME www.example.com.
tocut CNAME host.sub
tomx CNAME diff.test.
_sip._tcp SRV 10 60 5060 sip
sip A 192.0.2.60
txt TXT "hello world"
long TXT {long}
huge TXT {huge}
{many}a.b A 192.0.2.54
deep.ent.x.y A 192.0.2.57
sub NS ns.sub
sub NS ns.elsewhere.example.
ns.sub A 192.0.2.55
*.wild A 192.0.2.56
*.wild TXT "wild"
*.wc CNAME www
order1 TXT "t"
order1 MX 10 mail
order1 A 192.0.2.7
order2 MX 10 mail
order2 TXT "t"
ptr PTR www
"#
    )
}

/// Names (relative to the origin, "@" for the apex) the corpus asks about.
pub const NAMES: &[&str] = &[
    "@",
    "ns1",
    "mail",
    "www",
    "WwW",
    "alias",
    "chain1",
    "loop1",
    "self",
    "dangling",
    "outside",
    "tocut",
    "tomx",
    "_sip._tcp",
    "sip",
    "txt",
    "long",
    "many",
    "a.b",
    "b",
    "x.y",
    "ent.x.y",
    "nothere",
    "deep.nothere",
    "sub",
    "ns.sub",
    "host.sub",
    "x.wild",
    "a.b.wild",
    "wild",
    "x.wc",
    "order1",
    "order2",
    "ptr",
    "*.wild",
];

/// Query types asked for every name.
pub const TYPES: &[u16] = &[1, 28, 15, 16, 33, 257, 2, 6, 5, 255, 43, 12, 99];
