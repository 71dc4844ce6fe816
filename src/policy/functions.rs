//! CEL functions gitgate registers over the interpreter's own: the regex
//! functions (`matches`, `find`, `findAll`) with compiled patterns cached,
//! since compiling a pattern on every call cost more than the rest of a
//! policy evaluation together; cel-go's `type()`, `bool()` and `dyn()`,
//! and the optional field and index selections (`x.?f`, `x[?k]`) with
//! cel-go's semantics (the interpreter's own fail on an absent field and
//! nest optionals), which [`super::lang`] rewrites them to at load.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use kube_cel::cel::extractors::{Arguments, This};
use kube_cel::cel::objects::{Key, Opaque, OptionalValue, Value};
use kube_cel::cel::{Context, ExecutionError, ResolveResult};
use regex::{Regex, RegexBuilder};

/// Longest pattern compiled: parsing is linear in the pattern, so this
/// bounds the time a request-supplied pattern can cost (a 4 MiB pattern
/// took seconds, over the webhook timeout).
pub(crate) const MAX_PATTERN_BYTES: usize = 64 * 1024;
/// Largest compiled program (the regex crate's default is 10 MiB).
const COMPILED_LIMIT: usize = 1024 * 1024;
/// Patterns kept compiled: policy patterns are literals and short; a
/// pattern built from request data is cached only when short too, and a
/// full cache starts over (so request-supplied patterns can cost recompiles,
/// never unbounded memory: at most CACHE_CAP programs of COMPILED_LIMIT).
const CACHE_CAP: usize = 256;
const CACHED_PATTERN_BYTES: usize = 512;

static CACHE: LazyLock<RwLock<HashMap<String, Arc<Regex>>>> = LazyLock::new(Default::default);

pub(crate) fn compiled(function: &str, pattern: &str) -> Result<Arc<Regex>, ExecutionError> {
    if let Ok(cache) = CACHE.read()
        && let Some(re) = cache.get(pattern)
    {
        return Ok(re.clone());
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(ExecutionError::function_error(
            function,
            format!("invalid regex: the pattern is {} bytes, more than {MAX_PATTERN_BYTES}", pattern.len()),
        ));
    }
    let re = Arc::new(
        RegexBuilder::new(pattern)
            .size_limit(COMPILED_LIMIT)
            .build()
            .map_err(|e| ExecutionError::function_error(function, format!("invalid regex: {e}")))?,
    );
    if pattern.len() <= CACHED_PATTERN_BYTES
        && let Ok(mut cache) = CACHE.write()
    {
        if cache.len() >= CACHE_CAP {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), re.clone());
    }
    Ok(re)
}

fn matches(This(this): This<Arc<String>>, pattern: Arc<String>) -> ResolveResult {
    Ok(Value::Bool(compiled("matches", &pattern)?.is_match(&this)))
}

fn find(This(this): This<Arc<String>>, pattern: Arc<String>) -> ResolveResult {
    let re = compiled("find", &pattern)?;
    Ok(Value::String(Arc::new(re.find(&this).map(|m| m.as_str().to_owned()).unwrap_or_default())))
}

fn find_all(This(this): This<Arc<String>>, Arguments(args): Arguments) -> ResolveResult {
    let Some(Value::String(pattern)) = args.first() else {
        return Err(ExecutionError::function_error("findAll", "expected a string pattern"));
    };
    let re = compiled("findAll", pattern)?;
    let limit = match args.get(1) {
        Some(Value::Int(n)) if *n >= 0 => usize::try_from(*n).unwrap_or(usize::MAX),
        _ => usize::MAX,
    };
    Ok(Value::List(Arc::new(
        re.find_iter(&this).take(limit).map(|m| Value::String(Arc::new(m.as_str().to_owned()))).collect(),
    )))
}

/// A CEL type value: what `type(x)` returns and what the identifiers
/// `int`, `string`, `map`, … denote.
#[derive(Debug, PartialEq, Eq)]
pub struct CelType(pub &'static str);

impl Opaque for CelType {
    fn runtime_type_name(&self) -> &str {
        "type"
    }
}

/// The type names an expression may use as values, as cel-go declares
/// them (`type(x) == string`).
pub const TYPE_NAMES: &[&str] =
    &["bool", "int", "uint", "double", "string", "bytes", "list", "map", "null_type", "type"];

/// The name of `v`'s CEL type.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Null => "null_type",
        Value::Duration(_) => "google.protobuf.Duration",
        Value::Timestamp(_) => "google.protobuf.Timestamp",
        Value::Opaque(o) => match o.runtime_type_name() {
            "optional_type" => "optional_type",
            "type" => "type",
            "kubernetes.Quantity" => "kubernetes.Quantity",
            "kubernetes.URL" => "kubernetes.URL",
            "kubernetes.Semver" => "kubernetes.Semver",
            "kubernetes.Format" => "kubernetes.NamedFormat",
            "net.IP" => "net.IP",
            "net.CIDR" => "net.CIDR",
            _ => "opaque",
        },
    }
}

fn type_of(v: Value) -> ResolveResult {
    Ok(Value::Opaque(Arc::new(CelType(type_name(&v)))))
}

/// `bool(x)`: a bool, or a string as Go's `strconv.ParseBool` reads it
/// (cel-go's conversion).
fn to_bool(v: Value) -> ResolveResult {
    match v {
        Value::Bool(b) => Ok(Value::Bool(b)),
        Value::String(s) => match s.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Value::Bool(false)),
            other => Err(ExecutionError::function_error(
                "bool",
                format!("type conversion error from 'string' to 'bool': {other:?}"),
            )),
        },
        other => Err(ExecutionError::function_error(
            "bool",
            format!("type conversion error from '{}' to 'bool'", type_name(&other)),
        )),
    }
}

thread_local! {
    /// The interpreter's and Kubernetes' libraries alone, and `string(x)`:
    /// what [`to_string`] hands every value but a bool to.
    static BASE_STRING: (Context<'static>, Option<kube_cel::cel::IdedExpr>) = {
        use kube_cel::KubeCelExt as _;
        (Context::default().with_all(), kube_cel::cel::parser::Parser::new().parse("string(x)").ok())
    };
}

/// `string(x)`: cel-go's conversion, which also takes a bool; every other
/// value goes to the libraries' own `string` (numbers, bytes, IPs, CIDRs, …).
fn to_string(v: Value) -> ResolveResult {
    match v {
        Value::Bool(b) => Ok(Value::String(Arc::new(b.to_string()))),
        other => BASE_STRING.with(|(base, expr)| {
            let expr = expr.as_ref().ok_or_else(|| ExecutionError::function_error("string", "unavailable"))?;
            let mut ctx = base.new_inner_scope();
            ctx.add_variable_from_value("x", other);
            Value::resolve(expr, &ctx)
        }),
    }
}

fn dyn_(v: Value) -> ResolveResult {
    Ok(v)
}

fn none() -> Value {
    Value::Opaque(Arc::new(OptionalValue::none()))
}

fn some(v: Value) -> Value {
    Value::Opaque(Arc::new(OptionalValue::of(v)))
}

/// An optional's content: `Ok(None)` for a value that is not an optional,
/// `Ok(Some(None))` for `optional.none()`.
fn optional_content(v: &Value) -> Option<Option<&Value>> {
    match v {
        Value::Opaque(o) => o.downcast_ref::<OptionalValue>().map(OptionalValue::value),
        _ => None,
    }
}

/// Name of the function `x.?f` is rewritten to.
pub const OPT_SELECT: &str = "@gitgate.optSelect";
/// Name of the function `x[?k]` is rewritten to.
pub const OPT_INDEX: &str = "@gitgate.optIndex";
/// Names of the functions `==` and `!=` on optionals are rewritten to.
pub const OPT_EQUALS: &str = "@gitgate.optEquals";
pub const OPT_NOT_EQUALS: &str = "@gitgate.optNotEquals";

/// `x.?f`: `optional.of(x.f)` when the map `x` has the field, else
/// `optional.none()`; on an optional, the same on its value (none stays
/// none).
fn opt_select(operand: Value, field: Arc<String>) -> ResolveResult {
    let inner = match optional_content(&operand) {
        Some(None) => return Ok(none()),
        Some(Some(v)) => v,
        None => &operand,
    };
    match inner {
        Value::Map(m) => Ok(m.map.get(&Key::String(field)).cloned().map_or_else(none, some)),
        other => Err(ExecutionError::function_error(
            "_?._",
            format!("no such overload: optional field selection on {}", type_name(other)),
        )),
    }
}

/// `x[?k]`: `optional.of(x[k])` when the map has the key or the list the
/// index, else `optional.none()`; on an optional, the same on its value.
fn opt_index(container: Value, key: Value) -> ResolveResult {
    let inner = match optional_content(&container) {
        Some(None) => return Ok(none()),
        Some(Some(v)) => v,
        None => &container,
    };
    match (inner, &key) {
        (Value::Map(m), _) => {
            let k = match &key {
                Value::String(s) => Key::String(s.clone()),
                Value::Int(i) => Key::Int(*i),
                Value::UInt(u) => Key::Uint(*u),
                Value::Bool(b) => Key::Bool(*b),
                other => {
                    return Err(ExecutionError::function_error(
                        "_[?_]",
                        format!("unsupported key type {}", type_name(other)),
                    ));
                }
            };
            Ok(m.map.get(&k).cloned().map_or_else(none, some))
        }
        (Value::List(l), Value::Int(_) | Value::UInt(_)) => {
            let i = match key {
                Value::Int(i) => usize::try_from(i).ok(),
                Value::UInt(u) => usize::try_from(u).ok(),
                _ => None,
            };
            Ok(i.and_then(|i| l.get(i)).cloned().map_or_else(none, some))
        }
        (other, _) => Err(ExecutionError::function_error(
            "_[?_]",
            format!("no such overload: optional index on {} with {}", type_name(other), type_name(&key)),
        )),
    }
}

fn opt_equals(a: Value, b: Value) -> bool {
    a == b
}

fn opt_not_equals(a: Value, b: Value) -> bool {
    a != b
}

/// Registers gitgate's functions and overrides into a root context, and
/// the type names as values.
pub fn register(ctx: &mut Context<'_>) {
    ctx.add_function("matches", matches);
    ctx.add_function("find", find);
    ctx.add_function("findAll", find_all);
    ctx.add_function("type", type_of);
    ctx.add_function("bool", to_bool);
    ctx.add_function("string", to_string);
    ctx.add_function("dyn", dyn_);
    ctx.add_function(OPT_SELECT, opt_select);
    ctx.add_function(OPT_INDEX, opt_index);
    ctx.add_function(OPT_EQUALS, opt_equals);
    ctx.add_function(OPT_NOT_EQUALS, opt_not_equals);
    for name in TYPE_NAMES {
        ctx.add_variable_from_value(*name, Value::Opaque(Arc::new(CelType(name))));
    }
    let protobuf = HashMap::from([
        (Key::String(Arc::new("Duration".into())), Value::Opaque(Arc::new(CelType("google.protobuf.Duration")))),
        (Key::String(Arc::new("Timestamp".into())), Value::Opaque(Arc::new(CelType("google.protobuf.Timestamp")))),
    ]);
    let protobuf = Value::Map(kube_cel::cel::objects::Map { map: Arc::new(protobuf) });
    let google = HashMap::from([(Key::String(Arc::new("protobuf".into())), protobuf)]);
    ctx.add_variable_from_value("google", Value::Map(kube_cel::cel::objects::Map { map: Arc::new(google) }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_cel::KubeCelExt as _;
    use kube_cel::cel::Program;

    fn eval(src: &str) -> Value {
        let mut ctx = Context::default().with_all();
        register(&mut ctx);
        Program::compile(src).unwrap().execute(&ctx).unwrap()
    }

    #[test]
    fn regex_functions_behave_as_kubernetes_cel() {
        assert_eq!(eval("'nginx:1.2'.matches(':[^/:]+$')"), Value::Bool(true));
        assert_eq!(eval("'registry:5000/app'.matches(':[^/:]+$')"), Value::Bool(false));
        assert_eq!(eval("'abc123def'.find('[0-9]+')"), Value::String(Arc::new("123".into())));
        assert_eq!(eval("'a1b2c3'.findAll('[0-9]')"), eval("['1', '2', '3']"));
        assert_eq!(eval("'a1b2c3'.findAll('[0-9]', 2)"), eval("['1', '2']"));
        let mut ctx = Context::default().with_all();
        register(&mut ctx);
        let err = Program::compile("'x'.matches('(')").unwrap().execute(&ctx).unwrap_err();
        assert!(err.to_string().contains("invalid regex"), "{err}");
    }

    /// Regex DoS (Go regexp CVE-2022-41715 class, patterns from request
    /// data): a pattern over the length limit is refused before it is
    /// parsed, and request-supplied patterns never grow the cache past its
    /// bound (a long one is not kept at all).
    #[test]
    fn request_supplied_patterns_are_bounded_in_length_and_in_the_cache() {
        let long = "a".repeat(MAX_PATTERN_BYTES + 1);
        let err = compiled("matches", &long).expect_err("refused");
        assert!(err.to_string().contains("more than 65536"), "{err}");
        let kept = |p: &str| CACHE.read().unwrap().contains_key(p);
        let medium = format!("^{}$", "b".repeat(CACHED_PATTERN_BYTES));
        compiled("matches", &medium).unwrap();
        assert!(!kept(&medium), "a long pattern is compiled for the call, not kept");
        for i in 0..(3 * CACHE_CAP) {
            compiled("matches", &format!("^made-up-{i}$")).unwrap();
            assert!(CACHE.read().unwrap().len() <= CACHE_CAP);
        }
    }
}
