//! The health probes: one check of one backend, with a deadline. The only I/O in
//! `health/`. Each returns `Ok(())` when healthy, or why not ([`ProbeError`]): a
//! [`ProbeError::Local`] error (this machine out of descriptors or ports) is no
//! evidence about the backend.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::Check;
use crate::proxy_protocol::{self, Version};

/// Why a check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// This machine could not run the check (no file descriptor, no local port, no
    /// memory): it says nothing about the backend, so it counts as neither success
    /// nor failure.
    #[error("the check could not run here: {0}")]
    Local(io::Error),
    /// The backend refused, reset or could not be reached.
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// No verdict within the check's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Writing the request failed.
    #[error("send failed: {0}")]
    Send(io::Error),
    /// Reading the reply failed.
    #[error("read failed: {0}")]
    Read(io::Error),
    /// The backend closed the connection without a byte.
    #[error("closed without replying")]
    Closed,
    /// The reply did not start with what was expected.
    #[error("unexpected reply {0:?}")]
    Unexpected(String),
    /// Not an HTTP status line.
    #[error("not an HTTP response: {0:?}")]
    NotHttp(String),
    /// An HTTP status not accepted as healthy.
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// No UDP reply (or an ICMP error instead).
    #[error("no reply: {0}")]
    NoReply(io::Error),
    /// A DNS reply too short to be one.
    #[error("short DNS reply ({0} bytes)")]
    ShortDns(usize),
    /// A datagram that does not answer the query sent.
    #[error("not a reply to our query")]
    NotOurReply,
    /// A DNS response code not accepted as healthy.
    #[error("DNS rcode {0}")]
    Rcode(u8),
}

impl ProbeError {
    /// Whether the check could not run at all (see [`ProbeError::Local`]).
    pub fn is_local(&self) -> bool {
        matches!(self, ProbeError::Local(_))
    }

    /// An error opening or connecting a socket: local when this machine ran short.
    fn connecting(e: io::Error) -> ProbeError {
        if crate::sys::is_resource_shortage(&e) {
            ProbeError::Local(e)
        } else {
            ProbeError::Connect(e)
        }
    }
}

/// Runs `check` against `addr` within `timeout`. With `proxy`, TCP checks that send
/// bytes send a PROXY protocol header (LOCAL/UNKNOWN) first.
pub async fn run(
    check: &Check,
    addr: SocketAddr,
    timeout: Duration,
    query_id: u16,
    proxy: Option<Version>,
) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, probe(check, addr, query_id, proxy)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

async fn probe(
    check: &Check,
    addr: SocketAddr,
    query_id: u16,
    proxy: Option<Version>,
) -> Result<(), ProbeError> {
    match check {
        Check::None => Ok(()),
        Check::Tcp => connect(addr).await.map(drop),
        Check::SendExpect { send, expect } => {
            let mut s = connect_speaking(addr, proxy).await?;
            s.write_all(send).await.map_err(ProbeError::Send)?;
            let got = read_at_least(&mut s, expect.len().max(1)).await?;
            prefix(&got, expect)
        }
        Check::Http {
            path,
            expect_status,
        } => {
            let mut s = connect_speaking(addr, proxy).await?;
            let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: ringway-health\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes())
                .await
                .map_err(ProbeError::Send)?;
            let got = read_line(&mut s).await?;
            let status = parse_status(&got)
                .ok_or_else(|| ProbeError::NotHttp(String::from_utf8_lossy(&got).into_owned()))?;
            let ok = if expect_status.is_empty() {
                (200..400).contains(&status)
            } else {
                expect_status.contains(&status)
            };
            if ok {
                Ok(())
            } else {
                Err(ProbeError::HttpStatus(status))
            }
        }
        Check::Udp { send, expect } => {
            let got = udp_exchange(addr, send).await?;
            prefix(&got, expect)
        }
        Check::Dns { qname, rcodes } => {
            let got = udp_exchange(addr, &dns_query(query_id, qname)).await?;
            dns_verdict(&got, query_id, rcodes)
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeError> {
    TcpStream::connect(addr)
        .await
        .map_err(ProbeError::connecting)
}

/// Connects, then sends the PROXY header if the listener's backends expect one.
async fn connect_speaking(
    addr: SocketAddr,
    proxy: Option<Version>,
) -> Result<TcpStream, ProbeError> {
    let mut s = connect(addr).await?;
    if let Some(v) = proxy {
        s.write_all(&proxy_protocol::local(v))
            .await
            .map_err(ProbeError::Send)?;
    }
    Ok(s)
}

/// Reads until `done` says the bytes so far are enough, EOF, or `max` bytes.
async fn read_until(
    s: &mut TcpStream,
    done: impl Fn(&[u8]) -> bool,
    max: usize,
) -> Result<Vec<u8>, ProbeError> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !done(&got) && got.len() < max {
        let k = s.read(&mut buf).await.map_err(ProbeError::Read)?;
        if k == 0 {
            break;
        }
        got.extend_from_slice(&buf[..k]);
    }
    Ok(got)
}

async fn read_at_least(s: &mut TcpStream, n: usize) -> Result<Vec<u8>, ProbeError> {
    let got = read_until(s, |g| g.len() >= n, n.max(1024)).await?;
    if got.is_empty() {
        return Err(ProbeError::Closed);
    }
    Ok(got)
}

async fn read_line(s: &mut TcpStream) -> Result<Vec<u8>, ProbeError> {
    read_until(s, |g| g.contains(&b'\n'), 4096).await
}

fn prefix(got: &[u8], expect: &[u8]) -> Result<(), ProbeError> {
    if got.starts_with(expect) {
        Ok(())
    } else {
        let shown = &got[..got.len().min(expect.len().max(16))];
        Err(ProbeError::Unexpected(
            String::from_utf8_lossy(shown).into_owned(),
        ))
    }
}

/// The status code of an HTTP status line (`HTTP/1.x NNN ...`).
pub fn parse_status(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

async fn udp_exchange(addr: SocketAddr, send: &[u8]) -> Result<Vec<u8>, ProbeError> {
    let any: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any).await.map_err(ProbeError::connecting)?;
    s.connect(addr).await.map_err(ProbeError::connecting)?;
    s.send(send).await.map_err(ProbeError::Send)?;
    let mut buf = vec![0u8; 4096];
    let n = s.recv(&mut buf).await.map_err(ProbeError::NoReply)?;
    buf.truncate(n);
    Ok(buf)
}

/// A DNS query (one question, type A, class IN, recursion desired) for `qname`
/// (wire format).
pub fn dns_query(id: u16, qname: &[u8]) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + qname.len() + 4);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(qname);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// Whether `reply` answers query `id` with one of `rcodes`.
pub fn dns_verdict(reply: &[u8], id: u16, rcodes: &[u8]) -> Result<(), ProbeError> {
    if reply.len() < 12 {
        return Err(ProbeError::ShortDns(reply.len()));
    }
    if u16::from_be_bytes([reply[0], reply[1]]) != id || reply[2] & 0x80 == 0 {
        return Err(ProbeError::NotOurReply);
    }
    let rcode = reply[3] & 0x0F;
    if rcodes.contains(&rcode) {
        Ok(())
    } else {
        Err(ProbeError::Rcode(rcode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_shortages_are_not_the_backend_s_fault() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            let e = ProbeError::connecting(io::Error::from_raw_os_error(errno));
            assert!(e.is_local(), "{e}");
        }
        for errno in [libc::ECONNREFUSED, libc::EHOSTUNREACH, libc::ETIMEDOUT] {
            let e = ProbeError::connecting(io::Error::from_raw_os_error(errno));
            assert!(!e.is_local(), "{e}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn dns_query_and_verdict() {
        let q = dns_query(0xBEEF, b"\x02ok\x00");
        assert_eq!(&q[..2], &[0xBE, 0xEF]);
        assert_eq!(q.len(), 12 + 4 + 4);
        let mut reply = q.clone();
        reply[2] |= 0x80; // QR
        assert!(dns_verdict(&reply, 0xBEEF, &[0]).is_ok());
        reply[3] = 3; // NXDOMAIN
        assert!(dns_verdict(&reply, 0xBEEF, &[0]).is_err());
        assert!(dns_verdict(&reply, 0xBEEF, &[0, 3]).is_ok());
        assert!(dns_verdict(&reply, 0x1234, &[3]).is_err(), "wrong id");
        assert!(
            dns_verdict(&q, 0xBEEF, &[0]).is_err(),
            "a query is not a reply"
        );
    }
}
