//! The CEL language gitgate runs: how an expression is parsed (optional
//! syntax on, as Kubernetes enables it), which functions, macros and
//! variables it may use ([`FEATURES`], checked at load so an unsupported
//! feature fails the policy instead of failing — or silently passing — at
//! admission), and the rewrites that give cel 0.13 cel-go's semantics.
//!
//! [`FEATURES`] is also the table in `policies/README.md`: `gitgate
//! policy functions` prints it by running each row's example through the
//! engine, and a test keeps the README's copy equal to that output.

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{CallExpr, EntryExpr, Expr, operators};
use kube_cel::cel::parser::Parser;
use kube_cel::cel::{Context, Value};

use super::functions::{OPT_EQUALS, OPT_INDEX, OPT_NOT_EQUALS, OPT_SELECT, TYPE_NAMES};

/// One function, macro or piece of syntax of the engine.
pub struct Feature {
    /// How a policy writes it.
    pub name: &'static str,
    /// `Some(registered name)` for a function (checked at load), `None`
    /// for syntax and macros (the parser's).
    pub function: Option<&'static str>,
    /// The CEL library it belongs to.
    pub library: &'static str,
    /// Whether Kubernetes v1.32's apiserver accepts it in a new
    /// ValidatingAdmissionPolicy (the e2e suite asks a real one).
    pub apiserver: bool,
    /// An expression over it that must evaluate to `true`.
    pub example: &'static str,
}

const fn f(name: &'static str, library: &'static str, apiserver: bool, example: &'static str) -> Feature {
    Feature { name, function: Some(name), library, apiserver, example }
}

const fn syntax(name: &'static str, library: &'static str, example: &'static str) -> Feature {
    Feature { name, function: None, library, apiserver: true, example }
}

const STD: &str = "CEL standard";
const OPT: &str = "optional types";
const STR: &str = "strings extension (v2)";
const K8S_LISTS: &str = "Kubernetes lists";
const K8S_REGEX: &str = "Kubernetes regex";
const K8S_URL: &str = "Kubernetes URLs";
const K8S_QTY: &str = "Kubernetes quantity";
const K8S_IP: &str = "Kubernetes IP/CIDR";
const K8S_FMT: &str = "Kubernetes format";
const SETS: &str = "sets extension";
const EXT_LISTS: &str = "lists extension";
const MATH: &str = "math extension";
const ENC: &str = "encoders extension";
const SEMVER: &str = "Kubernetes semver";
const AUTHZ: &str = "Kubernetes authz";

/// Every function, macro and syntax the engine supports.
pub const FEATURES: &[Feature] = &[
    syntax("has(x.f)", STD, "has(object.metadata.name) && !has(object.metadata.nope)"),
    syntax("x.all(v, p)", STD, "[1, 2].all(x, x > 0)"),
    syntax("x.exists(v, p)", STD, "[1, 2].exists(x, x == 2)"),
    syntax("x.exists_one(v, p)", STD, "[1, 2].exists_one(x, x == 2)"),
    syntax("x.map(v, e) / x.map(v, p, e)", STD, "[1, 2].map(x, x * 2) == [2, 4] && [1, 2].map(x, x > 1, x) == [2]"),
    syntax("x.filter(v, p)", STD, "[1, 2, 3].filter(x, x > 1) == [2, 3]"),
    syntax("_ ? _ : _, &&, ||, !, in", STD, "(true ? 'a' in ['a'] : false) && !(false || 'b' in {'a': 1})"),
    syntax("+ - * / %", STD, "1 + 2 * 3 - 4 / 2 % 3 == 5 && 'a' + 'b' == 'ab' && [1] + [2] == [1, 2]"),
    syntax("== != < <= > >=", STD, "1 < 2 && 2 <= 2 && 'b' > 'a' && 1.5 >= 1.5 && 1 != 2 && [1] == [1]"),
    syntax("x.?f", OPT, "object.?spec.?replicas.orValue(1) == 1 && object.metadata.?name == optional.of('web')"),
    syntax("x[?k]", OPT, "object.metadata.?labels[?'app'].orValue('') == 'web' && [1][?5] == optional.none()"),
    syntax("[?e] / {?k: e}", OPT, "[?optional.none(), ?optional.of(1)] == [1] && {?'a': optional.none()} == {}"),
    f("size", STD, true, "size('abc') == 3 && [1, 2].size() == 2 && size({'a': 1}) == 1"),
    f("contains", STD, true, "'abc'.contains('b')"),
    f("startsWith", STD, true, "'abc'.startsWith('ab')"),
    f("endsWith", STD, true, "'abc'.endsWith('bc')"),
    f("matches", STD, true, "'nginx:1.2'.matches(':[0-9.]+$') && matches('abc', '^a')"),
    f("int", STD, true, "int('5') == 5 && int(2.7) == 2 && int(3u) == 3"),
    f("uint", STD, true, "uint(5) == 5u && uint('7') == 7u"),
    f("double", STD, true, "double(1) == 1.0 && double('1.5') == 1.5"),
    f("string", STD, true, "string(1) == '1' && string(b'a') == 'a' && string(true) == 'true'"),
    f("bytes", STD, true, "bytes('a') == b'a'"),
    f("bool", STD, true, "bool('true') && !bool('f')"),
    f("dyn", STD, true, "dyn(1) == 1"),
    f("type", STD, true, "type(1) == int && type('a') == string && type(object) == map && type(int) == type"),
    f("duration", STD, true, "duration('1m') == duration('60s')"),
    f("timestamp", STD, true, "timestamp('2024-01-01T00:00:00Z') < timestamp('2024-06-01T00:00:00Z')"),
    f("getFullYear", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getFullYear() == 2024"),
    f("getMonth", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getMonth() == 2"),
    f("getDayOfYear", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getDayOfYear() == 61"),
    f("getDayOfMonth", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getDayOfMonth() == 1"),
    f("getDate", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getDate() == 2"),
    f("getDayOfWeek", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getDayOfWeek() == 6"),
    f("getHours", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getHours() == 10"),
    f("getMinutes", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getMinutes() == 20"),
    f("getSeconds", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getSeconds() == 30"),
    f("getMilliseconds", STD, true, "timestamp('2024-03-02T10:20:30.400Z').getMilliseconds() == 400"),
    f("optional.of", OPT, true, "optional.of(1).hasValue()"),
    f("optional.none", OPT, true, "!optional.none().hasValue()"),
    f(
        "optional.ofNonZeroValue",
        OPT,
        true,
        "!optional.ofNonZeroValue('').hasValue() && optional.ofNonZeroValue(1).hasValue()",
    ),
    f("hasValue", OPT, true, "object.?metadata.hasValue()"),
    f("value", OPT, true, "object.?metadata.?name.value() == 'web'"),
    f("orValue", OPT, true, "object.?spec.?nope.orValue(3) == 3"),
    f("or", OPT, true, "object.?nope.or(optional.of(2)).value() == 2"),
    f("charAt", STR, true, "'abc'.charAt(1) == 'b'"),
    f("indexOf", STR, true, "'abcb'.indexOf('b') == 1 && 'abcb'.indexOf('b', 2) == 3 && [1, 2].indexOf(2) == 1"),
    f("lastIndexOf", STR, true, "'abcb'.lastIndexOf('b') == 3 && [2, 2].lastIndexOf(2) == 1"),
    f("lowerAscii", STR, true, "'ABC'.lowerAscii() == 'abc'"),
    f("upperAscii", STR, true, "'abc'.upperAscii() == 'ABC'"),
    f("replace", STR, true, "'a-b-c'.replace('-', '.') == 'a.b.c' && 'a-b-c'.replace('-', '.', 1) == 'a.b-c'"),
    f("split", STR, true, "'a,b'.split(',') == ['a', 'b'] && 'a,b,c'.split(',', 2) == ['a', 'b,c']"),
    f("substring", STR, true, "'abc'.substring(1) == 'bc' && 'abc'.substring(0, 2) == 'ab'"),
    f("trim", STR, true, "'  a '.trim() == 'a'"),
    f("join", STR, true, "['a', 'b'].join('-') == 'a-b' && ['a', 'b'].join() == 'ab'"),
    f("format", STR, true, "'%s=%s'.format(['a', 'b']) == 'a=b' && '%d'.format([1]) == '1'"),
    f("strings.quote", STR, true, "strings.quote('a\"b') == '\"a\\\\\"b\"'"),
    f("reverse", "strings extension (v3)", false, "'abc'.reverse() == 'cba'"),
    f("isSorted", K8S_LISTS, true, "[1, 2].isSorted() && ![2, 1].isSorted()"),
    f("sum", K8S_LISTS, true, "[1, 2].sum() == 3"),
    f("min", K8S_LISTS, true, "[3, 1].min() == 1"),
    f("max", K8S_LISTS, true, "[3, 1].max() == 3"),
    f("find", K8S_REGEX, true, "'abc123'.find('[0-9]+') == '123'"),
    f("findAll", K8S_REGEX, true, "'a1b2'.findAll('[0-9]') == ['1', '2'] && 'a1b2'.findAll('[0-9]', 1) == ['1']"),
    f("url", K8S_URL, true, "url('https://example.com:8443/a?b=c').getHost() == 'example.com:8443'"),
    f("isURL", K8S_URL, true, "isURL('https://example.com') && !isURL('a b')"),
    f("getScheme", K8S_URL, true, "url('https://example.com').getScheme() == 'https'"),
    f("getHost", K8S_URL, true, "url('https://example.com/x').getHost() == 'example.com'"),
    f("getHostname", K8S_URL, true, "url('https://example.com:80').getHostname() == 'example.com'"),
    f("getPort", K8S_URL, true, "url('https://example.com:80').getPort() == '80'"),
    f("getEscapedPath", K8S_URL, true, "url('https://example.com/a%20b').getEscapedPath() == '/a%20b'"),
    f("getQuery", K8S_URL, true, "url('https://example.com/?k=v').getQuery() == {'k': ['v']}"),
    f("quantity", K8S_QTY, true, "quantity('1Gi').isGreaterThan(quantity('1Mi'))"),
    f("isQuantity", K8S_QTY, true, "isQuantity('500m') && !isQuantity('5x')"),
    f("isInteger", K8S_QTY, true, "quantity('2').isInteger() && !quantity('500m').isInteger()"),
    f("asInteger", K8S_QTY, true, "quantity('1k').asInteger() == 1000"),
    f("asApproximateFloat", K8S_QTY, true, "quantity('500m').asApproximateFloat() == 0.5"),
    f("sign", K8S_QTY, false, "quantity('-1').sign() == -1"),
    f(
        "add",
        K8S_QTY,
        true,
        "quantity('1').add(quantity('2')) == quantity('3') && quantity('1').add(2) == quantity('3')",
    ),
    f("sub", K8S_QTY, true, "quantity('3').sub(quantity('1')) == quantity('2')"),
    f("isGreaterThan", K8S_QTY, true, "quantity('2').isGreaterThan(quantity('1'))"),
    f("isLessThan", K8S_QTY, true, "quantity('1').isLessThan(quantity('2'))"),
    f("compareTo", K8S_QTY, true, "quantity('1').compareTo(quantity('2')) == -1"),
    f("ip", K8S_IP, true, "ip('10.0.0.1').family() == 4 && cidr('10.0.0.0/8').ip() == ip('10.0.0.0')"),
    f("isIP", K8S_IP, true, "isIP('::1') && !isIP('10.0.0')"),
    f("ip.isCanonical", K8S_IP, true, "ip.isCanonical('10.0.0.1') && !ip.isCanonical('2001:db8:0:0:0:0:0:1')"),
    f("family", K8S_IP, true, "ip('::1').family() == 6"),
    f("isLoopback", K8S_IP, true, "ip('127.0.0.1').isLoopback()"),
    f("isUnspecified", K8S_IP, true, "ip('0.0.0.0').isUnspecified()"),
    f("isLinkLocalMulticast", K8S_IP, true, "ip('224.0.0.1').isLinkLocalMulticast()"),
    f("isLinkLocalUnicast", K8S_IP, true, "ip('169.254.1.1').isLinkLocalUnicast()"),
    f("isGlobalUnicast", K8S_IP, true, "ip('8.8.8.8').isGlobalUnicast()"),
    f("cidr", K8S_IP, true, "cidr('10.0.0.0/8').prefixLength() == 8"),
    f("isCIDR", K8S_IP, true, "isCIDR('10.0.0.0/8') && !isCIDR('10.0.0.0')"),
    f(
        "containsIP",
        K8S_IP,
        true,
        "cidr('10.0.0.0/8').containsIP('10.1.2.3') && cidr('10.0.0.0/8').containsIP(ip('10.1.2.3'))",
    ),
    f("containsCIDR", K8S_IP, true, "cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16')"),
    f("prefixLength", K8S_IP, true, "cidr('10.0.0.0/16').prefixLength() == 16"),
    f("masked", K8S_IP, true, "cidr('10.1.2.3/8').masked() == cidr('10.0.0.0/8')"),
    f("format.dns1123Label", K8S_FMT, true, "!format.dns1123Label().validate('web').hasValue()"),
    f("format.dns1123Subdomain", K8S_FMT, true, "!format.dns1123Subdomain().validate('a.b').hasValue()"),
    f("format.dns1035Label", K8S_FMT, true, "format.dns1035Label().validate('1a').hasValue()"),
    f("format.qualifiedName", K8S_FMT, true, "!format.qualifiedName().validate('example.com/a').hasValue()"),
    f("format.dns1123LabelPrefix", K8S_FMT, true, "!format.dns1123LabelPrefix().validate('web-').hasValue()"),
    f("format.dns1123SubdomainPrefix", K8S_FMT, true, "!format.dns1123SubdomainPrefix().validate('a.b-').hasValue()"),
    f("format.dns1035LabelPrefix", K8S_FMT, true, "!format.dns1035LabelPrefix().validate('web-').hasValue()"),
    f("format.labelValue", K8S_FMT, true, "format.labelValue().validate('a b').hasValue()"),
    f("format.uri", K8S_FMT, true, "!format.uri().validate('https://example.com').hasValue()"),
    f("format.uuid", K8S_FMT, true, "!format.uuid().validate('123e4567-e89b-12d3-a456-426614174000').hasValue()"),
    f("format.byte", K8S_FMT, true, "!format.byte().validate('aGk=').hasValue()"),
    f("format.date", K8S_FMT, true, "!format.date().validate('2024-01-01').hasValue()"),
    f("format.datetime", K8S_FMT, true, "!format.datetime().validate('2024-01-01T00:00:00Z').hasValue()"),
    f("validate", K8S_FMT, true, "format.dns1123Label().validate('Web').hasValue()"),
    f("sets.contains", SETS, true, "sets.contains([1, 2], [1])"),
    f("sets.equivalent", SETS, true, "sets.equivalent([1, 2], [2, 1, 1])"),
    f("sets.intersects", SETS, true, "sets.intersects([1, 2], [2, 3])"),
    f("slice", EXT_LISTS, false, "[1, 2, 3].slice(1, 2) == [2]"),
    f("flatten", EXT_LISTS, false, "[[1], [2]].flatten() == [1, 2]"),
    f("sort", EXT_LISTS, false, "[3, 1].sort() == [1, 3]"),
    f("distinct", EXT_LISTS, false, "[1, 1, 2].distinct() == [1, 2]"),
    f("first", EXT_LISTS, false, "[1, 2].first() == optional.of(1)"),
    f("last", EXT_LISTS, false, "[1, 2].last() == optional.of(2)"),
    f("lists.range", EXT_LISTS, false, "lists.range(3) == [0, 1, 2]"),
    f("math.ceil", MATH, false, "math.ceil(1.2) == 2.0"),
    f("math.floor", MATH, false, "math.floor(1.8) == 1.0"),
    f("math.round", MATH, false, "math.round(1.5) == 2.0"),
    f("math.trunc", MATH, false, "math.trunc(-1.5) == -1.0"),
    f("math.abs", MATH, false, "math.abs(-2) == 2"),
    f("math.sign", MATH, false, "math.sign(-2) == -1"),
    f("math.isInf", MATH, false, "!math.isInf(1.0)"),
    f("math.isNaN", MATH, false, "!math.isNaN(1.0)"),
    f("math.isFinite", MATH, false, "math.isFinite(1.0)"),
    f("math.bitAnd", MATH, false, "math.bitAnd(6, 3) == 2"),
    f("math.bitOr", MATH, false, "math.bitOr(6, 3) == 7"),
    f("math.bitXor", MATH, false, "math.bitXor(6, 3) == 5"),
    f("math.bitNot", MATH, false, "math.bitNot(0) == -1"),
    f("math.bitShiftLeft", MATH, false, "math.bitShiftLeft(1, 3) == 8"),
    f("math.bitShiftRight", MATH, false, "math.bitShiftRight(8, 3) == 1"),
    f("math.sqrt", MATH, false, "math.sqrt(4.0) == 2.0"),
    f("math.greatest", MATH, false, "math.greatest(1, 3, 2) == 3"),
    f("math.least", MATH, false, "math.least(1, 3, 2) == 1"),
    f("base64.encode", ENC, false, "base64.encode(b'hi') == 'aGk='"),
    f("base64.decode", ENC, false, "base64.decode('aGk=') == b'hi'"),
    f("semver", SEMVER, false, "semver('1.2.3').isGreaterThan(semver('1.2.0'))"),
    f("isSemver", SEMVER, false, "isSemver('1.2.3') && !isSemver('1.2')"),
    f("major", SEMVER, false, "semver('1.2.3').major() == 1"),
    f("minor", SEMVER, false, "semver('1.2.3').minor() == 2"),
    f("patch", SEMVER, false, "semver('1.2.3').patch() == 3"),
    f("path", AUTHZ, true, "authorizer.path('/healthz').check('get').allowed()"),
    f("group", AUTHZ, true, "authorizer.group('').resource('secrets').check('get').allowed()"),
    f("resource", AUTHZ, true, "!authorizer.group('apps').resource('deployments').check('delete').allowed()"),
    f(
        "subresource",
        AUTHZ,
        true,
        "!authorizer.group('').resource('pods').subresource('exec').check('create').allowed()",
    ),
    f("namespace", AUTHZ, true, "authorizer.group('').resource('secrets').namespace('default').check('get').allowed()"),
    f(
        "name",
        AUTHZ,
        true,
        "authorizer.group('').resource('secrets').namespace('default').name('db').check('get').allowed()",
    ),
    f(
        "serviceAccount",
        AUTHZ,
        true,
        "!authorizer.serviceAccount('default', 'builder').group('').resource('secrets').check('get').allowed()",
    ),
    syntax("authorizer.requestResource", AUTHZ, "authorizer.requestResource.check('update').allowed()"),
    f("check", AUTHZ, true, "authorizer.path('/healthz').check('get').allowed()"),
    f("allowed", AUTHZ, true, "authorizer.path('/healthz').check('get').allowed()"),
    f("reason", AUTHZ, true, "authorizer.path('/metrics').check('get').reason() == 'denied by the example'"),
    f("errored", AUTHZ, true, "!authorizer.path('/healthz').check('get').errored()"),
    f("error", AUTHZ, true, "authorizer.path('/healthz').check('get').error() == ''"),
];

/// What the engine does not run, with what to say when a policy uses it.
pub const UNSUPPORTED: &[(&str, &str)] = &[
    ("sortBy", "a lists extension macro, not in the v1.32 apiserver either"),
    ("transformList", "a two-variable comprehension, not in a v1.32 apiserver's new policies either"),
    ("transformMap", "a two-variable comprehension, not in a v1.32 apiserver's new policies either"),
    ("transformMapEntry", "a two-variable comprehension, not in a v1.32 apiserver's new policies either"),
    ("cel.bind", "the bindings extension, not in the v1.32 apiserver either"),
    ("jsonpatch.escapeKey", "MutatingAdmissionPolicy only"),
    ("format.named", "the interpreter's returns a format or null, not Kubernetes' optional"),
];

/// The variables a policy expression may read.
const VARIABLES: &[&str] =
    &["object", "oldObject", "request", "params", "namespaceObject", "variables", "authorizer", "git", "google"];

/// Operators (the parser's function names for syntax).
const OPERATORS: &[&str] = &[
    operators::CONDITIONAL,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::NEGATE,
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::LESS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::GREATER_EQUALS,
    operators::ADD,
    operators::SUBSTRACT,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::MODULO,
    operators::INDEX,
    operators::IN,
    operators::NOT_STRICTLY_FALSE,
    operators::OPT_SELECT,
    operators::OPT_INDEX,
];

fn supported_function(name: &str) -> bool {
    FEATURES.iter().any(|f| f.function == Some(name))
}

/// Parses an expression as Kubernetes does: optional syntax enabled.
pub fn parse(source: &str) -> Result<IdedExpr, String> {
    Parser::new().enable_optional_syntax(true).parse(source).map_err(|e| e.to_string())
}

/// Refuses what the engine cannot run: a function, macro or variable it
/// does not know, or a message construction. The message names the
/// feature.
pub fn check(e: &IdedExpr) -> Result<(), String> {
    fn walk(e: &IdedExpr, bound: &mut Vec<String>) -> Result<(), String> {
        match &e.expr {
            Expr::Ident(n) => {
                if bound.contains(n) || VARIABLES.contains(&n.as_str()) || TYPE_NAMES.contains(&n.as_str()) {
                    Ok(())
                } else {
                    Err(format!("undeclared reference to {n:?}"))
                }
            }
            Expr::Literal(_) => Ok(()),
            Expr::Select(s) => walk(&s.operand, bound),
            Expr::Call(call) => {
                check_call(call, bound)?;
                let qualified = qualified_name(call, bound);
                if let Some(t) = call.target.as_deref()
                    && qualified.is_none()
                {
                    walk(t, bound)?;
                }
                call.args.iter().try_for_each(|a| walk(a, bound))
            }
            Expr::List(l) => l.elements.iter().try_for_each(|x| walk(x, bound)),
            Expr::Map(m) => m.entries.iter().try_for_each(|en| match &en.expr {
                EntryExpr::MapEntry(me) => walk(&me.key, bound).and_then(|()| walk(&me.value, bound)),
                EntryExpr::StructField(_) => Err("message construction is not supported".into()),
            }),
            Expr::Struct(s) => Err(format!("message construction ({} {{...}}) is not supported", s.type_name)),
            Expr::Comprehension(c) => {
                walk(&c.iter_range, bound)?;
                walk(&c.accu_init, bound)?;
                let depth = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.push(c.accu_var.clone());
                let r = [&c.loop_cond, &c.loop_step, &c.result].into_iter().try_for_each(|p| walk(p, bound));
                bound.truncate(depth);
                r
            }
            Expr::Unspecified => Err("an empty expression".into()),
        }
    }
    walk(e, &mut Vec::new())
}

/// `ns.f` when the call is a namespaced function the engine has
/// (`math.ceil(x)`, `optional.of(x)`), not a method on a variable.
fn qualified_name(call: &CallExpr, bound: &[String]) -> Option<String> {
    match call.target.as_deref().map(|t| &t.expr) {
        Some(Expr::Ident(ns)) if !bound.contains(ns) => {
            let name = format!("{ns}.{}", call.func_name);
            let known = supported_function(&name) || UNSUPPORTED.iter().any(|(n, _)| *n == name);
            known.then_some(name)
        }
        _ => None,
    }
}

fn check_call(call: &CallExpr, bound: &[String]) -> Result<(), String> {
    let name = call.func_name.as_str();
    if OPERATORS.contains(&name) {
        return Ok(());
    }
    let qualified = qualified_name(call, bound);
    let full = qualified.as_deref().unwrap_or(name);
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == full) {
        return Err(format!("{full} is not supported by gitgate's CEL engine ({why})"));
    }
    if matches!(name, "all" | "exists" | "exists_one" | "existsOne" | "map" | "filter") && call.target.is_some() {
        return Err(format!(
            "the {name} macro with {} arguments is not supported by gitgate's CEL engine (two-variable comprehensions are not in a v1.32 apiserver's new policies either)",
            call.args.len()
        ));
    }
    if supported_function(full) {
        return Ok(());
    }
    Err(format!("the function {full} is not supported by gitgate's CEL engine (policies/README.md lists what is)"))
}

/// Rewrites the optional selections and indexes, and `==`/`!=` on an
/// optional, to gitgate's functions with cel-go's semantics.
pub fn rewrite(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Call(call) => {
            if let Some(t) = call.target.as_deref_mut() {
                rewrite(t);
            }
            call.args.iter_mut().for_each(rewrite);
            let renamed = match call.func_name.as_str() {
                operators::OPT_SELECT => Some(OPT_SELECT),
                operators::OPT_INDEX => Some(OPT_INDEX),
                operators::EQUALS if call.args.iter().any(maybe_optional) => Some(OPT_EQUALS),
                operators::NOT_EQUALS if call.args.iter().any(maybe_optional) => Some(OPT_NOT_EQUALS),
                _ => None,
            };
            if let Some(n) = renamed {
                call.func_name = n.to_owned();
            }
        }
        Expr::Comprehension(c) => {
            for part in [&mut c.iter_range, &mut c.accu_init, &mut c.loop_cond, &mut c.loop_step, &mut c.result] {
                rewrite(part);
            }
        }
        Expr::List(l) => l.elements.iter_mut().for_each(rewrite),
        Expr::Map(m) => m.entries.iter_mut().for_each(|en| {
            if let EntryExpr::MapEntry(me) = &mut en.expr {
                rewrite(&mut me.key);
                rewrite(&mut me.value);
            }
        }),
        Expr::Select(sel) => rewrite(&mut sel.operand),
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Rewrites `authorizer.requestResource` into a call the authorizer
/// library answers (the interpreter selects no field of an opaque value).
fn rewrite_request_resource(e: &mut IdedExpr) {
    super::ast::rewrite(e, &mut |e| {
        if let Expr::Select(sel) = &e.expr
            && !sel.test
            && sel.field == "requestResource"
            && matches!(&sel.operand.expr, Expr::Ident(n) if n == "authorizer")
        {
            let target = sel.operand.clone();
            e.expr = Expr::Call(CallExpr {
                func_name: super::authz::REQUEST_RESOURCE.to_owned(),
                target: Some(target),
                args: Vec::new(),
            });
            return true;
        }
        false
    });
}

/// Whether an expression can produce an optional, by its syntax.
fn maybe_optional(e: &IdedExpr) -> bool {
    let Expr::Call(call) = &e.expr else { return false };
    match call.func_name.as_str() {
        OPT_SELECT
        | OPT_INDEX
        | operators::OPT_SELECT
        | operators::OPT_INDEX
        | "or"
        | "validate"
        | "first"
        | "last" => true,
        "of" | "none" | "ofNonZeroValue" | "named" => {
            matches!(call.target.as_deref().map(|t| &t.expr), Some(Expr::Ident(ns)) if ns == "optional" || ns == "format")
        }
        operators::CONDITIONAL => call.args.iter().skip(1).any(maybe_optional),
        _ => false,
    }
}

/// Parses, checks and rewrites an expression as the engine runs it.
pub fn compile(source: &str) -> Result<IdedExpr, String> {
    let mut ast = parse(source)?;
    check(&ast)?;
    rewrite(&mut ast);
    rewrite_request_resource(&mut ast);
    Ok(ast)
}

/// What the engine answers for one row's example.
pub fn evaluate_example(ctx: &Context<'_>, example: &str) -> Result<Value, String> {
    let ast = compile(example)?;
    Value::resolve(&ast, ctx).map_err(|e| e.to_string())
}

/// The table of [`FEATURES`] as Markdown, each row's example run through
/// the engine (`ctx` has `object` bound to [`EXAMPLE_OBJECT`]): a row
/// whose example does not hold says so.
pub fn table(ctx: &Context<'_>) -> String {
    let mut out = String::from(
        "| feature | library | v1.32 apiserver | gitgate | example (evaluated by `gitgate policy functions`) |\n| --- | --- | --- | --- | --- |\n",
    );
    for f in FEATURES {
        let ours = match evaluate_example(ctx, f.example) {
            Ok(Value::Bool(true)) => "yes".to_owned(),
            Ok(other) => format!("NO (example gave {other:?})"),
            Err(e) => format!("NO ({e})"),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | `{}` |\n",
            f.name.replace('|', "\\|"),
            f.library,
            if f.apiserver { "yes" } else { "no" },
            ours,
            f.example.replace('|', "\\|"),
        ));
    }
    for (name, why) in UNSUPPORTED {
        out.push_str(&format!("| `{name}` | | | refused at load | {why} |\n"));
    }
    out
}

/// The `object` the examples read.
pub const EXAMPLE_OBJECT: &str = r#"{"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {}}"#;

/// Which names an expression calls, for the tests.
#[cfg(test)]
fn called(e: &IdedExpr) -> std::collections::HashSet<String> {
    super::ast::function_names(e).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::root_context;

    fn ctx() -> Context<'static> {
        let mut ctx = root_context();
        let object: serde_json::Value = serde_json::from_str(EXAMPLE_OBJECT).unwrap();
        ctx.add_variable_from_value("object", crate::policy::to_cel(&object, &mut Default::default()));
        ctx.add_variable_from_value("authorizer", crate::policy::example_authorizer());
        ctx
    }

    #[test]
    fn every_feature_example_holds() {
        let ctx = ctx();
        let failing: Vec<String> = FEATURES
            .iter()
            .filter_map(|f| match evaluate_example(&ctx, f.example) {
                Ok(Value::Bool(true)) => None,
                other => Some(format!("{}: {} gave {other:?}", f.name, f.example)),
            })
            .collect();
        assert!(failing.is_empty(), "{failing:#?}");
    }

    #[test]
    fn every_function_row_is_exercised_by_its_example() {
        for f in FEATURES.iter().filter(|f| f.function.is_some()) {
            let name = f.function.unwrap_or_default();
            let ast = parse(f.example).unwrap();
            let called = called(&ast);
            let short = name.rsplit('.').next().unwrap_or(name);
            // a method on a variable is named by the variable too
            let method = |c: &String| c.strip_prefix("authorizer.") == Some(short);
            assert!(
                called.contains(name) || called.contains(short) || called.iter().any(method),
                "{name}: example {} does not call it",
                f.example
            );
        }
    }

    /// policies/README.md's table is the engine's: regenerate it with
    /// `GITGATE_REGENERATE=1 cargo test --lib policies_readme`.
    #[test]
    fn policies_readme_holds_the_generated_feature_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- functions:begin -->\n", "<!-- functions:end -->");
        let start = readme.find(begin).expect("begin marker") + begin.len();
        let stop = readme.find(end).expect("end marker");
        let generated = crate::policy::functions_table();
        if std::env::var_os("GITGATE_REGENERATE").is_some() {
            let updated = format!("{}{generated}{}", &readme[..start], &readme[stop..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        assert_eq!(
            readme[start..stop],
            generated,
            "policies/README.md's feature table differs from the engine's; regenerate it"
        );
        assert!(!generated.contains("| NO ("), "a feature's example does not hold:\n{generated}");
    }

    #[test]
    fn optional_syntax_answers_as_cel_go() {
        let ctx = ctx();
        let eval = |src: &str| evaluate_example(&ctx, src);
        // an absent field is none, not an error; chains stay flat
        assert_eq!(eval("object.?nope.orValue(1)"), Ok(Value::Int(1)));
        assert_eq!(eval("object.?spec.?replicas.orValue(1)"), Ok(Value::Int(1)));
        assert_eq!(eval("object.?nope.?deeper[?0].?x.hasValue()"), Ok(Value::Bool(false)));
        assert_eq!(eval("object.metadata.?labels[?'app'].value()"), eval("'web'"));
        assert_eq!(eval("optional.none() == optional.none()"), Ok(Value::Bool(true)));
        assert_eq!(eval("optional.of(1) != optional.of(2)"), Ok(Value::Bool(true)));
        assert!(eval("object.?nope.value()").unwrap_err().contains("optional.none() dereference"));
        assert!(eval("object.metadata.name.?x").is_err(), "an optional selection on a string is an error");
        assert_eq!(eval("[1, 2][?1]"), eval("optional.of(2)"));
        assert_eq!(eval("[1, 2][?-1]"), eval("optional.none()"));
    }

    #[test]
    fn unsupported_features_are_named_at_load() {
        for (src, named) in [
            ("[1].sortBy(x, x)", "sortBy"),
            ("cel.bind(x, 1, x)", "cel.bind"),
            ("[1].all(i, v, v > 0)", "two-variable"),
            ("object.spec.foo()", "foo"),
            ("nope == 1", "nope"),
            ("google.protobuf.Struct{}", "message construction"),
            ("jsonpatch.escapeKey('a')", "jsonpatch.escapeKey"),
        ] {
            let err = compile(src).unwrap_err();
            assert!(err.contains(named), "{src}: {err}");
        }
        // comprehension variables and type names are declared
        assert!(compile("[1].all(x, type(x) == int)").is_ok());
    }
}
