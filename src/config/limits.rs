//! Per-backend connection limits and the queue in front of them: a backend's
//! `max_connections` and `max_queue`, a TCP listener's `queue_timeout` and
//! `queue_overflow`.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::error::ConfigError;
use super::file::{FileBackend, FileListener, FileQueueOverflow};
use super::validate::{duration_of, int_of, Source};
use super::{QueueConfig, QueueOverflow, Tuning};
use crate::balance::Limits;

/// Largest `max_connections` or `max_queue` of one backend.
const MAX_LIMIT: i64 = 10_000_000;

/// Longest `queue_timeout`.
const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A backend's `max_connections` and `max_queue` (named under `key`).
pub(super) fn backend_limits(
    src: &Source<'_>,
    b: &FileBackend,
    key: &str,
) -> Result<Limits, ConfigError> {
    let max_connections = match &b.max_connections {
        None => 0,
        Some(m) => int_of(src, m, &format!("{key}.max_connections"), 1, MAX_LIMIT)? as u32,
    };
    let max_queue = match &b.max_queue {
        None => 0,
        Some(q) if max_connections == 0 => {
            return Err(src.error(
                q.span(),
                format!("{key}.max_queue"),
                "`max_queue` bounds the queue of connections waiting for a full backend: it needs `max_connections` on the same backend",
            ))
        }
        Some(q) => int_of(src, q, &format!("{key}.max_queue"), 1, MAX_LIMIT)? as u32,
    };
    Ok(Limits {
        max_connections,
        max_queue,
    })
}

/// A TCP listener's `queue_timeout` and `queue_overflow` (named under `key`).
pub(super) fn queue(
    src: &Source<'_>,
    l: &FileListener,
    key: &str,
) -> Result<QueueConfig, ConfigError> {
    let timeout = match &l.queue_timeout {
        None => Tuning::DEFAULT_QUEUE_TIMEOUT,
        Some(t) => {
            let k = format!("{key}.queue_timeout");
            let d = duration_of(src, t, &k)?;
            if d.is_zero() || d > MAX_QUEUE_TIMEOUT {
                return Err(src.error(
                    t.span(),
                    k,
                    "expected a duration from 1ms to 1h: how long a connection may wait for a full backend",
                ));
            }
            d
        }
    };
    let overflow = match l.queue_overflow.as_ref().map(|o| *o.get_ref()) {
        None | Some(FileQueueOverflow::Close) => QueueOverflow::Close,
        Some(FileQueueOverflow::Next) => QueueOverflow::Next,
    };
    Ok(QueueConfig { timeout, overflow })
}

/// The queue keys, which only TCP listeners take, with their spans.
pub(super) fn tcp_only_keys(l: &FileListener) -> Vec<(&'static str, Option<Range<usize>>)> {
    vec![
        ("queue_timeout", l.queue_timeout.as_ref().map(Spanned::span)),
        (
            "queue_overflow",
            l.queue_overflow.as_ref().map(Spanned::span),
        ),
    ]
}
