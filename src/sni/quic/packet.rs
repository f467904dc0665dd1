//! One QUIC long header packet in a datagram (RFC 9000 17.2), and how an Initial is
//! opened: header protection off (RFC 9001 5.4), then the AEAD.

use super::keys::{Keys, SAMPLE, TAG};
use super::{varint, Version};

/// The longest connection ID (RFC 9000 17.2).
const MAX_CID: usize = 20;

/// A long header packet, not yet opened.
#[derive(Debug)]
pub struct Packet<'a> {
    /// Its bytes, from its first byte to its last.
    bytes: &'a [u8],
    version: Version,
    initial: bool,
    dcid: std::ops::Range<usize>,
    /// Where the (protected) packet number starts.
    pn_at: usize,
}

impl<'a> Packet<'a> {
    /// The packet at the front of `b`.
    pub fn parse(b: &'a [u8]) -> Result<Packet<'a>, &'static str> {
        let first = *b.first().ok_or(SHORT)?;
        if first & 0x80 == 0 {
            return Err("not QUIC: a short header packet first");
        }
        if first & 0x40 == 0 {
            return Err("not QUIC: the fixed bit is clear");
        }
        let wire = u32::from_be_bytes(b.get(1..5).ok_or(SHORT)?.try_into().map_err(|_| SHORT)?);
        let version = Version::of(wire).ok_or("not QUIC v1 or v2: another version")?;
        let mut at = 5;
        let dcid = cid(b, &mut at)?;
        let _scid = cid(b, &mut at)?;
        let initial = (first >> 4) & 0b11 == version.initial_type();
        let mut rest = &b[at..];
        if initial {
            let token = varint::read(&mut rest)?;
            rest = usize::try_from(token)
                .ok()
                .and_then(|t| rest.get(t..))
                .ok_or(SHORT)?;
        } else if (first >> 4) & 0b11 == retry_type(version) {
            return Err("not QUIC: a Retry from a client");
        }
        let len = varint::read(&mut rest)?;
        let pn_at = b.len() - rest.len();
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| pn_at.checked_add(l))
            .filter(|&e| e <= b.len())
            .ok_or(SHORT)?;
        Ok(Packet {
            bytes: &b[..end],
            version,
            initial,
            dcid,
            pn_at,
        })
    }

    /// Its length in the datagram.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// An Initial packet.
    pub fn is_initial(&self) -> bool {
        self.initial
    }

    /// Its version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Its Destination Connection ID.
    pub fn dcid(&self) -> &'a [u8] {
        &self.bytes[self.dcid.clone()]
    }

    /// Opens it with `keys` in `scratch`: its frames, or `None` when it does not open.
    pub fn open<'s>(&self, keys: &Keys, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]> {
        let sample: &[u8; SAMPLE] = self
            .bytes
            .get(self.pn_at + 4..self.pn_at + 4 + SAMPLE)?
            .try_into()
            .ok()?;
        let mask = keys.mask(sample);
        scratch.clear();
        scratch.extend_from_slice(self.bytes);
        scratch[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(scratch[0] & 0x03) + 1;
        let mut pn = 0u64;
        for i in 0..pn_len {
            scratch[self.pn_at + i] ^= mask[1 + i];
            pn = pn << 8 | u64::from(scratch[self.pn_at + i]);
        }
        let (header, payload) = scratch.split_at_mut(self.pn_at + pn_len);
        if payload.len() < TAG {
            return None;
        }
        // A client's first packets carry small numbers: the truncated one is the whole.
        let len = keys.open(pn, header, payload)?;
        Some(&scratch[self.pn_at + pn_len..self.pn_at + pn_len + len])
    }
}

const SHORT: &str = "malformed QUIC packet: a field runs past its end";

/// The long header packet type of a Retry.
fn retry_type(v: Version) -> u8 {
    match v {
        Version::V1 => 0b11,
        Version::V2 => 0b00,
    }
}

/// A connection ID field (length byte, then the ID) at `*at`.
fn cid(b: &[u8], at: &mut usize) -> Result<std::ops::Range<usize>, &'static str> {
    let len = usize::from(*b.get(*at).ok_or(SHORT)?);
    if len > MAX_CID {
        return Err("not QUIC: a connection ID over 20 bytes");
    }
    let range = *at + 1..*at + 1 + len;
    if range.end > b.len() {
        return Err(SHORT);
    }
    *at = range.end;
    Ok(range)
}
