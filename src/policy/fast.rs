//! A borrowing evaluator for the common shapes of policy expressions.
//!
//! cel 0.13 copies a map or list whenever it is selected from, becomes a
//! function's receiver or a comprehension item, and every request's
//! `object` must first be converted into its value tree. Typical policies
//! (field selections, `has()`, comparisons, `all`/`exists`/`filter`/`map`,
//! `startsWith`, `matches`, `size`, `join`) need none of that: this module
//! evaluates them straight over the request's `serde_json::Value`,
//! borrowing every node.
//!
//! It answers only where its answer is the interpreter's: an expression
//! with a construct it does not know is never tried ([`supported`], at
//! load), and at run time any error, or any case whose semantics it does
//! not reproduce exactly (mixed numeric comparisons, a selection on a
//! non-map, …), gives [`Bail`], and the caller evaluates the expression
//! with the interpreter instead — so errors and their messages are always
//! cel's own.

use std::cmp::Ordering;
use std::rc::Rc;

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{CallExpr, ComprehensionExpr, Expr, LiteralValue, operators};
use kube_cel::cel::objects::{Key, Map, OptionalValue, Value};
use serde_json::Value as Json;

use super::cost::Sizes;
use super::functions::{CelType, OPT_EQUALS, OPT_INDEX, OPT_NOT_EQUALS, OPT_SELECT, TYPE_NAMES};
use super::value::to_cel;

/// The request's variables, borrowed.
pub(crate) struct Vars<'a> {
    pub object: Option<&'a Json>,
    pub old_object: Option<&'a Json>,
    pub namespace: Option<&'a Json>,
    pub request: &'a Json,
    pub git: &'a Json,
}

/// This evaluator cannot give the interpreter's answer: ask the
/// interpreter.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Bail;

type R<T> = Result<T, Bail>;

/// A CEL value over borrowed JSON.
#[derive(Clone, Debug)]
enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(&'a str),
    OwnedStr(Rc<str>),
    /// A JSON array of the request.
    Arr(&'a [Json]),
    /// A list built by the expression.
    List(Rc<Vec<V<'a>>>),
    /// A JSON object of the request.
    Obj(&'a serde_json::Map<String, Json>),
    /// The literal `{}`.
    EmptyMap,
    /// An optional (`x.?f`, `optional.of(x)`, `optional.none()`).
    Opt(Option<Rc<V<'a>>>),
    /// A type value (`type(x)`, `int`, `string`, …).
    Type(&'static str),
}

impl<'a> V<'a> {
    /// JSON → value, integers as `int` first, as [`to_cel`].
    fn from_json(v: &'a Json) -> V<'a> {
        match v {
            Json::Null => V::Null,
            Json::Bool(b) => V::Bool(*b),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    V::Int(i)
                } else if let Some(u) = n.as_u64() {
                    V::UInt(u)
                } else {
                    V::Double(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Json::String(s) => V::Str(s),
            Json::Array(a) => V::Arr(a),
            Json::Object(m) => V::Obj(m),
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            V::OwnedStr(s) => Some(s),
            _ => None,
        }
    }

    fn is_list(&self) -> bool {
        matches!(self, V::Arr(_) | V::List(_))
    }

    fn list_len(&self) -> Option<usize> {
        match self {
            V::Arr(a) => Some(a.len()),
            V::List(l) => Some(l.len()),
            _ => None,
        }
    }

    fn list_get(&self, i: usize) -> Option<V<'a>> {
        match self {
            V::Arr(a) => a.get(i).map(V::from_json),
            V::List(l) => l.get(i).cloned(),
            _ => None,
        }
    }

    /// The interpreter's value.
    fn into_value(self) -> Value {
        match self {
            V::Null => Value::Null,
            V::Bool(b) => Value::Bool(b),
            V::Int(i) => Value::Int(i),
            V::UInt(u) => Value::UInt(u),
            V::Double(d) => Value::Float(d),
            V::Str(s) => Value::String(std::sync::Arc::new(s.to_owned())),
            V::OwnedStr(s) => Value::String(std::sync::Arc::new(s.to_string())),
            V::Arr(a) => Value::List(std::sync::Arc::new(a.iter().map(|j| to_cel(j, &mut Sizes::default())).collect())),
            V::List(l) => Value::List(std::sync::Arc::new(l.iter().cloned().map(V::into_value).collect())),
            V::Obj(m) => to_cel(&Json::Object(m.clone()), &mut Sizes::default()),
            V::EmptyMap => Value::Map(Map { map: std::sync::Arc::new(std::collections::HashMap::<Key, Value>::new()) }),
            V::Opt(o) => Value::Opaque(std::sync::Arc::new(match o {
                Some(v) => OptionalValue::of(Rc::unwrap_or_clone(v).into_value()),
                None => OptionalValue::none(),
            })),
            V::Type(name) => Value::Opaque(std::sync::Arc::new(CelType(name))),
        }
    }

    /// The name of the value's CEL type, as [`super::functions::type_name`].
    fn type_name(&self) -> &'static str {
        match self {
            V::Null => "null_type",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::UInt(_) => "uint",
            V::Double(_) => "double",
            V::Str(_) | V::OwnedStr(_) => "string",
            V::Arr(_) | V::List(_) => "list",
            V::Obj(_) | V::EmptyMap => "map",
            V::Opt(_) => "optional_type",
            V::Type(_) => "type",
        }
    }
}

/// Namespaces of qualified functions (`sets.contains`): a call on an
/// identifier of these names may not be the method it looks like.
const NAMESPACES: &[&str] =
    &["sets", "math", "strings", "lists", "ip", "format", "jsonpatch", "base64", "optional", "cel", "url", "semver"];

/// Whether every node of `e` is a construct this evaluator knows. Checked
/// once, at load.
pub(crate) fn supported(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Literal(l) => !matches!(l, LiteralValue::Bytes(_)),
        Expr::Ident(_) => true,
        Expr::Select(s) => supported(&s.operand),
        Expr::List(l) => l.optional_indices.is_empty() && l.elements.iter().all(supported),
        Expr::Map(m) => m.entries.is_empty(),
        Expr::Comprehension(c) => {
            c.iter_var2.is_none()
                && [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result].into_iter().all(supported)
        }
        Expr::Call(call) => call_supported(call),
        Expr::Struct(_) | Expr::Unspecified => false,
    }
}

fn call_supported(call: &CallExpr) -> bool {
    let n = call.args.len();
    let shape = match (call.func_name.as_str(), &call.target) {
        (operators::CONDITIONAL, None) => n == 3,
        (
            operators::LOGICAL_AND
            | operators::LOGICAL_OR
            | operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
            | operators::IN
            | operators::ADD
            | operators::INDEX,
            None,
        ) => n == 2,
        (operators::LOGICAL_NOT | operators::NOT_STRICTLY_FALSE, None) => n == 1,
        ("size", None) => n == 1,
        ("size", Some(_)) => n == 0,
        ("startsWith" | "endsWith" | "contains" | "matches", Some(_)) => n == 1,
        ("join", Some(_)) => n <= 1,
        (OPT_SELECT | OPT_INDEX | OPT_EQUALS | OPT_NOT_EQUALS, None) => n == 2,
        ("orValue" | "or", Some(_)) => n == 1,
        ("hasValue" | "value", Some(_)) => n == 0,
        ("type", None) => n == 1,
        ("of" | "none", Some(t)) if matches!(&t.expr, Expr::Ident(ns) if ns == "optional") => {
            return (call.func_name == "of" && n == 1 || call.func_name == "none" && n == 0)
                && call.args.iter().all(supported);
        }
        _ => false,
    };
    let qualified =
        matches!(call.target.as_deref().map(|t| &t.expr), Some(Expr::Ident(ns)) if NAMESPACES.contains(&ns.as_str()));
    shape && !qualified && call.target.as_deref().is_none_or(supported) && call.args.iter().all(supported)
}

/// Evaluates a [`supported`] expression: the interpreter's value, or
/// [`Bail`].
pub(crate) fn eval(e: &IdedExpr, vars: &Vars<'_>) -> R<Value> {
    let mut env = Env { vars, locals: Vec::new() };
    env.eval(e).map(V::into_value)
}

struct Env<'v, 'a> {
    vars: &'v Vars<'a>,
    locals: Vec<(&'a str, V<'a>)>,
}

impl<'a> Env<'_, 'a> {
    fn ident(&self, name: &str) -> R<V<'a>> {
        if let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| *n == name) {
            return Ok(v.clone());
        }
        let json = |j: Option<&'a Json>| j.map_or(V::Null, V::from_json);
        Ok(match name {
            "object" => json(self.vars.object),
            "oldObject" => json(self.vars.old_object),
            "namespaceObject" => json(self.vars.namespace),
            "request" => V::from_json(self.vars.request),
            "git" => V::from_json(self.vars.git),
            "params" => V::Null,
            "variables" => V::EmptyMap,
            _ => match TYPE_NAMES.iter().find(|t| **t == name) {
                Some(t) => V::Type(t),
                None => return Err(Bail),
            },
        })
    }

    fn bool(&mut self, e: &'a IdedExpr) -> R<bool> {
        match self.eval(e)? {
            V::Bool(b) => Ok(b),
            _ => Err(Bail),
        }
    }

    fn eval(&mut self, e: &'a IdedExpr) -> R<V<'a>> {
        match &e.expr {
            Expr::Literal(l) => Ok(match l {
                LiteralValue::Boolean(b) => V::Bool(*b.inner()),
                LiteralValue::Int(i) => V::Int(*i.inner()),
                LiteralValue::UInt(u) => V::UInt(*u.inner()),
                LiteralValue::Double(d) => V::Double(*d.inner()),
                LiteralValue::String(s) => V::Str(s.inner()),
                LiteralValue::Null => V::Null,
                LiteralValue::Bytes(_) => return Err(Bail),
            }),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(sel) => match self.eval(&sel.operand)? {
                V::Obj(m) if sel.test => Ok(V::Bool(m.contains_key(&sel.field))),
                V::Obj(m) => m.get(&sel.field).map(V::from_json).ok_or(Bail),
                V::EmptyMap if sel.test => Ok(V::Bool(false)),
                V::EmptyMap => Err(Bail),
                // cel 0.13 answers `false` to any selection on a value that
                // is not a map (`has(oldObject.metadata)` on a CREATE);
                // Kubernetes would fail. Reproduced: the interpreter is the
                // reference.
                _ => Ok(V::Bool(false)),
            },
            Expr::List(l) => {
                let mut items = Vec::with_capacity(l.elements.len());
                for x in &l.elements {
                    items.push(self.eval(x)?);
                }
                Ok(V::List(Rc::new(items)))
            }
            Expr::Map(m) if m.entries.is_empty() => Ok(V::EmptyMap),
            Expr::Comprehension(c) => {
                if c.iter_var2.is_some() {
                    return Err(Bail);
                }
                let init = self.eval(&c.accu_init)?;
                let range = self.eval(&c.iter_range)?;
                let items: Vec<V<'a>> = match range {
                    V::Arr(a) => a.iter().map(V::from_json).collect(),
                    V::List(l) => l.iter().cloned().collect(),
                    V::Obj(m) => m.keys().map(|k| V::Str(k.as_str())).collect(),
                    V::EmptyMap => Vec::new(),
                    _ => return Err(Bail),
                };
                let base = self.locals.len();
                self.locals.push((c.accu_var.as_str(), init));
                let result = self.comprehension(c, base, items);
                self.locals.truncate(base);
                result
            }
            Expr::Call(call) => self.call(call),
            Expr::Map(_) | Expr::Struct(_) | Expr::Unspecified => Err(Bail),
        }
    }

    fn comprehension(&mut self, c: &'a ComprehensionExpr, accu: usize, items: Vec<V<'a>>) -> R<V<'a>> {
        let mut item_slot: Option<usize> = None;
        for item in items {
            if !self.bool(&c.loop_cond)? {
                break;
            }
            match item_slot.and_then(|i| self.locals.get_mut(i)) {
                Some(slot) => slot.1 = item,
                None => {
                    item_slot = Some(self.locals.len());
                    self.locals.push((c.iter_var.as_str(), item));
                }
            }
            let next = self.eval(&c.loop_step)?;
            self.locals.get_mut(accu).ok_or(Bail)?.1 = next;
        }
        self.eval(&c.result)
    }

    /// One function or operator call, handed to its family: logic,
    /// comparison, containers (`in`, `+`, `[]`, `size`), strings, optionals.
    fn call(&mut self, call: &'a CallExpr) -> R<V<'a>> {
        match (call.func_name.as_str(), call.target.as_deref()) {
            (
                operators::CONDITIONAL
                | operators::LOGICAL_AND
                | operators::LOGICAL_OR
                | operators::LOGICAL_NOT
                | operators::NOT_STRICTLY_FALSE,
                None,
            ) => self.logic(call),
            (
                operators::EQUALS
                | operators::NOT_EQUALS
                | operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS,
                None,
            ) => self.comparison(call),
            (operators::IN, None) => {
                let (needle, hay) = self.two_args(call)?;
                contains(&hay, &needle)
            }
            (operators::ADD, None) => {
                let (l, r) = self.two_args(call)?;
                add(l, r)
            }
            (operators::INDEX, None) => {
                let (c, k) = self.two_args(call)?;
                index(&c, &k)
            }
            ("size", target) => {
                let v = match target {
                    Some(t) => self.eval(t)?,
                    None => self.eval(call.args.first().ok_or(Bail)?)?,
                };
                size(&v)
            }
            ("startsWith" | "endsWith" | "contains" | "matches", Some(t)) => self.string_test(call, t),
            ("join", Some(t)) => self.join(t, call.args.first()),
            (OPT_SELECT | OPT_INDEX | OPT_EQUALS | OPT_NOT_EQUALS, None)
            | ("orValue" | "or" | "hasValue" | "value" | "of" | "none", Some(_)) => self.optional(call),
            ("type", None) => Ok(V::Type(self.eval(call.args.first().ok_or(Bail)?)?.type_name())),
            _ => Err(Bail),
        }
    }

    /// The call's first two arguments, evaluated in order.
    fn two_args(&mut self, call: &'a CallExpr) -> R<(V<'a>, V<'a>)> {
        let arg = |i: usize| call.args.get(i).ok_or(Bail);
        Ok((self.eval(arg(0)?)?, self.eval(arg(1)?)?))
    }

    /// `? :`, `&&`, `||`, `!` and the comprehensions' `@not_strictly_false`.
    fn logic(&mut self, call: &'a CallExpr) -> R<V<'a>> {
        let arg = |i: usize| call.args.get(i).ok_or(Bail);
        match call.func_name.as_str() {
            operators::CONDITIONAL => {
                if self.bool(arg(0)?)? {
                    self.eval(arg(1)?)
                } else {
                    self.eval(arg(2)?)
                }
            }
            operators::LOGICAL_AND => Ok(V::Bool(self.bool(arg(0)?)? && self.bool(arg(1)?)?)),
            operators::LOGICAL_OR => Ok(V::Bool(self.bool(arg(0)?)? || self.bool(arg(1)?)?)),
            operators::LOGICAL_NOT => Ok(V::Bool(!self.bool(arg(0)?)?)),
            // the interpreter: false only for a bool false; anything else
            // (another type, an error) is true. An error here is bailed on,
            // as it may be this evaluator's rather than cel's.
            operators::NOT_STRICTLY_FALSE => match self.eval(arg(0)?)? {
                V::Bool(b) => Ok(V::Bool(b)),
                _ => Ok(V::Bool(true)),
            },
            _ => Err(Bail),
        }
    }

    /// `==`, `!=`, `<`, `<=`, `>`, `>=`.
    fn comparison(&mut self, call: &'a CallExpr) -> R<V<'a>> {
        let (l, r) = self.two_args(call)?;
        Ok(V::Bool(match call.func_name.as_str() {
            operators::EQUALS => equals(&l, &r)?,
            operators::NOT_EQUALS => !equals(&l, &r)?,
            operators::LESS => compare(&l, &r)? == Ordering::Less,
            operators::LESS_EQUALS => compare(&l, &r)? != Ordering::Greater,
            operators::GREATER => compare(&l, &r)? == Ordering::Greater,
            operators::GREATER_EQUALS => compare(&l, &r)? != Ordering::Less,
            _ => return Err(Bail),
        }))
    }

    /// `s.startsWith(a)`, `s.endsWith(a)`, `s.contains(a)`, `s.matches(re)`.
    fn string_test(&mut self, call: &'a CallExpr, target: &'a IdedExpr) -> R<V<'a>> {
        let (this, a) = (self.eval(target)?, self.eval(call.args.first().ok_or(Bail)?)?);
        let (Some(s), Some(a)) = (this.as_str(), a.as_str()) else {
            return Err(Bail);
        };
        Ok(V::Bool(match call.func_name.as_str() {
            "startsWith" => s.starts_with(a),
            "endsWith" => s.ends_with(a),
            "contains" => s.contains(a),
            _ => super::functions::compiled("matches", a).map_err(|_| Bail)?.is_match(s),
        }))
    }

    /// `list.join()` and `list.join(sep)`.
    fn join(&mut self, target: &'a IdedExpr, sep: Option<&'a IdedExpr>) -> R<V<'a>> {
        let list = self.eval(target)?;
        let sep = match sep {
            Some(a) => match self.eval(a)? {
                v @ (V::Str(_) | V::OwnedStr(_)) => v,
                _ => return Err(Bail),
            },
            None => V::Str(""),
        };
        let sep = sep.as_str().unwrap_or_default();
        let n = list.list_len().ok_or(Bail)?;
        let mut out = String::new();
        for i in 0..n {
            let item = list.list_get(i).ok_or(Bail)?;
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(item.as_str().ok_or(Bail)?);
        }
        Ok(V::OwnedStr(out.into()))
    }

    /// `x.?f`, `x[?k]`, `==` on optionals, `orValue`, `or`, `hasValue`,
    /// `value`, `optional.of`, `optional.none`.
    fn optional(&mut self, call: &'a CallExpr) -> R<V<'a>> {
        let arg = |i: usize| call.args.get(i).ok_or(Bail);
        match (call.func_name.as_str(), call.target.as_deref()) {
            (OPT_SELECT, None) => {
                let operand = self.eval(arg(0)?)?;
                let field = self.eval(arg(1)?)?;
                opt_select(operand, field.as_str().ok_or(Bail)?)
            }
            (OPT_INDEX, None) => {
                let (container, key) = self.two_args(call)?;
                opt_index(container, key)
            }
            // the interpreter's `==` on values that may be optionals
            (OPT_EQUALS | OPT_NOT_EQUALS, None) => {
                let (l, r) = (self.eval(arg(0)?)?.into_value(), self.eval(arg(1)?)?.into_value());
                Ok(V::Bool((l == r) == (call.func_name == OPT_EQUALS)))
            }
            ("orValue", Some(t)) => {
                // the argument is evaluated either way, as the interpreter does
                let (this, other) = (self.eval(t)?, self.eval(arg(0)?)?);
                match this {
                    V::Opt(Some(v)) => Ok(Rc::unwrap_or_clone(v)),
                    V::Opt(None) => Ok(other),
                    _ => Err(Bail),
                }
            }
            ("or", Some(t)) => {
                let (this, other) = (self.eval(t)?, self.eval(arg(0)?)?);
                match (this, other) {
                    (this @ V::Opt(Some(_)), _) => Ok(this),
                    (V::Opt(None), other @ V::Opt(_)) => Ok(other),
                    _ => Err(Bail),
                }
            }
            ("hasValue", Some(t)) => match self.eval(t)? {
                V::Opt(o) => Ok(V::Bool(o.is_some())),
                _ => Err(Bail),
            },
            ("value", Some(t)) => match self.eval(t)? {
                V::Opt(Some(v)) => Ok(Rc::unwrap_or_clone(v)),
                _ => Err(Bail),
            },
            ("of", Some(_)) => Ok(V::Opt(Some(Rc::new(self.eval(arg(0)?)?)))),
            ("none", Some(_)) => Ok(V::Opt(None)),
            _ => Err(Bail),
        }
    }
}

/// `needle in hay`: an element of a list, a key of a map.
fn contains<'a>(hay: &V<'a>, needle: &V<'a>) -> R<V<'a>> {
    match hay {
        V::Arr(_) | V::List(_) => {
            let n = hay.list_len().unwrap_or(0);
            for i in 0..n {
                if equals(&hay.list_get(i).ok_or(Bail)?, needle)? {
                    return Ok(V::Bool(true));
                }
            }
            Ok(V::Bool(false))
        }
        V::Obj(m) => match needle {
            V::Str(_) | V::OwnedStr(_) => Ok(V::Bool(m.contains_key(needle.as_str().unwrap_or_default()))),
            // JSON keys are strings: an int, uint or bool key is never there
            V::Int(_) | V::UInt(_) | V::Bool(_) => Ok(V::Bool(false)),
            _ => Err(Bail),
        },
        V::EmptyMap => match needle {
            V::Str(_) | V::OwnedStr(_) | V::Int(_) | V::UInt(_) | V::Bool(_) => Ok(V::Bool(false)),
            _ => Err(Bail),
        },
        _ => Err(Bail),
    }
}

/// `l + r` on numbers of one type, strings and lists.
fn add<'a>(l: V<'a>, r: V<'a>) -> R<V<'a>> {
    match (&l, &r) {
        (V::Int(a), V::Int(b)) => a.checked_add(*b).map(V::Int).ok_or(Bail),
        (V::UInt(a), V::UInt(b)) => a.checked_add(*b).map(V::UInt).ok_or(Bail),
        (V::Double(a), V::Double(b)) => Ok(V::Double(a + b)),
        _ => {
            if let (Some(a), Some(b)) = (l.as_str(), r.as_str()) {
                let mut s = String::with_capacity(a.len() + b.len());
                s.push_str(a);
                s.push_str(b);
                return Ok(V::OwnedStr(s.into()));
            }
            if l.is_list() && r.is_list() {
                let (a, b) = (l.list_len().unwrap_or(0), r.list_len().unwrap_or(0));
                let mut out = Vec::with_capacity(a + b);
                out.extend((0..a).filter_map(|i| l.list_get(i)));
                out.extend((0..b).filter_map(|i| r.list_get(i)));
                return Ok(V::List(Rc::new(out)));
            }
            Err(Bail)
        }
    }
}

/// `c[k]`: a map's key, a list's index.
fn index<'a>(c: &V<'a>, k: &V<'a>) -> R<V<'a>> {
    match (c, k) {
        (V::Obj(m), _) => m.get(k.as_str().ok_or(Bail)?).map(V::from_json).ok_or(Bail),
        (V::Arr(_) | V::List(_), V::Int(i)) => c.list_get(usize::try_from(*i).map_err(|_| Bail)?).ok_or(Bail),
        _ => Err(Bail),
    }
}

/// `size(v)` / `v.size()` of a list, a map or a string.
fn size<'a>(v: &V<'a>) -> R<V<'a>> {
    let n = match v {
        V::Arr(a) => a.len(),
        V::List(l) => l.len(),
        V::Obj(m) => m.len(),
        V::EmptyMap => 0,
        // cel 0.13 counts bytes
        _ => v.as_str().ok_or(Bail)?.len(),
    };
    i64::try_from(n).map(V::Int).map_err(|_| Bail)
}

/// `operand.?field`.
fn opt_select<'a>(operand: V<'a>, field: &str) -> R<V<'a>> {
    match unwrap_opt(operand)? {
        None => Ok(V::Opt(None)),
        Some(V::Obj(m)) => Ok(V::Opt(m.get(field).map(|v| Rc::new(V::from_json(v))))),
        Some(V::EmptyMap) => Ok(V::Opt(None)),
        Some(_) => Err(Bail),
    }
}

/// `container[?key]`.
fn opt_index<'a>(container: V<'a>, key: V<'a>) -> R<V<'a>> {
    let Some(c) = unwrap_opt(container)? else { return Ok(V::Opt(None)) };
    match (&c, &key) {
        (V::Obj(m), _) => match &key {
            V::Str(_) | V::OwnedStr(_) => {
                Ok(V::Opt(m.get(key.as_str().unwrap_or_default()).map(|v| Rc::new(V::from_json(v)))))
            }
            // JSON keys are strings: an int, uint or bool key is never there
            V::Int(_) | V::UInt(_) | V::Bool(_) => Ok(V::Opt(None)),
            _ => Err(Bail),
        },
        (V::EmptyMap, V::Str(_) | V::OwnedStr(_) | V::Int(_) | V::UInt(_) | V::Bool(_)) => Ok(V::Opt(None)),
        (V::Arr(_) | V::List(_), V::Int(_) | V::UInt(_)) => {
            let i = match key {
                V::Int(i) => usize::try_from(i).ok(),
                V::UInt(u) => usize::try_from(u).ok(),
                _ => None,
            };
            Ok(V::Opt(i.and_then(|i| c.list_get(i)).map(Rc::new)))
        }
        _ => Err(Bail),
    }
}

/// An optional's content (`None` for `optional.none()`); a value that is
/// not an optional, as is.
fn unwrap_opt(v: V<'_>) -> R<Option<V<'_>>> {
    Ok(match v {
        V::Opt(None) => None,
        V::Opt(Some(inner)) => Some(Rc::unwrap_or_clone(inner)),
        other => Some(other),
    })
}

/// `==` as the interpreter: values of different types are unequal (`1 ==
/// 1.0` and `1 == 1u` are false in cel 0.13); lists and maps compare
/// element by element.
fn equals(a: &V<'_>, b: &V<'_>) -> R<bool> {
    Ok(match (a, b) {
        (V::Type(x), V::Type(y)) => x == y,
        (V::Type(_), _) | (_, V::Type(_)) => false,
        // an optional reached `==` through a variable: the interpreter's
        // own comparison of optionals is not reproduced
        (V::Opt(_), _) | (_, V::Opt(_)) => return Err(Bail),
        (V::Null, V::Null) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Int(x), V::Int(y)) => x == y,
        (V::UInt(x), V::UInt(y)) => x == y,
        (V::Double(x), V::Double(y)) => x == y,
        (V::Obj(x), V::Obj(y)) => {
            x.len() == y.len()
                && x.iter().try_fold(true, |acc, (k, v)| {
                    Ok::<_, Bail>(
                        acc && match y.get(k) {
                            Some(w) => equals(&V::from_json(v), &V::from_json(w))?,
                            None => false,
                        },
                    )
                })?
        }
        (V::Obj(m), V::EmptyMap) | (V::EmptyMap, V::Obj(m)) => m.is_empty(),
        (V::EmptyMap, V::EmptyMap) => true,
        _ => {
            if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
                return Ok(x == y);
            }
            if let (Some(n), Some(m)) = (a.list_len(), b.list_len()) {
                if n != m {
                    return Ok(false);
                }
                for i in 0..n {
                    if !equals(&a.list_get(i).ok_or(Bail)?, &b.list_get(i).ok_or(Bail)?)? {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            false
        }
    })
}

/// `<` and friends on same-typed scalars; anything else is left to the
/// interpreter.
fn compare(a: &V<'_>, b: &V<'_>) -> R<Ordering> {
    match (a, b) {
        (V::Int(x), V::Int(y)) => Ok(x.cmp(y)),
        (V::UInt(x), V::UInt(y)) => Ok(x.cmp(y)),
        (V::Double(x), V::Double(y)) => x.partial_cmp(y).ok_or(Bail),
        (V::Bool(x), V::Bool(y)) => Ok(x.cmp(y)),
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => Ok(x.cmp(y)),
            _ => Err(Bail),
        },
    }
}

#[cfg(test)]
mod tests {
    //! The interpreter is the oracle: wherever the fast path answers, its
    //! answer must be the interpreter's.
    use std::path::PathBuf;
    use std::sync::Arc;

    use kube_cel::cel::{Context, Program};
    use serde_json::json;

    use super::*;
    use crate::policy::{GitVars, PolicySet, RequestScope, root_context};

    fn fixture_request(name: &str) -> crate::admission::AdmissionRequest {
        let dir = std::env::var_os("GITGATE_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission"));
        let review: Json = serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        serde_json::from_value(review["request"].clone()).unwrap()
    }

    /// Evaluates `src` both ways over the scope's variables; returns the
    /// fast path's answer (`None` when it bailed) after checking it
    /// against the interpreter's.
    fn both(src: &str, scope: &RequestScope<'_>) -> Option<Value> {
        let program = Program::compile(src).unwrap();
        let ast = program.expression();
        assert!(supported(ast), "{src} should be supported");
        let cel = Value::resolve(ast, scope.cel());
        let fast = eval(ast, &scope.fast_vars()).ok();
        if let Some(v) = &fast {
            assert_eq!(cel.as_ref().ok(), Some(v), "{src}: fast {v:?}, interpreter {cel:?}");
        }
        fast
    }

    fn with_scope(object: Json, old: Option<Json>, f: impl FnOnce(&RequestScope<'_>)) {
        let root: Context<'static> = root_context();
        let mut req = fixture_request("validate-create-deployment.json");
        req.object = Some(object);
        req.old_object = old;
        let git = GitVars { commit: "3f2a9c1".into(), managed: true, ..GitVars::default() };
        let scope = RequestScope::new(&root, &req, None, &git, Err(crate::policy::authz::Unavailable(String::new())));
        f(&scope);
    }

    fn sample() -> Json {
        json!({
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "annotations": null},
            "spec": {
                "replicas": 3,
                "ratio": 0.75,
                "big": 18446744073709551615u64,
                "template": {"spec": {"containers": [
                    {"name": "a", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]},
                    {"name": "b", "image": "registry.example/b:latest", "securityContext": {"privileged": true}},
                ]}},
            },
        })
    }

    /// As [`both`], for expressions parsed and rewritten as the engine
    /// loads them (optional syntax).
    fn both_lang(src: &str, scope: &RequestScope<'_>) -> Option<Value> {
        let ast = crate::policy::lang::compile(src).unwrap();
        assert!(supported(&ast), "{src} should be supported");
        let cel = Value::resolve(&ast, scope.cel());
        let fast = eval(&ast, &scope.fast_vars()).ok();
        if let Some(v) = &fast {
            assert_eq!(cel.as_ref().ok(), Some(v), "{src}: fast {v:?}, interpreter {cel:?}");
        }
        fast
    }

    #[test]
    fn optional_types_and_type_take_the_fast_path_and_answer_as_the_interpreter() {
        with_scope(sample(), None, |s| {
            let t = Some(Value::Bool(true));
            let f = Some(Value::Bool(false));
            assert_eq!(both_lang("object.?spec.?replicas.orValue(1)", s), Some(Value::Int(3)));
            assert_eq!(both_lang("object.?spec.?nope.orValue(1)", s), Some(Value::Int(1)));
            assert_eq!(both_lang("object.?nope.?deeper.orValue(1)", s), Some(Value::Int(1)));
            assert_eq!(both_lang("object.metadata.?labels[?'app'].orValue('') == 'web'", s), t);
            assert_eq!(both_lang("object.metadata.?labels[?'nope'].hasValue()", s), f);
            assert_eq!(both_lang("object.metadata[?1].hasValue()", s), f);
            assert_eq!(both_lang("object.spec.template.spec.containers[?1].?name.value()", s), both_lang("'b'", s));
            assert_eq!(both_lang("object.spec.template.spec.containers[?5].hasValue()", s), f);
            assert_eq!(both_lang("object.?spec.?replicas == optional.of(3)", s), t);
            assert_eq!(both_lang("object.?spec.?nope == optional.none()", s), t);
            assert_eq!(both_lang("object.?spec.?nope.or(optional.of(2)).value()", s), Some(Value::Int(2)));
            assert_eq!(both_lang("object.?spec.?replicas", s), both_lang("optional.of(3)", s));
            assert_eq!(both_lang("type(object.spec.replicas) == int", s), t);
            assert_eq!(both_lang("type(object.metadata) == map && type(object.metadata.name) == string", s), t);
            assert_eq!(both_lang("type(object.spec.template.spec.containers) == list", s), t);
            assert_eq!(both_lang("type(object.spec.ratio) == double && type(type(1)) == type", s), t);
            assert_eq!(both_lang("type(object.metadata.annotations) == null_type", s), t);
            assert_eq!(both_lang("type(object.spec.replicas) == string", s), f);
            assert_eq!(both_lang("type(1) == 1", s), f);
            // what the fast path leaves to the interpreter: the error
            assert_eq!(both_lang("object.?nope.value()", s), None);
            assert_eq!(both_lang("object.metadata.name.?x", s), None);
        });
    }

    #[test]
    fn nested_fields_ints_doubles_and_has_answer_as_the_interpreter() {
        with_scope(sample(), None, |s| {
            let t = Some(Value::Bool(true));
            let f = Some(Value::Bool(false));
            assert_eq!(both("object.spec.replicas == 3", s), t);
            // cel 0.13: values of different numeric types are never equal
            assert_eq!(both("object.spec.replicas == 3.0", s), f);
            assert_eq!(both("object.spec.replicas == 3u", s), f);
            assert_eq!(both("object.spec.replicas <= 50", s), t);
            assert_eq!(both("object.spec.ratio > 0.5", s), t);
            assert_eq!(both("object.spec.big == 18446744073709551615u", s), t);
            assert_eq!(both("object.spec.replicas + 1 == 4", s), t);
            assert_eq!(both("object.metadata.name + '-x'", s), Some(Value::String(Arc::new("web-x".into()))));
            assert_eq!(both("has(object.metadata.labels)", s), t);
            assert_eq!(both("has(object.spec.hostNetwork)", s), f);
            assert_eq!(both("has(object.metadata.annotations)", s), t, "a null field is present");
            assert_eq!(both("object.metadata.annotations == null", s), t);
            assert_eq!(both("'app' in object.metadata.labels", s), t);
            assert_eq!(both("1 in object.metadata.labels", s), f);
            assert_eq!(both("object.metadata.labels['tier'] == 'front'", s), t);
            assert_eq!(
                both("object.spec.template.spec.containers[1].name", s),
                Some(Value::String(Arc::new("b".into())))
            );
            assert_eq!(both("size(object.spec.template.spec.containers) == 2", s), t);
            assert_eq!(both("object.metadata.labels.size()", s), Some(Value::Int(2)));
            assert_eq!(both("size('héllo')", s), Some(Value::Int(6)), "cel 0.13 counts bytes");
            assert_eq!(both("object.metadata.name.matches('^[a-z][a-z0-9-]{0,62}$')", s), t);
            assert_eq!(both("object != null && oldObject == null", s), t);
            // cel 0.13: a selection on null or on any non-map is `false`
            // (`oldObject` is null on CREATE)
            assert_eq!(both("has(oldObject.metadata.labels)", s), f);
            assert_eq!(both("has(oldObject.metadata) ? 1 : 2", s), Some(Value::Int(2)));
            assert_eq!(both("oldObject.metadata", s), f);
            assert_eq!(both("object.spec.replicas.foo", s), f);
            assert_eq!(both("1 in [1.0, 2u]", s), f);
            assert_eq!(both("[1, 'a'] == [1, 'a'] && {} == {}", s), t);
            assert_eq!(both("object.metadata.labels == object.metadata.labels", s), t);
            assert_eq!(both("git.managed && git.commit.startsWith('3f2a')", s), t);
            assert_eq!(both("request.userInfo.groups.exists(g, g == 'no-such-group')", s), f);
        });
    }

    #[test]
    fn comprehensions_answer_as_the_interpreter() {
        with_scope(sample(), None, |s| {
            let t = Some(Value::Bool(true));
            let f = Some(Value::Bool(false));
            let containers = "object.spec.template.spec.containers";
            assert_eq!(both(&format!("{containers}.all(c, c.image.matches(':[^/:]+$'))"), s), t);
            assert_eq!(both(&format!("{containers}.all(c, !c.image.endsWith(':latest'))"), s), f);
            assert_eq!(
                both(&format!("{containers}.all(c, !has(c.ports) || c.ports.all(p, p.containerPort > 1024))"), s),
                t
            );
            assert_eq!(both(&format!("{containers}.exists_one(c, has(c.securityContext))"), s), t);
            assert_eq!(
                both(
                    &format!(
                        "{containers}.filter(c, c.image.endsWith(':latest')).map(c, c.name + '=' + c.image).join(', ')"
                    ),
                    s
                ),
                Some(Value::String(Arc::new("b=registry.example/b:latest".into())))
            );
            assert_eq!(both(&format!("{containers}.map(c, c.name)"), s), both("['a', 'b']", s));
            assert_eq!(
                both(
                    &format!(
                        "({containers} + (has(object.spec.initContainers) ? object.spec.initContainers : [])).size()"
                    ),
                    s
                ),
                Some(Value::Int(2))
            );
            assert_eq!(both("object.metadata.labels.filter(k, k.startsWith('ti'))", s), both("['tier']", s));
            assert_eq!(both("object.metadata.labels.exists(k, object.metadata.labels[k] == 'web')", s), t);
            assert_eq!(both("[].all(x, x > 1) && ![].exists(x, x > 1)", s), t);
        });
    }

    #[test]
    fn what_the_fast_path_does_not_reproduce_is_left_to_the_interpreter() {
        with_scope(sample(), None, |s| {
            // errors: the interpreter's own error and message
            for src in [
                "object.spec.missing == 1",
                "!object.spec.paused",
                "object.spec.template.spec.containers[5].name == 'x'",
                "9223372036854775807 + 1 > 0",
                "'x'.matches('(')",
                "1 ? true : false",
                "{}.x == 1",
            ] {
                assert_eq!(both(src, s), None, "{src}");
                assert!(Value::resolve(Program::compile(src).unwrap().expression(), s.cel()).is_err(), "{src}");
            }
            // comparisons across numeric types: the interpreter's own rules
            let src = "object.spec.replicas < 2.5";
            assert_eq!(both(src, s), None);
            assert_eq!(Value::resolve(Program::compile(src).unwrap().expression(), s.cel()), Ok(Value::Bool(false)));
        });
        for src in ["math.ceil(1.5) == 2.0", "object.spec.replicas * 2 == 6", "sets.contains([1], [1])", "dyn(1) == 1"]
        {
            assert!(!supported(Program::compile(src).unwrap().expression()), "{src}");
        }
    }

    /// Every operator and function the fast path knows, over every pair of
    /// a palette of values of every JSON type: wherever the fast path
    /// answers, the interpreter answers the same.
    #[test]
    fn every_operation_over_every_pair_of_values_answers_as_the_interpreter() {
        let palette = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(3),
            json!(-2),
            json!(3.0),
            json!(2.5),
            json!(18446744073709551615u64),
            json!(""),
            json!("abc"),
            json!("a"),
            json!([]),
            json!([1, "a"]),
            json!(["a", "b"]),
            json!({}),
            json!({"a": 1}),
            json!({"x": "v", "a": [1]}),
        ];
        let templates = [
            "A == B",
            "A != B",
            "A < B",
            "A <= B",
            "A > B",
            "A >= B",
            "A in B",
            "A + B",
            "A[B]",
            "size(A)",
            "A.size()",
            "has(A.x)",
            "A.x",
            "!A",
            "A ? 1 : 2",
            "A && B",
            "A || B",
            "A.startsWith(B)",
            "A.endsWith(B)",
            "A.contains(B)",
            "A.matches(B)",
            "A.join(B)",
            "A.join()",
            "A.all(x, x == B)",
            "A.exists(x, x == B)",
            "A.exists_one(x, x != B)",
            "A.filter(x, x == B)",
            "size(A.map(x, [x, B]))",
            "[A, B] == [B, A]",
            "{} == A",
            "A + B == B + A",
        ];
        let programs: Vec<(String, Program)> = templates
            .iter()
            .map(|t| {
                let src = t.replace('A', "object.a").replace('B', "object.b");
                let program = Program::compile(&src).unwrap();
                assert!(supported(program.expression()), "{src}");
                (src, program)
            })
            .collect();
        let mut answered = 0;
        for a in &palette {
            for b in &palette {
                with_scope(json!({"a": a, "b": b}), None, |s| {
                    for (src, program) in &programs {
                        if let Ok(v) = eval(program.expression(), &s.fast_vars()) {
                            let cel = Value::resolve(program.expression(), s.cel());
                            assert_eq!(cel.as_ref().ok(), Some(&v), "{src} with a = {a}, b = {b}: interpreter {cel:?}");
                            answered += 1;
                        }
                    }
                });
            }
        }
        assert!(answered > 3000, "{answered}");
    }

    /// The built-in policies never need the interpreter on the captured
    /// requests they match (a CREATE with `oldObject` null, a kubectl edit,
    /// a namespace DELETE with `object` null), and answer as it does.
    #[test]
    fn the_builtin_policies_take_the_fast_path() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
        let set = PolicySet::load(&[dir]).unwrap();
        let mut checked = std::collections::BTreeSet::new();
        for fixture in [
            "validate-create-deployment.json",
            "validate-update-deployment-kubectl-edit-like.json",
            "validate-delete-namespace.json",
        ] {
            let req = fixture_request(fixture);
            let git = GitVars { managed: true, enforced: true, ..GitVars::default() };
            let scope =
                RequestScope::new(&set.root, &req, None, &git, Err(crate::policy::authz::Unavailable(String::new())));
            for b in set.bound.iter().filter(|b| b.policy.constraints.matches(&req, None)) {
                let p = &b.policy;
                assert!(p.inlined || p.variables.is_empty(), "{}", p.name);
                let exprs =
                    p.conditions.iter().map(|(_, e)| e).chain(
                        p.validations.iter().flat_map(|v| std::iter::once(&v.expr).chain(v.message_expr.as_ref())),
                    );
                for e in exprs {
                    assert!(e.fast, "{}: {} is not supported", p.name, e.source);
                    let cel = Value::resolve(&e.ast, scope.cel());
                    match eval(&e.ast, &scope.fast_vars()) {
                        Ok(v) => assert_eq!(cel, Ok(v), "{fixture}: {}: {}", p.name, e.source),
                        // only where cel itself fails (a deny message over
                        // a field this object lacks)
                        Err(Bail) => assert!(cel.is_err(), "{fixture}: {}: {} bailed, cel: {cel:?}", p.name, e.source),
                    }
                }
                checked.insert(p.name.clone());
            }
        }
        for name in [
            "no-latest-tag",
            "no-privileged",
            "require-resource-limits",
            "gitgate-provenance",
            "protect-enforcement-labels",
        ] {
            assert!(checked.contains(name), "{name} was not exercised: {checked:?}");
        }
    }
}
