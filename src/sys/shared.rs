//! A memory-mapped BPF array (`BPF_F_MMAPABLE`): the kernel and this process read and
//! write the same words, with no system call per access.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared mapping of `len` 64-bit words. Every access is atomic and sequentially
/// consistent (the kernel updates the words concurrently, with atomic adds, which are
/// full barriers, or plain stores of whole words).
#[derive(Debug)]
pub struct SharedWords {
    ptr: *mut AtomicU64,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics; it lives
// until drop, whichever thread holds it.
unsafe impl Send for SharedWords {}
// SAFETY: as above: every access is an atomic operation on a word.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// Maps the first `len` words of the array map behind `fd` (read and write).
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedWords> {
        let page = 4096;
        let bytes = (len * 8).div_ceil(page).max(1) * page;
        // SAFETY: a fresh shared mapping of a BPF array descriptor; the kernel checks
        // that the map is mmapable and at least `bytes` long (else EINVAL). No address
        // hint, so nothing of this process is replaced.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedWords {
            ptr: ptr.cast(),
            len,
            bytes,
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "word {i} of {}", self.len);
        // SAFETY: `i` is within the mapping (checked above), which is page-aligned and
        // so 8-byte aligned, and lives as long as `self`.
        unsafe { &*self.ptr.add(i) }
    }

    /// Word `i`.
    pub fn load(&self, i: usize) -> u64 {
        self.word(i).load(Ordering::SeqCst)
    }

    /// Sets word `i`.
    pub fn store(&self, i: usize, v: u64) {
        self.word(i).store(v, Ordering::SeqCst);
    }

    /// Adds to word `i`.
    pub fn add(&self, i: usize, v: u64) {
        self.word(i).fetch_add(v, Ordering::SeqCst);
    }

    /// Subtracts from word `i`.
    pub fn sub(&self, i: usize, v: u64) {
        self.word(i).fetch_sub(v, Ordering::SeqCst);
    }

    /// Sets the bits `bits` in word `i`.
    pub fn set_bits(&self, i: usize, bits: u64) {
        self.word(i).fetch_or(bits, Ordering::SeqCst);
    }

    /// Clears the bits `bits` in word `i`.
    pub fn clear_bits(&self, i: usize, bits: u64) {
        self.word(i).fetch_and(!bits, Ordering::SeqCst);
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`bytes` are exactly the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.bytes);
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
