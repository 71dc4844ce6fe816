//! A runtime cost bound for CEL expressions, in the spirit of the
//! apiserver's per-call limit.
//!
//! The interpreter has no cost tracking, so gitgate bounds an expression's
//! cost *before* running it: at load, each expression is reduced to a
//! polynomial in N (the largest list or map in the request) and S (the
//! longest string); at admission the polynomial is evaluated with the
//! request's real N and S. An expression whose bound is over the limit is
//! not run, and the request is decided by the policy's failurePolicy with
//! a message that says so. The bound over-approximates (every
//! comprehension is assumed to walk the largest collection), never under.

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{EntryExpr, Expr};

/// The apiserver's per-expression runtime limit (`PerCallLimit`).
pub const PER_CALL_LIMIT: u64 = 1_000_000;
/// The apiserver's runtime budget for one policy evaluation.
pub const PER_POLICY_LIMIT: u64 = 10_000_000;

/// Functions whose cost grows with the length of the strings they read.
const STRING_FUNCTIONS: &[&str] = &[
    "matches",
    "contains",
    "startsWith",
    "endsWith",
    "split",
    "replace",
    "find",
    "findAll",
    "indexOf",
    "lastIndexOf",
    "lowerAscii",
    "upperAscii",
    "trim",
    "substring",
    "format",
    "join",
    "quantity",
    "url",
    "ip",
    "cidr",
    "base64.encode",
    "base64.decode",
    "@in",
    "_==_",
    "_!=_",
    "_+_",
];

/// Coefficients by degree of N: `terms[d]` multiplies `(N + 1)^d`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Node evaluations.
    plain: Vec<u64>,
    /// String traversals (each costs S / 10).
    strings: Vec<u64>,
}

impl Cost {
    fn unit() -> Self {
        Cost { plain: vec![1], strings: Vec::new() }
    }

    fn add(&mut self, other: &Cost) {
        add_terms(&mut self.plain, &other.plain);
        add_terms(&mut self.strings, &other.strings);
    }

    fn times_n(&self) -> Cost {
        let shift = |t: &Vec<u64>| {
            if t.is_empty() { Vec::new() } else { std::iter::once(0).chain(t.iter().copied()).collect() }
        };
        Cost { plain: shift(&self.plain), strings: shift(&self.strings) }
    }

    /// The highest power of N (comprehension nesting).
    pub fn degree(&self) -> usize {
        self.plain.len().max(self.strings.len()).saturating_sub(1)
    }

    /// The bound for collections of at most `n` items and strings of at
    /// most `s` bytes.
    pub fn bound(&self, n: u64, s: u64) -> u64 {
        let eval = |terms: &[u64]| {
            let mut total: u64 = 0;
            let mut power: u64 = 1;
            for c in terms {
                total = total.saturating_add(c.saturating_mul(power));
                power = power.saturating_mul(n.saturating_add(1));
            }
            total
        };
        let strings = eval(&self.strings).saturating_mul(s / 10 + 1);
        eval(&self.plain).saturating_add(strings)
    }
}

fn add_terms(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a = a.saturating_add(*b);
    }
}

/// The cost polynomial of an expression.
pub fn analyze(expr: &IdedExpr) -> Cost {
    let mut cost = Cost::unit();
    match &expr.expr {
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                cost.add(&analyze(target));
            }
            for arg in &call.args {
                cost.add(&analyze(arg));
            }
            if STRING_FUNCTIONS.contains(&call.func_name.as_str()) {
                add_terms(&mut cost.strings, &[1]);
            }
        }
        Expr::Comprehension(c) => {
            cost.add(&analyze(&c.iter_range));
            cost.add(&analyze(&c.accu_init));
            cost.add(&analyze(&c.result));
            let mut body = analyze(&c.loop_cond);
            body.add(&analyze(&c.loop_step));
            cost.add(&body.times_n());
        }
        Expr::List(list) => {
            for e in &list.elements {
                cost.add(&analyze(e));
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(e) = &entry.expr {
                    cost.add(&analyze(&e.key));
                    cost.add(&analyze(&e.value));
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &s.entries {
                if let EntryExpr::StructField(f) = &entry.expr {
                    cost.add(&analyze(&f.value));
                }
            }
        }
        Expr::Select(sel) => cost.add(&analyze(&sel.operand)),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
    cost
}

/// The largest collection and the longest string in a JSON document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub collection: u64,
    pub string: u64,
}

impl Sizes {
    pub fn max(self, other: Sizes) -> Sizes {
        Sizes { collection: self.collection.max(other.collection), string: self.string.max(other.string) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_cel::cel::Program;

    fn cost(src: &str) -> Cost {
        analyze(Program::compile(src).unwrap().expression())
    }

    #[test]
    fn nesting_raises_the_degree() {
        assert_eq!(cost("object.spec.replicas == 3").degree(), 0);
        assert_eq!(cost("object.spec.containers.all(c, c.image != '')").degree(), 1);
        assert_eq!(cost("object.a.all(x, object.a.all(y, x == y))").degree(), 2);
        assert_eq!(cost("object.a.map(x, object.a.map(y, object.a.filter(z, z == x)))").degree(), 3);
    }

    #[test]
    fn bounds_grow_with_input_size_and_stay_below_the_limit_for_ordinary_policies() {
        let flat = cost("object.spec.containers.all(c, !c.image.endsWith(':latest'))");
        assert!(flat.bound(10, 100) < 1_000);
        assert!(flat.bound(10_000, 100) > flat.bound(10, 100));
        let quadratic = cost("object.a.all(x, object.a.all(y, x == y))");
        assert!(quadratic.bound(100, 10) < PER_CALL_LIMIT);
        assert!(quadratic.bound(10_000, 10) > PER_CALL_LIMIT, "a nested walk over 10k items is over the limit");
        assert_eq!(quadratic.bound(u64::MAX, u64::MAX), u64::MAX, "saturates instead of overflowing");
    }

    #[test]
    fn string_functions_cost_with_string_length() {
        let m = cost("object.metadata.name.matches('^a.*b$')");
        assert!(m.bound(0, 1_000_000) > m.bound(0, 10));
    }
}
