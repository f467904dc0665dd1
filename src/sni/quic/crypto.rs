//! The frames of an opened Initial (RFC 9000 17.2.2: PADDING, PING, ACK, CRYPTO,
//! CONNECTION_CLOSE), and the CRYPTO stream they carry, reassembled until the
//! ClientHello in it is whole.

use super::varint;
use crate::sni::client_hello::{self, MAX_HELLO};
use crate::sni::Verdict;

/// The CRYPTO stream's first bytes: the ClientHello.
#[derive(Debug, Default)]
pub struct Crypto {
    buf: Vec<u8>,
    /// The byte ranges received, sorted and disjoint.
    have: Vec<(usize, usize)>,
    /// An error seen in the stream.
    broken: Option<&'static str>,
}

impl Crypto {
    /// Adds `data` at stream offset `offset`.
    fn add(&mut self, offset: u64, data: &[u8]) -> Result<(), &'static str> {
        let start = usize::try_from(offset).map_err(|_| TOO_BIG)?;
        let end = start.checked_add(data.len()).ok_or(TOO_BIG)?;
        if end > 4 + MAX_HELLO {
            // Bytes past a whole hello of the largest size are not the hello's.
            return Err(TOO_BIG);
        }
        if data.is_empty() {
            return Ok(());
        }
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.buf[start..end].copy_from_slice(data);
        // Merge [start, end) into the sorted ranges.
        let mut merged = (start, end);
        self.have.retain(|&(s, e)| {
            if e < merged.0 || s > merged.1 {
                true
            } else {
                merged = (merged.0.min(s), merged.1.max(e));
                false
            }
        });
        let at = self.have.partition_point(|&(s, _)| s < merged.0);
        self.have.insert(at, merged);
        Ok(())
    }

    /// The bytes from offset 0 that have arrived without a gap.
    fn contiguous(&self) -> usize {
        match self.have.first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }

    /// The answer so far.
    pub fn hello(&self) -> Verdict {
        if let Some(why) = self.broken {
            return Verdict::Not(why);
        }
        let n = self.contiguous();
        let Some(head) = self.buf.get(..4).filter(|_| n >= 4) else {
            return Verdict::NeedMore;
        };
        let head: &[u8; 4] = head.try_into().expect("four bytes");
        match client_hello::message_len(head) {
            Err(why) => Verdict::Not(why),
            Ok(want) if n >= want => client_hello::server_name(&self.buf[..want]),
            Ok(_) => Verdict::NeedMore,
        }
    }
}

const TOO_BIG: &str = "ClientHello over 16 KiB";

/// Reads the frames of an opened Initial, adding CRYPTO data to `crypto`.
pub fn frames(mut b: &[u8], crypto: &mut Crypto) -> Result<(), &'static str> {
    while let Some(&kind) = b.first() {
        match kind {
            // PADDING: a run of zeros.
            0x00 => {
                let zeros = b.iter().take_while(|&&x| x == 0).count();
                b = &b[zeros..];
            }
            // PING.
            0x01 => b = &b[1..],
            // ACK, with ECN counts for 0x03.
            0x02 | 0x03 => {
                b = &b[1..];
                let _largest = varint::read(&mut b)?;
                let _delay = varint::read(&mut b)?;
                let ranges = varint::read(&mut b)?;
                let _first = varint::read(&mut b)?;
                for _ in 0..ranges {
                    varint::read(&mut b)?;
                    varint::read(&mut b)?;
                }
                if kind == 0x03 {
                    for _ in 0..3 {
                        varint::read(&mut b)?;
                    }
                }
            }
            // CRYPTO.
            0x06 => {
                b = &b[1..];
                let offset = varint::read(&mut b)?;
                let len = varint::read(&mut b)?;
                let data = usize::try_from(len)
                    .ok()
                    .and_then(|l| b.get(..l))
                    .ok_or("malformed QUIC packet: a CRYPTO frame runs past its end")?;
                b = &b[data.len()..];
                if let Err(why) = crypto.add(offset, data) {
                    crypto.broken = Some(why);
                    return Ok(());
                }
            }
            0x1c => return Err("the client closed the connection in its Initial"),
            _ => return Err("not QUIC: a frame an Initial cannot carry"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_in_any_order() {
        let mut c = Crypto::default();
        c.add(10, &[1; 5]).unwrap();
        c.add(0, &[1; 4]).unwrap();
        assert_eq!(c.contiguous(), 4);
        c.add(4, &[1; 6]).unwrap();
        assert_eq!(c.have, vec![(0, 15)]);
        c.add(20, &[1; 2]).unwrap();
        c.add(3, &[1; 2]).unwrap();
        assert_eq!(c.have, vec![(0, 15), (20, 22)]);
        c.add(15, &[1; 5]).unwrap();
        assert_eq!(c.have, vec![(0, 22)]);
        assert!(c.add(MAX_HELLO as u64, &[0; 5]).is_err());
        assert!(c.add(u64::MAX, &[0; 5]).is_err());
    }

    #[test]
    fn frames_an_initial_may_carry() {
        let mut c = Crypto::default();
        // PADDING, PING, ACK (one range), ACK with ECN, CRYPTO of 2 bytes, PADDING.
        let f = [
            0, 0, 1, 2, 5, 0, 1, 0, 1, 1, 3, 5, 0, 0, 0, 1, 2, 3, 6, 0, 2, 1, 0, 0, 0,
        ];
        assert_eq!(frames(&f, &mut c), Ok(()));
        assert_eq!(c.have, vec![(0, 2)]);
        assert!(frames(&[0x08, 0, 0], &mut c).is_err(), "STREAM");
        assert!(
            frames(&[0x1c, 0, 0, 0], &mut c).is_err(),
            "CONNECTION_CLOSE"
        );
        assert!(frames(&[6, 0, 9, 1], &mut c).is_err(), "truncated CRYPTO");
    }
}
