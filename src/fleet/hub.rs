//! The hub: every spoke's status on one page. The fleet file
//! ([`super::file`]) says how to reach each spoke; the token file is read
//! again every round, so rotated ServiceAccount tokens keep working. A hub never holds a kubeconfig of a spoke's cluster: it
//! reads `GET /api/v1/apps`, as `gitgate status` does, and nothing else.
//!
//! A spoke that does not answer, refuses the token, answers as another
//! cluster or answers garbage is shown as unknown, with why and the time it
//! last answered — never with its last apps as if they were current.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::file::{FleetError, FleetFile, Spoke};
use super::live::{self, ParityGroup};
use super::view::{SpokeState, SpokeView, Summary};
use crate::clock::{format_rfc3339_micros, now_micros};
use crate::sync::status::{Denied, Overview};

/// How long one spoke may take to answer a round.
pub const SPOKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest status document read from a spoke.
const MAX_STATUS_BYTES: usize = 64 * 1024 * 1024;

/// The whole fleet.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    /// RFC 3339: when this round ended; empty before the first.
    pub refreshed: String,
    /// How long the round took, in milliseconds (every spoke is asked at once).
    pub took_ms: u64,
    pub spokes: Vec<SpokeView>,
    pub parity: Vec<ParityGroup>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

/// The hub's metrics: alert on `gitgate_fleet_spoke_up == 0` and
/// `gitgate_fleet_parity_diverged == 1`.
#[derive(Clone, Default)]
pub struct HubMetrics {
    up: Family<ClusterLabel, Gauge>,
    diverged: Family<GroupLabel, Gauge>,
}

impl HubMetrics {
    pub fn register(registry: &mut Registry) -> HubMetrics {
        let m = HubMetrics::default();
        registry.register("gitgate_fleet_spoke_up", "1 when the spoke answered the hub's last round", m.up.clone());
        registry.register(
            "gitgate_fleet_parity_diverged",
            "1 when the clusters of a parity group differ (0 identical, -1 unknown)",
            m.diverged.clone(),
        );
        m
    }
}

/// Reads the spokes, round after round, into a [`FleetView`].
pub struct Hub {
    spokes: Vec<(Spoke, reqwest::Client)>,
    allowed: BTreeMap<String, Vec<String>>,
    view: ArcSwap<FleetView>,
    metrics: HubMetrics,
}

impl Hub {
    pub fn new(file: FleetFile, metrics: HubMetrics) -> Result<Hub, FleetError> {
        let mut spokes = Vec::with_capacity(file.spokes.len());
        for s in file.spokes {
            let client = client(&s)?;
            spokes.push((s, client));
        }
        let view = FleetView {
            spokes: spokes.iter().map(|(s, _)| unknown(s, "not asked yet".into(), None)).collect(),
            ..FleetView::default()
        };
        Ok(Hub { spokes, allowed: file.allowed, view: ArcSwap::from_pointee(view), metrics })
    }

    /// The last round's view.
    pub fn view(&self) -> Arc<FleetView> {
        self.view.load_full()
    }

    /// Replaces the view (tests, and a hub restored from elsewhere).
    pub fn set_view(&self, view: FleetView) {
        self.view.store(Arc::new(view));
    }

    /// Whether a round has ended.
    pub fn ready(&self) -> bool {
        !self.view.load().refreshed.is_empty()
    }

    /// Asks every spoke at once, then compares the parity groups.
    pub async fn refresh(&self) -> Arc<FleetView> {
        let started = Instant::now();
        let before = self.view.load_full();
        let rounds = self.spokes.iter().map(|(spoke, client)| {
            let last = before.spokes.iter().find(|v| v.cluster == spoke.cluster);
            ask(spoke, client, last)
        });
        let spokes = futures_util::future::join_all(rounds).await;
        let parity = live::compare_groups(&spokes, &self.allowed);
        let view = Arc::new(FleetView {
            refreshed: format_rfc3339_micros(now_micros()),
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            spokes,
            parity,
        });
        self.publish(&view);
        self.view.store(view.clone());
        view
    }

    fn publish(&self, view: &FleetView) {
        for s in &view.spokes {
            let up = i64::from(s.state == SpokeState::Up);
            self.metrics.up.get_or_create(&ClusterLabel { cluster: s.cluster.clone() }).set(up);
        }
        for g in &view.parity {
            let v = match g.state {
                live::ParityState::Identical => 0,
                live::ParityState::Diverged => 1,
                live::ParityState::Unknown => -1,
            };
            self.metrics.diverged.get_or_create(&GroupLabel { group: g.name.clone() }).set(v);
        }
    }

    /// Refreshes every `interval` until dropped.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let view = self.refresh().await;
            for s in view.spokes.iter().filter(|s| s.state == SpokeState::Unknown) {
                tracing::warn!(cluster = %s.cluster, last_seen = %s.last_seen, reason = %s.reason, "fleet: spoke unknown");
            }
        }
    }
}

fn client(s: &Spoke) -> Result<reqwest::Client, FleetError> {
    let mut b = reqwest::Client::builder().timeout(SPOKE_TIMEOUT).connect_timeout(SPOKE_TIMEOUT);
    if let Some(ca) = &s.ca_file {
        let pem = std::fs::read(ca).map_err(|source| FleetError::Ca {
            cluster: s.cluster.clone(),
            path: ca.clone(),
            source,
        })?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|source| FleetError::Client { cluster: s.cluster.clone(), source })?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|source| FleetError::Client { cluster: s.cluster.clone(), source })
}

/// A spoke that did not answer well: why, and when it last did.
fn unknown(s: &Spoke, reason: String, last: Option<&SpokeView>) -> SpokeView {
    SpokeView {
        cluster: s.cluster.clone(),
        url: s.url.clone(),
        state: SpokeState::Unknown,
        reason,
        last_seen: last.map(|l| l.last_seen.clone()).unwrap_or_default(),
        labels: last.map(|l| l.labels.clone()).unwrap_or_default(),
        parity_group: s.parity_group.clone().or_else(|| last.and_then(|l| l.parity_group.clone())),
        role: String::new(),
        summary: Summary::default(),
        denied: Denied::default(),
        answered_ms: 0,
        status: Overview::default(),
    }
}

/// One spoke's round: its status, or why it is unknown.
async fn ask(s: &Spoke, client: &reqwest::Client, last: Option<&SpokeView>) -> SpokeView {
    let started = Instant::now();
    match fetch(s, client).await {
        Ok(status) => {
            let labels = status.cluster.as_ref().map(|c| c.labels.clone()).unwrap_or_default();
            SpokeView {
                cluster: s.cluster.clone(),
                url: s.url.clone(),
                state: SpokeState::Up,
                reason: String::new(),
                last_seen: format_rfc3339_micros(now_micros()),
                parity_group: s.parity_group.clone().or_else(|| labels.get("env").cloned()),
                labels,
                role: status.role.clone(),
                summary: Summary::of(&status),
                denied: status.denied.clone(),
                answered_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                status,
            }
        }
        Err(reason) => unknown(s, reason, last),
    }
}

/// `GET /api/v1/apps` with the spoke's token; every failure is a sentence
/// (that never holds the token).
async fn fetch(s: &Spoke, client: &reqwest::Client) -> Result<Overview, String> {
    let mut req = client.get(format!("{}/api/v1/apps", s.url));
    if let Some(path) = &s.token_file {
        let token = std::fs::read_to_string(path)
            .map(|t| SecretString::from(t.trim().to_string()))
            .map_err(|e| format!("failed to read the token file {}: {e}", path.display()))?;
        req = req.bearer_auth(token.expose_secret());
    }
    let resp = req.send().await.map_err(|e| format!("unreachable: {}", crate::error_chain(&e)))?;
    let code = resp.status();
    if code == reqwest::StatusCode::UNAUTHORIZED || code == reqwest::StatusCode::FORBIDDEN {
        return Err(format!(
            "the spoke refused the hub's token ({code}): check tokenFile and the spoke's --admin-group"
        ));
    }
    if !code.is_success() {
        return Err(format!("the spoke answered {code}"));
    }
    if resp.content_length().is_some_and(|n| n > MAX_STATUS_BYTES as u64) {
        return Err("the spoke's status is larger than 64 MiB".into());
    }
    let body = resp.bytes().await.map_err(|e| format!("failed to read the answer: {}", crate::error_chain(&e)))?;
    if body.len() > MAX_STATUS_BYTES {
        return Err("the spoke's status is larger than 64 MiB".into());
    }
    let status: Overview = serde_json::from_slice(&body)
        .map_err(|_| "the spoke answered something that is not a gitgate status".to_string())?;
    match status.cluster.as_ref().map(|c| c.name.as_str()) {
        Some(name) if name == s.cluster => {}
        Some(other) => {
            return Err(format!(
                "it answers as cluster {other:?}, not {:?}: the url points at another cluster's spoke, or two spokes claim one name",
                s.cluster
            ));
        }
        None => return Err("it names no cluster: it is not a spoke (serve --cluster NAME)".into()),
    }
    if status.role == "follower" {
        return Err("a follower replica answered, which has no live status: point the url at the leader".into());
    }
    Ok(status)
}

/// `gitgate status --fleet`: a line per cluster, then the parity groups
/// (with `wide`, each cluster's apps).
pub fn table(view: &FleetView, wide: bool) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<[String; 9]> = vec![
        ["CLUSTER", "STATE", "LAST SEEN", "APPS", "SYNCED", "WAITING", "DRIFTED", "DENIED", "DETAIL"].map(String::from),
    ];
    for s in &view.spokes {
        let m = &s.summary;
        let detail = s.detail();
        let state = match s.state {
            SpokeState::Up => "Up",
            SpokeState::Unknown => "Unknown",
        };
        rows.push([
            s.cluster.clone(),
            state.into(),
            if s.last_seen.is_empty() { "never".into() } else { s.last_seen.clone() },
            m.apps.to_string(),
            m.synced.to_string(),
            m.waiting_approval.to_string(),
            m.drifted_objects.to_string(),
            s.denied.count.to_string(),
            detail,
        ]);
        if wide {
            for a in &s.status.apps {
                let commit: String = a.target_commit.chars().take(7).collect();
                let cells = [format!("  {}", a.name), a.sync.as_str().into(), a.health.clone(), commit];
                let mut row: [String; 9] = Default::default();
                row[..4].clone_from_slice(&cells);
                row[8].clone_from(&a.message);
                rows.push(row);
            }
        }
    }
    let mut widths = [0usize; 9];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for g in &view.parity {
        let state = match g.state {
            live::ParityState::Identical => "identical",
            live::ParityState::Diverged => "DIVERGED",
            live::ParityState::Unknown => "unknown",
        };
        let _ = writeln!(
            out,
            "parity {} ({}): {state}, {} identical, {} allowed, {} sealed per cluster",
            g.name,
            g.members.join(", "),
            g.identical,
            g.allowed,
            g.sealed
        );
        if !g.reason.is_empty() {
            let _ = writeln!(out, "  {}", g.reason);
        }
        for d in &g.differences {
            let _ = writeln!(out, "  {}", d.describe());
        }
    }
    out
}

/// All spokes up, every app synced, no parity group diverged or unknown.
pub fn all_well(view: &FleetView) -> bool {
    view.spokes.iter().all(|s| s.state == SpokeState::Up && s.summary.synced == s.summary.apps)
        && view.parity.iter().all(|g| g.state == live::ParityState::Identical)
}
