//! Sync hooks, read from Argo CD's and Helm's annotations as written: a
//! manifest is an ordinary object, a hook (run in one or more phases of a
//! sync, with a delete policy), or skipped.
//!
//! - `argocd.argoproj.io/hook: PreSync | Sync | PostSync | SyncFail | Skip`
//!   (comma-separated for several phases); it wins over Helm's.
//! - `helm.sh/hook`: `pre-install`, `pre-upgrade` (and Helm 2's
//!   `crd-install`) are PreSync; `post-install`, `post-upgrade` PostSync;
//!   `pre-delete`, `post-delete`, `pre-rollback`, `post-rollback` and the
//!   `test` hooks are not run by a sync and are skipped, as Argo CD does.
//! - `argocd.argoproj.io/hook-delete-policy` and
//!   `helm.sh/hook-delete-policy`: `HookSucceeded` (`hook-succeeded`),
//!   `HookFailed` (`hook-failed`), `BeforeHookCreation`
//!   (`before-hook-creation`, the default when none is given, as in Argo
//!   CD and Helm).
//!
//! Pure: the render box rejects bad annotations with a message naming the
//! object and its file; the sync plan orders the hooks.

use serde_json::Value;

pub const ARGO_HOOK: &str = "argocd.argoproj.io/hook";
pub const ARGO_DELETE_POLICY: &str = "argocd.argoproj.io/hook-delete-policy";
pub const HELM_HOOK: &str = "helm.sh/hook";
pub const HELM_DELETE_POLICY: &str = "helm.sh/hook-delete-policy";
/// Helm's hook order; a hook's wave when it has no sync-wave annotation.
pub const HELM_WEIGHT: &str = "helm.sh/hook-weight";

/// The phase of a sync a hook runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Phase {
    PreSync,
    Sync,
    PostSync,
    SyncFail,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PreSync => "PreSync",
            Phase::Sync => "Sync",
            Phase::PostSync => "PostSync",
            Phase::SyncFail => "SyncFail",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a hook object is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeletePolicy {
    HookSucceeded,
    HookFailed,
    BeforeHookCreation,
}

/// A hook: its phases (in order, no repeats) and delete policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub phases: Vec<Phase>,
    pub delete: Vec<DeletePolicy>,
}

impl Hook {
    pub fn deletes(&self, policy: DeletePolicy) -> bool {
        self.delete.contains(&policy)
    }
}

/// What a manifest is to a sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Object,
    Hook(Hook),
    /// `argocd.argoproj.io/hook: Skip`, or only Helm hooks a sync does not
    /// run: never applied.
    Skip,
}

fn annotation<'a>(manifest: &'a Value, key: &str) -> Option<&'a str> {
    manifest.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

fn csv(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The role of a manifest; `Err` names the annotation and the bad value.
pub fn role(manifest: &Value) -> Result<Role, String> {
    let phases = if let Some(raw) = annotation(manifest, ARGO_HOOK) {
        let Some(phases) = argo_phases(raw)? else { return Ok(Role::Skip) };
        Some(phases)
    } else if let Some(raw) = annotation(manifest, HELM_HOOK) {
        let Some(phases) = helm_phases(raw)? else { return Ok(Role::Skip) };
        Some(phases)
    } else {
        None
    };
    let mut delete = delete_policies(manifest, phases.is_some())?;
    match phases {
        None => Ok(Role::Object),
        Some(phases) => {
            if delete.is_empty() {
                delete.push(DeletePolicy::BeforeHookCreation);
            }
            Ok(Role::Hook(Hook { phases, delete }))
        }
    }
}

/// The phases of an Argo CD hook annotation, each once; `None` when it
/// says `Skip`.
fn argo_phases(raw: &str) -> Result<Option<Vec<Phase>>, String> {
    let mut phases = Vec::new();
    for p in csv(raw) {
        let phase = match p {
            "PreSync" => Phase::PreSync,
            "Sync" => Phase::Sync,
            "PostSync" => Phase::PostSync,
            "SyncFail" => Phase::SyncFail,
            "Skip" => return Ok(None),
            other => {
                return Err(format!(
                    "unknown hook phase {other:?} in {ARGO_HOOK} (one of PreSync, Sync, PostSync, SyncFail, Skip)"
                ));
            }
        };
        if !phases.contains(&phase) {
            phases.push(phase);
        }
    }
    if phases.is_empty() {
        return Err(format!("{ARGO_HOOK} is empty (one of PreSync, Sync, PostSync, SyncFail, Skip)"));
    }
    Ok(Some(phases))
}

/// The phases of a Helm hook annotation, each once; `None` when every hook
/// it names is one gitgate never runs (delete, rollback, test).
fn helm_phases(raw: &str) -> Result<Option<Vec<Phase>>, String> {
    let mut phases = Vec::new();
    let mut any = false;
    for p in csv(raw) {
        any = true;
        let phase = match p {
            "pre-install" | "pre-upgrade" | "crd-install" => Phase::PreSync,
            "post-install" | "post-upgrade" => Phase::PostSync,
            "pre-delete" | "post-delete" | "pre-rollback" | "post-rollback" | "test" | "test-success"
            | "test-failure" => continue,
            other => {
                return Err(format!(
                    "unknown hook {other:?} in {HELM_HOOK} (pre-install, pre-upgrade, post-install, post-upgrade, \
                     pre-delete, post-delete, pre-rollback, post-rollback or test)"
                ));
            }
        };
        if !phases.contains(&phase) {
            phases.push(phase);
        }
    }
    if !any {
        return Err(format!("{HELM_HOOK} is empty"));
    }
    if phases.is_empty() {
        return Ok(None);
    }
    Ok(Some(phases))
}

/// The delete policies of the Argo CD and Helm annotations, each once;
/// refused on an object that is not a hook (`hook` false).
fn delete_policies(manifest: &Value, hook: bool) -> Result<Vec<DeletePolicy>, String> {
    let mut delete = Vec::new();
    for (key, helm) in [(ARGO_DELETE_POLICY, false), (HELM_DELETE_POLICY, true)] {
        let Some(raw) = annotation(manifest, key) else { continue };
        if !hook {
            return Err(format!("{key} on an object that is not a hook (it needs {ARGO_HOOK} or {HELM_HOOK})"));
        }
        for p in csv(raw) {
            let policy = match (p, helm) {
                ("HookSucceeded", false) | ("hook-succeeded", true) => DeletePolicy::HookSucceeded,
                ("HookFailed", false) | ("hook-failed", true) => DeletePolicy::HookFailed,
                ("BeforeHookCreation", false) | ("before-hook-creation", true) => DeletePolicy::BeforeHookCreation,
                (other, false) => {
                    return Err(format!(
                        "unknown delete policy {other:?} in {key} (HookSucceeded, HookFailed or BeforeHookCreation)"
                    ));
                }
                (other, true) => {
                    return Err(format!(
                        "unknown delete policy {other:?} in {key} (hook-succeeded, hook-failed or before-hook-creation)"
                    ));
                }
            };
            if !delete.contains(&policy) {
                delete.push(policy);
            }
        }
    }
    Ok(delete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(annotations: Value) -> Value {
        json!({"metadata": {"annotations": annotations}})
    }

    #[test]
    fn argo_cd_hooks_are_read_as_written() {
        assert_eq!(role(&json!({"metadata": {}})).unwrap(), Role::Object);
        let h = role(&with(json!({ARGO_HOOK: "PreSync"}))).unwrap();
        assert_eq!(
            h,
            Role::Hook(Hook { phases: vec![Phase::PreSync], delete: vec![DeletePolicy::BeforeHookCreation] })
        );
        let h = role(&with(json!({ARGO_HOOK: "PostSync, SyncFail", ARGO_DELETE_POLICY: "HookSucceeded,HookFailed"})))
            .unwrap();
        assert_eq!(
            h,
            Role::Hook(Hook {
                phases: vec![Phase::PostSync, Phase::SyncFail],
                delete: vec![DeletePolicy::HookSucceeded, DeletePolicy::HookFailed]
            })
        );
        assert_eq!(role(&with(json!({ARGO_HOOK: "Skip"}))).unwrap(), Role::Skip);
        // Argo CD's annotation wins over Helm's
        let h = role(&with(json!({ARGO_HOOK: "Sync", HELM_HOOK: "post-install"}))).unwrap();
        assert!(matches!(h, Role::Hook(Hook { ref phases, .. }) if phases == &[Phase::Sync]));
    }

    #[test]
    fn helm_hooks_map_onto_phases_and_the_ones_a_sync_does_not_run_are_skipped() {
        let h = role(&with(json!({HELM_HOOK: "pre-install,pre-upgrade", HELM_DELETE_POLICY: "hook-succeeded"})));
        assert_eq!(
            h.unwrap(),
            Role::Hook(Hook { phases: vec![Phase::PreSync], delete: vec![DeletePolicy::HookSucceeded] })
        );
        let h = role(&with(json!({HELM_HOOK: "post-install,post-upgrade"}))).unwrap();
        assert!(matches!(h, Role::Hook(Hook { ref phases, .. }) if phases == &[Phase::PostSync]));
        assert_eq!(role(&with(json!({HELM_HOOK: "test"}))).unwrap(), Role::Skip);
        assert_eq!(role(&with(json!({HELM_HOOK: "pre-delete,pre-rollback"}))).unwrap(), Role::Skip);
    }

    #[test]
    fn bad_hook_annotations_are_refused_naming_the_annotation() {
        let e = role(&with(json!({ARGO_HOOK: "PreSnyc"}))).unwrap_err();
        assert!(e.contains("unknown hook phase \"PreSnyc\"") && e.contains(ARGO_HOOK), "{e}");
        let e = role(&with(json!({HELM_HOOK: "pre-instal"}))).unwrap_err();
        assert!(e.contains("\"pre-instal\""), "{e}");
        let e = role(&with(json!({ARGO_DELETE_POLICY: "HookSucceeded"}))).unwrap_err();
        assert!(e.contains("not a hook"), "{e}");
        let e = role(&with(json!({ARGO_HOOK: "PreSync", ARGO_DELETE_POLICY: "hook-succeeded"}))).unwrap_err();
        assert!(e.contains("unknown delete policy"), "Helm's spelling is not Argo CD's: {e}");
        assert!(role(&with(json!({ARGO_HOOK: " "}))).is_err());
    }
}
