//! Notifications: Slack-compatible webhook POSTs (`{"text": …}`) on a denied
//! change to a managed object, break-glass, a failed sync, a reverted drift,
//! a refused unsigned commit, and a promotion gate (a commit waiting for
//! approval or a window, an approval, a pause, a resume). One URL per
//! trigger (or one for all).
//!
//! Never blocks admission: [`Notifier::notify`] only tries to put a message
//! on a bounded queue (a full queue drops it and counts it); a background
//! task POSTs with retries and exponential backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;

use super::record::{Entry, EventKind, Outcome};
use super::{AuditError, NotifyLabels};

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trigger {
    /// A denied change to an object an app owns (dry runs excluded).
    Deny,
    BreakGlass,
    SyncFailed,
    DriftReverted,
    UnsignedCommit,
    /// A commit waits at a promotion gate; an approval, a pause, a resume.
    Promotion,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [
        Trigger::Deny,
        Trigger::BreakGlass,
        Trigger::SyncFailed,
        Trigger::DriftReverted,
        Trigger::UnsignedCommit,
        Trigger::Promotion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Deny => "deny",
            Trigger::BreakGlass => "break-glass",
            Trigger::SyncFailed => "sync-failed",
            Trigger::DriftReverted => "drift-reverted",
            Trigger::UnsignedCommit => "unsigned-commit",
            Trigger::Promotion => "promotion",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The trigger a record fires, if any.
    pub fn of(e: &Entry) -> Option<Trigger> {
        match e.event {
            EventKind::Admission if e.decision == Outcome::Deny && !e.app.is_empty() && !e.dry_run => {
                Some(Trigger::Deny)
            }
            EventKind::BreakGlassOpened | EventKind::BreakGlassExpired => Some(Trigger::BreakGlass),
            EventKind::SyncFailed => Some(Trigger::SyncFailed),
            EventKind::DriftReverted => Some(Trigger::DriftReverted),
            EventKind::UnsignedCommitRefused => Some(Trigger::UnsignedCommit),
            EventKind::PromotionWaiting | EventKind::Approved | EventKind::Paused | EventKind::Resumed => {
                Some(Trigger::Promotion)
            }
            _ => None,
        }
    }
}

/// Validated notification settings.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// URL for triggers without their own.
    pub default: Option<reqwest::Url>,
    pub routes: BTreeMap<Trigger, reqwest::Url>,
    pub queue: usize,
    pub attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
}

impl NotifyConfig {
    /// From `--notify-url URL` and `--notify TRIGGER=URL` flags.
    pub fn from_flags(default: Option<&str>, routes: &[String]) -> Result<Option<NotifyConfig>, AuditError> {
        let url = |s: &str| {
            let u = reqwest::Url::parse(s)
                .map_err(|e| AuditError::Invalid { what: "notification URL", reason: e.to_string() })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(AuditError::Invalid { what: "notification URL", reason: "must be http or https".into() });
            }
            Ok(u)
        };
        let default = default.map(url).transpose()?;
        let mut map = BTreeMap::new();
        for r in routes {
            let Some((t, u)) = r.split_once('=') else {
                return Err(AuditError::Invalid {
                    what: "--notify",
                    reason: format!("expected TRIGGER=URL, got {r:?}"),
                });
            };
            let trigger = Trigger::parse(t.trim()).ok_or_else(|| AuditError::Invalid {
                what: "--notify trigger",
                reason: format!("{t:?} is not one of {}", Trigger::ALL.map(Trigger::as_str).join(", ")),
            })?;
            map.insert(trigger, url(u.trim())?);
        }
        if default.is_none() && map.is_empty() {
            return Ok(None);
        }
        Ok(Some(NotifyConfig {
            default,
            routes: map,
            queue: 1024,
            attempts: 5,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }))
    }

    fn url(&self, t: Trigger) -> Option<&reqwest::Url> {
        self.routes.get(&t).or(self.default.as_ref())
    }
}

/// The one-line text of a notification. Carries no object content.
pub fn text(e: &Entry, seq: u64) -> String {
    let object = if e.name.is_empty() { String::new() } else { format!(" {}", e.object()) };
    let what = match e.event {
        EventKind::Admission => {
            format!("denied {}{object} by {}", e.operation, if e.user.is_empty() { "?" } else { &e.user })
        }
        EventKind::BreakGlassOpened => format!("break-glass opened on{object} by {}", e.user),
        EventKind::BreakGlassExpired => format!("break-glass expired on{object}"),
        EventKind::SyncFailed => "sync failed".to_owned(),
        EventKind::DriftReverted => format!("drift reverted on{object}"),
        EventKind::UnsignedCommitRefused => "unsigned commit refused".to_owned(),
        EventKind::PromotionWaiting | EventKind::Approved | EventKind::Paused | EventKind::Resumed => {
            e.reasons.first().cloned().unwrap_or_else(|| e.event.as_str().to_owned())
        }
        other => other.as_str().to_owned(),
    };
    let mut out = format!("gitgate: {what}");
    if !e.app.is_empty() {
        out.push_str(&format!(" (app {})", e.app));
    }
    if let Some(c) = &e.commit {
        out.push_str(&format!(" commit {}", c.id));
        if !c.subject.is_empty() {
            out.push_str(&format!(" \"{}\"", c.subject));
        }
    }
    if let Some(r) = e.reasons.first() {
        out.push_str(&format!(": {r}"));
    }
    out.push_str(&format!(" [audit record {seq}]"));
    out
}

struct Message {
    url: reqwest::Url,
    body: Vec<u8>,
}

/// The sending side; cheap to call from the admission path.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Message>,
    config: Arc<NotifyConfig>,
    metrics: Family<NotifyLabels, Counter>,
}

impl Notifier {
    /// Starts the sending task on the current tokio runtime.
    pub fn start(config: NotifyConfig, metrics: Family<NotifyLabels, Counter>) -> Result<Notifier, AuditError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| AuditError::Invalid { what: "notifier", reason: format!("needs a tokio runtime: {e}") })?;
        // The operator's URL and no other: a receiver's redirect is not
        // followed (a 307 would re-POST the body to wherever it points, an
        // internal address included).
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| AuditError::Notifier { source })?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let config = Arc::new(config);
        handle.spawn(send_loop(rx, client, config.clone(), metrics.clone()));
        Ok(Notifier { tx, config, metrics })
    }

    /// Queues a notification if the record fires one; never waits.
    pub fn notify(&self, e: &Entry, seq: u64) {
        let Some(trigger) = Trigger::of(e) else { return };
        let Some(url) = self.config.url(trigger) else { return };
        let body = serde_json::json!({ "text": text(e, seq) }).to_string().into_bytes();
        if self.tx.try_send(Message { url: url.clone(), body }).is_err() {
            self.metrics.get_or_create(&NotifyLabels { result: "dropped" }).inc();
            tracing::warn!(seq, trigger = trigger.as_str(), "notification queue full or closed; notification dropped");
        }
    }
}

async fn send_loop(
    mut rx: mpsc::Receiver<Message>,
    client: reqwest::Client,
    config: Arc<NotifyConfig>,
    metrics: Family<NotifyLabels, Counter>,
) {
    while let Some(m) = rx.recv().await {
        let mut delay = config.backoff;
        let mut result = "failed";
        for attempt in 1..=config.attempts.max(1) {
            let sent = client
                .post(m.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(m.body.clone())
                .send()
                .await;
            let retry = match sent {
                Ok(resp) if resp.status().is_success() => {
                    result = "sent";
                    break;
                }
                Ok(resp) => {
                    let s = resp.status();
                    tracing::warn!(
                        status = s.as_u16(),
                        attempt,
                        host = m.url.host_str().unwrap_or(""),
                        "notification refused"
                    );
                    s.is_server_error() || s == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), attempt, host = m.url.host_str().unwrap_or(""), "notification failed");
                    true
                }
            };
            if !retry || attempt == config.attempts {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        metrics.get_or_create(&NotifyLabels { result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_events_notify_with_their_message() {
        for event in [EventKind::PromotionWaiting, EventKind::Approved, EventKind::Paused, EventKind::Resumed] {
            let e = Entry {
                event,
                app: "shop".into(),
                decision: Outcome::Done,
                reasons: vec!["1a2b3c4 waits for approval".into()],
                ..Entry::default()
            };
            assert_eq!(Trigger::of(&e), Some(Trigger::Promotion));
            assert!(text(&e, 1).contains("1a2b3c4 waits for approval (app shop)"), "{}", text(&e, 1));
        }
        assert_eq!(Trigger::parse("promotion"), Some(Trigger::Promotion));
    }
}
