//! HTTPDNS rate limiting: token buckets in a fixed-size table, so memory stays bounded
//! whatever the number of clients.
//!
//! Each key (a client address — IPv6 by /64 — or an account) hashes to two slots; a key
//! found in either uses that bucket, a new key takes the less recently used of the two
//! (starting with a full bucket). A slot is a small mutex held for a few nanoseconds; no
//! lock is ever held across two slots. Evicting the older of two candidates keeps busy keys
//! resident: pushing one out takes many distinct active keys hashing to its two slots.

use std::net::IpAddr;
use std::sync::Mutex;

use isobar_proto::hash::splitmix64;

/// Slots of the per-client table (≈ 32 bytes each).
pub const CLIENT_SLOTS: usize = 1 << 15;
/// Slots of the per-account table.
pub const ACCOUNT_SLOTS: usize = 1 << 10;

/// A token bucket's parameters: `rate` per second, `burst` at once; `rate == 0` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Sustained requests per second; 0 = unlimited.
    pub rate: u32,
    /// Bucket size.
    pub burst: u32,
}

impl Limit {
    /// No limit.
    pub const UNLIMITED: Self = Self { rate: 0, burst: 0 };
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    /// 0 = empty (keys are never 0, see [`RateTable::check`]).
    key: u64,
    tokens: f64,
    last_ms: u64,
}

/// A bounded table of token buckets.
#[derive(Debug)]
pub struct RateTable {
    slots: Box<[Mutex<Slot>]>,
    mask: u64,
}

impl RateTable {
    /// A table of `slots` buckets (rounded up to a power of two).
    pub fn new(slots: usize) -> Self {
        let n = slots.next_power_of_two().max(2);
        Self {
            slots: (0..n).map(|_| Mutex::new(Slot::default())).collect(),
            mask: n as u64 - 1,
        }
    }

    /// Takes one token from `key`'s bucket at `now_ms` (a monotonic clock). `Err` carries
    /// the seconds until a token is available (at least 1).
    pub fn check(&self, key: u64, limit: Limit, now_ms: u64) -> Result<(), u32> {
        if limit.rate == 0 {
            return Ok(());
        }
        let key = key.max(1);
        let a = (key & self.mask) as usize;
        let b = ((key >> 32) & self.mask) as usize;
        // Found in `a`, or `a` is free: use `a`.
        let a_last = {
            let mut slot = self.lock(a);
            if slot.key == key || slot.key == 0 {
                return take(&mut slot, key, limit, now_ms);
            }
            slot.last_ms
        };
        let mut slot = self.lock(b);
        if slot.key == key || slot.key == 0 || slot.last_ms <= a_last {
            return take(&mut slot, key, limit, now_ms);
        }
        drop(slot);
        let mut slot = self.lock(a);
        take(&mut slot, key, limit, now_ms)
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Slot> {
        // A panic while holding a slot cannot leave it inconsistent (plain numbers).
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn take(slot: &mut Slot, key: u64, limit: Limit, now_ms: u64) -> Result<(), u32> {
    let burst = f64::from(limit.burst.max(1));
    let rate = f64::from(limit.rate);
    if slot.key != key {
        *slot = Slot {
            key,
            tokens: burst,
            last_ms: now_ms,
        };
    }
    let elapsed = now_ms.saturating_sub(slot.last_ms) as f64 / 1000.0;
    slot.tokens = (slot.tokens + elapsed * rate).min(burst);
    slot.last_ms = slot.last_ms.max(now_ms);
    if slot.tokens >= 1.0 {
        slot.tokens -= 1.0;
        Ok(())
    } else {
        let wait = ((1.0 - slot.tokens) / rate).ceil();
        Err((wait as u32).max(1))
    }
}

/// The rate-limit key of a client address: the whole IPv4 address, or the /64 of an IPv6
/// address (one subscriber's allocation).
pub fn client_key(addr: IpAddr) -> u64 {
    match addr.to_canonical() {
        IpAddr::V4(v4) => splitmix64(u64::from(u32::from(v4))),
        IpAddr::V6(v6) => splitmix64((u128::from(v6) >> 64) as u64 ^ 0x6a09_e667_f3bc_c908),
    }
}

/// The rate-limit key of an account id.
pub fn account_key(id: &str) -> u64 {
    splitmix64(isobar_proto::hash::fnv1a64(id.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit { rate: 10, burst: 3 };

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let table = RateTable::new(16);
        let key = client_key("192.0.2.1".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(table.check(key, LIMIT, 1000), Ok(()));
        }
        assert_eq!(table.check(key, LIMIT, 1000), Err(1));
        // 100 ms at 10/s is one token.
        assert_eq!(table.check(key, LIMIT, 1100), Ok(()));
        assert!(table.check(key, LIMIT, 1100).is_err());
        // A long pause refills to the burst, not beyond.
        for _ in 0..3 {
            assert_eq!(table.check(key, LIMIT, 60_000), Ok(()));
        }
        assert!(table.check(key, LIMIT, 60_000).is_err());
        // Unlimited never refuses.
        for _ in 0..100 {
            assert_eq!(table.check(key, Limit::UNLIMITED, 0), Ok(()));
        }
    }

    #[test]
    fn retry_after_reflects_the_rate() {
        let table = RateTable::new(16);
        let slow = Limit { rate: 1, burst: 1 };
        assert_eq!(table.check(7, slow, 0), Ok(()));
        assert_eq!(table.check(7, slow, 0), Err(1));
        let very_slow = Limit { rate: 1, burst: 1 };
        assert_eq!(table.check(8, very_slow, 0), Ok(()));
        assert_eq!(table.check(8, very_slow, 500), Err(1));
    }

    #[test]
    fn ipv6_clients_share_their_64_and_keys_differ_otherwise() {
        let a = client_key("2001:db8:1:2::1".parse().unwrap());
        let b = client_key("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = client_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            client_key("192.0.2.1".parse().unwrap())
        );
        assert_ne!(account_key("100000"), account_key("100001"));
    }

    #[test]
    fn memory_is_bounded_and_a_busy_key_survives_a_flood_of_new_ones() {
        let table = RateTable::new(1024);
        assert_eq!(table.slots.len(), 1024);
        let busy = client_key("198.51.100.1".parse().unwrap());
        let limit = Limit { rate: 1, burst: 5 };
        let mut now = 0;
        for _ in 0..5 {
            assert_eq!(table.check(busy, limit, now), Ok(()));
        }
        // 100k other clients pass by, each once; the busy client keeps touching its bucket.
        for i in 0..100_000u32 {
            let _ = table.check(client_key(IpAddr::from(i.to_be_bytes())), limit, now);
            if i % 64 == 0 {
                now += 1;
                let _ = table.check(busy, limit, now);
            }
        }
        // Still throttled: its bucket was not reset by eviction.
        assert!(table.check(busy, limit, now).is_err());
    }
}
