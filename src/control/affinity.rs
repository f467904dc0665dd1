//! `worker_cpu_affinity`: worker `i` runs on CPU `i`, and each TCP listener's socket
//! group hands a new connection to the worker on the CPU that received it. UDP
//! listeners keep the kernel's 4-tuple hash: a flow lives in one worker's table, and a
//! client's datagrams may be received on any CPU (on loopback, its sender's), so
//! steering them by CPU would split a flow over workers. Only when
//! the CPUs ringway may run on are exactly `0..workers` (no cpuset that skips some, no
//! more workers than CPUs; the default `workers` on an unrestricted machine); otherwise
//! connections keep the kernel's hash spread. On by default where it applies (measured:
//! docs/BENCHMARKS.md), as HAProxy binds its threads; `false` turns it off.

use crate::config::Config;

/// Whether `config` asks for CPU affinity and this machine allows it.
pub fn applies(config: &Config) -> bool {
    config.worker_cpu_affinity != Some(false) && usable(config.workers)
}

/// Whether the CPUs this process may use are exactly `0..workers`.
fn usable(workers: usize) -> bool {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return false;
    };
    let allowed: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect();
    allowed == (0..workers).collect::<Vec<_>>()
}

/// Says once, at start, what `worker_cpu_affinity` does here.
pub fn report(config: &Config) {
    match (config.worker_cpu_affinity, applies(config)) {
        (Some(false), _) => {}
        (_, true) => tracing::info!(
            "worker_cpu_affinity: worker i runs on CPU i; new TCP connections go to the worker on the CPU that received them"
        ),
        (Some(true), false) => tracing::warn!(
            "worker_cpu_affinity needs ringway's allowed CPUs to be exactly 0..{} (one worker per CPU): not applied, connections are spread by hash",
            config.workers
        ),
        (None, false) => tracing::info!(
            "workers not pinned to CPUs (ringway's allowed CPUs are not exactly 0..{}): connections are spread by hash",
            config.workers
        ),
    }
}
