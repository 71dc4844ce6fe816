//! A spoke as the hub saw it: up or unknown (and why), when it last
//! answered, its status and the counts the fleet page shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sync::status::{Denied, Overview, SyncStatus};

/// Whether a spoke answered this round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpokeState {
    /// It answered with its status, as the cluster the file names.
    Up,
    /// It did not answer, refused the token, or answered as someone else:
    /// nothing it last said is shown as current.
    Unknown,
}

/// Counts over a spoke's apps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub apps: usize,
    pub synced: usize,
    pub out_of_sync: usize,
    pub failed: usize,
    pub waiting_approval: usize,
    /// Paused, or outside a sync window.
    pub held: usize,
    pub healthy: usize,
    /// Objects whose live state differs from Git.
    pub drifted_objects: usize,
    /// The commits the spoke's apps target (most apps first).
    pub commits: Vec<String>,
}

impl Summary {
    pub fn of(o: &Overview) -> Summary {
        let mut s = Summary { apps: o.apps.len(), ..Summary::default() };
        let mut commits: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &o.apps {
            match a.sync {
                SyncStatus::Synced => s.synced += 1,
                SyncStatus::OutOfSync => s.out_of_sync += 1,
                SyncStatus::Failed => s.failed += 1,
                SyncStatus::WaitingApproval => s.waiting_approval += 1,
                SyncStatus::Paused | SyncStatus::OutsideWindow => s.held += 1,
                SyncStatus::Unknown => {}
            }
            s.healthy += usize::from(a.health == "Healthy");
            s.drifted_objects += a.objects.iter().filter(|o| o.sync == SyncStatus::OutOfSync).count();
            if !a.target_commit.is_empty() {
                *commits.entry(&a.target_commit).or_default() += 1;
            }
        }
        let mut by_use: Vec<(&str, usize)> = commits.into_iter().collect();
        by_use.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        s.commits = by_use.into_iter().map(|(c, _)| c.to_string()).collect();
        s
    }
}

/// One spoke, as the hub last saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpokeView {
    pub cluster: String,
    pub url: String,
    pub state: SpokeState,
    /// Why it is unknown; empty when up.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// RFC 3339: when it last answered well; empty when never.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_seen: String,
    /// Its cluster's labels, as it last said.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its parity group: the fleet file's `parityGroup`, else `labels.env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity_group: Option<String>,
    /// `leader`, `plan`, … as it says; empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    pub summary: Summary,
    pub denied: Denied,
    /// How long it took to answer, in milliseconds.
    pub answered_ms: u64,
    /// Its status (empty when unknown).
    pub status: Overview,
}

impl SpokeView {
    /// Up, with apps, all of them synced, and Git read and accepted.
    pub fn well(&self) -> bool {
        self.state == SpokeState::Up
            && self.summary.apps > 0
            && self.summary.synced == self.summary.apps
            && self.status.source.is_none()
            && self.status.refused.is_none()
    }

    /// One line on the spoke: why it is unknown; else its role, commit and
    /// failures, or why it runs nothing.
    pub fn detail(&self) -> String {
        if self.state == SpokeState::Unknown {
            return self.reason.clone();
        }
        if let Some(note) = self.status.cluster.as_ref().map(|c| c.note.as_str()).filter(|n| !n.is_empty()) {
            return note.to_string();
        }
        if let Some(r) = &self.status.refused {
            return format!("Git's head refused: {}", r.message());
        }
        if let Some(f) = &self.status.source {
            return format!("Git: {} (the commit in force stays)", f.message());
        }
        let commit: String = self.summary.commits.first().map(|c| c.chars().take(7).collect()).unwrap_or_default();
        let failed = self.summary.failed;
        format!("{} at {commit}{}", self.role, if failed > 0 { format!(", {failed} failed") } else { String::new() })
    }
}
