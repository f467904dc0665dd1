//! Client Initial packets built for the tests: the reverse of what the reader does.

use super::keys::Keys;
use super::{varint, Version};

/// A CRYPTO frame.
pub fn crypto_frame(offset: usize, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    varint::write(offset as u64, &mut f);
    varint::write(data.len() as u64, &mut f);
    f.extend(data);
    f
}

/// A protected client Initial carrying `frames`, padded with PADDING frames to at
/// least `size` bytes.
pub fn initial(version: Version, dcid: &[u8], pn: u32, frames: &[u8], size: usize) -> Vec<u8> {
    let ty = match version {
        Version::V1 => 0b00,
        Version::V2 => 0b01,
    };
    let pn_len = 2;
    let mut header = vec![0xc0 | ty << 4 | (pn_len as u8 - 1)];
    header.extend(version.wire().to_be_bytes());
    header.push(dcid.len() as u8);
    header.extend(dcid);
    header.extend([4, 0xaa, 0xbb, 0xcc, 0xdd]); // scid
    header.push(0); // no token
    let fixed = header.len() + 2 + pn_len + 16;
    let mut payload = frames.to_vec();
    // At least 4 bytes of packet number and payload, for the sample.
    let pad = size
        .saturating_sub(fixed + payload.len())
        .max(4usize.saturating_sub(payload.len()));
    payload.extend(std::iter::repeat_n(0u8, pad));
    let length = pn_len + payload.len() + 16;
    header.extend((0x4000 | length as u16).to_be_bytes());
    let pn_at = header.len();
    header.extend(&(pn as u16).to_be_bytes());
    let keys = Keys::client_initial(version, dcid);
    let tag = keys.seal(u64::from(pn), &header, &mut payload);
    let mut packet = header;
    packet.extend(payload);
    packet.extend(tag);
    let sample: [u8; 16] = packet[pn_at + 4..pn_at + 20].try_into().unwrap();
    let mask = keys.mask(&sample);
    packet[0] ^= mask[0] & 0x0f;
    for i in 0..pn_len {
        packet[pn_at + i] ^= mask[1 + i];
    }
    packet
}

/// The datagrams a client sends for handshake message `hello`: its bytes in CRYPTO
/// frames of at most `chunk` bytes, `per_packet` frames an Initial, each Initial a
/// datagram of 1,200 bytes or more; `order` permutes the frames (chaos protection).
pub fn datagrams(
    version: Version,
    dcid: &[u8],
    hello: &[u8],
    chunk: usize,
    per_packet: usize,
    order: impl Fn(&mut Vec<Vec<u8>>),
) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = hello
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| crypto_frame(i * chunk, c))
        .collect();
    order(&mut frames);
    frames
        .chunks(per_packet)
        .enumerate()
        .map(|(pn, fs)| {
            // A PING between frames, as some clients do.
            let body: Vec<u8> = fs.iter().flat_map(|f| [&[0x01][..], f].concat()).collect();
            initial(version, dcid, pn as u32, &body, 1200)
        })
        .collect()
}
