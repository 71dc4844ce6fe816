//! Per-object sync options in Git (`gitgate.dev/sync-options`, Argo CD's
//! `argocd.argoproj.io/sync-options`): read by the loop, and by the gate,
//! which lets the reconciler delete an object it re-creates.

use serde_json::Value;

use super::{ARGO_SYNC_OPTIONS, SYNC_OPTIONS};

/// What an apply that fails on an immutable field may do, by the object's
/// sync options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recreate {
    /// Nothing: the sync fails naming the field.
    #[default]
    No,
    /// Argo CD's `Replace=true` without `Force=true` (Argo CD would
    /// `kubectl replace`, which fails the same way): reported.
    ReplaceWithoutForce,
    /// `gitgate.dev/sync-options: Replace=true`, or Argo CD's
    /// `Replace=true,Force=true`: deleted and created again.
    Yes,
}

/// The [`Recreate`] of a manifest's sync options.
pub fn recreate_of(manifest: &Value) -> Recreate {
    let options = |key: &str| -> Vec<(String, String)> {
        let raw = manifest.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str);
        raw.unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase()))
            .collect()
    };
    let on = |opts: &[(String, String)], k: &str| opts.iter().any(|(key, v)| key == k && v == "true");
    let ours = options(SYNC_OPTIONS);
    let argo = options(ARGO_SYNC_OPTIONS);
    if on(&ours, "replace") || (on(&argo, "replace") && on(&argo, "force")) {
        Recreate::Yes
    } else if on(&argo, "replace") {
        Recreate::ReplaceWithoutForce
    } else {
        Recreate::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sync_options_read_gitgates_replace_and_argo_cds_as_written() {
        let with = |k: &str, v: &str| json!({"metadata": {"annotations": {k: v}}});
        assert_eq!(recreate_of(&json!({})), Recreate::No);
        assert_eq!(recreate_of(&with(SYNC_OPTIONS, "Replace=true")), Recreate::Yes);
        assert_eq!(recreate_of(&with(ARGO_SYNC_OPTIONS, "Replace=true,Force=true")), Recreate::Yes);
        assert_eq!(recreate_of(&with(ARGO_SYNC_OPTIONS, "Force=true, Replace=true")), Recreate::Yes);
        assert_eq!(recreate_of(&with(ARGO_SYNC_OPTIONS, "Replace=true")), Recreate::ReplaceWithoutForce);
        assert_eq!(recreate_of(&with(ARGO_SYNC_OPTIONS, "Force=true")), Recreate::No);
        assert_eq!(recreate_of(&with(SYNC_OPTIONS, "Replace=false")), Recreate::No);
    }
}
