//! Telemetry ingest throughput: how many probe results per second one core turns into
//! health votes and measurement windows (issue 4 asks for at least 10 000/s).
//!
//! `taskset -c 0 cargo bench -p isobar-scheduler --bench ingest`

use std::collections::BTreeMap;
use std::sync::Arc;

use divan::counter::ItemsCount;
use isobar_proto::v1::{Measurement, MeasurementBatch};
use isobar_scheduler::Scheduler;
use isobar_store::Store;

/// Vantages × targets of the benchmark world: 10 PoPs probing 300 endpoints.
const VANTAGES: usize = 10;
const TARGETS: usize = 300;
/// Measurements per batch, the prober's MAX_BATCH.
const BATCH: usize = 500;

fn main() {
    divan::main();
}

fn world() -> String {
    let mut t = String::from(
        "[[regions]]\nname = \"eu\"\nlat = 50.0\nlon = 8.0\n\n\
         [[zones]]\nname = \"bench.test.\"\nrecords = [\"@ 300 IN NS ns1\", \"ns1 300 IN A 192.0.2.53\"]\n\n",
    );
    for v in 0..VANTAGES {
        t += &format!("[[pops]]\nname = \"p{v}\"\nregion = \"eu\"\nlat = 50.0\nlon = {v}.0\n\n");
    }
    for s in 0..TARGETS / 3 {
        t += &format!("[[services]]\nname = \"s{s}.bench.test.\"\nendpoints = [\n");
        for e in 0..3 {
            let n = s * 3 + e;
            t += &format!(
                "  {{ pop = \"p{}\", address = \"10.1.{}.{}\", check = \"10.1.{}.{}:80\" }},\n",
                n % VANTAGES,
                n / 250,
                n % 250,
                n / 250,
                n % 250
            );
        }
        t += "]\n";
    }
    t
}

fn scheduler(rt: &tokio::runtime::Runtime) -> Arc<Scheduler> {
    rt.block_on(async {
        let store = Store::open("sqlite::memory:").await.expect("store");
        let s = Scheduler::open(store).await.expect("scheduler");
        s.apply_config("bench.toml", &world(), &BTreeMap::new(), false, "bench")
            .await
            .expect("apply");
        s
    })
}

/// Batches as probers send them: every vantage's results, 5 % failures spread so targets
/// flip now and then (transitions are the expensive path).
fn batches() -> Vec<MeasurementBatch> {
    let ids: Vec<String> = (0..TARGETS)
        .map(|n| format!("tcp://10.1.{}.{}:80", n / 250, n % 250))
        .collect();
    let mut out = Vec::new();
    let mut seq = 0u64;
    for round in 0..20 {
        for v in 0..VANTAGES {
            let mut measurements = Vec::with_capacity(BATCH);
            for i in 0..BATCH {
                seq += 1;
                let n = (round * BATCH + i) % TARGETS;
                measurements.push(Measurement {
                    target_id: ids[n].clone(),
                    at_unix_ms: 1_700_000_000_000 + seq as i64,
                    success: !(seq + v as u64).is_multiple_of(20),
                    rtt_us: 1_000 + (seq % 500) as u32,
                    error: String::new(),
                    seq,
                });
            }
            out.push(MeasurementBatch {
                vantage: format!("p{v}"),
                measurements,
                loads: Vec::new(),
            });
        }
    }
    out
}

#[divan::bench(sample_count = 20, sample_size = 1)]
fn ingest(bencher: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = scheduler(&rt);
    let batches = batches();
    let total: usize = batches.iter().map(|b| b.measurements.len()).sum();
    bencher.counter(ItemsCount::new(total)).bench_local(|| {
        for b in &batches {
            divan::black_box(s.ingest(b));
        }
    });
}
