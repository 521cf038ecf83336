//! HTTPDNS request counters per endpoint and result code, rendered for `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The HTTPDNS endpoints (the unprefixed `/d` counts as `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/d` and `/{account}/d`.
    D,
    /// `/{account}/resolve`.
    Resolve,
    /// `/{account}/sign_d`.
    SignD,
    /// `/{account}/sign_resolve`.
    SignResolve,
    /// `/{account}/ss`.
    Ss,
}

impl Endpoint {
    const ALL: [Self; 5] = [
        Self::D,
        Self::Resolve,
        Self::SignD,
        Self::SignResolve,
        Self::Ss,
    ];

    /// The label value and path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::D => "d",
            Self::Resolve => "resolve",
            Self::SignD => "sign_d",
            Self::SignResolve => "sign_resolve",
            Self::Ss => "ss",
        }
    }

    /// Whether requests must carry a signature.
    pub fn signed(self) -> bool {
        matches!(self, Self::SignD | Self::SignResolve)
    }

    /// Whether it takes a batch of hosts or client addresses.
    pub fn batch(self) -> bool {
        matches!(self, Self::Resolve | Self::SignResolve)
    }
}

/// The result codes: `ok` and the JSON error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Code {
    Ok,
    InvalidHost,
    InvalidIp,
    InvalidQuery,
    InvalidDeviceId,
    InvalidRegion,
    LimitExceeded,
    InvalidAccount,
    UnsignedInterfaceDisabled,
    MissingSignature,
    InvalidTimestamp,
    SignatureExpired,
    InvalidDuration,
    InvalidSignature,
    TooManyRequests,
    NotReady,
}

impl Code {
    const ALL: [Self; 16] = [
        Self::Ok,
        Self::InvalidHost,
        Self::InvalidIp,
        Self::InvalidQuery,
        Self::InvalidDeviceId,
        Self::InvalidRegion,
        Self::LimitExceeded,
        Self::InvalidAccount,
        Self::UnsignedInterfaceDisabled,
        Self::MissingSignature,
        Self::InvalidTimestamp,
        Self::SignatureExpired,
        Self::InvalidDuration,
        Self::InvalidSignature,
        Self::TooManyRequests,
        Self::NotReady,
    ];

    /// The JSON `code` (and metric label; `ok` for success).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::InvalidHost => "InvalidHost",
            Self::InvalidIp => "InvalidIp",
            Self::InvalidQuery => "InvalidQuery",
            Self::InvalidDeviceId => "InvalidDeviceId",
            Self::InvalidRegion => "InvalidRegion",
            Self::LimitExceeded => "LimitExceeded",
            Self::InvalidAccount => "InvalidAccount",
            Self::UnsignedInterfaceDisabled => "UnsignedInterfaceDisabled",
            Self::MissingSignature => "MissingSignature",
            Self::InvalidTimestamp => "InvalidTimestamp",
            Self::SignatureExpired => "SignatureExpired",
            Self::InvalidDuration => "InvalidDuration",
            Self::InvalidSignature => "InvalidSignature",
            Self::TooManyRequests => "TooManyRequests",
            Self::NotReady => "NotReady",
        }
    }

    /// The HTTP status the code goes with. Authentication failures are 403 (the SDK does
    /// not retry them); malformed requests 400; throttling 429; no snapshot yet 503.
    pub fn status(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::InvalidAccount
            | Self::UnsignedInterfaceDisabled
            | Self::SignatureExpired
            | Self::InvalidSignature => 403,
            Self::TooManyRequests => 429,
            Self::NotReady => 503,
            _ => 400,
        }
    }
}

const CODES: usize = Code::ALL.len();

/// Counters: one per (endpoint, code).
#[derive(Debug, Default)]
pub struct HttpdnsMetrics {
    counts: [[AtomicU64; CODES]; Endpoint::ALL.len()],
}

impl HttpdnsMetrics {
    /// Counts one request.
    pub fn record(&self, endpoint: Endpoint, code: Code) {
        self.counts[endpoint as usize][code as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The count for one (endpoint, code).
    pub fn get(&self, endpoint: Endpoint, code: Code) -> u64 {
        self.counts[endpoint as usize][code as usize].load(Ordering::Relaxed)
    }

    /// `isobar_httpdns_requests_total{endpoint, code}` in the Prometheus text format: every
    /// endpoint's `ok` line, and the error codes seen at least once.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP isobar_httpdns_requests_total HTTPDNS requests by endpoint and result code.\n\
             # TYPE isobar_httpdns_requests_total counter\n",
        );
        for endpoint in Endpoint::ALL {
            for code in Code::ALL {
                let n = self.get(endpoint, code);
                if n > 0 || code == Code::Ok {
                    let _ = writeln!(
                        out,
                        "isobar_httpdns_requests_total{{endpoint=\"{}\",code=\"{}\"}} {n}",
                        endpoint.as_str(),
                        code.as_str()
                    );
                }
            }
        }
        out
    }
}
