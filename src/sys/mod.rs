//! The only module allowed to use `unsafe`: thin wrappers over Linux system calls.
//!
//! Every function returns `io::Result`, handles no policy and never logs or counts:
//! the data plane decides what `WouldBlock`, `Ok(0)` or an error means. Every `unsafe`
//! block carries a `SAFETY:` comment stating why the call is sound.

#![allow(unsafe_code)]

/// Runs a libc call that returns -1 on error, turning that into `io::Error`.
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        // SAFETY: the caller upholds the system call's contract; each call site states
        // why its arguments are valid.
        let res = unsafe { libc::$fn($($arg, )*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub mod fdpass;
pub mod heap;
pub mod ifaces;
pub mod mmsg;
pub mod pipe;
pub mod rlimit;
pub mod shared;
pub mod signal;
pub mod sockopt;
pub mod splice;

pub use pipe::Pipe;

/// Whether `e` says this process or host ran short of something (descriptors, buffer
/// space, memory, local ports) rather than anything about the peer: such an error is
/// no evidence about a backend.
pub fn is_resource_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Whether `e` is the process (EMFILE) or system (ENFILE) running out of descriptors.
pub fn is_fd_limit(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
