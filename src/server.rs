//! The HTTPS server: axum on rustls, HTTP/1.1 and HTTP/2, TCP_NODELAY,
//! bounded handshake and header times, graceful drain. Each connection's
//! requests carry the [`Peer`] its TLS handshake proved (a verified client
//! certificate or none); failed handshakes are logged and counted by reason.
//!
//! Under load ([`crate::overload::Connections`]): pending handshakes are
//! bounded (the oldest is cut off for a new one), established connections
//! are bounded per pool (the apiserver's certificate has a pool of its
//! own), HTTP/2 streams per connection are bounded, and a connection with
//! no request in flight must complete a request within the header timeout
//! — on HTTP/2 too, where hyper's own header timeout does not apply.
//!
//! With a client CA ([`ConnLimits::low_priority_open`]), every connection
//! is accepted and its TLS handshake done on a small runtime of its own
//! whose worker threads lower their own CPU priority (nice +10); a
//! connection whose certificate puts it in the reserved pool (the
//! apiserver) is then served on the main runtime, every other one stays
//! on the low-priority runtime — a flood of hostile connections then
//! competes for the CPU at a lower priority than the apiserver's reviews.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;

use crate::metrics::{PoolLabels, ReasonLabels};
use crate::overload::{ConnectionSlot, Connections, Pool};
use crate::tls::Peer;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed")]
    Serve(#[source] std::io::Error),
    #[error("failed to start the open pool's runtime")]
    OpenRuntime(#[source] std::io::Error),
}

/// Connection-level bounds.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// A client must finish the TLS handshake within this.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight must complete a request's
    /// headers within this (slowloris, HTTP/1.1 and HTTP/2), counted from
    /// the handshake or from the end of its last request (the reserved
    /// pool's HTTP/2 connections: at least 120 s).
    pub header_timeout: Duration,
    /// TLS handshakes pending at once; a new connection beyond it cuts
    /// off the oldest pending handshake.
    pub max_handshakes: usize,
    /// Established connections in each pool (the apiserver's, everybody
    /// else's); a connection finding its pool full is closed.
    pub max_connections: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_streams: u32,
    /// With a client CA: the names (common name or DNS name) whose
    /// certificates count in the reserved pool; empty: any certificate
    /// from the client CA.
    pub reserved_names: Vec<String>,
    /// With a client CA: handshakes and the open pool's connections run on
    /// a runtime of their own at a lower CPU priority; only the reserved
    /// pool's connections are served on the caller's runtime. Without a
    /// client CA nobody can be told apart: everything runs on the caller's
    /// runtime.
    pub low_priority_open: bool,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_connections: 1024,
            http2_max_streams: 100,
            reserved_names: Vec::new(),
            low_priority_open: false,
        }
    }
}

impl ConnLimits {
    /// The pool a connection that proved `peer` counts in.
    fn pool_of(&self, peer: &Peer) -> Pool {
        match peer {
            Peer::Verified { names }
                if self.reserved_names.is_empty() || names.iter().any(|n| self.reserved_names.contains(n)) =>
            {
                Pool::Reserved
            }
            _ => Pool::Open,
        }
    }
}

/// What the server counts: failed handshakes by reason (a handshake cut
/// off for a newer one is `evicted`), and connections closed because their
/// pool was full.
#[derive(Clone, Default)]
pub struct ServerCounters {
    pub handshake_failures: Family<ReasonLabels, Counter>,
    pub pool_full: Family<PoolLabels, Counter>,
}

/// A server that is listening.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: Handle,
    pub task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish for up to `drain`,
    /// then closes what is left.
    pub async fn shutdown(self, drain: Duration) -> Result<(), ServerError> {
        self.handle.graceful_shutdown(Some(drain));
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e))),
        }
    }
}

/// Tells a running server to stop.
#[derive(Clone)]
pub struct Handle {
    stop: Arc<watch::Sender<Stopping>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopping {
    No,
    /// Stop accepting; let connections finish for up to this long (`None`:
    /// as long as they take).
    Drain(Option<Duration>),
}

impl Handle {
    fn new() -> (Handle, watch::Receiver<Stopping>) {
        let (tx, rx) = watch::channel(Stopping::No);
        (Handle { stop: Arc::new(tx) }, rx)
    }

    /// Stops accepting and closes connections once their requests in
    /// flight are answered, or after `drain`.
    pub fn graceful_shutdown(&self, drain: Option<Duration>) {
        self.stop.send_if_modified(|s| {
            let first = *s == Stopping::No;
            if first {
                *s = Stopping::Drain(drain);
            }
            first
        });
    }
}

/// Binds `addr` and serves `router` over TLS in a background task.
pub async fn start(
    addr: SocketAddr,
    tls: RustlsConfig,
    router: Router,
    limits: ConnLimits,
) -> Result<Running, ServerError> {
    start_counting(addr, tls, router, limits, Family::default()).await
}

/// Like [`start`], counting failed handshakes by reason into `failures`.
pub async fn start_counting(
    addr: SocketAddr,
    tls: RustlsConfig,
    router: Router,
    limits: ConnLimits,
    failures: Family<ReasonLabels, Counter>,
) -> Result<Running, ServerError> {
    let counters = ServerCounters { handshake_failures: failures, ..ServerCounters::default() };
    start_with(addr, tls, router, limits, counters).await
}

/// Like [`start`], counting into `counters`.
pub async fn start_with(
    addr: SocketAddr,
    tls: RustlsConfig,
    router: Router,
    limits: ConnLimits,
    counters: ServerCounters,
) -> Result<Running, ServerError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|source| ServerError::Bind { addr, source })?;

    let open = if limits.low_priority_open {
        Some(OpenRuntime::start(open_threads(), OPEN_NICE, lower_priority).map_err(ServerError::OpenRuntime)?)
    } else {
        None
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    // HTTP/2: streams per connection bounded; h2's own defaults bound
    // rapid resets (20 pending accept resets, CVE-2023-44487), locally
    // reset streams (1024, RUSTSEC-2024-0003), header lists (16 KiB) and
    // queued PING/SETTINGS acknowledgements (CVE-2019-9512, CVE-2019-9515).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        .max_header_list_size(16 * 1024);
    let (handle, stop) = Handle::new();
    let (hard_tx, hard) = watch::channel(false);
    let shared = Arc::new(Shared {
        tls,
        connections: Arc::new(Connections::new(limits.max_handshakes, limits.max_connections)),
        limits,
        counters,
        builder,
        router,
        main: tokio::runtime::Handle::current(),
        split: open.is_some(),
        stop: stop.clone(),
        hard,
    });
    let task = tokio::spawn(accept_loop(listener, shared, open, stop, hard_tx));
    Ok(Running { addr: local, handle, task })
}

/// What every connection of a server shares.
struct Shared {
    tls: RustlsConfig,
    connections: Arc<Connections>,
    limits: ConnLimits,
    counters: ServerCounters,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    /// The runtime the server was started on: the reserved pool's.
    main: tokio::runtime::Handle,
    /// Whether the open pool has a runtime of its own.
    split: bool,
    stop: watch::Receiver<Stopping>,
    /// Set once the drain time is up: connections still open are closed.
    hard: watch::Receiver<bool>,
}

/// Accepts connections until told to stop, then drains them.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    open: Option<OpenRuntime>,
    mut stop: watch::Receiver<Stopping>,
    hard: watch::Sender<bool>,
) -> Result<(), ServerError> {
    // every connection holds a sender: all have ended when `recv` is `None`
    let (alive, mut ended) = mpsc::channel::<()>(1);
    let drain = loop {
        let accepted = tokio::select! {
            biased;
            s = stop.wait_for(|s| *s != Stopping::No) => break s.map(|s| *s).unwrap_or(Stopping::Drain(None)),
            a = listener.accept() => a,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // out of file descriptors and the like: the listener lives
                if let Some(held_back) = ACCEPT_LOG.allow() {
                    tracing::warn!(error = %e, held_back, "failed to accept a connection");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let conn = connection(tcp, remote, shared.clone(), alive.clone());
        match &open {
            Some(rt) => drop(rt.handle.spawn(conn)),
            None => drop(tokio::spawn(conn)),
        }
    };
    drop(listener);
    drop(alive);
    drop(shared);
    let limit = match drain {
        Stopping::Drain(limit) => limit,
        Stopping::No => None,
    };
    match limit {
        Some(limit) => {
            if tokio::time::timeout(limit, ended.recv()).await.is_err() {
                let _ = hard.send(true);
                ended.recv().await;
            }
        }
        None => {
            ended.recv().await;
        }
    }
    drop(open);
    Ok(())
}

/// Failed accepts are logged at most once a second.
static ACCEPT_LOG: crate::overload::LogLimit = crate::overload::LogLimit::new();

/// One connection: the TLS handshake (bounded in time and in number), its
/// pool, then HTTP until it ends or the server stops — on the main runtime
/// for the reserved pool when the open pool has a runtime of its own.
async fn connection(tcp: TcpStream, remote: SocketAddr, shared: Arc<Shared>, alive: mpsc::Sender<()>) {
    let (mut slot, _) = shared.connections.handshake();
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.get_inner());
    let handshake = tokio::time::timeout(shared.limits.handshake_timeout, acceptor.accept(tcp));
    let mut hard = shared.hard.clone();
    let result = tokio::select! {
        r = handshake => r.unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))),
        _ = &mut slot.evicted => Err(std::io::Error::other(Evicted)),
        // the drain time is up: a pending handshake does not hold up the exit
        _ = async { drop(hard.wait_for(|h| *h).await) } => return,
    };
    drop(slot);
    let tls = match result {
        Ok(tls) => tls,
        Err(e) => {
            let reason = handshake_failure(&e);
            shared.counters.handshake_failures.get_or_create(&ReasonLabels { reason }).inc();
            if matches!(reason, "closed" | "evicted") {
                tracing::debug!(%remote, error = %e, "TLS handshake closed");
            } else if let Some(held_back) = HANDSHAKE_LOG.allow() {
                tracing::warn!(
                    %remote,
                    reason,
                    error = %e,
                    held_back,
                    "TLS handshake failed; the client gets no answer (at most one line a second; gitgate_tls_handshake_failures_total counts each)"
                );
            }
            return;
        }
    };
    let peer = Peer::of(tls.get_ref().1);
    let pool = shared.limits.pool_of(&peer);
    let Some(place) = shared.connections.admit(pool) else {
        shared.counters.pool_full.get_or_create(&PoolLabels { pool: pool.label() }).inc();
        tracing::debug!(pool = pool.label(), "connection closed: its pool is full");
        return;
    };
    let activity = Arc::new(Activity::default());
    // The apiserver's idle connections outlive its client's idle timeout
    // (90 s in client-go), so it is the one to close them, never racing a
    // request against gitgate.
    let idle = match pool {
        Pool::Reserved => shared.limits.header_timeout.max(RESERVED_IDLE),
        Pool::Open => shared.limits.header_timeout,
    };
    let stream = Watched::new(tls, activity.clone(), idle);
    let service = WithPeer { inner: shared.router.clone(), peer, activity, _place: Some(Arc::new(place)) };
    let split = shared.split && pool == Pool::Reserved;
    let main = shared.main.clone();
    let serve = serve_http(stream, service, shared, alive);
    if split {
        drop(main.spawn(serve));
    } else {
        serve.await;
    }
}

/// HTTP/1.1 or HTTP/2 on an established connection until it ends; on
/// shutdown, ends it after its requests in flight (or when the drain time
/// is up).
async fn serve_http(
    stream: Watched<TlsStream<TcpStream>>,
    service: WithPeer<Router>,
    shared: Arc<Shared>,
    _alive: mpsc::Sender<()>,
) {
    let mut stop = shared.stop.clone();
    let mut hard = shared.hard.clone();
    let conn = shared.builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        biased;
        _ = async { drop(stop.wait_for(|s| *s != Stopping::No).await) } => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                biased;
                _ = async { drop(hard.wait_for(|h| *h).await) } => {}
                _ = &mut conn => {}
            }
        }
        _ = &mut conn => {}
    }
}

/// The nice value the open pool's worker threads add to their own.
pub const OPEN_NICE: i32 = 10;

/// Worker threads of the open pool's runtime: as many as the main one.
fn open_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Lowers the calling thread's CPU priority by `by` (nice, at most 19).
pub fn lower_priority(by: i32) -> std::io::Result<()> {
    let me = rustix::thread::gettid();
    let now = rustix::process::getpriority_process(Some(me))?;
    rustix::process::setpriority_process(Some(me), (now + by).min(19))?;
    Ok(())
}

/// The name of the open pool's worker threads.
pub const OPEN_THREAD: &str = "gitgate-open";

/// The runtime of the open pool (and of every handshake): its worker
/// threads, named [`OPEN_THREAD`], lower their own CPU priority when they
/// start. It is shut down on a thread of its own when dropped.
pub struct OpenRuntime {
    pub handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl OpenRuntime {
    /// Starts the runtime with `threads` workers, each calling
    /// `lower(nice)` first. A worker that cannot lower its priority logs a
    /// warning and serves anyway.
    pub fn start(threads: usize, nice: i32, lower: fn(i32) -> std::io::Result<()>) -> std::io::Result<OpenRuntime> {
        // the workers log into whatever the caller logs into
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(OPEN_THREAD)
            .on_thread_start(move || {
                if let Err(e) = lower(nice) {
                    tracing::dispatcher::with_default(&dispatch, || {
                        tracing::warn!(
                            error = %e,
                            nice,
                            "failed to lower the CPU priority of an open-pool worker thread; it serves at normal priority"
                        );
                    });
                }
            })
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new().name("gitgate-open-rt".into()).spawn(move || {
            let _ = runtime.block_on(stopped);
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(OpenRuntime { handle, _stop: stop })
    }
}

/// How long the apiserver's connections (the reserved pool) may sit with
/// no request in flight.
const RESERVED_IDLE: Duration = Duration::from_secs(120);

/// Failed handshakes are logged at most once a second.
static HANDSHAKE_LOG: crate::overload::LogLimit = crate::overload::LogLimit::new();

/// A pending handshake pushed out by newer connections.
#[derive(Debug, thiserror::Error)]
#[error("the TLS handshake was cut off: newer connections needed its slot")]
struct Evicted;

/// Why a handshake failed, as a metric label.
fn handshake_failure(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error as TlsErr};
    if e.kind() == std::io::ErrorKind::TimedOut {
        return "timeout";
    }
    if e.get_ref().is_some_and(|inner| inner.is::<Evicted>()) {
        return "evicted";
    }
    match e.get_ref().and_then(|inner| inner.downcast_ref::<TlsErr>()) {
        Some(TlsErr::InvalidCertificate(CertificateError::UnknownIssuer)) => "unknown_ca",
        Some(TlsErr::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. } | CertificateError::NotValidYet,
        )) => "expired",
        Some(TlsErr::InvalidCertificate(_)) => "bad_certificate",
        Some(_) => "tls_error",
        None if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ) =>
        {
            "closed"
        }
        None => "tls_error",
    }
}

/// A connection's service: puts the connection's [`Peer`] into each
/// request's extensions, counts the connection's requests in flight, and
/// holds the connection's place in its pool.
#[derive(Clone)]
pub struct WithPeer<S> {
    inner: S,
    peer: Peer,
    activity: Arc<Activity>,
    _place: Option<Arc<ConnectionSlot>>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for WithPeer<S>
where
    S: tower::Service<axum::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        let busy = Busy::start(self.activity.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(busy);
            out
        })
    }
}

/// A connection's requests in flight, and when it last had none.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// Bumped whenever a request ends: the idle clock restarts.
    ended: AtomicUsize,
}

/// One request in flight on a connection.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's stream: reading fails (and the connection closes) once
/// it has gone `limit` with no request in flight and none completed —
/// hyper bounds HTTP/1.1 header reads itself, but an HTTP/2 client could
/// otherwise hold a connection forever with a header block it never ends,
/// a trickle of PINGs, or nothing at all.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    limit: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    /// The `ended` count the idle clock was last started at.
    seen: usize,
}

impl<S> Watched<S> {
    fn new(inner: S, activity: Arc<Activity>, limit: Duration) -> Self {
        let idle = Box::pin(tokio::time::sleep(limit));
        Watched { inner, activity, limit, idle, seen: 0 }
    }

    /// Whether the connection has been idle too long; arms the timer so
    /// the task wakes to check again.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let ended = self.activity.ended.load(Ordering::Acquire);
        let now = tokio::time::Instant::now();
        if self.activity.in_flight.load(Ordering::Acquire) > 0 || ended != self.seen {
            // busy, or a request ended since: the idle clock restarts (to
            // within an eighth of the limit: resetting the timer on every
            // read of a busy connection costs more than it tells)
            self.seen = ended;
            let restart = now + self.limit;
            if restart > self.idle.deadline() + self.limit / 8 {
                self.idle.as_mut().reset(restart);
            }
        }
        if self.idle.as_mut().poll(cx).is_ready() {
            if self.activity.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            self.idle.as_mut().reset(now + self.limit);
            let _ = self.idle.as_mut().poll(cx);
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if self.expired(cx) {
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request completed within the header timeout",
                    )))
                } else {
                    Poll::Pending
                }
            }
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Binds `addr` and serves `router` over plain HTTP (`--metrics-listen`:
/// Prometheus scrapes it without TLS or a token).
pub async fn start_plain(addr: SocketAddr, router: Router) -> Result<Running, ServerError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
    let inner = axum_server::Handle::new();
    let server =
        axum_server::from_tcp(listener).map_err(|source| ServerError::Bind { addr, source })?.handle(inner.clone());
    let (handle, mut stop) = Handle::new();
    let task = tokio::spawn(async move {
        let serve = server.serve(router.into_make_service());
        tokio::pin!(serve);
        tokio::select! {
            r = &mut serve => return r.map_err(ServerError::Serve),
            s = stop.wait_for(|s| *s != Stopping::No) => {
                let drain = match s.map(|s| *s) {
                    Ok(Stopping::Drain(d)) => d,
                    _ => None,
                };
                inner.graceful_shutdown(drain);
            }
        }
        serve.await.map_err(ServerError::Serve)
    });
    Ok(Running { addr: local, handle, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Log lines written into memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn run_on(rt: &OpenRuntime) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        rt.handle.spawn(async move {
            let _ = tx.send(std::thread::current().name().unwrap_or_default().to_string());
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn a_worker_that_cannot_lower_its_priority_logs_it_and_serves_anyway() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let rt = tracing::subscriber::with_default(subscriber, || {
            OpenRuntime::start(1, OPEN_NICE, |_| Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied)))
        })
        .expect("a failure to lower the priority is not fatal");
        assert_eq!(run_on(&rt), OPEN_THREAD, "the runtime serves");
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("WARN"), "{text}");
        assert!(text.contains("failed to lower the CPU priority"), "{text}");
    }

    #[test]
    fn open_pool_workers_run_at_a_lower_priority() {
        let rt = OpenRuntime::start(1, OPEN_NICE, lower_priority).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        rt.handle.spawn(async move {
            let _ = tx.send(rustix::process::getpriority_process(Some(rustix::thread::gettid())));
        });
        let worker = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        let here = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        assert_eq!(worker, (here + OPEN_NICE).min(19), "the worker lowered its own priority, nobody else's");
    }
}
