//! Isobar's frontends: authoritative GSLB DNS and HTTPDNS.
//!
//! The crate's one job is to answer client queries from the last steering snapshot the
//! scheduler pushed. Inputs: `isobar.v1.Snapshot` messages (from `Steering/WatchSnapshot`,
//! or a file persisted by an earlier run) and optional GeoIP and ASN databases. Outputs: DNS
//! responses over UDP and TCP, and HTTPDNS JSON over HTTP.
//!
//! Architecture invariant: nothing here talks to the store or to any other service while
//! answering a query. A query reads one immutable [`ServingSnapshot`] (swapped atomically by
//! [`Engine::install`]) and the in-memory [`GeoDb`] and [`AsnDb`]; all I/O besides the
//! client's own socket happens in [`subscriber`], off the query path.
//!
//! - [`engine`]: the selection code both frontends share.
//! - [`respond()`]: one DNS packet in, one response out; the whole DNS query path.
//! - [`server`]: the DNS frontend's UDP and TCP loops and their bounds.
//! - [`http`]: the HTTP routes (axum): `/healthz`, HTTPDNS, DoH.
//! - [`httpdns`]: HTTPDNS (Alibaba dialect per account, signing, rate limits, TLS/HTTP/2).
//! - [`doh`]: DNS over HTTPS (RFC 8484 and the JSON form), answered by [`respond()`].
//! - [`rum`]: client-measured RTT reports (`POST /{account}/report`), forwarded to the
//!   scheduler.
//! - [`subscriber`]: keeps the engine fed from the scheduler and persists what it got.
//! - [`demand`]: per-(service, client group) query counters, reported to the scheduler.

#![warn(missing_docs)]

pub mod asn;
mod cidr;
pub mod demand;
pub mod doh;
pub mod dynamic;
pub mod engine;
pub mod geo;
mod gray_stats;
pub mod http;
pub mod httpdns;
mod name;
mod respond;
pub mod rum;
pub mod server;
pub mod snapshot;
pub mod subscriber;
mod wire;
mod zone;

pub use asn::{AsnDb, AsnLookup};
pub use dynamic::{MAX_ANSWER_COUNT, Site};
pub use engine::{ClientKey, Decision, EcsSubnet, Engine, ServiceAnswer};
pub use geo::{GeoDb, GeoError, GeoHit, GeoLookup};
pub use respond::{Outcome, Transport, respond};
pub use server::{DnsLimits, DnsServer, DnsStats, DnsStatsSnapshot, RrlLimits};
pub use snapshot::{Answer, Service, ServingSnapshot, SnapshotError};
pub use subscriber::{PersistError, SubscriberConfig, SubscriberError, load_persisted};
pub use zone::Zone;
