//! Two clusters' desired sets, object by object. Pure: no cluster and no
//! Git access, only the sets each cluster's spoke renders.

use serde::Serialize;

use crate::contract::first_difference;
use crate::render::DesiredSet;
use crate::render::desired::DesiredObject;
use crate::render::object::ObjectKey;

/// How one object differs between cluster A and cluster B.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "difference", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Difference {
    /// Git gives it to A only.
    OnlyA { object: String, app: String, file: String },
    /// Git gives it to B only.
    OnlyB { object: String, app: String, file: String },
    /// Both get it, with other content: the first field that differs (a
    /// JSON pointer) and why — another file (an overlay) or the same file
    /// rendered with other values (a generator's parameters).
    Changed { object: String, field: String, why: String, file_a: String, file_b: String },
}

/// What [`compare`] found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ParityReport {
    /// Objects both clusters get with the same content.
    pub identical: usize,
    pub differences: Vec<Difference>,
}

impl ParityReport {
    /// No object differs.
    pub fn same(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares the desired sets Git gives cluster A and cluster B: by object
/// identity (group, kind, namespace, name), whatever the apps are named
/// (`shop-production`, `shop-dr`). Objects are listed in identity order.
pub fn compare(a: &DesiredSet, b: &DesiredSet) -> ParityReport {
    let mut report = ParityReport::default();
    let mut keys: Vec<ObjectKey> = a.objects().into_iter().map(|(k, _)| k).collect();
    keys.extend(b.objects().into_iter().map(|(k, _)| k).filter(|k| a.get_key(k).is_none()));
    keys.sort();
    for key in keys {
        let object = key.to_string();
        match (a.get_key(&key), b.get_key(&key)) {
            (Some(x), Some(y)) => match changed(x, y) {
                None => report.identical += 1,
                Some(field) => report.differences.push(Difference::Changed {
                    object,
                    why: why((a, x), (b, y)),
                    field,
                    file_a: x.source.to_string(),
                    file_b: y.source.to_string(),
                }),
            },
            (Some(x), None) => {
                report.differences.push(Difference::OnlyA { object, app: app_of(a, x), file: x.source.to_string() })
            }
            (None, Some(y)) => {
                report.differences.push(Difference::OnlyB { object, app: app_of(b, y), file: y.source.to_string() })
            }
            (None, None) => {}
        }
    }
    report
}

/// The first field whose content differs, either way round (a field only
/// one manifest sets counts); `None` when the manifests are the same.
fn changed(x: &DesiredObject, y: &DesiredObject) -> Option<String> {
    if x.digest == y.digest {
        return None;
    }
    let first = first_difference(&x.manifest, &y.value(), &[]).ok().flatten();
    first.or_else(|| first_difference(&y.manifest, &x.value(), &[]).ok().flatten()).or_else(|| Some("/".into()))
}

fn why((a, x): (&DesiredSet, &DesiredObject), (b, y): (&DesiredSet, &DesiredObject)) -> String {
    let sealed = |o: &DesiredObject| crate::contract::sealed::git_sealed_digest(&o.value()).is_some();
    let path = |set: &DesiredSet, o: &DesiredObject| set.app_of(o).map(|app| app.path.to_string()).unwrap_or_default();
    if sealed(x) && sealed(y) {
        format!(
            "a sealed Secret, sealed for each cluster's own recipients ({} against {}): its values are not compared",
            x.source, y.source
        )
    } else if x.source != y.source {
        format!("an overlay: {} against {}", x.source, y.source)
    } else if path(a, x) != path(b, y) {
        // One base file, patched by each app's own kustomization.
        format!("an overlay: {} patches {} other than {} does", path(a, x), x.source, path(b, y))
    } else {
        format!("the same file ({}) rendered with other values", x.source)
    }
}

fn app_of(set: &DesiredSet, o: &DesiredObject) -> String {
    set.app_of(o).map(|a| a.name.clone()).unwrap_or_default()
}
