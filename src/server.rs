//! The HTTPS server: axum on rustls, HTTP/1.1 and HTTP/2, TCP_NODELAY,
//! bounded handshake and header times, graceful drain. Each connection's
//! requests carry the [`Peer`] its TLS handshake proved (a verified client
//! certificate or none); failed handshakes are logged and counted by reason.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::accept::{Accept, NoDelayAcceptor};
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioTimer;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::metrics::ReasonLabels;
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
}

/// Connection-level bounds.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// A client must finish the TLS handshake within this.
    pub handshake_timeout: Duration,
    /// A client must send a request's headers within this (slowloris).
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits { handshake_timeout: Duration::from_secs(10), header_timeout: Duration::from_secs(10) }
    }
}

/// A server that is listening.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: Handle<SocketAddr>,
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
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;

    let acceptor = PeerAcceptor {
        inner: RustlsAcceptor::new(tls).handshake_timeout(limits.handshake_timeout).acceptor(NoDelayAcceptor::new()),
        failures,
    };
    let handle = Handle::new();
    let mut server = axum_server::from_tcp(listener)
        .map_err(|source| ServerError::Bind { addr, source })?
        .acceptor(acceptor)
        .handle(handle.clone());
    server.http_builder().http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    server.http_builder().http2().timer(TokioTimer::new()).max_concurrent_streams(1000);
    let task = tokio::spawn(async move { server.serve(router.into_make_service()).await.map_err(ServerError::Serve) });
    Ok(Running { addr: local, handle, task })
}

/// The TLS acceptor, plus: the verified peer goes into every request's
/// extensions, and a failed handshake is logged and counted.
#[derive(Clone)]
struct PeerAcceptor {
    inner: RustlsAcceptor<NoDelayAcceptor>,
    failures: Family<ReasonLabels, Counter>,
}

impl<S: Send + 'static> Accept<TcpStream, S> for PeerAcceptor {
    type Stream = TlsStream<TcpStream>;
    type Service = WithPeer<S>;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let remote = stream.peer_addr().ok();
        let handshake = self.inner.accept(stream, service);
        let failures = self.failures.clone();
        Box::pin(async move {
            match handshake.await {
                Ok((tls, service)) => {
                    let peer = Peer::of(tls.get_ref().1);
                    Ok((tls, WithPeer { inner: service, peer }))
                }
                Err(e) => {
                    let reason = handshake_failure(&e);
                    failures.get_or_create(&ReasonLabels { reason }).inc();
                    let remote = remote.map(|a| a.to_string()).unwrap_or_default();
                    if reason == "closed" {
                        tracing::debug!(%remote, error = %e, "TLS handshake closed by the client");
                    } else {
                        tracing::warn!(%remote, reason, error = %e, "TLS handshake failed; the client gets no answer");
                    }
                    Err(e)
                }
            }
        })
    }
}

/// Why a handshake failed, as a metric label.
fn handshake_failure(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error as TlsErr};
    if e.kind() == std::io::ErrorKind::TimedOut {
        return "timeout";
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
/// request's extensions.
#[derive(Clone)]
pub struct WithPeer<S> {
    inner: S,
    peer: Peer,
}

impl<S, B> tower::Service<axum::http::Request<B>> for WithPeer<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        self.inner.call(req)
    }
}

/// Binds `addr` and serves `router` over plain HTTP (`--metrics-listen`:
/// Prometheus scrapes it without TLS or a token).
pub async fn start_plain(addr: SocketAddr, router: Router) -> Result<Running, ServerError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
    let handle = Handle::new();
    let server =
        axum_server::from_tcp(listener).map_err(|source| ServerError::Bind { addr, source })?.handle(handle.clone());
    let task = tokio::spawn(async move { server.serve(router.into_make_service()).await.map_err(ServerError::Serve) });
    Ok(Running { addr: local, handle, task })
}
