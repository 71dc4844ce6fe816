//! Prometheus metrics. One explicit [`Registry`], no global state: every
//! box registers its own metrics while the server is assembled.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Seconds. Most buckets lie below 1 ms: that is where admission lives.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 2.5];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub endpoint: &'static str,
    pub operation: &'static str,
    pub kind: String,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub endpoint: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverloadLabels {
    pub endpoint: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnauthenticatedLabels {
    pub endpoint: &'static str,
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// At most this many distinct `kind` label values; later ones are counted
/// as `other`.
pub const MAX_KINDS: usize = 256;

/// The `kind` label of a review: the request's kind is whatever the caller
/// wrote, so its values are bounded — a Kubernetes kind name (ASCII
/// letters and digits, starting with a letter, at most 63 long) among the
/// first [`MAX_KINDS`] seen, else `other` (or `invalid`). Unbounded label
/// values are a memory and scrape-size denial of service (the class of
/// prometheus/client_golang's CVE-2022-21698).
#[derive(Default)]
pub struct KindLabels {
    seen: std::sync::RwLock<std::collections::HashSet<String>>,
}

impl KindLabels {
    pub fn label(&self, kind: &str) -> String {
        let valid = !kind.is_empty()
            && kind.len() <= 63
            && kind.starts_with(|c: char| c.is_ascii_alphabetic())
            && kind.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            return "invalid".into();
        }
        if self.seen.read().unwrap_or_else(|e| e.into_inner()).contains(kind) {
            return kind.to_owned();
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if seen.contains(kind) || seen.len() < MAX_KINDS {
            seen.insert(kind.to_owned());
            kind.to_owned()
        } else {
            "other".into()
        }
    }
}

/// Admission metrics.
pub struct AdmissionMetrics {
    pub reviews: Family<ReviewLabels, Counter>,
    /// Bounds the `kind` label of `reviews`.
    pub kinds: KindLabels,
    pub duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    pub rejected: Family<RejectLabels, Counter>,
    pub record_failures: Counter,
    /// Webhook requests refused because the caller did not prove it is
    /// the apiserver (no or wrong client certificate).
    pub unauthenticated: Family<UnauthenticatedLabels, Counter>,
    /// TLS handshakes that failed, by reason (a client certificate of
    /// another CA, an expired one, a timeout, …).
    pub handshake_failures: Family<ReasonLabels, Counter>,
    /// Connections closed after the handshake because their pool was full.
    pub pool_full: Family<PoolLabels, Counter>,
    /// Reviews refused with 429 because every seat was taken.
    pub overloaded: Family<OverloadLabels, Counter>,
}

impl AdmissionMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = AdmissionMetrics {
            reviews: Family::default(),
            kinds: KindLabels::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            rejected: Family::default(),
            record_failures: Counter::default(),
            unauthenticated: Family::default(),
            handshake_failures: Family::default(),
            pool_full: Family::default(),
            overloaded: Family::default(),
        };
        registry.register(
            "gitgate_admission_reviews",
            "AdmissionReviews answered, by endpoint, operation, kind and decision",
            m.reviews.clone(),
        );
        registry.register(
            "gitgate_admission_duration_seconds",
            "Time from the end of the request body to the encoded AdmissionReview",
            m.duration.clone(),
        );
        registry.register(
            "gitgate_admission_rejected_requests",
            "Requests refused before a decision (bad body, too large, too slow, not ready), by HTTP code",
            m.rejected.clone(),
        );
        registry.register(
            "gitgate_admission_record_failures",
            "Decisions that could not be recorded in the audit log",
            m.record_failures.clone(),
        );
        registry.register(
            "gitgate_admission_unauthenticated_requests",
            "Webhook requests refused before a decision because the caller presented no accepted client certificate",
            m.unauthenticated.clone(),
        );
        registry.register(
            "gitgate_tls_handshake_failures",
            "TLS handshakes that failed, by reason (unknown_ca, expired, bad_certificate, timeout, evicted, closed, tls_error)",
            m.handshake_failures.clone(),
        );
        registry.register(
            "gitgate_connections_refused",
            "Connections closed after the TLS handshake because their pool (reserved: the client CA's; open: the rest) was full",
            m.pool_full.clone(),
        );
        registry.register(
            "gitgate_admission_overloaded",
            "Reviews answered 429 because every seat was taken (queue_full) or the wait for one ran out (queue_timeout)",
            m.overloaded.clone(),
        );
        m
    }
}

/// Encodes a registry in the Prometheus/OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// `GET /metrics`: the registry encoded, with the OpenMetrics content type.
pub fn response(registry: &Registry) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        encode(registry),
    )
        .into_response()
}
