//! A worker's pool of splice pipes.
//!
//! A session takes a pipe only while one of its directions moves data and gives it back
//! when that direction goes idle, so thousands of idle connections hold no pipes (each
//! costs two descriptors and up to `PIPE_SIZE` of kernel memory). Only empty pipes come
//! back: a pipe with bytes in it is closed instead.

use std::io;

use crate::sys::Pipe;

/// Capacity asked for each pipe. Larger pipes mean fewer splice calls per byte on bulk
/// transfers; the kernel charges pipe pages to the user (`pipe-user-pages-soft`), so
/// this also bounds how many pipes can be busy at once before the kernel shrinks them.
pub const PIPE_SIZE: usize = 256 * 1024;

/// Free pipes kept for reuse; beyond this they are closed.
const MAX_FREE: usize = 256;

/// Free pipes of one worker.
#[derive(Debug, Default)]
pub struct PipePool {
    free: Vec<Pipe>,
    created: u64,
}

impl PipePool {
    /// An empty pipe, reused or new.
    pub fn take(&mut self) -> io::Result<Pipe> {
        match self.free.pop() {
            Some(p) => Ok(p),
            None => {
                self.created += 1;
                Pipe::new(PIPE_SIZE)
            }
        }
    }

    /// Returns a pipe that holds no bytes.
    pub fn give(&mut self, pipe: Pipe) {
        if self.free.len() < MAX_FREE {
            self.free.push(pipe);
        }
    }

    /// Pipes waiting for reuse.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Pipes created over the pool's life.
    pub fn created(&self) -> u64 {
        self.created
    }
}
