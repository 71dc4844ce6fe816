//! `gitgate policy test`: evaluates the policies against test cases
//! offline, as `kyverno test` and `gator verify` do.
//!
//! A test file (`<policies>/tests/*.yaml`) lists cases:
//!
//! ```yaml
//! cases:
//! - name: a pinned image is allowed
//!   expect: allow            # allow | deny | warn
//!   object: { ... }          # the object of a CREATE (or UPDATE with oldObject)
//!   oldObject: { ... }       # optional: makes it an UPDATE, or a DELETE without object
//!   operation: UPDATE        # optional
//!   subResource: status      # optional
//!   namespaceLabels: {environment: production}   # optional
//!   user: {username: alice, groups: [dev]}        # optional
//!   git: {managed: true, signed: false, breakGlass: false}  # optional: the `git` variable
//!   review: ../../tests/fixtures/admission/validate-create-deployment.json  # or a captured AdmissionReview
//!   message: "substring of the denial or warning"  # optional
//!   authorizer:              # optional: the answers of CEL `authorizer` checks,
//!   - {resource: secrets, namespace: web, verb: get, allowed: true}
//!   - {user: bob, allowed: false, reason: "no RBAC"}   # first match wins
//! ```
//!
//! `gitgate policy test` sends no SubjectAccessReview: a check no entry of
//! `authorizer:` matches is denied ("no stub answer for …"), and a case
//! without `authorizer:` whose policy asks a check fails, naming the
//! checks it needs answers for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{GitVars, PolicyError, PolicySet, StaticNamespaces, authz};
use crate::admission::{AdmissionRequest, Decision, Review};
use crate::provenance::plural as resource_for;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    policy: Option<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    name: String,
    expect: Expect,
    #[serde(default)]
    object: Option<Json>,
    #[serde(default)]
    old_object: Option<Json>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace_labels: Option<HashMap<String, String>>,
    #[serde(default)]
    user: Option<Json>,
    #[serde(default)]
    git: Option<GitInput>,
    #[serde(default)]
    review: Option<PathBuf>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    authorizer: Option<Vec<AuthorizerAnswer>>,
}

/// One stubbed `authorizer` answer: the fields set must equal the
/// check's; `user` is the checked user (the request's, or
/// `system:serviceaccount:<ns>:<name>` after `serviceAccount(ns, name)`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizerAnswer {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    verb: Option<String>,
    allowed: bool,
    #[serde(default)]
    reason: String,
    /// Makes the answer errored (`errored()`, `error()`).
    #[serde(default)]
    error: Option<String>,
}

impl AuthorizerAnswer {
    fn stub(&self) -> (authz::StubRule, authz::Answer) {
        let rule = authz::StubRule {
            user: self.user.clone(),
            path: self.path.clone(),
            group: self.group.clone(),
            resource: self.resource.clone(),
            subresource: self.subresource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            verb: self.verb.clone(),
        };
        let allowed = self.allowed && self.error.is_none();
        (rule, authz::Answer { allowed, reason: self.reason.clone(), error: self.error.clone() })
    }
}

/// What a case without `authorizer:` answers: nothing, so each check it
/// asks is left pending and reported.
struct NoAnswers;

impl authz::Answers for NoAnswers {
    fn get(&self, _: &authz::Check) -> Option<authz::Answer> {
        None
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitInput {
    #[serde(default)]
    commit: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    signed: bool,
    #[serde(default)]
    managed: bool,
    #[serde(default)]
    reconciler: bool,
    #[serde(default)]
    enforced: bool,
    #[serde(default, rename = "breakGlass")]
    break_glass: bool,
    #[serde(default)]
    provenance: Option<ProvenanceInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvenanceInput {
    #[serde(default)]
    allowed: bool,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
    Warn,
}

/// One case's result.
pub struct CaseResult {
    pub file: String,
    pub policy: String,
    pub case: String,
    pub expected: &'static str,
    pub got: &'static str,
    pub passed: bool,
    pub detail: String,
}

fn label(e: Expect) -> &'static str {
    match e {
        Expect::Allow => "allow",
        Expect::Deny => "deny",
        Expect::Warn => "warn",
    }
}

fn request_for(case: &Case, base: &Path) -> Result<AdmissionRequest, String> {
    if let Some(review) = &case.review {
        let path = base.join(review);
        let body = std::fs::read(&path).map_err(|e| format!("failed to read {}: {e}", path.display()))?;
        return Review::decode(&body).map(|r| r.request).map_err(|e| format!("{}: {e}", path.display()));
    }
    let subject =
        case.object.as_ref().or(case.old_object.as_ref()).ok_or("a case needs object, oldObject or review")?;
    let api_version = subject.get("apiVersion").and_then(Json::as_str).unwrap_or("v1");
    let kind = subject.get("kind").and_then(Json::as_str).ok_or("the object has no kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let name = subject.pointer("/metadata/name").and_then(Json::as_str).unwrap_or_default();
    let namespace = subject.pointer("/metadata/namespace").and_then(Json::as_str).unwrap_or_default();
    let operation = case.operation.clone().unwrap_or_else(|| {
        match (&case.object, &case.old_object) {
            (Some(_), Some(_)) => "UPDATE",
            (None, Some(_)) => "DELETE",
            _ => "CREATE",
        }
        .to_owned()
    });
    let user = case.user.clone().unwrap_or_else(
        || json!({"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}),
    );
    let req = json!({
        "uid": format!("policy-test-{}", case.name),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource_for(kind)},
        "subResource": case.sub_resource,
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": user,
        "object": case.object,
        "oldObject": case.old_object,
    });
    serde_json::from_value(req).map_err(|e| format!("the case does not make a valid request: {e}"))
}

/// Runs every test file under `dir` against `set`.
pub fn run(set: &PolicySet, dir: &Path) -> Result<Vec<CaseResult>, PolicyError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(source) => return Err(PolicyError::Read { path: dir.to_path_buf(), source }),
    };
    files.sort();
    let mut results = Vec::new();
    for path in files {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read { path: path.clone(), source })?;
        let options = serde_saphyr::options! { strict_booleans: true };
        let file: TestFile = serde_saphyr::from_str_with_options(&text, options)
            .map_err(|e| PolicyError::Parse { origin: origin.clone(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for case in &file.cases {
            results.push(run_case(set, &origin, file.policy.as_deref().unwrap_or(""), case, base));
        }
    }
    Ok(results)
}

fn run_case(set: &PolicySet, file: &str, policy: &str, case: &Case, base: &Path) -> CaseResult {
    let mut result = CaseResult {
        file: file.to_owned(),
        policy: policy.to_owned(),
        case: case.name.clone(),
        expected: label(case.expect),
        got: "error",
        passed: false,
        detail: String::new(),
    };
    let req = match request_for(case, base) {
        Ok(r) => r,
        Err(e) => {
            result.detail = e;
            return result;
        }
    };
    let mut namespaces = StaticNamespaces::default();
    if let Some(labels) = &case.namespace_labels
        && !req.namespace.is_empty()
    {
        namespaces.0.insert(
            req.namespace.clone(),
            Arc::new(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": req.namespace, "labels": labels}}),
            ),
        );
    }
    let g = case.git.as_ref();
    let git = GitVars {
        commit: g.map(|g| g.commit.clone()).unwrap_or_default(),
        app: g.map(|g| g.app.clone()).unwrap_or_default(),
        path: g.map(|g| g.path.clone()).unwrap_or_default(),
        author: g.map(|g| g.author.clone()).unwrap_or_default(),
        subject: g.map(|g| g.subject.clone()).unwrap_or_default(),
        signed: g.is_some_and(|g| g.signed),
        managed: g.is_some_and(|g| g.managed),
        reconciler: g.is_some_and(|g| g.reconciler),
        enforced: g.is_some_and(|g| g.enforced),
        break_glass: g.is_some_and(|g| g.break_glass),
        provenance: match g.and_then(|g| g.provenance.clone()) {
            Some(p) => super::ProvenanceVars { allowed: p.allowed, reason: p.reason, message: p.message },
            None => super::ProvenanceVars::default(),
        },
    };
    if !policy.is_empty() && !set.has_policy(policy) {
        result.detail = format!("policy {policy:?} is not loaded or has no binding");
        return result;
    }
    let mut decision = Decision::default();
    let answers: Arc<dyn authz::Answers> = match &case.authorizer {
        Some(list) => Arc::new(authz::StubAnswers(list.iter().map(AuthorizerAnswer::stub).collect())),
        None => Arc::new(NoAnswers),
    };
    let session = Arc::new(authz::Session::new(answers));
    let only = |name: &str| policy.is_empty() || name == policy;
    set.evaluate_authorized(&req, &namespaces, &git, &mut decision, &only, Ok(session.clone()));
    let pending = session.pending();
    if !pending.is_empty() {
        let checks: Vec<String> = pending.iter().map(ToString::to_string).collect();
        result.detail = format!(
            "the policy reads `authorizer` and the case gives no `authorizer:` answers (gitgate policy test sends no SubjectAccessReview); it asks: {}",
            checks.join("; ")
        );
        return result;
    }
    let (got, text) = match (&decision.denial, decision.warnings.is_empty()) {
        (Some(d), _) => (Expect::Deny, d.message.clone()),
        (None, false) => (Expect::Warn, decision.warnings.join("; ")),
        (None, true) => (Expect::Allow, String::new()),
    };
    result.got = label(got);
    result.detail = text.clone();
    result.passed = got == case.expect && case.message.as_ref().is_none_or(|m| text.contains(m.as_str()));
    if got == case.expect && !result.passed {
        result.detail = format!("message {:?} not found in: {text}", case.message.as_deref().unwrap_or(""));
    }
    result
}

/// The results as a table.
pub fn table(results: &[CaseResult]) -> String {
    let mut out = String::new();
    let w_policy = results.iter().map(|r| r.policy.len()).max().unwrap_or(6).max(6);
    let w_case = results.iter().map(|r| r.case.len()).max().unwrap_or(4).max(4);
    out.push_str(&format!("{:<w_policy$}  {:<w_case$}  {:<6}  {:<6}  RESULT\n", "POLICY", "CASE", "EXPECT", "GOT"));
    for r in results {
        out.push_str(&format!(
            "{:<w_policy$}  {:<w_case$}  {:<6}  {:<6}  {}\n",
            r.policy,
            r.case,
            r.expected,
            r.got,
            if r.passed { "PASS".to_owned() } else { format!("FAIL  {}", r.detail) }
        ));
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    out.push_str(&format!("\n{} passed, {} failed\n", results.len() - failed, failed));
    out
}

#[cfg(test)]
mod tests {
    use super::resource_for;

    #[test]
    fn plural_resource_names() {
        assert_eq!(resource_for("Deployment"), "deployments");
        assert_eq!(resource_for("NetworkPolicy"), "networkpolicies");
        assert_eq!(resource_for("Ingress"), "ingresses");
        assert_eq!(resource_for("Endpoints"), "endpoints");
        assert_eq!(resource_for("Namespace"), "namespaces");
    }
}
