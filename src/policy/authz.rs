//! The CEL `authorizer` variable, as Kubernetes' `authz` library defines
//! it: `authorizer.path(p)`, `authorizer.group(g).resource(r)
//! .subresource(s).namespace(ns).name(n)`, `authorizer.requestResource`,
//! `authorizer.serviceAccount(ns, name)`, `.check(verb)` → a decision with
//! `allowed()`, `reason()`, `errored()`, `error()`.
//!
//! Evaluation stays pure: a check reads its answer from the request's
//! [`Session`], whose [`Answers`] are what is known (a test fixture's
//! stub, or the SubjectAccessReview cache plus what was resolved for this
//! request). A check whose answer is not known yet is recorded as pending
//! and fails the evaluation; the caller ([`super::PolicyStage`]'s async
//! path) resolves the pending checks through [`Reviewer`] and evaluates
//! again. Each request may ask at most [`CHECKS_PER_REQUEST`] distinct
//! checks.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_cel::cel::extractors::{Arguments, This};
use kube_cel::cel::objects::{Opaque, Value};
use kube_cel::cel::{Context, ExecutionError, ResolveResult};

use crate::admission::AdmissionRequest;
use crate::admission::review::UserInfo;

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("failed to send a SubjectAccessReview: {0}")]
    Review(String),
    #[error("failed to get a SubjectAccessReview answer within {0:?}")]
    Timeout(Duration),
}

/// Distinct checks one request may ask (the rest fail the expression).
pub const CHECKS_PER_REQUEST: usize = 16;
/// How long an answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Answers kept at most (oldest evicted first): a flood of distinct users
/// cannot grow the cache past this.
pub const CACHE_ENTRIES: usize = 4096;

/// Who a check is asked for: the request's user, or a ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Subject {
    pub fn of(user: &UserInfo) -> Subject {
        Subject {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
        }
    }

    /// As the apiserver's `serviceAccount(ns, name)` (`serviceaccount.
    /// UserInfo`): the account's user name and its two groups.
    fn service_account(namespace: &str, name: &str) -> Subject {
        Subject {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            uid: String::new(),
            groups: vec!["system:serviceaccounts".to_owned(), format!("system:serviceaccounts:{namespace}")],
            extra: BTreeMap::new(),
        }
    }
}

/// What a check asks: a resource (group, resource, subresource,
/// namespace, name) or a non-resource path, and a verb.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attributes {
    pub path: Option<String>,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub verb: String,
}

/// One check: the cache's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Check {
    pub subject: Subject,
    pub attributes: Attributes,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = &self.attributes;
        match &a.path {
            Some(p) => write!(f, "{} {} {p}", self.subject.user, a.verb),
            None => {
                let group = if a.group.is_empty() { "core" } else { a.group.as_str() };
                let sub = if a.subresource.is_empty() { String::new() } else { format!("/{}", a.subresource) };
                write!(f, "{} {} {group}/{}{sub}", self.subject.user, a.verb, a.resource)?;
                if !a.namespace.is_empty() {
                    write!(f, " in {}", a.namespace)?;
                }
                if !a.name.is_empty() {
                    write!(f, " named {}", a.name)?;
                }
                Ok(())
            }
        }
    }
}

/// The authorizer's decision (`authorizer...check(verb)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub allowed: bool,
    pub reason: String,
    /// Set when the authorizer could not decide (`errored()`).
    pub error: Option<String>,
}

impl Opaque for Answer {
    fn runtime_type_name(&self) -> &str {
        "kubernetes.authorization.Decision"
    }
}

/// What is known of the checks' answers.
pub trait Answers: Send + Sync {
    fn get(&self, check: &Check) -> Option<Answer>;
}

/// Fixed answers (a `gitgate policy test` fixture's `authorizer:` list):
/// a check no entry matches is denied with a reason saying so.
#[derive(Default)]
pub struct StubAnswers(pub Vec<(StubRule, Answer)>);

/// Which checks a stub answer is for: each field set must equal the
/// check's (`user` against the check's subject).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StubRule {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub subresource: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub verb: Option<String>,
}

impl StubRule {
    fn matches(&self, c: &Check) -> bool {
        let a = &c.attributes;
        let eq = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        eq(&self.user, &c.subject.user)
            && self.path.as_deref().is_none_or(|p| a.path.as_deref() == Some(p))
            && eq(&self.group, &a.group)
            && eq(&self.resource, &a.resource)
            && eq(&self.subresource, &a.subresource)
            && eq(&self.namespace, &a.namespace)
            && eq(&self.name, &a.name)
            && eq(&self.verb, &a.verb)
    }
}

impl Answers for StubAnswers {
    fn get(&self, check: &Check) -> Option<Answer> {
        Some(self.0.iter().find(|(r, _)| r.matches(check)).map(|(_, a)| a.clone()).unwrap_or_else(|| Answer {
            allowed: false,
            reason: format!("no stub answer for {check}"),
            error: None,
        }))
    }
}

/// The answers of one request's evaluation: the cache's, then what was
/// resolved for it.
pub struct Known {
    pub cache: Arc<AnswerCache>,
    pub resolved: HashMap<Check, Answer>,
}

impl Answers for Known {
    fn get(&self, check: &Check) -> Option<Answer> {
        self.resolved.get(check).cloned().or_else(|| self.cache.get(check))
    }
}

/// One request's use of the authorizer: what it may know, which checks it
/// asked, which of them are not answered yet.
pub struct Session {
    answers: Arc<dyn Answers>,
    asked: Mutex<BTreeSet<Check>>,
    pending: Mutex<BTreeSet<Check>>,
    cap: usize,
}

impl Session {
    pub fn new(answers: Arc<dyn Answers>) -> Session {
        Session::with_cap(answers, CHECKS_PER_REQUEST)
    }

    pub fn with_cap(answers: Arc<dyn Answers>, cap: usize) -> Session {
        Session { answers, asked: Mutex::default(), pending: Mutex::default(), cap }
    }

    /// The checks asked whose answers are not known.
    pub fn pending(&self) -> Vec<Check> {
        self.pending.lock().map(|p| p.iter().cloned().collect()).unwrap_or_default()
    }

    fn check(&self, check: Check) -> Result<Answer, String> {
        {
            let mut asked = self.asked.lock().map_err(|_| "authorizer unavailable".to_owned())?;
            if !asked.contains(&check) {
                if asked.len() >= self.cap {
                    return Err(format!(
                        "authorizer: more than {} distinct checks in one request (the limit per request)",
                        self.cap
                    ));
                }
                asked.insert(check.clone());
            }
        }
        match self.answers.get(&check) {
            Some(a) => Ok(a),
            None => {
                let text = format!("authorizer: no answer yet for {check}");
                if let Ok(mut p) = self.pending.lock() {
                    p.insert(check);
                }
                Err(text)
            }
        }
    }
}

/// Why a request has no authorizer: said by each check it asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// A value of the authorizer library: the `authorizer` variable, a path
/// check, or a resource check being built.
#[derive(Clone)]
pub struct AuthzValue {
    session: Result<Arc<Session>, Unavailable>,
    subject: Subject,
    attributes: Attributes,
    /// The request's own resource (`requestResource`).
    request: Attributes,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Authorizer,
    Path,
    Group,
    Resource,
}

impl std::fmt::Debug for AuthzValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzValue").field("kind", &self.kind).field("attributes", &self.attributes).finish()
    }
}

impl PartialEq for AuthzValue {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.subject == other.subject && self.attributes == other.attributes
    }
}
impl Eq for AuthzValue {}

impl Opaque for AuthzValue {
    fn runtime_type_name(&self) -> &str {
        match self.kind {
            Kind::Authorizer => "kubernetes.authorization.Authorizer",
            Kind::Path => "kubernetes.authorization.PathCheck",
            Kind::Group => "kubernetes.authorization.GroupCheck",
            Kind::Resource => "kubernetes.authorization.ResourceCheck",
        }
    }
}

/// The `authorizer` variable of a request by `user`: checks go through
/// `session`, or fail with the reason it is unavailable.
pub fn authorizer(req: &AdmissionRequest, session: Result<Arc<Session>, Unavailable>) -> Value {
    let request = Attributes {
        path: None,
        group: req.resource.group.clone(),
        resource: req.resource.resource.clone(),
        subresource: req.sub_resource.clone().unwrap_or_default(),
        namespace: req.namespace.clone(),
        name: req.object_name().to_owned(),
        verb: String::new(),
    };
    Value::Opaque(Arc::new(AuthzValue {
        session,
        subject: Subject::of(&req.user_info),
        attributes: Attributes::default(),
        request,
        kind: Kind::Authorizer,
    }))
}

/// `authorizer.requestResource`: a resource check of the request's own
/// resource, subresource, namespace and name (rewritten at load to a call
/// of this name).
pub const REQUEST_RESOURCE: &str = "__gitgate_authz_request_resource";

fn this_authz<'a>(this: &'a Value, function: &str, want: &[Kind]) -> Result<&'a AuthzValue, ExecutionError> {
    if let Value::Opaque(o) = this
        && let Some(v) = (o.as_ref() as &dyn std::any::Any).downcast_ref::<AuthzValue>()
        && want.contains(&v.kind)
    {
        return Ok(v);
    }
    Err(ExecutionError::function_error(function, "no such overload"))
}

fn string_arg(args: &[Value], i: usize, function: &str) -> Result<String, ExecutionError> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s.to_string()),
        _ => Err(ExecutionError::function_error(function, "expected a string argument")),
    }
}

fn derive(v: &AuthzValue, kind: Kind, edit: impl FnOnce(&mut Attributes)) -> Value {
    let mut next = v.clone();
    next.kind = kind;
    edit(&mut next.attributes);
    Value::Opaque(Arc::new(next))
}

fn path(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let v = this_authz(&this, "path", &[Kind::Authorizer])?;
    let p = string_arg(&args, 0, "path")?;
    Ok(derive(v, Kind::Path, |a| a.path = Some(p)))
}

fn group(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let v = this_authz(&this, "group", &[Kind::Authorizer])?;
    let g = string_arg(&args, 0, "group")?;
    Ok(derive(v, Kind::Group, |a| a.group = g))
}

fn resource(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let v = this_authz(&this, "resource", &[Kind::Group])?;
    let r = string_arg(&args, 0, "resource")?;
    Ok(derive(v, Kind::Resource, |a| a.resource = r))
}

fn subresource(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let v = this_authz(&this, "subresource", &[Kind::Resource])?;
    let s = string_arg(&args, 0, "subresource")?;
    Ok(derive(v, Kind::Resource, |a| a.subresource = s))
}

fn namespace(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let v = this_authz(&this, "namespace", &[Kind::Resource])?;
    let n = string_arg(&args, 0, "namespace")?;
    Ok(derive(v, Kind::Resource, |a| a.namespace = n))
}

fn name(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let v = this_authz(&this, "name", &[Kind::Resource])?;
    let n = string_arg(&args, 0, "name")?;
    Ok(derive(v, Kind::Resource, |a| a.name = n))
}

fn service_account(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let v = this_authz(&this, "serviceAccount", &[Kind::Authorizer])?;
    let ns = string_arg(&args, 0, "serviceAccount")?;
    let n = string_arg(&args, 1, "serviceAccount")?;
    let mut next = v.clone();
    next.subject = Subject::service_account(&ns, &n);
    Ok(Value::Opaque(Arc::new(next)))
}

fn check(This(this): This<Value>, Arguments(args): Arguments) -> ResolveResult {
    let v = this_authz(&this, "check", &[Kind::Path, Kind::Resource])?;
    let verb = string_arg(&args, 0, "check")?;
    let session = v.session.as_ref().map_err(|u| ExecutionError::function_error("check", u.0.clone()))?;
    let mut attributes = v.attributes.clone();
    attributes.verb = verb;
    let answer = session
        .check(Check { subject: v.subject.clone(), attributes })
        .map_err(|e| ExecutionError::function_error("check", e))?;
    Ok(Value::Opaque(Arc::new(answer)))
}

fn answer_of<'a>(this: &'a Value, function: &str) -> Result<&'a Answer, ExecutionError> {
    if let Value::Opaque(o) = this
        && let Some(a) = (o.as_ref() as &dyn std::any::Any).downcast_ref::<Answer>()
    {
        return Ok(a);
    }
    Err(ExecutionError::function_error(function, "no such overload"))
}

fn allowed(This(this): This<Value>) -> ResolveResult {
    Ok(Value::Bool(answer_of(&this, "allowed")?.allowed))
}

fn reason(This(this): This<Value>) -> ResolveResult {
    Ok(Value::String(Arc::new(answer_of(&this, "reason")?.reason.clone())))
}

fn errored(This(this): This<Value>) -> ResolveResult {
    Ok(Value::Bool(answer_of(&this, "errored")?.error.is_some()))
}

fn error(This(this): This<Value>) -> ResolveResult {
    Ok(Value::String(Arc::new(answer_of(&this, "error")?.error.clone().unwrap_or_default())))
}

/// `authorizer.requestResource`.
fn request_resource(This(this): This<Value>) -> ResolveResult {
    let v = this_authz(&this, "requestResource", &[Kind::Authorizer])?;
    let r = v.request.clone();
    Ok(derive(v, Kind::Resource, |a| *a = r))
}

/// Registers the library's functions.
pub fn register(ctx: &mut Context<'_>) {
    ctx.add_function("path", path);
    ctx.add_function("group", group);
    ctx.add_function("resource", resource);
    ctx.add_function("subresource", subresource);
    ctx.add_function("namespace", namespace);
    ctx.add_function("name", name);
    ctx.add_function("serviceAccount", service_account);
    ctx.add_function("check", check);
    ctx.add_function("allowed", allowed);
    ctx.add_function("reason", reason);
    ctx.add_function("errored", errored);
    ctx.add_function("error", error);
    ctx.add_function(REQUEST_RESOURCE, request_resource);
}

/// Answers kept for [`CACHE_TTL`], at most [`CACHE_ENTRIES`] of them.
pub struct AnswerCache {
    ttl: Duration,
    cap: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<Check, (Answer, Instant)>,
    order: VecDeque<Check>,
}

impl AnswerCache {
    pub fn new(ttl: Duration, cap: usize) -> AnswerCache {
        AnswerCache { ttl, cap: cap.max(1), inner: Mutex::default() }
    }

    pub fn get(&self, check: &Check) -> Option<Answer> {
        let inner = self.inner.lock().ok()?;
        let (a, at) = inner.map.get(check)?;
        (at.elapsed() < self.ttl).then(|| a.clone())
    }

    /// Keeps an answer (never an errored one: the next request asks
    /// again), evicting the oldest entries beyond the cap.
    pub fn put(&self, check: Check, answer: Answer) {
        if answer.error.is_some() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.map.insert(check.clone(), (answer, Instant::now())).is_none() {
            inner.order.push_back(check);
        }
        while inner.map.len() > self.cap {
            let Some(old) = inner.order.pop_front() else { break };
            inner.map.remove(&old);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends SubjectAccessReviews for the checks a request's policies ask,
/// keeping the answers in an [`AnswerCache`].
pub struct Reviewer {
    client: kube::Client,
    pub cache: Arc<AnswerCache>,
    /// Bounds one review (the webhook's own timeout is longer).
    pub timeout: Duration,
}

impl Reviewer {
    pub fn new(client: kube::Client) -> Reviewer {
        Reviewer {
            client,
            cache: Arc::new(AnswerCache::new(CACHE_TTL, CACHE_ENTRIES)),
            timeout: Duration::from_secs(3),
        }
    }

    /// The answer to one check: the cache's, else the apiserver's (kept).
    /// A failed review is an errored answer (`errored()`), not cached.
    pub async fn resolve(&self, check: &Check) -> Answer {
        if let Some(a) = self.cache.get(check) {
            return a;
        }
        match self.review(check).await {
            Ok(a) => {
                self.cache.put(check.clone(), a.clone());
                a
            }
            Err(e) => Answer { allowed: false, reason: String::new(), error: Some(e.to_string()) },
        }
    }

    async fn review(&self, check: &Check) -> Result<Answer, AuthzError> {
        use k8s_openapi::api::authorization::v1::{
            NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let a = &check.attributes;
        let s = &check.subject;
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        let spec = SubjectAccessReviewSpec {
            user: opt(&s.user),
            uid: opt(&s.uid),
            groups: (!s.groups.is_empty()).then(|| s.groups.clone()),
            extra: (!s.extra.is_empty()).then(|| s.extra.clone()),
            non_resource_attributes: a
                .path
                .as_ref()
                .map(|p| NonResourceAttributes { path: Some(p.clone()), verb: Some(a.verb.clone()) }),
            resource_attributes: a.path.is_none().then(|| ResourceAttributes {
                group: Some(a.group.clone()),
                resource: opt(&a.resource),
                subresource: opt(&a.subresource),
                namespace: opt(&a.namespace),
                name: opt(&a.name),
                verb: Some(a.verb.clone()),
                ..Default::default()
            }),
        };
        let review = SubjectAccessReview { spec, ..Default::default() };
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let params = kube::api::PostParams::default();
        let sent = api.create(&params, &review);
        let done = tokio::time::timeout(self.timeout, sent)
            .await
            .map_err(|_| AuthzError::Timeout(self.timeout))?
            .map_err(|e| AuthzError::Review(e.to_string()))?;
        let status = done.status.unwrap_or_default();
        let error = status.evaluation_error.filter(|e| !e.is_empty() && !status.allowed);
        Ok(Answer { allowed: status.allowed, reason: status.reason.unwrap_or_default(), error })
    }
}
