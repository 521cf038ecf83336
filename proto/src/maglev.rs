//! Weighted Maglev tables: which node of a site serves a client key, identically everywhere.
//!
//! A frontend builds one [`Maglev`] table per site and family from the site's nodes and picks
//! `table[slot(key)]`; the scheduler's `explain` builds the same table and gets the same
//! node. The construction is part of the wire contract:
//!
//! - **Size** `M`: [`table_size`]`(nodes.len())` — the smallest prime above 100 × the number
//!   of nodes given (weight-0 nodes included), at least 101 — or the next prime at or above an
//!   explicit size (at most [`MAX_TABLE_SIZE`]).
//! - **Permutation** of node `n`: `h = fnv1a64(name)`, `offset = mix(h, OFFSET_SALT) mod M`,
//!   `skip = mix(h, SKIP_SALT) mod (M − 1) + 1`; its `j`-th preference is
//!   `(offset + j · skip) mod M` (see [`crate::hash`]).
//! - **Turns** (weighted Maglev, the virtual-time form of Envoy's credit scheme): node `n`'s
//!   `k`-th turn (k = 1, 2, …) comes at time `k / weight(n)`; turns run in time order, ties in
//!   (name, weight) order. So after `M` turns every node holds `M · w / W` slots, give or take
//!   `N · w / W + 1` (`W` the total weight). On its turn a node takes its next preferred slot that is still free.
//!   Weight-0 nodes take no turns.
//! - **Slot** of a key: `(mix(key, MAGLEV_SALT) · M) >> 64` (a multiply-shift range reduction).
//!
//! Properties (tested in `proto/tests/maglev.rs`): the table depends only on the set of
//! (name, weight), not on input order; with equal weights every node owns ⌊M/N⌋ or ⌈M/N⌉
//! slots, so max/avg ≤ 1 + N/M ≈ 1.01; shares follow weights. **Health filtering** is a
//! rebuild without the node, *at the same size*: the keys on the removed node move, plus a
//! Maglev disruption among the rest that shrinks as M/N grows. Measured (fraction of all slots
//! moved that were not the removed node's, worst over victims): at the default M ≈ 100·N it is
//! ≤ 5.5 % (N = 3), ≤ 3.8 % (N ≤ 60), 1.5 % (N = 250), 1.0 % (N = 500), 0.6 % (N = 1000); at
//! M ≈ 1000·N it is ≤ 0.9 % for every N measured. Callers that need less churn on small sites
//! pass a larger explicit size (memory 4 bytes a slot).
//! The default size counts every node given, so the way to keep it stable is to pass down
//! nodes with weight 0 (indexes stay valid too) rather than dropping them from the slice;
//! dropping them changes `M` and reshuffles the whole site.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::hash::{MAGLEV_SALT, fnv1a64, mix};

/// Largest table size: bounds memory (4 bytes a slot) and build time.
pub const MAX_TABLE_SIZE: usize = 1 << 24;

const OFFSET_SALT: u64 = u64::from_be_bytes(*b"MGLV-OFS");
const SKIP_SALT: u64 = u64::from_be_bytes(*b"MGLV-SKP");

/// A Maglev lookup table over a site's nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maglev {
    /// Slot → index into the nodes slice given to [`Maglev::new`]; empty when no node has
    /// weight > 0.
    table: Box<[u32]>,
    /// Number of nodes given (including weight-0 ones).
    nodes: usize,
    /// Number of nodes owning at least one slot.
    active: usize,
}

/// The default table size for `nodes` nodes: the smallest prime > 100 × `nodes`, at least 101.
pub fn table_size(nodes: usize) -> usize {
    next_prime(
        nodes
            .saturating_mul(100)
            .saturating_add(1)
            .clamp(101, MAX_TABLE_SIZE),
    )
}

impl Maglev {
    /// Builds the table for `nodes` — (name, weight) pairs, the name being the node's address
    /// string — with `size` slots (rounded up to a prime, at most [`MAX_TABLE_SIZE`]) or
    /// [`table_size`]`(nodes.len())` when `None`. Weight-0 nodes are excluded. Names should be
    /// distinct: equal names share a permutation and only split that node's slots.
    ///
    /// # Panics
    /// When more than `u32::MAX` nodes are given.
    pub fn new(nodes: &[(&str, u32)], size: Option<usize>) -> Maglev {
        assert!(u32::try_from(nodes.len()).is_ok(), "too many Maglev nodes");
        let m = size.map_or_else(
            || table_size(nodes.len()),
            |s| next_prime(s.clamp(2, MAX_TABLE_SIZE)),
        );
        // Turn order among equal times: (name, weight), then the given index (only for
        // duplicates, which are indistinguishable anyway).
        let mut order: Vec<u32> = (0..nodes.len() as u32)
            .filter(|&i| nodes[i as usize].1 > 0)
            .collect();
        order.sort_unstable_by(|&a, &b| nodes[a as usize].cmp(&nodes[b as usize]).then(a.cmp(&b)));
        if order.is_empty() {
            return Maglev {
                table: Box::new([]),
                nodes: nodes.len(),
                active: 0,
            };
        }
        let m64 = m as u64;
        let mut perms: Vec<Perm> = order
            .iter()
            .map(|&i| {
                let h = fnv1a64(nodes[i as usize].0.as_bytes());
                Perm {
                    next: mix(h, OFFSET_SALT) % m64,
                    skip: mix(h, SKIP_SALT) % (m64 - 1) + 1,
                }
            })
            .collect();
        let mut table = vec![u32::MAX; m].into_boxed_slice();
        let mut take = |rank: usize| {
            let perm = &mut perms[rank];
            let mut c = perm.next as usize;
            while table[c] != u32::MAX {
                c = perm.advance(m64);
            }
            table[c] = order[rank];
            perm.advance(m64);
        };
        let first_weight = nodes[order[0] as usize].1;
        if order.iter().all(|&i| nodes[i as usize].1 == first_weight) {
            // Equal weights: all turns tie round by round, so they go in rank order.
            (0..m).for_each(|t| take(t % order.len()));
        } else {
            let mut turns: BinaryHeap<Turn> = order
                .iter()
                .enumerate()
                .map(|(rank, &i)| Turn {
                    k: 1,
                    weight: u64::from(nodes[i as usize].1),
                    rank: rank as u32,
                })
                .collect();
            for _ in 0..m {
                let mut turn = turns.peek_mut().expect("active nodes take turns forever");
                take(turn.rank as usize);
                turn.k += 1;
            }
        }
        let mut maglev = Maglev {
            table,
            nodes: nodes.len(),
            active: 0,
        };
        maglev.active = maglev.slot_counts().iter().filter(|&&c| c > 0).count();
        maglev
    }

    /// The node (index into the slice given to [`Maglev::new`]) serving client `key` (a raw
    /// client key from [`crate::hash`]; the table salts it with `MAGLEV_SALT`), or `None` when
    /// no node has weight > 0.
    #[inline]
    pub fn pick(&self, key: u64) -> Option<u32> {
        self.table.get(self.slot(key)).copied()
    }

    /// Writes the first `min(n, out.len())` distinct nodes met walking the table forward from
    /// `key`'s slot (wrapping) into `out` and returns how many were written — fewer only when
    /// fewer nodes own a slot (weight-0 nodes never do). `out[0]` is [`Maglev::pick`]. Does not allocate.
    pub fn pick_n(&self, key: u64, n: usize, out: &mut [u32]) -> usize {
        let want = n.min(out.len()).min(self.active);
        if want == 0 {
            return 0;
        }
        let mut found = 0;
        let start = self.slot(key);
        for &node in self.table[start..].iter().chain(&self.table[..start]) {
            if !out[..found].contains(&node) {
                out[found] = node;
                found += 1;
                if found == want {
                    break;
                }
            }
        }
        found
    }

    /// Slots owned per node, indexed like the nodes slice given to [`Maglev::new`].
    pub fn slot_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.nodes];
        for &node in &self.table {
            counts[node as usize] += 1;
        }
        counts
    }

    /// The table's size `M` (0 when no node has weight > 0).
    pub fn size(&self) -> usize {
        self.table.len()
    }

    /// The owner of every slot, in slot order (index into the nodes slice).
    pub fn slots(&self) -> &[u32] {
        &self.table
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        ((u128::from(mix(key, MAGLEV_SALT)) * self.table.len() as u128) >> 64) as usize
    }
}

/// A node's walk through its permutation: the next preferred slot and the stride.
struct Perm {
    next: u64,
    skip: u64,
}

impl Perm {
    /// Steps to the following preference and returns it.
    #[inline]
    fn advance(&mut self, m: u64) -> usize {
        self.next += self.skip;
        if self.next >= m {
            self.next -= m;
        }
        self.next as usize
    }
}

/// A node's next turn, at virtual time `k / weight` (k ≥ 1); the heap yields the earliest
/// first.
#[derive(PartialEq, Eq)]
struct Turn {
    k: u64,
    weight: u64,
    rank: u32,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // k ≤ MAX_TABLE_SIZE + 1 and weight < 2^32, so the products fit in u64. Reversed: the
        // heap is a max-heap and the earliest turn (then the lowest rank) must come first.
        (other.k * self.weight)
            .cmp(&(self.k * other.weight))
            .then(other.rank.cmp(&self.rank))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn next_prime(mut n: usize) -> usize {
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_are_primes_above_100_per_node() {
        assert_eq!(table_size(0), 101);
        assert_eq!(table_size(1), 101);
        assert_eq!(table_size(2), 211);
        assert_eq!(table_size(10), 1009);
        assert_eq!(table_size(1000), 100_003);
        assert_eq!(Maglev::new(&[("a", 1)], Some(1000)).size(), 1009);
        assert_eq!(Maglev::new(&[("a", 1)], Some(0)).size(), 2);
    }

    #[test]
    fn no_weighted_nodes_pick_nothing() {
        for m in [
            Maglev::new(&[], None),
            Maglev::new(&[("a", 0), ("b", 0)], None),
        ] {
            assert_eq!(m.pick(7), None);
            assert_eq!(m.pick_n(7, 3, &mut [0; 3]), 0);
            assert_eq!(m.size(), 0);
        }
        assert_eq!(
            Maglev::new(&[("a", 0), ("b", 0)], None).slot_counts(),
            [0, 0]
        );
    }

    #[test]
    fn one_node_owns_everything_and_weight_zero_nodes_nothing() {
        let m = Maglev::new(&[("10.0.0.1", 0), ("10.0.0.2", 5), ("10.0.0.3", 0)], None);
        assert_eq!(m.slot_counts(), [0, 307, 0]);
        assert!((0..1000).all(|k| m.pick(k) == Some(1)));
        let mut out = [9; 3];
        assert_eq!(m.pick_n(42, 3, &mut out), 1);
        assert_eq!(out[0], 1);
    }

    /// Which node a key lands on is a contract between processes; pin a few answers so a
    /// change to sizes, permutations, turns or slot reduction is caught.
    #[test]
    fn picks_are_pinned() {
        let nodes = [
            ("192.0.2.1", 1),
            ("192.0.2.2", 1),
            ("192.0.2.3", 2),
            ("2001:db8::1", 1),
        ];
        let m = Maglev::new(&nodes, None);
        let picks: Vec<u32> = (0..16u64).map(|k| m.pick(k).unwrap()).collect();
        assert_eq!(picks, [2, 0, 3, 2, 0, 0, 2, 0, 1, 3, 2, 1, 1, 0, 2, 3]);
        assert_eq!(m.slot_counts(), [80, 80, 161, 80]);
    }
}
