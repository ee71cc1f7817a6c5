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
    telemetry::init(&config.log);
    match app::run(cli.command.unwrap_or(Command::Serve), config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("syncbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
