//! Signals: SIGHUP reloads; SIGTERM/SIGINT/SIGQUIT drain and stop; SIGUSR1 reopens log
//! files; the others an operator might send, and those whose default action would kill
//! the process, are logged and ignored; SIGXFSZ is ignored (see [`TABLE`]).
//!
//! The first stop signal tells every worker to stop accepting and to finish open
//! connections within `shutdown_timeout`; a second one exits at once.

use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::actor::Handle;
use super::notify::notify;
use super::RunError;
use crate::dataplane::{Command, WorkerHandle};

/// Exit status of a forced exit (second signal).
const FORCED_EXIT: i32 = 1;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// SIGTERM, SIGINT, SIGQUIT: stop accepting, drain, exit.
    Stop(&'static str),
    /// SIGHUP: reload the config.
    Reload,
    /// SIGUSR1: reopen log files (logrotate's `postrotate`).
    ReopenLogs,
    /// SIGUSR2: start the binary again and hand it the listening sockets.
    Upgrade,
    /// Anything else an operator might send out of habit, or whose default would
    /// kill ringway: logged, ignored.
    Nothing(&'static str),
    /// Ignored without a line (SIGXFSZ: the failed write says it, once).
    Quiet,
}

/// The signals ringway answers, with what each asks for:
///
/// | signal | does |
/// |---|---|
/// | TERM, INT, QUIT | stop accepting, drain for `shutdown_timeout`, exit 0; a second one exits at once |
/// | HUP | reload the config file |
/// | USR1 | reopen log files |
/// | USR2 | upgrade: start the binary at the path ringway was started from, hand it the listening sockets; once it serves, stop accepting, drain, exit |
/// | WINCH, TTIN, TTOU | logged and ignored (HAProxy and NGINX give them other meanings) |
/// | ALRM, VTALRM, PROF, XCPU, PWR, SYS | logged and ignored: their default action would kill ringway at once, with no drain and no log line |
/// | XFSZ | ignored (quietly): a write past `LimitFSIZE` then fails with EFBIG, and the access log counts what it lost, instead of the whole proxy dying |
const TABLE: [(i32, &str, Asked); 16] = [
    (libc::SIGTERM, "SIGTERM", Asked::Stop("SIGTERM")),
    (libc::SIGINT, "SIGINT", Asked::Stop("SIGINT")),
    (libc::SIGQUIT, "SIGQUIT", Asked::Stop("SIGQUIT")),
    (libc::SIGHUP, "SIGHUP", Asked::Reload),
    (libc::SIGUSR1, "SIGUSR1", Asked::ReopenLogs),
    (libc::SIGUSR2, "SIGUSR2", Asked::Upgrade),
    (libc::SIGWINCH, "SIGWINCH", Asked::Nothing("SIGWINCH")),
    (libc::SIGTTIN, "SIGTTIN", Asked::Nothing("SIGTTIN")),
    (libc::SIGTTOU, "SIGTTOU", Asked::Nothing("SIGTTOU")),
    (libc::SIGALRM, "SIGALRM", Asked::Nothing("SIGALRM")),
    (libc::SIGVTALRM, "SIGVTALRM", Asked::Nothing("SIGVTALRM")),
    (libc::SIGPROF, "SIGPROF", Asked::Nothing("SIGPROF")),
    (libc::SIGXCPU, "SIGXCPU", Asked::Nothing("SIGXCPU")),
    (libc::SIGPWR, "SIGPWR", Asked::Nothing("SIGPWR")),
    (libc::SIGSYS, "SIGSYS", Asked::Nothing("SIGSYS")),
    (libc::SIGXFSZ, "SIGXFSZ", Asked::Quiet),
];

/// The signals ringway answers, caught from the moment this is built: until then most
/// of them would kill (or stop) the process, so it is built before any socket is bound.
pub struct Watch {
    streams: Vec<(Signal, Asked)>,
}

impl Watch {
    /// Installs the handlers; must run inside the control runtime's context.
    pub fn install() -> Result<Watch, SignalError> {
        let mut streams = Vec::with_capacity(TABLE.len());
        for (number, name, asked) in TABLE {
            let stream = signal(SignalKind::from_raw(number))
                .map_err(|source| SignalError { name, source })?;
            streams.push((stream, asked));
        }
        Ok(Watch { streams })
    }

    /// The next signal.
    async fn next(&mut self) -> Asked {
        std::future::poll_fn(|cx| {
            for (stream, asked) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*asked);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// A signal handler could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {name}")]
pub struct SignalError {
    name: &'static str,
    #[source]
    source: std::io::Error,
}

/// Logs a signal that asks for nothing but a log line.
fn ignored(name: &str) {
    tracing::info!("{name}: ignored (SIGHUP reloads, SIGUSR1 reopens log files, SIGTERM stops)");
}

/// SIGUSR1: reopens the access log at its path (logrotate's `postrotate`); ringway's
/// own log goes to stderr.
fn reopen_logs(logs: &crate::accesslog::Control) {
    tracing::info!("SIGUSR1: reopening log files");
    logs.reopen();
}

/// How often workers are looked at: one that stopped is noticed within this.
const WATCH_WORKERS: Duration = Duration::from_millis(250);

/// How long an upgrade's answer waits for `/metrics` and the admin API to stop
/// accepting here (they stop at once unless their thread is stuck).
const STOP_ACCEPTING: Duration = Duration::from_secs(2);

/// Serves signals until a stop signal, then drains the workers and joins them. A
/// worker that stops on its own (it panicked) is noticed, logged with its message and
/// counted; the others are drained and ringway exits with an error, so that its
/// supervisor restarts it: the lost worker's connections and flows never gave their
/// listener and per-source counts back, and a process that goes on with one worker
/// fewer and wrong counts would refuse clients for no reason.
pub async fn run(
    mut watch: Watch,
    mut workers: Vec<WorkerHandle>,
    control: Handle,
    logs: crate::accesslog::Control,
    (mut upgraded, closing): (
        tokio::sync::mpsc::UnboundedReceiver<super::upgrade::old::Handover>,
        tokio::sync::watch::Sender<bool>,
    ),
) -> Result<(), RunError> {
    let mut tick = tokio::time::interval(WATCH_WORKERS);
    let mut failed: Option<RunError> = None;
    let why = loop {
        tokio::select! {
            asked = watch.next() => match asked {
                Asked::Stop(name) => break name,
                Asked::Reload => {
                    tracing::info!("SIGHUP: reloading the config");
                    notify("RELOADING=1");
                    let control = control.clone();
                    tokio::spawn(async move {
                        let status = match control.reload().await {
                            Ok(summary) => format!("reloaded: {summary}"),
                            Err(_) => "reload failed: the running config stays (see the log)".to_string(),
                        };
                        notify(&format!("READY=1\nSTATUS={status}"));
                    });
                }
                Asked::ReopenLogs => reopen_logs(&logs),
                Asked::Upgrade => {
                    tracing::info!("SIGUSR2: upgrading");
                    let control = control.clone();
                    // The outcome is logged by the control task.
                    tokio::spawn(async move { control.upgrade().await });
                }
                Asked::Nothing(name) => ignored(name),
                Asked::Quiet => {}
            },
            Some((pid, handed)) = upgraded.recv() => {
                // The new process serves: systemd follows it, and the admin API and
                // /metrics are its from now on. Whoever asked for the upgrade hears
                // of it once this process accepts no request any more.
                notify(&format!("MAINPID={pid}\nSTATUS=upgraded: process {pid} serves"));
                let _ = closing.send(true);
                // Each server drops its end of `closing` once it stopped accepting.
                let _ = tokio::time::timeout(STOP_ACCEPTING, closing.closed()).await;
                let _ = handed.send(());
                break "upgraded";
            }
            _ = tick.tick() => {
                if workers.iter().all(WorkerHandle::is_finished) {
                    return Err(RunError::WorkersStopped);
                }
                if let Some(i) = workers.iter().position(WorkerHandle::is_finished) {
                    let index = workers[i].index();
                    let why = match workers.swap_remove(i).join() {
                        Err(panic) => panic_message(panic.as_ref()),
                        Ok(()) => "it returned".to_string(),
                    };
                    tracing::error!("worker {index} stopped: {why}; its connections are lost and its listeners' counts cannot be trusted: draining the other workers, then exiting with an error so that the supervisor restarts ringway");
                    let _ = control.send(super::actor::Msg::WorkerFailed).await;
                    failed = Some(RunError::WorkerFailed { index, why });
                    break "a worker stopped";
                }
            }
        }
    };
    let ((tcp, udp), timeout, handing) = control.draining().await.unwrap_or((
        (0, 0),
        crate::config::Tuning::DEFAULT_SHUTDOWN_TIMEOUT,
        None,
    ));
    if handing.is_some() {
        tracing::info!(
            "{why}: no longer accepting; handing {tcp} TCP connection(s) to the new process (those still connecting once established, within {timeout:?}); {udp} UDP flow(s) end now"
        );
    } else {
        tracing::info!(
            "{why}: no longer accepting; draining {tcp} TCP connection(s) and {udp} UDP flow(s) (TCP for up to {timeout:?}; a UDP flow cannot answer without its listener, so it ends now)"
        );
    }
    notify("STOPPING=1");
    let deadline = Instant::now() + timeout;
    let (export, sender) = match handing {
        Some(h) => (Some(h.exporter), Some(h.sender)),
        None => (None, None),
    };
    for w in &workers {
        let _ = w.send(Command::Drain {
            deadline,
            export: export.clone(),
        });
    }
    // The workers hold the only senders now: the hand-off ends when they stop.
    drop(export);
    loop {
        tokio::select! {
            asked = watch.next() => match asked {
                Asked::Stop(_) => force(),
                Asked::Reload => tracing::info!("SIGHUP while draining: ignored"),
                Asked::Upgrade => tracing::info!("SIGUSR2 while draining: ignored"),
                Asked::ReopenLogs => reopen_logs(&logs),
                Asked::Nothing(name) => ignored(name),
                Asked::Quiet => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                if workers.iter().all(WorkerHandle::is_finished) {
                    break;
                }
            }
        }
    }
    let panicked = workers
        .into_iter()
        .map(WorkerHandle::join)
        .filter(Result::is_err)
        .count();
    if let Some(sender) = sender {
        // Every worker has stopped: the last sessions are on their way.
        if let Ok(s) = sender.join() {
            tracing::info!(
                "handed {} established TCP session(s) and {} UDP flow(s) to the new process ({} pipe(s) with their bytes), from the first out to the last taken in {} ms",
                s.sessions,
                s.flows,
                s.pipes,
                s.took.as_millis()
            );
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if panicked > 0 {
        return Err(RunError::WorkersPanicked(panicked));
    }
    tracing::info!("stopped");
    Ok(())
}

/// What a panic said.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .map_or("it panicked".to_string(), |m| format!("it panicked: {m}"))
}

fn force() -> ! {
    tracing::warn!("second signal: exiting now");
    std::process::exit(FORCED_EXIT)
}
