//! The admission router driven with `oneshot`: every captured
//! AdmissionReview, denial end to end, and every kind of bad input.

mod support;
use support::server as common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use gitgate::admission::{self, AdmissionRequest, Decider, Decision, Flow, Limits, Operation, Stage};
use serde_json::{Value, json};
use tower::ServiceExt as _;

async fn call(router: axum::Router, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::post(path).header("content-type", "application/json").body(body.into()).unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    assert_eq!(resp.headers()["content-type"], "application/json", "{path}: every answer is JSON");
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).expect("response body is JSON"))
}

fn router(decider: Decider) -> axum::Router {
    admission::router(common::state_with(decider, Limits::default()))
}

#[tokio::test]
async fn every_captured_review_gets_a_review_with_its_uid() {
    for (name, body) in common::fixtures() {
        let sent: Value = serde_json::from_slice(&body).unwrap();
        for path in ["/validate", "/mutate"] {
            let (status, got) = call(router(Decider::new()), path, body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{name} {path}");
            assert_eq!(got["apiVersion"], "admission.k8s.io/v1", "{name}");
            assert_eq!(got["kind"], "AdmissionReview", "{name}");
            assert_eq!(got["response"]["uid"], sent["request"]["uid"], "{name} {path}");
            assert_eq!(got["response"]["allowed"], true, "{name}");
            assert!(got["response"].get("patch").is_none(), "{name}: no stage, no patch");
        }
    }
}

#[tokio::test]
async fn dry_run_is_flagged_in_audit_annotations() {
    let (_, got) = call(router(Decider::new()), "/validate", common::fixture("validate-dryrun-create.json")).await;
    assert_eq!(got["response"]["auditAnnotations"]["dry-run"], "true");
    let (_, got) = call(router(Decider::new()), "/validate", common::fixture("validate-create-deployment.json")).await;
    assert!(got["response"].get("auditAnnotations").is_none());
}

#[tokio::test]
async fn v1beta1_is_answered_in_kind() {
    let mut review: Value = serde_json::from_slice(&common::fixture("validate-create-namespace.json")).unwrap();
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (status, got) = call(router(Decider::new()), "/validate", serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(got["response"]["uid"], review["request"]["uid"]);
}

/// Denies Deployments, warns on everything, annotates, and patches a label.
struct Gate;

impl Stage for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }
    fn decide(&self, req: &AdmissionRequest, d: &mut Decision) -> Flow {
        d.annotate("commit", "0123456789abcdef0123456789abcdef01234567");
        d.warn("gate", "looked at by the test gate");
        d.patch(
            "gate",
            [json_patch::PatchOperation::Add(json_patch::AddOperation {
                path: "/metadata/labels/seen".parse().unwrap(),
                value: json!("yes"),
            })],
        );
        if req.kind.kind == "Deployment" && req.operation == Operation::Create {
            d.deny("gate", 403, "Forbidden", format!("{}/{} is managed by Git", req.namespace, req.name));
            return Flow::Stop;
        }
        Flow::Continue
    }
}

/// Runs after the gate: must never see what the gate stopped.
struct AfterGate;

impl Stage for AfterGate {
    fn name(&self) -> &'static str {
        "after-gate"
    }
    fn decide(&self, req: &AdmissionRequest, d: &mut Decision) -> Flow {
        if req.kind.kind == "Deployment" && req.operation == Operation::Create {
            d.deny("after-gate", 500, "Bug", "a stage after a stop ran");
            return Flow::Stop;
        }
        d.annotate("after-gate", "ran");
        Flow::Continue
    }
}

fn gate() -> Decider {
    Decider::new().with_validating(Arc::new(Gate)).with_validating(Arc::new(AfterGate)).with_mutating(Arc::new(Gate))
}

#[tokio::test]
async fn a_denial_is_a_200_review_with_status_warnings_and_audit_annotations() {
    let (status, got) = call(router(gate()), "/validate", common::fixture("validate-create-deployment.json")).await;
    assert_eq!(status, StatusCode::OK, "a denial is data, not an HTTP error");
    let r = &got["response"];
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    assert_eq!(r["status"]["reason"], "Forbidden");
    assert_eq!(r["status"]["message"], "gitops-demo/web is managed by Git");
    assert_eq!(r["warnings"], json!(["looked at by the test gate"]));
    assert_eq!(r["auditAnnotations"]["commit"], "0123456789abcdef0123456789abcdef01234567");
    assert!(r.get("patch").is_none(), "a denial carries no patch");
    assert!(r["auditAnnotations"].get("after-gate").is_none(), "no stage runs after a stop");
    // a request the gate lets through reaches the next stage
    let (_, got) = call(router(gate()), "/validate", common::fixture("validate-create-namespace.json")).await;
    assert_eq!(got["response"]["allowed"], true);
    assert_eq!(got["response"]["auditAnnotations"]["after-gate"], "ran");
}

#[tokio::test]
async fn mutate_returns_a_base64_json_patch() {
    let (status, got) = call(router(gate()), "/mutate", common::fixture("mutate-create-namespace.json")).await;
    assert_eq!(status, StatusCode::OK);
    let r = &got["response"];
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD.decode(r["patch"].as_str().unwrap()).unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(patch, json!([{"op": "add", "path": "/metadata/labels/seen", "value": "yes"}]));
    // the validating endpoint never returns a patch
    let (_, got) = call(router(gate()), "/validate", common::fixture("validate-create-namespace.json")).await;
    assert_eq!(got["response"]["allowed"], true);
    assert!(got["response"].get("patch").is_none());
}

async fn rejected(body: impl Into<Body>, want: StatusCode) -> Value {
    let (status, got) = call(router(Decider::new()), "/validate", body).await;
    assert_eq!(status, want, "{got}");
    assert_eq!(got["kind"], "Status");
    assert_eq!(got["code"], want.as_u16());
    let text = got.to_string();
    assert!(!text.contains("CANARY"), "an error body must not quote the request: {text}");
    got
}

#[tokio::test]
async fn bad_bodies_get_a_clear_400_that_quotes_nothing() {
    let got = rejected("this is not JSON CANARY", StatusCode::BAD_REQUEST).await;
    assert!(got["message"].as_str().unwrap().contains("malformed JSON"));

    let full = common::fixture("validate-create-deployment.json");
    let got = rejected(full[..full.len() / 2].to_vec(), StatusCode::BAD_REQUEST).await;
    assert!(got["message"].as_str().unwrap().contains("truncated"), "{got}");

    let got = rejected("", StatusCode::BAD_REQUEST).await;
    assert!(got["message"].as_str().unwrap().contains("truncated"), "{got}");

    let mut review: Value = serde_json::from_slice(&full).unwrap();
    review["apiVersion"] = json!("admission.k8s.io/v2-CANARY");
    let got = rejected(serde_json::to_vec(&review).unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(got["message"].as_str().unwrap().contains("apiVersion"));

    let mut review: Value = serde_json::from_slice(&full).unwrap();
    review["kind"] = json!("ConfigMap");
    let got = rejected(serde_json::to_vec(&review).unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(got["message"].as_str().unwrap().contains("kind"));

    let got =
        rejected(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, StatusCode::BAD_REQUEST).await;
    assert!(got["message"].as_str().unwrap().contains("no request"));

    let mut review: Value = serde_json::from_slice(&full).unwrap();
    review["request"].as_object_mut().unwrap().remove("uid");
    let got = rejected(serde_json::to_vec(&review).unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(got["message"].as_str().unwrap().contains("wrong type or is missing"), "{got}");

    review["request"]["uid"] = json!("");
    let got = rejected(serde_json::to_vec(&review).unwrap(), StatusCode::BAD_REQUEST).await;
    assert!(got["message"].as_str().unwrap().contains("uid"));

    // a field of the wrong type whose value is a would-be secret
    let mut review: Value = serde_json::from_slice(&full).unwrap();
    review["request"]["operation"] = json!("CANARY-s3cr3t");
    rejected(serde_json::to_vec(&review).unwrap(), StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn json_nested_thousands_deep_is_a_400_not_a_stack_overflow() {
    let mut review: Value = serde_json::from_slice(&common::fixture("validate-create-configmap-ssa.json")).unwrap();
    review["request"]["object"] = json!("NESTING");
    let template = serde_json::to_string(&review).unwrap();
    for depth in [1_000usize, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let got = rejected(template.replace("\"NESTING\"", &nested), StatusCode::BAD_REQUEST).await;
        assert!(got["message"].as_str().unwrap().contains("malformed JSON"), "{got}");
        // and in a field gitgate does not read (skipped without recursion)
        let mut body = template.replace("\"NESTING\"", "{}");
        body.insert_str(1, &format!("\"x\":{nested},"));
        let (status, got) = call(router(Decider::new()), "/validate", body).await;
        assert_eq!(status, StatusCode::OK, "{got}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_or_without_content_length() {
    let limits = Limits { max_body_bytes: 4096, ..Limits::default() };
    let big = vec![b' '; 10_000];
    let app = admission::router(common::state_with(Decider::new(), limits));
    let (status, got) = call(app.clone(), "/validate", big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(got["message"].as_str().unwrap().contains("4096"));

    // chunked: no content-length, the limit trips while reading
    let chunks =
        big.chunks(1000).map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c))).collect::<Vec<_>>();
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let (status, _) = call(app.clone(), "/validate", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // a real review under the limit passes
    let small = common::fixture("validate-create-namespace.json");
    assert!(small.len() < 4096);
    let (status, _) = call(app, "/validate", small).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(Limits::default().max_body_bytes, 4 << 20, "the default limit is 4 MiB");
}

#[tokio::test]
async fn a_body_that_never_finishes_is_408() {
    let limits = Limits { request_timeout: Duration::from_millis(200), ..Limits::default() };
    let app = admission::router(common::state_with(Decider::new(), limits));
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"apiVersion\":"))]);
    let body = Body::from_stream(futures_util::StreamExt::chain(first, futures_util::stream::pending()));
    let started = std::time::Instant::now();
    let (status, got) = call(app, "/validate", body).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{got}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn not_ready_until_a_decider_is_published() {
    let state = Arc::new(admission::AdmissionState::new(
        Default::default(),
        Limits::default(),
        Arc::new(admission::LogRecorder),
    ));
    let app = admission::router(state.clone());
    let resp = app.clone().oneshot(Request::get("/readyz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = call(app.clone(), "/validate", common::fixture("validate-create-namespace.json")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no decision without the state it decides from");
    let resp = app.clone().oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "alive while not ready");

    state.publish(Arc::new(Decider::new()));
    let resp = app.clone().oneshot(Request::get("/readyz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, _) = call(app, "/validate", common::fixture("validate-create-namespace.json")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let (status, _) = call(router(Decider::new()), "/nope", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let resp = router(Decider::new()).oneshot(Request::get("/validate").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn metrics_count_reviews_by_decision_with_sub_millisecond_buckets() {
    let state = common::state_with(gate(), Limits::default());
    let app = admission::router(state);
    call(app.clone(), "/validate", common::fixture("validate-create-deployment.json")).await;
    call(app.clone(), "/validate", common::fixture("validate-create-namespace.json")).await;
    call(app.clone(), "/validate", "garbage").await;
    let resp = app.oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    assert!(
        text.contains(r#"gitgate_admission_reviews_total{endpoint="validate",operation="CREATE",kind="Deployment",decision="denied"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gitgate_admission_reviews_total{endpoint="validate",operation="CREATE",kind="Namespace",decision="warned"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"gitgate_admission_rejected_requests_total{endpoint="validate",code="400"} 1"#), "{text}");
    assert!(text.contains(r#"gitgate_admission_duration_seconds_bucket{le="0.0001",endpoint="validate"}"#), "{text}");
    assert!(text.contains(r#"gitgate_admission_duration_seconds_count{endpoint="validate"} 2"#), "{text}");
}

/// The request's `kind` is whatever the caller typed (any pod that reaches
/// the port, without `--client-ca`): 10,000 made-up kinds, and kinds that
/// are no kind names, must not become 10,000 metric series (unbounded
/// label values: the class of prometheus/client_golang's CVE-2022-21698).
#[tokio::test]
async fn made_up_kinds_do_not_grow_the_metrics_without_bound() {
    let state = common::state_with(gate(), Limits::default());
    let app = admission::router(state);
    let mut review: Value = serde_json::from_slice(&common::fixture("validate-create-deployment.json")).unwrap();
    for i in 0..2_000 {
        review["request"]["kind"]["kind"] = json!(format!("Kind{i}"));
        let (status, _) = call(app.clone(), "/validate", serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
    }
    for bad in ["has space", "{injected=\"x\"}", "", &"A".repeat(64)] {
        review["request"]["kind"]["kind"] = json!(bad);
        call(app.clone(), "/validate", serde_json::to_vec(&review).unwrap()).await;
    }
    let resp = app.oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap();
    let series = text.lines().filter(|l| l.starts_with("gitgate_admission_reviews_total{")).count();
    assert!(series <= gitgate::metrics::MAX_KINDS + 2, "{series} series");
    assert!(text.contains(r#"kind="Kind0""#), "the first kinds keep their names");
    let other = text.lines().find(|l| l.contains(r#"kind="other""#)).expect("the rest are counted as other");
    assert!(other.ends_with(&format!(" {}", 2_000 - gitgate::metrics::MAX_KINDS)), "{other}");
    assert!(text.contains(r#"kind="invalid""#) && !text.contains("has space") && !text.contains("injected"), "{text}");
}

/// A recorder that cannot write.
struct Broken;

impl admission::Recorder for Broken {
    fn record(&self, _: &admission::Event<'_>) -> Result<(), admission::RecordError> {
        Err(admission::RecordError { reason: "disk full".into(), source: None })
    }
}

#[tokio::test]
async fn an_unrecordable_decision_is_denied_by_default_and_admitted_when_fail_open() {
    let state = admission::AdmissionState::new(Default::default(), Limits::default(), Arc::new(Broken));
    state.publish(Arc::new(Decider::new()));
    let (status, got) =
        call(admission::router(Arc::new(state)), "/validate", common::fixture("validate-create-namespace.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["response"]["allowed"], false);
    assert_eq!(got["response"]["status"]["reason"], "AuditUnavailable");

    let state = admission::AdmissionState::new(Default::default(), Limits::default(), Arc::new(Broken))
        .fail_open_on_record_error();
    state.publish(Arc::new(Decider::new()));
    let (_, got) =
        call(admission::router(Arc::new(state)), "/validate", common::fixture("validate-create-namespace.json")).await;
    assert_eq!(got["response"]["allowed"], true);
}
