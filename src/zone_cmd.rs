//! `isobar zone import|export`: one zone as an RFC 1035 master file, via the scheduler or a store.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use isobar_proto::v1::{ExportZoneRequest, ImportZoneRequest};

use crate::cli::{ClientArgs, actor_name, admin_client, grpc_error};

/// `isobar zone ...`.
#[derive(Debug, Args)]
pub struct ZoneArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ZoneCommand,
}

/// Subcommands of `isobar zone`.
#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    /// Replace a zone's records with a master file (one audited config change).
    Import(ImportArgs),
    /// Print a zone as a master file that `zone import` reads back unchanged.
    Export(ExportArgs),
}

/// `isobar zone import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The RFC 1035 master file.
    pub file: PathBuf,
    /// The zone [default: the file's first $ORIGIN, else its SOA owner].
    #[arg(long)]
    pub zone: Option<String>,
    /// Show the diff without applying.
    #[arg(long)]
    pub dry_run: bool,
    /// Import directly into this store instead of through a running scheduler.
    #[arg(long, env = "ISOBAR_DB")]
    pub db: Option<String>,
    /// Scheduler connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `isobar zone export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The zone, e.g. example.com.
    pub zone: String,
    /// Read directly from this store instead of a running scheduler.
    #[arg(long, env = "ISOBAR_DB")]
    pub db: Option<String>,
    /// Scheduler connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `isobar zone`.
pub async fn run(args: ZoneArgs) -> anyhow::Result<()> {
    match args.command {
        ZoneCommand::Import(args) => import(args).await,
        ZoneCommand::Export(args) => export(args).await,
    }
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let source = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {source}"))?;
    let (changed, version, diff) = if let Some(db) = &args.db {
        let store = isobar_store::Store::open(db).await?;
        let applied = isobar_scheduler::zonefile::import_into_store(
            &store,
            args.zone.as_deref(),
            &source,
            &text,
            args.dry_run,
            &actor_name(),
        )
        .await;
        store.close().await;
        let applied = applied?;
        (applied.changed, applied.config_version, applied.diff)
    } else {
        let resp = admin_client(&args.client)
            .await?
            .import_zone(ImportZoneRequest {
                zone: args.zone.unwrap_or_default(),
                text,
                source_name: source,
                dry_run: args.dry_run,
                actor: actor_name(),
            })
            .await
            .map_err(grpc_error)?
            .into_inner();
        (resp.changed, resp.config_version, resp.diff)
    };
    for line in &diff {
        println!("{line}");
    }
    match (args.dry_run, changed || !diff.is_empty()) {
        (_, false) => println!("no changes (config version {version})"),
        (true, true) => println!(
            "dry run: {} change(s) not applied (config version {version})",
            diff.len()
        ),
        (false, true) => println!(
            "imported {} change(s): config version {version}",
            diff.len()
        ),
    }
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let text = if let Some(db) = &args.db {
        let store = isobar_store::Store::open(db).await?;
        let loaded = store.load_world().await;
        store.close().await;
        let (world, version) = loaded?;
        isobar_scheduler::zonefile::export_zone(&world, &args.zone, version)?
    } else {
        admin_client(&args.client)
            .await?
            .export_zone(ExportZoneRequest { zone: args.zone })
            .await
            .map_err(grpc_error)?
            .into_inner()
            .text
    };
    print!("{text}");
    Ok(())
}
