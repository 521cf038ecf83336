//! The `isobar` binary's library: wires the crates into processes.
//!
//! Inputs: command-line flags, a world config file, the `[server]` table of that file.
//! Outputs: running roles (scheduler, DNS, HTTP, prober) that talk to each other only
//! through the gRPC contracts in `isobar-proto`, and the CLI commands that drive a running
//! scheduler. Library form so the end-to-end tests start exactly what the binary starts.

pub mod app;
pub mod cli;
pub mod demo;
pub mod health_cli;
pub mod steer_cmd;
pub mod zone_cmd;

pub use app::{Role, Running, ServeOptions, start};
