//! The writer thread: drains every worker's queue, formats the records and writes them
//! buffered, flushing at least every [`TICK`] (so a record is on disk well within a
//! second of its connection's end). `SIGUSR1` reopens the file at its path
//! (logrotate's `postrotate`): what was written before goes to the renamed file, what
//! comes after to the new one, and nothing is lost between them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::format::{self, Format};
use super::record::Record;
use super::sink::{Shared, Sink};

/// How often the writer drains the queues and flushes.
pub const TICK: Duration = Duration::from_millis(100);

/// Records one worker's queue holds before it drops them (about 150 bytes each).
const QUEUE: usize = 16_384;

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard error (`path = "-"`).
    Stderr,
    /// A file, appended to, created if missing.
    File(PathBuf),
}

/// `[access_log]`, as the writer uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where.
    pub target: Target,
    /// How.
    pub format: Format,
    /// The fraction of successful connections logged (failed ones always are).
    pub sample: f64,
}

/// What the writer is told.
#[derive(Debug)]
enum Ctl {
    Configure(Option<Settings>),
    Reopen,
    Stop,
}

/// The control plane's handle on the access log: reconfigure (reload), reopen
/// (SIGUSR1), counts. Cloneable.
#[derive(Debug, Clone)]
pub struct Control {
    ctl: Sender<Ctl>,
    shared: Arc<Shared>,
}

impl Control {
    /// Applies `[access_log]` from a (re)loaded config: `None` turns the log off.
    pub fn configure(&self, settings: Option<Settings>) {
        self.shared.set(settings.as_ref().map(|s| s.sample));
        let _ = self.ctl.send(Ctl::Configure(settings));
    }

    /// Reopens the file at its path.
    pub fn reopen(&self) {
        let _ = self.ctl.send(Ctl::Reopen);
    }

    /// Records dropped because a worker's queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped()
    }
}

/// The running writer.
#[derive(Debug)]
pub struct AccessLog {
    control: Control,
    thread: JoinHandle<()>,
}

impl AccessLog {
    /// Starts the writer with `settings` (`None`: off until a reload turns it on);
    /// returns it and one [`Sink`] per worker.
    pub fn start(workers: usize, settings: Option<Settings>) -> io::Result<(AccessLog, Vec<Sink>)> {
        let shared = Arc::new(Shared::new(workers));
        let mut sinks = Vec::with_capacity(workers);
        let mut queues = Vec::with_capacity(workers);
        for worker in 0..workers {
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            sinks.push(Sink::new(tx, Arc::clone(&shared), worker));
            queues.push(rx);
        }
        let (ctl, ctl_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ringway-log".into())
            .spawn(move || run(queues, ctl_rx))?;
        let control = Control { ctl, shared };
        control.configure(settings);
        Ok((AccessLog { control, thread }, sinks))
    }

    /// A handle for reloads and signals.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Writes what is queued, flushes and stops (after the workers stopped).
    pub fn stop(self) {
        let _ = self.control.ctl.send(Ctl::Stop);
        let _ = self.thread.join();
    }
}

/// An open output.
enum Out {
    Stderr(io::Stderr),
    File(io::BufWriter<File>),
}

impl Out {
    fn open(target: &Target) -> io::Result<Out> {
        Ok(match target {
            Target::Stderr => Out::Stderr(io::stderr()),
            Target::File(path) => Out::File(io::BufWriter::with_capacity(
                256 * 1024,
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Out::Stderr(e) => e.write_all(buf),
            Out::File(f) => f.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Stderr(e) => e.flush(),
            Out::File(f) => f.flush(),
        }
    }
}

/// The writer's state.
struct Writer {
    settings: Option<Settings>,
    out: Option<Out>,
    buf: Vec<u8>,
    /// The last failure was logged (one line per failure streak, not per record).
    failing: bool,
}

impl Writer {
    /// (Re)opens the configured output.
    fn open(&mut self) {
        self.flush();
        self.out = None;
        let Some(s) = &self.settings else {
            return;
        };
        match Out::open(&s.target) {
            Ok(out) => {
                self.out = Some(out);
                self.failing = false;
            }
            Err(e) => self.failed(&format!("cannot open the access log {:?}: {e}", s.target)),
        }
    }

    fn failed(&mut self, what: &str) {
        if !self.failing {
            tracing::error!("{what}; records are dropped until a reload or SIGUSR1 reopens it");
            self.failing = true;
        }
    }

    /// Formats every queued record into the buffer.
    fn drain(&mut self, queues: &[Receiver<Record>]) {
        let format = self.settings.as_ref().map_or(Format::Json, |s| s.format);
        for q in queues {
            while let Ok(r) = q.try_recv() {
                if self.out.is_some() {
                    format::line(format, &r, &mut self.buf);
                }
            }
        }
    }

    /// Writes the buffer out and flushes.
    fn flush(&mut self) {
        let Some(out) = self.out.as_mut() else {
            self.buf.clear();
            return;
        };
        let result = out.write_all(&self.buf).and_then(|()| out.flush());
        self.buf.clear();
        if let Err(e) = result {
            self.failed(&format!("writing the access log failed: {e}"));
        }
    }
}

fn run(queues: Vec<Receiver<Record>>, ctl: Receiver<Ctl>) {
    let mut w = Writer {
        settings: None,
        out: None,
        buf: Vec::with_capacity(64 * 1024),
        failing: false,
    };
    loop {
        let msg = ctl.recv_timeout(TICK);
        // Records queued before a reopen belong to the file that was open then.
        w.drain(&queues);
        match msg {
            Ok(Ctl::Configure(settings)) => {
                if settings != w.settings {
                    w.flush();
                    w.settings = settings;
                    w.open();
                }
            }
            Ok(Ctl::Reopen) => w.open(),
            Ok(Ctl::Stop) | Err(RecvTimeoutError::Disconnected) => {
                w.flush();
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        w.flush();
    }
}
