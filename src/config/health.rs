//! Validation of `[listener.health]`.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::file::{FileAllDown, FileCheck, FileHealth, FileOnDown};
use super::validate::{duration_of, int_of, Source};
use super::{ConfigError, Protocol, ProxyVersion};
use crate::health::{AllDown, Check, HealthConfig, OnDown};

/// `interval` default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// `timeout` default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// `rise` default.
pub const DEFAULT_RISE: u32 = 2;
/// `fall` default.
pub const DEFAULT_FALL: u32 = 3;

/// DNS response codes by name, for `dns_rcodes`.
const RCODES: [(&str, u8); 6] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
];

pub(super) fn health(
    src: &Source<'_>,
    h: Option<&Spanned<FileHealth>>,
    protocol: Protocol,
    send_proxy: Option<ProxyVersion>,
    key: &str,
) -> Result<HealthConfig, ConfigError> {
    let key = format!("{key}.health");
    let default_check = match protocol {
        Protocol::Tcp => FileCheck::Tcp,
        Protocol::Udp => FileCheck::None,
    };
    let Some(sh) = h else {
        return Ok(defaults(default_check, send_proxy));
    };
    let f = sh.get_ref();
    let kind = f.check.as_ref().map_or(default_check, |c| *c.get_ref());
    let check_span = f.check.as_ref().map_or(sh.span(), |c| c.span());
    // Checks that make no sense for the listener's protocol.
    let wrong = match (kind, protocol) {
        (FileCheck::Http | FileCheck::SendExpect, Protocol::Udp) => {
            Some("it speaks TCP; use \"udp\", \"dns\" or \"tcp\" (with `port`)")
        }
        (FileCheck::Udp | FileCheck::Dns, Protocol::Tcp) => {
            Some("it speaks UDP; use \"tcp\", \"send-expect\" or \"http\"")
        }
        _ => None,
    };
    if let Some(why) = wrong {
        return Err(src.error(
            check_span,
            format!("{key}.check"),
            format!("this check cannot run on a {protocol} listener: {why}"),
        ));
    }
    // Keys that belong to other kinds of check.
    let uses = |k: &str| -> bool {
        match k {
            "send" | "expect" => matches!(kind, FileCheck::SendExpect | FileCheck::Udp),
            "path" | "expect_status" => kind == FileCheck::Http,
            "dns_name" | "dns_rcodes" => kind == FileCheck::Dns,
            _ => true,
        }
    };
    let present: [(&str, Option<Range<usize>>); 6] = [
        ("send", f.send.as_ref().map(Spanned::span)),
        ("expect", f.expect.as_ref().map(Spanned::span)),
        ("path", f.path.as_ref().map(Spanned::span)),
        ("expect_status", f.expect_status.as_ref().map(Spanned::span)),
        ("dns_name", f.dns_name.as_ref().map(Spanned::span)),
        ("dns_rcodes", f.dns_rcodes.as_ref().map(Spanned::span)),
    ];
    for (name, span) in present {
        if let Some(span) = span {
            if !uses(name) {
                return Err(src.error(
                    span,
                    format!("{key}.{name}"),
                    format!("`{name}` is not used by check = \"{}\"", check_name(kind)),
                ));
            }
        }
    }
    if f.expect.is_some() && f.send.is_none() {
        let span = f.expect.as_ref().map(Spanned::span).unwrap_or_default();
        return Err(src.error(
            span,
            format!("{key}.expect"),
            "`expect` needs `send`: the bytes to send first",
        ));
    }
    let bytes = |s: &Option<Spanned<String>>, name: &str| -> Result<Vec<u8>, ConfigError> {
        match s {
            None => Ok(Vec::new()),
            Some(v) => {
                unescape(v.get_ref()).map_err(|e| src.error(v.span(), format!("{key}.{name}"), e))
            }
        }
    };
    let send = bytes(&f.send, "send")?;
    let expect = bytes(&f.expect, "expect")?;
    let check = match kind {
        FileCheck::None => Check::None,
        FileCheck::Tcp => Check::Tcp,
        FileCheck::SendExpect | FileCheck::Udp => {
            if f.send.is_none() {
                return Err(src.error(
                    check_span,
                    format!("{key}.send"),
                    format!(
                        "check = \"{}\" needs `send`: the bytes to send",
                        check_name(kind)
                    ),
                ));
            }
            if kind == FileCheck::Udp {
                Check::Udp { send, expect }
            } else {
                Check::SendExpect { send, expect }
            }
        }
        FileCheck::Http => {
            let path = f
                .path
                .as_ref()
                .map_or("/".to_string(), |p| p.get_ref().clone());
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                let span = f.path.as_ref().map(Spanned::span).unwrap_or_default();
                return Err(src.error(
                    span,
                    format!("{key}.path"),
                    "expected an absolute path without spaces, e.g. \"/healthz\"",
                ));
            }
            let mut expect_status = Vec::new();
            if let Some(list) = &f.expect_status {
                for &code in list.get_ref() {
                    if !(100..=599).contains(&code) {
                        return Err(src.error(
                            list.span(),
                            format!("{key}.expect_status"),
                            format!("{code} is not an HTTP status code (100..=599)"),
                        ));
                    }
                    expect_status.push(code as u16);
                }
            }
            Check::Http {
                path,
                expect_status,
            }
        }
        FileCheck::Dns => {
            let Some(name) = &f.dns_name else {
                return Err(src.error(
                    check_span,
                    format!("{key}.dns_name"),
                    "check = \"dns\" needs `dns_name`, the name to query",
                ));
            };
            let qname = encode_name(name.get_ref())
                .map_err(|e| src.error(name.span(), format!("{key}.dns_name"), e))?;
            let mut rcodes = Vec::new();
            match &f.dns_rcodes {
                None => rcodes.push(0),
                Some(list) => {
                    for r in list.get_ref() {
                        let code = RCODES
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(r))
                            .map(|(_, c)| *c)
                            .ok_or_else(|| {
                                let names: Vec<&str> = RCODES.iter().map(|(n, _)| *n).collect();
                                src.error(
                                    list.span(),
                                    format!("{key}.dns_rcodes"),
                                    format!(
                                        "unknown rcode {r:?}: expected one of {}",
                                        names.join(", ")
                                    ),
                                )
                            })?;
                        rcodes.push(code);
                    }
                }
            }
            Check::Dns { qname, rcodes }
        }
    };
    let interval = match &f.interval {
        None => DEFAULT_INTERVAL,
        Some(d) => duration_of(src, d, &format!("{key}.interval"))?,
    };
    let timeout = match &f.timeout {
        None => DEFAULT_TIMEOUT.min(interval),
        Some(d) => duration_of(src, d, &format!("{key}.timeout"))?,
    };
    let rise = f.rise.as_ref().map_or(Ok(DEFAULT_RISE as i64), |v| {
        int_of(src, v, &format!("{key}.rise"), 1, 100)
    })? as u32;
    let fall = f.fall.as_ref().map_or(Ok(DEFAULT_FALL as i64), |v| {
        int_of(src, v, &format!("{key}.fall"), 1, 100)
    })? as u32;
    let port = match &f.port {
        None => None,
        Some(p) => Some(int_of(src, p, &format!("{key}.port"), 1, 65_535)? as u16),
    };
    // As HAProxy: checks of the traffic port speak PROXY when the traffic does.
    let send_proxy = match &f.send_proxy {
        None => send_proxy.filter(|_| port.is_none()),
        Some(b) if !*b.get_ref() => None,
        Some(b) => Some(send_proxy.ok_or_else(|| {
            src.error(
                b.span(),
                format!("{key}.send_proxy"),
                "checks send a PROXY header only where the listener does: set the listener's `send_proxy` (\"v1\" or \"v2\")",
            )
        })?),
    };
    Ok(HealthConfig {
        check,
        interval,
        timeout,
        rise,
        fall,
        port,
        send_proxy,
        passive: f.passive.as_ref().is_none_or(|p| *p.get_ref()),
        on_down: match f.on_down.as_ref().map(|o| *o.get_ref()) {
            None | Some(FileOnDown::Keep) => OnDown::Keep,
            Some(FileOnDown::Close) => OnDown::Close,
        },
        all_down: match f.all_down.as_ref().map(|o| *o.get_ref()) {
            None | Some(FileAllDown::Reject) => AllDown::Reject,
            Some(FileAllDown::UseAll) => AllDown::UseAll,
        },
        slow_start: match &f.slow_start {
            None => None,
            Some(d) => {
                let d = duration_of(src, d, &format!("{key}.slow_start"))?;
                if d > MAX_SLOW_START {
                    return Err(src.error(
                        f.slow_start.as_ref().map_or(0..0, |s| s.span()),
                        format!("{key}.slow_start"),
                        format!(
                            "at most {}: a ramp longer than that keeps a recovered backend idle",
                            humantime::format_duration(MAX_SLOW_START)
                        ),
                    ));
                }
                (!d.is_zero()).then_some(d)
            }
        },
    })
}

/// The longest `slow_start`.
const MAX_SLOW_START: std::time::Duration = std::time::Duration::from_secs(3600);

fn defaults(kind: FileCheck, send_proxy: Option<ProxyVersion>) -> HealthConfig {
    HealthConfig {
        check: if kind == FileCheck::Tcp {
            Check::Tcp
        } else {
            Check::None
        },
        interval: DEFAULT_INTERVAL,
        timeout: DEFAULT_TIMEOUT,
        rise: DEFAULT_RISE,
        fall: DEFAULT_FALL,
        port: None,
        send_proxy,
        passive: true,
        on_down: OnDown::Keep,
        all_down: AllDown::Reject,
        slow_start: None,
    }
}

fn check_name(k: FileCheck) -> &'static str {
    match k {
        FileCheck::Tcp => "tcp",
        FileCheck::SendExpect => "send-expect",
        FileCheck::Http => "http",
        FileCheck::Udp => "udp",
        FileCheck::Dns => "dns",
        FileCheck::None => "none",
    }
}

/// Turns `\xNN`, `\r`, `\n`, `\t`, `\0` and `\\` escapes into bytes (TOML has already
/// handled its own escapes; these let a literal string carry binary bytes).
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'x') => {
                let hex = s.get(i + 2..i + 4).ok_or("`\\x` needs two hex digits")?;
                out.push(
                    u8::from_str_radix(hex, 16)
                        .map_err(|_| format!("`\\x{hex}` is not a hex byte"))?,
                );
                i += 4;
            }
            Some(b'r') => (out.push(b'\r'), i += 2).1,
            Some(b'n') => (out.push(b'\n'), i += 2).1,
            Some(b't') => (out.push(b'\t'), i += 2).1,
            Some(b'0') => (out.push(0), i += 2).1,
            Some(b'\\') => (out.push(b'\\'), i += 2).1,
            _ => return Err("unknown escape: use \\xNN, \\r, \\n, \\t, \\0 or \\\\".into()),
        }
    }
    Ok(out)
}

/// A domain name in DNS wire format (labels, then a zero byte).
pub fn encode_name(name: &str) -> Result<Vec<u8>, String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("expected a domain name such as \"health.example.\"".into());
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(format!(
                "{label:?} is not a valid DNS label (1-63 letters, digits, '-' or '_')"
            ));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() > 255 {
        return Err("the name is longer than 255 bytes".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_handles_hex_and_controls() {
        assert_eq!(unescape(r"PING\r\n").unwrap(), b"PING\r\n");
        assert_eq!(unescape(r"\x00\xffA\\").unwrap(), vec![0, 255, b'A', b'\\']);
        assert!(unescape(r"\q").is_err());
        assert!(unescape(r"\x1").is_err());
    }

    #[test]
    fn names_encode_to_labels() {
        assert_eq!(
            encode_name("health.example.").unwrap(),
            b"\x06health\x07example\x00"
        );
        assert!(encode_name("bad..name").is_err());
        assert!(encode_name("").is_err());
    }
}
