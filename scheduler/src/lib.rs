//! The Isobar scheduler.
//!
//! Inputs: the world config (from `isobar-store`), probe measurements (over the telemetry
//! contract), placement requests and orchestrator status (over the placement contract).
//! Outputs: versioned steering snapshots pushed to every subscribed frontend, probe target
//! sets pushed to probers, and versioned placement decisions pushed to orchestrators.
//!
//! The solvers ([`steering::solve`], [`placement::solve`]) are pure functions of their inputs;
//! [`Scheduler`] holds the state around them and [`grpc`] serves it.

pub mod grpc;
pub mod health;
pub mod placement;
mod runtime;
pub mod steering;

#[cfg(test)]
mod fixtures;

pub use runtime::{Applied, CONFIG_POLL_INTERVAL, Scheduler, SchedulerError, now_ms};
