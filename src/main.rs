//! The `ringway` binary: parse the command line, run, print errors once.

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use ringway::cli::{Cli, Command};
use ringway::{config, control, route};

/// Exit status for a bad config, bad arguments or a failed start.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => config::load(&config)
            .map(|c| println!("{}", c.summary()))
            .map_err(anyhow::Error::from),
        Command::Run { config, log_level } => {
            init_logging(&log_level);
            config::load(&config)
                .map_err(anyhow::Error::from)
                .and_then(control::run)
        }
        Command::Route {
            config,
            listener,
            down,
            dst,
        } => config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|c| {
                route::route(
                    &c,
                    &listener,
                    &down,
                    dst,
                    io::stdin().lock(),
                    io::stdout().lock(),
                )
                .map_err(anyhow::Error::from)
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(e) = err.downcast_ref::<route::RouteError>() {
                if matches!(e, route::RouteError::Io(io) if io.kind() == io::ErrorKind::BrokenPipe)
                {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .init();
}
