//! The admin API and the metrics endpoint: request routing only; the work is in
//! [`Control`].
//!
//! | request                                             | does                        |
//! |-----------------------------------------------------|-----------------------------|
//! | `GET /`                                             | the status page (HTML)      |
//! | `GET /status`                                       | listeners, backends, process|
//! | `POST /listeners/{name}/backends/{id}/drain`        | no new flows; old ones stay |
//! | `POST /listeners/{name}/backends/{id}/enable`       | back to normal              |
//! | `POST /listeners/{name}/backends/{id}/disable`      | marked down by hand         |
//! | `POST /reload`                                      | as SIGHUP                   |
//! | `POST /upgrade`                                     | as SIGUSR2, waits for it    |
//!
//! Every request must name the admin API in its `Host` (421 otherwise), and one that
//! changes state must not come from another origin (`Origin`/`Referer`, 403) nor
//! carry a body that is not JSON (415): see [`super::guard`] and docs/ADMIN.md. With a
//! token configured, every request but the status page's own files must carry
//! `Authorization: Bearer TOKEN` (401 otherwise). Unknown listeners, backends and
//! paths get 404, a wrong method 405, a malformed path 400; all errors are JSON
//! `{"error": "..."}`. Every answer forbids framing, sniffing and caching, and the page
//! runs under a content security policy that allows nothing but its own files.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::header::{
    HeaderName, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, ORIGIN, REFERER, REFERRER_POLICY,
    TRANSFER_ENCODING, WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};

use super::actor::Handle;
use super::backend::Admin;
use super::core::AdminError;
use super::http::{self, Body};

/// The status page (`GET /`), its script and its style sheet, compiled in: no CDN, no
/// external asset, nothing inline (the content security policy allows none).
const STATUS_PAGE: &str = include_str!("status.html");
const STATUS_JS: &str = include_str!("status.js");
const STATUS_CSS: &str = include_str!("status.css");

/// The content security policy of every answer: the page's own script, style and
/// `/status` calls, nothing else; never in a frame.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Who may call the admin API: its token and the extra names it answers to (both can
/// change on reload), and where it listens (`None`: a unix socket).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The bearer token, when one is configured.
    pub token: Option<String>,
    /// `[admin] hosts`.
    pub hosts: Vec<String>,
    /// The TCP address it listens on.
    pub listen: Option<SocketAddr>,
}

/// The control task did not answer (ringway is shutting down).
fn gone() -> Response<Body> {
    http::error(StatusCode::SERVICE_UNAVAILABLE, "ringway is shutting down")
}

/// `GET /metrics`.
pub async fn metrics(control: Handle, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            match control.published().render(super::view::metrics_text).await {
                Some(text) => http::respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    text,
                ),
                None => gone(),
            }
        }
        (_, "/metrics") => not_allowed("GET, HEAD").response(),
        _ => http::error(StatusCode::NOT_FOUND, "not found: try GET /metrics"),
    }
}

/// What an admin request asks for, once its method, path and token passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `GET /`: the status page.
    Page,
    /// `GET /status.js`, `GET /status.css`: its script and style sheet.
    Asset(&'static str),
    /// `GET /status`.
    Status,
    /// `POST /reload`.
    Reload,
    /// `POST /upgrade`.
    Upgrade,
    /// `POST /leave` (true) or `POST /stay` (false).
    Leave(bool),
    /// `POST /listeners/{listener}/backends/{id}/{drain|enable|disable}` or
    /// `POST /pools/{pool}/backends/{id}/{drain|enable|disable}`.
    SetAdmin {
        /// Whose backend, its name percent-decoded.
        place: Place,
        /// Backend id, percent-decoded.
        id: String,
        /// What to set.
        admin: Admin,
    },
}

/// Where an admin call looks for a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A listener: the one pool it routes to that has the backend.
    Listener(String),
    /// A pool (a listener's own backends: the listener's name).
    Pool(String),
}

/// A request the admin API refuses: the error response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    status: StatusCode,
    message: String,
    /// A header the response carries (`Allow`, `WWW-Authenticate`).
    header: Option<(HeaderName, &'static str)>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
            header: None,
        }
    }

    /// The JSON error response.
    pub fn response(&self) -> Response<Body> {
        let mut r = http::error(self.status, &self.message);
        if let Some((name, value)) = &self.header {
            r.headers_mut()
                .insert(name.clone(), HeaderValue::from_static(value));
        }
        r
    }
}

/// Decides what a request asks for, or refuses it (wrong host, origin, body, method,
/// path or token): no I/O, so every byte a client can send is fuzzed through it
/// (`fuzz/fuzz_targets/admin.rs`).
pub fn route(req: &hyper::http::request::Parts, policy: &Policy) -> Result<Call, Refusal> {
    let header = |name| {
        req.headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let host = header(HOST).or_else(|| req.uri.authority().map(|a| a.as_str()));
    if !super::guard::host_ok(host, policy.listen, &policy.hosts) {
        return Err(Refusal::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {:?} is not this admin API's address (add the name to [admin] hosts if it is)",
                host.unwrap_or("")
            ),
        ));
    }
    let method = &req.method;
    let path = req.uri.path();
    // The status page is static: it holds no data and asks for the token itself.
    let asset = match path {
        "/" => Some(Call::Page),
        "/status.js" => Some(Call::Asset("status.js")),
        "/status.css" => Some(Call::Asset("status.css")),
        _ => None,
    };
    if let Some(asset) = asset {
        return match *method {
            Method::GET | Method::HEAD => Ok(asset),
            _ => Err(not_allowed("GET, HEAD")),
        };
    }
    if let Some(token) = &policy.token {
        let given = header(AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.trim().as_bytes(), token.as_bytes())) {
            return Err(Refusal {
                header: Some((WWW_AUTHENTICATE, "Bearer")),
                ..Refusal::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            });
        }
    }
    let call = decide(method, path)?;
    if *method == Method::POST {
        let host = host.unwrap_or("");
        for (name, value) in [("Origin", header(ORIGIN)), ("Referer", header(REFERER))] {
            if value.is_some_and(|v| !super::guard::same_origin(v, host)) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("{name} {:?} is another site: the admin API takes changes only from its own page, ringway ctl or a client that sends no {name}", value.unwrap_or("")),
                ));
            }
        }
        let has_body = header(CONTENT_LENGTH).is_some_and(|n| n.trim() != "0")
            || req.headers.contains_key(TRANSFER_ENCODING);
        if !super::guard::json_or_empty(header(CONTENT_TYPE), has_body) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a change takes no body, or Content-Type: application/json",
            ));
        }
    }
    Ok(call)
}

/// The call a method and path ask for.
fn decide(method: &Method, path: &str) -> Result<Call, Refusal> {
    let segments = match segments(path) {
        Ok(s) => s,
        Err(why) => return Err(Refusal::new(StatusCode::BAD_REQUEST, why.to_string())),
    };
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["status"] => match *method {
            Method::GET | Method::HEAD => Ok(Call::Status),
            _ => Err(not_allowed("GET, HEAD")),
        },
        ["reload"] => match *method {
            Method::POST => Ok(Call::Reload),
            _ => Err(not_allowed("POST")),
        },
        ["upgrade"] => match *method {
            Method::POST => Ok(Call::Upgrade),
            _ => Err(not_allowed("POST")),
        },
        [way @ ("leave" | "stay")] => match *method {
            Method::POST => Ok(Call::Leave(*way == "leave")),
            _ => Err(not_allowed("POST")),
        },
        [kind @ ("listeners" | "pools"), name, "backends", id, action] => {
            let admin = match *action {
                "drain" => Admin::Draining,
                "enable" => Admin::Enabled,
                "disable" => Admin::Disabled,
                other => {
                    return Err(Refusal::new(
                        StatusCode::NOT_FOUND,
                        format!("unknown action {other:?}: expected drain, enable or disable"),
                    ))
                }
            };
            if method != Method::POST {
                return Err(not_allowed("POST"));
            }
            let place = match *kind {
                "listeners" => Place::Listener(name.to_string()),
                _ => Place::Pool(name.to_string()),
            };
            Ok(Call::SetAdmin {
                place,
                id: id.to_string(),
                admin,
            })
        }
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not found: try GET /status, POST /reload, POST /upgrade, POST /leave, POST /stay, POST /listeners/{name}/backends/{id}/{drain|enable|disable} or POST /pools/{name}/backends/{id}/{drain|enable|disable}",
        )),
    }
}

/// Every admin request, answered with the headers every answer carries.
pub async fn admin(control: Handle, req: Request<Incoming>) -> Response<Body> {
    let mut r = answer(control, req).await;
    let h = r.headers_mut();
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn answer(control: Handle, req: Request<Incoming>) -> Response<Body> {
    let (parts, _body) = req.into_parts();
    let call = route(&parts, &control.policy());
    match call {
        Err(refusal) => refusal.response(),
        Ok(Call::Page) => http::respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
        Ok(Call::Asset("status.js")) => {
            http::respond(StatusCode::OK, "text/javascript; charset=utf-8", STATUS_JS)
        }
        Ok(Call::Asset(_)) => http::respond(StatusCode::OK, "text/css; charset=utf-8", STATUS_CSS),
        Ok(Call::Status) => match control.published().render(super::view::status_json).await {
            Some(Ok(body)) => http::respond(StatusCode::OK, "application/json", body),
            Some(Err(e)) => http::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            None => gone(),
        },
        Ok(Call::Reload) => match control.reload().await {
            Ok(summary) => http::json(StatusCode::OK, &serde_json::json!({ "reloaded": summary })),
            Err(super::reload::ReloadError::Stopped) => gone(),
            Err(why) => http::error(StatusCode::UNPROCESSABLE_ENTITY, &why.to_string()),
        },
        Ok(Call::Upgrade) => match control.upgrade().await {
            Ok((pid, took)) => http::json(
                StatusCode::OK,
                &serde_json::json!({ "upgraded": {
                    "pid": pid,
                    "from": std::process::id(),
                    "handoff_ms": took.as_millis() as u64,
                } }),
            ),
            Err(super::upgrade::UpgradeError::Stopped) => gone(),
            Err(e @ super::upgrade::UpgradeError::Busy) => {
                http::error(StatusCode::CONFLICT, &e.to_string())
            }
            Err(why) => http::error(StatusCode::INTERNAL_SERVER_ERROR, &why.to_string()),
        },
        Ok(Call::Leave(leave)) => match control.leave(leave).await {
            Some(Ok((changed, status))) => http::json(
                StatusCode::OK,
                &serde_json::json!({ "changed": changed, "cluster": status }),
            ),
            Some(Err(e)) => http::error(StatusCode::CONFLICT, &e.to_string()),
            None => gone(),
        },
        Ok(Call::SetAdmin { place, id, admin }) => {
            match control.set_admin(place, &id, admin).await {
                Some(Ok(status)) => http::json(StatusCode::OK, &status),
                Some(Err(
                    e @ (AdminError::NoListener(_)
                    | AdminError::NoPool(_)
                    | AdminError::NoBackend { .. }),
                )) => http::error(StatusCode::NOT_FOUND, &e.to_string()),
                Some(Err(e @ AdminError::Ambiguous { .. })) => {
                    http::error(StatusCode::CONFLICT, &e.to_string())
                }
                None => gone(),
            }
        }
    }
}

/// Compares a presented token with the configured one in time that depends only on
/// their lengths, so response timing does not reveal how much of a guess was right.
fn same_secret(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn not_allowed(allow: &'static str) -> Refusal {
    Refusal {
        header: Some((ALLOW, allow)),
        ..Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method not allowed: use {allow}"),
        )
    }
}

/// A path the admin API cannot read.
#[derive(Debug, thiserror::Error)]
enum PathError {
    #[error("malformed path: empty segment")]
    Empty,
    #[error("malformed path: segment {0:?} is not UTF-8 once decoded")]
    NotUtf8(String),
}

/// The path's segments, percent-decoded; an error for empty segments or bytes that
/// do not decode to UTF-8.
fn segments(path: &str) -> Result<Vec<String>, PathError> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/')
        .map(|s| {
            if s.is_empty() {
                return Err(PathError::Empty);
            }
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| PathError::NotUtf8(s.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{same_secret, segments};

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b"abc"));
    }

    #[test]
    fn paths_decode_or_fail_clearly() {
        assert_eq!(
            segments("/listeners/web/backends/%5B%3A%3A1%5D%3A80/drain").unwrap(),
            ["listeners", "web", "backends", "[::1]:80", "drain"]
        );
        assert_eq!(segments("/status/").unwrap(), ["status"]);
        assert!(segments("/listeners//backends").is_err());
        assert!(segments("/x/%FF").is_err());
    }
}
