//! The admission server's request path, top to bottom:
//! read the body (size and time bounded) → [`Review::decode`] →
//! [`Decider::decide`] → [`Decision::respond`] → [`Recorder::record`] →
//! one 200 AdmissionReview.
//!
//! A denial is data: every decision is a 200 AdmissionReview. Only a broken
//! transport (unreadable, oversized, slow or non-AdmissionReview body, or
//! a server not ready yet) gets a 4xx/5xx, whose JSON body names the
//! problem and never quotes the request.
//!
//! Under load: a review holds one of `max_in_flight` seats while its body
//! is read and decided; up to `max_queue` more wait for one (at most
//! `queue_timeout`), the rest get a 429 with `Retry-After: 1` at once —
//! the apiserver retries it, then applies the webhook's failurePolicy.
//! With `--client-ca` only the apiserver's reviews take seats: anybody
//! else is answered 401 and its body is discarded as it arrives, never
//! buffered or parsed.
//!
//! Owns: the HTTP edge of the webhooks (routes, caller checks, limits),
//! the AdmissionReview types, and the [`Decider`]: an immutable list of
//! stages per endpoint, swapped whole. Stages (provenance, policies,
//! break-glass windows, the secrets bridge) live in their own modules and
//! plug in through [`Stage`]; they pass facts on through [`Decision`].
//!
//! Must never import: `provenance`, `policy`, `secrets`, `sync`, `desired`,
//! `render`, `audit`, `dashboard` — they build on admission (it reads only
//! `tls`, `metrics` and `overload`).

pub mod pipeline;
pub mod review;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use prometheus_client::registry::Registry;

pub use pipeline::{AsyncStage, Decider, Decision, Denial, Endpoint, Flow, Stage, StageFuture};
pub use review::{AdmissionRequest, AdmissionResponse, Caller, Operation, Review};

use crate::metrics::{
    AdmissionMetrics, EndpointLabels, OverloadLabels, RejectLabels, ReviewLabels, UnauthenticatedLabels,
};
use crate::overload::{Gate, Overloaded};
use crate::tls::Peer;

/// Bounds on one request, and on how many are decided at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Time allowed to receive the body (408 after it).
    pub request_timeout: Duration,
    /// Reviews read and decided at once.
    pub max_in_flight: usize,
    /// Reviews waiting for a seat; beyond it, 429 at once.
    pub max_queue: usize,
    /// Longest wait for a seat before a 429.
    pub queue_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 64,
            max_queue: 1024,
            queue_timeout: Duration::from_secs(1),
        }
    }
}

/// Where decisions go after they are made (the audit log, logs).
pub trait Recorder: Send + Sync {
    /// Records one decision. An error means the decision could not be
    /// made durable; with `fail_closed` the request is then denied.
    fn record(&self, event: &Event<'_>) -> Result<(), RecordError>;
}

/// One decision, as the recorder sees it.
pub struct Event<'a> {
    pub endpoint: Endpoint,
    pub request: &'a AdmissionRequest,
    pub decision: &'a Decision,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("failed to record the admission decision: {reason}")]
pub struct RecordError {
    pub reason: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl RecordError {
    /// The operating system's error under this one, if any (disk full,
    /// read-only file system): what a denial may tell the requester.
    pub fn io_cause(&self) -> Option<String> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = self.source.as_deref().map(|e| e as _);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return Some(io.to_string());
            }
            cur = e.source();
        }
        None
    }
}

/// Records decisions as structured log lines: identity and outcome only,
/// never the object.
pub struct LogRecorder;

impl Recorder for LogRecorder {
    fn record(&self, e: &Event<'_>) -> Result<(), RecordError> {
        let r = e.request;
        match &e.decision.denial {
            None => tracing::debug!(
                endpoint = e.endpoint.as_str(), uid = %r.uid, operation = r.operation.as_str(),
                kind = %r.kind.kind, namespace = %r.namespace, name = %r.object_name(),
                user = %r.user_info.username, dry_run = r.dry_run, "admitted"),
            Some(d) => tracing::info!(
                endpoint = e.endpoint.as_str(), uid = %r.uid, operation = r.operation.as_str(),
                kind = %r.kind.kind, namespace = %r.namespace, name = %r.object_name(),
                user = %r.user_info.username, dry_run = r.dry_run, stage = d.stage,
                reason = %d.reason, message = %d.message, "denied"),
        }
        Ok(())
    }
}

/// Who may call `/validate` and `/mutate`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CallerPolicy {
    /// Anyone who reaches the port (no `--client-ca`): every review is
    /// recorded as `unauthenticated`.
    #[default]
    Open,
    /// Only a TLS client whose certificate chained to `--client-ca` and,
    /// when `names` is not empty, whose common name or DNS name is one of
    /// them (`--client-name`).
    ClientCertificate { names: Vec<String> },
}

/// Why a caller got no decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unauthenticated {
    NoCertificate,
    NameNotAllowed,
}

impl CallerPolicy {
    /// The caller of a request whose connection proved `peer`, or why it
    /// may not ask.
    fn authenticate(&self, peer: Option<&Peer>) -> Result<Caller, Unauthenticated> {
        let names = match self {
            CallerPolicy::Open => return Ok(Caller::Unauthenticated),
            CallerPolicy::ClientCertificate { names } => names,
        };
        match peer {
            Some(Peer::Verified { names: presented }) => {
                if names.is_empty() || presented.iter().any(|p| names.contains(p)) {
                    Ok(Caller::Apiserver)
                } else {
                    Err(Unauthenticated::NameNotAllowed)
                }
            }
            Some(Peer::Anonymous) | None => Err(Unauthenticated::NoCertificate),
        }
    }

    fn mode(&self) -> &'static str {
        match self {
            CallerPolicy::Open => "unauthenticated",
            CallerPolicy::ClientCertificate { .. } => "client-certificate",
        }
    }
}

impl Unauthenticated {
    fn label(self) -> &'static str {
        match self {
            Unauthenticated::NoCertificate => "no_certificate",
            Unauthenticated::NameNotAllowed => "name_not_allowed",
        }
    }

    /// The response body's message: says what is needed, names nothing
    /// the caller could use (the accepted names stay in gitgate's log).
    fn message(self) -> &'static str {
        match self {
            Unauthenticated::NoCertificate => {
                "gitgate answers admission reviews only from the apiserver: present a client certificate signed by the CA gitgate trusts (--client-ca)"
            }
            Unauthenticated::NameNotAllowed => {
                "gitgate answers admission reviews only from the apiserver: this client certificate's name is not one gitgate accepts (--client-name)"
            }
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Unauthenticated::NoCertificate => StatusCode::UNAUTHORIZED,
            Unauthenticated::NameNotAllowed => StatusCode::FORBIDDEN,
        }
    }
}

/// Everything the request path reads. The decider is swapped whole when a
/// new commit or policy set is compiled; requests never wait for it.
pub struct AdmissionState {
    decider: ArcSwapOption<Decider>,
    metrics: AdmissionMetrics,
    registry: Registry,
    limits: Limits,
    gate: Gate,
    recorder: Arc<dyn Recorder>,
    /// Deny when a decision cannot be recorded (the default).
    fail_closed: bool,
    callers: CallerPolicy,
}

impl AdmissionState {
    /// Registers the admission metrics into `registry`, which the state
    /// then owns and serves on `/metrics`.
    pub fn new(mut registry: Registry, limits: Limits, recorder: Arc<dyn Recorder>) -> Self {
        let metrics = AdmissionMetrics::register(&mut registry);
        AdmissionState {
            decider: ArcSwapOption::empty(),
            metrics,
            registry,
            limits,
            gate: Gate::new(limits.max_in_flight, limits.max_queue, limits.queue_timeout),
            recorder,
            fail_closed: true,
            callers: CallerPolicy::Open,
        }
    }

    /// Who may call the webhooks (default: anyone, recorded as
    /// `unauthenticated`).
    pub fn with_callers(mut self, callers: CallerPolicy) -> Self {
        self.callers = callers;
        self
    }

    pub fn callers(&self) -> &CallerPolicy {
        &self.callers
    }

    /// Admit decisions that could not be recorded (audit fail-open).
    pub fn fail_open_on_record_error(mut self) -> Self {
        self.fail_closed = false;
        self
    }

    /// Publishes a decider; from then on `/readyz` is ready.
    pub fn publish(&self, decider: Arc<Decider>) {
        self.decider.store(Some(decider));
    }

    pub fn is_ready(&self) -> bool {
        self.decider.load().is_some()
    }

    pub fn metrics(&self) -> &AdmissionMetrics {
        &self.metrics
    }

    /// The review seats.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// The whole request path for one body from an unauthenticated caller.
    pub async fn review(&self, endpoint: Endpoint, body: &[u8]) -> Result<Vec<u8>, Rejection> {
        self.review_from(endpoint, body, Caller::Unauthenticated).await
    }

    /// The whole request path for one body sent by `caller`; infallible
    /// once decoded.
    pub async fn review_from(&self, endpoint: Endpoint, body: &[u8], caller: Caller) -> Result<Vec<u8>, Rejection> {
        let start = Instant::now();
        let mut review = Review::decode(body).map_err(Rejection::Decode)?;
        review.request.caller = caller;
        let decider = self.decider.load_full().ok_or(Rejection::NotReady)?;
        let request = &review.request;

        let mut decision = decider.decide(endpoint, request).await;
        let event = Event { endpoint, request, decision: &decision, elapsed: start.elapsed() };
        if let Err(e) = self.recorder.record(&event) {
            self.metrics.record_failures.inc();
            tracing::error!(error = %crate::error_chain(&e), uid = %request.uid, "audit record failed");
            if self.fail_closed {
                // The OS's reason ("No space left on device"), never the
                // log's path.
                let why = e.io_cause().map(|c| format!(" ({c})")).unwrap_or_default();
                decision.deny(
                    "audit",
                    503,
                    "AuditUnavailable",
                    format!(
                        "gitgate could not record this change in its audit log{why}, so it refuses it (the audit log fails closed); retry when the audit log is writable"
                    ),
                );
            }
        }
        let response = decision.respond(endpoint, &request.uid);
        let out = review::encode(review.api_version, &response);

        let label = match (&decision.denial, decision.warnings.is_empty()) {
            (Some(_), _) => "denied",
            (None, false) => "warned",
            (None, true) => "allowed",
        };
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels {
                endpoint: endpoint.as_str(),
                operation: request.operation.as_str(),
                kind: self.metrics.kinds.label(&request.kind.kind),
                decision: label,
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&EndpointLabels { endpoint: endpoint.as_str() })
            .observe(start.elapsed().as_secs_f64());
        Ok(out)
    }
}

/// Why a request got no decision.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Decode(review::DecodeError),
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body was not received within {0:?}")]
    Timeout(Duration),
    #[error("failed to read request body")]
    Read,
    #[error("gitgate is not ready: its desired state is not loaded yet")]
    NotReady,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Decode(_) | Rejection::Read => StatusCode::BAD_REQUEST,
            Rejection::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Rejection::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A `metav1.Status`-shaped JSON error body.
pub fn error_response(code: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code.as_u16(),
        "reason": code.canonical_reason().unwrap_or("Error"),
        "message": message,
    });
    json_response(code, serde_json::to_vec(&body).unwrap_or_default())
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The answer to a review that found no seat: nothing about the request
/// or gitgate's state, and cheap to send.
fn overloaded_response() -> Response {
    const BODY: &[u8] = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":429,"reason":"TooManyRequests","message":"gitgate is at capacity: retry"}"#;
    let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, Vec::new());
    *resp.body_mut() = Body::from(bytes::Bytes::from_static(BODY));
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Reads and discards a refused caller's body as it arrives, within the
/// same size and time limits, holding none of it: an HTTP/2 client still
/// sending would otherwise see its stream reset instead of the answer.
async fn discard_body(body: Body, limits: Limits) {
    let mut body = body;
    let mut seen = 0usize;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen > limits.max_body_bytes {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(limits.request_timeout, drain).await;
}

/// Reads the body within the size and time limits.
async fn read_body(body: Body, headers: &axum::http::HeaderMap, limits: Limits) -> Result<bytes::Bytes, Rejection> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(Rejection::TooLarge { limit: limits.max_body_bytes });
    }
    let limited = Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.request_timeout, limited.collect()).await {
        Err(_) => Err(Rejection::Timeout(limits.request_timeout)),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Rejection::TooLarge { limit: limits.max_body_bytes })
        }
        Ok(Err(_)) => Err(Rejection::Read),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn handle(state: &AdmissionState, endpoint: Endpoint, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Who is asking is settled before the body is read: a caller that is
    // not the apiserver gets no decision and leaves no audit record.
    let caller = match state.callers.authenticate(parts.extensions.get::<Peer>()) {
        Ok(caller) => caller,
        Err(why) => {
            state
                .metrics
                .unauthenticated
                .get_or_create(&UnauthenticatedLabels { endpoint: endpoint.as_str(), reason: why.label() })
                .inc();
            let presented = match parts.extensions.get::<Peer>() {
                Some(Peer::Verified { names }) => names.join(","),
                _ => String::new(),
            };
            static REFUSED: crate::overload::LogLimit = crate::overload::LogLimit::new();
            if let Some(held_back) = REFUSED.allow() {
                tracing::warn!(
                    endpoint = endpoint.as_str(),
                    reason = why.label(),
                    presented = %presented,
                    accepted = ?state.callers,
                    held_back,
                    "refused an admission request from a caller that is not the apiserver (at most one line a second; gitgate_admission_unauthenticated_requests_total counts each)"
                );
            }
            // The body is discarded as it arrives (never buffered nor
            // decoded), and the caller takes no review seat.
            discard_body(body, state.limits).await;
            return error_response(why.status(), why.message());
        }
    };
    let _seat = match state.gate.enter().await {
        Ok(seat) => seat,
        Err(why) => {
            state
                .metrics
                .overloaded
                .get_or_create(&OverloadLabels { endpoint: endpoint.as_str(), reason: why.label() })
                .inc();
            if why == Overloaded::QueueFull {
                tracing::debug!(endpoint = endpoint.as_str(), "review refused: every seat and the queue are full");
            }
            return overloaded_response();
        }
    };
    let result = match read_body(body, &parts.headers, state.limits).await {
        Ok(bytes) => state.review_from(endpoint, &bytes, caller).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(rejection) => {
            let code = rejection.status();
            state
                .metrics
                .rejected
                .get_or_create(&RejectLabels { endpoint: endpoint.as_str(), code: code.as_u16() })
                .inc();
            tracing::warn!(endpoint = endpoint.as_str(), code = code.as_u16(), error = %rejection, "rejected admission request");
            error_response(code, &rejection.to_string())
        }
    }
}

async fn validate(State(state): State<Arc<AdmissionState>>, req: Request) -> Response {
    handle(&state, Endpoint::Validate, req).await
}

async fn mutate(State(state): State<Arc<AdmissionState>>, req: Request) -> Response {
    handle(&state, Endpoint::Mutate, req).await
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

async fn readyz(State(state): State<Arc<AdmissionState>>) -> Response {
    if state.is_ready() {
        let body = serde_json::json!({"status": "ready", "callers": state.callers.mode()});
        json_response(StatusCode::OK, serde_json::to_vec(&body).unwrap_or_default())
    } else {
        error_response(StatusCode::SERVICE_UNAVAILABLE, "gitgate is not ready: its desired state is not loaded yet")
    }
}

async fn metrics(State(state): State<Arc<AdmissionState>>) -> Response {
    crate::metrics::response(&state.registry)
}

/// The admission router: `/validate`, `/mutate`, `/healthz`, `/readyz`,
/// `/metrics`. Other boxes merge their routes into it.
pub fn router(state: Arc<AdmissionState>) -> Router {
    routes(state.clone()).merge(metrics_router(state))
}

/// `/metrics` alone (`serve --metrics-listen` serves it on its own port).
pub fn metrics_router(state: Arc<AdmissionState>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

/// The admission router without `/metrics`.
pub fn routes(state: Arc<AdmissionState>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .with_state(state)
}
