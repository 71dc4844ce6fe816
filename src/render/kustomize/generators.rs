//! `configMapGenerator` and `secretGenerator`: literals, files and env
//! files → a ConfigMap or Secret (create, merge or replace), and
//! kustomize's content-hash name suffix.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::load::{GeneratorOptions, GeneratorSpec, inside};
use super::res::{Res, kerr};
use super::transform::{ensure_map, put_all};
use crate::render::{RenderError, confine};
use crate::source::{RepoPath, TreeReader};

/// One generator of `kfile` → a ConfigMap (or, with `secret`, a Secret):
/// created, or merged into or replacing the one of that name in `res`.
pub(super) fn generate(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    g: &GeneratorSpec,
    global: &GeneratorOptions,
    secret: bool,
    res: &mut Vec<Res>,
) -> Result<(), RenderError> {
    let data = read_data(tree, dir, kfile, g)?;
    let (data_map, binary_map) = encode(data, secret);
    let opts = Options::new(g, global);
    let kind = if secret { "Secret" } else { "ConfigMap" };
    let behavior = g.behavior.as_deref().unwrap_or("create");
    let existing = res.iter().position(|r| r.kind() == kind && r.names.contains(&g.name));
    match (behavior, existing) {
        ("create", Some(_)) => {
            return Err(kerr(kfile, format!("{kind} {:?} already exists: use behavior merge or replace", g.name)));
        }
        ("merge" | "replace", None) => {
            return Err(kerr(kfile, format!("{kind} {:?} to {behavior} does not exist", g.name)));
        }
        ("merge", Some(i)) => {
            if let Some(r) = res.get_mut(i) {
                merge_into(r, data_map, binary_map, &opts);
            }
            return Ok(());
        }
        ("create" | "replace", _) => {}
        (other, _) => return Err(kerr(kfile, format!("unknown generator behavior {other:?}"))),
    }
    let obj = object(g, kind, secret, data_map, binary_map, &opts);
    let r = Res { obj, source: kfile.clone(), names: vec![g.name.clone()], needs_hash: !opts.disable_hash };
    match existing {
        Some(i) if behavior == "replace" => {
            if let Some(slot) = res.get_mut(i) {
                let mut names = std::mem::take(&mut slot.names);
                names.extend(r.names.iter().cloned());
                *slot = Res { names, ..r };
            }
        }
        _ => res.push(r),
    }
    Ok(())
}

/// A generator's options over the kustomization's `generatorOptions`.
struct Options {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    disable_hash: bool,
    immutable: bool,
}

impl Options {
    fn new(g: &GeneratorSpec, global: &GeneratorOptions) -> Self {
        let opts = g.options.clone().unwrap_or_default();
        let mut labels = global.labels.clone();
        labels.extend(opts.labels.clone());
        let mut annotations = global.annotations.clone();
        annotations.extend(opts.annotations.clone());
        let disable_hash = opts.disable_name_suffix_hash.or(global.disable_name_suffix_hash).unwrap_or(false);
        let immutable = opts.immutable.or(global.immutable).unwrap_or(false);
        Options { labels, annotations, disable_hash, immutable }
    }
}

/// The generator's keys and values: literals, files, then env files (each
/// read inside `dir`); a key set twice is refused.
fn read_data(
    tree: &TreeReader,
    dir: &RepoPath,
    kfile: &RepoPath,
    g: &GeneratorSpec,
) -> Result<Vec<(String, Vec<u8>)>, RenderError> {
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    for lit in &g.literals {
        let (k, v) = lit.split_once('=').ok_or_else(|| kerr(kfile, format!("literal {lit:?} is not key=value")))?;
        data.push((k.to_string(), unquote(v).as_bytes().to_vec()));
    }
    for f in &g.files {
        let (key, rel) = match f.split_once('=') {
            Some((k, p)) => (k.to_string(), p),
            None => (f.rsplit('/').next().unwrap_or(f).to_string(), f.as_str()),
        };
        let path = inside(dir, kfile, rel)?;
        data.push((key, confine::read(tree, &path, dir, confine::KUSTOMIZE)?));
    }
    for e in g.envs.iter().chain(&g.env) {
        let path = inside(dir, kfile, e)?;
        read_env_file(tree, dir, &path, &mut data)?;
    }
    let mut seen = std::collections::HashSet::new();
    for (k, _) in &data {
        if !seen.insert(k.clone()) {
            return Err(kerr(kfile, format!("generator {:?}: key {k:?} is set twice", g.name)));
        }
    }
    Ok(data)
}

/// The `KEY=value` lines of env file `path` (blank lines and `#` comments
/// skipped), appended to `data`.
fn read_env_file(
    tree: &TreeReader,
    dir: &RepoPath,
    path: &RepoPath,
    data: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), RenderError> {
    let body = confine::read(tree, path, dir, confine::KUSTOMIZE)?;
    let text = String::from_utf8(body).map_err(|_| kerr(path, "env file is not UTF-8"))?;
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) => data.push((k.to_string(), v.as_bytes().to_vec())),
            None => return Err(kerr(path, format!("line {line:?} is not KEY=value"))),
        }
    }
    Ok(())
}

/// `data` and `binaryData`: a Secret's values base64-encoded as kustomize
/// wraps them; a ConfigMap's as text, or in `binaryData` when not UTF-8.
fn encode(data: Vec<(String, Vec<u8>)>, secret: bool) -> (Map<String, Value>, Map<String, Value>) {
    let mut data_map = Map::new();
    let mut binary_map = Map::new();
    for (k, v) in data {
        if secret {
            data_map.insert(k, Value::String(wrapped_base64(&v)));
        } else {
            match String::from_utf8(v) {
                Ok(s) => {
                    data_map.insert(k, Value::String(s));
                }
                Err(e) => {
                    binary_map.insert(k, Value::String(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())));
                }
            }
        }
    }
    (data_map, binary_map)
}

/// `behavior: merge`: the generator's data, labels and annotations over
/// the existing object's; it keeps its hash suffix unless this generator
/// disables it.
fn merge_into(r: &mut Res, data_map: Map<String, Value>, binary_map: Map<String, Value>, opts: &Options) {
    if let Some(m) = ensure_map(&mut r.obj, &["data"], true) {
        m.extend(data_map);
    }
    if !binary_map.is_empty()
        && let Some(m) = ensure_map(&mut r.obj, &["binaryData"], true)
    {
        m.extend(binary_map);
    }
    if let Some(m) = ensure_map(&mut r.obj, &["metadata", "labels"], !opts.labels.is_empty()) {
        put_all(m, &opts.labels);
    }
    if let Some(m) = ensure_map(&mut r.obj, &["metadata", "annotations"], !opts.annotations.is_empty()) {
        put_all(m, &opts.annotations);
    }
    r.needs_hash = r.needs_hash && !opts.disable_hash;
}

/// The generated object (`apiVersion: v1`), as kustomize writes it.
fn object(
    g: &GeneratorSpec,
    kind: &str,
    secret: bool,
    data_map: Map<String, Value>,
    binary_map: Map<String, Value>,
    opts: &Options,
) -> Value {
    let strings = |m: &BTreeMap<String, String>| {
        Value::Object(m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
    };
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(g.name.clone()));
    if let Some(ns) = &g.namespace {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    if !opts.labels.is_empty() {
        meta.insert("labels".into(), strings(&opts.labels));
    }
    if !opts.annotations.is_empty() {
        meta.insert("annotations".into(), strings(&opts.annotations));
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), Value::String("v1".into()));
    obj.insert("kind".into(), Value::String(kind.into()));
    obj.insert("metadata".into(), Value::Object(meta));
    if !data_map.is_empty() {
        obj.insert("data".into(), Value::Object(data_map));
    }
    if !binary_map.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary_map));
    }
    if secret {
        obj.insert("type".into(), Value::String(g.type_.clone().unwrap_or_else(|| "Opaque".into())));
    }
    if opts.immutable {
        obj.insert("immutable".into(), Value::Bool(true));
    }
    Value::Object(obj)
}

/// Base64 as kustomize writes Secret data: when 70 characters or longer,
/// in lines of 70, each ending in a newline.
fn wrapped_base64(bytes: &[u8]) -> String {
    const LINE: usize = 70;
    let enc = base64::engine::general_purpose::STANDARD.encode(bytes);
    if enc.len() < LINE {
        return enc;
    }
    let mut out = String::with_capacity(enc.len() + enc.len() / LINE + 1);
    for chunk in enc.as_bytes().chunks(LINE) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn unquote(v: &str) -> &str {
    let b = v.as_bytes();
    if b.len() >= 2 && ((b[0] == b'"' && b[b.len() - 1] == b'"') || (b[0] == b'\'' && b[b.len() - 1] == b'\'')) {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Appends kustomize's content hash to generated ConfigMaps and Secrets.
pub(super) fn add_hashes(res: &mut [Res]) -> Result<(), RenderError> {
    for r in res.iter_mut().filter(|r| r.needs_hash) {
        let hash = content_hash(&r.obj);
        let n = format!("{}-{hash}", r.name());
        r.set_name(n);
        r.needs_hash = false;
    }
    Ok(())
}

/// kustomize's hash: sha256 over Go's `json.Marshal` of
/// `{kind, name: "", data[, binaryData]}` (Secrets: `type` and
/// `stringData` too), the first ten
/// hex digits with 0,1,3,a,e mapped to g,h,k,m,t (no vowels, no look-alikes).
pub fn content_hash(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let mut m: BTreeMap<&str, Value> = BTreeMap::new();
    m.insert("kind", Value::String(kind.to_string()));
    // kustomize v5 looks the name up as the single path segment
    // "metadata/name", which never matches: its hashes always encode "".
    m.insert("name", Value::String(String::new()));
    m.insert("data", obj.get("data").cloned().unwrap_or(Value::String(String::new())));
    if kind == "Secret" {
        m.insert("type", obj.get("type").cloned().unwrap_or(Value::String(String::new())));
        if let Some(s) = obj.get("stringData").filter(|s| s.is_object()) {
            m.insert("stringData", s.clone());
        }
    } else if let Some(b) = obj.get("binaryData")
        && b.is_object()
    {
        m.insert("binaryData", b.clone());
    }
    let mut enc = String::new();
    go_json(&Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()), &mut enc);
    let digest = crate::render::object::sha256_digest(enc.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    hex.chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// Go's `encoding/json` output: sorted keys, HTML-escaped strings.
fn go_json(v: &Value, out: &mut String) {
    crate::render::object::write_sorted(v, out, go_string);
}

fn go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
