//! Records as lines: JSON (one object per line) or text (one human line, in the spirit
//! of HAProxy's `option tcplog`). Pure: bytes appended to a buffer.

use std::io::Write as _;

use serde::Serialize;

use super::record::Record;

/// How records are written (`[access_log] format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// One human line.
    Text,
}

/// The JSON object of one record (keys in a fixed order).
#[derive(Serialize)]
struct Json<'a> {
    time: String,
    listener: &'a str,
    protocol: &'static str,
    client: String,
    backend: Option<&'a str>,
    backend_address: Option<String>,
    pool: Option<&'a str>,
    sni: Option<&'a str>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: u64,
    connect_ms: Option<u64>,
    retries: u32,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    failed_backends: Vec<&'a str>,
    end: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    datagrams_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    datagrams_out: Option<u64>,
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Appends `r` as one line (with its newline) to `out`.
pub fn line(format: Format, r: &Record, out: &mut Vec<u8>) {
    let time = humantime::format_rfc3339_millis(r.time).to_string();
    match format {
        Format::Json => {
            let j = Json {
                time,
                listener: &r.listener,
                protocol: r.proto.as_str(),
                client: r.client.to_string(),
                backend: r.backend.as_ref().map(|b| &*b.id),
                backend_address: r.backend.as_ref().map(|b| b.addr.to_string()),
                pool: r.pool.as_deref(),
                sni: r.sni.as_ref().map(|n| n.as_str()),
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                duration_ms: millis(r.duration),
                connect_ms: r.connect.map(millis),
                retries: r.retries,
                failed_backends: r.failed.iter().map(|f| &**f).collect(),
                end: r.end.as_str(),
                detail: r.detail,
                datagrams_in: r.datagrams.map(|d| d.0),
                datagrams_out: r.datagrams.map(|d| d.1),
            };
            // Strings and numbers only: serializing cannot fail.
            let _ = serde_json::to_writer(&mut *out, &j);
        }
        Format::Text => {
            let _ = write!(
                out,
                "{time} {} {} {} -> ",
                r.listener,
                r.proto.as_str(),
                r.client
            );
            let _ = match &r.backend {
                Some(b) => write!(out, "{}({})", b.id, b.addr),
                None => write!(out, "-"),
            };
            if let Some(p) = &r.pool {
                let _ = write!(out, " pool={p}");
            }
            if let Some(n) = &r.sni {
                let _ = write!(out, " sni={n}");
            }
            let _ = match r.connect {
                Some(c) => write!(out, " connect={}ms", millis(c)),
                None => write!(out, " connect=-"),
            };
            let _ = write!(
                out,
                " duration={}ms in={} out={} retries={} end={}",
                millis(r.duration),
                r.bytes_in,
                r.bytes_out,
                r.retries,
                r.end.as_str()
            );
            if let Some(d) = r.detail {
                let _ = write!(out, " detail={d}");
            }
            if !r.failed.is_empty() {
                let _ = write!(out, " failed=");
                for (i, f) in r.failed.iter().enumerate() {
                    let _ = write!(out, "{}{f}", if i == 0 { "" } else { "," });
                }
            }
            if let Some((i, o)) = r.datagrams {
                let _ = write!(out, " datagrams={i}/{o}");
            }
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::super::record::{End, Proto, Reached};
    use super::*;

    fn tcp() -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_669_600_123),
            listener: Arc::from("web \"edge\""),
            proto: Proto::Tcp,
            client: "192.0.2.7:51000".parse().unwrap(),
            backend: Some(Reached {
                id: Arc::from("db-1"),
                addr: "[2001:db8::5]:5432".parse().unwrap(),
            }),
            pool: Some(Arc::from("db")),
            sni: None,
            bytes_in: 512,
            bytes_out: 2048,
            duration: Duration::from_micros(2_034_900),
            connect: Some(Duration::from_micros(1_200)),
            retries: 1,
            end: End::ClientClosed,
            detail: None,
            datagrams: None,
            failed: Vec::new(),
        }
    }

    #[test]
    fn json_has_every_key_and_escapes() {
        let mut out = Vec::new();
        line(Format::Json, &tcp(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["time"], "2025-12-02T10:00:00.123Z");
        assert_eq!(v["listener"], "web \"edge\"");
        assert_eq!(v["protocol"], "tcp");
        assert_eq!(v["client"], "192.0.2.7:51000");
        assert_eq!(v["backend"], "db-1");
        assert_eq!(v["backend_address"], "[2001:db8::5]:5432");
        assert_eq!(v["pool"], "db");
        assert!(v["sni"].is_null());
        assert_eq!(
            (v["bytes_in"].as_u64(), v["bytes_out"].as_u64()),
            (Some(512), Some(2048))
        );
        assert_eq!(v["duration_ms"], 2034);
        assert_eq!(v["connect_ms"], 1);
        assert_eq!(v["retries"], 1);
        assert_eq!(v["end"], "client_closed");
        assert!(v.get("detail").is_none() && v.get("datagrams_in").is_none());
    }

    #[test]
    fn a_refused_udp_flow_has_nulls_and_datagrams() {
        let r = Record::refused(
            &Arc::from("dns"),
            Proto::Udp,
            "[::1]:5353".parse().unwrap(),
            End::Rejected,
            Some("max_flows"),
        );
        let mut out = Vec::new();
        line(Format::Json, &r, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["backend"].is_null() && v["backend_address"].is_null());
        assert!(v["connect_ms"].is_null());
        assert_eq!(v["end"], "rejected");
        assert_eq!(v["detail"], "max_flows");
        assert_eq!(
            (v["datagrams_in"].as_u64(), v["datagrams_out"].as_u64()),
            (Some(1), Some(0))
        );
    }

    #[test]
    fn text_is_one_line_with_the_same_fields() {
        let mut out = Vec::new();
        let r = Record {
            sni: crate::sni::ServerName::new(b"api.example"),
            ..tcp()
        };
        line(Format::Text, &r, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2025-12-02T10:00:00.123Z web \"edge\" tcp 192.0.2.7:51000 -> db-1([2001:db8::5]:5432) pool=db sni=api.example connect=1ms duration=2034ms in=512 out=2048 retries=1 end=client_closed\n"
        );
    }

    #[test]
    fn every_end_has_a_distinct_name() {
        let mut names: Vec<&str> = End::ALL.iter().map(|e| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), End::ALL.len());
    }
}
