//! Longest-prefix match over CIDR overrides, plus the widest prefix an answer may be cached for.

use std::net::IpAddr;

use ipnet::IpNet;

/// The result of matching one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrefixMatch {
    /// The value of the longest prefix holding the address, and that prefix's length.
    pub(crate) longest: Option<(u32, u8)>,
    /// The shortest prefix length around the address that holds no *other* prefix of the
    /// trie. An ECS scope shorter than this would let a resolver reuse the answer for
    /// clients of a more specific override, so every scope is raised to at least this.
    pub(crate) floor: u8,
}

/// A binary trie over one address family. Addresses are left-aligned in a `u128`.
#[derive(Debug, Clone)]
pub(crate) struct PrefixTrie {
    width: u8,
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Node {
    /// Child indices; 0 means none (the root is never anyone's child).
    child: [u32; 2],
    value: Option<u32>,
}

impl Node {
    fn has_children(&self) -> bool {
        self.child != [0, 0]
    }
}

fn bit(bits: u128, depth: u8) -> usize {
    ((bits >> (127 - u32::from(depth))) & 1) as usize
}

fn left_aligned(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl PrefixTrie {
    fn new(width: u8) -> Self {
        Self {
            width,
            nodes: vec![Node::default()],
        }
    }

    /// Inserts `len` leading bits of `bits` with `value`. Returns the value already stored
    /// there, if a different one was.
    fn insert(&mut self, bits: u128, len: u8, value: u32) -> Result<(), u32> {
        let mut at = 0usize;
        for depth in 0..len {
            let b = bit(bits, depth);
            let next = self.nodes[at].child[b];
            at = if next == 0 {
                let fresh = self.nodes.len();
                self.nodes.push(Node::default());
                // Node counts are bounded by (prefixes × 128), far below u32::MAX for any
                // snapshot that fits in a gRPC message.
                self.nodes[at].child[b] = fresh as u32;
                fresh
            } else {
                next as usize
            };
        }
        match self.nodes[at].value {
            Some(existing) if existing != value => Err(existing),
            _ => {
                self.nodes[at].value = Some(value);
                Ok(())
            }
        }
    }

    fn lookup(&self, bits: u128) -> PrefixMatch {
        let mut at = 0usize;
        let mut depth = 0u8;
        let mut longest = None;
        loop {
            let node = &self.nodes[at];
            if let Some(value) = node.value {
                longest = Some((value, depth));
            }
            if depth == self.width {
                break;
            }
            let next = node.child[bit(bits, depth)];
            if next == 0 {
                break;
            }
            at = next as usize;
            depth += 1;
        }
        // The deepest node on the address's path: if it has children, they lie off the path,
        // and only a prefix one bit longer than this node excludes them.
        let floor = if self.nodes[at].has_children() {
            depth + 1
        } else {
            depth
        };
        PrefixMatch { longest, floor }
    }
}

/// CIDR overrides of one snapshot: prefix → group index, both families.
#[derive(Debug, Clone)]
pub(crate) struct Overrides {
    v4: PrefixTrie,
    v6: PrefixTrie,
    groups: Vec<String>,
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            v4: PrefixTrie::new(32),
            v6: PrefixTrie::new(128),
            groups: Vec::new(),
        }
    }
}

/// A CIDR that cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CidrConflict {
    /// The same prefix is listed by two groups.
    TwoGroups(String),
}

impl Overrides {
    /// The index of `group`, adding it if new.
    pub(crate) fn group_index(&mut self, group: &str) -> u32 {
        if let Some(i) = self.groups.iter().position(|g| g == group) {
            return i as u32;
        }
        self.groups.push(group.to_owned());
        (self.groups.len() - 1) as u32
    }

    /// The index of an existing group.
    pub(crate) fn find_group(&self, group: &str) -> Option<u32> {
        self.groups
            .iter()
            .position(|g| g == group)
            .map(|i| i as u32)
    }

    /// Group names, by index.
    pub(crate) fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Adds `net` (no host bits) for group `group`.
    pub(crate) fn insert(&mut self, net: IpNet, group: u32) -> Result<(), CidrConflict> {
        let trie = match net {
            IpNet::V4(_) => &mut self.v4,
            IpNet::V6(_) => &mut self.v6,
        };
        trie.insert(left_aligned(net.addr()), net.prefix_len(), group)
            .map_err(|existing| CidrConflict::TwoGroups(self.groups[existing as usize].clone()))
    }

    /// The longest override holding `addr`, and the scope floor around it.
    pub(crate) fn lookup(&self, addr: IpAddr) -> PrefixMatch {
        match addr {
            IpAddr::V4(_) => self.v4.lookup(left_aligned(addr)),
            IpAddr::V6(_) => self.v6.lookup(left_aligned(addr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(entries: &[(&str, &str)]) -> Overrides {
        let mut o = Overrides::default();
        for (cidr, group) in entries {
            let g = o.group_index(group);
            o.insert(cidr.parse().unwrap(), g).unwrap();
        }
        o
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_reports_its_length() {
        let o = overrides(&[("10.0.0.0/8", "a"), ("10.1.0.0/16", "b")]);
        assert_eq!(o.lookup(ip("10.1.2.3")).longest, Some((1, 16)));
        assert_eq!(o.lookup(ip("10.2.2.3")).longest, Some((0, 8)));
        assert_eq!(o.lookup(ip("11.0.0.1")).longest, None);
    }

    #[test]
    fn floor_excludes_more_specific_prefixes_off_the_path() {
        let o = overrides(&[("10.0.0.0/8", "a"), ("10.1.0.0/16", "b")]);
        // 10.2.x and 10.1.x share 14 bits, so /15 is the widest prefix around 10.2.2.3
        // that leaves 10.1.0.0/16 out.
        assert_eq!(o.lookup(ip("10.2.2.3")).floor, 15);
        // Inside the /16 leaf nothing more specific exists.
        assert_eq!(o.lookup(ip("10.1.2.3")).floor, 16);
        // 11.0.0.1 leaves the path after the 7 bits it shares with 10/8.
        assert_eq!(o.lookup(ip("11.0.0.1")).floor, 8);
        assert_eq!(o.lookup(ip("2001:db8::1")).floor, 0);
    }

    #[test]
    fn same_prefix_in_two_groups_is_a_conflict() {
        let mut o = overrides(&[("192.0.2.0/24", "a")]);
        let b = o.group_index("b");
        assert_eq!(
            o.insert("192.0.2.0/24".parse().unwrap(), b),
            Err(CidrConflict::TwoGroups("a".into()))
        );
        let a = o.find_group("a").unwrap();
        assert_eq!(o.insert("192.0.2.0/24".parse().unwrap(), a), Ok(()));
    }

    #[test]
    fn full_length_and_zero_length_prefixes() {
        let o = overrides(&[("0.0.0.0/0", "all"), ("192.0.2.1/32", "host")]);
        assert_eq!(o.lookup(ip("192.0.2.1")).longest, Some((1, 32)));
        assert_eq!(o.lookup(ip("192.0.2.1")).floor, 32);
        let other = o.lookup(ip("192.0.2.2"));
        assert_eq!(other.longest, Some((0, 0)));
        assert_eq!(other.floor, 31);
    }
}
