//! The field-by-field comparison with Git's manifest: every field Git
//! sets must hold, value by value; more is fine (defaults, other
//! controllers' fields — [`super::foreign`] finds those).

use serde_json::Value;

use super::IGNORE_FIELDS_ANNOTATION;

/// The first JSON pointer where Git's manifest (its canonical JSON text)
/// sets a value that `actual` does not have. Maps: every key the manifest
/// sets, recursively (`actual` may have more: defaults, other controllers'
/// fields). Lists: same length, element by element. Numbers compare by
/// value. Streams the text against the object: nothing is built, so the
/// hot path parses no tree (a `null` in Git matches a missing field).
///
/// `skip` lists JSON pointers Git leaves to others (`gitgate.dev/ignore-fields`).
///
/// A core Secret's `stringData` is compared as the apiserver stores it:
/// folded into `data`, base64-encoded (the apiserver never returns
/// `stringData`, so comparing it as written would find every such Secret
/// changed). Sealed Secrets skip both fields and are not folded.
pub fn first_difference(desired: &str, actual: &Value, skip: &[String]) -> Result<Option<String>, serde_json::Error> {
    if actual.get("kind").and_then(Value::as_str) == Some("Secret")
        && actual.get("stringData").is_none()
        && !skip.iter().any(|p| p == "/stringData")
        && desired.contains("\"stringData\"")
        && let Some(folded) = fold_string_data(desired)
    {
        return compare(&folded, actual, skip);
    }
    compare(desired, actual, skip)
}

/// A v1 Secret manifest with its `stringData` folded into `data`
/// (`stringData` wins, as in the apiserver); `None` when there is nothing
/// to fold or the text is not such a Secret.
fn fold_string_data(desired: &str) -> Option<String> {
    use base64::Engine as _;
    let mut doc: Value = serde_json::from_str(desired).ok()?;
    if doc.get("apiVersion").and_then(Value::as_str) != Some("v1")
        || doc.get("kind").and_then(Value::as_str) != Some("Secret")
    {
        return None;
    }
    let obj = doc.as_object_mut()?;
    let Some(Value::Object(strings)) = obj.remove("stringData") else { return None };
    let data = obj.entry("data").or_insert_with(|| Value::Object(Default::default())).as_object_mut()?;
    for (k, v) in strings {
        let s = v.as_str()?;
        data.insert(k, Value::String(base64::engine::general_purpose::STANDARD.encode(s.as_bytes())));
    }
    serde_json::to_string(&doc).ok()
}

fn compare(desired: &str, actual: &Value, skip: &[String]) -> Result<Option<String>, serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut path = String::new();
    let mut de = serde_json::Deserializer::from_str(desired);
    let diff = Compare { actual: Some(actual), path: &mut path, skip }.deserialize(&mut de)?;
    de.end()?;
    Ok(diff)
}

/// The JSON pointers a manifest leaves to other controllers: its
/// `gitgate.dev/ignore-fields` annotation, a JSON list or comma-separated
/// pointers. Cheap for the common manifest without it.
pub fn ignored_fields(manifest: &str) -> Vec<String> {
    if !manifest.contains(IGNORE_FIELDS_ANNOTATION) {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_str::<Value>(manifest) else { return Vec::new() };
    let Some(raw) = v.pointer("/metadata/annotations").and_then(|a| a.get(IGNORE_FIELDS_ANNOTATION)) else {
        return Vec::new();
    };
    parse_ignore_fields(raw.as_str().unwrap_or_default())
}

/// Parses an ignore-fields value: `["/spec/replicas"]` or `/spec/replicas, /data/x`.
pub fn parse_ignore_fields(raw: &str) -> Vec<String> {
    let raw = raw.trim();
    let list: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str(raw).unwrap_or_default()
    } else {
        raw.split([',', '\n']).map(|p| p.trim().to_string()).collect()
    };
    list.into_iter().filter(|p| p.starts_with('/') && p.len() > 1).collect()
}

struct Compare<'p> {
    actual: Option<&'p Value>,
    path: &'p mut String,
    skip: &'p [String],
}

impl Compare<'_> {
    fn here(&self) -> String {
        if self.path.is_empty() { "/".into() } else { self.path.clone() }
    }

    fn verdict(self, same: bool) -> Option<String> {
        (!same).then(|| self.here())
    }
}

fn push_segment(path: &mut String, segment: &str) -> usize {
    let len = path.len();
    path.push('/');
    path.push_str(&segment.replace('~', "~0").replace('/', "~1"));
    len
}

impl<'de> serde::de::DeserializeSeed<'de> for Compare<'_> {
    type Value = Option<String>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Compare<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_bool) == Some(v);
        Ok(self.verdict(same))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_f64) == Some(v as f64);
        Ok(self.verdict(same))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_f64) == Some(v as f64);
        Ok(self.verdict(same))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_f64) == Some(v);
        Ok(self.verdict(same))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        let same = self.actual.and_then(Value::as_str) == Some(v);
        Ok(self.verdict(same))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        let same = matches!(self.actual, None | Some(Value::Null));
        Ok(self.verdict(same))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::IgnoredAny;
        let Some(Value::Object(actual)) = self.actual else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Some(self.here()));
        };
        let path = self.path;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let len = push_segment(path, &key);
            if self.skip.iter().any(|p| p == path) {
                map.next_value::<IgnoredAny>()?;
                path.truncate(len);
                continue;
            }
            let diff =
                map.next_value_seed(Compare { actual: actual.get(key.as_ref()), path: &mut *path, skip: self.skip })?;
            path.truncate(len);
            if diff.is_some() {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(diff);
            }
        }
        Ok(None)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::IgnoredAny;
        let Some(Value::Array(actual)) = self.actual else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Some(self.here()));
        };
        let path = self.path;
        let mut i = 0;
        loop {
            let len = push_segment(path, &i.to_string());
            let diff = seq.next_element_seed(Compare { actual: actual.get(i), path: &mut *path, skip: self.skip })?;
            path.truncate(len);
            match diff {
                None => break,
                Some(Some(d)) => {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    return Ok(Some(d));
                }
                Some(None) => i += 1,
            }
        }
        let here = if path.is_empty() { "/".to_string() } else { path.clone() };
        Ok((i != actual.len()).then_some(here))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Regression (found by the diff e2e): a plain Secret written with
    /// `stringData` equals the live Secret, which holds it as `data`;
    /// before, it was drift on every sync and never Synced.
    #[test]
    fn a_secrets_string_data_compares_as_the_apiserver_stores_it() {
        let git = r#"{"apiVersion":"v1","data":{"a":"eA=="},"kind":"Secret","metadata":{"name":"s"},"stringData":{"password":"hunter2"}}"#;
        let live = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "eA==", "password": "aHVudGVyMg=="}});
        assert_eq!(first_difference(git, &live, &[]).unwrap(), None);
        let changed = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "eA==", "password": "b3RoZXI="}});
        assert_eq!(first_difference(git, &changed, &[]).unwrap().as_deref(), Some("/data/password"));
        // Sealed Secrets skip both fields: nothing is folded.
        let sealed = ["/data".to_string(), "/stringData".to_string()];
        assert_eq!(first_difference(git, &changed, &sealed).unwrap(), None);
    }

    /// The streaming comparison, fed the manifest as canonical JSON text.
    fn diff(desired: &Value, actual: &Value, _: &mut String) -> Option<String> {
        first_difference(&desired.to_string(), actual, &[]).unwrap()
    }

    #[test]
    fn fields_git_sets_must_match_and_more_is_fine() {
        let desired =
            json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        let defaulted = json!({"spec": {"replicas": 3.0, "strategy": {}, "template": {"spec": {"containers": [{"name": "a", "image": "x:1", "imagePullPolicy": "IfNotPresent"}]}}}});
        assert_eq!(diff(&desired, &defaulted, &mut String::new()), None);
        let edited =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}}});
        assert_eq!(diff(&desired, &edited, &mut String::new()).as_deref(), Some("/spec/replicas"));
        let added = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y"}]}}}});
        assert_eq!(diff(&desired, &added, &mut String::new()).as_deref(), Some("/spec/template/spec/containers"));
        let escaped = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web"}}});
        assert_eq!(
            diff(&escaped, &json!({"metadata": {"labels": {}}}), &mut String::new()).as_deref(),
            Some("/metadata/labels/app.kubernetes.io~1name")
        );
        // a null in Git matches a missing field; a wrong type or length is a difference
        assert_eq!(diff(&json!({"a": null}), &json!({}), &mut String::new()), None);
        assert_eq!(diff(&json!({"a": {"b": 1}}), &json!({"a": [1]}), &mut String::new()).as_deref(), Some("/a"));
        // Git's element missing from the object is named; extra elements in the object fail the list
        assert_eq!(diff(&json!({"a": [1, 2]}), &json!({"a": [1]}), &mut String::new()).as_deref(), Some("/a/1"));
        assert_eq!(diff(&json!({"a": [1]}), &json!({"a": [1, 2]}), &mut String::new()).as_deref(), Some("/a"));
        assert_eq!(diff(&json!({"a": "é\"x"}), &json!({"a": "é\"x"}), &mut String::new()), None);
        assert_eq!(
            diff(&json!({"a": [{"b": 1}, {"c": 2}]}), &json!({"a": [{"b": 1}, {"c": 3}]}), &mut String::new())
                .as_deref(),
            Some("/a/1/c")
        );
        assert!(first_difference("{not json", &json!({}), &[]).is_err());
        // ignore-fields: a skipped pointer never differs, its siblings still do
        let skip = vec!["/spec/replicas".to_string()];
        let d = json!({"spec": {"replicas": 3, "paused": false}}).to_string();
        assert_eq!(first_difference(&d, &json!({"spec": {"replicas": 7, "paused": false}}), &skip).unwrap(), None);
        assert_eq!(
            first_difference(&d, &json!({"spec": {"replicas": 7, "paused": true}}), &skip).unwrap().as_deref(),
            Some("/spec/paused")
        );
        assert_eq!(parse_ignore_fields("[\"/spec/replicas\"]"), vec!["/spec/replicas"]);
        assert_eq!(parse_ignore_fields("/a, /b/c ,nope"), vec!["/a", "/b/c"]);
    }
}
