//! Serves one RFC 1035 master file with Isobar's DNS frontend, for benchmarks and for
//! comparing with other servers by hand: `serve_zone ZONEFILE [ADDR]`.

use std::sync::Arc;

use hickory_proto::rr::RData;
use hickory_proto::serialize::binary::BinEncodable;
use hickory_proto::serialize::txt::Parser;
use isobar_dns::{DnsLimits, DnsServer, Engine};
use isobar_proto::v1::{Snapshot, ZoneData};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: serve_zone ZONEFILE [ADDR]")?;
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:5353".into())
        .parse()?;
    let text = std::fs::read_to_string(&path)?;
    let (origin, sets) = Parser::new(text, None, None).parse()?;
    let mut serial = 0;
    let mut records = Vec::new();
    for record in sets.values().flat_map(|s| s.records_without_rrsigs()) {
        if let RData::SOA(soa) = &record.data {
            serial = soa.serial;
        }
        records.push(record.to_bytes()?);
    }
    let engine: Arc<Engine> = Engine::new(None);
    engine.install(&Snapshot {
        version: 1,
        zones: vec![ZoneData {
            origin: origin.to_ascii(),
            serial,
            records,
        }],
        ..Default::default()
    })?;
    let server = DnsServer::bind(addr, engine, DnsLimits::default()).await?;
    println!("serving {origin} on {}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
