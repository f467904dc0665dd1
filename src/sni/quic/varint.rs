//! QUIC's variable-length integers (RFC 9000 16).

/// Reads one varint off the front of `b`.
pub fn read(b: &mut &[u8]) -> Result<u64, &'static str> {
    let first = *b.first().ok_or(SHORT)?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(..len).ok_or(SHORT)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = v << 8 | u64::from(x);
    }
    *b = &b[len..];
    Ok(v)
}

const SHORT: &str = "malformed QUIC packet: a field runs past its end";

/// Writes `v` in the shortest form (tests' packet builder).
#[cfg(test)]
pub fn write(v: u64, out: &mut Vec<u8>) {
    match v {
        0..=0x3f => out.push(v as u8),
        0x40..=0x3fff => out.extend((v as u16 | 0x4000).to_be_bytes()),
        0x4000..=0x3fff_ffff => out.extend((v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend((v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rfc_examples() {
        // RFC 9000 A.1.
        for (hex, v) in [
            ("c2197c5eff14e88c", 151_288_809_941_952_652u64),
            ("9d7f3e7d", 494_878_333),
            ("7bbd", 15_293),
            ("25", 37),
            ("4025", 37),
        ] {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let mut b = bytes.as_slice();
            assert_eq!(super::read(&mut b), Ok(v));
            assert!(b.is_empty());
        }
        let mut short: &[u8] = &[0x9d, 0x7f];
        assert!(super::read(&mut short).is_err());
        for v in [0, 63, 64, 16_383, 16_384, 1 << 30, (1 << 62) - 1] {
            let mut out = Vec::new();
            super::write(v, &mut out);
            assert_eq!(super::read(&mut out.as_slice()), Ok(v));
        }
    }
}
