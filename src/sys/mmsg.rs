//! Batched UDP I/O: `recvmmsg(2)` and `sendmmsg(2)` over buffers allocated once.
//!
//! A [`Batch`] holds `capacity` slots of `slot` bytes, each with a peer address. Receiving
//! fills slots from the front; sending sends the filled slots. Nothing is allocated per
//! datagram: the header arrays are rebuilt in place before each call (their pointers
//! point into the batch itself, so they are only valid during the call).
//!
//! A batch made with [`Batch::with_pktinfo`] also carries one local address per slot:
//! on receive, the datagram's destination (from `IP_PKTINFO`/`IPV6_PKTINFO` control
//! messages, which the socket must have been asked for); on send, the source address
//! to send from. That is how a socket bound to a wildcard address replies from the
//! address each client reached.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;

/// Control-message bytes per slot: one `in6_pktinfo` message (the larger) fits.
const CTRL_WORDS: usize = 8;

/// Preallocated datagram slots with addresses.
pub struct Batch {
    slot: usize,
    data: Box<[u8]>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Headers for sending a subset of the slots ([`Batch::send_slots`]).
    picked: Vec<libc::mmsghdr>,
    count: usize,
    /// Control buffers, one per slot (u64 words: aligned for `cmsghdr`); empty unless
    /// made with [`Batch::with_pktinfo`].
    ctrl: Vec<[u64; CTRL_WORDS]>,
    /// Local address per slot (see the module docs).
    locals: Vec<Option<IpAddr>>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("capacity", &self.lens.len())
            .field("slot", &self.slot)
            .field("count", &self.count)
            .finish()
    }
}

// SAFETY: the raw pointers inside `iovs` and `hdrs` point only into this batch's own
// buffers and are rewritten before every system call; a `Batch` moved to another thread
// takes its buffers with it.
unsafe impl Send for Batch {}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
    unsafe { mem::zeroed() }
}

fn zeroed_hdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data (integers and null pointers when zeroed).
    unsafe { mem::zeroed() }
}

impl Batch {
    /// `capacity` datagrams of up to `slot` bytes each.
    pub fn new(capacity: usize, slot: usize) -> Batch {
        Batch {
            slot,
            data: vec![0u8; capacity * slot].into_boxed_slice(),
            lens: vec![0; capacity],
            addrs: vec![zeroed_storage(); capacity],
            addr_lens: vec![0; capacity],
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0
                };
                capacity
            ],
            hdrs: vec![zeroed_hdr(); capacity],
            picked: vec![zeroed_hdr(); capacity],
            count: 0,
            ctrl: Vec::new(),
            locals: vec![None; capacity],
        }
    }

    /// Like [`Batch::new`], with a local address per slot (see the module docs).
    pub fn with_pktinfo(capacity: usize, slot: usize) -> Batch {
        let mut b = Batch::new(capacity, slot);
        b.ctrl = vec![[0u64; CTRL_WORDS]; capacity];
        b
    }

    /// The destination address of received datagram `i`, when the batch and the socket
    /// carry it.
    pub fn local(&self, i: usize) -> Option<IpAddr> {
        self.locals[i]
    }

    /// Slots in the batch.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Filled slots.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no slot is filled.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True when every slot is filled.
    pub fn is_full(&self) -> bool {
        self.count == self.lens.len()
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Datagram `i` and its peer address (`None` for an address family other than IPv4
    /// or IPv6, which a UDP socket of ours never reports).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * self.slot;
        let bytes = &self.data[start..start + self.lens[i]];
        (bytes, from_storage(&self.addrs[i]))
    }

    /// The next free slot, to receive a datagram into; [`Batch::commit`] then records it.
    /// `None` when the batch is full.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.count * self.slot;
        Some(&mut self.data[start..start + self.slot])
    }

    /// Records the datagram just written into [`Batch::next_slot`]: `len` bytes for `to`.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        self.commit_from(len, to, None);
    }

    /// Like [`Batch::commit`], sent from local address `from` when given (a batch made
    /// with [`Batch::with_pktinfo`], on a socket bound to a wildcard address).
    pub fn commit_from(&mut self, len: usize, to: SocketAddr, from: Option<IpAddr>) {
        let i = self.count;
        debug_assert!(i < self.lens.len() && len <= self.slot);
        debug_assert!(from.is_none() || !self.ctrl.is_empty());
        self.lens[i] = len;
        self.addr_lens[i] = to_storage(to, &mut self.addrs[i]);
        self.locals[i] = from;
        self.count += 1;
    }

    fn prepare(&mut self, n: usize, receiving: bool) {
        let base = self.data.as_mut_ptr();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                // i < capacity, so the offset stays inside `data`.
                iov_base: base.wrapping_add(i * self.slot).cast(),
                iov_len: if receiving { self.slot } else { self.lens[i] },
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = if receiving {
                mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
            } else {
                self.addr_lens[i]
            };
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
            if let Some(ctrl) = self.ctrl.get_mut(i) {
                let len = if receiving {
                    mem::size_of_val(ctrl)
                } else {
                    match self.locals[i] {
                        Some(ip) => write_pktinfo(ctrl, ip),
                        None => 0,
                    }
                };
                if len > 0 {
                    h.msg_hdr.msg_control = ctrl.as_mut_ptr().cast();
                    h.msg_hdr.msg_controllen = len as _;
                }
            }
        }
    }

    /// Receives up to `capacity` datagrams without blocking, replacing the batch's
    /// contents. Datagrams longer than the slot are truncated (size slots for the largest
    /// datagram: 65,535 bytes).
    pub fn recv_from(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let cap = self.lens.len();
        self.prepare(cap, true);
        // SAFETY: `hdrs[..cap]` are initialised headers whose name, iov and buffer
        // pointers point into this batch's own live allocations, sized as declared; the
        // kernel writes only within them and keeps no pointer after returning.
        let n = syscall!(recvmmsg(
            fd.as_raw_fd(),
            self.hdrs.as_mut_ptr(),
            cap as libc::c_uint,
            libc::MSG_DONTWAIT as _, // c_int on glibc, c_uint on musl
            ptr::null_mut()
        ))? as usize;
        for i in 0..n {
            self.lens[i] = self.hdrs[i].msg_len as usize;
            self.locals[i] = if self.ctrl.is_empty() {
                None
            } else {
                read_pktinfo(&self.hdrs[i].msg_hdr)
            };
        }
        self.count = n;
        Ok(n)
    }

    /// Receives up to `max` datagrams from the connected socket `fd` into the free
    /// slots without blocking, each queued for `to` (sent from `from`, as in
    /// [`Batch::commit_from`]): one `recvmmsg` for what would be several `recv`s.
    /// Returns how many; fewer than asked means the socket had no more.
    pub fn recv_append(
        &mut self,
        fd: BorrowedFd<'_>,
        max: usize,
        to: SocketAddr,
        from: Option<IpAddr>,
    ) -> io::Result<usize> {
        let start = self.count;
        let n = max.min(self.lens.len() - start);
        if n == 0 {
            return Ok(0);
        }
        let base = self.data.as_mut_ptr();
        for i in start..start + n {
            self.iovs[i] = libc::iovec {
                // i < capacity, so the offset stays inside `data`.
                iov_base: base.wrapping_add(i * self.slot).cast(),
                iov_len: self.slot,
            };
            point_connected(&mut self.hdrs[i], &mut self.iovs[i]);
        }
        // SAFETY: `hdrs[start..start + n]` are initialised headers whose iov pointers
        // point into this batch's own live buffer, `slot` bytes each, inside `data`
        // (start + n <= capacity); no name or control buffer is passed. The kernel
        // writes only within them and keeps no pointer after returning.
        let got = syscall!(recvmmsg(
            fd.as_raw_fd(),
            self.hdrs.as_mut_ptr().wrapping_add(start),
            n as libc::c_uint,
            libc::MSG_DONTWAIT as _, // c_int on glibc, c_uint on musl
            ptr::null_mut()
        ))? as usize;
        for i in start..start + got {
            let len = self.hdrs[i].msg_len as usize;
            self.count = i;
            self.commit_from(len, to, from);
        }
        Ok(got)
    }

    /// Sends the filled slots listed in `slots` (in that order, each at most once, all
    /// below [`Batch::len`]) on the connected socket `fd` without blocking, with one
    /// `sendmmsg`; returns how many the kernel took (it stops at the first it cannot
    /// take).
    pub fn send_slots(&mut self, fd: BorrowedFd<'_>, slots: &[usize]) -> io::Result<usize> {
        let n = slots.len().min(self.picked.len());
        if n == 0 {
            return Ok(0);
        }
        let base = self.data.as_mut_ptr();
        for (j, &i) in slots[..n].iter().enumerate() {
            assert!(i < self.count, "slot {i} is not filled");
            self.iovs[i] = libc::iovec {
                // i < count <= capacity, so the offset stays inside `data`.
                iov_base: base.wrapping_add(i * self.slot).cast(),
                iov_len: self.lens[i],
            };
            point_connected(&mut self.picked[j], &mut self.iovs[i]);
        }
        // SAFETY: `picked[..n]` are initialised headers whose iov pointers point at
        // iovecs of this batch describing filled slots inside `data` (checked above);
        // no name or control buffer. The kernel only reads them during the call.
        let sent = syscall!(sendmmsg(
            fd.as_raw_fd(),
            self.picked.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT as _ // c_int on glibc, c_uint on musl
        ))?;
        Ok(sent as usize)
    }

    /// Sends the filled slots `from..len()` without blocking; returns how many the
    /// kernel took (it stops at the first it cannot take).
    pub fn send_to(&mut self, fd: BorrowedFd<'_>, from: usize) -> io::Result<usize> {
        let n = self.count;
        if from >= n {
            return Ok(0);
        }
        self.prepare(n, false);
        // SAFETY: `hdrs[from..n]` are initialised headers pointing into this batch's own
        // live buffers with the lengths recorded by `commit`; the kernel only reads them.
        let sent = syscall!(sendmmsg(
            fd.as_raw_fd(),
            self.hdrs.as_mut_ptr().wrapping_add(from),
            (n - from) as libc::c_uint,
            libc::MSG_DONTWAIT as _ // c_int on glibc, c_uint on musl
        ))?;
        Ok(sent as usize)
    }
}

/// Points `h` at the one buffer `iov` describes, with no peer address and no control
/// messages: a datagram on a connected socket.
fn point_connected(h: &mut libc::mmsghdr, iov: &mut libc::iovec) {
    h.msg_hdr.msg_name = ptr::null_mut();
    h.msg_hdr.msg_namelen = 0;
    h.msg_hdr.msg_iov = iov;
    h.msg_hdr.msg_iovlen = 1;
    h.msg_hdr.msg_control = ptr::null_mut();
    h.msg_hdr.msg_controllen = 0;
    h.msg_hdr.msg_flags = 0;
    h.msg_len = 0;
}

/// Writes one `IP_PKTINFO` or `IPV6_PKTINFO` control message asking to send from `ip`
/// into `buf`; returns its length.
fn write_pktinfo(buf: &mut [u64; CTRL_WORDS], ip: IpAddr) -> usize {
    *buf = [0; CTRL_WORDS];
    let (level, kind, data_len) = match ip {
        IpAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            mem::size_of::<libc::in_pktinfo>(),
        ),
        IpAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            mem::size_of::<libc::in6_pktinfo>(),
        ),
    };
    // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes. The header and data written below
    // lie at the start of `buf`, which is 8-byte aligned (u64 words, as cmsghdr needs)
    // and larger than CMSG_SPACE of either pktinfo struct (checked by the assert); the
    // data is written unaligned-safe.
    unsafe {
        let space = libc::CMSG_SPACE(data_len as u32) as usize;
        assert!(space <= mem::size_of_val(buf), "control buffer too small");
        let c = buf.as_mut_ptr().cast::<libc::cmsghdr>();
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = libc::CMSG_LEN(data_len as u32) as _;
        let data = libc::CMSG_DATA(c);
        match ip {
            IpAddr::V4(v4) => ptr::write_unaligned(
                data.cast::<libc::in_pktinfo>(),
                libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(v4).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                },
            ),
            IpAddr::V6(v6) => ptr::write_unaligned(
                data.cast::<libc::in6_pktinfo>(),
                libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: v6.octets(),
                    },
                    ipi6_ifindex: 0,
                },
            ),
        }
        space
    }
}

/// The destination address in a received message's `IP_PKTINFO`/`IPV6_PKTINFO`.
fn read_pktinfo(h: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: `h` was filled by recvmmsg: msg_control points at this slot's buffer and
    // msg_controllen says how much of it the kernel wrote (0 leaves CMSG_FIRSTHDR null).
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within that length; each message's data is read
    // unaligned and only for the matching level/type, whose payload type is fixed.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let p = ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let p = ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    return Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
                }
                _ => c = libc::CMSG_NXTHDR(h, c),
            }
        }
    }
    None
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; storage is larger
            // and suitably aligned for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn to_storage(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    *out = zeroed_storage();
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: storage is larger than and aligned for sockaddr_in; we write a
            // complete value into it.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// The socket learns each datagram's destination and replies from it, over IPv4
    /// and IPv6 (on loopback; the wildcard case runs in a network namespace in
    /// tests/udp.rs).
    #[test]
    fn pktinfo_gives_the_destination_and_sets_the_source() {
        for (bind, ipv6) in [("127.0.0.1:0", false), ("[::1]:0", true)] {
            let rx = UdpSocket::bind(bind).unwrap();
            crate::sys::sockopt::set_recv_pktinfo(rx.as_fd(), ipv6).unwrap();
            rx.set_nonblocking(true).unwrap();
            let to = rx.local_addr().unwrap();
            let client = UdpSocket::bind(SocketAddr::new(to.ip(), 0)).unwrap();
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            client.send_to(b"ping", to).unwrap();
            let mut inb = Batch::with_pktinfo(4, 2048);
            let n = loop {
                match inb.recv_from(rx.as_fd()) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(2))
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(n, 1);
            assert_eq!(inb.local(0), Some(to.ip()), "{bind}");
            let (_, from) = inb.get(0);
            let mut out = Batch::with_pktinfo(4, 2048);
            out.next_slot().unwrap()[..4].copy_from_slice(b"pong");
            out.commit_from(4, from.unwrap(), inb.local(0));
            assert_eq!(out.send_to(rx.as_fd(), 0).unwrap(), 1);
            let mut buf = [0u8; 16];
            let (n, replied_from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"pong");
            assert_eq!(replied_from, to);
        }
    }

    #[test]
    fn recv_append_queues_replies_for_the_client_after_those_already_there() {
        use std::os::fd::AsFd;
        let backend = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let flow = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        flow.connect(backend.local_addr().unwrap()).unwrap();
        let client: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut b = Batch::new(4, 64);
        b.next_slot().unwrap()[..3].copy_from_slice(b"old");
        b.commit(3, client);
        for m in [&b"one"[..], b"two", b"three", b"four"] {
            backend.send_to(m, flow.local_addr().unwrap()).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Room for three more: three taken, the fourth stays queued.
        assert_eq!(b.recv_append(flow.as_fd(), 10, client, None).unwrap(), 3);
        assert_eq!(b.len(), 4);
        let got: Vec<_> = (0..4).map(|i| b.get(i)).collect();
        assert_eq!(got[0], (&b"old"[..], Some(client)));
        assert_eq!(got[1], (&b"one"[..], Some(client)));
        assert_eq!(got[3], (&b"three"[..], Some(client)));
        b.clear();
        assert_eq!(b.recv_append(flow.as_fd(), 10, client, None).unwrap(), 1);
        assert_eq!(b.get(0).0, b"four");
        let e = b.recv_append(flow.as_fd(), 10, client, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn send_slots_sends_the_picked_datagrams_in_order() {
        use std::os::fd::AsFd;
        let backend = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let flow = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        flow.connect(backend.local_addr().unwrap()).unwrap();
        let client: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut b = Batch::new(4, 64);
        for m in [&b"a"[..], b"bb", b"ccc", b"dddd"] {
            let slot = b.next_slot().unwrap();
            slot[..m.len()].copy_from_slice(m);
            b.commit(m.len(), client);
        }
        assert_eq!(b.send_slots(flow.as_fd(), &[3, 1]).unwrap(), 2);
        let mut buf = [0u8; 16];
        let n = backend.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"dddd");
        let n = backend.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"bb");
    }

    #[test]
    fn address_round_trip() {
        for a in ["192.0.2.7:53", "[2001:db8::1]:4433"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut s = zeroed_storage();
            to_storage(a, &mut s);
            assert_eq!(from_storage(&s), Some(a));
        }
    }

    #[test]
    fn send_and_receive_a_batch_including_empty_and_large_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let sizes = [0usize, 1, 512, 1472, 9000, 65507];
        let mut out = Batch::new(8, 65535);
        for (i, &n) in sizes.iter().enumerate() {
            let slot = out.next_slot().unwrap();
            slot[..n].fill(i as u8 + 1);
            out.commit(n, to);
        }
        assert_eq!(out.send_to(tx.as_fd(), 0).unwrap(), sizes.len());
        let mut inb = Batch::new(8, 65535);
        let mut got = Vec::new();
        while got.len() < sizes.len() {
            match inb.recv_from(rx.as_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from) = inb.get(i);
                        assert_eq!(from, Some(tx.local_addr().unwrap()));
                        got.push(d.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        for (i, (&n, d)) in sizes.iter().zip(&got).enumerate() {
            assert_eq!(d.len(), n);
            assert!(d.iter().all(|&b| b == i as u8 + 1));
        }
        // Nothing left: WouldBlock, not a hang.
        assert_eq!(
            inb.recv_from(rx.as_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
