//! The `syncbridge` binary: parses the command line, loads configuration, and hands over.

use std::process::ExitCode;

use clap::Parser;
use syncbridge::{
    app,
    cli::{Cli, Command},
    config::Config,
    telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("syncbridge: {e}");
            return ExitCode::from(2);
        }
    };
    let tracing = match telemetry::init(&config.log, &config.traces) {
        Ok(tracing) => tracing,
        Err(e) => {
            eprintln!("syncbridge: cannot export traces: {e:#}");
            return ExitCode::from(2);
        }
    };
    let outcome = app::run(cli.command.unwrap_or(Command::Serve), config).await;
    // The last spans leave before the process does (blocking: off the async threads).
    if let Some(tracing) = tracing {
        let _ = tokio::task::spawn_blocking(move || drop(tracing)).await;
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("syncbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
