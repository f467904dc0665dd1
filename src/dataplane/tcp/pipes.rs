//! A worker's pool of splice pipes.
//!
//! A session takes a pipe only while one of its directions moves bulk data (or holds
//! bytes a write did not take) and gives it back when that direction goes idle, so
//! thousands of idle connections hold no pipes. Only empty pipes come back; a pipe
//! with bytes in it is closed.
//!
//! Two limits bound it. Each pipe costs two descriptors from the worker's
//! [`FdBudget`]: without budget no pipe is made and the direction copies instead. And
//! the kernel charges pipe pages to the user (`fs.pipe-user-pages-soft`, 16,384 pages
//! by default): past that, an unprivileged user's new pipes get two pages and
//! `F_SETPIPE_SZ` fails. So the pool keeps at most a quarter of that allowance idle
//! (split across workers), and when the kernel does hand out small pipes, directions
//! copy instead of splicing through them (logged once).

use super::forward::{Pipes, MIN_SPLICE_PIPE};
use crate::dataplane::budget::{FdBudget, PIPE_FDS};
use crate::sys::Pipe;

/// Capacity asked for each pipe. Larger pipes mean fewer splice calls per byte on bulk
/// transfers, and more pages charged to the user.
pub const PIPE_SIZE: usize = 256 * 1024;

/// Most free pipes a worker keeps, whatever the kernel allows.
const MAX_FREE: usize = 256;

/// Where the kernel says how many pipe pages a user may have before pipes shrink.
const SOFT_LIMIT: &str = "/proc/sys/fs/pipe-user-pages-soft";

/// Free pipes of one worker.
#[derive(Debug)]
pub struct PipePool {
    worker: usize,
    free: Vec<Pipe>,
    max_free: usize,
    budget: FdBudget,
    created: u64,
    warned_small: bool,
}

impl PipePool {
    /// An empty pool for worker `worker` of `workers`, drawing on `budget`.
    pub fn new(budget: FdBudget, worker: usize, workers: usize) -> PipePool {
        let soft_pages = std::fs::read_to_string(SOFT_LIMIT)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        PipePool {
            worker,
            free: Vec::new(),
            max_free: max_free(soft_pages, workers),
            budget,
            created: 0,
            warned_small: false,
        }
    }

    /// Pipes waiting for reuse.
    #[cfg(test)]
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Pipes created over the pool's life.
    #[cfg(test)]
    pub fn created(&self) -> u64 {
        self.created
    }
}

/// Free pipes one worker keeps: a quarter of the user's soft allowance of full-size
/// pipes, split across workers (0 pages: no limit).
fn max_free(soft_pages: usize, workers: usize) -> usize {
    if soft_pages == 0 {
        return MAX_FREE;
    }
    let pipes = soft_pages / (PIPE_SIZE / 4096);
    (pipes / (4 * workers.max(1))).clamp(1, MAX_FREE)
}

impl Pipes<Pipe> for PipePool {
    fn take(&mut self) -> Option<Pipe> {
        if let Some(p) = self.free.pop() {
            return Some(p);
        }
        if !self.budget.take(PIPE_FDS) {
            return None;
        }
        match Pipe::new(PIPE_SIZE) {
            Ok(p) => {
                self.created += 1;
                if p.capacity() < MIN_SPLICE_PIPE && !self.warned_small {
                    self.warned_small = true;
                    tracing::warn!(
                        worker = self.worker,
                        "the kernel grants pipes of {} bytes only (over fs.pipe-user-pages-soft?): transfers copy instead of splicing (logged once per worker)",
                        p.capacity()
                    );
                }
                Some(p)
            }
            Err(e) => {
                self.budget.give(PIPE_FDS);
                tracing::debug!("cannot make a pipe: {e}; copying instead");
                None
            }
        }
    }

    fn give(&mut self, pipe: Pipe, empty: bool) {
        if empty && self.free.len() < self.max_free {
            self.free.push(pipe);
        } else {
            drop(pipe);
            self.budget.give(PIPE_FDS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_sized_against_the_kernel_allowance() {
        // Debian's default: 16,384 pages = 256 full-size pipes per user.
        assert_eq!(max_free(16_384, 2), 32);
        assert_eq!(max_free(16_384, 1), 64);
        assert_eq!(max_free(64, 8), 1);
        assert_eq!(max_free(0, 2), MAX_FREE);
    }

    #[test]
    fn pipes_cost_budget_and_come_back() {
        let budget = FdBudget::new(5);
        let mut pool = PipePool::new(budget.clone(), 0, 1);
        let a = pool.take().expect("budget for one");
        let b = pool.take().expect("and two");
        assert!(pool.take().is_none(), "6 descriptors > 5");
        assert_eq!(budget.used(), 4);
        pool.give(a, true);
        assert_eq!((pool.free(), budget.used()), (1, 4), "kept for reuse");
        pool.give(b, false);
        assert_eq!(budget.used(), 2, "a pipe with bytes is closed");
        assert!(pool.take().is_some());
        assert_eq!(pool.created(), 2);
    }
}
