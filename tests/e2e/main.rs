//! End-to-end tests: the real servers on ephemeral ports (and the real binary), spoken to
//! with real DNS packets, HTTP requests and gRPC calls. One test binary, one link step.

mod asn;
mod binary;
mod config;
mod demand;
mod dns;
mod explain;
mod failover;
mod httpdns;
mod placement;
mod placement_steering;
mod python;
mod restart;
mod rum;
mod stability;
mod steering;
mod support;
mod zones;
