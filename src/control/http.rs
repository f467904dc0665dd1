//! A small HTTP/1.1 server (hyper) for `/metrics` and the admin API, on the control
//! runtime, on a TCP address or (the admin API) a unix socket. A scraper or an
//! operator must always get through, so:
//!
//! * the listening socket has a backlog like the data plane's (4,096);
//! * every connection is accepted at once; at most `slots` stay open, and a new one
//!   beyond that closes the connection idle the longest (one that sent nothing yet or
//!   sits between requests), as HAProxy does with idle connections;
//! * a connection has [`HEADER_TIMEOUT`] to send a request head, and the same to send
//!   the next one on keep-alive; no connection lives past [`CONNECTION_TIMEOUT`];
//! * failed accepts (out of descriptors) are logged at most once a second.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use slab::Slab;
use socket2::{Domain, Socket, Type};
use tokio::task::AbortHandle;

/// Response body type.
pub type Body = Full<Bytes>;

/// Time to send a request head, and between requests on keep-alive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest life of one connection.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Accept backlog (the data plane's).
const BACKLOG: i32 = 4096;

/// A bound HTTP listening socket.
#[derive(Debug)]
pub enum Bound {
    /// A TCP socket.
    Tcp(std::net::TcpListener),
    /// A unix socket, at this path.
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
}

impl Bound {
    /// Its listening socket.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Bound::Tcp(l) => l.as_fd(),
            Bound::Unix(l, _) => l.as_fd(),
        }
    }

    fn describe(&self) -> io::Result<String> {
        Ok(match self {
            Bound::Tcp(l) => format!("http://{}", l.local_addr()?),
            Bound::Unix(_, path) => format!("unix:{}", path.display()),
        })
    }
}

/// Binds an HTTP listening socket with a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds a unix socket at `path` with file mode `mode` (and `owner`, when given):
/// a socket left there by an earlier run is replaced; any other file is an error.
pub fn bind_unix(
    path: &std::path::Path,
    mode: u32,
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
) -> io::Result<Bound> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(path, Some(uid), Some(gid))?;
    }
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(Bound::Unix(socket.into(), path.to_path_buf()))
}

/// A connection's byte stream, TCP or unix.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A listening socket on the runtime.
enum Listening {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listening {
    async fn accept(&self) -> io::Result<Box<dyn Stream>> {
        Ok(match self {
            Listening::Tcp(l) => Box::new(l.accept().await?.0),
            Listening::Unix(l) => Box::new(l.accept().await?.0),
        })
    }
}

/// One open connection.
#[derive(Debug)]
struct Conn {
    /// Tells a reused slot from the connection that had it.
    id: u64,
    /// Since when it has been idle; `None` while a request is being answered.
    idle_since: Option<Instant>,
    task: AbortHandle,
}

/// The open connections of one server.
#[derive(Debug, Default)]
struct Table {
    conns: Slab<Conn>,
    next_id: u64,
}

type Shared = Arc<Mutex<Table>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a connection's entry when its task ends (or is aborted).
struct Leave {
    table: Shared,
    key: usize,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let mut t = lock(&self.table);
        if t.conns.get(self.key).is_some_and(|c| c.id == self.id) {
            t.conns.remove(self.key);
        }
    }
}

/// Marks a connection busy or idle.
fn mark(table: &Shared, key: usize, id: u64, idle: bool) {
    let mut t = lock(table);
    if let Some(c) = t.conns.get_mut(key).filter(|c| c.id == id) {
        c.idle_since = idle.then(Instant::now);
    }
}

/// Serves `handler` on `listener` (from [`bind`]) until the runtime stops or `closing`
/// turns true (an upgrade: the new process accepts on the same socket from then on;
/// the server's end of `closing` is dropped once it stopped accepting, so its sender's
/// `closed` says when none accepts any more), with at most `slots` connections open.
pub fn spawn<H, F>(
    listener: Bound,
    (slots, mut closing): (usize, tokio::sync::watch::Receiver<bool>),
    what: &'static str,
    handler: H,
) -> io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    tracing::info!("{what} on {}", listener.describe()?);
    let listener = match listener {
        Bound::Tcp(l) => Listening::Tcp(tokio::net::TcpListener::from_std(l)?),
        Bound::Unix(l, _) => Listening::Unix(tokio::net::UnixListener::from_std(l)?),
    };
    let table: Shared = Arc::default();
    tokio::spawn(async move {
        let mut last_warning: Option<Instant> = None;
        let mut held_back = 0u64;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = closing.wait_for(|c| *c) => break,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(suppressed = held_back, "{what}: accept failed: {e}");
                        last_warning = Some(Instant::now());
                        held_back = 0;
                    } else {
                        held_back += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let mut t = lock(&table);
            if t.conns.len() >= slots {
                let oldest = t
                    .conns
                    .iter()
                    .filter_map(|(k, c)| c.idle_since.map(|since| (since, k)))
                    .min();
                match oldest {
                    Some((_, k)) => t.conns.remove(k).task.abort(),
                    // Every connection is in the middle of a request: this one waits
                    // for none of them, it is closed.
                    None => continue,
                }
            }
            t.next_id += 1;
            let id = t.next_id;
            let key = t.conns.vacant_key();
            let task = tokio::spawn(serve(
                stream,
                Leave {
                    table: Arc::clone(&table),
                    key,
                    id,
                },
                handler.clone(),
            ));
            t.conns.insert(Conn {
                id,
                idle_since: Some(Instant::now()),
                task: task.abort_handle(),
            });
        }
    });
    Ok(())
}

async fn serve<H, F>(stream: Box<dyn Stream>, leave: Leave, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let (table, key, id) = (Arc::clone(&leave.table), leave.key, leave.id);
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        let table = Arc::clone(&table);
        async move {
            mark(&table, key, id, false);
            let response = handler(req).await;
            mark(&table, key, id, true);
            Ok::<_, Infallible>(response)
        }
    });
    serve_io(TokioIo::new(stream), service).await;
    drop(leave);
}

/// Serves HTTP/1.1 requests on one connection `io` with `service`, with the limits
/// every connection gets (5 s for a request head, 60 s for a connection, hyper's
/// header limits). Public for the admin fuzz target, which feeds it raw bytes.
pub async fn serve_io<IO, S>(io: IO, service: S)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
}

/// A response with a body and content type.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            respond(status, "application/json", body)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// A JSON error: `{"error": "..."}`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    #[derive(Serialize)]
    struct E<'a> {
        error: &'a str,
    }
    json(status, &E { error: message })
}
