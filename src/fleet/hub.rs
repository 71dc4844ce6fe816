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

use super::file::{FleetFile, Spoke};
use super::live::{self, ParityGroup};
use super::view::{SpokeState, SpokeView, Summary};
use crate::clock::{format_rfc3339_micros, now_micros};
use crate::sync::status::{Denied, Overview};

/// How long one spoke may take to answer a round.
pub const SPOKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest status document read from a spoke.
const MAX_STATUS_BYTES: usize = 16 * 1024 * 1024;

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
    /// The fleet file's `allowedDifferences`, per parity group.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allowed: BTreeMap<String, Vec<String>>,
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
    /// Each spoke with its client, or why it has none.
    spokes: Vec<(Spoke, Result<reqwest::Client, String>)>,
    allowed: BTreeMap<String, Vec<String>>,
    view: ArcSwap<FleetView>,
    metrics: HubMetrics,
    /// When the last round ended, and how old a round may grow before the
    /// view is stale (three intervals of [`Hub::run`]).
    rounds: std::sync::Mutex<(Option<Instant>, Option<Duration>)>,
}

impl Hub {
    pub fn new(file: FleetFile, metrics: HubMetrics) -> Hub {
        let spokes: Vec<_> = file.spokes.into_iter().map(|s| (client(&s), s)).map(|(c, s)| (s, c)).collect();
        let view = FleetView {
            spokes: spokes.iter().map(|(s, _)| unknown(s, "not asked yet".into(), None)).collect(),
            ..FleetView::default()
        };
        Hub {
            spokes,
            allowed: file.allowed,
            view: ArcSwap::from_pointee(view),
            metrics,
            rounds: std::sync::Mutex::new((None, None)),
        }
    }

    /// The last round's view; when rounds stopped (three intervals without
    /// one), every spoke unknown: a frozen view never shows a cluster up.
    pub fn view(&self) -> Arc<FleetView> {
        let view = self.view.load_full();
        let Some(since) = self.stopped_for() else { return view };
        let mut stale = (*view).clone();
        let why = format!("the hub has asked no spoke for {} s: its rounds stopped", since.as_secs());
        for s in &mut stale.spokes {
            s.state = SpokeState::Unknown;
            s.reason.clone_from(&why);
            s.status = Overview::default();
            s.summary = Summary::default();
        }
        for g in &mut stale.parity {
            g.state = live::ParityState::Unknown;
            g.reason.clone_from(&why);
        }
        Arc::new(stale)
    }

    /// How long since the last round, once that is over three intervals.
    fn stopped_for(&self) -> Option<Duration> {
        let (last, interval) = *self.rounds.lock().unwrap_or_else(|p| p.into_inner());
        let since = last?.elapsed();
        (since > interval? * 3).then_some(since)
    }

    /// Replaces the view (tests, and a hub restored from elsewhere).
    pub fn set_view(&self, view: FleetView) {
        self.view.store(Arc::new(view));
    }

    /// Whether a round has ended, and rounds go on.
    pub fn ready(&self) -> bool {
        !self.view.load().refreshed.is_empty() && self.stopped_for().is_none()
    }

    /// Asks every spoke at once, then compares the parity groups.
    pub async fn refresh(&self) -> Arc<FleetView> {
        let started = Instant::now();
        let before = self.view.load_full();
        let rounds = self.spokes.iter().map(|(spoke, client)| {
            let last = before.spokes.iter().find(|v| v.cluster == spoke.cluster);
            async move {
                match client {
                    Ok(client) => ask(spoke, client, last).await,
                    Err(why) => unknown(spoke, why.clone(), last),
                }
            }
        });
        let spokes = futures_util::future::join_all(rounds).await;
        let parity = live::compare_groups(&spokes, &self.allowed);
        let view = Arc::new(FleetView {
            refreshed: format_rfc3339_micros(now_micros()),
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            spokes,
            parity,
            allowed: self.allowed.clone(),
        });
        self.publish(&view);
        self.view.store(view.clone());
        self.rounds.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(Instant::now());
        view
    }

    fn publish(&self, view: &FleetView) {
        // Series of groups and clusters gone from the view go too.
        self.metrics.up.clear();
        self.metrics.diverged.clear();
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
        self.rounds.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(interval);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut before = self.view.load_full();
        loop {
            tick.tick().await;
            let view = self.refresh().await;
            log_changes(&before, &view);
            before = view;
        }
    }
}

/// One log line per change: a spoke gone unknown or back, a parity group
/// diverged, unknown or identical again (the metrics say it every round).
fn log_changes(before: &FleetView, now: &FleetView) {
    for s in &now.spokes {
        let was = before.spokes.iter().find(|b| b.cluster == s.cluster).map(|b| b.state);
        match (was, s.state) {
            (Some(SpokeState::Unknown) | None, SpokeState::Up) => {
                tracing::info!(cluster = %s.cluster, "fleet: spoke up")
            }
            (Some(SpokeState::Up), SpokeState::Unknown) | (None, SpokeState::Unknown) => {
                tracing::warn!(cluster = %s.cluster, last_seen = %s.last_seen, reason = %s.reason, "fleet: spoke unknown")
            }
            _ => {}
        }
    }
    for g in &now.parity {
        let was = before.parity.iter().find(|b| b.name == g.name).map(|b| b.state);
        if was == Some(g.state) {
            continue;
        }
        let differences: Vec<String> = g.differences.iter().take(5).map(live::LiveDifference::describe).collect();
        match g.state {
            live::ParityState::Identical => tracing::info!(group = %g.name, "fleet: parity group identical"),
            live::ParityState::Diverged => {
                tracing::warn!(group = %g.name, ?differences, "fleet: parity group diverged")
            }
            live::ParityState::Unknown => tracing::warn!(group = %g.name, reason = %g.reason, "fleet: parity unknown"),
        }
    }
}

/// The spoke's client: its CA bundle, HTTPS only, no redirect followed (a
/// spoke never sends the hub elsewhere), a new connection per request (so
/// a Service in front of several replicas is asked anew). A CA that cannot
/// be read makes that spoke unknown, not the hub fail.
fn client(s: &Spoke) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(SPOKE_TIMEOUT)
        .connect_timeout(SPOKE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .pool_max_idle_per_host(0);
    if let Some(ca) = &s.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("failed to read the CA file {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("the CA file {} holds no PEM certificate: {e}", ca.display()))?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| format!("failed to set up the HTTPS client: {}", crate::error_chain(&e)))
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

/// How often a follower's answer is retried (each on a new connection)
/// before the spoke counts as unknown this round.
const FOLLOWER_RETRIES: usize = 4;

/// `GET /api/v1/apps` with the spoke's token; every failure is a sentence
/// (that never holds the token). A follower replica (no live status)
/// behind the spoke's Service is asked again.
async fn fetch(s: &Spoke, client: &reqwest::Client) -> Result<Overview, String> {
    let token = match &s.token_file {
        Some(path) => Some(
            tokio::fs::read_to_string(path)
                .await
                .map(|t| SecretString::from(t.trim().to_string()))
                .map_err(|e| format!("failed to read the token file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    for _ in 0..FOLLOWER_RETRIES {
        let status = fetch_once(s, client, token.as_ref()).await?;
        if status.role != "follower" {
            return Ok(status);
        }
    }
    Err(format!(
        "{FOLLOWER_RETRIES} answers in a row came from follower replicas, which have no live status: point the url at the leader"
    ))
}

async fn fetch_once(s: &Spoke, client: &reqwest::Client, token: Option<&SecretString>) -> Result<Overview, String> {
    let mut req = client.get(format!("{}/api/v1/apps", s.url));
    if let Some(token) = token {
        req = req.bearer_auth(token.expose_secret());
    }
    let mut resp = req.send().await.map_err(|e| format!("unreachable: {}", crate::error_chain(&e)))?;
    let code = resp.status();
    if code == reqwest::StatusCode::UNAUTHORIZED || code == reqwest::StatusCode::FORBIDDEN {
        return Err(format!(
            "the spoke refused the hub's token ({code}): check tokenFile and the spoke's --reader-group"
        ));
    }
    if !code.is_success() {
        return Err(format!("the spoke answered {code}"));
    }
    // Read to the cap, chunk by chunk, whatever Content-Length says.
    let mut body = Vec::new();
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| format!("failed to read the answer: {}", crate::error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_STATUS_BYTES {
            return Err(format!("the spoke's status is larger than {} MiB", MAX_STATUS_BYTES >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    let status: Overview = tokio::task::spawn_blocking(move || serde_json::from_slice(&body))
        .await
        .map_err(|_| "failed to read the answer".to_string())?
        .map_err(|_| "the spoke answered something that is not a gitgate status".to_string())?;
    match status.cluster.as_ref().map(|c| c.name.as_str()) {
        Some(name) if name == s.cluster => Ok(status),
        Some(other) => Err(format!(
            "it answers as cluster {other:?}, not {:?}: the url points at another cluster's spoke, or two spokes claim one name",
            s.cluster
        )),
        None => Err("it names no cluster: it is not a spoke (serve --cluster NAME)".into()),
    }
}

/// `gitgate status --fleet`: a line per cluster, then the parity groups
/// (with `wide`, each cluster's apps).
pub fn table(view: &FleetView, wide: bool) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<[String; 9]> = Vec::new();
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
    let header = ["CLUSTER", "STATE", "LAST SEEN", "APPS", "SYNCED", "WAITING", "DRIFTED", "DENIED", "DETAIL"];
    let mut out = crate::table::columns(&header, &rows);
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
        if !g.commits.is_empty() {
            let at: Vec<String> =
                g.commits.iter().map(|(c, id)| format!("{c} {}", id.chars().take(7).collect::<String>())).collect();
            let _ = writeln!(out, "  at different commits: {}", at.join(", "));
        }
        for d in &g.differences {
            let _ = writeln!(out, "  {}", d.describe());
        }
    }
    out
}

/// Every spoke [well](SpokeView::well), no parity group diverged or unknown.
pub fn all_well(view: &FleetView) -> bool {
    view.spokes.iter().all(SpokeView::well) && view.parity.iter().all(|g| g.state == live::ParityState::Identical)
}
