//! Files the dashboard never shows, whoever asks: a file that holds or
//! renders to a Secret that is not sealed (also as an item of a `kind:
//! List`), a kustomization whose `secretGenerator` has `literals`, and
//! every input of a kustomize `secretGenerator` or `configMapGenerator`
//! (`files`, `envs`, `env`): those are values, not manifests.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::render::DesiredSet;
use crate::source::{RepoPath, TreeReader};

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Why a file is not shown; `None`: it may be.
pub fn reason(path: &RepoPath, text: &str, desired: &DesiredSet, inputs: &GeneratorInputs) -> Option<&'static str> {
    if inputs.paths.contains(path) {
        return Some("not shown: the file feeds a kustomize secretGenerator or configMapGenerator");
    }
    match crate::render::yaml::parse_documents(path.as_str(), text.as_bytes()) {
        Err(_) => {
            return Some("not shown: the file is not YAML gitgate can read, so it cannot tell it holds no Secret");
        }
        Ok(docs) if docs.iter().any(has_plain_secret) => {
            return Some("not shown: the file holds a Secret that is not sealed");
        }
        Ok(_) => {}
    }
    let renders_secret = desired.objects().iter().any(|(k, o)| {
        k.group.is_empty()
            && k.kind == "Secret"
            && o.source.as_ref() == path.as_str()
            && serde_json::from_str::<Value>(&o.manifest).map_or(true, |v| is_plain_secret(&v))
    });
    renders_secret.then_some("not shown: the file renders to a Secret that is not sealed")
}

/// Whether a manifest file holds a Secret with values that is not sealed
/// (at the top level or as an item of a `List`). A file that does not
/// parse is treated as holding one: it is not shown.
pub fn holds_plain_secret(name: &str, text: &str) -> bool {
    crate::render::yaml::parse_documents(name, text.as_bytes()).map_or(true, |docs| docs.iter().any(has_plain_secret))
}

fn has_plain_secret(doc: &Value) -> bool {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.ends_with("List")
        && let Some(items) = doc.get("items").and_then(Value::as_array)
    {
        return items.iter().any(has_plain_secret);
    }
    is_plain_secret(doc)
}

fn is_plain_secret(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("Secret")
        && doc.pointer(&format!("/metadata/annotations/{}", crate::contract::SEALED.replace('/', "~1"))).is_none()
        && (doc.get("data").is_some() || doc.get("stringData").is_some())
}

/// The generator inputs of one commit (found once per commit).
#[derive(Debug, Default)]
pub struct GeneratorInputs {
    pub paths: BTreeSet<RepoPath>,
}

impl GeneratorInputs {
    /// Every kustomization file of the tree, read for its generators.
    pub fn scan(tree: &TreeReader) -> Result<GeneratorInputs, crate::source::SourceError> {
        let mut out = GeneratorInputs::default();
        for file in tree.walk(&RepoPath::root())? {
            if KUSTOMIZATION_FILES.contains(&file.file_name())
                && let Some(bytes) = tree.read_opt(&file)?
            {
                out.add(&file, &bytes);
            }
        }
        Ok(out)
    }

    /// Adds the inputs `kfile` names. An unreadable kustomization withholds
    /// itself (it may hold literals).
    pub fn add(&mut self, kfile: &RepoPath, bytes: &[u8]) {
        let dir = kfile.parent();
        let Ok(k) = crate::render::yaml::parse_one::<Value>(kfile.as_str(), bytes) else {
            self.paths.insert(kfile.clone());
            return;
        };
        for (field, secret) in [("secretGenerator", true), ("configMapGenerator", false)] {
            for g in k.get(field).and_then(Value::as_array).into_iter().flatten() {
                let strings = |f: &str| -> Vec<String> {
                    match g.get(f) {
                        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                        Some(Value::String(s)) => vec![s.clone()],
                        _ => Vec::new(),
                    }
                };
                if secret && !strings("literals").is_empty() {
                    self.paths.insert(kfile.clone());
                }
                let files = strings("files");
                let files = files.iter().map(|f| f.split_once('=').map_or(f.as_str(), |(_, p)| p));
                let envs = strings("envs");
                let env = strings("env");
                for rel in files.chain(envs.iter().map(String::as_str)).chain(env.iter().map(String::as_str)) {
                    if let Ok(p) = dir.join(rel) {
                        self.paths.insert(p);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_secrets_are_never_shown_and_sealed_ones_are() {
        assert!(holds_plain_secret(
            "a.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\nstringData: {k: v}\n"
        ));
        let sealed = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\n  annotations: {{{}: age}}\ndata: {{k: YWdl}}\n",
            crate::contract::SEALED
        );
        assert!(!holds_plain_secret("a.yaml", &sealed));
        assert!(!holds_plain_secret("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n"));
        assert!(holds_plain_secret("a.yaml", "kind: [unclosed"), "a file that does not parse is not shown");
    }

    #[test]
    fn a_list_of_secrets_is_a_secret() {
        let list = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: c}\n  \
                    - apiVersion: v1\n    kind: Secret\n    metadata: {name: s}\n    data: {password: aHVudGVyMg==}\n";
        assert!(holds_plain_secret("list.yaml", list));
        let nested =
            "apiVersion: v1\nkind: SecretList\nitems: [{kind: List, items: [{kind: Secret, stringData: {a: b}}]}]\n";
        assert!(holds_plain_secret("nested.yaml", nested));
        assert!(!holds_plain_secret("cms.yaml", "kind: List\nitems: [{kind: ConfigMap, data: {a: b}}]\n"));
    }

    #[test]
    fn generator_inputs_and_literal_kustomizations_are_withheld() {
        let k = RepoPath::parse("apps/pay/overlays/prod/kustomization.yaml").unwrap();
        let mut g = GeneratorInputs::default();
        g.add(
            &k,
            b"secretGenerator:\n  - name: db\n    files: [password.txt, tls.key=certs/key.pem]\n    envs: [db.env]\n\
              configMapGenerator:\n  - name: cfg\n    env: app.env\n    files: [../common/settings.ini]\n",
        );
        let got: Vec<&str> = g.paths.iter().map(RepoPath::as_str).collect();
        assert_eq!(
            got,
            [
                "apps/pay/overlays/common/settings.ini",
                "apps/pay/overlays/prod/app.env",
                "apps/pay/overlays/prod/certs/key.pem",
                "apps/pay/overlays/prod/db.env",
                "apps/pay/overlays/prod/password.txt",
            ]
        );
        let mut lit = GeneratorInputs::default();
        lit.add(&k, b"secretGenerator:\n  - name: db\n    literals: [password=hunter2]\n");
        assert!(lit.paths.contains(&k), "a kustomization with secret literals is itself withheld");
        let mut plain = GeneratorInputs::default();
        plain.add(&k, b"resources: [deploy.yaml]\n");
        assert!(plain.paths.is_empty());
    }
}
