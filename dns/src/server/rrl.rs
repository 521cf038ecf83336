//! Response rate limiting in the manner of Knot and BIND RRL: per client prefix, over UDP,
//! with every Nth limited response "slipped" as an empty truncated answer.
//!
//! A spoofed-source flood gets at most `responses_per_second` answers per prefix, so the
//! server is a poor amplifier; a real client behind a limited prefix still gets a TC
//! answer now and then and retries over TCP, which is never limited.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Buckets in the table; prefixes that hash together share a budget, as in Knot.
const BUCKETS: usize = 16_384;

/// RRL settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrlLimits {
    /// Responses per second allowed to one client prefix; 0 turns RRL off.
    pub responses_per_second: u32,
    /// Every `slip`-th limited response is sent truncated (TC) instead of dropped;
    /// 0 drops them all, 1 truncates them all.
    pub slip: u32,
    /// IPv4 clients are grouped by this prefix length.
    pub ipv4_prefix: u8,
    /// IPv6 clients are grouped by this prefix length.
    pub ipv6_prefix: u8,
}

impl Default for RrlLimits {
    /// Off; when enabled, Knot's defaults for slip and prefixes (2, /24, /56).
    fn default() -> Self {
        Self {
            responses_per_second: 0,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        }
    }
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Send,
    Slip,
    Drop,
}

/// The limiter: one atomic word per bucket, `[second: 32 bits][count: 32 bits]`, so the
/// query path takes no lock.
pub(crate) struct Rrl {
    limits: RrlLimits,
    start: Instant,
    buckets: Box<[AtomicU64]>,
    limited: AtomicU32,
}

impl Rrl {
    /// A limiter, or `None` when `limits` turns RRL off.
    pub(crate) fn new(limits: RrlLimits) -> Option<Self> {
        if limits.responses_per_second == 0 {
            return None;
        }
        Some(Self {
            limits,
            start: Instant::now(),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            limited: AtomicU32::new(0),
        })
    }

    /// Counts one response to `client` and says whether it may go out.
    pub(crate) fn check(&self, client: IpAddr) -> Verdict {
        // Seconds since start, offset by one so that 0 means "never used".
        let now = self.start.elapsed().as_secs() as u32 + 1;
        let bucket = &self.buckets[self.bucket(client)];
        let mut current = bucket.load(Ordering::Relaxed);
        let count = loop {
            let (second, count) = ((current >> 32) as u32, current as u32);
            let next = if second == now {
                (u64::from(now) << 32) | u64::from(count.saturating_add(1))
            } else {
                (u64::from(now) << 32) | 1
            };
            match bucket.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break next as u32,
                Err(actual) => current = actual,
            }
        };
        if count <= self.limits.responses_per_second {
            return Verdict::Send;
        }
        let slip = self.limits.slip;
        if slip > 0
            && self
                .limited
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(slip)
        {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    fn bucket(&self, client: IpAddr) -> usize {
        let key: u128 = match client.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let prefix = u32::from(self.limits.ipv4_prefix.min(32));
                u128::from(bits.checked_shr(32 - prefix).unwrap_or(0)) | (1 << 100)
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let prefix = u32::from(self.limits.ipv6_prefix.min(128));
                bits.checked_shr(128 - prefix).unwrap_or(0)
            }
        };
        // Fibonacci hashing of the folded prefix: cheap and spreads neighbours apart.
        let folded = (key as u64) ^ ((key >> 64) as u64);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) as usize % BUCKETS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_prefix_and_slips_every_second_limited_response() {
        let rrl = Rrl::new(RrlLimits {
            responses_per_second: 5,
            ..RrlLimits::default()
        })
        .unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_prefix: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..10)
            .map(|i| rrl.check(if i % 2 == 0 { a } else { same_prefix }))
            .collect();
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Send));
        let slipped = verdicts[5..]
            .iter()
            .filter(|v| **v == Verdict::Slip)
            .count();
        let dropped = verdicts[5..]
            .iter()
            .filter(|v| **v == Verdict::Drop)
            .count();
        assert_eq!((slipped, dropped), (3, 2));
        assert_eq!(rrl.check(other), Verdict::Send);
    }

    #[test]
    fn zero_rate_is_off() {
        assert!(Rrl::new(RrlLimits::default()).is_none());
    }
}
