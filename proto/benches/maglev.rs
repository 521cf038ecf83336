//! Maglev table builds (10/100/1000 equal nodes, 1000 weighted, 1000 with nodes down) and
//! picks, one core.
//!
//! `cargo bench -p isobar-proto --bench maglev`. The peer for `pick` is `client_key_addr`, the
//! hash every query computes anyway.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use divan::Bencher;
use isobar_proto::hash::client_key_addr;
use isobar_proto::maglev::Maglev;

fn main() {
    divan::main();
}

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

#[divan::bench(args = [10, 100, 1000])]
fn build(bencher: Bencher, n: usize) {
    let names = names(n);
    let nodes: Vec<(&str, u32)> = names.iter().map(|s| (s.as_str(), 1)).collect();
    bencher.bench(|| Maglev::new(black_box(&nodes), None));
}

#[divan::bench]
fn build_1000_weighted(bencher: Bencher) {
    let names = names(1000);
    let nodes: Vec<(&str, u32)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), 1 + (i % 7) as u32 * 100))
        .collect();
    bencher.bench(|| Maglev::new(black_box(&nodes), None));
}

/// The health-aware build with 1 and with 500 of 1000 nodes down: the primary table, the
/// fallback table and the bounded hand-over of the down nodes' slots.
#[divan::bench(args = [1, 500])]
fn build_1000_with_down(bencher: Bencher, down: usize) {
    let names = names(1000);
    let nodes: Vec<(&str, u32)> = names.iter().map(|s| (s.as_str(), 1)).collect();
    let flags: Vec<bool> = (0..1000).map(|i| i % (1000 / down) == 0).collect();
    bencher.bench(|| Maglev::with_health(black_box(&nodes), black_box(&flags), None));
}

#[divan::bench]
fn pick_1000(bencher: Bencher) {
    let names = names(1000);
    let nodes: Vec<(&str, u32)> = names.iter().map(|s| (s.as_str(), 1)).collect();
    let m = Maglev::new(&nodes, None);
    let mut key = 0u64;
    bencher.bench_local(|| {
        key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
        m.pick(black_box(key))
    });
}

#[divan::bench]
fn pick_n3_1000(bencher: Bencher) {
    let names = names(1000);
    let nodes: Vec<(&str, u32)> = names.iter().map(|s| (s.as_str(), 1)).collect();
    let m = Maglev::new(&nodes, None);
    let mut key = 0u64;
    let mut out = [0u32; 3];
    bencher.bench_local(|| {
        key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
        m.pick_n(black_box(key), 3, &mut out)
    });
}

#[divan::bench]
fn client_key_addr_v4(bencher: Bencher) {
    let mut a = 0u32;
    bencher.bench_local(|| {
        a = a.wrapping_add(0x0101_0101);
        client_key_addr(black_box(IpAddr::V4(Ipv4Addr::from_bits(a))), 32)
    });
}
