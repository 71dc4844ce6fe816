//! A loopback fake of the parts of Vault's HTTP API gitgate uses, shaped as
//! Vault documents them: KV v2 read (with `?version=`), KV v1 read,
//! Kubernetes and AppRole login, token lookup-self and renew-self, and the
//! error shapes (`{"errors": [...]}` with 403, 404, 503) plus slow answers.
//! No Vault server can be installed here; gitgate's Vault client is tested
//! against this.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const ROOT_TOKEN: &str = "hvs.fake-root-token";
pub const K8S_ROLE: &str = "gitgate";
pub const K8S_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.fake-service-account-token.sig";
pub const ROLE_ID: &str = "fake-role-id";
pub const SECRET_ID: &str = "fake-secret-id";

#[derive(Default)]
pub struct FakeState {
    /// (mount, path) → versions (index 0 is version 1).
    pub kv2: Mutex<HashMap<(String, String), Vec<Value>>>,
    pub kv1: Mutex<HashMap<(String, String), Value>>,
    pub kv1_mounts: Mutex<HashSet<String>>,
    /// Valid tokens.
    pub tokens: Mutex<HashSet<String>>,
    /// Paths (`mount/path`) the tokens may not read.
    pub forbidden: Mutex<HashSet<String>>,
    /// Answer everything with this status (503: sealed).
    pub fail_with: Mutex<Option<u16>>,
    /// Wait this long before answering.
    pub delay: Mutex<Duration>,
    /// Refuse renew-self (as for an expired token).
    pub refuse_renewal: Mutex<bool>,
    pub reads: AtomicUsize,
    pub logins: AtomicUsize,
    pub renewals: AtomicUsize,
    pub lookups: AtomicUsize,
    /// Every request as received: method, the raw path and query, and the
    /// Host header.
    pub requests: Mutex<Vec<(String, String, String)>>,
    issued: AtomicUsize,
}

impl FakeState {
    pub fn put_kv2(&self, mount: &str, path: &str, data: Value) -> u64 {
        let mut kv = self.kv2.lock().unwrap();
        let versions = kv.entry((mount.into(), path.into())).or_default();
        versions.push(data);
        versions.len() as u64
    }

    pub fn put_kv1(&self, mount: &str, path: &str, data: Value) {
        self.kv1_mounts.lock().unwrap().insert(mount.into());
        self.kv1.lock().unwrap().insert((mount.into(), path.into()), data);
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn set_fail(&self, code: Option<u16>) {
        *self.fail_with.lock().unwrap() = code;
    }

    pub fn forbid(&self, location: &str) {
        self.forbidden.lock().unwrap().insert(location.into());
    }

    pub fn revoke_all(&self) {
        self.tokens.lock().unwrap().clear();
    }

    fn issue(&self) -> String {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let token = format!("hvs.fake-issued-{n}");
        self.tokens.lock().unwrap().insert(token.clone());
        token
    }
}

pub struct FakeVault {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeVault {
    pub async fn start() -> FakeVault {
        let state = Arc::new(FakeState::default());
        state.tokens.lock().unwrap().insert(ROOT_TOKEN.into());
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeVault { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A [`FakeVault`] on a runtime of its own, for tests without one: `stop`
/// ends it whole — listener and open keep-alive connections — as a Vault
/// process that dies; `start` serves the same state on the same port again.
pub struct StoppableVault {
    pub state: Arc<FakeState>,
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl StoppableVault {
    /// A fresh fake on a free port.
    pub fn new() -> StoppableVault {
        let state = Arc::new(FakeState::default());
        state.tokens.lock().unwrap().insert(ROOT_TOKEN.into());
        let mut v = StoppableVault { state, addr: SocketAddr::from(([127, 0, 0, 1], 0)), runtime: None };
        v.start();
        v
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves (again) on its port.
    pub fn start(&mut self) {
        self.stop();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (state, addr) = (self.state.clone(), self.addr);
        self.addr = runtime.block_on(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket.bind(addr).unwrap();
            let listener = socket.listen(64).unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new().fallback(handle).with_state(state);
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            addr
        });
        self.runtime = Some(runtime);
    }

    /// Stops it: the port refuses connections, open ones are closed.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for StoppableVault {
    fn drop(&mut self) {
        self.stop();
    }
}

fn errors(code: u16, errors: &[&str]) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({ "errors": errors }))).into_response()
}

fn envelope(data: Value, auth: Value, lease_duration: u64) -> Response {
    axum::Json(json!({
        "request_id": "00000000-0000-0000-0000-000000000000",
        "lease_id": "",
        "renewable": false,
        "lease_duration": lease_duration,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": auth,
    }))
    .into_response()
}

fn auth_block(token: &str, policies: &[&str]) -> Value {
    json!({
        "client_token": token,
        "accessor": format!("accessor-{token}"),
        "policies": policies,
        "token_policies": policies,
        "metadata": {"role": K8S_ROLE},
        "lease_duration": 3600,
        "renewable": true,
        "entity_id": "entity-1",
        "token_type": "service",
        "orphan": true
    })
}

const PERMISSION_DENIED: &str = "1 error occurred:\n\t* permission denied\n\n";

async fn handle(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let target = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    state.requests.lock().unwrap().push((method.as_str().to_owned(), target, host));
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = *state.fail_with.lock().unwrap() {
        return errors(code, &["Vault is sealed"]);
    }
    // vaultrs sends renew-self as "/v1/\t/auth/…" which URL parsing turns
    // into "//auth/…": empty segments are ignored, as Vault's router does.
    let Some(rest) = uri.path().strip_prefix("/v1/") else { return errors(404, &[]) };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let token = headers.get("x-vault-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    let authed = state.tokens.lock().unwrap().contains(token);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    match (method.as_str(), segs.as_slice()) {
        ("POST" | "PUT", ["auth", "kubernetes", "login"]) => {
            if body["role"] != K8S_ROLE || body["jwt"] != K8S_JWT {
                return errors(403, &["permission denied"]);
            }
            state.logins.fetch_add(1, Ordering::SeqCst);
            envelope(Value::Null, auth_block(&state.issue(), &["default", "gitgate"]), 0)
        }
        ("POST" | "PUT", ["auth", "approle", "login"]) => {
            if body["role_id"] != ROLE_ID || body["secret_id"] != SECRET_ID {
                return errors(400, &["invalid role or secret ID"]);
            }
            state.logins.fetch_add(1, Ordering::SeqCst);
            envelope(Value::Null, auth_block(&state.issue(), &["default", "gitgate"]), 0)
        }
        ("GET", ["auth", "token", "lookup-self"]) => {
            if !authed {
                return errors(403, &["permission denied"]);
            }
            state.lookups.fetch_add(1, Ordering::SeqCst);
            let data = json!({
                "accessor": "accessor", "creation_time": 1_700_000_000u64, "creation_ttl": 3600,
                "display_name": "token", "entity_id": "", "expire_time": null, "explicit_max_ttl": 0,
                "id": token, "identity_policies": null, "issue_time": null, "meta": null, "num_uses": 0,
                "orphan": true, "path": "auth/token/create", "policies": ["root"], "renewable": true,
                "role": null, "ttl": 3600
            });
            envelope(data, Value::Null, 0)
        }
        ("POST" | "PUT", ["auth", "token", "renew-self"]) => {
            if !authed || *state.refuse_renewal.lock().unwrap() {
                return errors(403, &["permission denied"]);
            }
            state.renewals.fetch_add(1, Ordering::SeqCst);
            envelope(Value::Null, auth_block(token, &["default"]), 0)
        }
        ("GET", [mount, path @ ..]) if !path.is_empty() => {
            if !authed {
                return errors(403, &[PERMISSION_DENIED]);
            }
            let mount = (*mount).to_owned();
            let kv1 = state.kv1_mounts.lock().unwrap().contains(&mount);
            if kv1 {
                let path = path.join("/");
                if state.forbidden.lock().unwrap().contains(&format!("{mount}/{path}")) {
                    return errors(403, &[PERMISSION_DENIED]);
                }
                state.reads.fetch_add(1, Ordering::SeqCst);
                return match state.kv1.lock().unwrap().get(&(mount, path)) {
                    Some(data) => envelope(data.clone(), Value::Null, 2_764_800),
                    None => errors(404, &[]),
                };
            }
            let ["data", path @ ..] = path else { return errors(404, &[]) };
            let path = path.join("/");
            if state.forbidden.lock().unwrap().contains(&format!("{mount}/{path}")) {
                return errors(403, &[PERMISSION_DENIED]);
            }
            state.reads.fetch_add(1, Ordering::SeqCst);
            let version: Option<usize> = uri
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("version=")))
                .and_then(|v| v.parse().ok());
            let kv = state.kv2.lock().unwrap();
            let Some(versions) = kv.get(&(mount, path)) else { return errors(404, &[]) };
            let n = match version {
                None | Some(0) => versions.len(),
                Some(v) => v,
            };
            let Some(data) = versions.get(n.wrapping_sub(1)) else { return errors(404, &[]) };
            let body = json!({
                "data": data,
                "metadata": {"created_time": "2026-11-21T00:00:00Z", "custom_metadata": null,
                              "deletion_time": "", "destroyed": false, "version": n}
            });
            envelope(body, Value::Null, 0)
        }
        _ => errors(404, &[]),
    }
}
