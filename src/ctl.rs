//! `ringway ctl`: the admin API from the command line, so nobody needs curl.
//!
//! The address and token come from `--admin`/`--token`, else from the `[admin]` table
//! of `--config`, else `127.0.0.1:9101` and the `RINGWAY_ADMIN_TOKEN` environment
//! variable. The address is `IP:PORT` or `unix:PATH` (`[admin] listen = "unix:..."`).
//! Calls that change state send `Content-Type: application/json`, as the API asks of
//! them (see `docs/ADMIN.md`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// The admin address used when none is given.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9101";

/// How long a call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the admin API is: `IP:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket.
    Unix(PathBuf),
}

impl std::str::FromStr for Admin {
    type Err = String;

    fn from_str(s: &str) -> Result<Admin, String> {
        match s.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Ok(Admin::Unix(path.into())),
            Some(_) => Err("unix: needs a path (unix:/run/ringway/admin.sock)".into()),
            None => s
                .parse()
                .map(Admin::Tcp)
                .map_err(|_| format!("{s:?} is not IP:PORT or unix:PATH")),
        }
    }
}

impl fmt::Display for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admin::Tcp(a) => write!(f, "{a}"),
            Admin::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<&crate::config::AdminListen> for Admin {
    fn from(l: &crate::config::AdminListen) -> Admin {
        match l {
            crate::config::AdminListen::Tcp(a) => Admin::Tcp(*a),
            crate::config::AdminListen::Unix { path, .. } => Admin::Unix(path.clone()),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Drain, enable and disable name a listener and a backend.
    #[error("this action needs a listener and a backend id")]
    NeedsTarget,
    /// The client's runtime could not start.
    #[error("cannot start the client: {0}")]
    Runtime(io::Error),
    /// Nothing answered in time.
    #[error("admin API at {0}: no answer within {TIMEOUT:?}")]
    Timeout(Admin),
    /// Nothing listens there.
    #[error("cannot reach the admin API at {addr} (is [admin] configured?): {source}")]
    Connect {
        /// Where.
        addr: Admin,
        /// What the OS said.
        source: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("admin API at {addr}: {source}")]
    Http {
        /// Where.
        addr: Admin,
        /// What hyper said.
        source: hyper::Error,
    },
    /// The request could not be built (a bad header value in the token).
    #[error("cannot build the request: {0}")]
    Request(hyper::http::Error),
    /// The API said no.
    #[error("admin API answered {status}: {message}")]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its message.
        message: String,
    },
    /// `/status` did not answer JSON.
    #[error("status is not JSON: {0}")]
    NotJson(serde_json::Error),
}

/// What to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /status`.
    Status,
    /// `POST .../drain`.
    Drain,
    /// `POST .../enable`.
    Enable,
    /// `POST .../disable`.
    Disable,
    /// `POST /reload`.
    Reload,
    /// `POST /upgrade`.
    Upgrade,
    /// `POST /leave`.
    Leave,
    /// `POST /stay`.
    Stay,
}

/// The backend an action is for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `owner` is a `[[pool]]`'s name (else a listener's).
    pub pool: bool,
    /// The listener or pool.
    pub owner: &'a str,
    /// The backend's id.
    pub backend: &'a str,
}

/// Sends one request; returns the response body (JSON). Non-2xx answers are errors
/// carrying the API's message.
pub fn call(
    admin: &Admin,
    token: Option<&str>,
    action: &Action,
    target: Option<Target<'_>>,
) -> Result<String, CtlError> {
    let (method, path) = match (action, target) {
        (Action::Status, _) => (Method::GET, "/status".to_string()),
        (Action::Reload, _) => (Method::POST, "/reload".to_string()),
        (Action::Upgrade, _) => (Method::POST, "/upgrade".to_string()),
        (Action::Leave, _) => (Method::POST, "/leave".to_string()),
        (Action::Stay, _) => (Method::POST, "/stay".to_string()),
        (a, Some(t)) => {
            let verb = match a {
                Action::Drain => "drain",
                Action::Enable => "enable",
                _ => "disable",
            };
            let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
            (
                Method::POST,
                format!(
                    "/{}/{}/backends/{}/{verb}",
                    if t.pool { "pools" } else { "listeners" },
                    enc(t.owner),
                    enc(t.backend)
                ),
            )
        }
        (_, None) => return Err(CtlError::NeedsTarget),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CtlError::Runtime)?;
    // An upgrade waits for the new process (up to its deadline).
    let timeout = match action {
        Action::Upgrade => crate::control::upgrade::DEADLINE + TIMEOUT,
        _ => TIMEOUT,
    };
    let (status, body) = rt.block_on(async {
        tokio::time::timeout(timeout, request(admin, token, method, &path))
            .await
            .map_err(|_| CtlError::Timeout(admin.clone()))?
    })?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(body);
        return Err(CtlError::Refused { status, message });
    }
    Ok(body)
}

async fn request(
    admin: &Admin,
    token: Option<&str>,
    method: Method,
    path: &str,
) -> Result<(StatusCode, String), CtlError> {
    let connect = |source| CtlError::Connect {
        addr: admin.clone(),
        source,
    };
    match admin {
        Admin::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(connect)?;
            exchange(stream, admin, &addr.to_string(), token, method, path).await
        }
        Admin::Unix(p) => {
            let stream = tokio::net::UnixStream::connect(p).await.map_err(connect)?;
            exchange(stream, admin, "localhost", token, method, path).await
        }
    }
}

/// One request and its answer on a connected stream; `host`: the `Host` header.
async fn exchange<S>(
    stream: S,
    admin: &Admin,
    host: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
) -> Result<(StatusCode, String), CtlError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| CtlError::Http {
        addr: admin.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(&method)
        .uri(path)
        .header(HOST, host);
    if method == Method::POST {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(CtlError::Request)?;
    let res = sender.send_request(req).await.map_err(http)?;
    let status = res.status();
    let body = res.into_body().collect().await.map_err(http)?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// What a change did, in one line: `drained backend b on listener t: now draining, 3
/// open` (`reloaded: ...` for a reload).
pub fn render_change(
    action: &Action,
    target: Option<Target<'_>>,
    json: &str,
) -> Result<String, CtlError> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(CtlError::NotJson)?;
    if *action == Action::Upgrade {
        let u = &v["upgraded"];
        return Ok(format!(
            "upgraded: process {} took over from process {} in {} ms",
            u["pid"], u["from"], u["handoff_ms"]
        ));
    }
    if matches!(action, Action::Leave | Action::Stay) {
        let c = &v["cluster"];
        let node = c["node"].as_str().unwrap_or("?");
        return Ok(match (c["leaving"].as_bool(), v["changed"].as_bool()) {
            (Some(true), Some(true)) => format!(
                "node {node} is leaving: withdraw its route, wait until it has no open connections, then stop it"
            ),
            (Some(true), _) => format!("node {node} was already leaving"),
            (_, Some(true)) => format!("node {node} stays"),
            _ => format!("node {node} was not leaving"),
        });
    }
    let Some(t) = target else {
        return Ok(match v["reloaded"].as_str() {
            Some(summary) => format!("reloaded: {summary}"),
            None => format!("reloaded: {v}"),
        });
    };
    let verb = match action {
        Action::Drain => "drained",
        Action::Enable => "enabled",
        _ => "disabled",
    };
    let state = v["state"].as_str().unwrap_or("?");
    let why = match v["reason"].as_str() {
        Some(r) if !r.is_empty() && state != "up" => format!(" ({r})"),
        _ => String::new(),
    };
    Ok(format!(
        "{verb} backend {} on {} {}: now {state}{why}, {} open",
        t.backend,
        if t.pool { "pool" } else { "listener" },
        t.owner,
        v["active_connections"],
    ))
}

/// The cluster's line of `ctl status` (none without `[cluster]`).
fn cluster_line(c: &serde_json::Value) -> Option<String> {
    let peers = c["peers"].as_array()?;
    let node = c["node"].as_str().unwrap_or("?");
    let at = peers
        .iter()
        .position(|p| p.as_str() == Some(node))
        .map_or("?".to_string(), |i| (i + 1).to_string());
    let sum = |list: &serde_json::Value| -> u64 {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["packets"].as_u64())
            .sum()
    };
    let lost: u64 = ["no_owner", "no_route", "too_big"]
        .iter()
        .filter_map(|r| c["lost"][r]["packets"].as_u64())
        .sum();
    let state = if c["leaving"].as_bool() == Some(true) {
        "LEAVING"
    } else {
        "serving"
    };
    Some(format!(
        "cluster: node {node} ({at} of {}), {state}; second chance: {} packet(s) sent on, {} delivered here, {lost} lost\n",
        peers.len(),
        sum(&c["forwarded"]),
        c["delivered"]["packets"],
    ))
}

/// `GET /status` as a table.
pub fn render_status(json: &str) -> Result<String, CtlError> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(CtlError::NotJson)?;
    let mut out = String::new();
    let p = &v["process"];
    out.push_str(&format!(
        "ringway {} pid {} up {}s, {} workers, config {}, reloads {} ok / {} failed\n",
        p["version"].as_str().unwrap_or("?"),
        p["pid"],
        p["uptime_seconds"],
        p["workers"],
        p["config"].as_str().unwrap_or("?"),
        p["reloads_ok"],
        p["reloads_failed"],
    ));
    if let Some(line) = cluster_line(&v["cluster"]) {
        out.push_str(&line);
    }
    for l in v["listeners"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nlistener {} {} {}: {} open\n",
            l["name"].as_str().unwrap_or("?"),
            l["protocol"].as_str().unwrap_or("?"),
            l["listen"].as_str().unwrap_or("?"),
            l["active_connections"],
        ));
        out.push_str(&format!("  routes: {}\n", routes_of(l)));
        backends_table(l, &mut out);
    }
    for p in v["pools"].as_array().into_iter().flatten() {
        let users: Vec<&str> = p["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str())
            .collect();
        out.push_str(&format!(
            "\npool {} {}: used by {}\n",
            p["name"].as_str().unwrap_or("?"),
            p["protocol"].as_str().unwrap_or("?"),
            if users.is_empty() {
                "no listener".to_string()
            } else {
                users.join(", ")
            },
        ));
        backends_table(p, &mut out);
    }
    Ok(out)
}

/// Where listener `l` sends connections, in words.
fn routes_of(l: &serde_json::Value) -> String {
    let name = l["name"].as_str().unwrap_or("?");
    let fallback = match l["default_pool"].as_str() {
        None => "closed".to_string(),
        Some(p) if p == name => "its own backends".to_string(),
        Some(p) => format!("pool {p}"),
    };
    if l["route_by"] != "sni" {
        return format!("all to {fallback}");
    }
    let mut parts: Vec<String> = l["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let names: Vec<&str> = r["sni"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str())
                .collect();
            format!(
                "{} -> {}",
                names.join(", "),
                r["pool"].as_str().unwrap_or("?")
            )
        })
        .collect();
    parts.push(format!("else {fallback}"));
    format!("by server name: {}", parts.join("; "))
}

/// The backends and sets of a listener's own pool or a `[[pool]]`, as a table.
fn backends_table(owner: &serde_json::Value, out: &mut String) {
    let backends = owner["backends"].as_array();
    if backends.is_none_or(|b| b.is_empty())
        && owner["backend_sets"]
            .as_array()
            .is_none_or(|s| s.is_empty())
    {
        return;
    }
    if let Some(mode) = owner["balance"].as_str() {
        let bound = match owner["balance_factor"].as_f64() {
            Some(f) => format!(
                ", bounded at {f} x the average ({} overflowed)",
                owner["overflowed_total"]
            ),
            None => String::new(),
        };
        out.push_str(&format!("  balance: {mode}{bound}\n"));
    }
    out.push_str(&format!(
        "  {:<20} {:<24} {:>6} {:<9} {:>9} {:>7}  {:<12} {}\n",
        "BACKEND", "ADDRESS", "WEIGHT", "STATE", "OPEN", "SHARE", "FROM", "WHY"
    ));
    for b in backends.into_iter().flatten() {
        let written = b["address"].as_str().unwrap_or("?");
        // A host name shows the address it resolved to.
        let address = match b["resolved"].as_str() {
            Some(r) if r != written => format!("{written} -> {r}"),
            _ => written.to_string(),
        };
        // With `max_connections`: "open/max".
        let open = match b["max_connections"].as_u64() {
            Some(max) => format!("{}/{max}", b["active_connections"]),
            None => b["active_connections"].to_string(),
        };
        let queued = b["queued"].as_u64().unwrap_or(0);
        let row = format!(
            "  {:<20} {:<24} {:>6} {:<9} {:>9} {:>6.2}%  {:<12} {}",
            b["id"].as_str().unwrap_or("?"),
            address,
            b["weight"].to_string(),
            b["state"].as_str().unwrap_or("?"),
            open,
            b["ring_share"].as_f64().unwrap_or(0.0) * 100.0,
            // Which backend_set discovered it, or the config file.
            match (b["set"].as_str(), b["backup"] == true) {
                (Some(s), _) => format!("set {s}"),
                (None, true) => "backup".to_string(),
                (None, false) => "config".to_string(),
            },
            // Why it is not up (the health reason, or the admin's action).
            match (b["state"].as_str(), b["slow_start_percent"].as_f64()) {
                (Some("up"), _) if queued > 0 => format!("full: {queued} waiting"),
                (Some("up"), Some(p)) => format!("slow start: ramped {p:.0}%"),
                (Some("up") | None, _) => String::new(),
                (Some(_), _) => b["reason"].as_str().unwrap_or("").to_string(),
            },
        );
        out.push_str(row.trim_end());
        out.push('\n');
    }
    for s in owner["backend_sets"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  set {} ({}): {} backend(s), {} lookup error(s)\n",
            s["name"].as_str().unwrap_or("?"),
            s["kind"].as_str().unwrap_or("?"),
            s["backends"],
            s["errors"],
        ));
    }
}
