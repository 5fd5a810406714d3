//! Expression evaluation over hcl-edit's syntax tree, with unknown values (known after apply)
//! and sensitivity marks carried beside each value as attribute paths.

use std::cell::RefCell;
use std::collections::BTreeMap;

use hcl_edit::expr::{BinaryOperator, Expression, ObjectKey, TraversalOperator, UnaryOperator};
use hcl_edit::template::{Directive, Element, Template};
use kdeploy_provider::{AttrPath, Kind, PathStep, Value};

use super::functions::{self, FuncContext};
use super::{ModuleConfig, Stack};
use crate::addr::{Address, InstanceKey, ModulePath};
use crate::diag::{Diagnostic, FileId, SourceMap, Span, did_you_mean};

/// A value with the paths inside it that are sensitive (the root path marks all of it), and
/// the paths that hold a component's object, with its address: a reference such as
/// `cluster = cluster.site[each.key]` is recognised by this mark, never by the object's content.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Marked {
    pub value: Value,
    pub sensitive: Vec<AttrPath>,
    pub components: Vec<(AttrPath, Address)>,
}

impl Marked {
    pub fn plain(value: Value) -> Marked {
        Marked { value, sensitive: Vec::new(), components: Vec::new() }
    }

    pub fn secret(value: Value) -> Marked {
        Marked { value, sensitive: vec![AttrPath::root()], components: Vec::new() }
    }

    /// The object of the component at `addr`, with its sensitive paths.
    pub fn component(addr: &Address, value: Value, sensitive: Vec<AttrPath>) -> Marked {
        Marked { value, sensitive, components: vec![(AttrPath::root(), addr.clone())] }
    }

    /// This value, all of it sensitive (what it refers to is kept).
    pub fn into_secret(self) -> Marked {
        Marked { sensitive: vec![AttrPath::root()], ..self }
    }

    /// The component whose object this value is, when it is one.
    pub fn component_address(&self) -> Option<&Address> {
        self.components.iter().find(|(p, _)| p.is_root()).map(|(_, a)| a)
    }

    pub fn is_sensitive(&self) -> bool {
        !self.sensitive.is_empty()
    }

    pub fn is_wholly_sensitive(&self) -> bool {
        self.sensitive.iter().any(AttrPath::is_root)
    }

    /// The part at `step`, with the marks that apply to it.
    pub fn child(&self, step: &PathStep, value: Value) -> Marked {
        let components = self.components.iter().filter(|(p, _)| p.0.first() == Some(step)).map(|(p, a)| (AttrPath(p.0[1..].to_vec()), a.clone())).collect();
        if self.is_wholly_sensitive() {
            return Marked { components, ..Marked::secret(value) };
        }
        let sensitive = self.sensitive.iter().filter(|p| p.0.first() == Some(step)).map(|p| AttrPath(p.0[1..].to_vec())).collect();
        Marked { value, sensitive, components }
    }

    /// Marks everything if any input was sensitive (operators, functions).
    fn derived(value: Value, inputs: &[&Marked]) -> Marked {
        if inputs.iter().any(|m| m.is_sensitive()) { Marked::secret(value) } else { Marked::plain(value) }
    }
}

/// Builds a map value from marked parts, keeping each part's marks under its key.
pub fn marked_map(entries: impl IntoIterator<Item = (String, Marked)>) -> Marked {
    let mut map = BTreeMap::new();
    let mut sensitive = Vec::new();
    let mut components = Vec::new();
    for (k, m) in entries {
        let under = |p: AttrPath| AttrPath(std::iter::once(PathStep::Key(k.clone())).chain(p.0).collect());
        sensitive.extend(m.sensitive.into_iter().map(under));
        components.extend(m.components.into_iter().map(|(p, a)| (under(p), a)));
        map.insert(k, m.value);
    }
    Marked { value: Value::Map(map), sensitive, components }
}

/// Builds a list value from marked parts, keeping each part's marks under its index.
pub fn marked_list(items: Vec<Marked>) -> Marked {
    let mut list = Vec::new();
    let mut sensitive = Vec::new();
    let mut components = Vec::new();
    for (i, m) in items.into_iter().enumerate() {
        let under = |p: AttrPath| AttrPath(std::iter::once(PathStep::Index(i)).chain(p.0).collect());
        sensitive.extend(m.sensitive.into_iter().map(under));
        components.extend(m.components.into_iter().map(|(p, a)| (under(p), a)));
        list.push(m.value);
    }
    Marked { value: Value::List(list), sensitive, components }
}

/// The values of referenced components by attribute (`vault` → the Vault's attributes),
/// borrowed from the value table.
pub type Referenced<'v> = BTreeMap<String, &'v BTreeMap<String, Value>>;

/// Where component values come from: planned values during plan, applied values during apply.
pub trait Resolver {
    /// The value of the component block `kind.name` in module instance `module`: the object
    /// itself, a map by key (for_each) or a list (count). None when it is not declared.
    fn component(&self, module: &ModulePath, kind: Kind, name: &str) -> Option<Marked>;

    /// One instance of a repeated component block, `kind.name[key]`, without building the
    /// value of every instance (`cluster.site[each.key]` in a fleet of a thousand agents and a
    /// hundred sites). None when the resolver cannot tell (then the whole value is indexed,
    /// which also reports a key that is not an instance).
    fn instance(&self, _module: &ModulePath, _kind: Kind, _name: &str, _key: &Value) -> Option<Marked> {
        None
    }

    /// The address of the instance `kind.name` (no key) or `kind.name[key]` when it exists,
    /// without its value. None when the resolver cannot tell (then the reference is
    /// evaluated, which also reports what is wrong with it).
    fn instance_address(&self, _module: &ModulePath, _kind: Kind, _name: &str, _key: Option<&Value>) -> Option<Address> {
        None
    }

    /// Calls `f` with the values recorded for `addrs` (attribute → address), borrowed, those
    /// that are objects; the others are left out.
    fn with_values(&self, _addrs: &BTreeMap<String, Address>, f: &mut dyn FnMut(&Referenced<'_>)) {
        f(&BTreeMap::new());
    }
}

/// One instantiated module: which module config, called from where, with which key.
#[derive(Debug, Clone)]
pub struct ModuleInstance {
    pub module: usize,
    pub parent: Option<ModulePath>,
    pub call: Option<String>,
    pub each: Option<(Value, Marked)>,
    pub count: Option<i64>,
}

/// Everything evaluation needs that is shared by every scope of a run.
pub struct Ctx<'a> {
    pub stack: &'a Stack,
    pub sources: &'a SourceMap,
    /// Root variable values (already typed and validated).
    pub root_vars: &'a BTreeMap<String, Marked>,
    pub instances: &'a BTreeMap<ModulePath, ModuleInstance>,
    pub resolver: &'a dyn Resolver,
    /// Locals being evaluated, for cycle reports.
    evaluating: RefCell<Vec<String>>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        stack: &'a Stack,
        sources: &'a SourceMap,
        root_vars: &'a BTreeMap<String, Marked>,
        instances: &'a BTreeMap<ModulePath, ModuleInstance>,
        resolver: &'a dyn Resolver,
    ) -> Ctx<'a> {
        Ctx { stack, sources, root_vars, instances, resolver, evaluating: RefCell::new(Vec::new()) }
    }

    /// A scope in module instance `path` (with no each/count).
    pub fn scope(&'a self, path: &ModulePath) -> Scope<'a> {
        let module = self.instances.get(path).map(|i| i.module).unwrap_or(0);
        Scope { ctx: self, path: path.clone(), module, each: None, count: None, locals: Vec::new() }
    }
}

/// Evaluation scope: a module instance plus the `each`/`count` of the block being evaluated and
/// the variables bound by enclosing `for` expressions.
#[derive(Clone)]
pub struct Scope<'a> {
    pub ctx: &'a Ctx<'a>,
    pub path: ModulePath,
    pub module: usize,
    pub each: Option<(Value, Marked)>,
    pub count: Option<i64>,
    locals: Vec<(String, Marked)>,
}

type R = Result<Marked, Diagnostic>;

fn err(file: FileId, node: &impl hcl_edit::Span, summary: &str, detail: impl Into<String>) -> Diagnostic {
    Diagnostic::error(summary, detail).at(Some(Span { file, range: node.span().unwrap_or(0..0) }))
}

impl<'a> Scope<'a> {
    fn config(&self) -> &'a ModuleConfig {
        &self.ctx.stack.modules[self.module]
    }

    fn text(&self, file: FileId, node: &impl hcl_edit::Span) -> String {
        let range = node.span().unwrap_or(0..0);
        self.ctx.sources.text(file).get(range).unwrap_or("").trim().to_string()
    }

    fn unknown(&self, file: FileId, node: &impl hcl_edit::Span, inputs: &[&Marked]) -> Marked {
        Marked::derived(Value::Unknown(self.text(file, node)), inputs)
    }

    /// Evaluates an expression of file `file`.
    pub fn eval(&self, expr: &Expression, file: FileId) -> R {
        match expr {
            Expression::Null(_) => Ok(Marked::plain(Value::Null)),
            Expression::Bool(b) => Ok(Marked::plain(Value::Bool(*b.value()))),
            Expression::Number(n) => {
                let f = n.value().as_f64().unwrap_or(0.0);
                Ok(Marked::plain(Value::from_f64(f)))
            }
            Expression::String(s) => Ok(Marked::plain(Value::String(s.value().clone()))),
            Expression::Array(items) => {
                let values = items.iter().map(|e| self.eval(e, file)).collect::<Result<Vec<_>, _>>()?;
                Ok(marked_list(values))
            }
            Expression::Object(obj) => {
                let mut entries = Vec::new();
                for (k, v) in obj.iter() {
                    let key = match k {
                        ObjectKey::Ident(id) => id.as_str().to_string(),
                        ObjectKey::Expression(e) => {
                            let key = self.eval(e, file)?;
                            match key.value {
                                Value::String(s) => s,
                                Value::Number(n) => n.to_string(),
                                Value::Bool(b) => b.to_string(),
                                Value::Unknown(_) => return Ok(self.unknown(file, expr, &[&key])),
                                other => {
                                    return Err(err(file, e, "Invalid object key", format!("An object key must be a string, got {}.", other.type_name())));
                                }
                            }
                        }
                    };
                    entries.push((key, self.eval(v.expr(), file)?));
                }
                Ok(marked_map(entries))
            }
            Expression::StringTemplate(t) => self.template(t, file, expr),
            Expression::HeredocTemplate(h) => {
                let mut m = self.template(&h.template, file, expr)?;
                if let (Some(indent), Value::String(s)) = (h.indent(), &m.value) {
                    m.value = Value::String(dedent(s, indent));
                }
                Ok(m)
            }
            Expression::Parenthesis(p) => self.eval(p.inner(), file),
            Expression::Variable(v) => self.variable(v.as_str(), file, expr),
            Expression::Conditional(c) => {
                let cond = self.eval(&c.cond_expr, file)?;
                match &cond.value {
                    Value::Bool(true) => self.eval(&c.true_expr, file).map(|m| with_marks_of(m, &cond)),
                    Value::Bool(false) => self.eval(&c.false_expr, file).map(|m| with_marks_of(m, &cond)),
                    Value::Unknown(_) => Ok(self.unknown(file, expr, &[&cond])),
                    other => Err(err(file, &c.cond_expr, "Incorrect condition type", format!("The condition must be a bool, got {}.", other.type_name()))),
                }
            }
            Expression::FuncCall(call) => self.call(call, file, expr),
            Expression::Traversal(t) => self.traversal(&t.expr, &t.operators, file, expr),
            Expression::UnaryOp(op) => {
                let v = self.eval(&op.expr, file)?;
                if v.value.is_unknown() {
                    return Ok(self.unknown(file, expr, &[&v]));
                }
                let out = match (op.operator.value(), &v.value) {
                    (UnaryOperator::Neg, Value::Number(_)) => Value::from_f64(-v.value.as_f64().unwrap_or(0.0)),
                    (UnaryOperator::Not, Value::Bool(b)) => Value::Bool(!b),
                    (o, other) => {
                        return Err(err(file, &op.expr, "Invalid operand", format!("The operator {} cannot be applied to {}.", o.as_str(), other.type_name())));
                    }
                };
                Ok(Marked::derived(out, &[&v]))
            }
            Expression::BinaryOp(op) => self.binary(op, file, expr),
            Expression::ForExpr(f) => self.for_expr(f, file, expr),
        }
    }

    fn template(&self, t: &Template, file: FileId, whole: &Expression) -> R {
        let mut out = String::new();
        let mut marks: Vec<Marked> = Vec::new();
        let mut unknown = false;
        self.template_into(t, file, &mut out, &mut marks, &mut unknown)?;
        let refs: Vec<&Marked> = marks.iter().collect();
        if unknown {
            return Ok(self.unknown(file, whole, &refs));
        }
        Ok(Marked::derived(Value::String(out), &refs))
    }

    fn template_into(&self, t: &Template, file: FileId, out: &mut String, marks: &mut Vec<Marked>, unknown: &mut bool) -> Result<(), Diagnostic> {
        for element in t.iter() {
            match element {
                Element::Literal(s) => out.push_str(s.value()),
                Element::Interpolation(i) => {
                    let v = self.eval(&i.expr, file)?;
                    match &v.value {
                        Value::Unknown(_) => *unknown = true,
                        Value::String(s) => out.push_str(s),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(&b.to_string()),
                        Value::Null => {
                            return Err(err(
                                file,
                                &i.expr,
                                "Invalid template interpolation value",
                                "The expression is null; a template can only include strings, numbers and bools.",
                            )
                            .hint("use coalesce(x, \"\") for optional values"));
                        }
                        other => {
                            return Err(err(
                                file,
                                &i.expr,
                                "Invalid template interpolation value",
                                format!("Cannot include a {} in a string template.", other.type_name()),
                            )
                            .hint("use jsonencode(...) or join(...) to turn it into a string"));
                        }
                    }
                    marks.push(v);
                }
                Element::Directive(d) => match d.as_ref() {
                    Directive::If(ifd) => {
                        let c = self.eval(&ifd.if_expr.cond_expr, file)?;
                        match c.value {
                            Value::Bool(true) => self.template_into(&ifd.if_expr.template, file, out, marks, unknown)?,
                            Value::Bool(false) => {
                                if let Some(e) = &ifd.else_expr {
                                    self.template_into(&e.template, file, out, marks, unknown)?;
                                }
                            }
                            Value::Unknown(_) => *unknown = true,
                            ref other => {
                                return Err(err(
                                    file,
                                    &ifd.if_expr.cond_expr,
                                    "Incorrect condition type",
                                    format!("The condition must be a bool, got {}.", other.type_name()),
                                ));
                            }
                        }
                        marks.push(c);
                    }
                    Directive::For(ford) => {
                        let f = &ford.for_expr;
                        let coll = self.eval(&f.collection_expr, file)?;
                        let items = match self.iterate(&coll, file, &f.collection_expr)? {
                            Some(items) => items,
                            None => {
                                *unknown = true;
                                continue;
                            }
                        };
                        for (k, v) in items {
                            let mut scope = self.clone();
                            if let Some(kv) = &f.key_var {
                                scope.locals.push((kv.as_str().to_string(), k));
                            }
                            scope.locals.push((f.value_var.as_str().to_string(), v));
                            scope.template_into(&f.template, file, out, marks, unknown)?;
                        }
                        marks.push(coll);
                    }
                },
            }
        }
        Ok(())
    }

    /// The (key, value) pairs of a collection; None when it is unknown.
    fn iterate(&self, coll: &Marked, file: FileId, node: &Expression) -> Result<Option<Vec<(Marked, Marked)>>, Diagnostic> {
        match &coll.value {
            Value::List(items) => Ok(Some(
                items.iter().enumerate().map(|(i, v)| (Marked::plain(Value::from_i64(i as i64)), coll.child(&PathStep::Index(i), v.clone()))).collect(),
            )),
            Value::Map(m) => {
                Ok(Some(m.iter().map(|(k, v)| (Marked::plain(Value::String(k.clone())), coll.child(&PathStep::Key(k.clone()), v.clone()))).collect()))
            }
            Value::Unknown(_) => Ok(None),
            other => Err(err(file, node, "Iteration over non-iterable value", format!("A for expression needs a list or map, got {}.", other.type_name()))),
        }
    }

    fn for_expr(&self, f: &hcl_edit::expr::ForExpr, file: FileId, whole: &Expression) -> R {
        let coll = self.eval(&f.intro.collection_expr, file)?;
        let Some(items) = self.iterate(&coll, file, &f.intro.collection_expr)? else {
            return Ok(self.unknown(file, whole, &[&coll]));
        };
        let mut list = Vec::new();
        let mut map: Vec<(String, Marked)> = Vec::new();
        let mut grouped: BTreeMap<String, Vec<Marked>> = BTreeMap::new();
        for (k, v) in items {
            let mut scope = self.clone();
            if let Some(kv) = &f.intro.key_var {
                scope.locals.push((kv.as_str().to_string(), k));
            }
            scope.locals.push((f.intro.value_var.as_str().to_string(), v));
            if let Some(cond) = &f.cond {
                let c = scope.eval(&cond.expr, file)?;
                match c.value {
                    Value::Bool(true) => {}
                    Value::Bool(false) => continue,
                    Value::Unknown(_) => return Ok(self.unknown(file, whole, &[&c])),
                    ref other => {
                        return Err(err(
                            file,
                            &cond.expr,
                            "Invalid for expression condition",
                            format!("The if clause must be a bool, got {}.", other.type_name()),
                        ));
                    }
                }
            }
            let value = scope.eval(&f.value_expr, file)?;
            match &f.key_expr {
                None => list.push(value),
                Some(ke) => {
                    let key = scope.eval(ke, file)?;
                    let key = match key.value {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Unknown(_) => return Ok(self.unknown(file, whole, &[&key])),
                        other => return Err(err(file, ke, "Invalid object key", format!("An object key must be a string, got {}.", other.type_name()))),
                    };
                    if f.grouping {
                        grouped.entry(key).or_default().push(value);
                    } else if map.iter().any(|(k, _)| *k == key) {
                        return Err(err(file, ke, "Duplicate object key", format!("Two elements produce the key {key:?}."))
                            .hint("add ... after the value to group elements with the same key"));
                    } else {
                        map.push((key, value));
                    }
                }
            }
        }
        let out = if f.key_expr.is_none() {
            marked_list(list)
        } else if f.grouping {
            marked_map(grouped.into_iter().map(|(k, v)| (k, marked_list(v))))
        } else {
            marked_map(map)
        };
        // Element marks were carried by each item; only a wholly sensitive collection marks
        // the whole result.
        if coll.is_wholly_sensitive() {
            return Ok(Marked::secret(out.value));
        }
        Ok(out)
    }

    fn binary(&self, op: &hcl_edit::expr::BinaryOp, file: FileId, whole: &Expression) -> R {
        let l = self.eval(&op.lhs_expr, file)?;
        // && and || short-circuit on known values.
        match (op.operator.value(), &l.value) {
            (BinaryOperator::And, Value::Bool(false)) => return Ok(Marked::derived(Value::Bool(false), &[&l])),
            (BinaryOperator::Or, Value::Bool(true)) => return Ok(Marked::derived(Value::Bool(true), &[&l])),
            _ => {}
        }
        let r = self.eval(&op.rhs_expr, file)?;
        if l.value.contains_unknown() || r.value.contains_unknown() {
            return Ok(self.unknown(file, whole, &[&l, &r]));
        }
        use BinaryOperator::*;
        let o = *op.operator.value();
        let out = match o {
            Eq => Value::Bool(l.value.same_as(&r.value)),
            NotEq => Value::Bool(!l.value.same_as(&r.value)),
            And | Or => match (&l.value, &r.value) {
                (Value::Bool(a), Value::Bool(b)) => Value::Bool(if o == And { *a && *b } else { *a || *b }),
                _ => {
                    return Err(err(
                        file,
                        whole,
                        "Invalid operand",
                        format!("The operator {} needs two bools, got {} and {}.", o.as_str(), l.value.type_name(), r.value.type_name()),
                    ));
                }
            },
            _ => {
                let num = |m: &Marked, e: &Expression| -> Result<f64, Diagnostic> {
                    match &m.value {
                        Value::Number(n) => Ok(n.as_f64().unwrap_or(0.0)),
                        Value::String(s) => s.trim().parse::<f64>().map_err(|_| {
                            let shown = if m.is_sensitive() { "a sensitive string".to_string() } else { format!("the string {s:?}") };
                            err(file, e, "Invalid operand", format!("The operator {} needs a number, got {shown}.", o.as_str()))
                        }),
                        other => Err(err(file, e, "Invalid operand", format!("The operator {} needs a number, got {}.", o.as_str(), other.type_name()))),
                    }
                };
                let a = num(&l, &op.lhs_expr)?;
                let b = num(&r, &op.rhs_expr)?;
                match o {
                    Plus => Value::from_f64(a + b),
                    Minus => Value::from_f64(a - b),
                    Mul => Value::from_f64(a * b),
                    Div | Mod if b == 0.0 => return Err(err(file, &op.rhs_expr, "Division by zero", "The right-hand side is zero.")),
                    Div => Value::from_f64(a / b),
                    Mod => Value::from_f64(a % b),
                    Less => Value::Bool(a < b),
                    LessEq => Value::Bool(a <= b),
                    Greater => Value::Bool(a > b),
                    GreaterEq => Value::Bool(a >= b),
                    _ => unreachable!("handled above"),
                }
            }
        };
        Ok(Marked::derived(out, &[&l, &r]))
    }

    fn call(&self, call: &hcl_edit::expr::FuncCall, file: FileId, whole: &Expression) -> R {
        let name = call.name.name.as_str();
        let args: Vec<&Expression> = call.args.iter().collect();
        match name {
            "try" => {
                let mut last = None;
                for a in &args {
                    match self.eval(a, file) {
                        Ok(v) => return Ok(v),
                        Err(e) => last = Some(e),
                    }
                }
                return Err(last.unwrap_or_else(|| err(file, whole, "Invalid function call", "try() needs at least one argument.")));
            }
            "can" => {
                if args.len() != 1 {
                    return Err(err(file, whole, "Invalid function call", "can() takes exactly one argument."));
                }
                return Ok(Marked::plain(Value::Bool(self.eval(args[0], file).is_ok())));
            }
            _ => {}
        }
        let mut values = Vec::with_capacity(args.len());
        for a in &args {
            values.push(self.eval(a, file)?);
        }
        if call.args.expand_final()
            && let Some(last) = values.pop()
        {
            let whole_marked = Marked::derived(Value::Null, &[&last]);
            match last.value {
                Value::List(items) => values.extend(items.into_iter().map(|v| Marked::derived(v, &[&whole_marked]))),
                Value::Unknown(_) => return Ok(self.unknown(file, whole, &[&last])),
                other => {
                    return Err(err(
                        file,
                        args[args.len() - 1],
                        "Invalid expanding argument",
                        format!("The argument before ... must be a list, got {}.", other.type_name()),
                    ));
                }
            }
        }
        match name {
            "sensitive" if values.len() == 1 => return Ok(Marked::secret(values.remove(0).value)),
            "nonsensitive" if values.len() == 1 => return Ok(Marked::plain(values.remove(0).value)),
            _ => {}
        }
        if !functions::exists(name) {
            let mut d = err(file, &call.name.name, "Call to unknown function", format!("There is no function named {name:?}."));
            if let Some(s) = functions::suggest(name) {
                d = d.hint(format!("did you mean {s}?"));
            }
            return Err(d);
        }
        // Functions that reveal only the shape of a collection (not its values) stay
        // non-sensitive unless the collection itself is sensitive.
        let shape_only = matches!(name, "length" | "keys");
        let secret = if shape_only { values.iter().any(|m| m.is_wholly_sensitive()) } else { values.iter().any(|m| m.is_sensitive()) };
        let marks_of = |v: Value| -> Marked { if secret { Marked::secret(v) } else { Marked::plain(v) } };
        if values.iter().any(|v| v.value.contains_unknown()) {
            return Ok(marks_of(Value::Unknown(self.text(file, whole))));
        }
        let plain: Vec<Value> = values.iter().map(|v| v.value.clone()).collect();
        let dir = self.config().dir.clone();
        match functions::call(name, &plain, &FuncContext { base_dir: &dir }) {
            Ok(v) => Ok(marks_of(v)),
            Err(e) => {
                let at: &dyn hcl_edit::Span = match e.arg.and_then(|i| args.get(i)) {
                    Some(a) => *a,
                    None => whole,
                };
                let mut detail = e.message.clone();
                if values.iter().any(|v| v.is_sensitive()) {
                    detail = format!("Invalid arguments to {name}() (an argument is sensitive, so its value is not shown).");
                }
                Err(Diagnostic::error("Invalid function argument", format!("Call to {name}(): {detail}"))
                    .at(Some(Span { file, range: at.span().unwrap_or(0..0) })))
            }
        }
    }

    fn variable(&self, name: &str, file: FileId, node: &Expression) -> R {
        if let Some((_, v)) = self.locals.iter().rev().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        if Kind::from_keyword(name) == Some(Kind::Data) {
            return Err(err(file, node, "Invalid reference", "A reference to a data source names its type and name: data.TYPE.NAME."));
        }
        if let Some(kind) = Kind::from_keyword(name) {
            return Err(err(file, node, "Invalid reference", format!("A reference to a {kind} must name it: {kind}.NAME.")));
        }
        let roots = ["var", "local", "each", "count", "module", "path"];
        if roots.contains(&name) {
            return Err(err(file, node, "Invalid reference", format!("{name} must be followed by an attribute, like {name}.NAME.")));
        }
        let mut d = err(file, node, "Unknown variable", format!("There is no variable named {name:?} in this scope."));
        let mut candidates: Vec<&str> = roots.to_vec();
        candidates.extend(Kind::ALL.iter().map(|k| k.keyword()));
        candidates.extend(self.locals.iter().map(|(n, _)| n.as_str()));
        if let Some(s) = did_you_mean(name, candidates) {
            d = d.hint(format!("did you mean {s}?"));
        } else {
            d = d.hint("references start with var., local., module., each., count. or a component kind such as vault.");
        }
        Err(d)
    }

    fn attr_name(ops: &[hcl_edit::repr::Decorated<TraversalOperator>], i: usize) -> Option<&str> {
        match ops.get(i).map(|o| o.value()) {
            Some(TraversalOperator::GetAttr(id)) => Some(id.as_str()),
            _ => None,
        }
    }

    fn traversal(&self, root: &Expression, ops: &[hcl_edit::repr::Decorated<TraversalOperator>], file: FileId, whole: &Expression) -> R {
        let (base, consumed) = match root {
            Expression::Variable(v) if !self.locals.iter().any(|(n, _)| n == v.as_str()) => self.traversal_root(v.as_str(), ops, file, whole)?,
            other => (self.eval(other, file)?, 0),
        };
        let mut cur = base;
        let mut i = consumed;
        while i < ops.len() {
            let op = &ops[i];
            match op.value() {
                TraversalOperator::GetAttr(id) => cur = self.get_attr(cur, id.as_str(), file, op)?,
                TraversalOperator::Index(e) => {
                    let key = self.eval(e, file)?;
                    cur = self.index(cur, &key, file, e)?;
                }
                TraversalOperator::LegacyIndex(n) => {
                    cur = self.index(cur, &Marked::plain(Value::from_i64(*n.value() as i64)), file, op)?;
                }
                TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_) => {
                    let rest = &ops[i + 1..];
                    let items = match &cur.value {
                        Value::List(items) => items.clone(),
                        Value::Null => Vec::new(),
                        Value::Unknown(_) => return Ok(self.unknown(file, whole, &[&cur])),
                        Value::Map(m) => m.values().cloned().collect(),
                        other => vec![other.clone()],
                    };
                    let mut out = Vec::new();
                    for (idx, item) in items.into_iter().enumerate() {
                        let mut v = cur.child(&PathStep::Index(idx), item);
                        for op in rest {
                            v = match op.value() {
                                TraversalOperator::GetAttr(id) => self.get_attr(v, id.as_str(), file, op)?,
                                TraversalOperator::Index(e) => {
                                    let key = self.eval(e, file)?;
                                    self.index(v, &key, file, e)?
                                }
                                TraversalOperator::LegacyIndex(n) => self.index(v, &Marked::plain(Value::from_i64(*n.value() as i64)), file, op)?,
                                _ => return Err(err(file, op, "Nested splat", "Only one splat operator is supported in a traversal.")),
                            };
                        }
                        out.push(v);
                    }
                    return Ok(marked_list(out));
                }
            }
            i += 1;
        }
        Ok(cur)
    }

    /// Resolves the root of a traversal (`var.x`, `local.y`, `vault.main`, `module.m.outputs.z`,
    /// `each.key`, `count.index`), returning the value and how many operators it consumed.
    fn traversal_root(
        &self,
        name: &str,
        ops: &[hcl_edit::repr::Decorated<TraversalOperator>],
        file: FileId,
        whole: &Expression,
    ) -> Result<(Marked, usize), Diagnostic> {
        let first = Self::attr_name(ops, 0);
        let need_attr = |what: &str| err(file, whole, "Invalid reference", format!("{name} must be followed by .NAME to name a {what}."));
        match name {
            "var" => {
                let n = first.ok_or_else(|| need_attr("variable"))?;
                Ok((self.var(n, file, whole)?, 1))
            }
            "local" => {
                let n = first.ok_or_else(|| need_attr("local value"))?;
                Ok((self.local(n, file, whole)?, 1))
            }
            "each" => {
                let Some((k, v)) = &self.each else {
                    return Err(err(
                        file,
                        whole,
                        "Reference to \"each\" in context without for_each",
                        "each.key and each.value are only available in blocks that use for_each.",
                    )
                    .hint("add for_each = {...} to the block, or remove the reference"));
                };
                match first {
                    Some("key") => Ok((Marked::plain(k.clone()), 1)),
                    Some("value") => Ok((v.clone(), 1)),
                    _ => Err(err(file, whole, "Invalid each attribute", "each has two attributes: each.key and each.value.")),
                }
            }
            "count" => {
                let Some(i) = self.count else {
                    return Err(err(file, whole, "Reference to \"count\" in non-counted context", "count.index is only available in blocks that use count.")
                        .hint("add count = N to the block, or remove the reference"));
                };
                match first {
                    Some("index") => Ok((Marked::plain(Value::from_i64(i)), 1)),
                    _ => Err(err(file, whole, "Invalid count attribute", "count has one attribute: count.index.")),
                }
            }
            "path" => match first {
                Some("module") => Ok((Marked::plain(Value::String(self.config().dir.display().to_string())), 1)),
                Some("root") => Ok((Marked::plain(Value::String(self.ctx.stack.root().dir.display().to_string())), 1)),
                _ => Err(err(file, whole, "Invalid path attribute", "path has path.module and path.root.")),
            },
            "module" => {
                let n = first.ok_or_else(|| need_attr("module"))?;
                self.module_ref(n, ops, file, whole)
            }
            kw => {
                let Some(kind) = Kind::from_keyword(kw) else {
                    return Ok((self.variable(kw, file, whole)?, 0));
                };
                let first = first.ok_or_else(|| need_attr(kw))?;
                // A data source is `data.TYPE.NAME`.
                let (name, used) = if kind == Kind::Data {
                    let second = Self::attr_name(ops, 1).ok_or_else(|| {
                        err(
                            file,
                            whole,
                            "Invalid reference",
                            "A data source is referred to as data.TYPE.NAME, like data.kubernetes_secret.mongo.data[\"password\"].",
                        )
                    })?;
                    (format!("{first}.{second}"), 2)
                } else {
                    (first.to_string(), 1)
                };
                let n = name.as_str();
                if let Some(TraversalOperator::Index(e)) = ops.get(used).map(|op| op.value()) {
                    let key = self.eval(e, file)?;
                    let plain = key.sensitive.is_empty() && key.components.is_empty();
                    if let Some(v) = self.ctx.resolver.instance(&self.path, kind, n, &key.value).filter(|_| plain) {
                        return Ok((v, used + 1));
                    }
                }
                match self.ctx.resolver.component(&self.path, kind, n) {
                    Some(v) => Ok((v, used)),
                    None if kind == Kind::Data => {
                        let declared: Vec<&str> = self.config().components.iter().filter(|c| c.kind == kind).map(|c| c.name.as_str()).collect();
                        let mut d = err(file, whole, "Reference to undeclared data source", format!("A data source data.{n} is not declared in this module."));
                        if let Some(s) = did_you_mean(n, declared.iter().copied()) {
                            d = d.hint(format!("did you mean data.{s}?"));
                        } else {
                            let (t, l) = n.split_once('.').unwrap_or((n, "NAME"));
                            d = d.hint(format!("declare it with data \"{t}\" \"{l}\" {{ ... }}"));
                        }
                        Err(d)
                    }
                    None => {
                        let declared: Vec<&str> = self.config().components.iter().filter(|c| c.kind == kind).map(|c| c.name.as_str()).collect();
                        let mut d = err(
                            file,
                            whole,
                            "Reference to undeclared component",
                            format!("{} {kw} component named {n:?} is not declared in this module.", article(kw)),
                        );
                        if let Some(s) = did_you_mean(n, declared.iter().copied()) {
                            d = d.hint(format!("did you mean {kw}.{s}?"));
                        } else if declared.is_empty() {
                            d = d.hint(format!("declare it with {kw} \"{n}\" {{ ... }}"));
                        } else {
                            d = d.hint(format!("declared {kw} components: {}", declared.join(", ")));
                        }
                        Err(d)
                    }
                }
            }
        }
    }

    /// The instance a plain component reference names (`vault.central`,
    /// `cluster.site[each.key]`), found without building the component's value. None for any
    /// other expression, or when the reference is not to an existing instance: evaluate it then.
    pub fn reference_address(&self, expr: &Expression, file: FileId) -> Option<Address> {
        let Expression::Traversal(t) = expr else { return None };
        let Expression::Variable(root) = &t.expr else { return None };
        if self.locals.iter().any(|(n, _)| n == root.as_str()) {
            return None;
        }
        let kind = Kind::from_keyword(root.as_str())?;
        let ops: Vec<&TraversalOperator> = t.operators.iter().map(|o| o.value()).collect();
        match ops.as_slice() {
            [TraversalOperator::GetAttr(n)] => self.ctx.resolver.instance_address(&self.path, kind, n.as_str(), None),
            [TraversalOperator::GetAttr(n), TraversalOperator::Index(e)] => {
                let key = self.eval(e, file).ok()?;
                let plain = key.sensitive.is_empty() && key.components.is_empty();
                plain.then(|| self.ctx.resolver.instance_address(&self.path, kind, n.as_str(), Some(&key.value)))?
            }
            _ => None,
        }
    }

    fn var(&self, name: &str, file: FileId, node: &impl hcl_edit::Span) -> R {
        let config = self.config();
        let Some(decl) = config.variables.get(name) else {
            let mut d = err(file, node, "Reference to undeclared input variable", format!("An input variable named {name:?} has not been declared."));
            if let Some(s) = did_you_mean(name, config.variables.keys().map(String::as_str)) {
                d = d.hint(format!("did you mean var.{s}?"));
            } else {
                d = d.hint(format!("declare it with variable \"{name}\" {{ type = string }}"));
            }
            return Err(d);
        };
        if self.path.is_root() {
            return Ok(self.ctx.root_vars.get(name).cloned().unwrap_or_default());
        }
        // A module variable is the call's input, evaluated in the calling module instance.
        let inst = self.ctx.instances.get(&self.path).cloned();
        let Some(inst) = inst else { return Ok(Marked::plain(Value::Unknown(format!("var.{name}")))) };
        let parent_path = inst.parent.clone().unwrap_or_default();
        let parent_module = self.ctx.instances.get(&parent_path).map(|i| i.module).unwrap_or(0);
        let call = inst.call.as_deref().and_then(|c| self.ctx.stack.modules[parent_module].calls.get(c));
        let input = call.and_then(|c| c.inputs.get(name));
        let value = match input {
            Some((expr, _)) => {
                let mut scope = self.ctx.scope(&parent_path);
                scope.each = inst.each.clone();
                scope.count = inst.count;
                scope.eval(&expr.expr, expr.span.file)?
            }
            None => match &decl.default {
                Some(d) => self.ctx.scope(&self.path).eval(&d.expr, d.span.file)?,
                None => {
                    return Err(Diagnostic::error(
                        "Missing required argument",
                        format!("The module input {name:?} is required, but no value was given by the module call."),
                    )
                    .at(call.map(|c| c.span.clone()))
                    .hint(format!("add {name} = ... to the module block")));
                }
            },
        };
        let converted = decl
            .ty
            .convert(&value.value)
            .map_err(|e| Diagnostic::error("Invalid value for module input", format!("Input {name:?}: {e}.")).at(input.map(|(e, _)| e.span.clone())))?;
        let mut out = Marked { value: converted, ..value };
        if decl.sensitive {
            out = out.into_secret();
        }
        Ok(out)
    }

    /// Evaluates the local value `name` of this scope's module (declared as `expr`).
    pub fn local_value(&self, name: &str, expr: &super::Expr) -> R {
        self.local(name, expr.span.file, &expr.expr)
    }

    fn local(&self, name: &str, file: FileId, node: &impl hcl_edit::Span) -> R {
        let config = self.config();
        let Some(expr) = config.locals.get(name) else {
            let mut d = err(file, node, "Reference to undeclared local value", format!("A local value named {name:?} has not been declared."));
            if let Some(s) = did_you_mean(name, config.locals.keys().map(String::as_str)) {
                d = d.hint(format!("did you mean local.{s}?"));
            }
            return Err(d);
        };
        let key = format!("{}local.{name}", if self.path.is_root() { String::new() } else { format!("{}.", self.path) });
        {
            let mut stack = self.ctx.evaluating.borrow_mut();
            if let Some(pos) = stack.iter().position(|k| *k == key) {
                // Report the cycle the same way whichever member was evaluated first: starting
                // at its smallest member, pointing at that member's expression.
                let mut cycle: Vec<String> = stack[pos..].to_vec();
                let start = cycle.iter().enumerate().min_by_key(|(_, k)| k.as_str()).map(|(i, _)| i).unwrap_or(0);
                cycle.rotate_left(start);
                let first = cycle[0].clone();
                cycle.push(first.clone());
                let first_name = first.rsplit("local.").next().unwrap_or(name);
                let at = config.locals.get(first_name).unwrap_or(expr).span.clone();
                return Err(Diagnostic::error("Cycle in local values", format!("The local values refer to each other in a cycle: {}.", cycle.join(" -> ")))
                    .at(Some(at))
                    .hint("break the cycle by computing one of them without the others"));
            }
            stack.push(key);
        }
        let scope = self.ctx.scope(&self.path);
        let result = scope.eval(&expr.expr, expr.span.file);
        self.ctx.evaluating.borrow_mut().pop();
        result
    }

    fn module_ref(
        &self,
        name: &str,
        ops: &[hcl_edit::repr::Decorated<TraversalOperator>],
        file: FileId,
        whole: &Expression,
    ) -> Result<(Marked, usize), Diagnostic> {
        let config = self.config();
        let Some(call) = config.calls.get(name) else {
            let mut d = err(file, whole, "Reference to undeclared module", format!("No module call named {name:?} is declared in this module."));
            if let Some(s) = did_you_mean(name, config.calls.keys().map(String::as_str)) {
                d = d.hint(format!("did you mean module.{s}?"));
            }
            return Err(d);
        };
        let child_cfg = &self.ctx.stack.modules[call.module];
        // Instances of this call.
        let instances: Vec<(&ModulePath, &ModuleInstance)> = self
            .ctx
            .instances
            .iter()
            .filter(|(p, i)| i.parent.as_ref() == Some(&self.path) && i.call.as_deref() == Some(name) && p.0.len() == self.path.0.len() + 1)
            .collect();
        let repeated = !matches!(call.repetition, super::Repetition::Single);
        let mut i = 1;
        let mut selected: Option<&ModulePath> = None;
        if repeated {
            if let Some(TraversalOperator::Index(e)) = ops.get(1).map(|o| o.value()) {
                let key = self.eval(e, file)?;
                if key.value.is_unknown() {
                    return Ok((self.unknown(file, whole, &[&key]), ops.len()));
                }
                let want = InstanceKey::from_value(&key.value);
                selected = instances.iter().find(|(p, _)| p.0.last().and_then(|s| s.key.clone()) == want).map(|(p, _)| *p);
                if selected.is_none() {
                    return Err(err(file, e, "Invalid index", format!("module.{name} has no instance with key {}.", key.value.render_inline())));
                }
                i = 2;
            }
        } else {
            selected = instances.first().map(|(p, _)| *p);
        }
        let Some(path) = selected else {
            // All instances: a map or list of output objects.
            let mut entries = Vec::new();
            for (p, _) in &instances {
                let key = p.0.last().and_then(|s| s.key.clone());
                entries.push((
                    key.map(|k| match k {
                        InstanceKey::Str(s) => s,
                        InstanceKey::Int(n) => n.to_string(),
                    })
                    .unwrap_or_default(),
                    self.module_outputs(p, child_cfg, None)?,
                ));
            }
            return Ok((marked_map(entries), 1));
        };
        if Self::attr_name(ops, i) == Some("outputs") {
            i += 1;
        }
        match Self::attr_name(ops, i) {
            Some(out) => {
                if !child_cfg.outputs.contains_key(out) {
                    let mut d = err(file, &ops[i], "Unsupported attribute", format!("Module {name:?} has no output named {out:?}."));
                    if let Some(s) = did_you_mean(out, child_cfg.outputs.keys().map(String::as_str)) {
                        d = d.hint(format!("did you mean {s}?"));
                    }
                    return Err(d);
                }
                let v = self.module_outputs(path, child_cfg, Some(out))?;
                let m = match &v.value {
                    Value::Map(m) => v.child(&PathStep::Key(out.to_string()), m.get(out).cloned().unwrap_or_default()),
                    _ => v,
                };
                Ok((m, i + 1))
            }
            None => Ok((self.module_outputs(path, child_cfg, None)?, i)),
        }
    }

    fn module_outputs(&self, path: &ModulePath, cfg: &ModuleConfig, only: Option<&str>) -> R {
        let scope = self.ctx.scope(path);
        let mut entries = Vec::new();
        for (name, out) in &cfg.outputs {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let mut v = scope.eval(&out.value.expr, out.value.span.file)?;
            if out.sensitive {
                v = Marked::secret(v.value);
            }
            entries.push((name.clone(), v));
        }
        Ok(marked_map(entries))
    }

    fn get_attr(&self, cur: Marked, name: &str, file: FileId, node: &impl hcl_edit::Span) -> R {
        match &cur.value {
            Value::Map(m) => match m.get(name) {
                Some(v) => Ok(cur.child(&PathStep::Key(name.to_string()), v.clone())),
                None => {
                    let mut d = err(file, node, "Unsupported attribute", format!("This object does not have an attribute named {name:?}."));
                    if let Some(s) = did_you_mean(name, m.keys().map(String::as_str)) {
                        d = d.hint(format!("did you mean {s}?"));
                    }
                    Err(d)
                }
            },
            Value::Unknown(origin) => {
                Ok(Marked { value: Value::Unknown(format!("{origin}.{name}")), sensitive: cur.sensitive.clone(), components: Vec::new() })
            }
            Value::List(_) => Err(err(file, node, "Unsupported attribute", format!("Cannot access attribute {name:?} on a list."))
                .hint("this component uses count or for_each: pick one instance with [KEY], or use [*] for all of them")),
            Value::Null => Err(err(file, node, "Attempt to get attribute from null value", format!("Cannot read {name:?}: the value is null."))),
            other => Err(err(file, node, "Unsupported attribute", format!("Cannot access attribute {name:?} on a {}.", other.type_name()))),
        }
    }

    fn index(&self, cur: Marked, key: &Marked, file: FileId, node: &impl hcl_edit::Span) -> R {
        if key.value.is_unknown() || cur.value.is_unknown() {
            return Ok(Marked { value: Value::Unknown(self.text(file, node)), sensitive: cur.sensitive.clone(), components: Vec::new() });
        }
        match (&cur.value, &key.value) {
            (Value::List(items), Value::Number(_)) | (Value::List(items), Value::String(_)) => {
                let idx = key.value.as_i64().or_else(|| key.value.as_str().and_then(|s| s.parse().ok()));
                match idx.filter(|i| *i >= 0).and_then(|i| items.get(i as usize).map(|v| (i, v))) {
                    Some((i, v)) => Ok(cur.child(&PathStep::Index(i as usize), v.clone())),
                    None if key.is_sensitive() => {
                        Err(err(file, node, "Invalid index", format!("The (sensitive) index is out of range for a list of {} elements.", items.len())))
                    }
                    None => Err(err(
                        file,
                        node,
                        "Invalid index",
                        format!("The index {} is out of range for a list of {} elements.", key.value.render_inline(), items.len()),
                    )),
                }
            }
            (Value::Map(m), Value::String(_)) | (Value::Map(m), Value::Number(_)) => {
                let k = match &key.value {
                    Value::String(s) => s.clone(),
                    other => other.render_inline(),
                };
                match m.get(&k) {
                    Some(v) => Ok(cur.child(&PathStep::Key(k), v.clone())),
                    None if key.is_sensitive() => {
                        Err(err(file, node, "Invalid index", "The given key does not exist (the key is sensitive, so it is not shown)."))
                    }
                    None => {
                        let mut d = err(file, node, "Invalid index", format!("The key {k:?} does not exist."));
                        if let Some(s) = did_you_mean(&k, m.keys().map(String::as_str)) {
                            d = d.hint(format!("did you mean {s:?}?"));
                        } else if !m.is_empty() {
                            d = d.hint(format!("existing keys: {}", m.keys().cloned().collect::<Vec<_>>().join(", ")));
                        }
                        Err(d)
                    }
                }
            }
            (Value::Null, _) => Err(err(file, node, "Attempt to index null value", "The value is null.")),
            (c, k) => Err(err(file, node, "Invalid index", format!("Cannot index a {} with a {}.", c.type_name(), k.type_name()))),
        }
    }
}

fn with_marks_of(mut m: Marked, cond: &Marked) -> Marked {
    if cond.is_sensitive() {
        m = m.into_secret();
    }
    m
}

fn dedent(s: &str, indent: usize) -> String {
    s.split_inclusive('\n')
        .map(|line| {
            let strip = line.chars().take(indent).take_while(|c| *c == ' ' || *c == '\t').count();
            &line[strip..]
        })
        .collect()
}

/// "a" or "an" for a word.
pub fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "An" } else { "A" }
}
