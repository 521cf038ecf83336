//! Isobar's frontends: authoritative GSLB DNS and HTTPDNS.
//!
//! The crate's one job is to answer client queries from the last steering snapshot the
//! scheduler pushed. Inputs: `isobar.v1.Snapshot` messages (from `Steering/WatchSnapshot`,
//! or a file persisted by an earlier run) and an optional GeoIP database. Outputs: DNS
//! responses over UDP and TCP, and HTTPDNS JSON over HTTP.
//!
//! Architecture invariant: nothing here talks to the store or to any other service while
//! answering a query. A query reads one immutable [`ServingSnapshot`] (swapped atomically by
//! [`Engine::install`]) and the in-memory [`GeoDb`]; all I/O besides the client's own socket
//! happens in [`subscriber`], off the query path.
//!
//! - [`engine`]: the selection code both frontends share.
//! - [`respond()`]: one DNS packet in, one response out; the whole DNS query path.
//! - [`server`]: the DNS frontend's UDP and TCP loops and their bounds.
//! - [`http`]: the HTTPDNS frontend (axum).
//! - [`subscriber`]: keeps the engine fed from the scheduler and persists what it got.
//! - [`demand`]: per-(service, client group) query counters, reported to the scheduler.

#![warn(missing_docs)]

mod cidr;
pub mod demand;
pub mod engine;
pub mod geo;
pub mod http;
mod name;
mod respond;
pub mod server;
pub mod snapshot;
pub mod subscriber;
mod wire;
mod zone;

pub use engine::{ClientKey, Decision, EcsSubnet, Engine, ServiceAnswer};
pub use geo::{GeoDb, GeoError, GeoHit, GeoLookup};
pub use respond::{Outcome, Transport, respond};
pub use server::{DnsLimits, DnsServer, DnsStats, DnsStatsSnapshot, RrlLimits};
pub use snapshot::{Answer, Service, ServingSnapshot, SnapshotError};
pub use subscriber::{PersistError, SubscriberConfig, SubscriberError, load_persisted};
pub use zone::Zone;
