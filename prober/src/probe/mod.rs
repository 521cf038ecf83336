//! Probe kinds and the per-target loop that runs one on a schedule.
//!
//! Each kind is a module with a `new(..)` that validates the target once and an
//! `async fn run(&self) -> Result<Duration, String>` that performs one probe, plus a variant in
//! [`Probe`]. Timeouts, scheduling, sequence numbers and cancellation are handled here, once,
//! for every kind.

mod dns;
mod http;
mod icmp;
mod tcp;
mod udp_echo;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use isobar_proto::v1::{Measurement, ProbeKind, ProbeTarget};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;

/// Shortest accepted probe interval; a zero or tiny interval would turn a loop into a busy spin.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest accepted probe timeout, so a misconfigured target cannot park a loop for hours.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// One configured probe, validated and ready to run.
#[derive(Debug)]
enum Probe {
    Tcp(tcp::TcpProbe),
    Http(Box<http::HttpProbe>),
    Icmp(icmp::IcmpProbe),
    Dns(dns::DnsProbe),
    UdpEcho(udp_echo::UdpEchoProbe),
}

impl Probe {
    /// Builds the probe for `target`, or says why it cannot be probed at all.
    fn new(target: &ProbeTarget) -> Result<Self, String> {
        let params: HashMap<String, String> = target.params.clone().into_iter().collect();
        match target.kind() {
            ProbeKind::Tcp => tcp::TcpProbe::new(&target.address).map(Self::Tcp),
            ProbeKind::Http => http::HttpProbe::new(&target.address, &params, schedule(target).1)
                .map(|p| Self::Http(Box::new(p))),
            ProbeKind::Icmp => icmp::IcmpProbe::new(&target.address).map(Self::Icmp),
            ProbeKind::Dns => dns::DnsProbe::new(&target.address, &params).map(Self::Dns),
            ProbeKind::UdpEcho => udp_echo::UdpEchoProbe::new(&target.address).map(Self::UdpEcho),
            ProbeKind::Unspecified => Err("unsupported probe kind".to_owned()),
        }
    }

    /// Performs one probe; `Ok` carries the round-trip time, `Err` the reason for failure.
    async fn run(&self) -> Result<Duration, String> {
        match self {
            Self::Tcp(p) => p.run().await,
            Self::Http(p) => p.run().await,
            Self::Icmp(p) => p.run().await,
            Self::Dns(p) => p.run().await,
            Self::UdpEcho(p) => p.run().await,
        }
    }
}

/// Interval and timeout of a target after clamping to sane bounds.
fn schedule(target: &ProbeTarget) -> (Duration, Duration) {
    let interval = Duration::from_millis(target.interval_ms.into()).max(MIN_INTERVAL);
    let timeout = match target.timeout_ms {
        // No timeout given: never let one probe outlive its period.
        0 => interval,
        ms => Duration::from_millis(ms.into()),
    };
    (interval, timeout.min(MAX_TIMEOUT))
}

/// Probes `target` every interval until `stop` is cancelled, pushing one measurement per probe.
///
/// `seq` is shared with a loop this one replaces, so a settings change does not restart the
/// sequence and look like loss to the scheduler. A target that cannot be probed is reported as
/// one failure and then left idle until it is removed or changed.
pub(crate) async fn run_loop(
    target: ProbeTarget,
    seq: Arc<AtomicU64>,
    buffer: Arc<Buffer>,
    stop: CancellationToken,
) {
    let record = |at_unix_ms: i64, outcome: Result<Duration, String>| {
        let (success, rtt_us, error) = match outcome {
            Ok(rtt) => (
                true,
                u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX),
                String::new(),
            ),
            Err(error) => (false, 0, error),
        };
        buffer.push(Measurement {
            target_id: target.id.clone(),
            at_unix_ms,
            success,
            rtt_us,
            error,
            seq: seq.fetch_add(1, Ordering::Relaxed) + 1,
        });
    };

    let probe = match Probe::new(&target) {
        Ok(p) => p,
        Err(reason) => {
            tracing::warn!(
                target_id = %target.id,
                kind = ?target.kind(),
                address = %target.address,
                %reason,
                "cannot probe target"
            );
            record(unix_ms(), Err(reason));
            stop.cancelled().await;
            return;
        }
    };

    let (interval, timeout) = schedule(&target);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let at = unix_ms();
        let outcome = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            res = tokio::time::timeout(timeout, probe.run()) => {
                res.unwrap_or_else(|_| Err("timeout".to_owned()))
            }
        };
        // The target may have been removed while the probe was finishing; its result would
        // then arrive after the scheduler dropped the target.
        if stop.is_cancelled() {
            return;
        }
        record(at, outcome);
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: ProbeKind, interval_ms: u32, timeout_ms: u32) -> ProbeTarget {
        ProbeTarget {
            id: "t".to_owned(),
            kind: kind.into(),
            address: "127.0.0.1:1".to_owned(),
            interval_ms,
            timeout_ms,
            ..ProbeTarget::default()
        }
    }

    #[test]
    fn schedule_clamps_interval_and_defaults_timeout() {
        let t = target(ProbeKind::Tcp, 0, 0);
        assert_eq!(schedule(&t), (MIN_INTERVAL, MIN_INTERVAL));
        let t = target(ProbeKind::Tcp, 1000, 0);
        assert_eq!(schedule(&t).1, Duration::from_secs(1));
        let t = target(ProbeKind::Tcp, 1000, 600_000);
        assert_eq!(schedule(&t).1, MAX_TIMEOUT);
    }

    #[test]
    fn every_kind_but_unspecified_is_supported() {
        for kind in [
            ProbeKind::Tcp,
            ProbeKind::Http,
            ProbeKind::Icmp,
            ProbeKind::Dns,
            ProbeKind::UdpEcho,
        ] {
            assert!(Probe::new(&target(kind, 100, 100)).is_ok(), "{kind:?}");
        }
        let err = Probe::new(&target(ProbeKind::Unspecified, 100, 100)).unwrap_err();
        assert_eq!(err, "unsupported probe kind");
    }

    #[tokio::test]
    async fn unsupported_kind_records_one_failure_and_idles() {
        let buffer = Arc::new(Buffer::new(100, 500));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_loop(
            target(ProbeKind::Unspecified, 10, 10),
            Arc::new(AtomicU64::new(0)),
            Arc::clone(&buffer),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = buffer.take(100);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(!got[0].success);
        assert_eq!(got[0].error, "unsupported probe kind");
        assert_eq!(got[0].seq, 1);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("loop did not stop")
            .expect("loop panicked");
    }
}
