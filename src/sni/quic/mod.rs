//! The server name in a QUIC client's Initial packets (QUIC v1, RFC 9000/9001, and
//! v2, RFC 9369): the Initial's keys come from its Destination Connection ID, so
//! ringway removes the header protection, opens the packet, and reassembles the
//! ClientHello from its CRYPTO frames, across as many Initials and datagrams as the
//! client spreads it over (a post-quantum hello takes two; CRYPTO frames may come in
//! any order, repeated or overlapping, between PING and PADDING frames).

mod crypto;
mod keys;
mod packet;
mod varint;

#[cfg(test)]
pub(crate) mod build;

use crypto::Crypto;
pub use keys::Keys;
use packet::Packet;

use super::Verdict;

/// Datagrams read at most before answering.
pub const MAX_DATAGRAMS: u32 = 8;

/// A QUIC version this reader knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// QUIC version 1 (RFC 9000).
    V1,
    /// QUIC version 2 (RFC 9369).
    V2,
}

impl Version {
    /// The version of a long header's version field, if known.
    pub fn of(wire: u32) -> Option<Version> {
        match wire {
            0x0000_0001 => Some(Version::V1),
            0x6b33_43cf => Some(Version::V2),
            _ => None,
        }
    }

    /// Its number on the wire.
    pub fn wire(self) -> u32 {
        match self {
            Version::V1 => 0x0000_0001,
            Version::V2 => 0x6b33_43cf,
        }
    }

    /// The Initial salt.
    fn salt(self) -> &'static [u8] {
        match self {
            Version::V1 => &[
                0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8,
                0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
            ],
            Version::V2 => &[
                0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26,
                0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9,
            ],
        }
    }

    /// The key, IV and header-protection labels.
    fn labels(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Version::V1 => ("quic key", "quic iv", "quic hp"),
            Version::V2 => ("quicv2 key", "quicv2 iv", "quicv2 hp"),
        }
    }

    /// The long header packet type of an Initial.
    fn initial_type(self) -> u8 {
        match self {
            Version::V1 => 0b00,
            Version::V2 => 0b01,
        }
    }
}

/// Reads a ClientHello out of the first datagrams a client sends, as they come.
#[derive(Debug, Default)]
pub struct QuicHello {
    /// The keys of the connection ID seen first.
    keys: Option<(Vec<u8>, Keys)>,
    /// The ClientHello's bytes so far.
    crypto: Crypto,
    /// Datagrams read.
    datagrams: u32,
    /// Where packets are opened (their bytes are not touched: the datagrams go to the
    /// backend as they came).
    scratch: Vec<u8>,
    /// The answer, once given.
    done: Option<Verdict>,
}

impl QuicHello {
    /// A reader at the start of a flow.
    pub fn new() -> QuicHello {
        QuicHello::default()
    }

    /// Takes the flow's next datagram from the client. Once the answer is not
    /// [`Verdict::NeedMore`] it stays the same.
    pub fn feed(&mut self, datagram: &[u8]) -> Verdict {
        if let Some(v) = &self.done {
            return v.clone();
        }
        self.datagrams += 1;
        let first = self.datagrams == 1;
        let v = match self.read(datagram, first) {
            Err(why) => Verdict::Not(why),
            Ok(()) => match self.crypto.hello() {
                Verdict::NeedMore if self.datagrams >= MAX_DATAGRAMS => {
                    Verdict::Not("no whole ClientHello in the first 8 datagrams")
                }
                v => v,
            },
        };
        if v.is_final() {
            self.done = Some(v.clone());
            self.crypto = Crypto::default();
            self.scratch = Vec::new();
            self.keys = None;
        }
        v
    }

    /// Reads the Initials of one datagram into the CRYPTO stream. On the first
    /// datagram anything but a readable Initial first is "not QUIC"; later, packets
    /// that do not open are passed over (a spoofed datagram cannot spoil a flow).
    fn read(&mut self, datagram: &[u8], first: bool) -> Result<(), &'static str> {
        let mut rest = datagram;
        let mut read_one = false;
        while !rest.is_empty() {
            let packet = match Packet::parse(rest) {
                Ok(p) => p,
                // Coalesced packets end with a short header one, or padding.
                Err(_) if read_one => break,
                Err(why) if first => return Err(why),
                Err(_) => break,
            };
            rest = &rest[packet.len()..];
            if !packet.is_initial() {
                if first && !read_one {
                    return Err("not QUIC: the first packet is not an Initial");
                }
                continue;
            }
            if self
                .keys
                .as_ref()
                .is_some_and(|(dcid, _)| dcid.as_slice() != packet.dcid())
            {
                self.keys = None;
            }
            let (_, keys) = self.keys.get_or_insert_with(|| {
                let keys = Keys::client_initial(packet.version(), packet.dcid());
                (packet.dcid().to_vec(), keys)
            });
            match packet.open(keys, &mut self.scratch) {
                Some(frames) => {
                    read_one = true;
                    crypto::frames(frames, &mut self.crypto)?;
                }
                None if first && !read_one => {
                    return Err("not QUIC: an Initial that does not open")
                }
                None => {}
            }
        }
        if first && !read_one {
            return Err("not QUIC: no Initial");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
