//! `POST /hooks/git` over a real HTTP listener: GitHub, Gitea and GitLab
//! push payloads, HMAC-verified; 401 on a bad or missing signature (and
//! nothing triggered); 413 over 1 MiB.

use std::sync::Arc;
use std::time::Duration;

use gitgate::source::hooks::{self, HookState, Provider};
use secrecy::SecretString;
use tokio::sync::Notify;

const SECRET: &str = "it's a secret to everybody";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn serve() -> (String, Arc<HookState>, Arc<Notify>) {
    let trigger = Arc::new(Notify::new());
    let state = Arc::new(HookState::new(SecretString::from(SECRET), trigger.clone()));
    let app = hooks::router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hooks/git"), state, trigger)
}

fn push_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": "1111111111111111111111111111111111111111",
        "repository": {"clone_url": "https://git.example.com/team/deploy.git"}
    }))
    .unwrap()
}

fn hmac_hex(body: &[u8]) -> String {
    hooks::github_signature(SECRET.as_bytes(), body).trim_start_matches("sha256=").to_string()
}

async fn triggered(n: &Notify) -> bool {
    tokio::time::timeout(Duration::from_millis(300), n.notified()).await.is_ok()
}

#[tokio::test]
async fn github_push_with_a_valid_signature_triggers_a_fetch() {
    let (url, state, trigger) = serve().await;
    let body = push_body();
    let resp = client()
        .post(&url)
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", hooks::github_signature(SECRET.as_bytes(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(triggered(&trigger).await);
    let push = state.last_push().unwrap();
    assert_eq!(push.provider, Provider::GitHub);
    assert_eq!(push.git_ref.as_deref(), Some("refs/heads/main"));
    assert_eq!(push.after.as_deref(), Some("1111111111111111111111111111111111111111"));
}

#[tokio::test]
async fn gitea_and_gitlab_pushes_are_accepted() {
    let (url, state, trigger) = serve().await;
    let body = push_body();
    let resp = client()
        .post(&url)
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Signature", hmac_hex(&body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(triggered(&trigger).await);
    assert_eq!(state.last_push().unwrap().provider, Provider::Gitea);

    let resp = client()
        .post(&url)
        .header("X-Gitlab-Event", "Push Hook")
        .header("X-Gitlab-Token", SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(triggered(&trigger).await);
    assert_eq!(state.last_push().unwrap().provider, Provider::GitLab);
}

#[tokio::test]
async fn bad_or_missing_signatures_get_401_and_trigger_nothing() {
    let (url, state, trigger) = serve().await;
    let body = push_body();
    let client = client();
    let cases: Vec<(&str, String)> = vec![
        ("X-Hub-Signature-256", hooks::github_signature(b"wrong secret", &body)),
        ("X-Hub-Signature-256", "sha256=zz".to_string()),
        ("X-Hub-Signature-256", hmac_hex(&body)), // no sha256= prefix
        ("X-Gitea-Signature", hooks::github_signature(b"wrong", &body).trim_start_matches("sha256=").to_string()),
        ("X-Gitlab-Token", "wrong token".to_string()),
    ];
    for (h, v) in cases {
        let resp = client.post(&url).header(h, v).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{h}");
    }
    let resp = client.post(&url).header("X-GitHub-Event", "push").body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 401, "missing signature");
    // A body that differs from the signed one.
    let sig = hooks::github_signature(SECRET.as_bytes(), &body);
    let mut tampered = body.clone();
    tampered[5] ^= 1;
    let resp = client.post(&url).header("X-Hub-Signature-256", sig).body(tampered).send().await.unwrap();
    assert_eq!(resp.status(), 401, "tampered body");
    assert!(!triggered(&trigger).await);
    assert!(state.last_push().is_none());
}

#[tokio::test]
async fn a_verified_ping_is_acknowledged_without_a_fetch() {
    let (url, _state, trigger) = serve().await;
    let body = br#"{"zen":"Keep it logically awesome."}"#.to_vec();
    let resp = client()
        .post(&url)
        .header("X-GitHub-Event", "ping")
        .header("X-Hub-Signature-256", hooks::github_signature(SECRET.as_bytes(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!triggered(&trigger).await);
}

#[tokio::test]
async fn payloads_over_one_mib_are_refused() {
    let (url, _state, trigger) = serve().await;
    let body = vec![b' '; hooks::MAX_PAYLOAD_BYTES + 1];
    let resp = client()
        .post(&url)
        .header("X-Hub-Signature-256", hooks::github_signature(SECRET.as_bytes(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(!triggered(&trigger).await);
}
