//! `gitgate serve --hub --fleet FILE`: the fleet's hub alone. No Git, no
//! sync loop, no webhooks, no keys: the spokes' status read over their
//! authenticated APIs, on `/ui/fleet` and `/api/v1/fleet` behind the
//! dashboard's login, with `/healthz`, `/readyz` (after the first round)
//! and `/metrics`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::registry::Registry;

use super::ServeArgs;
use super::serve::{Callers, Fleet, serve_config};
use crate::config::ServeConfig;
use crate::dashboard::DashboardArgs;
use crate::fleet::hub::Hub;
use crate::server::{self, ConnLimits};

/// The hub's flags, validated once.
pub struct Settings {
    pub config: ServeConfig,
    pub fleet: Fleet,
    pub dashboard: DashboardArgs,
    /// The cluster whose apiserver reviews login tokens (`--kubeconfig`),
    /// when `--auth-kubeconfig` names none.
    pub kubeconfig: Option<PathBuf>,
}

impl Settings {
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Settings> {
        let fleet = Fleet::from_args(&args)?.context("--hub needs --fleet FILE")?;
        Ok(Settings {
            config: serve_config(&args)?,
            fleet,
            dashboard: args.dashboard,
            kubeconfig: args.sync.kubeconfig.clone(),
        })
    }
}

/// Runs the hub until SIGTERM or Ctrl-C, then drains.
pub async fn serve(s: Settings) -> anyhow::Result<()> {
    // 1. TLS: the serving pair (a development pair generated or renewed).
    let (rustls, reloader) = super::serve::tls_files(&s.config, &Callers { client_ca: None, names: Vec::new() })?;
    // 2. The hub: every spoke asked every interval.
    let mut registry = Registry::default();
    let (hub, asking) = s.fleet.start(&mut registry)?;
    // 3. Who may look: a TokenReview against the hub's own cluster (never a
    //    spoke's), else open on a loopback --listen only.
    let cluster = match crate::sync::runtime::connect(s.kubeconfig.as_deref()).await {
        Ok(c) => Some(c.client),
        Err(e) => {
            tracing::info!(error = %crate::error_chain(&e), "the hub has no cluster of its own to review login tokens");
            None
        }
    };
    let gate = crate::dashboard::Gate::start(&s.dashboard, cluster, s.config.listen, None)
        .await
        .context("failed to set up the hub's login")?;
    // 4. Routes, then listen until a signal, then drain.
    let router = routes(hub, Arc::new(gate), Arc::new(registry));
    let limits = ConnLimits {
        handshake_timeout: s.config.header_timeout,
        header_timeout: s.config.header_timeout,
        max_handshakes: s.config.overload.max_handshakes,
        max_connections: s.config.overload.max_connections,
        http2_max_streams: s.config.overload.http2_max_streams,
        reserved_names: Vec::new(),
        low_priority_open: false,
    };
    let running = server::start(s.config.listen, rustls, router, limits).await?;
    tracing::info!(addr = %running.addr, "gitgate fleet hub listening on https://{} (the fleet: /ui/fleet)", running.addr);
    let reload = tokio::spawn(reloader.run(s.config.tls_reload_interval));
    super::serve::shutdown_signal().await;
    for task in [reload, asking] {
        task.abort();
    }
    running.shutdown(s.config.drain_timeout).await?;
    Ok(())
}

fn routes(hub: Arc<Hub>, gate: Arc<crate::dashboard::Gate>, registry: Arc<Registry>) -> axum::Router {
    let ready = hub.clone();
    crate::dashboard::fleet::hub_router(hub, gate)
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "the spokes have not been asked yet")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let resp = crate::metrics::response(&registry);
                async move { resp }
            }),
        )
}
