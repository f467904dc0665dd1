//! ClientHellos built from parts, for the tests of both readers.

/// The parts of a ClientHello.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// The host name in `server_name`, if any.
    pub name: Option<Vec<u8>>,
    /// The legacy session id (0..=32 bytes).
    pub session: Vec<u8>,
    /// Other extensions: type and data (the name goes at `name_at` among them).
    pub others: Vec<(u16, Vec<u8>)>,
    /// Where `server_name` goes among the others.
    pub name_at: usize,
    /// Leave out the extensions block entirely.
    pub no_extensions: bool,
}

impl Parts {
    /// A hello for `name` with a post-quantum-sized key share: about `size` bytes.
    pub fn sized(name: &str, size: usize) -> Parts {
        Parts {
            name: Some(name.as_bytes().to_vec()),
            session: vec![7; 32],
            // key_share (51) carrying a blob the size of X25519MLKEM768's.
            others: vec![(51, vec![0x11; size.saturating_sub(200)])],
            name_at: 0,
            no_extensions: false,
        }
    }
}

fn u16be(n: usize) -> [u8; 2] {
    u16::try_from(n).expect("fits in 16 bits").to_be_bytes()
}

/// The handshake message (type, length, body).
pub fn message(p: &Parts) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([0x5a; 32]);
    body.push(p.session.len() as u8);
    body.extend(&p.session);
    body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]); // two suites
    body.extend([1, 0]); // null compression
    if !p.no_extensions {
        let mut exts = Vec::new();
        let mut others = p.others.iter();
        for i in 0..=p.others.len() {
            if i == p.name_at.min(p.others.len()) {
                if let Some(name) = &p.name {
                    let mut list = vec![0];
                    list.extend(u16be(name.len()));
                    list.extend(name);
                    let mut data = u16be(list.len()).to_vec();
                    data.extend(list);
                    exts.extend([0, 0]);
                    exts.extend(u16be(data.len()));
                    exts.extend(data);
                }
            }
            if let Some((kind, data)) = others.next() {
                exts.extend(kind.to_be_bytes());
                exts.extend(u16be(data.len()));
                exts.extend(data);
            }
        }
        body.extend(u16be(exts.len()));
        body.extend(exts);
    }
    let len = body.len();
    let mut msg = vec![1, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    msg.extend(body);
    msg
}

/// `msg` in TLS handshake records, a new record at each of `cuts` (offsets into
/// `msg`, ascending).
pub fn records(msg: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&msg.len())) {
        if to <= from {
            continue;
        }
        out.extend([22, 3, 1]);
        out.extend(u16be(to - from));
        out.extend(&msg[from..to]);
        from = to;
    }
    out
}
