//! JSON → CEL values for the interpreter, and the sizes (largest
//! collection, longest string) the cost bound reads. A leaf: the engine
//! (`mod.rs`) and the fast path (`fast.rs`) both build on it.

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::Value;
use kube_cel::cel::objects::{Key, Map};
use serde_json::Value as Json;

use super::cost::Sizes;

/// Records the largest collection and string of `v`, as [`to_cel`] does.
pub(crate) fn measure(v: &Json, sizes: &mut Sizes) {
    match v {
        Json::String(s) => sizes.string = sizes.string.max(s.len() as u64),
        Json::Array(items) => {
            sizes.collection = sizes.collection.max(items.len() as u64);
            items.iter().for_each(|i| measure(i, sizes));
        }
        Json::Object(map) => {
            sizes.collection = sizes.collection.max(map.len() as u64);
            map.values().for_each(|i| measure(i, sizes));
        }
        Json::Null | Json::Bool(_) | Json::Number(_) => {}
    }
}

/// JSON → CEL, integers as `int` first (so `object.spec.replicas == 3`
/// holds, as in Kubernetes), map keys unescaped; records the largest
/// collection and string for the cost bound.
pub fn to_cel(v: &Json, sizes: &mut Sizes) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => {
            sizes.string = sizes.string.max(s.len() as u64);
            Value::String(Arc::new(s.clone()))
        }
        Json::Array(items) => {
            sizes.collection = sizes.collection.max(items.len() as u64);
            Value::List(Arc::new(items.iter().map(|i| to_cel(i, sizes)).collect()))
        }
        Json::Object(map) => {
            sizes.collection = sizes.collection.max(map.len() as u64);
            let map: HashMap<Key, Value> =
                map.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v, sizes))).collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}
