//! The inventory: what each app applied, recorded in a ConfigMap per app
//! in gitgate's namespace (as Flux keeps its inventory), so prune deletes
//! exactly what left Git and nothing it never made.
//!
//! One line per object: `group|version|kind|namespace|name|phase.wave|flags`
//! (≈ 60 bytes: 10,000 objects fit a ConfigMap's 1 MiB).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use super::SyncError;
use super::wave::Wave;
use crate::contract::FIELD_MANAGER;
use crate::render::object::ObjectKey;

/// Marks inventory ConfigMaps; its value is the app.
pub const INVENTORY_LABEL: &str = "gitgate.dev/inventory";
const KEY: &str = "inventory";
const COMMIT_KEY: &str = "commit";
const CLUSTER_KEY: &str = "cluster";
const BASE_KEY: &str = "base";

/// One applied object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub wave: Wave,
    /// `gitgate.dev/prune: disabled`.
    pub keep: bool,
}

impl Entry {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(&self.group, &self.kind, &self.namespace, &self.name)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }
}

/// The ConfigMap name of an app's inventory.
pub fn name_of(app: &str) -> String {
    format!("gitgate-inventory-{app}")
}

/// Encodes entries, one per line, sorted.
pub fn encode(entries: &[Entry]) -> String {
    let mut lines: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{}|{}|{}|{}|{}|{}.{}|{}",
                e.group,
                e.version,
                e.kind,
                e.namespace,
                e.name,
                e.wave.phase,
                e.wave.wave,
                if e.keep { "keep" } else { "" }
            )
        })
        .collect();
    lines.sort();
    lines.dedup();
    lines.join("\n")
}

/// Decodes what [`encode`] wrote; a malformed line is an error naming it
/// (an inventory that cannot be read must never turn into "prune nothing"
/// or "prune everything" silently).
pub fn decode(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('|').collect();
        let [group, version, kind, namespace, name, wave, flags] = f.as_slice() else {
            return Err(format!("line {}: expected 7 fields", i + 1));
        };
        let (phase, wave) = wave.split_once('.').ok_or_else(|| format!("line {}: bad wave {wave:?}", i + 1))?;
        let wave = Wave {
            phase: phase.parse().map_err(|_| format!("line {}: bad phase {phase:?}", i + 1))?,
            wave: wave.parse().map_err(|_| format!("line {}: bad wave {wave:?}", i + 1))?,
        };
        if kind.is_empty() || name.is_empty() || version.is_empty() {
            return Err(format!("line {}: kind, version and name are required", i + 1));
        }
        out.push(Entry {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            wave,
            keep: flags.split(',').any(|f| f == "keep"),
        });
    }
    Ok(out)
}

/// An app's recorded inventory and the commit it was last synced at.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub entries: Vec<Entry>,
    pub commit: String,
    /// The app's destination cluster (`""`: the default one).
    pub cluster: String,
    /// How many objects the app held when a sync last completed its prune:
    /// what the mass-prune guard's share is measured against. The entries
    /// may hold more (recorded ahead of a sync still applying, or kept by
    /// a prune the guard stopped). `None` in inventories written before it
    /// was recorded.
    pub base: Option<usize>,
}

impl Inventory {
    /// The size the mass-prune guard measures a deletion against.
    pub fn guard_base(&self) -> usize {
        self.base.unwrap_or(self.entries.len())
    }
}

/// Reads every inventory in the namespace: app → inventory.
pub async fn read_all(client: &kube::Client, namespace: &str) -> Result<BTreeMap<String, Inventory>, SyncError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&kube::api::ListParams::default().labels(INVENTORY_LABEL))
        .await
        .map_err(|e| SyncError::kube("list the inventories", e))?;
    let mut out = BTreeMap::new();
    for cm in list.items {
        let Some(app) = cm.metadata.labels.as_ref().and_then(|l| l.get(INVENTORY_LABEL)).cloned() else { continue };
        let data = cm.data.unwrap_or_default();
        let entries = decode(data.get(KEY).map(String::as_str).unwrap_or_default())
            .map_err(|reason| SyncError::Inventory { app: app.clone(), reason })?;
        let get = |k: &str| data.get(k).cloned().unwrap_or_default();
        let base = decode_base(data.get(BASE_KEY).map(String::as_str))
            .map_err(|reason| SyncError::Inventory { app: app.clone(), reason })?;
        out.insert(app, Inventory { entries, commit: get(COMMIT_KEY), cluster: get(CLUSTER_KEY), base });
    }
    Ok(out)
}

/// The recorded base: absent is `None`; anything but a count is an error
/// (a guard that cannot be measured must not silently loosen).
fn decode_base(text: Option<&str>) -> Result<Option<usize>, String> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| format!("bad base {t:?}")),
    }
}

/// Writes an app's inventory (server-side apply, gitgate's field manager).
pub async fn write(client: &kube::Client, namespace: &str, app: &str, inventory: &Inventory) -> Result<(), SyncError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut data = BTreeMap::from([
        (KEY.to_string(), encode(&inventory.entries)),
        (COMMIT_KEY.to_string(), inventory.commit.clone()),
        (CLUSTER_KEY.to_string(), inventory.cluster.clone()),
    ]);
    if let Some(base) = inventory.base {
        data.insert(BASE_KEY.to_string(), base.to_string());
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name_of(app)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(INVENTORY_LABEL.to_string(), app.to_string())])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    let mut value =
        serde_json::to_value(&cm).map_err(|e| SyncError::Inventory { app: app.into(), reason: e.to_string() })?;
    value["apiVersion"] = "v1".into();
    value["kind"] = "ConfigMap".into();
    api.patch(&name_of(app), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&value))
        .await
        .map_err(|e| SyncError::kube("write the inventory", e))?;
    Ok(())
}

/// Deletes an app's inventory once everything it held is gone.
pub async fn remove(client: &kube::Client, namespace: &str, app: &str) -> Result<(), SyncError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.delete(&name_of(app), &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(SyncError::kube("delete the inventory", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let e = |kind: &str, ns: &str, name: &str, phase, wave, keep| Entry {
            group: if kind == "Deployment" { "apps".into() } else { String::new() },
            version: "v1".into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
            wave: Wave { phase, wave },
            keep,
        };
        let entries = vec![e("Namespace", "", "shop", 0, 0, false), e("Deployment", "shop", "web", 1, -2, true)];
        let mut back = decode(&encode(&entries)).unwrap();
        back.sort_by(|a, b| a.kind.cmp(&b.kind));
        let mut want = entries.clone();
        want.sort_by(|a, b| a.kind.cmp(&b.kind));
        assert_eq!(back, want);
        assert_eq!(back[0].api_version(), "apps/v1");
        assert!(decode("a|b|c").unwrap_err().contains("line 1"));
        assert!(decode("|v1|ConfigMap|ns|x|1.zz|").unwrap_err().contains("bad wave"));
        assert!(decode("").unwrap().is_empty());
    }

    #[test]
    fn a_base_that_is_not_a_count_is_an_error_never_a_looser_guard() {
        assert_eq!(decode_base(None), Ok(None));
        assert_eq!(decode_base(Some(" 12 ")), Ok(Some(12)));
        assert!(decode_base(Some("-1")).unwrap_err().contains("bad base"));
        assert!(decode_base(Some("lots")).is_err());
        let e = decode("|v1|ConfigMap|ns|x|0.0|").unwrap().remove(0);
        let old = Inventory { entries: vec![e; 3], ..Inventory::default() };
        assert_eq!(old.guard_base(), 3, "inventories written before the base fall back to their size");
        assert_eq!(Inventory { base: Some(1), ..old }.guard_base(), 1);
    }
}
