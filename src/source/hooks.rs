//! `POST /hooks/git`: push webhooks from GitHub, Gitea and GitLab trigger
//! an immediate fetch. Verified before anything else is read:
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`
//! - Gitea (and Gogs): `X-Gitea-Signature` / `X-Gogs-Signature: <hex HMAC-SHA256>`
//! - GitLab: `X-Gitlab-Token: <secret>` (GitLab sends the shared secret
//!   itself, not an HMAC; it is compared in constant time)
//!
//! A missing or wrong signature gets 401 and triggers nothing; a body over
//! [`MAX_PAYLOAD_BYTES`] gets 413; a verified non-push event (a ping) gets
//! 200 and triggers nothing; a verified push gets 202 and wakes the poller.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use tokio::sync::Notify;

/// Largest webhook body accepted.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Which forge sent a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
}

/// A verified push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEvent {
    pub provider: Provider,
    /// `refs/heads/main`, when the payload says.
    pub git_ref: Option<String>,
    /// The new head, when the payload says.
    pub after: Option<String>,
}

/// What a hook can fail at (never echoes the payload).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    #[error("missing webhook signature (X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token)")]
    Missing,
    #[error("webhook signature does not verify")]
    BadSignature,
    #[error("webhook signature header is malformed")]
    Malformed,
}

/// The hook endpoint's state: the shared secret and whom to wake.
pub struct HookState {
    secret: SecretString,
    trigger: Arc<Notify>,
    last: Mutex<Option<PushEvent>>,
}

impl HookState {
    pub fn new(secret: SecretString, trigger: Arc<Notify>) -> Self {
        HookState { secret, trigger, last: Mutex::new(None) }
    }

    /// The last verified push (for status and tests).
    pub fn last_push(&self) -> Option<PushEvent> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}

/// The router the server mounts: `POST /hooks/git`.
pub fn router(state: Arc<HookState>) -> Router {
    Router::new().route("/hooks/git", post(handle)).layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES)).with_state(state)
}

async fn handle(State(state): State<Arc<HookState>>, headers: HeaderMap, body: Bytes) -> Response {
    let provider = match verify(state.secret.expose_secret().as_bytes(), &headers, &body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "git webhook refused");
            return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": e.to_string()}))).into_response();
        }
    };
    if !is_push(provider, &headers) {
        return (StatusCode::OK, axum::Json(serde_json::json!({"status": "ignored: not a push event"})))
            .into_response();
    }
    let event = push_event(provider, &body);
    tracing::info!(provider = ?event.provider, git_ref = ?event.git_ref, after = ?event.after, "git push webhook: fetching now");
    if let Ok(mut l) = state.last.lock() {
        *l = Some(event);
    }
    state.trigger.notify_one();
    (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"status": "fetch triggered"}))).into_response()
}

/// What a verified push hook's body says (fields it lacks are `None`).
pub fn push_event(provider: Provider, body: &[u8]) -> PushEvent {
    let payload: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    PushEvent {
        provider,
        git_ref: payload.get("ref").and_then(|v| v.as_str()).map(str::to_string),
        after: payload.get("after").and_then(|v| v.as_str()).map(str::to_string),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies a hook's signature; returns who sent it.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<Provider, HookError> {
    if let Some(sig) = header(headers, "x-hub-signature-256") {
        let hex = sig.strip_prefix("sha256=").ok_or(HookError::Malformed)?;
        verify_hmac(secret, body, hex)?;
        return Ok(Provider::GitHub);
    }
    if let Some(sig) = header(headers, "x-gitea-signature").or_else(|| header(headers, "x-gogs-signature")) {
        verify_hmac(secret, body, sig)?;
        return Ok(Provider::Gitea);
    }
    if let Some(token) = header(headers, "x-gitlab-token") {
        if secret.is_empty() || !constant_time_eq(token.as_bytes(), secret) {
            return Err(HookError::BadSignature);
        }
        return Ok(Provider::GitLab);
    }
    Err(HookError::Missing)
}

fn verify_hmac(secret: &[u8], body: &[u8], hex: &str) -> Result<(), HookError> {
    if secret.is_empty() {
        return Err(HookError::BadSignature);
    }
    let sig = decode_hex(hex.trim()).ok_or(HookError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| HookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| HookError::BadSignature)
}

pub(crate) fn is_push(provider: Provider, headers: &HeaderMap) -> bool {
    match provider {
        Provider::GitHub => header(headers, "x-github-event").is_none_or(|e| e == "push"),
        Provider::Gitea => {
            header(headers, "x-gitea-event").or_else(|| header(headers, "x-gogs-event")).is_none_or(|e| e == "push")
        }
        Provider::GitLab => header(headers, "x-gitlab-event").is_none_or(|e| e == "Push Hook" || e == "Tag Push Hook"),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `sha256=<hex>` of a body, as GitHub signs it (for clients and tests).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut out = String::from("sha256=");
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
        mac.update(body);
        for b in mac.finalize().into_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}
