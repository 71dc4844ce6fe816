//! Walks over CEL syntax trees: the analyses and rewrites the policy
//! engine does once, at load.

use std::collections::HashSet;

use kube_cel::cel::IdedExpr;
use kube_cel::cel::common::ast::{EntryExpr, Expr};

/// Calls `f` on every node, parents first.
pub fn visit(e: &IdedExpr, f: &mut dyn FnMut(&IdedExpr)) {
    f(e);
    match &e.expr {
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                visit(t, f);
            }
            call.args.iter().for_each(|a| visit(a, f));
        }
        Expr::Comprehension(c) => {
            for part in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                visit(part, f);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(|x| visit(x, f)),
        Expr::Map(m) => m.entries.iter().for_each(|en| {
            if let EntryExpr::MapEntry(me) = &en.expr {
                visit(&me.key, f);
                visit(&me.value, f);
            }
        }),
        Expr::Struct(st) => st.entries.iter().for_each(|en| {
            if let EntryExpr::StructField(fe) = &en.expr {
                visit(&fe.value, f);
            }
        }),
        Expr::Select(sel) => visit(&sel.operand, f),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Calls `f` on every node, parents first; a node `f` replaced (returned
/// true for) is not descended into.
pub fn rewrite(e: &mut IdedExpr, f: &mut dyn FnMut(&mut IdedExpr) -> bool) {
    if f(e) {
        return;
    }
    match &mut e.expr {
        Expr::Call(call) => {
            if let Some(t) = call.target.as_deref_mut() {
                rewrite(t, f);
            }
            call.args.iter_mut().for_each(|a| rewrite(a, f));
        }
        Expr::Comprehension(c) => {
            for part in [&mut c.iter_range, &mut c.accu_init, &mut c.loop_cond, &mut c.loop_step, &mut c.result] {
                rewrite(part, f);
            }
        }
        Expr::List(l) => l.elements.iter_mut().for_each(|x| rewrite(x, f)),
        Expr::Map(m) => m.entries.iter_mut().for_each(|en| {
            if let EntryExpr::MapEntry(me) = &mut en.expr {
                rewrite(&mut me.key, f);
                rewrite(&mut me.value, f);
            }
        }),
        Expr::Struct(st) => st.entries.iter_mut().for_each(|en| {
            if let EntryExpr::StructField(fe) = &mut en.expr {
                rewrite(&mut fe.value, f);
            }
        }),
        Expr::Select(sel) => rewrite(&mut sel.operand, f),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Every function an expression calls, with a namespace-like receiver
/// joined in (`cel.bind`, `math.ceil`).
pub fn function_names(expr: &IdedExpr) -> Vec<String> {
    let mut out = Vec::new();
    visit(expr, &mut |e| {
        if let Expr::Call(call) = &e.expr {
            match call.target.as_deref().map(|t| &t.expr) {
                Some(Expr::Ident(ns)) => out.push(format!("{ns}.{}", call.func_name)),
                _ => out.push(call.func_name.clone()),
            }
        }
    });
    out
}

/// Every identifier an expression reads.
pub fn identifiers(expr: &IdedExpr, out: &mut HashSet<String>) {
    visit(expr, &mut |e| {
        if let Expr::Ident(n) = &e.expr {
            out.insert(n.clone());
        }
    });
}

/// Every name a comprehension in the expression binds.
pub fn comprehension_variables(expr: &IdedExpr, out: &mut HashSet<String>) {
    visit(expr, &mut |e| {
        if let Expr::Comprehension(c) = &e.expr {
            out.insert(c.iter_var.clone());
            out.extend(c.iter_var2.clone());
            out.insert(c.accu_var.clone());
        }
    });
}

/// Every identifier an expression reads that none of its own
/// comprehensions binds.
pub fn free_identifiers(expr: &IdedExpr, out: &mut HashSet<String>) {
    fn walk(e: &IdedExpr, bound: &mut Vec<String>, out: &mut HashSet<String>) {
        match &e.expr {
            Expr::Ident(n) => {
                if !bound.contains(n) {
                    out.insert(n.clone());
                }
            }
            Expr::Comprehension(c) => {
                walk(&c.iter_range, bound, out);
                walk(&c.accu_init, bound, out);
                let depth = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.push(c.accu_var.clone());
                for part in [&c.loop_cond, &c.loop_step, &c.result] {
                    walk(part, bound, out);
                }
                bound.truncate(depth);
            }
            Expr::Call(call) => {
                if let Some(t) = &call.target {
                    walk(t, bound, out);
                }
                call.args.iter().for_each(|a| walk(a, bound, out));
            }
            Expr::List(l) => l.elements.iter().for_each(|x| walk(x, bound, out)),
            Expr::Map(m) => m.entries.iter().for_each(|en| {
                if let EntryExpr::MapEntry(me) = &en.expr {
                    walk(&me.key, bound, out);
                    walk(&me.value, bound, out);
                }
            }),
            Expr::Struct(st) => st.entries.iter().for_each(|en| {
                if let EntryExpr::StructField(fe) = &en.expr {
                    walk(&fe.value, bound, out);
                }
            }),
            Expr::Select(sel) => walk(&sel.operand, bound, out),
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    walk(expr, &mut Vec::new(), out);
}

/// Whether an identifier `is_name` accepts is read inside a comprehension's
/// loop (its condition or step), where it is evaluated once per item.
pub fn read_in_loop(expr: &IdedExpr, is_name: &dyn Fn(&str) -> bool) -> bool {
    let mut found = false;
    visit(expr, &mut |e| {
        if let Expr::Comprehension(c) = &e.expr {
            for part in [&c.loop_cond, &c.loop_step] {
                visit(part, &mut |x| {
                    if let Expr::Ident(n) = &x.expr
                        && is_name(n)
                    {
                        found = true;
                    }
                });
            }
        }
    });
    found
}
