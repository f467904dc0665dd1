//! The access log: one line per TCP connection and per UDP flow when it ends (who,
//! where to, how many bytes, how long, why it ended), written off the forwarding path.
//!
//! * [`record`]: what a line says; workers fill a [`Record`] from what they hold.
//! * [`format`]: JSON lines or one human line per record (pure).
//! * [`Sink`]: each worker's bounded queue; handing a record over never blocks (a full
//!   queue drops it and counts it in `ringway_access_log_dropped_total`, as the writer
//!   counts records it could not write: [`Lost`]).
//! * [`AccessLog`]: the writer thread that drains the queues, writes buffered, flushes
//!   every 100 ms, and reopens the file on SIGUSR1.
//!
//! Every `end` value is documented in `docs/ACCESS_LOG.md`.

pub mod format;
pub mod probe;
pub mod record;
mod sink;
mod writer;

pub use format::Format;
pub use record::{End, Proto, Reached, Record};
pub use sink::{Lost, Sink};
pub use writer::{AccessLog, Control, Settings, Target, TICK};
