//! Parsing manifests: YAML streams (multi-document) and JSON, bounded.
//! `parse_bytes` turns a file's bytes into manifests (`kind: List`
//! expanded); plain directories (the engine) and kustomize resources both
//! read files through it. A leaf: it imports nothing of `render` but
//! [`RenderError`].
//!
//! Decisions:
//! - **YAML 1.2 booleans** (`strict_booleans`): only `true`/`false` are
//!   booleans; `yes`, `no`, `on`, `off`, `y`, `n` stay strings, so what Git
//!   says is what is applied (the "Norway problem" never turns an env value
//!   or a label into a boolean).
//! - **Budgets**: nesting deeper than [`MAX_DEPTH`], more than
//!   [`MAX_ALIASES`] alias uses, more than [`MAX_ALIAS_REPLAY`] events
//!   replayed by aliases, or more nodes than [`MAX_NODES`] in one file is
//!   refused with an error naming the file (YAML bombs, "billion
//!   laughs", documents nested thousands deep). JSON is bounded by
//!   serde_json's recursion limit (128).
//! - Duplicate keys are an error (Kubernetes rejects them too).

use serde_json::Value;

use super::RenderError;
use crate::source::RepoPath;

pub const MAX_DEPTH: usize = 100;
pub const MAX_ALIASES: usize = 1_000;
pub const MAX_NODES: usize = 1_000_000;
pub const MAX_DOCUMENTS: usize = 10_000;
/// Events that aliases may replay in one file (serde_saphyr's default is a
/// million): a 380-byte file of six anchors nine aliases wide expanded to
/// 600,000 nodes under [`MAX_NODES`], seconds of rendering per commit
/// (found by the `render_tree` fuzz target). Real manifests reuse a few
/// anchors (an env list, a resources block), far below this.
pub const MAX_ALIAS_REPLAY: usize = 100_000;

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_aliases: MAX_ALIASES,
            max_nodes: MAX_NODES,
            max_documents: MAX_DOCUMENTS,
            max_events: 4 * MAX_NODES,
            max_recorded_anchor_events: MAX_NODES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_REPLAY,
        },
        strict_booleans: true,
        with_snippet: false,
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
    }
}

/// Parses `bytes` (named `file` in errors) as one YAML document of type `T`.
pub fn parse_one<T: serde::de::DeserializeOwned>(file: &str, bytes: &[u8]) -> Result<T, RenderError> {
    let text = utf8(file, bytes)?;
    serde_saphyr::from_str_with_options::<T>(text, options()).map_err(|e| yaml_error(file, &e))
}

/// Parses a manifest file: JSON when the name ends in `.json`, else a YAML
/// stream. Empty documents are dropped.
pub fn parse_documents(file: &str, bytes: &[u8]) -> Result<Vec<Value>, RenderError> {
    let text = utf8(file, bytes)?;
    let docs: Vec<Value> = if file.ends_with(".json") {
        let v: Value = serde_json::from_str(text).map_err(|e| RenderError::Parse {
            file: file.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        vec![v]
    } else {
        serde_saphyr::from_multiple_with_options::<Value>(text, options()).map_err(|e| yaml_error(file, &e))?
    };
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The manifests in `bytes`, read from `path`.
pub(crate) fn parse_bytes(path: &RepoPath, bytes: &[u8]) -> Result<Vec<(Value, RepoPath)>, RenderError> {
    let docs = parse_documents(path.as_str(), bytes)?;
    let mut out = Vec::with_capacity(docs.len());
    for (i, d) in docs.into_iter().enumerate() {
        expand_list(d, path, i + 1, &mut out)?;
    }
    Ok(out)
}

/// `kind: List` (and `*List` with `items`) expands into its items.
fn expand_list(doc: Value, path: &RepoPath, n: usize, out: &mut Vec<(Value, RepoPath)>) -> Result<(), RenderError> {
    let is_list = doc.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"))
        && doc.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Value::Object(mut m) = doc
            && let Some(Value::Array(items)) = m.remove("items")
        {
            for item in items {
                out.push((item, path.clone()));
            }
        }
        return Ok(());
    }
    if !doc.is_object() {
        return Err(RenderError::InvalidObject {
            file: path.to_string(),
            doc: n,
            reason: "a manifest must be a mapping".into(),
        });
    }
    out.push((doc, path.clone()));
    Ok(())
}

fn utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, RenderError> {
    std::str::from_utf8(bytes).map_err(|e| RenderError::Parse {
        file: file.to_string(),
        line: 0,
        column: 0,
        message: format!("not UTF-8 (at byte {})", e.valid_up_to()),
    })
}

pub(crate) fn yaml_error(file: &str, e: &serde_saphyr::Error) -> RenderError {
    let (line, column) = e.location().map(|l| (l.line() as usize, l.column() as usize)).unwrap_or((0, 0));
    RenderError::Parse { file: file.to_string(), line, column, message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let docs = parse_documents("a.yaml", b"a: [x, y, yes, no, on, off, true, false]\n").unwrap();
        assert_eq!(docs[0]["a"], serde_json::json!(["x", "y", "yes", "no", "on", "off", true, false]));
    }

    #[test]
    fn multi_document_streams_drop_empty_documents() {
        let docs = parse_documents("a.yaml", b"---\na: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(docs, vec![serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]);
    }

    #[test]
    fn duplicate_keys_are_refused_with_file_and_line() {
        let err = parse_documents("dir/a.yaml", b"a: 1\nb: 2\na: 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("dir/a.yaml:3:"), "{msg}");
    }
}
