//! `isobar-store` keeps Isobar's configuration, scheduler state and audit log, and owns the
//! declarative config format.
//!
//! Inputs: `world.toml` text and the zone files it names ([`config::parse_world`]), or a
//! [`World`] built in code; placement and site-status writes from the scheduler.
//! Outputs: a validated, normalized [`World`] (the scheduler's and DNS frontends' view of the
//! configuration), human-readable diffs ([`diff::diff`]), TOML export ([`config::to_toml`])
//! and a durable, versioned copy of all of it in SQLite or PostgreSQL ([`Store`]).
//!
//! Every applied change bumps a single config version by one and leaves an audit entry, in
//! one transaction; other nodes notice it by polling [`Store::config_version`].

#![warn(missing_docs)]

pub mod config;
mod db;
pub mod diff;
mod error;
pub mod world;

pub use db::{
    ApplyOutcome, AuditEntry, HealthOverrideRow, LostSite, PlacementRisk, PlacementRow,
    SiteRemoval, SiteStatusRow, Store,
};
pub use diff::{Change, ChangeOp, Item};
pub use error::StoreError;
pub use world::World;
