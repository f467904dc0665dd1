//! Signals: SIGHUP reloads; SIGTERM/SIGINT drain and stop.
//!
//! The first SIGTERM or SIGINT tells every worker to stop accepting and to finish open
//! connections within `shutdown_timeout`; a second one exits at once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::admin::{lock, Shared};
use super::notify::notify;
use crate::dataplane::{Command, WorkerHandle};

/// Exit status of a forced exit (second signal).
const FORCED_EXIT: i32 = 1;

/// The signals ringway answers, caught from the moment this is built: until then
/// SIGTERM and SIGHUP would kill the process, so it is built before any socket is bound.
pub struct Watch {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Watch {
    /// Installs the handlers; must run inside the control runtime's context.
    pub fn install() -> anyhow::Result<Watch> {
        Ok(Watch {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
        })
    }
}

/// Serves signals until a stop signal, then drains the workers and joins them.
pub async fn run(watch: Watch, workers: Vec<WorkerHandle>, control: Shared) -> anyhow::Result<()> {
    let Watch {
        mut term,
        mut int,
        mut hup,
    } = watch;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                notify("RELOADING=1");
                let status = match lock(&control).reload() {
                    Ok(summary) => format!("reloaded: {summary}"),
                    Err(_) => "reload failed: the running config stays (see the log)".to_string(),
                };
                notify(&format!("READY=1\nSTATUS={status}"));
            }
            _ = tick.tick() => {
                if workers.iter().all(WorkerHandle::is_finished) {
                    anyhow::bail!("every worker thread has stopped");
                }
            }
        }
    };
    let (open, timeout) = {
        let c = lock(&control);
        let open: usize = c
            .listeners
            .iter()
            .map(|l| l.shared.active.load(Ordering::Relaxed))
            .sum();
        (open, c.config.shutdown_timeout)
    };
    tracing::info!(
        "{why}: no longer accepting; draining {open} open connection(s) for up to {timeout:?}"
    );
    notify("STOPPING=1");
    let deadline = Instant::now() + timeout;
    for w in &workers {
        let _ = w.send(Command::Drain { deadline });
    }
    loop {
        tokio::select! {
            _ = term.recv() => force(),
            _ = int.recv() => force(),
            _ = hup.recv() => tracing::info!("SIGHUP while draining: ignored"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if workers.iter().all(WorkerHandle::is_finished) {
                    break;
                }
            }
        }
    }
    let mut panicked = 0;
    for w in workers {
        if w.join().is_err() {
            panicked += 1;
        }
    }
    if panicked > 0 {
        anyhow::bail!("{panicked} worker thread(s) panicked");
    }
    tracing::info!("stopped");
    Ok(())
}

fn force() -> ! {
    tracing::warn!("second signal: exiting now");
    std::process::exit(FORCED_EXIT)
}
