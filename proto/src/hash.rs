//! The stable 64-bit client-key hash every side of the steering contract computes identically.
//!
//! Frontends (DNS, HTTPDNS) and the scheduler's `explain` must turn the same client into the
//! same key and the same key into the same split route, gray arm and Maglev node, in every
//! process, on every platform and with every Rust version. So nothing here uses `RandomState`
//! or `std::hash::Hasher`; the functions below are the wire contract, pinned by test vectors:
//!
//! - **finalizer**: `splitmix64(x)` = the SplitMix64 output function (Stafford's "Mix13") applied
//!   to `x + 0x9E37_79B9_7F4A_7C15`. It is a bijection on `u64`.
//! - **subnet key** ([`client_key_addr`]): the address masked to
//!   [`client_key_bits`] bits (at most [`V4_KEY_BITS`] for IPv4, [`V6_KEY_BITS`] for IPv6; an
//!   IPv4-mapped IPv6 address counts as IPv4) packed with its family and bit count into one word
//!   `w`, then `splitmix64(w)`. IPv4: `w = addr << 8 | bits << 1`; IPv6: `w = top56 << 8 |
//!   bits << 1 | 1`, where `top56` is the masked address's first 56 bits. The packing is
//!   injective, so two different (family, subnet) pairs never share a key.
//! - **device key** ([`client_key_device`]): `splitmix64(FNV-1a-64(UTF-8 bytes))`.
//! - **derived hashes** ([`mix`]): `splitmix64(key ^ salt · 0xD6E8_FEB8_6659_FD93)` (wrapping
//!   multiply), one salt per use: [`SPLIT_SALT`] for the weighted route split, [`MAGLEV_SALT`]
//!   for the Maglev slot; a gray rule carries its own salt.

use std::net::IpAddr;

/// At most this many leading bits of an IPv4 address form its client key (a /24).
pub const V4_KEY_BITS: u8 = 24;
/// At most this many leading bits of an IPv6 address form its client key (a /56).
pub const V6_KEY_BITS: u8 = 56;

/// Salt of the hash that picks a dynamic answer's route against the cumulative route weights.
pub const SPLIT_SALT: u64 = u64::from_be_bytes(*b"ISO-SPLT");
/// Salt of the hash that picks a client's slot in a site's Maglev table.
pub const MAGLEV_SALT: u64 = u64::from_be_bytes(*b"ISO-MGLV");

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const SALT_MULTIPLIER: u64 = 0xD6E8_FEB8_6659_FD93;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// SplitMix64: the finalizer every key and derived hash ends with (a bijection on `u64`).
#[inline]
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bits, over raw bytes (not avalanched; [`client_key_device`] finalizes it).
#[inline]
pub const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// A hash derived from `key` for one use, independent of the hashes for other salts.
#[inline]
pub const fn mix(key: u64, salt: u64) -> u64 {
    splitmix64(key ^ salt.wrapping_mul(SALT_MULTIPLIER))
}

/// How many leading bits of `addr` form its client key: `min(prefix, V4_KEY_BITS)` for IPv4
/// (and IPv4-mapped IPv6), `min(prefix, V6_KEY_BITS)` for IPv6.
pub fn client_key_bits(addr: &IpAddr, prefix: u8) -> u8 {
    match canonical(*addr) {
        IpAddr::V4(_) => prefix.min(V4_KEY_BITS),
        IpAddr::V6(_) => prefix.min(V6_KEY_BITS),
    }
}

/// The client key of a subnet: `addr` masked to `client_key_bits(addr, prefix)` bits, with its
/// family. Pass the ECS source prefix, or the full length (32/128) for a source address.
/// An IPv4-mapped IPv6 address gives the same key as the IPv4 address.
pub fn client_key_addr(addr: IpAddr, prefix: u8) -> u64 {
    let bits = client_key_bits(&addr, prefix);
    let word = match canonical(addr) {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u64::from(v4.to_bits() & mask) << 8 | u64::from(bits) << 1
        }
        IpAddr::V6(v6) => {
            let top56 = (v6.to_bits() >> 72) as u64;
            let mask = (1u64 << 56) - (1u64 << (56 - u32::from(bits)));
            (top56 & mask) << 8 | u64::from(bits) << 1 | 1
        }
    };
    splitmix64(word)
}

/// The client key of a device ID (HTTPDNS `did=`), hashed as its UTF-8 bytes.
pub fn client_key_device(device_id: &str) -> u64 {
    splitmix64(fnv1a64(device_id.as_bytes()))
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn primitives_match_their_published_vectors() {
        // FNV-1a-64 reference values (draft-eastlake-fnv) and SplitMix64 seeded with 0.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(GOLDEN_GAMMA), 0x6e78_9e6a_a1b9_65f4);
    }

    /// Fixed inputs → fixed outputs (also reproduced by an independent implementation of the
    /// module docs). A change here changes which node every client is sent to on every
    /// frontend: it is a contract change, not a refactor.
    #[test]
    fn client_keys_are_pinned() {
        let vectors = [
            (client_key_addr(ip("192.0.2.77"), 32), 0xf90f_7c67_cfdf_0ef6),
            (
                client_key_addr(ip("2001:db8:1:2ff::1"), 128),
                0xa4d7_2ea4_748c_f3fc,
            ),
            (client_key_addr(ip("0.0.0.0"), 0), 0xe220_a839_7b1d_cdaf),
            (client_key_device("device-42"), 0x2b57_eb63_0232_2134),
            (mix(1, SPLIT_SALT), 0x88c7_a927_c3ac_3e90),
            (mix(1, MAGLEV_SALT), 0x264e_27a6_4f3b_7f47),
        ];
        let wrong: Vec<String> = vectors
            .iter()
            .enumerate()
            .filter(|(_, (got, want))| got != want)
            .map(|(i, (got, _))| format!("vector {i}: got {got:#018x}"))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    /// Asserts whether each pair of (address, prefix) gets the same client key.
    fn same_key(cases: &[(&str, u8, &str, u8, bool)]) {
        for &(a, pa, b, pb, same) in cases {
            let (ka, kb) = (client_key_addr(ip(a), pa), client_key_addr(ip(b), pb));
            assert_eq!(ka == kb, same, "{a}/{pa} vs {b}/{pb}");
        }
    }

    #[test]
    fn subnet_keys_mask_to_the_family_limit() {
        same_key(&[
            ("192.0.2.77", 32, "192.0.2.0", 24, true),
            ("192.0.2.77", 32, "192.0.3.77", 32, false),
            ("2001:db8:1:2ff::1", 128, "2001:db8:1:200::", 56, true),
            ("2001:db8:1:2ff::1", 128, "2001:db8:1:3ff::1", 128, false),
            // A shorter ECS prefix is a different (wider) subnet.
            ("192.0.0.0", 16, "192.0.0.0", 24, false),
            ("192.0.2.1", 16, "192.0.99.1", 16, true),
        ]);
        assert_eq!(client_key_bits(&ip("192.0.2.1"), 32), 24);
        assert_eq!(client_key_bits(&ip("192.0.2.1"), 20), 20);
        assert_eq!(client_key_bits(&ip("2001:db8::1"), 128), 56);
        assert_eq!(client_key_bits(&ip("::ffff:192.0.2.1"), 128), 24);
    }

    #[test]
    fn family_is_part_of_the_key_and_mapped_addresses_are_ipv4() {
        same_key(&[
            ("::ffff:192.0.2.77", 128, "192.0.2.77", 32, true),
            // The same 24 leading bits (and the all-zero /0) as IPv6 are another key.
            ("c000:200::", 24, "192.0.2.0", 24, false),
            ("::", 0, "0.0.0.0", 0, false),
        ]);
    }

    #[test]
    fn salts_give_independent_hashes() {
        let key = client_key_device("abc");
        assert_ne!(mix(key, SPLIT_SALT), mix(key, MAGLEV_SALT));
        // Roughly half the output bits flip between salts, over many keys.
        let flipped: u32 = (0..1000u64)
            .map(|k| (mix(k, SPLIT_SALT) ^ mix(k, MAGLEV_SALT)).count_ones())
            .sum();
        let per_key = f64::from(flipped) / 1000.0;
        assert!((30.0..34.0).contains(&per_key), "{per_key} bits flipped");
    }
}
