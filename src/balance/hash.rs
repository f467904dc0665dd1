//! The one hash definition of ringway: flow keys and virtual-node positions.
//!
//! This file *is* the hash contract that `docs/hashing.md` specifies in prose and
//! `tests/fixtures/ring_vectors.tsv` pins with test vectors. Every ringway instance and
//! every release must map a flow to the same backend, so nothing here may change except
//! as a new, documented contract version.
//!
//! * Hash function: XXH3-64 with seed 0 (`xxhash_rust::xxh3::xxh3_64`). Never a
//!   `RandomState`: the result must be reproducible across threads, processes and hosts.
//! * `five-tuple` key (37 bytes): protocol number (1 byte), source IP (16 bytes, IPv4 as
//!   IPv4-mapped IPv6), source port (2 bytes, big-endian), destination IP (16 bytes),
//!   destination port (2 bytes, big-endian).
//! * `source-ip` key (16 bytes): the source IP alone, IPv4 as IPv4-mapped IPv6.
//! * Virtual node `i` of backend `id` sits at XXH3-64 of the UTF-8 string `"{id}#{i}"`.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use xxhash_rust::xxh3::xxh3_64;

/// Version of the hash contract implemented here (see `docs/hashing.md`).
pub const CONTRACT_VERSION: u32 = 1;

/// IP protocol number of TCP, the first byte of a TCP five-tuple key.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP, the first byte of a UDP five-tuple key.
pub const PROTO_UDP: u8 = 17;

/// What part of a flow is hashed onto the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashMode {
    /// Protocol, source address and port, destination address and port.
    FiveTuple,
    /// The source IP alone: every connection of one client goes to one backend.
    SourceIp,
}

/// The 16-byte form of an IP address used in keys: IPv4 becomes IPv4-mapped IPv6.
pub fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The ring position of a flow.
///
/// `src` is the client's address, `dst` the local address the client reached.
///
/// ```
/// use ringway::balance::hash::{flow_hash, HashMode, PROTO_TCP};
///
/// let client = "192.0.2.10:40000".parse().unwrap();
/// let listener = "127.0.0.1:8080".parse().unwrap();
/// let key = flow_hash(HashMode::FiveTuple, PROTO_TCP, client, listener);
/// // Stable across processes, hosts and releases (hash contract v1):
/// assert_eq!(key, flow_hash(HashMode::FiveTuple, PROTO_TCP, client, listener));
/// // source-ip ignores ports and the destination.
/// let other_port = "192.0.2.10:40001".parse().unwrap();
/// assert_eq!(
///     flow_hash(HashMode::SourceIp, PROTO_TCP, client, listener),
///     flow_hash(HashMode::SourceIp, PROTO_TCP, other_port, listener),
/// );
/// ```
pub fn flow_hash(mode: HashMode, proto: u8, src: SocketAddr, dst: SocketAddr) -> u64 {
    match mode {
        HashMode::SourceIp => xxh3_64(&ip_bytes(src.ip())),
        HashMode::FiveTuple => {
            let mut key = [0u8; 37];
            key[0] = proto;
            key[1..17].copy_from_slice(&ip_bytes(src.ip()));
            key[17..19].copy_from_slice(&src.port().to_be_bytes());
            key[19..35].copy_from_slice(&ip_bytes(dst.ip()));
            key[35..37].copy_from_slice(&dst.port().to_be_bytes());
            xxh3_64(&key)
        }
    }
}

/// The ring position of virtual node `index` of the backend identified by `id`.
pub fn vnode_hash(id: &str, index: u32) -> u64 {
    let mut label = Vec::with_capacity(id.len() + 11);
    vnode_label(&mut label, id, index);
    xxh3_64(&label)
}

/// Writes `"{id}#{index}"` into `out` (cleared first); lets ring building reuse one buffer.
pub(crate) fn vnode_label(out: &mut Vec<u8>, id: &str, index: u32) {
    out.clear();
    out.extend_from_slice(id.as_bytes());
    // Writing to a Vec cannot fail.
    let _ = write!(out, "#{index}");
}

/// XXH3-64 (seed 0) of arbitrary bytes: the primitive behind both keys and vnodes.
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_is_mapped_into_ipv6() {
        let b = ip_bytes("192.0.2.1".parse().unwrap());
        assert_eq!(&b[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&b[12..], &[192, 0, 2, 1]);
    }

    #[test]
    fn five_tuple_depends_on_every_field() {
        let s: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let d: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let base = flow_hash(HashMode::FiveTuple, PROTO_TCP, s, d);
        assert_ne!(base, flow_hash(HashMode::FiveTuple, PROTO_UDP, s, d));
        assert_ne!(
            base,
            flow_hash(
                HashMode::FiveTuple,
                PROTO_TCP,
                "10.0.0.1:1001".parse().unwrap(),
                d
            )
        );
        assert_ne!(
            base,
            flow_hash(
                HashMode::FiveTuple,
                PROTO_TCP,
                "10.0.0.3:1000".parse().unwrap(),
                d
            )
        );
        assert_ne!(
            base,
            flow_hash(
                HashMode::FiveTuple,
                PROTO_TCP,
                s,
                "10.0.0.2:81".parse().unwrap()
            )
        );
    }

    #[test]
    fn source_ip_ignores_ports_and_destination() {
        let a = flow_hash(
            HashMode::SourceIp,
            PROTO_TCP,
            "10.0.0.1:1".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        let b = flow_hash(
            HashMode::SourceIp,
            PROTO_UDP,
            "10.0.0.1:2".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a, xxh3(&ip_bytes("10.0.0.1".parse().unwrap())));
    }

    #[test]
    fn vnode_label_is_id_hash_index() {
        let mut buf = Vec::new();
        vnode_label(&mut buf, "app-1", 42);
        assert_eq!(buf, b"app-1#42");
        assert_eq!(vnode_hash("app-1", 42), xxh3(b"app-1#42"));
    }

    #[test]
    fn xxh3_known_answer() {
        // Published XXH3-64 test value for the empty input, seed 0.
        assert_eq!(xxh3(b""), 0x2D06_8005_38D3_94C2);
    }
}
