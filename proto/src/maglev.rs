//! Weighted Maglev tables: which node of a site serves a client key, identically everywhere.
//!
//! A frontend builds one [`Maglev`] table per site and family from the site's nodes and their
//! health ([`Maglev::with_health`]) and picks `table[slot(key)]`; the scheduler's `explain`
//! runs the frontends' code on the same snapshot and gets the same node. The construction is
//! part of the wire contract:
//!
//! - **Size** `M`: [`table_size`]`(nodes.len())` — the smallest prime above 100 × the number
//!   of nodes given (weight-0 and down nodes included) rounded up to a power of two, at least
//!   101 — or the next prime at or above an explicit size (at most [`MAX_TABLE_SIZE`]).
//! - **Permutation** of node `n`: `h = fnv1a64(name)`, `offset = mix(h, OFFSET_SALT) mod M`,
//!   `skip = mix(h, SKIP_SALT) mod (M − 1) + 1`; its `j`-th preference is
//!   `(offset + j · skip) mod M` (see [`crate::hash`]).
//! - **Turns** (weighted Maglev, the virtual-time form of Envoy's credit scheme): node `n`'s
//!   `k`-th turn (k = 1, 2, …) comes at time `k / weight(n)`; turns run in time order, ties in
//!   (name, weight) order. So after `M` turns every node holds `M · w / W` slots, give or take
//!   `N · w / W + 1` (`W` the total weight). On its turn a node takes its next preferred slot
//!   that is still free. Weight-0 nodes take no turns.
//! - **Slot** of a key: `(mix(key, MAGLEV_SALT) · M) >> 64` (a multiply-shift range reduction).
//! - **Health** ([`Maglev::with_health`]): the *primary* table above is built over every node
//!   at its configured weight, up or down, so it never changes on a health event. When some
//!   node that owns slots is down, each of its slots is handed to an up node: first to the
//!   slot's owner in a *fallback* table (the same construction over the up nodes, at the same
//!   size), unless that node already holds its bound of ⌈M · w / W_up⌉ slots (`W_up` the up
//!   nodes' total weight, counting only nodes that own a fallback slot); such slots are then
//!   handed, in slot order, to the first node with room met walking the fallback table forward
//!   from the slot. Slots whose primary owner is up are never touched.
//!
//! Properties (tested in `proto/tests/maglev.rs`): the table depends only on the set of
//! (name, weight, down), not on input order; with equal weights every node owns ⌊M/N⌋ or
//! ⌈M/N⌉ slots, so max/avg ≤ 1 + N/M ≈ 1.01; shares follow weights.
//!
//! What moves when:
//! - **A health change** (a node goes down or comes back, `down` flips) moves exactly the keys
//!   whose primary owner is that node: ≈ 1/N of them, and no other key (0 of the others, for
//!   every N; a second node going down also re-homes some keys that were already displaced,
//!   never a key whose primary owner is up). Bringing a node back restores every pick it had.
//!   The bound keeps the up nodes balanced: with equal weights no up node holds more than
//!   ⌈M/N_up⌉ slots, max/avg ≤ 1 + N_up/M < 1.01 (measured 1.009 at N = 1000, one down).
//! - **A configuration change** (a node is added or deleted, or a weight changes) rebuilds the
//!   primary table. At an unchanged size (a weight change, or a deletion under an explicit
//!   size) the changed node's keys move plus a Maglev disruption among the rest: deleting one
//!   of N equal nodes moves, of all keys, this many that were not the deleted node's — worst
//!   over victims ≤ 5.5 % (N = 3), ≤ 3.8 % (N ≤ 60), 1.5 % (N = 250), 1.0 % (N = 500), 0.6 %
//!   (N = 1000); the tested bound on all keys moved is 1/N + 6 %. The default size is a
//!   ladder (100 × the node count rounded up to a power of two) so that adding or deleting a
//!   node keeps `M` unless the count crosses a power of two: deleting one of N then moves, of
//!   all keys, 11.7 % at N = 10, 2.5 % at N = 100, 0.65 % at N = 1000, and adding an
//!   (N+1)-th moves 1–3 % of the others besides the new node's share. Crossing a power of
//!   two changes `M`, which reshuffles the whole site (measured 65 % of keys moved at 3 → 2
//!   nodes, 99 % from about 100 nodes). That is why health travels as a flag, never as a removal; callers that must
//!   keep clients across every membership change pass an explicit size.

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
    /// Slot → index into the nodes slice given to [`Maglev::new`] or
    /// [`Maglev::with_health`]; empty when no node can own a slot (none has weight > 0, or
    /// every one that does is down).
    table: Box<[u32]>,
    /// Number of nodes given (including weight-0 and down ones).
    nodes: usize,
    /// Number of nodes owning at least one slot.
    active: usize,
}

/// Sentinel of a slot no node took yet during a build.
const FREE: u32 = u32::MAX;

/// The default table size for `nodes` nodes: the smallest prime > 100 × `nodes` rounded up
/// to a power of two, at least 101.
///
/// Rounding to a power of two keeps the size — and so every slot's position — across most
/// membership changes: a table's slots are a function of its size, and a new size reshuffles
/// the whole site (65–99.9 % of the keys move). With the ladder, adding or deleting a node
/// reshuffles only when the count crosses a power of two; in between it moves the changed
/// node's keys plus Maglev's small disruption. The price is at most twice the memory.
pub fn table_size(nodes: usize) -> usize {
    next_prime(
        nodes
            .max(1)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
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
            return Maglev::from_table(Box::new([]), nodes.len());
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
        let mut table = vec![FREE; m].into_boxed_slice();
        let mut take = |rank: usize| {
            let perm = &mut perms[rank];
            let mut c = perm.next as usize;
            while table[c] != FREE {
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
        Maglev::from_table(table, nodes.len())
    }

    /// Builds the table of `nodes` when those with `down[i]` set may not take traffic: the
    /// primary table of [`Maglev::new`] over every node, health ignored, with each slot of a
    /// down node handed to an up node under the load bound (see the module docs). Every key
    /// whose primary owner is up keeps it, so a health change moves only the keys of the node
    /// that went down or came back; with no node down this is exactly [`Maglev::new`] (no
    /// second table is built). Either way the result is one table of `M` slots: the fallback
    /// table only lives during the build. When every node owning a slot is down the table is
    /// empty and picks nothing: what to answer then is the caller's all-down policy.
    ///
    /// # Panics
    /// When `down` and `nodes` differ in length, or more than `u32::MAX` nodes are given.
    pub fn with_health(nodes: &[(&str, u32)], down: &[bool], size: Option<usize>) -> Maglev {
        assert_eq!(down.len(), nodes.len(), "one health flag per Maglev node");
        let primary = Maglev::new(nodes, size);
        let is_down = |node: u32| down[node as usize];
        if !primary.table.iter().any(|&node| is_down(node)) {
            return primary;
        }
        let up: Vec<(&str, u32)> = nodes
            .iter()
            .zip(down)
            .map(|(&(name, weight), &d)| (name, if d { 0 } else { weight }))
            .collect();
        let fallback = Maglev::new(&up, Some(primary.size()));
        if fallback.table.is_empty() {
            return Maglev::from_table(Box::new([]), nodes.len());
        }
        // The bound: an up node's weighted share of the whole table, rounded up, over the
        // nodes that own a fallback slot (a node starved of turns could never be reached by
        // the walk below, so it gets no room). The bounds then sum to at least M, so while a
        // displaced slot is left some owner of a fallback slot has room and the walk ends.
        let fallback_counts = fallback.slot_counts();
        let reachable = |i: usize| fallback_counts[i] > 0;
        let weight_up: u128 = (0..nodes.len())
            .filter(|&i| reachable(i))
            .map(|i| u128::from(up[i].1))
            .sum();
        let m = primary.size() as u128;
        let bound: Vec<u32> = (0..nodes.len())
            .map(|i| {
                if reachable(i) {
                    (m * u128::from(up[i].1)).div_ceil(weight_up) as u32
                } else {
                    0
                }
            })
            .collect();
        let mut load = primary.slot_counts();
        for (count, &d) in load.iter_mut().zip(down) {
            if d {
                *count = 0;
            }
        }
        let mut table = primary.table;
        let mut overflow = Vec::new();
        for (slot, owner) in table.iter_mut().enumerate() {
            if is_down(*owner) {
                let heir = fallback.table[slot];
                if load[heir as usize] < bound[heir as usize] {
                    *owner = heir;
                    load[heir as usize] += 1;
                } else {
                    overflow.push(slot);
                }
            }
        }
        for slot in overflow {
            let heir = fallback.table[slot + 1..]
                .iter()
                .chain(&fallback.table[..=slot])
                .copied()
                .find(|&node| load[node as usize] < bound[node as usize])
                .expect("the bounds leave room for every displaced slot");
            table[slot] = heir;
            load[heir as usize] += 1;
        }
        Maglev::from_table(table, nodes.len())
    }

    /// Wraps a finished table over `nodes` nodes, counting those that own a slot.
    fn from_table(table: Box<[u32]>, nodes: usize) -> Maglev {
        let mut maglev = Maglev {
            table,
            nodes,
            active: 0,
        };
        maglev.active = maglev.slot_counts().iter().filter(|&&c| c > 0).count();
        maglev
    }

    /// The node (index into the slice given to [`Maglev::new`]) serving client `key` (a raw
    /// client key from [`crate::hash`]; the table salts it with `MAGLEV_SALT`), or `None` when
    /// the table is empty. A table built by [`Maglev::with_health`] never picks a down node.
    #[inline]
    pub fn pick(&self, key: u64) -> Option<u32> {
        self.table.get(self.slot(key)).copied()
    }

    /// Writes the first `min(n, out.len())` distinct nodes met walking the table forward from
    /// `key`'s slot (wrapping) into `out` and returns how many were written — fewer only when
    /// fewer nodes own a slot (weight-0 nodes never do, nor do down nodes in a table built by
    /// [`Maglev::with_health`]). `out[0]` is [`Maglev::pick`]. Does not allocate.
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

    /// The table's size `M` (0 when the table is empty).
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
    fn default_sizes_are_primes_above_100_per_node_on_a_power_of_two_ladder() {
        assert_eq!(table_size(0), 101);
        assert_eq!(table_size(1), 101);
        assert_eq!(table_size(2), 211);
        assert_eq!(table_size(3), 401);
        assert_eq!(table_size(4), 401);
        assert_eq!(table_size(10), 1601);
        assert_eq!(table_size(16), 1601);
        assert_eq!(table_size(1000), 102_407);
        for n in 1..=2000 {
            assert!(table_size(n) > 100 * n);
            assert!(table_size(n) <= 2 * 100 * n + 200);
        }
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
        assert_eq!(m.slot_counts(), [0, 401, 0]);
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
