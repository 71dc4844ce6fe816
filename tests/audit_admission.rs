//! The audit log behind the admission server: decisions driven through
//! `/validate` with the captured AdmissionReviews answer "who changed what,
//! in which commit"; a full disk denies and loses nothing.

mod support;
use support::server as common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gitgate::admission::{self, AdmissionRequest, AdmissionState, Decider, Decision, Flow, Limits, Stage};
use gitgate::audit::log::Options;
use gitgate::audit::verify::verify_paths;
use gitgate::audit::{AuditLog, CommitRef, Entry, EventKind, Outcome, Record};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const RECONCILER: &str = "system:serviceaccount:gitops:reconciler";
const COMMIT_3: &str = "3333333333333333333333333333333333333333";
const COMMIT_1: &str = "1111111111111111111111111111111111111111";

/// A stand-in provenance stage: the reconciler's changes are traced to the
/// commit Git says owns the object; anyone else's are denied.
struct Provenance {
    commit: &'static str,
    subject: &'static str,
}

impl Stage for Provenance {
    fn name(&self) -> &'static str {
        "provenance"
    }
    fn decide(&self, req: &AdmissionRequest, d: &mut Decision) -> Flow {
        d.annotate("commit", self.commit);
        d.annotate("commit-author", "Dana Ops <dana@example.com>");
        d.annotate("commit-subject", self.subject);
        d.annotate("app", "demo");
        d.annotate("source", format!("apps/demo/{}.yaml", req.name));
        if req.user_info.username != RECONCILER {
            d.deny("provenance", 403, "NotFromGit", format!("{} is managed by Git: change it in a commit", req.name));
            return Flow::Stop;
        }
        Flow::Continue
    }
}

fn state(log: Arc<AuditLog>, commit: &'static str, subject: &'static str) -> Arc<AdmissionState> {
    let state = Arc::new(AdmissionState::new(Default::default(), Limits::default(), log));
    state.publish(Arc::new(Decider::new().with_validating(Arc::new(Provenance { commit, subject }))));
    state
}

async fn validate(state: &Arc<AdmissionState>, body: Vec<u8>) -> Value {
    let req = Request::post("/validate").header("content-type", "application/json").body(Body::from(body)).unwrap();
    let resp = admission::router(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The kubectl-edit-like UPDATE of gitops-demo/web (replicas changed), as
/// sent by `user`.
fn edit_by(user: &str) -> Vec<u8> {
    let mut review: Value =
        serde_json::from_slice(&common::fixture("validate-update-deployment-kubectl-edit-like.json")).unwrap();
    review["request"]["userInfo"]["username"] = json!(user);
    serde_json::to_vec(&review).unwrap()
}

fn options(dir: &Path) -> Options {
    let mut o = Options::new(dir.join("audit.jsonl")).with_checkpoints(dir.join("checkpoint.pk8"));
    o.replica = "gitgate-0".into();
    o
}

fn query(dir: &Path, args: &[&str]) -> Vec<Record> {
    let out = Command::new(env!("CARGO_BIN_EXE_gitgate"))
        .args(["audit", "query"])
        .arg(dir)
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn query_answers_who_changed_the_deployment_and_in_which_commit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(options(dir.path())).unwrap());

    // the sync loop applies web at commit 1 (3 replicas)
    let mut apply = Entry::new(EventKind::Apply, Outcome::Done);
    apply.operation = "APPLY".into();
    (apply.group, apply.version, apply.kind, apply.resource) =
        ("apps".into(), "v1".into(), "Deployment".into(), "deployments".into());
    (apply.namespace, apply.name, apply.app) = ("gitops-demo".into(), "web".into(), "demo".into());
    apply.commit = Some(CommitRef {
        id: COMMIT_1.into(),
        author: "Dana Ops <dana@example.com>".into(),
        subject: "web: 3 replicas".into(),
    });
    apply.user = RECONCILER.into();
    log.append(&apply).unwrap();

    // a human edits it by hand: denied, recorded with who and which commit owns it
    let at_1 = state(log.clone(), COMMIT_1, "web: 3 replicas");
    let got = validate(&at_1, edit_by("kubernetes-admin")).await;
    assert_eq!(got["response"]["allowed"], false);
    // unrelated traffic
    let got = validate(&at_1, common::fixture("validate-create-deployment-ssa-serviceaccount-token.json")).await;
    assert_eq!(got["response"]["allowed"], true);
    let got = validate(&at_1, common::fixture("validate-dryrun-create.json")).await;
    assert_eq!(got["response"]["auditAnnotations"]["dry-run"], "true");

    // commit 3 scales web to 1: the reconciler's update is admitted
    let at_3 = state(log.clone(), COMMIT_3, "web: scale to 1 replica");
    let got = validate(&at_3, edit_by(RECONCILER)).await;
    assert_eq!(got["response"]["allowed"], true);
    log.close().unwrap();

    let web = query(dir.path(), &["--object", "gitops-demo/Deployment/web"]);
    let summary: Vec<(EventKind, Outcome, &str, Option<&str>)> = web
        .iter()
        .map(|r| {
            (r.entry.event, r.entry.decision, r.entry.user.as_str(), r.entry.commit.as_ref().map(|c| c.id.as_str()))
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (EventKind::Apply, Outcome::Done, RECONCILER, Some(COMMIT_1)),
            (EventKind::Admission, Outcome::Deny, "kubernetes-admin", Some(COMMIT_1)),
            (EventKind::Admission, Outcome::Allow, RECONCILER, Some(COMMIT_3)),
        ]
    );
    let change = &web[2].entry;
    assert_eq!(change.operation, "UPDATE");
    assert_eq!(change.commit.as_ref().unwrap().subject, "web: scale to 1 replica");
    assert_eq!(change.commit.as_ref().unwrap().author, "Dana Ops <dana@example.com>");
    assert_eq!((change.app.as_str(), change.source.as_str()), ("demo", "apps/demo/web.yaml"));
    assert!(change.policies.is_empty(), "an allow no stage had a say in lists no policy: {:?}", change.policies);
    assert!(change.digest.starts_with("sha256:") && change.digest.len() == 71, "{}", change.digest);
    let denied = &web[1].entry;
    assert_eq!(denied.policies, vec!["provenance"]);
    assert_eq!(denied.code, Some(403));
    assert!(denied.reasons[0].starts_with("NotFromGit: web is managed by Git"), "{:?}", denied.reasons);

    // the other questions
    let by_commit = query(dir.path(), &["--commit", &COMMIT_3[..8]]);
    assert_eq!(by_commit.len(), 1);
    assert_eq!(by_commit[0].entry.name, "web");
    let denials = query(dir.path(), &["--decision", "deny", "--user", "kubernetes-admin"]);
    let denied: Vec<(&str, bool)> = denials.iter().map(|r| (r.entry.name.as_str(), r.entry.dry_run)).collect();
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert_eq!(denied[0], ("web", false));
    assert!(denied[1].1, "the dry run is denied too, and flagged");
    assert_eq!(query(dir.path(), &["--since", "1h"]).len(), 5);
    assert_eq!(query(dir.path(), &["--since", "2999-01-01T00:00:00Z"]).len(), 0);
    let dry: Vec<Record> = query(dir.path(), &[]).into_iter().filter(|r| r.entry.dry_run).collect();
    assert_eq!(dry.len(), 1, "the dry run is flagged");

    // the table names the user and the commit
    let table = Command::new(env!("CARGO_BIN_EXE_gitgate"))
        .args(["audit", "query"])
        .arg(dir.path())
        .args(["--object", "gitops-demo/deployments/web"])
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    let last = table.lines().last().unwrap();
    assert!(
        last.contains(RECONCILER) && last.contains(&COMMIT_3[..12]) && last.contains("web: scale to 1 replica"),
        "{table}"
    );

    // and it all verifies
    assert!(verify_paths(&[dir.path().to_owned()], &[], Some(&dir.path().join("checkpoint.pk8"))).unwrap().ok());
}

#[tokio::test]
async fn a_secret_is_recorded_without_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(options(dir.path())).unwrap());
    let body = common::fixture("validate-create-secret-stringdata.json");
    let review: Value = serde_json::from_slice(&body).unwrap();
    let state = state(log.clone(), COMMIT_1, "s");
    validate(&state, body).await;
    log.close().unwrap();
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let obj = &review["request"]["object"];
    for section in ["data", "stringData"] {
        if let Some(map) = obj[section].as_object() {
            for v in map.values() {
                let v = v.as_str().unwrap();
                assert!(!text.contains(v), "a secret value reached the audit log");
            }
        }
    }
    // the digest does not depend on the values
    let mut changed = obj.clone();
    changed["stringData"] = json!({"password": "something else entirely"});
    assert_eq!(gitgate::audit::recorder::object_digest(obj), gitgate::audit::recorder::object_digest(&changed));
}

#[tokio::test]
async fn a_full_disk_denies_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // writes to /dev/full fail with ENOSPC from the kernel
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let log = Arc::new(AuditLog::open(options(dir.path())).unwrap());
    let closed = state(log.clone(), COMMIT_1, "s");

    for _ in 0..3 {
        let got = validate(&closed, common::fixture("validate-create-deployment-ssa-serviceaccount-token.json")).await;
        assert_eq!(got["response"]["allowed"], false, "an unrecorded change is refused");
        assert_eq!(got["response"]["status"]["reason"], "AuditUnavailable");
        assert_eq!(got["response"]["status"]["code"], 503);
        // the message says why, and that it is the audit log failing closed
        let message = got["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("No space left on device") && message.contains("fails closed"), "{message}");
    }
    assert_eq!(closed.metrics().record_failures.get(), 3, "the failure is on metrics");

    // fail-open is a choice
    let open =
        Arc::new(AdmissionState::new(Default::default(), Limits::default(), log.clone()).fail_open_on_record_error());
    open.publish(Arc::new(Decider::new()));
    let got = validate(&open, common::fixture("validate-create-deployment-ssa-serviceaccount-token.json")).await;
    assert_eq!(got["response"]["allowed"], true);

    // space comes back (the file is writable again): the chain continues
    // with no gap and no trace of the refused writes
    std::fs::remove_file(&path).unwrap();
    for _ in 0..2 {
        let got = validate(&closed, common::fixture("validate-create-deployment-ssa-serviceaccount-token.json")).await;
        assert_eq!(got["response"]["allowed"], true);
    }
    log.close().unwrap();
    let report = verify_paths(&[dir.path().to_owned()], &[], Some(&dir.path().join("checkpoint.pk8"))).unwrap();
    let s = report.verdict.unwrap();
    assert_eq!(
        (s.records, s.first, s.last.map(|h| h.seq)),
        (2, Some(1), Some(2)),
        "every admitted change has its record"
    );
}
