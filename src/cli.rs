//! The command line. Parsing only: no I/O happens here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ringway: a Layer-4 TCP/UDP load balancer on a consistent-hash ring.
#[derive(Debug, Parser)]
#[command(name = "ringway", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The signals `run` answers, in its `--help` (the same table as `control::signals`).
const RUN_SIGNALS: &str = "\
Signals:
  SIGTERM, SIGINT, SIGQUIT  stop accepting, drain open connections for shutdown_timeout,
                            exit 0; a second one exits at once
  SIGHUP                    reload the config file (a bad one is refused and logged; the
                            running config stays)
  SIGUSR1                   reopen the access log (logrotate's postrotate)
  SIGUSR2, SIGWINCH, SIGTTIN, SIGTTOU
                            logged and ignored

`ringway ctl reload` (POST /reload on the admin API) reloads as SIGHUP does.";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run in the foreground: SIGHUP reloads, SIGTERM drains and stops, SIGUSR1
    /// reopens the access log.
    #[command(after_help = RUN_SIGNALS)]
    Run {
        /// The config file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Log filter when RUST_LOG is not set: a level (error, warn, info, debug,
        /// trace, off) or RUST_LOG-style directives (`info,ringway::health=debug`).
        #[arg(long, default_value = "info", value_name = "LEVEL", value_parser = log_filter)]
        log_level: String,
    },
    /// Validate a config, print a one-line summary, exit 0; on error exit 2. Binds nothing.
    Check {
        /// The config file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Read client addresses (IP:PORT, one per line) on stdin and print, per line,
    /// `CLIENT BACKEND_ADDRESS` (or `CLIENT BACKEND_ID` with --ids): where a new
    /// connection from that client goes (`-`: no backend up; `denied`: the listener's
    /// allow/deny lists refuse it).
    Route {
        /// The config file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The listener's name.
        #[arg(long, value_name = "NAME")]
        listener: String,
        /// Treat the backend with this id as down (repeatable).
        #[arg(long, value_name = "ID")]
        down: Vec<String>,
        /// The address clients reach: needed when the listener binds a wildcard
        /// address; with `accept_proxy`, the destination their PROXY headers name.
        #[arg(long, value_name = "IP:PORT")]
        dst: Option<SocketAddr>,
        /// Name each backend by its id instead of its address.
        #[arg(long)]
        ids: bool,
        /// The server name the clients ask for (listeners with `route_by = "sni"`):
        /// a third column names the pool it routes to.
        #[arg(long, value_name = "NAME")]
        sni: Option<String>,
    },
    /// Talk to a running ringway's admin API: status, drain, enable, disable, reload.
    Ctl {
        /// The admin API's address, IP:PORT or unix:PATH (default: `[admin] listen`
        /// of --config, else 127.0.0.1:9101).
        #[arg(long, value_name = "IP:PORT|unix:PATH", global = true)]
        admin: Option<crate::ctl::Admin>,
        /// Bearer token (default: `[admin] token` of --config, else $RINGWAY_ADMIN_TOKEN).
        #[arg(long, value_name = "TOKEN", global = true)]
        token: Option<String>,
        /// Read the admin address and token from this config file.
        #[arg(short, long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: CtlAction,
    },
}

/// `ringway ctl` actions.
#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// Listeners and backends: state, open connections, ring share.
    Status {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send no new connections or flows to a backend; open ones stay.
    Drain(BackendRef),
    /// Undo drain or disable.
    Enable(BackendRef),
    /// Mark a backend down by hand.
    Disable(BackendRef),
    /// Reload the config file (as SIGHUP).
    Reload {
        /// Print the API's JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Start the binary at the path ringway was started from (a new version put
    /// there) and hand it the listening sockets; the old process then drains and
    /// exits (as SIGUSR2). Fails, changing nothing, when the new one does not serve.
    Upgrade {
        /// Print the API's JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Mark this node as leaving its fleet (`[cluster]`): shown in status and
    /// metrics. Then withdraw its route, wait for its connections to reach 0, stop it;
    /// meanwhile the other nodes pass its connections' packets to it (second chance).
    Leave {
        /// Print the API's JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// Take back a `leave`: this node stays in its fleet.
    Stay {
        /// Print the API's JSON instead of a line.
        #[arg(long)]
        json: bool,
    },
}

/// The backend a `ctl drain|enable|disable` acts on.
#[derive(Debug, Args)]
pub struct BackendRef {
    /// Listener name (with --pool, a [[pool]]'s name).
    pub listener: String,
    /// Backend id.
    pub backend: String,
    /// The first name is a [[pool]]'s: the backend changes for every listener that
    /// routes to that pool (a listener's name finds a backend in any of its pools).
    #[arg(long)]
    pub pool: bool,
    /// Print the API's JSON (the backend's /status entry) instead of a line.
    #[arg(long)]
    pub json: bool,
}

/// Log levels, as `--log-level` and `RUST_LOG` spell them.
pub const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Checks a log filter: a level, or comma-separated `target=level` directives (a bare
/// word that is not a level would silently mean "only the target named so").
pub fn log_filter(filter: &str) -> Result<String, String> {
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LOG_LEVELS
            .iter()
            .any(|l| l.eq_ignore_ascii_case(level.trim()))
        {
            return Err(format!(
                "{directive:?}: unknown log level {level:?}; expected one of {} (or RUST_LOG-style `target=level` directives)",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(filter.to_string())
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn log_filters_are_levels_or_directives() {
        for good in [
            "info",
            "DEBUG",
            "warn,ringway=debug",
            "ringway::health=trace",
            "off",
            "",
        ] {
            assert!(log_filter(good).is_ok(), "{good}");
        }
        for bad in ["verbose", "info,verbose", "ringway=loud", "ringway"] {
            let e = log_filter(bad).unwrap_err();
            assert!(e.contains("error, warn, info, debug, trace, off"), "{e}");
        }
    }
}
