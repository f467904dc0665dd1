//! The `ringway` binary: parse the command line, run, print errors once.

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use ringway::cli::{Cli, Command, CtlAction};
use ringway::{config, control, ctl, discovery, route};

/// Exit status for a bad config, bad arguments or a failed start.
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => {
            config::load(&config)
                .map_err(anyhow::Error::from)
                .and_then(|mut c| {
                    if let Some(why) = control::access_log_problem(&c) {
                        anyhow::bail!("{}: {why}", config.display());
                    }
                    for a in discovery::fill(&mut c) {
                        eprintln!("warning: {a}; it starts empty");
                    }
                    let warning = control::fd_warning(&mut c);
                    println!("{}", c.summary());
                    if let Some(w) = warning {
                        eprintln!("warning: {w}");
                    }
                    Ok(())
                })
        }
        Command::Run { config, log_level } => init_logging(&log_level).and_then(|()| {
            // Started by an upgrade: the old process's sockets, before anything else.
            let inherited = control::upgrade::new::Inherited::from_env()?;
            match config::load(&config) {
                Ok(c) => control::run(c, inherited).map_err(anyhow::Error::from),
                Err(e) => {
                    if let Some(i) = inherited {
                        i.failed(&ringway::error_chain(&e));
                    }
                    Err(e.into())
                }
            }
        }),
        Command::Route {
            config,
            listener,
            down,
            dst,
            ids,
            sni,
        } => config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|mut c| {
                for a in discovery::fill(&mut c) {
                    match a.answer {
                        // What a running ringway does after `nxdomain_after` of them.
                        discovery::Answer::NxDomain => eprintln!("warning: {a}; taken as empty"),
                        _ => anyhow::bail!("{a}: cannot say which backend owns a key"),
                    }
                }
                let ask = route::Ask {
                    down,
                    dst,
                    sni,
                    column: if ids {
                        route::Column::Id
                    } else {
                        route::Column::Address
                    },
                };
                route::route(&c, &listener, &ask, io::stdin().lock(), io::stdout().lock())
                    .map_err(anyhow::Error::from)
            }),
        Command::Ctl {
            admin,
            token,
            config,
            action,
        } => run_ctl(admin, token, config, action),
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
            eprintln!("error: {}", said_once(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// An error and its causes, each said once ([`ringway::error_chain`]).
fn said_once(err: &anyhow::Error) -> String {
    ringway::error_chain(err.as_ref())
}

fn run_ctl(
    admin: Option<ctl::Admin>,
    token: Option<String>,
    config: Option<std::path::PathBuf>,
    action: CtlAction,
) -> anyhow::Result<()> {
    let reloading = matches!(action, CtlAction::Reload { .. });
    // With `-c FILE`, the file is read here first: for the admin address, and before a
    // reload, so a broken file is caught on this side. Its error names which side
    // refused, since both quote the same config error.
    let from_file = match &config {
        Some(path) => match config::load(path) {
            Ok(c) => c.admin,
            Err(e) if reloading => {
                return Err(anyhow::Error::from(e).context(format!(
                    "not reloaded: {} does not pass `ringway check` here, so the running ringway was not asked (it keeps its config)",
                    path.display()
                )))
            }
            Err(e) => {
                return Err(anyhow::Error::from(e).context(format!(
                    "cannot take the admin address and token from {}",
                    path.display()
                )))
            }
        },
        None => None,
    };
    let addr = match (admin, &from_file) {
        (Some(a), _) => a,
        (None, Some(a)) => ctl::Admin::from(&a.listen),
        (None, None) => ctl::Admin::Tcp(ctl::DEFAULT_ADMIN.parse()?),
    };
    let token = token
        .or_else(|| from_file.and_then(|a| a.token))
        .or_else(|| std::env::var("RINGWAY_ADMIN_TOKEN").ok());
    let (what, target, json) = match &action {
        CtlAction::Status { json } => (ctl::Action::Status, None, *json),
        CtlAction::Drain(b) => (ctl::Action::Drain, Some(b), b.json),
        CtlAction::Enable(b) => (ctl::Action::Enable, Some(b), b.json),
        CtlAction::Disable(b) => (ctl::Action::Disable, Some(b), b.json),
        CtlAction::Reload { json } => (ctl::Action::Reload, None, *json),
        CtlAction::Upgrade { json } => (ctl::Action::Upgrade, None, *json),
        CtlAction::Leave { json } => (ctl::Action::Leave, None, *json),
        CtlAction::Stay { json } => (ctl::Action::Stay, None, *json),
    };
    let target = target.map(|b| ctl::Target {
        pool: b.pool,
        owner: &b.listener,
        backend: &b.backend,
    });
    let body = match ctl::call(&addr, token.as_deref(), &what, target) {
        Err(e @ ctl::CtlError::Refused { .. }) if reloading => {
            return Err(anyhow::Error::from(e).context(format!(
                "not reloaded: the running ringway at {addr} refused its config file (it keeps the running config)"
            )))
        }
        other => other?,
    };
    if json {
        print!("{body}");
    } else if matches!(what, ctl::Action::Status) {
        print!("{}", ctl::render_status(&body)?);
    } else {
        println!("{}", ctl::render_change(&what, target, &body)?);
    }
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG` when set (checked as `--log-level` is),
/// else by `default`.
fn init_logging(default: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => {
            ringway::cli::log_filter(&env).map_err(|e| anyhow::anyhow!("RUST_LOG: {e}"))?
        }
        _ => default.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| anyhow::anyhow!("log filter {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .init();
    Ok(())
}
