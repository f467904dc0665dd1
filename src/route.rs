//! `ringway route`: where a new flow from a given client goes, computed from the config
//! alone with the same code the data plane uses.

use std::io::{BufRead, Write};
use std::net::SocketAddr;

use crate::balance::hash::{flow_hash, PROTO_TCP, PROTO_UDP};
use crate::balance::{Idle, Policy, Snapshot};
use crate::config::{Config, Protocol};

/// Why `route` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No listener with that name.
    #[error("no listener named {name:?} (listeners: {known})")]
    UnknownListener {
        /// Asked for.
        name: String,
        /// What exists.
        known: String,
    },
    /// `--down` named an id the pool does not have.
    #[error("pool {pool:?} has no backend with id {id:?} (ids: {known})")]
    UnknownBackend {
        /// The pool the clients are routed to.
        pool: String,
        /// Asked for.
        id: String,
        /// What exists.
        known: String,
    },
    /// `--sni` on a listener that does not route by server name.
    #[error(
        "listener {0:?} does not route by server name (no `route_by = \"sni\"`): leave --sni out"
    )]
    NotByName(String),
    /// The listener binds a wildcard, so the destination address is not known.
    #[error("listener {0:?} binds a wildcard address: give the address clients reach with --dst IP:PORT")]
    NeedDst(String),
    /// A line of input is not `IP:PORT`.
    #[error(
        "stdin line {line}: {text:?} is not a client address: expected IP:PORT or [IPv6]:PORT"
    )]
    BadInput {
        /// 1-based line.
        line: usize,
        /// The text.
        text: String,
    },
    /// Reading stdin or writing stdout failed.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

/// What names the backend in `route`'s second column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Column {
    /// Its address as the config writes it (the default).
    #[default]
    Address,
    /// Its id.
    Id,
}

/// What `route` is asked.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Backends to treat as down (ids of the pool the clients are routed to).
    pub down: Vec<String>,
    /// The address clients reach (needed for a wildcard listener).
    pub dst: Option<SocketAddr>,
    /// The server name the clients ask for (`route_by = "sni"` listeners).
    pub sni: Option<String>,
    /// How to name backends.
    pub column: Column,
}

/// Prints `CLIENT BACKEND` (its address, or its id) for each client address read from
/// `input`, chosen by the pool's `balance` as on an idle node (nothing open, so
/// `balance_factor` passes nothing over and least connections answers as the ring;
/// with round robin each line takes the next turn); `-` as the backend when every backend is down, `denied` when the listener's
/// `allow`/`deny` lists refuse the client. On a listener that routes by server name, a
/// third column names the pool (`no_route` as the backend when no route takes the
/// name and there is no default pool). Blank lines and `#` comments are skipped.
pub fn route(
    config: &Config,
    listener: &str,
    ask: &Ask,
    input: impl BufRead,
    mut output: impl Write,
) -> Result<(), RouteError> {
    let l = config
        .listener(listener)
        .ok_or_else(|| RouteError::UnknownListener {
            name: listener.to_string(),
            known: joined(config.listeners.iter().map(|l| l.name.as_str())),
        })?;
    let (routes, pools) = crate::control::routes_of(l);
    if ask.sni.is_some() && !routes.by_server_name() {
        return Err(RouteError::NotByName(l.name.clone()));
    }
    let name = ask
        .sni
        .as_deref()
        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase());
    let pool = routes
        .pick(name.as_deref())
        .and_then(|slot| config.pool(pools[slot]));
    let placed = match pool {
        Some(p) => {
            let base = Snapshot::new(p.backends.clone(), p.vnodes);
            let mut up = vec![true; p.backends.len()];
            for id in &ask.down {
                let i = base
                    .index_of(id)
                    .ok_or_else(|| RouteError::UnknownBackend {
                        pool: p.name.clone(),
                        id: id.clone(),
                        known: joined(p.backends.iter().map(|b| b.id.as_str())),
                    })?;
                up[i] = false;
            }
            let live = crate::control::live_snapshot(p, &base, up.clone(), up);
            let policy = Policy::new(p.balance, &p.backends).for_snapshot(&live);
            Some((p, live, policy))
        }
        None => None,
    };
    let rules = crate::control::admission_rules(&l.admission);
    let dst = match ask.dst {
        Some(d) => d,
        None if l.listen.ip().is_unspecified() => return Err(RouteError::NeedDst(l.name.clone())),
        None => l.listen,
    };
    let proto = match l.protocol {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    };
    let idle = Idle::default();
    let third = match (&placed, routes.by_server_name()) {
        (Some((p, _, _)), true) => format!(" {}", p.name),
        (None, true) => " -".to_string(),
        (_, false) => String::new(),
    };
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let client: SocketAddr = text.parse().map_err(|_| RouteError::BadInput {
            line: i + 1,
            text: text.to_string(),
        })?;
        if !rules.permits(client.ip()) {
            writeln!(output, "{text} denied{third}")?;
            continue;
        }
        let key = flow_hash(l.hash, proto, client, dst);
        let backend =
            match &placed {
                None => "no_route",
                Some((_, snapshot, policy)) => policy
                    .choose(snapshot, key, &idle, |_| false)
                    .map_or("-", |c| {
                        let b = &snapshot.backends()[c.backend];
                        match ask.column {
                            Column::Address => b.addr_text.as_str(),
                            Column::Id => b.id.as_ref(),
                        }
                    }),
            };
        writeln!(output, "{text} {backend}{third}")?;
    }
    output.flush()?;
    Ok(())
}

/// Names for an error message: `a, b, c`.
fn joined<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}
