//! CEL functions gitgate registers over the interpreter's own: the regex
//! functions (`matches`, `find`, `findAll`) with compiled patterns cached,
//! since compiling a pattern on every call cost more than the rest of a
//! policy evaluation together.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use kube_cel::cel::extractors::{Arguments, This};
use kube_cel::cel::objects::Value;
use kube_cel::cel::{Context, ExecutionError, ResolveResult};
use regex::Regex;

/// Patterns kept compiled; policy patterns are literals, so this bounds
/// only patterns built from request data.
const CACHE_CAP: usize = 4096;

static CACHE: LazyLock<RwLock<HashMap<String, Arc<Regex>>>> = LazyLock::new(Default::default);

pub(crate) fn compiled(function: &str, pattern: &str) -> Result<Arc<Regex>, ExecutionError> {
    if let Ok(cache) = CACHE.read()
        && let Some(re) = cache.get(pattern)
    {
        return Ok(re.clone());
    }
    let re = Arc::new(
        Regex::new(pattern).map_err(|e| ExecutionError::function_error(function, format!("invalid regex: {e}")))?,
    );
    if let Ok(mut cache) = CACHE.write()
        && cache.len() < CACHE_CAP
    {
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

/// Registers gitgate's overrides into a root context.
pub fn register(ctx: &mut Context<'_>) {
    ctx.add_function("matches", matches);
    ctx.add_function("find", find);
    ctx.add_function("findAll", find_all);
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
}
