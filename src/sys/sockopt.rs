//! Socket options that socket2 does not cover.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Sets `SO_RCVBUFFORCE`: a receive buffer of `bytes` even above `net.core.rmem_max`
/// (needs CAP_NET_ADMIN; callers fall back to `SO_RCVBUF` on `EPERM`).
pub fn set_recv_buffer_force(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let val = bytes.min(i32::MAX as usize) as libc::c_int;
    set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, val)
}

/// Sets an integer socket option.
fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a live socket borrowed for the call; the option value is a c_int
    // that lives on the stack for the duration of the call and whose size we pass.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&val as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as libc::socklen_t
    ))?;
    Ok(())
}

/// Asks the kernel to report each received datagram's destination address
/// (`IP_PKTINFO` on an IPv4 socket, `IPV6_RECVPKTINFO` on an IPv6 one), which a socket
/// bound to a wildcard address needs to reply from the address the client reached.
pub fn set_recv_pktinfo(fd: BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    set_int(fd, level, name, 1)
}

/// Attaches to `fd`'s `SO_REUSEPORT` group a classic BPF program that hands each new
/// connection (or datagram) to the group's socket number `cpu % sockets`, where `cpu`
/// is the CPU that received it: with worker `i` pinned to CPU `i` and its socket `i`th in
/// the group, the connection stays on the core whose caches already hold it.
pub fn attach_reuseport_cpu(fd: BorrowedFd<'_>, sockets: u32) -> io::Result<()> {
    // A = the current CPU (an ancillary load); A %= sockets; return A.
    const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
    const SKF_AD_CPU: u32 = 36;
    let mut program = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: SKF_AD_OFF + SKF_AD_CPU,
        },
        libc::sock_filter {
            code: (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: sockets.max(1),
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_A) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fd` is a live socket borrowed for the call; `prog` points at `program`,
    // three instructions on this stack frame that outlive the call (the kernel copies
    // them), and we pass the size of the `sock_fprog` itself.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_ATTACH_REUSEPORT_CBPF,
        (&prog as *const libc::sock_fprog).cast(),
        std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t
    ))?;
    Ok(())
}

/// What `TCP_INFO` says about a TCP socket's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpProgress {
    /// Sequence space the peer has acknowledged: data bytes, plus one for a FIN, and
    /// on this kernel one for the SYN of a connection this side opened (not of an
    /// accepted one). Compare differences, not absolute values.
    pub acked: u64,
    /// Milliseconds since data was last received.
    pub since_data_received: u32,
}

/// Reads `TCP_INFO` from `fd`.
pub fn tcp_progress(fd: BorrowedFd<'_>) -> io::Result<TcpProgress> {
    // SAFETY: tcp_info is plain old data (integers only): all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is a live socket borrowed for the call; `info` and `len` live on this
    // stack frame, `len` holds `info`'s size and the kernel writes at most that much.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        (&mut info as *mut libc::tcp_info).cast(),
        &mut len
    ))?;
    Ok(TcpProgress {
        acked: info.tcpi_bytes_acked,
        since_data_received: info.tcpi_last_data_recv,
    })
}

/// `SIOCOUTQ`: bytes in `fd`'s send queue not yet acknowledged by the peer.
pub fn unacked_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is a live socket borrowed for the call; SIOCOUTQ writes one c_int,
    // which `n` is, on this stack frame.
    syscall!(ioctl(
        fd.as_raw_fd(),
        libc::TIOCOUTQ,
        &mut n as *mut libc::c_int
    ))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Sets `SO_RCVLOWAT`: the kernel signals data ready only once `bytes` are queued
/// (setting it also signals at once if that many already are).
pub fn set_recv_lowat(fd: BorrowedFd<'_>, bytes: i32) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, bytes)
}

/// Sets `TCP_DEFER_ACCEPT` on a listening socket: a connection is handed to `accept`
/// only once its first data has arrived, or after about `seconds` (0: off).
pub fn set_defer_accept(fd: BorrowedFd<'_>, seconds: i32) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_cpu_program_is_accepted_by_the_kernel() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        s.listen(8).unwrap();
        attach_reuseport_cpu(s.as_fd(), 2).unwrap();
    }

    #[test]
    fn acked_plus_unacked_grows_by_exactly_what_is_sent() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let base = tcp_progress(c.as_fd()).unwrap().acked;
        assert!(base <= 1, "{base}");
        c.write_all(&[7; 1000]).unwrap();
        let mut buf = [0; 1000];
        s.read_exact(&mut buf).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let (p, q) = (
                tcp_progress(c.as_fd()).unwrap(),
                unacked_bytes(c.as_fd()).unwrap(),
            );
            if p.acked + q == base + 1000 && q == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{p:?} {q}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        set_recv_lowat(s.as_fd(), 1).unwrap();
    }

    #[test]
    fn forced_buffer_is_at_least_what_was_asked_or_eperm() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        match set_recv_buffer_force(s.as_fd(), 4 << 20) {
            // The kernel doubles the value for bookkeeping.
            Ok(()) => assert!(socket2::SockRef::from(&s).recv_buffer_size().unwrap() >= 4 << 20),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM)),
        }
    }
}
