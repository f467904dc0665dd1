//! What a leaving node tells its peers (`[cluster] port`, UDP): the UDP flows it holds,
//! so that they pass those flows' datagrams on to it (second chance for UDP). Pure:
//! encoding and decoding only.
//!
//! A datagram: `RWCL`, version 1, kind 1 ("flows I hold"), a big-endian u16 count, then
//! per flow 12 bytes: the client's IPv4 address and port, then the address and port it
//! sent to (the listener's), all in network order. A node sends all of its flows every
//! second while it is leaving, in as many datagrams as they take; a peer forgets a flow
//! it has not heard of for [`FORGET_AFTER_SECONDS`].

use std::net::{Ipv4Addr, SocketAddrV4};

const MAGIC: &[u8; 4] = b"RWCL";
const VERSION: u8 = 1;
const FLOWS: u8 = 1;
const HEADER: usize = 8;
const ENTRY: usize = 12;

/// Flows per datagram (a datagram stays under 1,232 bytes: no fragmentation on any
/// path IPv6 would take either).
pub const PER_DATAGRAM: usize = 100;

/// A peer forgets a flow it has not been told of again for this long.
pub const FORGET_AFTER_SECONDS: u64 = 3;

/// A UDP flow: its client and the address the client sends to.
pub type FlowKey = (SocketAddrV4, SocketAddrV4);

/// Why a datagram was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// Not a ringway announcement, or from a version this one does not read.
    #[error("not a ringway cluster announcement (or of another version)")]
    Foreign,
    /// Its length does not match its count.
    #[error("announcement of {got} bytes for {count} flows")]
    Length {
        /// Bytes received.
        got: usize,
        /// Flows it said it holds.
        count: usize,
    },
}

/// `flows` as datagrams of at most [`PER_DATAGRAM`] flows each.
pub fn encode(flows: &[FlowKey]) -> Vec<Vec<u8>> {
    flows
        .chunks(PER_DATAGRAM)
        .map(|chunk| {
            let mut d = Vec::with_capacity(HEADER + chunk.len() * ENTRY);
            d.extend_from_slice(MAGIC);
            d.push(VERSION);
            d.push(FLOWS);
            d.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            for (client, dst) in chunk {
                for a in [client, dst] {
                    d.extend_from_slice(&a.ip().octets());
                    d.extend_from_slice(&a.port().to_be_bytes());
                }
            }
            d
        })
        .collect()
}

/// The flows one datagram names.
pub fn decode(d: &[u8]) -> Result<Vec<FlowKey>, AnnounceError> {
    if d.len() < HEADER || &d[..4] != MAGIC || d[4] != VERSION || d[5] != FLOWS {
        return Err(AnnounceError::Foreign);
    }
    let count = usize::from(u16::from_be_bytes([d[6], d[7]]));
    if d.len() != HEADER + count * ENTRY {
        return Err(AnnounceError::Length {
            got: d.len(),
            count,
        });
    }
    let addr = |b: &[u8]| {
        SocketAddrV4::new(
            Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            u16::from_be_bytes([b[4], b[5]]),
        )
    };
    Ok(d[HEADER..]
        .chunks_exact(ENTRY)
        .map(|e| (addr(&e[..6]), addr(&e[6..])))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flow(i: u32) -> FlowKey {
        (
            SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), (i % 60_000) as u16 + 1),
            SocketAddrV4::new(Ipv4Addr::new(10, 100, 0, 1), 53),
        )
    }

    #[test]
    fn flows_go_in_datagrams_of_at_most_a_hundred_and_come_back() {
        let flows: Vec<FlowKey> = (0..250).map(flow).collect();
        let ds = encode(&flows);
        assert_eq!(ds.len(), 3);
        assert!(ds.iter().all(|d| d.len() <= HEADER + PER_DATAGRAM * ENTRY));
        let back: Vec<FlowKey> = ds.iter().flat_map(|d| decode(d).unwrap()).collect();
        assert_eq!(back, flows);
        assert!(encode(&[]).is_empty());
    }

    #[test]
    fn the_layout_is_as_documented() {
        let d = &encode(&[flow(1)])[0];
        assert_eq!(&d[..8], b"RWCL\x01\x01\x00\x01");
        assert_eq!(&d[8..14], &[10, 0, 0, 1, 0, 2]);
        assert_eq!(&d[14..20], &[10, 100, 0, 1, 0, 53]);
    }

    proptest! {
        #[test]
        fn no_datagram_panics_and_a_cut_one_is_refused(d in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..20) {
            let _ = decode(&d);
            let good = &encode(&[flow(7), flow(8)])[0];
            let short = &good[..good.len().saturating_sub(cut + 1)];
            prop_assert!(decode(short).is_err());
        }
    }
}
