//! Parity of live clusters: the clusters of a parity group (the same
//! `labels.env`, or the fleet file's `parityGroup`) should run the same
//! objects with the same Git content. Compared from what each spoke
//! reports — per object its identity, Git's content digest and whether the
//! live object still matches it — so a difference is named even when the
//! hub cannot read the clusters itself. Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::view::{SpokeState, SpokeView};
use crate::render::object::ObjectKey;
use crate::sync::status::{ObjectStatus, SyncStatus};

/// Whether a group's clusters are the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParityState {
    Identical,
    Diverged,
    /// A member is unknown: nothing can be said.
    Unknown,
}

/// How the members of a group differ in one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "difference", rename_all = "camelCase")]
pub enum LiveDifference {
    /// Git gives it to these members only.
    OnlyIn { object: String, clusters: Vec<String> },
    /// Git gives the members other content (per cluster: the file).
    Content { object: String, files: BTreeMap<String, String> },
    /// A member's live object differs from Git (drift, not yet healed).
    Drift { object: String, cluster: String, message: String },
}

impl LiveDifference {
    pub fn object(&self) -> &str {
        match self {
            LiveDifference::OnlyIn { object, .. }
            | LiveDifference::Content { object, .. }
            | LiveDifference::Drift { object, .. } => object,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            LiveDifference::OnlyIn { object, clusters } => format!("{object}: only in {}", clusters.join(", ")),
            LiveDifference::Content { object, files } => {
                let files: Vec<String> = files.iter().map(|(c, f)| format!("{c}: {f}")).collect();
                format!("{object}: Git gives other content ({}; gitgate fleet diff names the field)", files.join(", "))
            }
            LiveDifference::Drift { object, cluster, message } => {
                format!("{object}: drifted from Git in {cluster} ({message})")
            }
        }
    }
}

/// One parity group.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParityGroup {
    pub name: String,
    pub members: Vec<String>,
    pub state: ParityState,
    /// Why it is unknown; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Objects every member runs identically.
    pub identical: usize,
    pub differences: Vec<LiveDifference>,
    /// Differences the fleet file allows (`allowedDifferences`), not counted.
    pub allowed: usize,
    /// Sealed Secrets: sealed per cluster (each its own recipient), so
    /// their Git content differs by design; not counted.
    pub sealed: usize,
    /// The commit each member's apps target: members at different commits
    /// (a rollout under way, or one held back) differ for that reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub commits: BTreeMap<String, String>,
}

/// Every group of two or more members, by name.
pub fn compare_groups(spokes: &[SpokeView], allowed: &BTreeMap<String, Vec<String>>) -> Vec<ParityGroup> {
    let mut groups: BTreeMap<&str, Vec<&SpokeView>> = BTreeMap::new();
    for s in spokes {
        if let Some(g) = &s.parity_group {
            groups.entry(g).or_default().push(s);
        }
    }
    // A spoke never seen, without `parityGroup` in the fleet file: its group
    // is unknown, so every group may be missing a member.
    let unplaced: Vec<&str> = spokes
        .iter()
        .filter(|s| s.parity_group.is_none() && s.state != SpokeState::Up)
        .map(|s| s.cluster.as_str())
        .collect();
    groups
        .into_iter()
        .filter(|(_, members)| members.len() >= 2 || !unplaced.is_empty())
        .map(|(name, members)| {
            let mut group = compare(name, &members, allowed.get(name).map_or(&[][..], Vec::as_slice));
            if !unplaced.is_empty() {
                group.state = ParityState::Unknown;
                group.reason = format!(
                    "{} never answered, so whether it belongs here is unknown (give it parityGroup in the fleet file)",
                    unplaced.join(", ")
                );
            }
            group
        })
        .collect()
}

/// Compares one group's members object by object.
pub fn compare(name: &str, members: &[&SpokeView], allowed: &[String]) -> ParityGroup {
    let mut group = ParityGroup {
        name: name.to_string(),
        members: members.iter().map(|m| m.cluster.clone()).collect(),
        state: ParityState::Identical,
        reason: String::new(),
        identical: 0,
        differences: Vec::new(),
        allowed: 0,
        sealed: 0,
        commits: BTreeMap::new(),
    };
    let down: Vec<&str> = members.iter().filter(|m| m.state != SpokeState::Up).map(|m| m.cluster.as_str()).collect();
    if !down.is_empty() {
        group.state = ParityState::Unknown;
        group.reason = format!("{} unknown: parity cannot be shown", down.join(", "));
        return group;
    }
    let commits: BTreeMap<String, String> =
        members.iter().map(|m| (m.cluster.clone(), m.summary.commits.first().cloned().unwrap_or_default())).collect();
    if commits.values().collect::<std::collections::BTreeSet<_>>().len() > 1 {
        group.commits = commits;
    }
    // object → per member (in member order) its status; a hook's runs are
    // named per run and per cluster, never compared.
    let mut objects: BTreeMap<ObjectKey, Vec<Option<&ObjectStatus>>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for o in m.status.apps.iter().flat_map(|a| &a.objects).filter(|o| !o.hook) {
            let key = ObjectKey::new(&o.group, &o.kind, &o.namespace, &o.name);
            objects.entry(key).or_insert_with(|| vec![None; members.len()])[i] = Some(o);
        }
    }
    for (key, per) in objects {
        let object = key.to_string();
        let mut found = differences(&object, members, &per);
        // An allowed difference is one of Git's content; drift still counts.
        if allowed.iter().any(|a| a.trim() == object)
            && found.iter().any(|d| !matches!(d, LiveDifference::Drift { .. }))
        {
            group.allowed += 1;
            found.retain(|d| matches!(d, LiveDifference::Drift { .. }));
        } else if found.is_empty() {
            if per.iter().flatten().any(|o| o.sealed) && !same_digest(&per) {
                group.sealed += 1;
            } else {
                group.identical += 1;
            }
        }
        group.differences.extend(found);
    }
    if !group.differences.is_empty() {
        group.state = ParityState::Diverged;
    }
    group
}

/// The same Git content everywhere; a member that reports no digest (an
/// older gitgate) proves nothing.
fn same_digest(per: &[Option<&ObjectStatus>]) -> bool {
    let mut digests = per.iter().flatten().map(|o| o.digest.as_str());
    let first = digests.next();
    first.is_some_and(|f| !f.is_empty()) && digests.all(|d| Some(d) == first)
}

fn differences(object: &str, members: &[&SpokeView], per: &[Option<&ObjectStatus>]) -> Vec<LiveDifference> {
    let mut out = Vec::new();
    if per.iter().any(Option::is_none) {
        let clusters = members.iter().zip(per).filter(|(_, o)| o.is_some()).map(|(m, _)| m.cluster.clone()).collect();
        out.push(LiveDifference::OnlyIn { object: object.to_string(), clusters });
    } else if !same_digest(per) && !per.iter().flatten().all(|o| o.sealed) {
        let files =
            members.iter().zip(per.iter().flatten()).map(|(m, o)| (m.cluster.clone(), o.source.clone())).collect();
        out.push(LiveDifference::Content { object: object.to_string(), files });
    }
    for (m, o) in members.iter().zip(per) {
        if let Some(o) = o
            && matches!(o.sync, SyncStatus::OutOfSync | SyncStatus::Failed)
        {
            let message = if o.message.is_empty() { o.sync.as_str().to_string() } else { o.message.clone() };
            out.push(LiveDifference::Drift { object: object.to_string(), cluster: m.cluster.clone(), message });
        }
    }
    out
}
