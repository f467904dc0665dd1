//! The program's map entries and per-flow counts, byte for byte as `forward.bpf.c`
//! declares them (`struct flow_key`, `struct flow_value`, `struct flow_state`). Pure:
//! no I/O here but the shared words the caller passes in.

use std::net::{IpAddr, SocketAddr};

use crate::sys::shared::SharedWords;

/// A flow as the kernel path sees it: the client, the address it sent to, the flow
/// socket's own address and the backend's.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    client: SocketAddr,
    listener: SocketAddr,
    upstream: SocketAddr,
    backend: SocketAddr,
}

impl Path {
    /// The path of a flow from `client`, which sent to `listener`, through the flow
    /// socket bound to `upstream`, to `backend`.
    pub fn new(
        client: SocketAddr,
        listener: SocketAddr,
        upstream: SocketAddr,
        backend: SocketAddr,
    ) -> Path {
        Path {
            client,
            listener,
            upstream,
            backend,
        }
    }
}

/// `struct flow_key`: family (4 or 6, native order), source and destination ports (as
/// on the wire), source and destination addresses (as on the wire; IPv4 in the first
/// four bytes).
pub type Key = [u8; 40];

/// `struct flow_value`: slot and direction (native order), the new ports, what the
/// rewrite adds to the checksums (see [`csum`]) and the new addresses (as on the wire).
pub type Value = [u8; 48];

/// `flow_value.csum` for a datagram with key `k` rewritten by `v`: what the new
/// addresses add to the checksums in the low half (the IPv4 header's and the UDP
/// pseudo-header's), what the new ports add in the high half. Each is the folded
/// one's-complement sum of the new 16-bit words and the complements of the old ones,
/// in the byte order the program reads the packet's checksum fields in (native), as
/// `bpf_csum_diff` would give it on every datagram.
fn csum(k: &Key, v: &Value) -> u32 {
    let (old, new): (&[&[u8]], &[&[u8]]) = if k[0..4] == 4u32.to_ne_bytes() {
        (&[&k[8..12], &k[24..28]], &[&v[16..20], &v[32..36]])
    } else {
        (&[&k[8..40]], &[&v[16..48]])
    };
    let addr = ones_diff(old, new);
    let ports = ones_diff(&[&k[4..8]], &[&v[8..12]]);
    u32::from(addr) | u32::from(ports) << 16
}

/// The folded one's-complement sum that turns a checksum over the words of `old` into
/// one over those of `new` (each part of even length).
fn ones_diff(old: &[&[u8]], new: &[&[u8]]) -> u16 {
    // The 16-bit words of `parts`, each xor `flip` (0xffff: its complement), summed.
    let sum = |parts: &[&[u8]], flip: u16| -> u32 {
        parts
            .iter()
            .flat_map(|p| p.chunks_exact(2))
            .map(|c| u32::from(u16::from_ne_bytes([c[0], c[1]]) ^ flip))
            .sum()
    };
    fold(sum(new, 0) + sum(old, 0xffff))
}

/// `sum` folded to 16 bits with its carries added back (one's-complement addition).
pub(super) fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Words of one flow's `struct flow_state`.
pub const WORDS: usize = 8;
const IN_PACKETS: usize = 0;
const IN_BYTES: usize = 1;
const OUT_PACKETS: usize = 2;
const OUT_BYTES: usize = 3;
const LAST_NS: usize = 4;
const SENT: usize = 5;
const REPLIES: usize = 6;
/// `expect` (low half; the high half is padding).
const EXPECT: usize = 7;
/// Set in `IN_PACKETS` and `OUT_PACKETS` while ringway decides whether the flow ended
/// (the program's `PAUSED`): each count and its flag change together, atomically.
const PAUSED: u64 = 1 << 63;

/// An IPv4-mapped IPv6 address (what a dual-stack socket reports) as the IPv4 one the
/// packet carries.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

fn family(a: &SocketAddr) -> u32 {
    if a.is_ipv4() {
        4
    } else {
        6
    }
}

fn addr_bytes(a: &SocketAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a.ip() {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// The key of a datagram from `src` to `dst`.
fn key(src: SocketAddr, dst: SocketAddr) -> Key {
    let mut k = [0u8; 40];
    k[0..4].copy_from_slice(&family(&src).to_ne_bytes());
    k[4..6].copy_from_slice(&src.port().to_be_bytes());
    k[6..8].copy_from_slice(&dst.port().to_be_bytes());
    k[8..24].copy_from_slice(&addr_bytes(&src));
    k[24..40].copy_from_slice(&addr_bytes(&dst));
    k
}

/// The value that rewrites a datagram to `src` -> `dst`; `reply`: it goes to the client.
fn value(src: SocketAddr, dst: SocketAddr, reply: bool) -> Value {
    let mut v = [0u8; 48];
    v[4..8].copy_from_slice(&u32::from(reply).to_ne_bytes());
    v[8..10].copy_from_slice(&src.port().to_be_bytes());
    v[10..12].copy_from_slice(&dst.port().to_be_bytes());
    v[16..32].copy_from_slice(&addr_bytes(&src));
    v[32..48].copy_from_slice(&addr_bytes(&dst));
    v
}

/// `v` for the flow in `slot`.
pub(super) fn with_slot(mut v: Value, slot: u32) -> Value {
    v[0..4].copy_from_slice(&slot.to_ne_bytes());
    v
}

/// A flow's two entries (from the client, from the backend): `None` when the program
/// cannot forward it (the client and the backend are of different families, so the
/// header would change size; an address is unspecified).
pub(super) fn entries(p: &Path) -> Option<([Key; 2], [Value; 2])> {
    let [client, listener, upstream, backend] =
        [p.client, p.listener, p.upstream, p.backend].map(canonical);
    let families = [client, listener, upstream, backend].map(|a| family(&a));
    if families.iter().any(|f| *f != families[0])
        || [client, listener, upstream, backend]
            .iter()
            .any(|a| a.ip().is_unspecified() || a.port() == 0)
    {
        return None;
    }
    let keys = [key(client, listener), key(backend, upstream)];
    let mut values = [
        value(upstream, backend, false),
        value(listener, client, true),
    ];
    for (k, v) in keys.iter().zip(values.iter_mut()) {
        let c = csum(k, v);
        v[12..16].copy_from_slice(&c.to_ne_bytes());
    }
    Some((keys, values))
}

/// Starts slot `slot` afresh for a flow that has `sent` datagrams and `replies` replies
/// so far, and expects `expect` replies per datagram.
pub(super) fn reset(words: &SharedWords, slot: u32, (sent, replies, expect): (u64, u64, u64)) {
    let base = slot as usize * WORDS;
    for w in [IN_PACKETS, IN_BYTES, OUT_PACKETS, OUT_BYTES, LAST_NS] {
        words.store(base + w, 0);
    }
    words.store(base + SENT, sent);
    words.store(base + REPLIES, replies);
    words.store(base + EXPECT, expect);
}

/// Adds datagrams ringway forwarded itself to the counts the program compares.
pub(super) fn add_own(words: &SharedWords, slot: u32, sent: u64, replies: u64) {
    let base = slot as usize * WORDS;
    words.add(base + SENT, sent);
    words.add(base + REPLIES, replies);
}

/// Stops the kernel forwarding the flow in `slot` (see `PAUSED` in the program): the
/// datagrams it counted each way are exactly those it forwarded, and from the return
/// on every other one goes up to ringway.
pub(super) fn pause(words: &SharedWords, slot: u32) {
    for w in [IN_PACKETS, OUT_PACKETS] {
        words.set_bits(slot as usize * WORDS + w, PAUSED);
    }
}

/// Lets the kernel forward the flow in `slot` again.
pub(super) fn resume(words: &SharedWords, slot: u32) {
    for w in [IN_PACKETS, OUT_PACKETS] {
        words.clear_bits(slot as usize * WORDS + w, PAUSED);
    }
}

/// Takes back `n` datagrams counted as sent that did not go.
pub(super) fn not_sent(words: &SharedWords, slot: u32, n: u64) {
    words.sub(slot as usize * WORDS + SENT, n);
}

/// What the kernel forwarded for a flow since the last look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    sent: (u64, u64),
    replies: (u64, u64),
    last_ns: u64,
}

impl Counts {
    /// Datagrams and payload bytes from the client.
    pub fn sent(&self) -> (u64, u64) {
        self.sent
    }

    /// Datagrams and payload bytes back to it.
    pub fn replies(&self) -> (u64, u64) {
        self.replies
    }

    /// `CLOCK_MONOTONIC` of its last datagram through the kernel (0: none yet).
    pub fn last_ns(&self) -> u64 {
        self.last_ns
    }
}

/// A flow in the kernel's hands: its slot, its keys and the counts already taken.
#[derive(Debug)]
pub struct Installed {
    slot: u32,
    keys: [Key; 2],
    seen: [u64; 4],
}

impl Installed {
    pub(super) fn new(slot: u32, keys: [Key; 2]) -> Installed {
        Installed {
            slot,
            keys,
            seen: [0; 4],
        }
    }

    pub(super) fn slot(&self) -> u32 {
        self.slot
    }

    pub(super) fn keys(&self) -> &[Key; 2] {
        &self.keys
    }

    pub(super) fn answered(&self, words: &SharedWords) -> bool {
        words.load(self.slot as usize * WORDS + OUT_PACKETS) & !PAUSED > 0
    }

    pub(super) fn take(&mut self, words: &SharedWords) -> Counts {
        let base = self.slot as usize * WORDS;
        let mut now = [IN_PACKETS, IN_BYTES, OUT_PACKETS, OUT_BYTES].map(|w| words.load(base + w));
        now[0] &= !PAUSED;
        now[2] &= !PAUSED;
        let d: Vec<u64> = now
            .iter()
            .zip(self.seen)
            .map(|(n, s)| n.saturating_sub(s))
            .collect();
        self.seen = now;
        Counts {
            sent: (d[0], d[1]),
            replies: (d[2], d[3]),
            last_ns: words.load(base + LAST_NS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn path(c: &str, l: &str, u: &str, b: &str) -> Path {
        Path::new(a(c), a(l), a(u), a(b))
    }

    /// The bytes the program reads off an IPv4 datagram 10.0.0.1:5000 -> 10.0.0.2:53.
    #[test]
    fn an_ipv4_key_is_what_the_program_builds_off_the_wire() {
        let k = key(a("10.0.0.1:5000"), a("10.0.0.2:53"));
        let mut want = [0u8; 40];
        want[0..4].copy_from_slice(&4u32.to_ne_bytes());
        want[4..8].copy_from_slice(&[0x13, 0x88, 0x00, 0x35]);
        want[8..12].copy_from_slice(&[10, 0, 0, 1]);
        want[24..28].copy_from_slice(&[10, 0, 0, 2]);
        assert_eq!(k, want);
    }

    /// Both directions: a client datagram becomes flow socket -> backend, a reply
    /// becomes listener -> client; a mapped address is its IPv4 one.
    #[test]
    fn a_flow_has_a_key_each_way_and_rewrites_to_what_userspace_sends() {
        let p = path(
            "[::ffff:10.0.0.1]:5000",
            "10.0.0.2:53",
            "10.0.0.2:40000",
            "10.0.0.9:5353",
        );
        let (keys, values) = entries(&p).unwrap();
        assert_eq!(keys[0], key(a("10.0.0.1:5000"), a("10.0.0.2:53")));
        assert_eq!(keys[1], key(a("10.0.0.9:5353"), a("10.0.0.2:40000")));
        let no_csum = |mut v: Value| {
            v[12..16].fill(0);
            v
        };
        assert_eq!(
            no_csum(values[0]),
            value(a("10.0.0.2:40000"), a("10.0.0.9:5353"), false)
        );
        assert_eq!(
            no_csum(values[1]),
            value(a("10.0.0.2:53"), a("10.0.0.1:5000"), true)
        );
        assert_eq!(&values[1][4..8], &1u32.to_ne_bytes());
        assert_eq!(&with_slot(values[1], 7)[0..4], &7u32.to_ne_bytes());
    }

    /// The RFC 768 checksum of a UDP datagram `src` -> `dst` with `payload`, as on the
    /// wire.
    fn udp_check(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> [u8; 2] {
        let mut b = Vec::new();
        for x in [src, dst] {
            match x.ip() {
                IpAddr::V4(v4) => b.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => b.extend_from_slice(&v6.octets()),
            }
        }
        let len = 8 + payload.len() as u16;
        b.extend_from_slice(&[0, 17]);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&src.port().to_be_bytes());
        b.extend_from_slice(&dst.port().to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(payload);
        if b.len() % 2 == 1 {
            b.push(0);
        }
        let sum: u32 = b
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        (!fold(sum)).to_be_bytes()
    }

    /// What the program does with a checksum field (read natively) and a difference.
    fn apply(check: [u8; 2], diff: u32) -> [u8; 2] {
        (!fold(u32::from(!u16::from_ne_bytes(check)) + diff)).to_ne_bytes()
    }

    fn ip(v6: bool, bits: u128) -> IpAddr {
        if v6 {
            IpAddr::V6(bits.into())
        } else {
            IpAddr::V4((bits as u32).into())
        }
    }

    proptest::proptest! {
        /// The differences ringway works out once per flow turn a datagram's
        /// checksum into the one of the rewritten datagram, both ways, as the
        /// program's per-datagram bpf_csum_diff did: any addresses, ports, payload.
        #[test]
        fn the_csum_a_flow_carries_rewrites_any_datagram_right(
            v6: bool,
            addrs: [u128; 4],
            ports: [u16; 4],
            payload: Vec<u8>,
        ) {
            let [c, l, u, b] = [0, 1, 2, 3]
                .map(|i| SocketAddr::new(ip(v6, addrs[i]), ports[i].max(1)));
            proptest::prop_assume!([c, l, u, b].iter().all(|a| !a.ip().is_unspecified()));
            let (_, values) = entries(&Path::new(c, l, u, b)).unwrap();
            for ((from, to), (new_from, new_to), v) in
                [((c, l), (u, b), values[0]), ((b, u), (l, c), values[1])]
            {
                let csum = u32::from_ne_bytes(v[12..16].try_into().unwrap());
                let before = udp_check(from, to, &payload);
                let after = apply(before, (csum & 0xffff) + (csum >> 16));
                let want = udp_check(new_from, new_to, &payload);
                // 0 and 0xffff both say "sum zero" in one's complement.
                let norm = |x: [u8; 2]| if x == [0, 0] { [0xff, 0xff] } else { x };
                proptest::prop_assert_eq!(norm(after), norm(want));
            }
        }
    }

    #[test]
    fn an_ipv6_flow_keeps_its_addresses_whole() {
        let p = path("[2001:db8::1]:1", "[2001:db8::2]:2", "[::1]:3", "[::1]:4");
        let (keys, _) = entries(&p).unwrap();
        assert_eq!(&keys[0][0..4], &6u32.to_ne_bytes());
        let ip: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(&keys[0][8..24], &ip.octets());
    }

    /// The program rewrites in place: a header that would change size stays in
    /// userspace, as does a flow whose addresses are not all known.
    #[test]
    fn mixed_families_and_unknown_addresses_stay_in_userspace() {
        for p in [
            path("[2001:db8::1]:1", "[::]:53", "10.0.0.2:3", "10.0.0.9:4"),
            path(
                "[2001:db8::1]:1",
                "[2001:db8::2]:53",
                "10.0.0.2:3",
                "10.0.0.9:4",
            ),
            path("10.0.0.1:1", "0.0.0.0:53", "10.0.0.2:3", "10.0.0.9:4"),
            path("10.0.0.1:1", "10.0.0.2:53", "10.0.0.2:0", "10.0.0.9:4"),
        ] {
            assert!(entries(&p).is_none(), "{p:?}");
        }
    }
}
