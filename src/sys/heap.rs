//! Giving freed heap memory back to the system.
//!
//! Rendering `/metrics` or `/status` for thousands of backends allocates tens of
//! megabytes for a moment; glibc keeps what is freed in its arenas (one per thread of
//! the blocking pool that rendered), so without a trim the process's resident size
//! stays at its high-water mark. Other C libraries (musl) give large blocks back by
//! themselves: there this does nothing.

/// Returns free memory at the top of each heap and whole free pages inside them to the
/// system (glibc's `malloc_trim(0)`).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a plain integer, touches only the allocator's own free
    // lists under its own locks, and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
