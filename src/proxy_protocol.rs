//! The PROXY protocol header ringway sends ahead of a client's bytes, so a backend
//! learns the client's address (HAProxy's `send-proxy`/`send-proxy-v2`, NGINX's
//! `proxy_protocol on`). Encoding is the `ppp` crate's; this module picks what to say.
//! Pure: no I/O.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.

use std::net::SocketAddr;

use ppp::{v1, v2};

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
    fn mixed_families_say_unknown() {
        let v4: SocketAddr = "192.0.2.7:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:2".parse().unwrap();
        assert_eq!(relayed(Version::V1, v4, v6), b"PROXY UNKNOWN\r\n");
        assert_eq!(relayed(Version::V2, v4, v6), local(Version::V2));
    }
}
