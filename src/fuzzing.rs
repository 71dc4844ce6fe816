//! The functions the `cargo fuzz` targets in `fuzz/` call, one per target,
//! so the fuzz targets and the corpus replay test (`tests/fuzz_corpus.rs`)
//! run exactly the same code. Each takes arbitrary bytes and must never
//! panic; whether the input is accepted or refused does not matter.
//! Not part of the public API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::admission::{AdmissionState, Decider, Endpoint, Limits, LogRecorder};
use crate::audit::chain::{Location, Verifier};
use crate::audit::record::Record;
use crate::policy::{PolicySet, PolicyStage, StaticNamespaces};
use crate::secrets::keys::{AgeIdentity, IdentitySet};
use crate::secrets::{Scope, manifest, seal};
use serde_json::Value;

/// The fuzz targets, by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: &[&str] =
    &["admission_review", "audit_log", "sealed_envelope", "push_hook", "render_tree", "cel_policy"];

/// Runs `data` through the target named `name`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "admission_review" => admission_review(data),
        "audit_log" => audit_log(data),
        "sealed_envelope" => sealed_envelope(data),
        "push_hook" => push_hook(data),
        "render_tree" => render_tree(data),
        "cel_policy" => cel_policy(data),
        other => panic!("no fuzz target named {other:?}"),
    }
}

struct Admission {
    runtime: tokio::runtime::Runtime,
    state: AdmissionState,
}

fn admission() -> &'static Admission {
    static CELL: OnceLock<Admission> = OnceLock::new();
    CELL.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        // The built-in policy library (provenance gate + subresource rules),
        // as `gitgate serve` runs it without a policy directory.
        let stage = PolicyStage {
            policies: Arc::new(PolicySet::builtin().expect("built-in policies compile")),
            namespaces: Arc::new(StaticNamespaces::default()),
            reconciler: "system:serviceaccount:gitgate:gitgate".into(),
            break_glass_groups: vec!["system:masters".into()],
        };
        let state = AdmissionState::new(Default::default(), Limits::default(), Arc::new(LogRecorder));
        state.publish(Arc::new(Decider::new().with_validating(Arc::new(stage))));
        Admission { runtime, state }
    })
}

/// One body through the whole admission request path, on both endpoints.
pub fn admission_review(data: &[u8]) {
    let a = admission();
    for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
        let _ = a.runtime.block_on(a.state.review(endpoint, data));
    }
}

/// A log file's bytes through the chain verifier (`gitgate audit verify`),
/// split into lines exactly as `audit::chain::verify_files` reads them, and
/// each line through the record parser `gitgate audit query` uses.
pub fn audit_log(data: &[u8]) {
    let mut v = Verifier::new(BTreeMap::new());
    let file = PathBuf::from("fuzz.jsonl");
    let mut broken = false;
    for (n, chunk) in data.split_inclusive(|&b| b == b'\n').enumerate() {
        let terminated = chunk.last() == Some(&b'\n');
        let line = if terminated { &chunk[..chunk.len() - 1] } else { chunk };
        let _ = serde_json::from_slice::<Record>(line);
        if !broken {
            broken = v.feed(line, terminated, Location { file: file.clone(), line: n as u64 + 1 }).is_err();
        }
    }
    if !broken {
        let _ = v.finish();
    }
}

fn identities() -> &'static IdentitySet {
    static CELL: OnceLock<IdentitySet> = OnceLock::new();
    CELL.get_or_init(|| IdentitySet::new(vec![AgeIdentity::generate()]).expect("one identity"))
}

/// A value through the sealed-value checks: `looks_sealed`, `inspect`,
/// decryption with a fixed identity, and the plaintext envelope parser;
/// then `gitgate seal --check` ([`manifest::check_secret`]) twice: on the
/// bytes as the value of a marked Secret, and on the bytes as the manifest
/// stream `seal --check FILE` reads (with no expected scope and each one).
pub fn sealed_envelope(data: &[u8]) {
    use base64::Engine as _;

    let limits = seal::Limits::default();
    let _ = crate::secrets::looks_sealed(data);
    let _ = seal::inspect(data, &limits);
    let _ = seal::open(data, identities(), &limits);
    let _ = seal::parse_envelope(data, &limits);

    let marked = |values: Value| {
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": "app", "annotations": {crate::contract::SEALED: crate::contract::SEALED_AGE}},
            "data": values,
        })
    };
    let value = base64::engine::general_purpose::STANDARD.encode(data);
    let _ = manifest::check_secret(&marked(serde_json::json!({ "password": value })), None, &limits);
    if let Ok(text) = std::str::from_utf8(data) {
        let options = serde_saphyr::options! { strict_booleans: true };
        let docs: Result<Vec<Value>, _> = serde_saphyr::from_str_multiple_with_options(text, options);
        if let Ok(docs) = docs {
            for doc in docs.iter().filter(|d| !d.is_null()) {
                for expected in [None, Some(Scope::Strict), Some(Scope::Namespace), Some(Scope::Cluster)] {
                    let _ = manifest::check_secret(doc, expected, &limits);
                }
            }
        }
    }
}

/// The push-hook secret the `push_hook` target verifies against.
pub const HOOK_SECRET: &[u8] = b"fuzz-hook-secret";

/// A push hook through signature verification and payload parsing. The
/// input is `name: value` header lines, a blank line, then the body. A
/// header value of `sign` is replaced by the body's correct signature for
/// that header (`sha256=<hex>` for GitHub, bare hex for Gitea/Gogs, the
/// secret for GitLab), so the fuzzer reaches past verification.
pub fn push_hook(data: &[u8]) {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};

    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (&[][..], data),
    };
    let signed = crate::source::hooks::github_signature(HOOK_SECRET, body);
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let Ok(name) = HeaderName::from_bytes(line[..colon].trim_ascii()) else { continue };
        let raw = line[colon + 1..].trim_ascii();
        let value = if raw == b"sign" {
            match name.as_str() {
                "x-hub-signature-256" => HeaderValue::from_str(&signed),
                "x-gitlab-token" => HeaderValue::from_bytes(HOOK_SECRET),
                _ => HeaderValue::from_str(signed.trim_start_matches("sha256=")),
            }
        } else {
            HeaderValue::from_bytes(raw)
        };
        if let Ok(value) = value {
            headers.append(name, value);
        }
    }
    if let Ok(provider) = crate::source::hooks::verify(HOOK_SECRET, &headers, body)
        && crate::source::hooks::is_push(provider, &headers)
    {
        let _ = crate::source::hooks::push_event(provider, body);
    }
}

/// What `render_tree` passes as the helm binary: an absolute path that
/// does not exist. Helm is a subprocess (tens of milliseconds a run, and
/// no helm on the fuzzing machines), so a chart app is fuzzed up to helm:
/// its config checks, the vendored-dependency check and the staging of the
/// chart and values files into a scratch directory (every read confined),
/// then stops with the error naming the binary.
pub const RENDER_HELM: &str = "/nonexistent/gitgate-fuzz/helm";

/// One entry of a generated tree.
enum TreeNode {
    Blob(Vec<u8>, gix::objs::tree::EntryKind),
    Tree(BTreeMap<Vec<u8>, TreeNode>),
}

fn insert_node(dir: &mut BTreeMap<Vec<u8>, TreeNode>, components: &[&[u8]], leaf: TreeNode) {
    match components {
        [] => {}
        [name] => {
            dir.insert(name.to_vec(), leaf);
        }
        [name, rest @ ..] => {
            let node = dir.entry(name.to_vec()).or_insert_with(|| TreeNode::Tree(BTreeMap::new()));
            if !matches!(node, TreeNode::Tree(_)) {
                *node = TreeNode::Tree(BTreeMap::new());
            }
            if let TreeNode::Tree(sub) = node {
                insert_node(sub, rest, leaf);
            }
        }
    }
}

fn write_tree(repo: &gix::Repository, dir: &BTreeMap<Vec<u8>, TreeNode>) -> Option<gix::ObjectId> {
    use gix::objs::tree::{Entry, EntryKind};
    let mut entries = Vec::with_capacity(dir.len());
    for (name, node) in dir {
        let (mode, oid) = match node {
            TreeNode::Blob(bytes, kind) => ((*kind).into(), repo.write_blob(bytes).ok()?.detach()),
            TreeNode::Tree(sub) => (EntryKind::Tree.into(), write_tree(repo, sub)?),
        };
        entries.push(Entry { mode, filename: name.as_slice().into(), oid });
    }
    entries.sort();
    Some(repo.write_object(&gix::objs::Tree { entries }).ok()?.detach())
}

/// The tree a `render_tree` input describes, as `(path components, node)`:
/// bytes before the first header are `gitgate.yaml`; a line
/// `=== <path>` starts a file whose content is every byte up to the next
/// header line; `=== <path> -> <target>` is a symlink. Path components are
/// split on `/` and taken as written (`..` and `.` included: a hostile Git
/// server can store any entry name in a tree).
fn tree_entries(data: &[u8]) -> Vec<(Vec<&[u8]>, TreeNode)> {
    use gix::objs::tree::EntryKind;
    const HEADER: &[u8] = b"=== ";
    let mut starts: Vec<usize> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data[at..].starts_with(HEADER) {
            starts.push(at);
        }
        at = match data[at..].iter().position(|&b| b == b'\n') {
            Some(i) => at + i + 1,
            None => data.len(),
        };
    }
    let mut out: Vec<(Vec<&[u8]>, TreeNode)> = Vec::new();
    let first = starts.first().copied().unwrap_or(data.len());
    if first > 0 {
        out.push((vec![&b"gitgate.yaml"[..]], TreeNode::Blob(data[..first].to_vec(), EntryKind::Blob)));
    }
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(data.len());
        let section = &data[start + HEADER.len()..end];
        let (line, content) = match section.iter().position(|&b| b == b'\n') {
            Some(n) => (&section[..n], &section[n + 1..]),
            None => (section, &[][..]),
        };
        let (path, node) = match line.windows(4).position(|w| w == b" -> ") {
            Some(n) => (&line[..n], TreeNode::Blob(line[n + 4..].to_vec(), EntryKind::Link)),
            None => (line, TreeNode::Blob(content.to_vec(), EntryKind::Blob)),
        };
        let parts: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        if !parts.is_empty() {
            out.push((parts, node));
        }
    }
    out
}

/// An empty bare repository (made once per process) whose object store the
/// generated trees are written to, in memory only.
fn fuzz_repo() -> gix::Repository {
    static CELL: OnceLock<(crate::source::scratch::ScratchDir, gix::ThreadSafeRepository)> = OnceLock::new();
    let (_, repo) = CELL.get_or_init(|| {
        let dir = crate::source::scratch::ScratchDir::new("fuzz-repo").expect("a scratch directory");
        let repo = gix::init_bare(dir.path()).expect("an empty bare repository").into_sync();
        (dir, repo)
    });
    repo.to_thread_local().with_object_memory()
}

/// The commit of the tree a `render_tree` input describes (see
/// [`render_tree`]), in an in-memory object store.
pub fn generated_commit(data: &[u8]) -> Option<(gix::Repository, gix::ObjectId)> {
    let mut root: BTreeMap<Vec<u8>, TreeNode> = BTreeMap::new();
    for (parts, node) in tree_entries(data) {
        insert_node(&mut root, &parts, node);
    }
    let repo = fuzz_repo();
    let tree = write_tree(&repo, &root)?;
    let signature = gix::actor::Signature {
        name: "fuzz".into(),
        email: "fuzz@example.com".into(),
        time: gix::date::Time { seconds: 0, offset: 0 },
    };
    let commit = gix::objs::Commit {
        tree,
        parents: Default::default(),
        author: signature.clone(),
        committer: signature,
        encoding: None,
        message: "fuzz\n".into(),
        extra_headers: Vec::new(),
    };
    let commit = repo.write_object(&commit).ok()?.detach();
    Some((repo, commit))
}

/// The desired set of a generated commit, rendered as `render_tree` does
/// (default limits, helm at [`RENDER_HELM`]).
pub fn render_generated(
    repo: &gix::Repository,
    commit: gix::ObjectId,
) -> Result<Arc<crate::render::DesiredSet>, crate::render::RenderError> {
    use crate::render::{RenderOptions, Renderer};
    Renderer::new(RenderOptions { helm: PathBuf::from(RENDER_HELM), ..Default::default() }).desired(repo, commit)
}

/// A generated repository tree through the renderer, as `gitgate render`
/// and the sync loop run it: `gitgate.yaml` (apps, projects, generators),
/// plain YAML/JSON directories, kustomizations (resources, bases, patches,
/// generators, transformers) and charts up to helm (see [`RENDER_HELM`]).
/// The tree lives in an in-memory object store, one commit per input. The
/// render must end in a desired set or an error; every object it yields
/// must come from a file of the tree inside its app's directory (plain
/// apps), else the render read something it should not have.
pub fn render_tree(data: &[u8]) {
    use crate::source::{NodeKind, RepoPath, TreeReader};

    let Some((repo, commit)) = generated_commit(data) else { return };
    let Ok(set) = render_generated(&repo, commit) else { return };
    let Ok(reader) = TreeReader::new(repo.clone(), commit, Default::default()) else { return };
    for (key, obj) in set.objects() {
        let source = RepoPath::parse(&obj.source).unwrap_or_else(|e| panic!("{key}: source {:?}: {e}", obj.source));
        let node = reader.resolve_untracked(&source).ok().flatten();
        assert!(
            node.as_ref().is_some_and(|n| n.kind == NodeKind::File),
            "{key} names {source} as its file, which is not a file of the tree"
        );
        let app = set.app_of(obj).unwrap_or_else(|| panic!("{key} belongs to no app"));
        let Ok(Some(dir)) = reader.resolve_untracked(&app.path) else { continue };
        let plain = dir.kind == NodeKind::Dir
            && crate::render::kustomize::find_kustomization(&reader, &app.path).ok().flatten().is_none()
            && reader.resolve_untracked(&app.path.child("Chart.yaml")).ok().flatten().is_none();
        if plain && let Some(n) = node {
            assert!(
                n.path.starts_with(&dir.path),
                "{key}: app {:?} at {} yielded an object from {} ({})",
                app.name,
                dir.path,
                source,
                n.path
            );
        }
    }
}

/// The request `cel_policy` evaluates when its input carries none (or one
/// that does not decode): a Deployment created by kubectl, as captured
/// from a kube-apiserver.
const CEL_REQUEST: &[u8] = include_bytes!("../tests/fixtures/admission/validate-create-deployment.json");

/// A policy through compile and evaluation, with the public policy API
/// only (`policy::parse_documents`, `PolicySet::compile`,
/// `PolicySet::evaluate`): what `gitgate serve --policy`, `gitgate policy
/// test` and the admission path run. The input is the policy part, then
/// optionally a line `%%` and an AdmissionReview body to evaluate (else
/// [`CEL_REQUEST`]). A policy part that names a `kind:` is a YAML stream of
/// ValidatingAdmissionPolicies and bindings as written; otherwise each
/// line is one piece of a policy matching every request, bound with Deny:
/// `v NAME: EXPR` a variable, `m: EXPR` a match condition, `M: EXPR` the
/// message expression of the validation before it, `a KEY: EXPR` an audit
/// annotation, `f: Ignore` the failure policy, any other line a
/// validation expression. Compile errors and denials are fine; a panic or
/// a hang (libFuzzer's `-timeout`) is a finding: the cost budget must stop
/// a runaway expression before it runs.
pub fn cel_policy(data: &[u8]) {
    let _ = cel_policy_decisions(data);
}

/// The decisions of [`cel_policy`]'s input (git variables unmanaged, then
/// managed), or the parse/compile error.
pub fn cel_policy_decisions(data: &[u8]) -> Result<Vec<crate::admission::Decision>, String> {
    use crate::admission::{Decision, Review};
    use crate::policy::{GitVars, parse_documents};

    let (head, body) = match data.windows(4).position(|w| w == b"\n%%\n") {
        Some(i) => (&data[..i], Some(&data[i + 4..])),
        None => (data, None),
    };
    let head = std::str::from_utf8(head).map_err(|e| e.to_string())?;
    let text = if head.contains("kind:") { head.to_owned() } else { policy_from_lines(head) };
    let docs = parse_documents("fuzz.yaml", &text).map_err(|e| e.to_string())?;
    let set = PolicySet::compile(vec![docs]).map_err(|e| e.to_string())?;
    let request = match body.map(Review::decode) {
        Some(Ok(review)) => review.request,
        _ => Review::decode(CEL_REQUEST).map_err(|e| format!("the built-in request does not decode: {e}"))?.request,
    };
    let mut namespaces = StaticNamespaces::default();
    if !request.namespace.is_empty() {
        let ns = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": request.namespace, "labels": {"environment": "production"}},
        });
        namespaces.0.insert(request.namespace.clone(), Arc::new(ns));
    }
    let mut out = Vec::with_capacity(2);
    for git in [GitVars::default(), GitVars { managed: true, ..GitVars::default() }] {
        let mut decision = Decision::default();
        set.evaluate(&request, &namespaces, &git, &mut decision);
        out.push(decision);
    }
    Ok(out)
}

/// A ValidatingAdmissionPolicy (matching every request) and its Deny
/// binding, from `cel_policy`'s line form, as YAML (JSON).
fn policy_from_lines(text: &str) -> String {
    let mut validations: Vec<Value> = Vec::new();
    let mut variables: Vec<Value> = Vec::new();
    let mut conditions: Vec<Value> = Vec::new();
    let mut annotations: Vec<Value> = Vec::new();
    let mut failure = "Fail";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("v ") {
            let (name, expr) = rest.split_once(": ").unwrap_or(("x", rest));
            variables.push(serde_json::json!({"name": name, "expression": expr}));
        } else if let Some(expr) = line.strip_prefix("m: ") {
            let name = format!("m{}", conditions.len());
            conditions.push(serde_json::json!({"name": name, "expression": expr}));
        } else if let Some(expr) = line.strip_prefix("M: ") {
            if let Some(Value::Object(last)) = validations.last_mut() {
                last.insert("messageExpression".into(), Value::String(expr.to_owned()));
            }
        } else if let Some(rest) = line.strip_prefix("a ") {
            let (key, expr) = rest.split_once(": ").unwrap_or(("a", rest));
            annotations.push(serde_json::json!({"key": key, "valueExpression": expr}));
        } else if let Some(policy) = line.strip_prefix("f: ") {
            failure = if policy.trim() == "Ignore" { "Ignore" } else { "Fail" };
        } else if !line.trim().is_empty() {
            validations.push(serde_json::json!({"expression": line, "message": "denied by the fuzz policy"}));
        }
    }
    let policy = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "fuzz"},
        "spec": {
            "failurePolicy": failure,
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*/*"],
            }]},
            "matchConditions": conditions,
            "variables": variables,
            "validations": validations,
            "auditAnnotations": annotations,
        },
    });
    let binding = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "fuzz"},
        "spec": {"policyName": "fuzz", "validationActions": ["Deny"]},
    });
    format!("{policy}\n---\n{binding}\n")
}
