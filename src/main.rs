//! The `isobar` executable: parse flags, start the roles, wait for a signal, drain.

use clap::Parser;
use isobar::cli::{self, Cli, Command};
use tracing::info;

/// Exit code for a bad config or bad usage (sysexits `EX_USAGE`).
const EX_USAGE: i32 = 64;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,h2=warn,tower=warn,hyper=warn,sqlx=warn,hickory_server=warn",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => match cli::serve_options(*args) {
            Ok(opts) => serve(opts, None).await,
            Err(err) => {
                eprintln!("error: {err:#}");
                std::process::exit(EX_USAGE);
            }
        },
        Command::Demo(args) => isobar::demo::run(args).await,
        Command::Apply(args) => cli::apply(args).await,
        Command::Export(args) => cli::export(args).await,
        Command::State(args) => cli::state(args).await,
        Command::Place(args) => cli::place(args).await,
        Command::GetPlacement(args) => cli::get_placement(args).await,
        Command::WatchPlacement(args) => cli::watch_placement(args).await,
        Command::Release(args) => cli::release(args).await,
        Command::Health(args) => isobar::health_cli::run(args).await,
        Command::Zone(args) => isobar::zone_cmd::run(args).await,
        Command::Explain(args) => isobar::steer_cmd::explain(args).await,
        Command::Whatif(args) => isobar::steer_cmd::what_if(args).await,
        Command::Drain(args) => isobar::steer_cmd::drain(args).await,
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        let is_config = err.chain().any(|c| {
            c.downcast_ref::<isobar_store::config::ConfigError>()
                .is_some()
        });
        std::process::exit(if is_config { EX_USAGE } else { 1 });
    }
}

async fn serve(opts: isobar::ServeOptions, extra: Option<axum::Router>) -> anyhow::Result<()> {
    let running = isobar::start(opts, extra).await?;
    shutdown_signal().await;
    info!("shutting down");
    running.stop().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
