//! CEL policies with the semantics of Kubernetes' ValidatingAdmissionPolicy
//! (match constraints, match conditions, variables, validations with
//! message/messageExpression/reason, Deny/Warn/Audit actions, audit
//! annotations), plus a `git` variable no other engine has.
//!
//! Policies are loaded and compiled once into an immutable [`PolicySet`];
//! evaluation is pure: [`PolicySet::evaluate`] reads a request and writes a
//! [`Decision`].
//!
//! Owns: the policy model and its compilation (`model`, `lang`, `ast`,
//! `cost`, `functions`, `value`, `fast`), evaluation over one request, the
//! `authorizer` variable answered by SubjectAccessReviews (`authz`),
//! `gitgate policy test` (`testing`) and ValidatingAdmissionPolicy
//! generation (`vap`).
//!
//! Imports from outside: [`crate::admission`] (request, decision and stage
//! types: the engine is an admission stage). It also imports
//! [`crate::provenance`] upward — [`GitVars::from_facts`],
//! [`AuthorizingPolicyStage`] (which runs `provenance::verify` on a
//! `Snapshot` for break-glass) and `testing` (`provenance::plural`) — to be
//! moved out: the `git` variable should be filled by its caller.
//!
//! Must never import: `sync`, `source`, `render`, `secrets`, `audit`,
//! `promotion`, `dashboard`, `server`.

pub mod ast;
pub mod authz;
pub mod cost;
mod fast;
pub mod functions;
pub mod lang;
pub mod model;
pub mod testing;
mod value;
pub mod vap;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube_cel::KubeCelExt as _;
use kube_cel::cel::objects::Map;
use kube_cel::cel::{Context, IdedExpr, Value};
use serde_json::Value as Json;

use crate::admission::{AdmissionRequest, Decision, Flow, Stage};
use cost::{Cost, PER_CALL_LIMIT, PER_POLICY_LIMIT, Sizes};
use model::{
    FailurePolicy, LabelSelector, MatchResources, ResourceRule, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidationAction,
};
use value::measure;
pub use value::to_cel;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error(
        "{origin}: document {index} has kind {kind:?}; expected ValidatingAdmissionPolicy or ValidatingAdmissionPolicyBinding"
    )]
    Kind { origin: String, index: usize, kind: String },
    #[error("{origin}: policy {policy:?}: failed to compile {field} {expression:?}: {message}")]
    Compile { origin: String, policy: String, field: String, expression: String, message: String },
    #[error("{origin}: {name:?}: {message}")]
    Invalid { origin: String, name: String, message: String },
    #[error("binding {binding:?} ({origin}) refers to policy {policy:?}, which is not loaded")]
    UnknownPolicy { origin: String, binding: String, policy: String },
    #[error("{what} {name:?} is defined twice: in {first} and in {second}")]
    Duplicate { what: &'static str, name: String, first: String, second: String },
}

/// What Git says about the request's object: the `git` variable.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GitVars {
    /// Full ID of the commit that owns the object ("" when none does).
    pub commit: String,
    pub app: String,
    /// The manifest's path in the repository.
    pub path: String,
    pub author: String,
    pub subject: String,
    /// The owning commit carries a valid signature by an allowed key.
    pub signed: bool,
    /// Git declares this object.
    pub managed: bool,
    /// The request comes from gitgate's reconciler identity.
    pub reconciler: bool,
    /// The object lies where gitgate deploys from Git (an app's destination
    /// namespace, or an object Git declares).
    pub enforced: bool,
    /// The provenance verdict: `allowed`, `reason`, `message`.
    pub provenance: ProvenanceVars,
    /// `git.breakGlass`: the user is a member of a `--break-glass-group`.
    #[serde(rename = "breakGlass")]
    pub break_glass: bool,
}

/// `git.provenance`: whether Git made this change.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProvenanceVars {
    pub allowed: bool,
    pub reason: String,
    pub message: String,
}

impl Default for ProvenanceVars {
    /// Without a desired set nothing is traced to Git: not allowed.
    fn default() -> Self {
        ProvenanceVars {
            allowed: false,
            reason: "NoDesiredState".into(),
            message: "gitgate has not loaded a commit from Git yet, so it cannot trace this change to Git".into(),
        }
    }
}

impl GitVars {
    /// The `git` variable from the provenance facts of a request.
    pub fn from_facts(f: &crate::provenance::Facts, reconciler: bool) -> GitVars {
        GitVars {
            commit: f.commit.clone(),
            app: f.app.clone(),
            path: f.path.clone(),
            author: f.author.clone(),
            subject: f.subject.clone(),
            signed: f.signed,
            managed: f.managed,
            reconciler,
            enforced: f.enforced,
            provenance: ProvenanceVars {
                allowed: f.verdict.allowed,
                reason: format!("{:?}", f.verdict.reason),
                message: f.verdict.message.clone(),
            },
            break_glass: false,
        }
    }
}

/// Looks up Namespace objects (for `namespaceObject` and namespace
/// selectors). Filled from the cluster by the sync loop.
pub trait Namespaces: Send + Sync {
    fn get(&self, name: &str) -> Option<Arc<Json>>;
}

/// A fixed set of namespaces (tests, `gitgate policy test`).
#[derive(Default)]
pub struct StaticNamespaces(pub HashMap<String, Arc<Json>>);

impl Namespaces for StaticNamespaces {
    fn get(&self, name: &str) -> Option<Arc<Json>> {
        self.0.get(name).cloned()
    }
}

/// Context name a `variables.<name>` reference is rewritten to. cel 0.13
/// deep-copies a value each time it is added to a context, so each
/// variable is added once under its own name instead of re-adding a
/// growing `variables` map.
const VAR_PREFIX: &str = "__gitgate_variable_";

struct Expression {
    source: String,
    ast: IdedExpr,
    cost: Cost,
    /// [`fast::supported`]: evaluated over the request's JSON first.
    fast: bool,
    /// Reads `authorizer`: never on the fast path, and its policy is
    /// evaluated again once its pending checks are answered.
    authz: bool,
}

/// Rewrites `variables.<name>` into the identifier `VAR_PREFIX<name>`.
fn rewrite_variables(e: &mut IdedExpr) {
    use kube_cel::cel::common::ast::Expr;
    ast::rewrite(e, &mut |e| {
        if let Expr::Select(sel) = &e.expr
            && matches!(&sel.operand.expr, Expr::Ident(n) if n == "variables")
        {
            // `has(variables.x)`: a declared variable is always present, as
            // a field of the apiserver's `variables` object
            e.expr = if sel.test {
                Expr::Literal(kube_cel::cel::common::ast::LiteralValue::Boolean(true.into()))
            } else {
                Expr::Ident(format!("{VAR_PREFIX}{}", sel.field))
            };
            return true;
        }
        false
    });
}

impl Expression {
    fn compile(origin: &str, policy: &str, field: String, source: &str) -> Result<Expression, PolicyError> {
        let err = |message: String| PolicyError::Compile {
            origin: origin.to_owned(),
            policy: policy.to_owned(),
            field: field.clone(),
            expression: source.to_owned(),
            message,
        };
        let mut ast = lang::compile(source).map_err(err)?;
        let authz = ast.references().has_variable("authorizer");
        let cost = cost::analyze(&ast);
        rewrite_variables(&mut ast);
        let fast = !authz && fast::supported(&ast);
        Ok(Expression { source: source.to_owned(), ast, cost, fast, authz })
    }

    /// Inlines variable definitions (keyed by their rewritten identifier)
    /// and recomputes the cost bound of the result.
    fn substitute(&mut self, defs: &HashMap<String, IdedExpr>) {
        use kube_cel::cel::common::ast::Expr;
        ast::rewrite(&mut self.ast, &mut |e| {
            if let Expr::Ident(n) = &e.expr
                && let Some(d) = defs.get(n)
            {
                *e = d.clone();
                return true;
            }
            false
        });
        self.cost = cost::analyze(&self.ast);
        self.authz = self.authz || self.ast.references().has_variable("authorizer");
        self.fast = !self.authz && fast::supported(&self.ast);
    }

    fn execute(&self, ctx: &Context<'_>) -> kube_cel::cel::ResolveResult {
        Value::resolve(&self.ast, ctx)
    }
}

struct CompiledValidation {
    expr: Expression,
    message: Option<String>,
    message_expr: Option<Expression>,
    reason: String,
}

struct CompiledPolicy {
    name: String,
    origin: String,
    failure: FailurePolicy,
    constraints: Matcher,
    conditions: Vec<(String, Expression)>,
    variables: Vec<(String, Expression)>,
    validations: Vec<CompiledValidation>,
    audit: Vec<(String, Expression)>,
    /// The variables' definitions were inlined where they are used, so
    /// they are not evaluated on their own (see [`inline_variables`]).
    inlined: bool,
}

struct Bound {
    policy: Arc<CompiledPolicy>,
    binding: String,
    actions: Vec<ValidationAction>,
    matcher: Option<Matcher>,
}

/// A compiled, immutable set of policies and their bindings.
pub struct PolicySet {
    root: Context<'static>,
    bound: Vec<Bound>,
    /// Load-time notes: policies without a binding, expensive expressions.
    pub warnings: Vec<String>,
}

/// One parsed policy file's documents.
#[derive(Debug)]
pub struct Documents {
    pub origin: String,
    pub policies: Vec<ValidatingAdmissionPolicy>,
    pub bindings: Vec<ValidatingAdmissionPolicyBinding>,
}

/// Parses a YAML stream of policies and bindings. YAML 1.2 booleans
/// (`yes`/`no` stay strings), as the apiserver reads YAML.
pub fn parse_documents(origin: &str, text: &str) -> Result<Documents, PolicyError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let docs: Vec<Json> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| PolicyError::Parse { origin: origin.to_owned(), message: e.to_string() })?;
    let mut out = Documents { origin: origin.to_owned(), policies: Vec::new(), bindings: Vec::new() };
    for (index, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let kind = doc.get("kind").and_then(Json::as_str).unwrap_or_default().to_owned();
        let parse_err = |e: serde_json::Error| PolicyError::Parse {
            origin: format!("{origin} (document {index})"),
            message: e.to_string(),
        };
        match kind.as_str() {
            "ValidatingAdmissionPolicy" => out.policies.push(serde_json::from_value(doc).map_err(parse_err)?),
            "ValidatingAdmissionPolicyBinding" => out.bindings.push(serde_json::from_value(doc).map_err(parse_err)?),
            _ => return Err(PolicyError::Kind { origin: origin.to_owned(), index, kind }),
        }
    }
    Ok(out)
}

/// Policy files under `paths` (files, or directories searched recursively
/// for `*.yaml`/`*.yml`, skipping `tests/` folders), sorted.
/// Every policy file under `paths`, read and parsed.
fn read_documents(paths: &[PathBuf]) -> Result<Vec<Documents>, PolicyError> {
    let mut docs = Vec::new();
    for path in policy_files(paths)? {
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read { path: path.clone(), source })?;
        docs.push(parse_documents(&path.display().to_string(), &text)?);
    }
    Ok(docs)
}

fn builtin_documents() -> Result<Documents, PolicyError> {
    parse_documents("built-in provenance.yaml", BUILTIN_PROVENANCE)
}

pub fn policy_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, PolicyError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
        let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::Read { path: dir.to_path_buf(), source })?;
        for entry in entries {
            let path = entry.map_err(|source| PolicyError::Read { path: dir.to_path_buf(), source })?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "tests") {
                    walk(&path, out)?;
                }
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// The provenance policy shipped in `policies/`.
pub const BUILTIN_PROVENANCE: &str = include_str!("../../policies/provenance.yaml");

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound: Vec<(&str, &str)> =
            self.bound.iter().map(|b| (b.policy.name.as_str(), b.binding.as_str())).collect();
        f.debug_struct("PolicySet").field("bound", &bound).field("warnings", &self.warnings).finish()
    }
}

impl PolicySet {
    /// Loads and compiles every policy file under `paths`.
    pub fn load(paths: &[PathBuf]) -> Result<PolicySet, PolicyError> {
        PolicySet::compile(read_documents(paths)?)
    }

    /// The provenance gate alone (`policies/provenance.yaml`, compiled
    /// into the binary): what `gitgate serve` enforces when it is given no
    /// policy files, so Git stays the only deploy path in a bare container.
    pub fn builtin() -> Result<PolicySet, PolicyError> {
        PolicySet::compile(vec![builtin_documents()?])
    }

    /// The policy files at `paths` on top of the built-in provenance gate:
    /// they add to it, and replace it only by defining a policy of the same
    /// name (as `policies/provenance.yaml` does).
    pub fn load_over_builtin(paths: &[PathBuf]) -> Result<PolicySet, PolicyError> {
        let mut docs = read_documents(paths)?;
        let mut builtin = builtin_documents()?;
        let defined = |name: &str| docs.iter().flat_map(|d| &d.policies).any(|p| p.metadata.name == name);
        // Each built-in policy the files do not define (with its binding)
        // is enforced too: an older copy of provenance.yaml that lacks
        // gitgate-subresources still gets it.
        builtin.policies.retain(|p| !defined(&p.metadata.name));
        let kept: Vec<String> = builtin.policies.iter().map(|p| p.metadata.name.clone()).collect();
        builtin.bindings.retain(|b| kept.contains(&b.spec.policy_name));
        if !kept.is_empty() {
            tracing::info!(policies = ?kept, "no policy file defines these built-in policies: the built-in ones are enforced too");
            docs.insert(0, builtin);
        }
        PolicySet::compile(docs)
    }

    /// An empty set: no policy applies.
    pub fn empty() -> PolicySet {
        PolicySet { root: root_context(), bound: Vec::new(), warnings: Vec::new() }
    }

    pub fn compile(docs: Vec<Documents>) -> Result<PolicySet, PolicyError> {
        let mut policies: BTreeMap<String, Arc<CompiledPolicy>> = BTreeMap::new();
        let mut warnings = Vec::new();
        for doc in &docs {
            for p in &doc.policies {
                let compiled = compile_policy(&doc.origin, p)?;
                for (what, e) in compiled.expressions() {
                    if e.cost.degree() >= 3 {
                        warnings.push(format!(
                            "{}: policy {:?}: {what} nests {} comprehensions; large objects will exceed the cost limit",
                            doc.origin,
                            p.metadata.name,
                            e.cost.degree()
                        ));
                    }
                }
                if let Some(prev) = policies.insert(p.metadata.name.clone(), Arc::new(compiled)) {
                    return Err(PolicyError::Duplicate {
                        what: "policy",
                        name: p.metadata.name.clone(),
                        first: prev.origin.clone(),
                        second: doc.origin.clone(),
                    });
                }
            }
        }
        let mut bound = Vec::new();
        let mut binding_origins: BTreeMap<String, String> = BTreeMap::new();
        for doc in &docs {
            for b in &doc.bindings {
                let name = b.metadata.name.clone();
                if let Some(first) = binding_origins.insert(name.clone(), doc.origin.clone()) {
                    return Err(PolicyError::Duplicate { what: "binding", name, first, second: doc.origin.clone() });
                }
                let invalid = |message: String| PolicyError::Invalid {
                    origin: doc.origin.clone(),
                    name: b.metadata.name.clone(),
                    message,
                };
                let policy = policies.get(&b.spec.policy_name).ok_or_else(|| PolicyError::UnknownPolicy {
                    origin: doc.origin.clone(),
                    binding: b.metadata.name.clone(),
                    policy: b.spec.policy_name.clone(),
                })?;
                if b.spec.param_ref.is_some() {
                    return Err(invalid("paramRef is not supported".into()));
                }
                if b.spec.validation_actions.is_empty() {
                    return Err(invalid("validationActions must name at least one of Deny, Warn, Audit".into()));
                }
                if b.spec.validation_actions.contains(&ValidationAction::Deny)
                    && b.spec.validation_actions.contains(&ValidationAction::Warn)
                {
                    return Err(invalid("validationActions may not contain both Deny and Warn".into()));
                }
                let matcher =
                    b.spec.match_resources.as_ref().map(|m| Matcher::new(m, false)).transpose().map_err(invalid)?;
                bound.push(Bound {
                    policy: policy.clone(),
                    binding: b.metadata.name.clone(),
                    actions: b.spec.validation_actions.clone(),
                    matcher,
                });
            }
        }
        for (name, p) in &policies {
            if !bound.iter().any(|b| &b.policy.name == name) {
                warnings.push(format!("{}: policy {name:?} has no binding, so it is never enforced", p.origin));
            }
        }
        Ok(PolicySet { root: root_context(), bound, warnings })
    }

    /// Whether a policy of that name is loaded and bound.
    pub fn has_policy(&self, name: &str) -> bool {
        self.bound.iter().any(|b| b.policy.name == name)
    }

    /// Number of (policy, binding) pairs.
    pub fn len(&self) -> usize {
        self.bound.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// Evaluates every bound policy that matches the request, in load order,
    /// and records violations in `decision` per the binding's actions.
    pub fn evaluate(
        &self,
        req: &AdmissionRequest,
        namespaces: &dyn Namespaces,
        git: &GitVars,
        decision: &mut Decision,
    ) {
        self.evaluate_where(req, namespaces, git, decision, &|_| true)
    }

    /// [`PolicySet::evaluate`] restricted to the policies `only` accepts
    /// (by name).
    pub fn evaluate_where(
        &self,
        req: &AdmissionRequest,
        namespaces: &dyn Namespaces,
        git: &GitVars,
        decision: &mut Decision,
        only: &dyn Fn(&str) -> bool,
    ) {
        let none = authz::Unavailable(NO_AUTHORIZER.to_owned());
        self.evaluate_authorized(req, namespaces, git, decision, only, Err(none))
    }

    /// Whether a bound policy reads `authorizer`.
    pub fn uses_authorizer(&self) -> bool {
        self.bound.iter().any(|b| b.policy.uses_authorizer())
    }

    /// [`PolicySet::evaluate_where`] with `authorizer` checks answered by
    /// `session` (or failing with the reason it is unavailable). A check
    /// whose answer the session does not know yet fails its expression
    /// and is left in [`authz::Session::pending`]: the caller answers it
    /// and evaluates again into a fresh decision.
    pub fn evaluate_authorized(
        &self,
        req: &AdmissionRequest,
        namespaces: &dyn Namespaces,
        git: &GitVars,
        decision: &mut Decision,
        only: &dyn Fn(&str) -> bool,
        session: Result<Arc<authz::Session>, authz::Unavailable>,
    ) {
        let mut session = Some(session);
        let mut scope: Option<RequestScope<'_>> = None;
        let mut audit_failures: Vec<Json> = Vec::new();
        let ns_object = if req.namespace.is_empty() { None } else { namespaces.get(&req.namespace) };
        for b in self.bound.iter().filter(|b| only(&b.policy.name)) {
            let p = &b.policy;
            if !p.constraints.matches(req, ns_object.as_deref())
                || !b.matcher.as_ref().is_none_or(|m| m.matches(req, ns_object.as_deref()))
            {
                continue;
            }
            let scope = scope.get_or_insert_with(|| {
                let session = session.take().unwrap_or_else(|| Err(authz::Unavailable(NO_AUTHORIZER.to_owned())));
                RequestScope::new(&self.root, req, ns_object.as_deref(), git, session)
            });
            let outcome = run_policy(p, scope);
            for v in outcome.violations {
                let reason = if v.reason.is_empty() { "Invalid".to_owned() } else { v.reason };
                for action in &b.actions {
                    match action {
                        ValidationAction::Deny if decision.allowed() => decision.deny(
                            "policy",
                            reason_code(&reason),
                            reason.clone(),
                            format!(
                                "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
                                p.name, b.binding, v.message
                            ),
                        ),
                        ValidationAction::Deny => {}
                        ValidationAction::Warn => decision.warn(
                            "policy",
                            format!(
                                "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                                p.name, b.binding, v.message
                            ),
                        ),
                        ValidationAction::Audit => audit_failures.push(serde_json::json!({
                            "message": v.message,
                            "policy": p.name,
                            "binding": b.binding,
                            "expressionIndex": v.index,
                            "validationActions": b.actions,
                        })),
                    }
                }
            }
            for (key, value) in outcome.annotations {
                decision.annotate(format!("{}/{}", p.name, key), value);
            }
            if outcome.matched && !decision.stages.contains(&"policy") {
                decision.stages.push("policy");
            }
        }
        if !audit_failures.is_empty() {
            decision.annotate(
                "validation.policy.admission.k8s.io/validation_failure",
                serde_json::to_string(&audit_failures).unwrap_or_default(),
            );
        }
    }
}

/// Runs one policy over the request's variables: its match conditions,
/// then (if they all hold) its variables, validations and audit
/// annotations.
fn run_policy(p: &CompiledPolicy, scope: &RequestScope<'_>) -> Outcome {
    let mut run = PolicyRun::new(p, scope);
    let mut out = Outcome::default();
    if !run.conditions_hold(&mut out) {
        return out;
    }
    out.matched = true;
    run.bind_variables();
    run.validate(&mut out);
    run.annotate(&mut out);
    out
}

/// One policy's run over one request: its cost so far, the variables that
/// failed, and the child context of its eagerly bound variables.
struct PolicyRun<'p, 's, 'r> {
    p: &'p CompiledPolicy,
    scope: &'s RequestScope<'r>,
    vars: fast::Vars<'s>,
    /// Variables bound eagerly (not inlined) live in a child context, and
    /// are evaluated by the interpreter alone.
    local: Option<Context<'s>>,
    spent: u64,
    /// The variables that failed, by rewritten name, with their errors.
    poisoned: HashMap<String, String>,
}

impl<'p, 's, 'r> PolicyRun<'p, 's, 'r> {
    fn new(p: &'p CompiledPolicy, scope: &'s RequestScope<'r>) -> Self {
        let local = (!p.inlined && !p.variables.is_empty()).then(|| scope.cel().new_inner_scope());
        PolicyRun { p, scope, vars: scope.fast_vars(), local, spent: 0, poisoned: HashMap::new() }
    }

    /// One expression, within the cost budget: the fast path first where
    /// it applies, else the interpreter.
    fn eval(&mut self, e: &Expression) -> Result<Value, String> {
        let sizes = self.scope.sizes;
        let bound = e.cost.bound(sizes.collection, sizes.string);
        if bound > PER_CALL_LIMIT {
            return Err(format!(
                "its estimated cost {bound} exceeds the per-expression limit of {PER_CALL_LIMIT} for an object this large"
            ));
        }
        self.spent = self.spent.saturating_add(bound);
        if self.spent > PER_POLICY_LIMIT {
            return Err(format!("the policy's estimated cost exceeds the runtime budget of {PER_POLICY_LIMIT}"));
        }
        if self.local.is_none()
            && e.fast
            && let Ok(v) = fast::eval(&e.ast, &self.vars)
        {
            return Ok(v);
        }
        let ctx = self.local.as_ref().unwrap_or_else(|| self.scope.cel());
        e.execute(ctx).map_err(|err| self.error_message(e, &err))
    }

    /// An expression's error as the apiserver reports it.
    fn error_message(&self, e: &Expression, err: &kube_cel::cel::ExecutionError) -> String {
        // a variable that failed: the apiserver evaluates variables
        // lazily, so its error is the error of the expression that
        // reads it (which the interpreter reports as a missing
        // reference, or a missing argument of the function it feeds)
        if !self.poisoned.is_empty() {
            let mut read = std::collections::HashSet::new();
            ast::identifiers(&e.ast, &mut read);
            if let Some(m) = self.p.variables.iter().find_map(|(n, _)| {
                let id = format!("{VAR_PREFIX}{n}");
                if read.contains(&id) { self.poisoned.get(&id).cloned() } else { None }
            }) {
                return m;
            }
        }
        if self.scope.secret { "evaluation failed".to_owned() } else { cel_go_error(err) }
    }

    /// An expression that failed: a violation where the policy fails
    /// closed.
    fn failed(&self, out: &mut Outcome, index: usize, what: &str, e: &Expression, err: String) {
        if self.p.failure == FailurePolicy::Fail {
            out.violations.push(Violation {
                index,
                message: format!("{what} '{}' resulted in error: {err}", e.source),
                reason: "Invalid".into(),
            });
        }
    }

    /// Whether every match condition holds (a failed one may add a
    /// violation).
    fn conditions_hold(&mut self, out: &mut Outcome) -> bool {
        let p = self.p;
        for (name, cond) in &p.conditions {
            match self.eval(cond) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => return false,
                Ok(_) => {
                    self.failed(out, 0, &format!("matchCondition {name:?}"), cond, "it did not return a bool".into());
                    return false;
                }
                Err(err) => {
                    self.failed(out, 0, &format!("matchCondition {name:?}"), cond, err);
                    return false;
                }
            }
        }
        true
    }

    /// Evaluates the variables that were not inlined into the child
    /// context.
    fn bind_variables(&mut self) {
        let p = self.p;
        for (name, var) in p.variables.iter().filter(|_| !p.inlined) {
            // a variable that fails is left out of the context: only the
            // expressions that read it fail, with its error
            match self.eval(var) {
                Ok(value) => {
                    if let Some(ctx) = self.local.as_mut() {
                        ctx.add_variable_from_value(format!("{VAR_PREFIX}{name}"), value);
                    }
                }
                Err(err) => {
                    self.poisoned.insert(format!("{VAR_PREFIX}{name}"), err);
                }
            }
        }
    }

    /// Each validation that does not hold is a violation.
    fn validate(&mut self, out: &mut Outcome) {
        let p = self.p;
        for (index, v) in p.validations.iter().enumerate() {
            match self.eval(&v.expr) {
                Ok(Value::Bool(true)) => {}
                Ok(Value::Bool(false)) => {
                    let message = v
                        .message_expr
                        .as_ref()
                        .and_then(|m| match self.eval(m) {
                            Ok(Value::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
                            _ => None,
                        })
                        .or_else(|| v.message.clone())
                        .unwrap_or_else(|| format!("failed expression: {}", v.expr.source));
                    out.violations.push(Violation { index, message, reason: v.reason.clone() });
                }
                Ok(_) => self.failed(out, index, "expression", &v.expr, "it did not return a bool".into()),
                Err(err) => self.failed(out, index, "expression", &v.expr, err),
            }
        }
    }

    /// The audit annotations whose expressions give a string.
    fn annotate(&mut self, out: &mut Outcome) {
        let p = self.p;
        for (key, expr) in &p.audit {
            if let Ok(Value::String(s)) = self.eval(expr) {
                out.annotations.push((key.clone(), s.to_string()));
            }
        }
    }
}

/// Why `authorizer` checks fail where nothing answers them.
const NO_AUTHORIZER: &str = "the authorizer is not available here (gitgate serve answers its checks with SubjectAccessReviews when it has a cluster and --client-ca; gitgate policy test needs the case's authorizer answers)";

impl CompiledPolicy {
    fn uses_authorizer(&self) -> bool {
        self.conditions.iter().chain(&self.variables).chain(&self.audit).any(|(_, e)| e.authz)
            || self.validations.iter().any(|v| v.expr.authz || v.message_expr.as_ref().is_some_and(|m| m.authz))
    }

    fn expressions(&self) -> Vec<(String, &Expression)> {
        let mut out: Vec<(String, &Expression)> = Vec::new();
        out.extend(self.conditions.iter().map(|(n, e)| (format!("matchCondition {n:?}"), e)));
        out.extend(self.variables.iter().map(|(n, e)| (format!("variable {n:?}"), e)));
        for (i, v) in self.validations.iter().enumerate() {
            out.push((format!("validation {i}"), &v.expr));
        }
        out
    }
}

#[derive(Default)]
struct Outcome {
    matched: bool,
    violations: Vec<Violation>,
    annotations: Vec<(String, String)>,
}

struct Violation {
    index: usize,
    message: String,
    reason: String,
}

/// The table of supported CEL features (`gitgate policy functions`), each
/// row's example evaluated by the engine.
pub fn functions_table() -> String {
    let mut ctx = root_context();
    let object: Json = serde_json::from_str(lang::EXAMPLE_OBJECT).unwrap_or(Json::Null);
    ctx.add_variable_from_value("object", to_cel(&object, &mut Sizes::default()));
    ctx.add_variable_from_value("authorizer", example_authorizer());
    lang::table(&ctx)
}

/// The `authorizer` the feature table's examples read: alice, updating
/// Deployment `web` in `default`, may get Secrets, `/healthz` and update
/// her request's resource; anything else is denied.
pub(crate) fn example_authorizer() -> Value {
    use authz::{Answer, StubAnswers, StubRule};
    let req: Result<AdmissionRequest, _> = serde_json::from_value(serde_json::json!({
        "uid": "example",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "web",
        "namespace": "default",
        "operation": "UPDATE",
        "userInfo": {"username": "alice", "groups": ["dev", "system:authenticated"]},
    }));
    let Ok(req) = req else { return Value::Null };
    let yes = Answer { allowed: true, reason: "allowed by the example".into(), error: None };
    let no = Answer { allowed: false, reason: "denied by the example".into(), error: None };
    let alice = |rule: StubRule| StubRule { user: Some("alice".into()), ..rule };
    let stub = StubAnswers(vec![
        (
            alice(StubRule { resource: Some("secrets".into()), verb: Some("get".into()), ..Default::default() }),
            yes.clone(),
        ),
        (alice(StubRule { path: Some("/healthz".into()), ..Default::default() }), yes.clone()),
        (
            alice(StubRule {
                group: Some("apps".into()),
                resource: Some("deployments".into()),
                namespace: Some("default".into()),
                name: Some("web".into()),
                verb: Some("update".into()),
                ..Default::default()
            }),
            yes,
        ),
        (StubRule::default(), no),
    ]);
    authz::authorizer(&req, Ok(Arc::new(authz::Session::new(Arc::new(stub)))))
}

/// The shared root context: CEL's standard library, Kubernetes' CEL
/// libraries, and gitgate's functions, overrides and type names.
fn root_context() -> Context<'static> {
    let mut ctx = Context::default().with_all();
    functions::register(&mut ctx);
    authz::register(&mut ctx);
    ctx
}

/// An evaluation error in cel-go's words, which the apiserver's denials
/// quote (`no such key: replicas`); the interpreter's own text otherwise.
fn cel_go_error(err: &kube_cel::cel::ExecutionError) -> String {
    use kube_cel::cel::ExecutionError as E;
    match err {
        E::NoSuchKey(key) => format!("no such key: {key}"),
        E::NoSuchOverload => "no such overload".to_owned(),
        E::DivisionByZero(_) => "division by zero".to_owned(),
        E::RemainderByZero(_) => "modulus by zero".to_owned(),
        E::Overflow(..) => "integer overflow".to_owned(),
        E::FunctionError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn reason_code(reason: &str) -> u16 {
    match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

fn is_secret(req: &AdmissionRequest) -> bool {
    req.resource.group.is_empty() && req.resource.resource == "secrets"
}

fn compile_policy(origin: &str, p: &ValidatingAdmissionPolicy) -> Result<CompiledPolicy, PolicyError> {
    let name = p.metadata.name.clone();
    let invalid = |message: String| PolicyError::Invalid { origin: origin.to_owned(), name: name.clone(), message };
    if name.is_empty() {
        return Err(invalid("metadata.name is required".into()));
    }
    if p.spec.param_kind.is_some() {
        return Err(invalid("paramKind is not supported".into()));
    }
    let constraints =
        p.spec.match_constraints.as_ref().ok_or_else(|| invalid("spec.matchConstraints is required".into()))?;
    let constraints = Matcher::new(constraints, true).map_err(invalid)?;
    if p.spec.validations.is_empty() && p.spec.audit_annotations.is_empty() {
        return Err(invalid("a policy needs validations or auditAnnotations".into()));
    }
    let compile = |field: String, src: &str| Expression::compile(origin, &name, field, src);
    let mut conditions = Vec::new();
    for c in &p.spec.match_conditions {
        conditions.push((c.name.clone(), compile(format!("matchCondition {:?}", c.name), &c.expression)?));
    }
    let mut variables = Vec::new();
    for v in &p.spec.variables {
        variables.push((v.name.clone(), compile(format!("variable {:?}", v.name), &v.expression)?));
    }
    let mut validations = Vec::new();
    for (i, v) in p.spec.validations.iter().enumerate() {
        let reason = v.reason.clone().unwrap_or_default();
        if !reason.is_empty()
            && !["Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge"].contains(&reason.as_str())
        {
            return Err(invalid(format!(
                "validation {i}: reason {reason:?} is not one of Unauthorized, Forbidden, Invalid, RequestEntityTooLarge"
            )));
        }
        validations.push(CompiledValidation {
            expr: compile(format!("validation {i}"), &v.expression)?,
            message: v.message.clone(),
            message_expr: v
                .message_expression
                .as_deref()
                .map(|m| compile(format!("messageExpression {i}"), m))
                .transpose()?,
            reason,
        });
    }
    let mut audit = Vec::new();
    for a in &p.spec.audit_annotations {
        audit.push((a.key.clone(), compile(format!("auditAnnotation {:?}", a.key), &a.value_expression)?));
    }
    let mut policy = CompiledPolicy {
        name: name.clone(),
        origin: origin.to_owned(),
        failure: p.spec.failure_policy.unwrap_or_default(),
        constraints,
        conditions,
        variables,
        validations,
        audit,
        inlined: false,
    };
    policy.inlined = inline_variables(&mut policy);
    Ok(policy)
}

/// Replaces each `variables.<name>` reference with the variable's
/// definition. CEL is side-effect free, so this is the apiserver's lazy
/// evaluation; and it spares cel 0.13's deep copies: a variable bound in a
/// context is copied three times (out of the object, into a `Value`, back
/// into the context), while an inlined `object.spec.template.spec` is only
/// borrowed. Refused (variables then bound eagerly) when a comprehension
/// variable in the policy could capture a name a definition uses.
fn inline_variables(p: &mut CompiledPolicy) -> bool {
    use std::collections::HashSet;
    if p.variables.is_empty() {
        return false;
    }
    let mut bound = HashSet::new();
    let mut free = HashSet::new();
    for (_, v) in &p.variables {
        ast::free_identifiers(&v.ast, &mut free);
        ast::comprehension_variables(&v.ast, &mut bound);
    }
    for v in &p.validations {
        ast::comprehension_variables(&v.expr.ast, &mut bound);
        if let Some(m) = &v.message_expr {
            ast::comprehension_variables(&m.ast, &mut bound);
        }
    }
    for (_, a) in &p.audit {
        ast::comprehension_variables(&a.ast, &mut bound);
    }
    if !bound.is_disjoint(&free) {
        return false;
    }
    // A variable that walks a collection, read once per item of a
    // comprehension, would walk it once per item if inlined (and its cost
    // bound would multiply), where the apiserver evaluates it once and
    // charges its cost once: such policies bind their variables eagerly.
    let mut walking: HashSet<String> = HashSet::new();
    for (name, v) in &p.variables {
        let mut read = HashSet::new();
        ast::identifiers(&v.ast, &mut read);
        let mut walks = false;
        ast::visit(&v.ast, &mut |e| walks |= matches!(e.expr, kube_cel::cel::common::ast::Expr::Comprehension(_)));
        if walks || read.iter().any(|r| walking.contains(r)) {
            walking.insert(format!("{VAR_PREFIX}{name}"));
        }
    }
    let is_variable = |n: &str| walking.contains(n);
    let in_loop = p.variables.iter().map(|(_, v)| &v.ast).chain(
        p.validations.iter().flat_map(|v| std::iter::once(&v.expr.ast).chain(v.message_expr.as_ref().map(|m| &m.ast))),
    );
    if in_loop.chain(p.audit.iter().map(|(_, a)| &a.ast)).any(|e| ast::read_in_loop(e, &is_variable)) {
        return false;
    }
    let mut defs: HashMap<String, IdedExpr> = HashMap::new();
    for (name, v) in &mut p.variables {
        v.substitute(&defs);
        defs.insert(format!("{VAR_PREFIX}{name}"), v.ast.clone());
    }
    for v in &mut p.validations {
        v.expr.substitute(&defs);
        if let Some(m) = &mut v.message_expr {
            m.substitute(&defs);
        }
    }
    for (_, a) in &mut p.audit {
        a.substitute(&defs);
    }
    true
}

/// Which requests a policy or binding applies to.
struct Matcher {
    rules: Vec<ResourceRule>,
    exclude: Vec<ResourceRule>,
    namespaces: Option<LabelSelector>,
    objects: Option<LabelSelector>,
}

impl Matcher {
    fn new(m: &MatchResources, rules_required: bool) -> Result<Matcher, String> {
        if rules_required && m.resource_rules.is_empty() {
            return Err("matchConstraints.resourceRules must not be empty".into());
        }
        for r in m.resource_rules.iter().chain(&m.exclude_resource_rules) {
            if r.api_groups.is_empty() || r.api_versions.is_empty() || r.operations.is_empty() || r.resources.is_empty()
            {
                return Err("each resource rule needs apiGroups, apiVersions, operations and resources".into());
            }
            // the apiserver refuses "*/*" beside anything else
            if r.resources.len() > 1 && r.resources.iter().any(|x| x == "*/*") {
                return Err("if '*/*' is present in resources, it must be the only one".into());
            }
            if let Some(scope) = &r.scope
                && !["*", "Cluster", "Namespaced"].contains(&scope.as_str())
            {
                return Err(format!("scope {scope:?} is not one of *, Cluster, Namespaced"));
            }
        }
        for s in [&m.namespace_selector, &m.object_selector].into_iter().flatten() {
            for e in &s.match_expressions {
                if !["In", "NotIn", "Exists", "DoesNotExist"].contains(&e.operator.as_str()) {
                    return Err(format!(
                        "label selector operator {:?} is not one of In, NotIn, Exists, DoesNotExist",
                        e.operator
                    ));
                }
            }
        }
        Ok(Matcher {
            rules: m.resource_rules.clone(),
            exclude: m.exclude_resource_rules.clone(),
            namespaces: m.namespace_selector.clone(),
            objects: m.object_selector.clone(),
        })
    }

    fn matches(&self, req: &AdmissionRequest, namespace: Option<&Json>) -> bool {
        if !self.rules.is_empty() && !self.rules.iter().any(|r| rule_matches(r, req)) {
            return false;
        }
        if self.exclude.iter().any(|r| rule_matches(r, req)) {
            return false;
        }
        if let Some(sel) = &self.namespaces {
            let is_namespace = req.resource.group.is_empty() && req.resource.resource == "namespaces";
            let labels = if is_namespace {
                req.subject().and_then(|o| o.pointer("/metadata/labels"))
            } else if req.namespace.is_empty() {
                None
            } else {
                namespace.and_then(|n| n.pointer("/metadata/labels"))
            };
            // cluster-scoped objects other than namespaces are never skipped
            if (is_namespace || !req.namespace.is_empty()) && !selector_matches(sel, labels) {
                return false;
            }
        }
        if let Some(sel) = &self.objects {
            let new = req.object.as_ref().and_then(|o| o.pointer("/metadata/labels"));
            let old = req.old_object.as_ref().and_then(|o| o.pointer("/metadata/labels"));
            let any = [req.object.is_some().then_some(new), req.old_object.is_some().then_some(old)];
            if !any.into_iter().flatten().any(|labels| selector_matches(sel, labels)) {
                return false;
            }
        }
        true
    }
}

fn listed(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

fn rule_matches(rule: &ResourceRule, req: &AdmissionRequest) -> bool {
    if !listed(&rule.operations, req.operation.as_str()) {
        return false;
    }
    if !listed(&rule.api_groups, &req.resource.group) || !listed(&rule.api_versions, &req.resource.version) {
        return false;
    }
    let sub = req.sub_resource.as_deref().unwrap_or("");
    let resource_ok = rule.resources.iter().any(|r| match r.split_once('/') {
        None => sub.is_empty() && (r == "*" || *r == req.resource.resource),
        // the apiserver's rule: "x/*" and "*/*" also match the main resource
        Some((res, s)) => (res == "*" || res == req.resource.resource) && (s == "*" || s == sub),
    });
    if !resource_ok {
        return false;
    }
    if !rule.resource_names.is_empty() && !rule.resource_names.iter().any(|n| n == req.object_name()) {
        return false;
    }
    match rule.scope.as_deref() {
        Some("Cluster") => !namespaced(req),
        Some("Namespaced") => namespaced(req),
        _ => true,
    }
}

/// Whether the request is for a namespaced object. A Namespace's own
/// requests carry its name in `namespace`, yet it is cluster-scoped.
fn namespaced(req: &AdmissionRequest) -> bool {
    let is_namespace = req.resource.group.is_empty() && req.resource.resource == "namespaces";
    !req.namespace.is_empty() && !is_namespace
}

fn selector_matches(sel: &LabelSelector, labels: Option<&Json>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Json::as_str);
    sel.match_labels.iter().all(|(k, v)| get(k) == Some(v.as_str()))
        && sel.match_expressions.iter().all(|e| match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| e.values.iter().any(|x| x == v)),
            "NotIn" => get(&e.key).is_none_or(|v| !e.values.iter().any(|x| x == v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        })
}

/// The variables of one request, shared by every policy that matches it:
/// borrowed as JSON for [`fast`] evaluation, and converted into the
/// interpreter's context only when an expression needs the interpreter.
struct RequestScope<'r> {
    object: Option<&'r Json>,
    old_object: Option<&'r Json>,
    namespace: Option<&'r Json>,
    request: Json,
    git: Json,
    sizes: Sizes,
    secret: bool,
    root: &'r Context<'static>,
    req: &'r AdmissionRequest,
    session: Result<Arc<authz::Session>, authz::Unavailable>,
    cel: std::cell::OnceCell<Context<'r>>,
}

impl<'r> RequestScope<'r> {
    fn new(
        root: &'r Context<'static>,
        req: &'r AdmissionRequest,
        namespace: Option<&'r Json>,
        git: &GitVars,
        session: Result<Arc<authz::Session>, authz::Unavailable>,
    ) -> RequestScope<'r> {
        let request = serde_json::json!({
            "uid": req.uid,
            "kind": req.kind,
            "resource": req.resource,
            "subResource": req.sub_resource.clone().unwrap_or_default(),
            "requestKind": req.request_kind,
            "requestResource": req.request_resource,
            "requestSubResource": req.request_sub_resource.clone().unwrap_or_default(),
            "name": req.object_name(),
            "namespace": req.namespace,
            "operation": req.operation.as_str(),
            "userInfo": req.user_info,
            "dryRun": req.dry_run,
            "options": req.options,
        });
        let mut sizes = Sizes::default();
        for v in [req.object.as_ref(), req.old_object.as_ref(), namespace, Some(&request)].into_iter().flatten() {
            measure(v, &mut sizes);
        }
        RequestScope {
            object: req.object.as_ref(),
            old_object: req.old_object.as_ref(),
            namespace,
            request,
            git: serde_json::to_value(git).unwrap_or(Json::Null),
            sizes,
            secret: is_secret(req),
            root,
            req,
            session,
            cel: std::cell::OnceCell::new(),
        }
    }

    fn fast_vars(&self) -> fast::Vars<'_> {
        fast::Vars {
            object: self.object,
            old_object: self.old_object,
            namespace: self.namespace,
            request: &self.request,
            git: &self.git,
        }
    }

    /// The interpreter's context, converted on first use.
    fn cel(&self) -> &Context<'r> {
        self.cel.get_or_init(|| {
            let mut sizes = Sizes::default();
            let mut cel = |v: Option<&Json>| v.map_or(Value::Null, |v| to_cel(v, &mut sizes));
            let mut ctx = self.root.new_inner_scope();
            ctx.add_variable_from_value("object", cel(self.object));
            ctx.add_variable_from_value("oldObject", cel(self.old_object));
            ctx.add_variable_from_value("request", cel(Some(&self.request)));
            ctx.add_variable_from_value("namespaceObject", cel(self.namespace));
            ctx.add_variable_from_value("params", Value::Null);
            ctx.add_variable_from_value("git", cel(Some(&self.git)));
            ctx.add_variable_from_value("variables", Value::Map(Map { map: Arc::new(HashMap::new()) }));
            ctx.add_variable_from_value("authorizer", authz::authorizer(self.req, self.session.clone()));
            ctx
        })
    }
}

/// The policy engine as a validating admission stage.
pub struct PolicyStage {
    pub policies: Arc<PolicySet>,
    pub namespaces: Arc<dyn Namespaces>,
    /// gitgate's reconciler identity (a username), for `git.reconciler`.
    pub reconciler: String,
    /// Groups whose members may break glass (`git.breakGlass`).
    pub break_glass_groups: Vec<String>,
}

impl Stage for PolicyStage {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn decide(&self, request: &AdmissionRequest, decision: &mut Decision) -> Flow {
        let git = self.git_vars(request, decision);
        self.policies.evaluate(request, self.namespaces.as_ref(), &git, decision);
        if decision.allowed() { Flow::Continue } else { Flow::Stop }
    }
}

impl PolicyStage {
    /// The `git` variable of a request: the provenance facts an earlier
    /// stage ([`crate::provenance::ProvenanceStage`]) put in the decision;
    /// without them (no commit traced yet) only who is asking.
    fn git_vars(&self, request: &AdmissionRequest, decision: &Decision) -> GitVars {
        let reconciler = request.user_info.username == self.reconciler;
        let break_glass = request.user_info.groups.iter().any(|g| self.break_glass_groups.contains(g));
        match decision.facts.get::<crate::provenance::Facts>() {
            Some(facts) => GitVars { break_glass, ..GitVars::from_facts(facts, reconciler) },
            None => GitVars { reconciler, break_glass, ..GitVars::default() },
        }
    }
}

/// [`PolicyStage`] for policies that read `authorizer`: their checks are
/// answered by SubjectAccessReviews (through [`authz::Reviewer`]'s
/// cache). The evaluation stays pure: it runs with the answers known, the
/// checks it could not answer are reviewed, and it runs again, until
/// nothing is pending (at most [`authz::CHECKS_PER_REQUEST`] checks, so as
/// many rounds).
///
/// Reviews are only sent for requests from the authenticated apiserver
/// (`--client-ca`): an unauthenticated caller types its own `userInfo`,
/// and answering it would make gitgate an oracle of the cluster's RBAC
/// for anyone who reaches the webhook (and let them flood the apiserver
/// with reviews). Its checks fail with the reason instead, so the
/// policy's `failurePolicy` decides.
pub struct AuthorizingPolicyStage {
    pub stage: PolicyStage,
    /// `None` without a cluster: checks fail saying so.
    pub reviewer: Option<Arc<authz::Reviewer>>,
}

impl crate::admission::AsyncStage for AuthorizingPolicyStage {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn decide<'a>(
        &'a self,
        request: &'a AdmissionRequest,
        decision: &'a mut Decision,
    ) -> crate::admission::StageFuture<'a> {
        Box::pin(async move {
            let git = self.stage.git_vars(request, decision);
            let namespaces = self.stage.namespaces.as_ref();
            let policies = &self.stage.policies;
            let reviewer = match (&self.reviewer, request.caller) {
                (Some(r), crate::admission::Caller::Apiserver) => r,
                (reviewer, _) => {
                    let why = if reviewer.is_none() {
                        "the authorizer is not available: gitgate serve has no cluster to send SubjectAccessReviews to"
                    } else {
                        "the authorizer is not available: SubjectAccessReviews are only sent for requests from the apiserver authenticated by --client-ca (this caller's userInfo is unverified)"
                    };
                    let none = Err(authz::Unavailable(why.to_owned()));
                    policies.evaluate_authorized(request, namespaces, &git, decision, &|_| true, none);
                    return if decision.allowed() { Flow::Continue } else { Flow::Stop };
                }
            };
            let mut resolved: HashMap<authz::Check, authz::Answer> = HashMap::new();
            // each round answers at least one new check, and a request asks
            // at most CHECKS_PER_REQUEST: the last round's decision stands
            // (its unanswered checks fail their expressions)
            for round in 0..=authz::CHECKS_PER_REQUEST {
                let known = authz::Known { cache: reviewer.cache.clone(), resolved: resolved.clone() };
                let session = Arc::new(authz::Session::new(Arc::new(known)));
                let mut attempt = decision.clone();
                policies.evaluate_authorized(request, namespaces, &git, &mut attempt, &|_| true, Ok(session.clone()));
                let pending = session.pending();
                if pending.is_empty() || round == authz::CHECKS_PER_REQUEST {
                    *decision = attempt;
                    break;
                }
                let answers = futures_util::future::join_all(pending.iter().map(|c| reviewer.resolve(c))).await;
                resolved.extend(pending.into_iter().zip(answers));
            }
            if decision.allowed() { Flow::Continue } else { Flow::Stop }
        })
    }
}
