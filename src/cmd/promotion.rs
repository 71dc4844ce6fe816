//! `gitgate approve`, `gitgate pause`, `gitgate resume`: clients of the
//! promotion actions ([`crate::promotion::api`]), signed in with a Kubernetes bearer
//! token as `gitgate status` is.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::cmd::sync::ServerArgs;
use crate::promotion::api::{ActionResponse, ApproveRequest, PauseRequest, ResumeRequest};

/// `gitgate approve APP [--commit C]`.
#[derive(Args, Debug)]
pub struct ApproveArgs {
    pub app: String,
    /// The commit to approve (full ID or a prefix of at least 7; default:
    /// the one waiting). An older one than in force rolls the app back.
    #[arg(long)]
    pub commit: Option<String>,
    /// Let the commit through a closed sync window (admins only; recorded).
    #[arg(long)]
    pub override_window: bool,
    #[command(flatten)]
    pub conn: ServerArgs,
}

/// `gitgate pause APP --for 30m --reason "…"`.
#[derive(Args, Debug)]
pub struct PauseArgs {
    pub app: String,
    /// How long (`30m`, `2h`; at most the server's --max-pause).
    #[arg(long = "for")]
    pub duration: String,
    /// Why: shown on the status and the dashboard, kept in the audit log.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub conn: ServerArgs,
}

/// `gitgate resume APP`.
#[derive(Args, Debug)]
pub struct ResumeArgs {
    pub app: String,
    #[command(flatten)]
    pub conn: ServerArgs,
}

/// `gitgate approve`.
pub fn approve(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    let body = ApproveRequest { commit: args.commit, override_window: args.override_window };
    act(&args.conn, &args.app, "approve", &body)
}

/// `gitgate pause`.
pub fn pause(args: PauseArgs) -> anyhow::Result<ExitCode> {
    let body = PauseRequest { duration: args.duration, reason: args.reason };
    act(&args.conn, &args.app, "pause", &body)
}

/// `gitgate resume`.
pub fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    act(&args.conn, &args.app, "resume", &ResumeRequest {})
}

/// POSTs one action and prints gitgate's answer; a refusal is exit code 1
/// with gitgate's reason.
fn act(conn: &ServerArgs, app: &str, action: &str, body: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let url = format!("{}/api/v1/apps/{app}/{action}", conn.server.trim_end_matches('/'));
    let token = conn.bearer()?;
    rt.block_on(async {
        let mut req = conn.client(Duration::from_secs(30))?.post(&url).json(body);
        if let Some(t) = &token {
            use secrecy::ExposeSecret as _;
            req = req.bearer_auth(t.expose_secret());
        }
        let resp = req.send().await.with_context(|| format!("failed to reach {url}"))?;
        let code = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !code.is_success() {
            let why = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.chars().take(500).collect());
            let hint = if token.is_none() && code == reqwest::StatusCode::UNAUTHORIZED {
                " (give --token, --token-file or GITGATE_TOKEN)"
            } else {
                ""
            };
            eprintln!("gitgate {action} {app}: refused ({code}): {why}{hint}");
            return Ok(ExitCode::from(1));
        }
        let answer: ActionResponse = serde_json::from_str(&text).context("failed to read gitgate's answer")?;
        println!("{}", answer.message);
        Ok(ExitCode::SUCCESS)
    })
}
