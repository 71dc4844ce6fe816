//! One audit record: what happened, to what, by whom, under which commit,
//! and what gitgate decided. Never the object's content, never a secret
//! value: an object is represented by its digest only.

use serde::{Deserialize, Serialize};

/// What kind of event a record describes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// An admission decision (allow, warn or deny; dry runs flagged).
    #[default]
    Admission,
    /// The sync loop applied an object.
    Apply,
    /// The sync loop deleted an object Git no longer declares.
    Prune,
    /// Self-heal put back what Git says after a drift.
    DriftReverted,
    /// A break-glass change was admitted.
    BreakGlassOpened,
    /// A break-glass window ended; self-heal resumes for the object.
    BreakGlassExpired,
    /// The sync loop refused a commit that is not signed.
    UnsignedCommitRefused,
    /// A deleted or edited webhook configuration was put back.
    WebhookConfigRestored,
    /// A sync run failed.
    SyncFailed,
    /// The log found and set aside a torn or lost tail when it opened.
    LogRecovered,
    /// A commit started waiting at a promotion gate (approval, pause,
    /// sync window).
    PromotionWaiting,
    /// An approver approved a commit for an app.
    Approved,
    /// An app was paused.
    Paused,
    /// An app's pause was ended by hand.
    Resumed,
}

impl EventKind {
    pub const ALL: [EventKind; 14] = [
        EventKind::Admission,
        EventKind::Apply,
        EventKind::Prune,
        EventKind::DriftReverted,
        EventKind::BreakGlassOpened,
        EventKind::BreakGlassExpired,
        EventKind::UnsignedCommitRefused,
        EventKind::WebhookConfigRestored,
        EventKind::SyncFailed,
        EventKind::LogRecovered,
        EventKind::PromotionWaiting,
        EventKind::Approved,
        EventKind::Paused,
        EventKind::Resumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Admission => "admission",
            EventKind::Apply => "apply",
            EventKind::Prune => "prune",
            EventKind::DriftReverted => "driftReverted",
            EventKind::BreakGlassOpened => "breakGlassOpened",
            EventKind::BreakGlassExpired => "breakGlassExpired",
            EventKind::UnsignedCommitRefused => "unsignedCommitRefused",
            EventKind::WebhookConfigRestored => "webhookConfigRestored",
            EventKind::SyncFailed => "syncFailed",
            EventKind::LogRecovered => "logRecovered",
            EventKind::PromotionWaiting => "promotionWaiting",
            EventKind::Approved => "approved",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

/// The outcome: an admission decision, or how a sync action ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    #[default]
    Allow,
    Warn,
    Deny,
    /// A sync action that was carried out.
    Done,
    /// A sync action gitgate refused (an unsigned commit, a mass prune).
    Refused,
    /// A sync action that failed.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 6] =
        [Outcome::Allow, Outcome::Warn, Outcome::Deny, Outcome::Done, Outcome::Refused, Outcome::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Warn => "warn",
            Outcome::Deny => "deny",
            Outcome::Done => "done",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

/// The Git commit a change is traced to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRef {
    /// The full commit ID.
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The content of one record, as its producer (the admission recorder, the
/// sync loop) fills it in. The log adds the sequence number, time, replica,
/// cluster and chain hashes when it appends it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub event: EventKind,
    /// `validate` or `mutate` for admission events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// The AdmissionRequest uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// Who sent an admission review, as the transport proved it:
    /// `apiserver` (a client certificate from `--client-ca`) or
    /// `unauthenticated` (then `user` is only what the sender typed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub caller: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// CREATE, UPDATE, DELETE, CONNECT; for sync events APPLY or DELETE.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitRef>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    /// Path of the manifest in the repository.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub decision: Outcome,
    /// The denial's HTTP-style code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The denial (`Reason: message`), warnings, or what a sync action did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The stages/policies that had a say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// `sha256:` of the object (Secret values excluded), never the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

impl Entry {
    /// An entry for a sync action; fill in the object, commit and app.
    pub fn new(event: EventKind, decision: Outcome) -> Self {
        Entry { event, decision, ..Entry::default() }
    }

    /// `namespace/kind/name` (namespace empty for cluster-scoped objects).
    pub fn object(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// A record as stored: the chain header, the entry and the record's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    pub replica: String,
    /// The cluster of the spoke that wrote the record (`gitgate serve
    /// --cluster NAME`); absent in records of a log opened without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Hash of the previous record (hex sha256), or 64 zeros for the first.
    pub prev: String,
    #[serde(flatten)]
    pub entry: Entry,
    pub hash: String,
}

pub use crate::contract::sealed::hex;

pub use crate::clock::{format_rfc3339_micros, now_micros, parse_rfc3339_micros};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_parses_offsets() {
        for micros in [0, 1, 1_763_000_000_123_456, 951_782_400_000_000, -1_000_000] {
            let s = format_rfc3339_micros(micros);
            assert_eq!(parse_rfc3339_micros(&s), Some(micros), "{s}");
        }
        assert_eq!(format_rfc3339_micros(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(parse_rfc3339_micros("2000-02-29T02:00:00+02:00"), parse_rfc3339_micros("2000-02-29T00:00:00Z"));
        assert_eq!(parse_rfc3339_micros("2000-02-29T00:00:00.5Z"), Some(951_782_400_500_000));
        for bad in ["", "2000-02-29", "2000-13-01T00:00:00Z", "2000-02-29T00:00:00", "2000-02-29T00:00:00+2"] {
            assert_eq!(parse_rfc3339_micros(bad), None, "{bad}");
        }
    }

    #[test]
    fn event_and_outcome_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
