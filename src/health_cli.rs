//! `isobar health`: operator overrides and what the probers measured.

use clap::{Args, Subcommand};
use isobar_proto::v1::{GetMeasurementsRequest, SetHealthOverrideRequest};

use crate::cli::{ClientArgs, admin_client, grpc_error};

/// `isobar health ...`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: HealthCommand,
}

/// Subcommands of `isobar health`.
#[derive(Debug, Subcommand)]
pub enum HealthCommand {
    /// Force a probe target up or down, drain it, or clear its override (audited).
    Override(OverrideArgs),
    /// Per (vantage, target) RTT, loss and jitter, node loads and the RTT matrix.
    Measurements(MeasurementArgs),
}

/// `isobar health override`.
#[derive(Debug, Args)]
pub struct OverrideArgs {
    /// The probe target id, as `isobar state` lists it (e.g. tcp://10.0.0.1:80).
    pub target: String,
    /// force-up, force-down, drain or clear.
    pub mode: String,
    /// Why (required unless clearing); recorded in the audit log and the target's reason.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Scheduler connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `isobar health measurements`.
#[derive(Debug, Args)]
pub struct MeasurementArgs {
    /// Only this vantage.
    #[arg(long, default_value = "")]
    pub vantage: String,
    /// Only this target.
    #[arg(long, default_value = "")]
    pub target: String,
    /// Scheduler connection.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs `isobar health`.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    match args.command {
        HealthCommand::Override(a) => {
            let t = admin_client(&a.client)
                .await?
                .set_health_override(SetHealthOverrideRequest {
                    target_id: a.target,
                    mode: a.mode.replace('-', "_"),
                    reason: a.reason,
                    actor: crate::cli::actor_name(),
                })
                .await
                .map_err(grpc_error)?
                .into_inner();
            println!("{:<6} {:<32} {}", t.state, t.target_id, t.reason);
        }
        HealthCommand::Measurements(a) => {
            let m = admin_client(&a.client)
                .await?
                .get_measurements(GetMeasurementsRequest {
                    vantage: a.vantage,
                    target_id: a.target,
                })
                .await
                .map_err(grpc_error)?
                .into_inner();
            println!(
                "{:<10} {:<40} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9}",
                "vantage", "target", "samples", "min ms", "p50 ms", "p95 ms", "loss %", "jitter ms"
            );
            for p in m.paths {
                println!(
                    "{:<10} {:<40} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>7.2} {:>9.2}",
                    p.vantage,
                    p.target_id,
                    p.samples,
                    f64::from(p.rtt_min_us) / 1e3,
                    f64::from(p.rtt_median_us) / 1e3,
                    f64::from(p.rtt_p95_us) / 1e3,
                    p.loss_percent,
                    p.jitter_us / 1e3
                );
            }
            for l in m.loads {
                println!(
                    "load {}: cpu {:.0} %, load average {:.2}, {} connections, custom {:.2}",
                    l.node,
                    l.cpu * 100.0,
                    l.load_average,
                    l.open_connections,
                    l.custom
                );
            }
            for r in m.rtt {
                let how = if r.measured { "measured" } else { "estimated" };
                println!("rtt {} → {}: {:.1} ms ({how})", r.from, r.to, r.rtt_ms);
            }
        }
    }
    Ok(())
}
