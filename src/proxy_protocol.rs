//! The PROXY protocol: the header ringway sends ahead of a client's bytes, so a backend
//! learns the client's address (HAProxy's `send-proxy`/`send-proxy-v2`, NGINX's
//! `proxy_protocol on`), and the one it reads from a load balancer in front of it
//! (HAProxy's `accept-proxy`, NGINX's `listen ... proxy_protocol`). Encoding and parsing
//! are the `ppp` crate's; this module decides what to say and what a header means.
//! Pure: no I/O.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2, HeaderResult, PartialResult};

/// Bytes looked at for an incoming header: a v1 header is at most 107, a v2 header 16 +
/// 216 plus its TLVs (HAProxy's `send-proxy-v2-ssl-cn` sends a client certificate's
/// details, often past 1 KiB). A longer one is refused.
pub const MAX_HEADER: usize = 4096;

/// The longest v1 header, CRLF included.
const V1_MAX: usize = 107;

/// What the first bytes of an accepted connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// A header of `len` bytes. `addresses` is the client and the address it reached;
    /// `None` for v2 LOCAL, v1 UNKNOWN or a family without IP addresses: the proxy in
    /// front speaks for itself (a health check), so the connection's own endpoints apply.
    Header {
        len: usize,
        addresses: Option<(SocketAddr, SocketAddr)>,
    },
    /// Not a PROXY protocol header.
    Invalid(String),
}

/// The v2 signature.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The v2 fixed part: signature, version/command, family/transport, length.
const V2_FIXED: usize = 16;

/// TLV types the receiver checks.
const PP2_TYPE_CRC32C: u8 = 0x03;

/// Reads a v1 or v2 header at the start of `buf` (at most [`MAX_HEADER`] bytes are
/// looked at).
pub fn parse(buf: &[u8]) -> Received {
    let buf = &buf[..buf.len().min(MAX_HEADER)];
    let full = buf.len() == MAX_HEADER;
    if buf.len() >= V2_FIXED && buf.starts_with(V2_SIG) {
        let total = V2_FIXED + u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if total > MAX_HEADER {
            // Refused as soon as the length is known: waiting would only run the timer.
            return Received::Invalid(format!(
                "PROXY v2 header of {total} bytes announced; at most {MAX_HEADER} are read"
            ));
        }
        if buf.len() < total {
            return Received::Incomplete;
        }
        if let Err(why) = check_v2(&buf[..total]) {
            return Received::Invalid(why);
        }
    }
    // ppp judges a v1 line cut inside a field (`... 51000 4`) as invalid: wait for the
    // line's end (a v1 header is at most 107 bytes, CRLF included). The line ends at
    // its first LF, which must follow a CR (as HAProxy reads it): a bare LF would let
    // the same bytes read as a shorter header when they arrive cut there.
    let v1_start = buf.starts_with(b"PROXY") || b"PROXY".starts_with(buf);
    if v1_start {
        match buf.iter().position(|&b| b == b'\n') {
            None if buf.len() < V1_MAX => return Received::Incomplete,
            Some(lf) if lf == 0 || buf[lf - 1] != b'\r' => {
                return Received::Invalid("PROXY v1 line ends with LF, not CRLF".into())
            }
            _ => {}
        }
    }
    let header = HeaderResult::parse(buf);
    if header.is_incomplete() {
        return if full {
            Received::Invalid(format!("PROXY header longer than {MAX_HEADER} bytes"))
        } else {
            Received::Incomplete
        };
    }
    match header {
        HeaderResult::V1(Ok(h)) => Received::Header {
            len: h.header.len(),
            addresses: match h.addresses {
                v1::Addresses::Tcp4(a) => endpoints(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                v1::Addresses::Tcp6(a) => endpoints(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Received::Header {
            len: h.len(),
            addresses: match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => endpoints(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                (_, v2::Addresses::IPv6(a)) => endpoints(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
            },
        },
        HeaderResult::V1(Err(e)) => Received::Invalid(format!("not a PROXY header: {e}")),
        HeaderResult::V2(Err(e)) => Received::Invalid(format!("bad PROXY v2 header: {e}")),
    }
}

/// What `ppp` does not check of a complete v2 header and HAProxy does: that the
/// addresses are a stream's (a TCP listener takes no AF_UNIX or UDP addresses), that
/// every TLV fits the header, and a CRC32c TLV's checksum.
fn check_v2(header: &[u8]) -> Result<(), String> {
    let command = header[12] & 0x0F;
    let (family, transport) = (header[13] >> 4, header[13] & 0x0F);
    let addresses = match family {
        0x0 => 0,
        0x1 => 12,
        0x2 => 36,
        0x3 => 216,
        f => {
            return Err(format!(
                "bad PROXY v2 header: unknown address family {f:#x}"
            ))
        }
    };
    if command == 0x1 {
        if family == 0x3 {
            return Err("PROXY v2 header with AF_UNIX addresses on a TCP listener".into());
        }
        if transport == 0x2 {
            return Err("PROXY v2 header with UDP addresses on a TCP listener".into());
        }
    }
    let body = &header[V2_FIXED..];
    if body.len() < addresses {
        return Err(format!(
            "bad PROXY v2 header: {} bytes of addresses for a family that needs {addresses}",
            body.len()
        ));
    }
    let mut at = V2_FIXED + addresses;
    while at < header.len() {
        let Some(tlv) = header.get(at..at + 3) else {
            return Err("bad PROXY v2 header: a TLV is cut short by the header's end".into());
        };
        let (kind, len) = (tlv[0], u16::from_be_bytes([tlv[1], tlv[2]]) as usize);
        let value = at + 3..at + 3 + len;
        if value.end > header.len() {
            return Err(format!(
                "bad PROXY v2 header: TLV {kind:#04x} of {len} bytes runs past the header's end"
            ));
        }
        if kind == PP2_TYPE_CRC32C {
            if len != 4 {
                return Err(format!("bad PROXY v2 header: CRC32c TLV of {len} bytes"));
            }
            let mut zeroed = header.to_vec();
            zeroed[value.clone()].fill(0);
            let want = u32::from_be_bytes(header[value.clone()].try_into().expect("4 bytes"));
            if crc32c(&zeroed) != want {
                return Err("bad PROXY v2 header: CRC32c checksum mismatch".into());
            }
        }
        at = value.end;
    }
    Ok(())
}

/// The CRC32c (Castagnoli) of `bytes`, as the PROXY v2 checksum TLV carries it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(bytes)
}

/// A header's (client, destination) pair.
fn endpoints(
    src: impl Into<IpAddr>,
    src_port: u16,
    dst: impl Into<IpAddr>,
    dst_port: u16,
) -> Option<(SocketAddr, SocketAddr)> {
    Some((
        SocketAddr::new(src.into(), src_port),
        SocketAddr::new(dst.into(), dst_port),
    ))
}

/// Which PROXY protocol version a listener sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Text: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`.
    V1,
    /// Binary, 16 bytes + 12 (IPv4) or 36 (IPv6) of addresses.
    V2,
}

impl Version {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// The header of a relayed TCP connection from `client` to `local` (the address the
/// client reached on ringway). Both addresses of one socket share a family; should
/// they not, the header says "unknown" and the backend uses the real endpoints.
pub fn relayed(version: Version, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    match version {
        Version::V1 => v1::Addresses::from((client, local))
            .to_string()
            .into_bytes(),
        Version::V2 => build_v2(v2::Addresses::from((client, local))),
    }
}

/// The header of a connection ringway makes itself (a health check): v2 `LOCAL`, v1
/// `UNKNOWN`. The backend accepts it and uses the real endpoints.
pub fn local(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => v1::Addresses::Unknown.to_string().into_bytes(),
        Version::V2 => build_v2(v2::Addresses::Unspecified),
    }
}

/// `PROXY` over TCP with addresses; `LOCAL` with the UNSPEC protocol byte (0x00, the
/// only valid one for an unspecified family) without.
fn build_v2(addresses: v2::Addresses) -> Vec<u8> {
    let (command, protocol) = match addresses {
        v2::Addresses::Unspecified => (v2::Command::Local, v2::Protocol::Unspecified),
        _ => (v2::Command::Proxy, v2::Protocol::Stream),
    };
    v2::Builder::with_addresses(v2::Version::Two | command, protocol, addresses)
        .build()
        // Fails only when addresses and TLVs exceed 64 KiB; at most 36 bytes here.
        .expect("a PROXY v2 header without TLVs fits its length field")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    /// Found by the `proxy_header` fuzz target: with a bare LF before the CRLF, the
    /// whole input read as a 25-byte header but its first 15 bytes as a 15-byte one, so
    /// what ringway consumed depended on how the bytes arrived. A v1 line ends at its
    /// first LF, which must follow a CR.
    #[test]
    fn a_v1_line_ending_in_a_bare_lf_is_invalid_however_it_is_cut() {
        let crash: &[u8] = b"PROXY UNKNOWN \n\x00Y PROX0\r\nOWN \n\x008.51.\x00100.1 4\r\n\r\n";
        assert!(
            matches!(parse(crash), Received::Invalid(_)),
            "{:?}",
            parse(crash)
        );
        for cut in 0..crash.len() {
            let got = parse(&crash[..cut]);
            let want_wait = cut <= 14;
            assert!(
                matches!(got, Received::Incomplete) == want_wait
                    && (want_wait || matches!(got, Received::Invalid(_))),
                "cut at {cut}: {got:?}"
            );
        }
        let tcp4 = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\n";
        assert!(matches!(parse(tcp4), Received::Invalid(_)));
        assert!(matches!(
            parse(b"PROXY UNKNOWN\r\n"),
            Received::Header { len: 15, .. }
        ));
    }

    #[test]
    fn v1_ipv4_and_ipv6_read_as_the_spec_shows() {
        let h = relayed(
            Version::V1,
            "192.0.2.7:51000".parse().unwrap(),
            "198.51.100.1:443".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 443\r\n");
        let h = relayed(
            Version::V1,
            "[2001:db8::7]:51000".parse().unwrap(),
            "[::1]:443".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP6 2001:db8::7 ::1 51000 443\r\n");
        assert!(h.len() <= 107, "v1 headers are at most 107 bytes");
    }

    #[test]
    fn v2_ipv4_bytes() {
        let h = relayed(
            Version::V2,
            "192.0.2.7:51000".parse().unwrap(),
            "198.51.100.1:443".parse().unwrap(),
        );
        let mut want = SIG.to_vec();
        // v2 + PROXY, TCP over IPv4, 12 bytes of addresses.
        want.extend_from_slice(&[0x21, 0x11, 0, 12]);
        want.extend_from_slice(&[192, 0, 2, 7, 198, 51, 100, 1]);
        want.extend_from_slice(&51000u16.to_be_bytes());
        want.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(h, want);
    }

    #[test]
    fn v2_ipv6_bytes() {
        let h = relayed(
            Version::V2,
            "[2001:db8::7]:51000".parse().unwrap(),
            "[::1]:443".parse().unwrap(),
        );
        assert_eq!(&h[..12], SIG);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(
            &h[16..32],
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&h[32..48], &std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&h[48..], &[0xC7, 0x38, 0x01, 0xBB]);
    }

    #[test]
    fn health_checks_say_local_or_unknown() {
        assert_eq!(local(Version::V1), b"PROXY UNKNOWN\r\n");
        let mut want = SIG.to_vec();
        want.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(local(Version::V2), want);
    }

    #[test]
    fn what_ringway_sends_it_reads_back() {
        let pairs = [
            ("192.0.2.7:51000", "198.51.100.1:443"),
            ("[2001:db8::7]:51000", "[::1]:443"),
        ];
        for v in [Version::V1, Version::V2] {
            for (c, l) in pairs {
                let (c, l): (SocketAddr, SocketAddr) = (c.parse().unwrap(), l.parse().unwrap());
                let mut bytes = relayed(v, c, l);
                let len = bytes.len();
                // Client bytes after the header are not part of it.
                bytes.extend_from_slice(b"EHLO client\r\n");
                assert_eq!(
                    parse(&bytes),
                    Received::Header {
                        len,
                        addresses: Some((c, l))
                    },
                    "{v:?}"
                );
                // Every strict prefix is incomplete, never invalid.
                for cut in 0..len {
                    assert_eq!(parse(&bytes[..cut]), Received::Incomplete, "{v:?} {cut}");
                }
            }
            let local = local(v);
            assert_eq!(
                parse(&local),
                Received::Header {
                    len: local.len(),
                    addresses: None
                }
            );
        }
    }

    #[test]
    fn other_protocols_are_invalid_at_once() {
        for first in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(parse(first), Received::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(first)
            );
        }
        // v2 signature, then version 3.
        let mut v3 = SIG.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0, 12]);
        v3.extend_from_slice(&[0; 12]);
        assert!(matches!(parse(&v3), Received::Invalid(_)));
    }

    #[test]
    fn a_header_longer_than_the_limit_is_refused() {
        let mut big = SIG.to_vec();
        big.extend_from_slice(&[0x21, 0x11]);
        big.extend_from_slice(&(5000u16).to_be_bytes());
        big.resize(MAX_HEADER + 10, 0);
        assert!(matches!(parse(&big), Received::Invalid(_)));
        // Its length field says so in the first 16 bytes: no need to wait for more.
        assert!(matches!(parse(&big[..16]), Received::Invalid(m) if m.contains("at most")));
        assert_eq!(parse(&big[..15]), Received::Incomplete);
        let long_v1 = format!("PROXY TCP4 {}", "1".repeat(120));
        assert!(matches!(parse(long_v1.as_bytes()), Received::Invalid(_)));
        assert_eq!(parse(&long_v1.as_bytes()[..106]), Received::Incomplete);
        // With TLVs but inside the limit: accepted, TLVs skipped.
        let mut tlv = relayed(
            Version::V2,
            "192.0.2.7:1".parse().unwrap(),
            "192.0.2.8:2".parse().unwrap(),
        );
        tlv[15] += 7;
        tlv.extend_from_slice(&[0x04, 0, 4, b'n', b'o', b'o', b'p']);
        assert!(matches!(
            parse(&tlv),
            Received::Header {
                len: 35,
                addresses: Some(_)
            }
        ));
    }

    proptest::proptest! {
        /// Untrusted bytes never panic the parser, and a header never claims more bytes
        /// than it was given: the worker reads exactly `len` of what it peeked.
        #[test]
        fn any_bytes_parse_without_panic(
            prefix in proptest::prop_oneof![
                proptest::strategy::Just(Vec::new()),
                proptest::strategy::Just(SIG.to_vec()),
                proptest::strategy::Just(b"PROXY ".to_vec()),
                proptest::strategy::Just(b"PROXY TCP4 ".to_vec()),
                proptest::strategy::Just(b"PROXY TCP6 ".to_vec()),
            ],
            rest in proptest::collection::vec(proptest::num::u8::ANY, 0..1100),
        ) {
            let mut bytes = prefix;
            bytes.extend_from_slice(&rest);
            if let Received::Header { len, .. } = parse(&bytes) {
                proptest::prop_assert!(len > 0 && len <= bytes.len().min(MAX_HEADER));
            }
        }

        /// Valid headers cut anywhere and followed by anything: complete ones parse to
        /// what was encoded, cut ones wait.
        #[test]
        fn real_headers_survive_any_tail(
            v2 in proptest::bool::ANY,
            a in proptest::array::uniform4(proptest::num::u8::ANY),
            b in proptest::array::uniform16(proptest::num::u8::ANY),
            ports in (proptest::num::u16::ANY, proptest::num::u16::ANY),
            six in proptest::bool::ANY,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            cut in 0usize..200,
        ) {
            let version = if v2 { Version::V2 } else { Version::V1 };
            let (c, l): (SocketAddr, SocketAddr) = if six {
                ((std::net::Ipv6Addr::from(b), ports.0).into(), (std::net::Ipv6Addr::LOCALHOST, ports.1).into())
            } else {
                ((std::net::Ipv4Addr::from(a), ports.0).into(), (std::net::Ipv4Addr::LOCALHOST, ports.1).into())
            };
            let header = relayed(version, c, l);
            let mut bytes = header.clone();
            bytes.extend_from_slice(&tail);
            proptest::prop_assert_eq!(
                parse(&bytes),
                Received::Header { len: header.len(), addresses: Some((c, l)) }
            );
            let cut = cut.min(header.len() - 1);
            proptest::prop_assert_eq!(parse(&bytes[..cut]), Received::Incomplete);
        }
    }

    /// An IPv4 v2 header whose length field is bumped by `extra.len()`, with `extra`
    /// (TLVs) appended.
    fn v2_with(extra: &[u8]) -> Vec<u8> {
        let mut h = relayed(
            Version::V2,
            "192.0.2.7:1".parse().unwrap(),
            "192.0.2.8:2".parse().unwrap(),
        );
        let len = u16::from_be_bytes([h[14], h[15]]) + extra.len() as u16;
        h[14..16].copy_from_slice(&len.to_be_bytes());
        h.extend_from_slice(extra);
        h
    }

    /// With a CRC32c TLV whose checksum is right (or, with `spoil`, wrong).
    fn v2_with_crc(spoil: bool) -> Vec<u8> {
        let mut h = v2_with(&[PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0]);
        let sum = crc32c(&h) ^ spoil as u32;
        let at = h.len() - 4;
        h[at..].copy_from_slice(&sum.to_be_bytes());
        h
    }

    #[test]
    fn v2_headers_are_as_strict_as_haproxy() {
        // A TLV whose length runs past the header's end.
        let past = v2_with(&[0x04, 0, 5, b'a', b'b']);
        assert!(matches!(parse(&past), Received::Invalid(m) if m.contains("runs past")));
        // A TLV header cut by the end.
        let cut = v2_with(&[0x04, 0]);
        assert!(matches!(parse(&cut), Received::Invalid(m) if m.contains("cut short")));
        // A CRC32c TLV: right is accepted, wrong refused.
        let good = v2_with_crc(false);
        assert!(matches!(
            parse(&good),
            Received::Header {
                addresses: Some(_),
                ..
            }
        ));
        let bad = v2_with_crc(true);
        assert!(matches!(parse(&bad), Received::Invalid(m) if m.contains("CRC32c")));
        // AF_UNIX (and UDP) addresses on a TCP listener.
        let mut unix = SIG.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
        unix.resize(16 + 216, b'/');
        assert!(matches!(parse(&unix), Received::Invalid(m) if m.contains("AF_UNIX")));
        let mut udp = relayed(
            Version::V2,
            "192.0.2.7:1".parse().unwrap(),
            "192.0.2.8:2".parse().unwrap(),
        );
        udp[13] = 0x12;
        assert!(matches!(parse(&udp), Received::Invalid(m) if m.contains("UDP")));
        // A length above what is read: refused from the first 16 bytes on.
        let mut huge = SIG.to_vec();
        huge.extend_from_slice(&[0x21, 0x11]);
        huge.extend_from_slice(&5000u16.to_be_bytes());
        assert!(matches!(parse(&huge), Received::Invalid(m) if m.contains("at most")));
        // Every strict prefix of a good header with TLVs still waits.
        for n in 0..good.len() {
            assert_eq!(parse(&good[..n]), Received::Incomplete, "{n}");
        }
    }

    #[test]
    fn mixed_families_say_unknown() {
        let v4: SocketAddr = "192.0.2.7:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:2".parse().unwrap();
        assert_eq!(relayed(Version::V1, v4, v6), b"PROXY UNKNOWN\r\n");
        assert_eq!(relayed(Version::V2, v4, v6), local(Version::V2));
    }
}
