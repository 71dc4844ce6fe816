//! The HTTPS server: axum on rustls, HTTP/1.1 and HTTP/2, TCP_NODELAY,
//! bounded handshake and header times, graceful drain.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::rt::TokioTimer;

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
    let listener = std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;

    let acceptor =
        RustlsAcceptor::new(tls).handshake_timeout(limits.handshake_timeout).acceptor(NoDelayAcceptor::new());
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
