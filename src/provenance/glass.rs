//! Break-glass windows that end on time on every replica.
//!
//! A member of a break-glass group changes a managed object by setting
//! `gitgate.dev/break-glass: "<reason>"`. The window that change opens is
//! stored on the object itself: the mutating webhook stamps
//! `gitgate.dev/break-glass-until` (RFC 3339, UTC) on the change that opens
//! it, `--break-glass-ttl` from the time of admission, and puts the old
//! object's stamp back on a later change that dropped it. The validating webhook refuses a break-glass change whose window is
//! missing, over, moved or longer than the TTL; the reconciler reads the
//! window's end from the live object, so a failover does not restart the
//! clock (before, the window lived in the leader's memory).
//!
//! Both halves are pure: the time is a parameter.

use std::time::Duration;

use serde_json::Value;

use crate::admission::{AdmissionRequest, Decision, Flow, Operation, Stage};
use crate::clock::{format_rfc3339_micros, parse_rfc3339_micros};
use crate::contract::UNTIL_ANNOTATION;

/// Grace for clocks: a stamp up to this far past `now + ttl` (the webhook
/// replica that stamped may be a little ahead) is still the TTL's.
const SKEW_MICROS: i64 = 5_000_000;

/// The window an object carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// No `gitgate.dev/break-glass-until`.
    Absent,
    /// Set, but not an RFC 3339 time.
    Invalid,
    /// Ends at this time (µs since the Unix epoch).
    At(i64),
}

/// The window stamped on `object`.
pub fn until_of(object: Option<&Value>) -> Until {
    match object.and_then(|o| o.pointer("/metadata/annotations")).and_then(|a| a.get(UNTIL_ANNOTATION)) {
        None => Until::Absent,
        Some(v) => v.as_str().and_then(parse_rfc3339_micros).map_or(Until::Invalid, Until::At),
    }
}

/// Whether `object` asks for break-glass (a non-empty reason).
pub fn asks(object: Option<&Value>) -> bool {
    object.and_then(crate::contract::stamp::break_glass_reason).is_some()
}

fn ttl_micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)
}

/// The mutating half: the `gitgate.dev/break-glass-until` a break-glass
/// CREATE or UPDATE of `object` gets, as a JSON patch operation (`None`:
/// nothing to add). A change that opens a window (the old object has
/// none) gets `now + ttl`, whatever it wrote itself; a later change that
/// dropped the stamp (a replace) gets the old one back; a later change
/// that writes another one is left as it is, for the validating webhook
/// to refuse (a change may not move its own window).
pub fn stamp(old: Option<&Value>, object: &Value, ttl: Duration, now: i64) -> Option<json_patch::PatchOperation> {
    let until = match (until_of(old), until_of(Some(object))) {
        (Until::At(was), Until::Absent) => was,
        (Until::At(_), _) => return None,
        (Until::Absent | Until::Invalid, _) => now.saturating_add(ttl_micros(ttl)),
    };
    if until_of(Some(object)) == Until::At(until) {
        return None;
    }
    let value = Value::String(format_rfc3339_micros(until));
    let annotations = object.pointer("/metadata/annotations").is_some_and(Value::is_object);
    let op = if annotations {
        let path = format!("/metadata/annotations/{}", UNTIL_ANNOTATION.replace('~', "~0").replace('/', "~1"));
        json_patch::PatchOperation::Add(json_patch::AddOperation { path: path.parse().ok()?, value })
    } else {
        json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: "/metadata/annotations".parse().ok()?,
            value: serde_json::json!({ UNTIL_ANNOTATION: value }),
        })
    };
    Some(op)
}

/// Why a break-glass change is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The change carries no window: gitgate's mutating webhook did not see it.
    Unstamped,
    /// The window is not a time.
    Invalid,
    /// The window ended at this time (µs).
    Ended(i64),
    /// The change moves the window the object already had (its end).
    Moved(i64),
    /// The window ends later than `--break-glass-ttl` from now allows.
    TooLong(i64),
}

impl Refusal {
    /// What the user is told (after "break-glass refused: ").
    pub fn message(&self, ttl: Duration) -> String {
        let at = |t: i64| format_rfc3339_micros(t).split('.').next().unwrap_or_default().to_string() + "Z";
        match self {
            Refusal::Unstamped => format!(
                "the change carries no {UNTIL_ANNOTATION}: gitgate's mutating webhook (gitgate-mutate) stamps the window; is it installed?"
            ),
            Refusal::Invalid => format!("{UNTIL_ANNOTATION} is not an RFC 3339 time"),
            Refusal::Ended(t) => format!(
                "its break-glass window ended at {}; gitgate puts Git back, then a new break-glass change opens a new window",
                at(*t)
            ),
            Refusal::Moved(was) => {
                format!("a break-glass change may not move its own window (it ends at {})", at(*was))
            }
            Refusal::TooLong(t) => {
                format!("{UNTIL_ANNOTATION} {} is more than --break-glass-ttl ({}s) away", at(*t), ttl.as_secs())
            }
        }
    }
}

/// The validating half: whether a break-glass change is inside its window.
/// `object` is what the change leaves (the old object for a DELETE, with
/// `old` then `None`); `old` the object before a CREATE/UPDATE.
pub fn check(old: Option<&Value>, object: Option<&Value>, ttl: Duration, now: i64) -> Result<i64, Refusal> {
    let until = match until_of(object) {
        Until::Absent => return Err(Refusal::Unstamped),
        Until::Invalid => return Err(Refusal::Invalid),
        Until::At(t) => t,
    };
    if let Until::At(was) = until_of(old)
        && was != until
    {
        return Err(Refusal::Moved(was));
    }
    if until <= now {
        return Err(Refusal::Ended(until));
    }
    if until > now.saturating_add(ttl_micros(ttl)).saturating_add(SKEW_MICROS) {
        return Err(Refusal::TooLong(until));
    }
    Ok(until)
}

/// The mutating webhook's break-glass stage: stamps the window on a
/// CREATE or UPDATE by a member of a break-glass group that sets the
/// break-glass annotation. Everything else passes untouched; whether the
/// change is allowed is the validating webhook's to say.
pub struct StampStage {
    pub groups: Vec<String>,
    pub ttl: Duration,
}

impl Stage for StampStage {
    fn name(&self) -> &'static str {
        "break-glass"
    }

    fn decide(&self, request: &AdmissionRequest, decision: &mut Decision) -> Flow {
        if !matches!(request.operation, Operation::Create | Operation::Update)
            || !request.user_info.groups.iter().any(|g| self.groups.contains(g))
            || !asks(request.object.as_ref())
        {
            return Flow::Continue;
        }
        let Some(object) = request.object.as_ref() else { return Flow::Continue };
        let now = crate::clock::now_micros();
        if let Some(op) = stamp(request.old_object.as_ref(), object, self.ttl, now) {
            decision.patch("break-glass", [op]);
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::BREAK_GLASS_ANNOTATION;
    use serde_json::json;

    const HOUR: Duration = Duration::from_secs(3600);
    const NOW: i64 = 1_800_000_000_000_000;

    fn obj(until: Option<&str>) -> Value {
        let mut a = json!({BREAK_GLASS_ANNOTATION: "INC-42"});
        if let Some(u) = until {
            a[UNTIL_ANNOTATION] = u.into();
        }
        json!({"metadata": {"name": "web", "annotations": a}})
    }

    fn apply(object: &Value, op: json_patch::PatchOperation) -> Value {
        let mut v = object.clone();
        json_patch::patch(&mut v, &[op]).unwrap();
        v
    }

    #[test]
    fn a_new_window_is_the_ttl_from_admission_and_passes() {
        let new = obj(None);
        let stamped = apply(&new, stamp(None, &new, HOUR, NOW).unwrap());
        assert_eq!(until_of(Some(&stamped)), Until::At(NOW + 3_600_000_000));
        assert_eq!(check(None, Some(&stamped), HOUR, NOW), Ok(NOW + 3_600_000_000));
        // stamping again changes nothing
        assert!(stamp(None, &stamped, HOUR, NOW).is_none());
    }

    #[test]
    fn an_open_window_is_kept_and_cannot_be_moved_by_a_later_change() {
        let old = apply(&obj(None), stamp(None, &obj(None), HOUR, NOW).unwrap());
        let later = NOW + 600_000_000;
        // The user tries to extend it by writing their own end.
        let forged = obj(Some("2099-01-01T00:00:00Z"));
        assert!(stamp(Some(&old), &forged, HOUR, later).is_none(), "left for the validating webhook");
        assert!(matches!(check(Some(&old), Some(&forged), HOUR, later), Err(Refusal::Moved(_))));
        // A replace that dropped the stamp gets the old one back.
        let replaced = obj(None);
        let stamped = apply(&replaced, stamp(Some(&old), &replaced, HOUR, later).unwrap());
        assert_eq!(until_of(Some(&stamped)), until_of(Some(&old)), "the old window is copied over");
        assert!(check(Some(&old), Some(&stamped), HOUR, later).is_ok());
        // Keeping it as it is passes untouched.
        assert!(stamp(Some(&old), &old, HOUR, later).is_none());
    }

    #[test]
    fn a_window_that_is_over_refuses_the_change() {
        let old = apply(&obj(None), stamp(None, &obj(None), HOUR, NOW).unwrap());
        let after = NOW + 3_600_000_001;
        let new = obj(None);
        let stamped = apply(&new, stamp(Some(&old), &new, HOUR, after).unwrap());
        let refusal = check(Some(&old), Some(&stamped), HOUR, after).unwrap_err();
        assert!(matches!(refusal, Refusal::Ended(_)));
        assert!(refusal.message(HOUR).contains("ended at"), "{}", refusal.message(HOUR));
        // A DELETE under an ended window is refused too.
        assert!(matches!(check(None, Some(&old), HOUR, after), Err(Refusal::Ended(_))));
    }

    #[test]
    fn unstamped_invalid_or_too_long_windows_are_refused() {
        assert_eq!(check(None, Some(&obj(None)), HOUR, NOW), Err(Refusal::Unstamped));
        assert_eq!(check(None, Some(&obj(Some("tomorrow"))), HOUR, NOW), Err(Refusal::Invalid));
        let far = obj(Some("2099-01-01T00:00:00Z"));
        assert!(matches!(check(None, Some(&far), HOUR, NOW), Err(Refusal::TooLong(_))));
        // an object with no annotations map gets one
        let bare = json!({"metadata": {"name": "web"}});
        let stamped = apply(&bare, stamp(None, &bare, HOUR, NOW).unwrap());
        assert_eq!(until_of(Some(&stamped)), Until::At(NOW + 3_600_000_000));
    }
}
