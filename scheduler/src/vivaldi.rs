//! Vivaldi network coordinates with height (Dabek et al., SIGCOMM 2004; as in Serf/Consul),
//! fitted centrally from the measured RTT matrix to estimate pairs nobody measured.
//!
//! Each node gets an 8-dimensional Euclidean position plus a height (its access-link
//! latency); the predicted RTT between two nodes is the distance between their positions plus
//! both heights. The fit replays the measured pairs as Vivaldi samples in a deterministic
//! pseudo-random order, so the same matrix always yields the same coordinates (the solvers
//! stay pure functions of their inputs).

/// Dimensions of the Euclidean part (Serf's choice).
pub const DIMS: usize = 8;
/// Error sensitivity `ce` and timestep `cc` from the paper (Serf uses the same).
const CE: f64 = 0.25;
const CC: f64 = 0.25;
/// Heights never go below this, milliseconds: a zero height could not move.
const HEIGHT_MIN_MS: f64 = 0.01;
/// Initial and largest error estimate.
const ERROR_MAX: f64 = 1.5;
/// Below this, two positions count as coincident and a random direction is used.
const ZERO: f64 = 1e-6;

/// One node's coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coord {
    /// Euclidean position, milliseconds.
    pub vec: [f64; DIMS],
    /// Height, milliseconds.
    pub height: f64,
    /// The node's confidence: 0 = exact, [`ERROR_MAX`] = unknown.
    pub error: f64,
}

/// One measured pair: node indices and RTT in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Measuring node.
    pub from: usize,
    /// Measured node.
    pub to: usize,
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
}

impl Default for Coord {
    fn default() -> Self {
        Self {
            vec: [0.0; DIMS],
            height: HEIGHT_MIN_MS,
            error: ERROR_MAX,
        }
    }
}

impl Coord {
    /// Predicted RTT to `other`, milliseconds.
    pub fn rtt_to(&self, other: &Coord) -> f64 {
        distance(&self.vec, &other.vec) + self.height + other.height
    }
}

/// Fits coordinates for `nodes` nodes from `pairs`, replaying every pair `rounds` times in a
/// shuffled order. Pairs with non-positive or non-finite RTTs are ignored.
pub fn fit(nodes: usize, pairs: &[Pair], rounds: usize) -> Vec<Coord> {
    let mut coords = vec![Coord::default(); nodes];
    let usable: Vec<Pair> = pairs
        .iter()
        .copied()
        .filter(|p| p.rtt_ms.is_finite() && p.rtt_ms > 0.0 && p.from < nodes && p.to < nodes)
        .filter(|p| p.from != p.to)
        .collect();
    if usable.is_empty() {
        return coords;
    }
    let mut rng = SplitMix64(0x1505_0BA2_u64 ^ (nodes as u64) << 32 ^ usable.len() as u64);
    let mut order: Vec<usize> = (0..usable.len()).collect();
    for _ in 0..rounds {
        // Fisher-Yates: a fresh order each round avoids settling into a cycle.
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &k in &order {
            let p = usable[k];
            let other = coords[p.to];
            update(&mut coords[p.from], &other, p.rtt_ms, &mut rng);
            let this = coords[p.from];
            update(&mut coords[p.to], &this, p.rtt_ms, &mut rng);
        }
    }
    coords
}

/// One Vivaldi update of `me` from a sample of `rtt_ms` to `other`.
fn update(me: &mut Coord, other: &Coord, rtt_ms: f64, rng: &mut SplitMix64) {
    let dist = me.rtt_to(other);
    let weight = me.error / (me.error + other.error).max(ZERO);
    let sample_error = (dist - rtt_ms).abs() / rtt_ms;
    me.error = (sample_error * CE * weight + me.error * (1.0 - CE * weight)).min(ERROR_MAX);
    let force = CC * weight * (rtt_ms - dist);
    // Move along the unit vector from `other` to `me` (away when too close, towards when
    // too far); heights move in proportion, as in Serf.
    let mut unit = [0.0; DIMS];
    let mut mag = 0.0;
    for (i, u) in unit.iter_mut().enumerate() {
        *u = me.vec[i] - other.vec[i];
        mag += *u * *u;
    }
    mag = mag.sqrt();
    if mag > ZERO {
        for u in &mut unit {
            *u /= mag;
        }
    } else {
        let mut norm = 0.0;
        for u in &mut unit {
            *u = rng.unit() - 0.5;
            norm += *u * *u;
        }
        let norm = norm.sqrt().max(ZERO);
        for u in &mut unit {
            *u /= norm;
        }
    }
    for (i, u) in unit.iter().enumerate() {
        me.vec[i] += u * force;
    }
    if mag > ZERO {
        me.height = ((me.height + other.height) * force / mag + me.height).max(HEIGHT_MIN_MS);
    }
}

fn distance(a: &[f64; DIMS], b: &[f64; DIMS]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// A tiny deterministic generator (SplitMix64); quality is ample for shuffling.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metro areas (lat, lon) weighted towards where Internet users and PoPs are.
    const CITIES: [(f64, f64); 40] = [
        (50.11, 8.68),
        (51.51, -0.13),
        (48.86, 2.35),
        (52.37, 4.90),
        (40.42, -3.70),
        (45.46, 9.19),
        (59.33, 18.07),
        (52.23, 21.01),
        (50.08, 14.44),
        (41.01, 28.98),
        (55.76, 37.62),
        (38.95, -77.45),
        (40.71, -74.01),
        (41.88, -87.63),
        (33.75, -84.39),
        (32.78, -96.80),
        (37.77, -122.42),
        (34.05, -118.24),
        (47.61, -122.33),
        (43.65, -79.38),
        (45.50, -73.57),
        (19.43, -99.13),
        (-23.55, -46.63),
        (-34.60, -58.38),
        (4.71, -74.07),
        (-33.45, -70.67),
        (1.35, 103.82),
        (35.68, 139.69),
        (37.57, 126.98),
        (22.32, 114.17),
        (31.23, 121.47),
        (39.90, 116.41),
        (19.08, 72.88),
        (28.61, 77.21),
        (13.08, 80.27),
        (-33.87, 151.21),
        (-37.81, 144.96),
        (-36.85, 174.76),
        (25.20, 55.27),
        (-26.20, 28.05),
    ];

    fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
        let (la1, lo1, la2, lo2) = (
            a.0.to_radians(),
            a.1.to_radians(),
            b.0.to_radians(),
            b.1.to_radians(),
        );
        let h = ((la2 - la1) / 2.0).sin().powi(2)
            + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
        2.0 * 6371.0 * h.sqrt().asin()
    }

    /// A geo-realistic RTT matrix: three nodes per metro, RTT = fibre propagation over the
    /// great circle (200 km/ms, both ways) × a per-pair route inflation of 1.2–1.6, plus each
    /// node's access latency (1–15 ms, on both ends), plus ±5 % measurement noise.
    fn synthetic(rng: &mut SplitMix64) -> (usize, Vec<Pair>) {
        let mut nodes = Vec::new();
        for &(lat, lon) in &CITIES {
            for _ in 0..3 {
                let at = (lat + rng.unit() - 0.5, lon + rng.unit() - 0.5);
                let access_ms = 1.0 + 14.0 * rng.unit();
                nodes.push((at, access_ms));
            }
        }
        let mut pairs = Vec::new();
        for i in 0..nodes.len() {
            for j in (i + 1)..nodes.len() {
                let km = great_circle_km(nodes[i].0, nodes[j].0);
                let inflation = 1.2 + 0.4 * rng.unit();
                let base = 2.0 * km * inflation / 200.0 + nodes[i].1 + nodes[j].1;
                let noise = 1.0 + 0.1 * (rng.unit() - 0.5);
                pairs.push(Pair {
                    from: i,
                    to: j,
                    rtt_ms: base * noise,
                });
            }
        }
        (nodes.len(), pairs)
    }

    /// The Vivaldi paper's figure: a median relative error of about 11 % on real Internet
    /// data. Fit on 80 % of the pairs, measure on the 20 % held out.
    #[test]
    fn median_relative_error_on_held_out_pairs_is_at_most_11_percent() {
        let mut rng = SplitMix64(42);
        let (n, pairs) = synthetic(&mut rng);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for p in pairs {
            if rng.unit() < 0.2 {
                test.push(p);
            } else {
                train.push(p);
            }
        }
        let coords = fit(n, &train, 60);
        let mut errors: Vec<f64> = test
            .iter()
            .map(|p| (coords[p.from].rtt_to(&coords[p.to]) - p.rtt_ms).abs() / p.rtt_ms)
            .collect();
        errors.sort_by(f64::total_cmp);
        let median = errors[errors.len() / 2];
        let p90 = errors[errors.len() * 9 / 10];
        println!(
            "vivaldi: {n} nodes, {} training pairs, {} held out: median relative error {:.1} %, p90 {:.1} %",
            train.len(),
            test.len(),
            median * 100.0,
            p90 * 100.0
        );
        assert!(median <= 0.11, "median relative error {median}");
    }

    #[test]
    fn fit_is_deterministic_and_recovers_a_simple_triangle() {
        let pairs = [
            Pair {
                from: 0,
                to: 1,
                rtt_ms: 10.0,
            },
            Pair {
                from: 1,
                to: 2,
                rtt_ms: 10.0,
            },
            Pair {
                from: 0,
                to: 2,
                rtt_ms: 10.0,
            },
        ];
        let a = fit(3, &pairs, 200);
        assert_eq!(a, fit(3, &pairs, 200));
        for p in &pairs {
            let got = a[p.from].rtt_to(&a[p.to]);
            assert!((got - 10.0).abs() < 1.0, "{got}");
        }
        // Unmeasured nodes and bad samples leave defaults.
        let b = fit(
            2,
            &[Pair {
                from: 0,
                to: 1,
                rtt_ms: f64::NAN,
            }],
            10,
        );
        assert_eq!(b, vec![Coord::default(); 2]);
    }
}
