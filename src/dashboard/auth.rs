//! Who is looking: every dashboard page and `/api/v1/*` route (except the
//! public `/api/v1/recipients`) needs a Kubernetes bearer token — a
//! ServiceAccount token (`kubectl create token`) or an OIDC id token the
//! apiserver accepts — sent as `Authorization: Bearer …` or set by the
//! login form as an `HttpOnly; Secure; SameSite=Strict` cookie. gitgate
//! asks the apiserver who it belongs to with a TokenReview
//! (`authentication.k8s.io/v1`, the same check as Argo CD's or the
//! Kubernetes dashboard's) and caches the answer per token for
//! min(60 s, the token's expiry), keyed by the token's SHA-256: the token
//! itself is never kept, logged, or shown in an error or a `Debug`.
//!
//! Without a cluster to ask (plan mode, `--sync=off`) there is no login:
//! the dashboard is then served, open, on a loopback `--listen` only (a
//! warning says so), and on any other address only with an explicit
//! `--dashboard-auth none`; otherwise it answers 503.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Digest as _;

use super::html;
use crate::access::Scope;
use crate::provenance::Snapshot;

/// The login cookie's name.
pub const COOKIE: &str = "gitgate_token";
/// Longest time a review is trusted.
pub const MAX_CACHE: Duration = Duration::from_secs(60);
/// How long a rejected token is remembered (answered 401 without asking).
const REJECTED_CACHE: Duration = Duration::from_secs(10);
const MAX_ENTRIES: usize = 10_000;
/// Longest token accepted (OIDC id tokens with many groups run to a few KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("failed to review the token with the apiserver")]
    Review(#[source] kube::Error),
    #[error("failed to read the kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("failed to build a client for the kubeconfig {path}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// A Kubernetes bearer token, checked with a TokenReview.
    TokenReview,
    /// No login: whoever reaches the port sees everything (logged as a warning).
    None,
}

/// `serve`'s dashboard and status-API flags (flattened into `serve`).
#[derive(Args, Debug, Clone)]
pub struct DashboardArgs {
    /// How users of /ui and /api/v1 sign in: `token-review` (a Kubernetes
    /// bearer token; without a cluster the dashboard is open on a loopback
    /// --listen only) or `none` (no login anywhere: a warning is logged).
    #[arg(long, env = "GITGATE_DASHBOARD_AUTH", value_enum, default_value_t = AuthMode::TokenReview)]
    pub dashboard_auth: AuthMode,
    /// A group whose members see every project (repeatable); others see the
    /// projects whose `roles` in gitgate.yaml grant one of their groups `read`.
    #[arg(long = "admin-group", env = "GITGATE_ADMIN_GROUPS", value_delimiter = ',')]
    pub admin_groups: Vec<String>,
    /// A group whose members read every project and may do nothing else
    /// (repeatable): a fleet's hub (`kubectl create token` of its
    /// ServiceAccount; its group `system:serviceaccounts:NAMESPACE`).
    #[arg(long = "reader-group", env = "GITGATE_READER_GROUPS", value_delimiter = ',')]
    pub reader_groups: Vec<String>,
    /// Serve /metrics here, plain HTTP without a token (for Prometheus),
    /// instead of on the HTTPS --listen address.
    #[arg(long, env = "GITGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// kubeconfig of the cluster whose apiserver reviews tokens (default:
    /// the sync loop's cluster).
    #[arg(long)]
    pub auth_kubeconfig: Option<PathBuf>,
}

/// Who a token belongs to, as the apiserver says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

struct Cached {
    until: Instant,
    user: Option<User>,
}

/// TokenReviews through gitgate's kube client, cached per token hash.
pub struct TokenReviewer {
    client: kube::Client,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        TokenReviewer { client, cache: Mutex::new(HashMap::new()) }
    }

    /// The token's user; `None` when the apiserver does not accept it.
    pub async fn review(&self, token: &SecretString) -> Result<Option<User>, AuthError> {
        let key: [u8; 32] = sha2::Sha256::digest(token.expose_secret().as_bytes()).into();
        let now = Instant::now();
        if let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && hit.until > now
        {
            return Ok(hit.user.clone());
        }
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.expose_secret().to_string()), audiences: None },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let answer = api.create(&kube::api::PostParams::default(), &review).await.map_err(AuthError::Review)?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(u)) => {
                Some(User { name: u.username.unwrap_or_default(), groups: u.groups.unwrap_or_default() })
            }
            // The apiserver omits `authenticated: false` (omitempty) and says
            // why in `error`: an unknown token and an authenticator that
            // failed look alike, and both are a 401 here.
            (_, _) => {
                if let Some(e) = status.error.filter(|e| !e.is_empty()) {
                    tracing::debug!(reason = %e, "the apiserver did not accept a dashboard token");
                }
                None
            }
        };
        let ttl = match &user {
            Some(_) => cache_for(token.expose_secret(), std::time::SystemTime::now()),
            None => REJECTED_CACHE,
        };
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_ENTRIES {
                cache.retain(|_, c| c.until > now);
                if cache.len() >= MAX_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(key, Cached { until: now + ttl, user: user.clone() });
        }
        Ok(user)
    }
}

/// How long an accepted token's review may be reused: min(60 s, until the
/// token's `exp` when it is a JWT).
pub fn cache_for(token: &str, now: std::time::SystemTime) -> Duration {
    expires_in(token, now).map_or(MAX_CACHE, |d| d.min(MAX_CACHE))
}

/// Time left until a JWT's `exp`; `None` for an opaque token. The claim is
/// read, not verified: the apiserver verifies the token, this only bounds
/// how long gitgate reuses its answer (and the cookie's life).
pub fn expires_in(token: &str, now: std::time::SystemTime) -> Option<Duration> {
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| c.get("exp").and_then(serde_json::Value::as_u64))?;
    let exp = std::time::UNIX_EPOCH + Duration::from_secs(exp);
    Some(exp.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How requests are let in.
pub enum Mode {
    Review(Arc<TokenReviewer>),
    /// No login; the reason is shown in the page header.
    Open(&'static str),
    /// The dashboard is off; the reason is the 503's body.
    Off(&'static str),
}

/// The gate in front of `/ui` and `/api/v1`.
pub struct Gate {
    pub mode: Mode,
    pub admin_groups: Vec<String>,
    /// Members read every project, and act on none.
    pub reader_groups: Vec<String>,
    /// The config in force, whose project roles scope other users; `None`
    /// where there are no projects (a fleet's hub: admins and readers only).
    pub snapshot: Option<Arc<ArcSwapOption<Snapshot>>>,
}

impl Gate {
    /// The gate `serve` runs: a TokenReview against `--auth-kubeconfig`'s
    /// cluster or the sync loop's (`cluster`); without either, open on a
    /// loopback `listen` and off elsewhere (`--dashboard-auth none` opens it).
    pub async fn start(
        args: &DashboardArgs,
        cluster: Option<kube::Client>,
        listen: SocketAddr,
        snapshot: Option<Arc<ArcSwapOption<Snapshot>>>,
    ) -> Result<Gate, AuthError> {
        let client = match &args.auth_kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|source| AuthError::Kubeconfig { path: path.clone(), source })?;
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|source| AuthError::Kubeconfig { path: path.clone(), source })?;
                Some(
                    kube::Client::try_from(config)
                        .map_err(|source| AuthError::Client { path: path.clone(), source })?,
                )
            }
            None => cluster,
        };
        let mode = match (args.dashboard_auth, client) {
            (AuthMode::None, _) => {
                tracing::warn!(
                    addr = %listen,
                    "--dashboard-auth none: the dashboard and /api/v1 have no login; whoever reaches the port reads every app, file and audit record"
                );
                Mode::Open("no login (--dashboard-auth none)")
            }
            (AuthMode::TokenReview, Some(client)) => {
                tracing::info!(admin_groups = ?args.admin_groups, "the dashboard and /api/v1 need a Kubernetes bearer token (TokenReview)");
                Mode::Review(Arc::new(TokenReviewer::new(client)))
            }
            (AuthMode::TokenReview, None) if listen.ip().is_loopback() => {
                tracing::warn!(
                    addr = %listen,
                    "no cluster to review tokens: the dashboard and /api/v1 are served without login, on this loopback address only"
                );
                Mode::Open("no login: no cluster to check tokens, loopback only")
            }
            (AuthMode::TokenReview, None) => {
                tracing::warn!(
                    addr = %listen,
                    "no cluster to review tokens and --listen is not loopback: the dashboard and /api/v1 are off (503); pass --dashboard-auth none to serve them without login"
                );
                Mode::Off(
                    "the dashboard is off: gitgate has no cluster to check login tokens with, and it is not served without login on a non-loopback address (see --dashboard-auth)",
                )
            }
        };
        Ok(Gate { mode, admin_groups: args.admin_groups.clone(), reader_groups: args.reader_groups.clone(), snapshot })
    }

    /// Who is asking, and what they may read.
    pub async fn viewer(&self, headers: &HeaderMap) -> Result<Viewer, Refusal> {
        let reviewer = match &self.mode {
            Mode::Open(why) => {
                return Ok(Viewer {
                    user: (*why).to_string(),
                    groups: Vec::new(),
                    admin: false,
                    scope: Scope::All,
                    login: false,
                });
            }
            Mode::Off(why) => return Err(Refusal::Off(why)),
            Mode::Review(r) => r,
        };
        let token = token_of(headers).ok_or(Refusal::NoToken)?;
        let user = match reviewer.review(&token).await {
            Ok(Some(u)) => u,
            Ok(None) => return Err(Refusal::Rejected),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "failed to check a dashboard login");
                return Err(Refusal::Unavailable);
            }
        };
        self.scope_of(user)
    }

    /// The scope of a reviewed user under the config in force.
    pub fn scope_of(&self, user: User) -> Result<Viewer, Refusal> {
        let admin = user.groups.iter().any(|g| self.admin_groups.contains(g));
        let reader = user.groups.iter().any(|g| self.reader_groups.contains(g));
        let scope = if admin || reader {
            Scope::All
        } else {
            let Some(snapshot) = &self.snapshot else { return Err(Refusal::NoRole(user)) };
            let Some(snap) = snapshot.load_full() else { return Err(Refusal::Starting) };
            Scope::of(&user.groups, &self.admin_groups, snap.desired.config())
        };
        if scope.is_empty() {
            return Err(Refusal::NoRole(user));
        }
        Ok(Viewer { user: user.name, groups: user.groups, admin, scope, login: true })
    }

    pub fn reviewer(&self) -> Option<&TokenReviewer> {
        match &self.mode {
            Mode::Review(r) => Some(r),
            _ => None,
        }
    }
}

/// A request let in.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub user: String,
    /// The groups the apiserver gave the token (empty without a login).
    pub groups: Vec<String>,
    /// A member of an `--admin-group`.
    pub admin: bool,
    pub scope: Scope,
    /// Signed in with a token (a sign-out button makes sense).
    pub login: bool,
}

/// Why a request is not let in.
#[derive(Debug)]
pub enum Refusal {
    NoToken,
    Rejected,
    NoRole(User),
    Starting,
    Unavailable,
    Off(&'static str),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::NoToken | Refusal::Rejected => StatusCode::UNAUTHORIZED,
            Refusal::NoRole(_) => StatusCode::FORBIDDEN,
            Refusal::Starting | Refusal::Unavailable | Refusal::Off(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::NoToken => {
                "a Kubernetes bearer token is needed (kubectl create token, or an OIDC id token)".into()
            }
            Refusal::Rejected => "the apiserver did not accept this token".into(),
            Refusal::NoRole(u) => format!(
                "{} is signed in, but no project in gitgate.yaml grants read to any of the groups {:?} (projects[].roles), and none is an --admin-group",
                u.name, u.groups
            ),
            Refusal::Starting => "gitgate has not rendered Git yet; try again in a moment".into(),
            Refusal::Unavailable => "the apiserver could not check the token; try again".into(),
            Refusal::Off(why) => (*why).to_string(),
        }
    }

    /// The answer: JSON for `/api/`, a page (the login form on a 401) otherwise.
    pub fn response(&self, api: bool, next: &str) -> Response {
        let status = self.status();
        let mut res = if api {
            (status, axum::Json(serde_json::json!({"error": self.message()}))).into_response()
        } else {
            let body = match self {
                Refusal::NoToken | Refusal::Rejected => {
                    let error = matches!(self, Refusal::Rejected).then(|| self.message());
                    html::login_page(next, error.as_deref())
                }
                Refusal::NoRole(_) => html::page(
                    "No project",
                    "",
                    false,
                    None,
                    &format!(
                        "<section><h1>No project</h1><p class=\"error\" id=\"no-project\">{}</p>{}</section>",
                        html::esc(&self.message()),
                        html::sign_out_form()
                    ),
                ),
                _ => html::page(
                    "Unavailable",
                    "",
                    false,
                    None,
                    &format!("<p class=\"error\">{}</p>", html::esc(&self.message())),
                ),
            };
            super::html_page(status, body)
        };
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"gitgate\""));
            if matches!(self, Refusal::Rejected) {
                res.headers_mut().insert(header::SET_COOKIE, clear_cookie());
            }
        }
        res
    }
}

/// The bearer token of a request: `Authorization: Bearer`, else the cookie.
pub fn token_of(headers: &HeaderMap) -> Option<SecretString> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')))
    };
    bearer.or_else(cookie).filter(|t| valid_token(t)).map(|t| SecretString::from(t.to_string()))
}

/// A token as it may travel in a header and a cookie: visible ASCII, no
/// separators, bounded.
pub fn valid_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TOKEN_BYTES && t.bytes().all(|b| b.is_ascii_graphic() && !b";,\"\\".contains(&b))
}

/// The login cookie for `token`: only sent back over HTTPS, to this site,
/// never readable by scripts.
pub fn set_cookie(token: &SecretString) -> Option<HeaderValue> {
    // A session cookie, ending with the token when it says when.
    let max_age = expires_in(token.expose_secret(), std::time::SystemTime::now())
        .map(|d| format!("; Max-Age={}", d.as_secs()))
        .unwrap_or_default();
    let mut v = HeaderValue::from_str(&format!(
        "{COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict{max_age}",
        token.expose_secret()
    ))
    .ok()?;
    v.set_sensitive(true);
    Some(v)
}

pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("gitgate_token=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// The middleware in front of the gated routes: lets a viewer in (with its
/// [`Viewer`] and [`Scope`] as request extensions) or answers the refusal.
pub async fn require(State(gate): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    match gate.viewer(req.headers()).await {
        Ok(viewer) => {
            req.extensions_mut().insert(viewer.scope.clone());
            req.extensions_mut().insert(viewer);
            next.run(req).await
        }
        Err(refusal) => {
            let next_page = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/ui");
            refusal.response(api, next_page)
        }
    }
}

/// Where to go after login: a dashboard page of this server, nothing else.
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/ui") && !next.starts_with("//") && !next.contains('\\') && !next.contains("://");
    if ok { next } else { "/ui" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(&format!(r#"{{"sub":"x","exp":{exp}}}"#)))
    }

    #[test]
    fn reviews_are_cached_for_at_most_a_minute_and_never_past_expiry() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(cache_for(&jwt(1_000_000 + 3600), now), MAX_CACHE);
        assert_eq!(cache_for(&jwt(1_000_000 + 20), now), Duration::from_secs(20));
        assert_eq!(cache_for(&jwt(1_000_000 - 5), now), Duration::ZERO, "an expired token is not cached");
        assert_eq!(cache_for("opaque-static-token", now), MAX_CACHE);
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_cookie_and_is_never_in_debug() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("theme=dark; gitgate_token=abc.def.ghi"));
        let t = token_of(&h).unwrap();
        assert_eq!(t.expose_secret(), "abc.def.ghi");
        assert!(!format!("{t:?}").contains("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer from-header"));
        assert_eq!(token_of(&h).unwrap().expose_secret(), "from-header");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        h.remove(header::COOKIE);
        assert!(token_of(&h).is_none());
        assert!(!valid_token("a;b") && !valid_token("a b") && valid_token("eyJ.eyJ.sig-_"));
    }

    #[test]
    fn login_redirects_stay_on_the_dashboard() {
        assert_eq!(safe_next("/ui/apps/web"), "/ui/apps/web");
        for bad in ["https://evil.example/ui", "//evil.example", "/ui\\@evil", "/api/v1/apps", ""] {
            assert_eq!(safe_next(bad), "/ui", "{bad}");
        }
    }

    #[test]
    fn the_cookie_is_http_only_secure_and_same_site_strict() {
        let v = set_cookie(&SecretString::from("tok".to_string())).unwrap();
        let s = v.to_str().unwrap();
        assert!(s.contains("HttpOnly") && s.contains("Secure") && s.contains("SameSite=Strict"), "{s}");
        assert!(v.is_sensitive());
    }

    /// A fleet's hub reads every project on a spoke, and is no admin: it
    /// may approve, pause or override nothing.
    #[test]
    fn a_reader_group_member_reads_everything_and_is_no_admin() {
        let gate = Gate {
            mode: Mode::Open("test"),
            admin_groups: vec!["platform".into()],
            reader_groups: vec!["system:serviceaccounts:gitgate-fleet".into()],
            snapshot: Some(Arc::new(ArcSwapOption::empty())),
        };
        let hub = User {
            name: "system:serviceaccount:gitgate-fleet:hub".into(),
            groups: vec!["system:serviceaccounts".into(), "system:serviceaccounts:gitgate-fleet".into()],
        };
        let v = gate.scope_of(hub).unwrap_or_else(|_| panic!("a reader is let in"));
        assert!(v.scope.is_all() && !v.admin);
        let ada = User { name: "ada".into(), groups: vec!["platform".into()] };
        assert!(gate.scope_of(ada).unwrap_or_else(|_| panic!("an admin is let in")).admin);
        let bob = User { name: "bob".into(), groups: vec!["system:serviceaccounts".into()] };
        assert!(matches!(gate.scope_of(bob.clone()), Err(Refusal::Starting)), "no config in force yet: not let in");
        // A hub has no projects: anyone else has no role there, at once.
        let hub_gate = Gate { snapshot: None, ..gate };
        assert!(matches!(hub_gate.scope_of(bob), Err(Refusal::NoRole(_))));
    }
}
