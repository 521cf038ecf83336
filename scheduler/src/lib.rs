//! The Isobar scheduler.
//!
//! Inputs: the world config (from `isobar-store`), probe measurements (over the telemetry
//! contract), placement requests and orchestrator status (over the placement contract).
//! Outputs: versioned steering snapshots pushed to every subscribed frontend, probe target
//! sets pushed to probers, and versioned placement decisions pushed to orchestrators.
//!
//! The solvers ([`steering::solve`], [`placement::solve`]) are pure functions of their inputs;
//! [`placement_state`] adds time (risk control) with explicit clocks; [`Scheduler`] holds
//! the state around them and [`grpc`] serves it.

mod delta;
pub mod grpc;
pub mod health;
pub mod measure;
pub mod placement;
pub mod placement_state;
pub mod probing;
pub mod rum;
mod runtime;
pub mod steering;
pub mod vivaldi;
pub mod zonefile;

#[cfg(test)]
mod fixtures;

pub use runtime::{
    Applied, CONFIG_POLL_INTERVAL, PLACEMENT_TICK, PlacementMetrics, STEERING_TICK, Scheduler,
    SchedulerError, VERDICT_ACTOR, now_ms,
};
