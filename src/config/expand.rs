//! From declarations to instances: module and component `count`/`for_each` expansion, the
//! references each instance makes (resolved through locals, module inputs and module outputs
//! to the component instances they reach), and the evaluation of one instance's attributes
//! into the desired inputs a provider receives.
#![deny(clippy::arithmetic_side_effects)]

use std::collections::{BTreeMap, BTreeSet};

use hcl_edit::Span as _;
use hcl_edit::expr::{Expression, TraversalOperator};
use hcl_edit::visit::{self, Visit};
use kdeploy_provider::{AttrPath, AttrType, ComponentSchema, Kind, PathStep, Value};

use super::eval::{Ctx, Marked, ModuleInstance, Referenced, Resolver, Scope, marked_list, marked_map};
use super::{ComponentDecl, Expr, Lifecycle, ModuleConfig, Repetition, Stack};
use crate::addr::{Address, InstanceKey, ModulePath};
use crate::diag::{Diagnostic, Diagnostics, FileId, SourceMap, Span, did_you_mean};

/// One component instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub addr: Address,
    /// Index of the module config and of the declaration in it.
    pub module: usize,
    pub decl: usize,
    pub each: Option<(Value, Marked)>,
    pub count: Option<i64>,
}

/// Why one instance depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DepKind {
    /// An expression refers to it.
    Reference,
    /// `depends_on` names it (or names a module containing it).
    DependsOn,
    /// It is the cluster the instance runs on (implicitly, the stack's only cluster).
    Cluster,
}

/// A dependency of an instance and where in the source it comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dep {
    pub target: Address,
    pub span: Span,
    pub kind: DepKind,
}

/// The expanded stack: module instances, component instances and their dependencies.
#[derive(Debug, Clone, Default)]
pub struct Expanded {
    pub modules: BTreeMap<ModulePath, ModuleInstance>,
    pub instances: BTreeMap<Address, Instance>,
    pub deps: BTreeMap<Address, Vec<Dep>>,
}

impl Expanded {
    /// Every cluster instance in the stack.
    pub fn clusters(&self) -> Vec<Address> {
        self.instances.keys().filter(|a| a.kind == Kind::Cluster).cloned().collect()
    }

    pub fn decl<'s>(&self, stack: &'s Stack, addr: &Address) -> Option<&'s ComponentDecl> {
        let i = self.instances.get(addr)?;
        stack.modules[i.module].components.get(i.decl)
    }
}

/// During expansion no component has a value yet: every declared component is unknown.
struct Unknowns<'a> {
    stack: &'a Stack,
    modules: &'a BTreeMap<ModulePath, ModuleInstance>,
}

impl Resolver for Unknowns<'_> {
    fn component(&self, module: &ModulePath, kind: Kind, name: &str) -> Option<Marked> {
        let m = self.modules.get(module).map(|i| i.module).unwrap_or(0);
        let decl = self.stack.modules[m].component(kind, name)?;
        let unknown = Value::Unknown(format!("{kind}.{name}"));
        Some(match decl.repetition {
            Repetition::Single => Marked::component(&Address::new(kind, name).in_module(module.clone()), unknown, Vec::new()),
            _ => Marked::plain(unknown),
        })
    }
}

/// Evaluates `count`/`for_each` to instance keys. They must be known before apply.
/// The most instances one `count` makes (each instance is planned and recorded: a larger count is
/// a mistake, and would exhaust memory rather than fail).
pub const MAX_INSTANCES: i64 = 100_000;

/// One instance a repetition asks for: its key, `each.key`/`each.value`, `count.index`.
type RepetitionKey = (Option<InstanceKey>, Option<(Value, Marked)>, Option<i64>);

fn repetition_keys(scope: &Scope<'_>, rep: &Repetition, what: &str) -> Result<Vec<RepetitionKey>, Diagnostic> {
    match rep {
        Repetition::Single => Ok(vec![(None, None, None)]),
        Repetition::Count(e) => {
            let v = scope.eval(&e.expr, e.span.file)?;
            match &v.value {
                Value::Unknown(_) => Err(unknown_repetition(&e.span, "count", what)),
                Value::Number(_) => match v.value.as_i64() {
                    Some(n) if n > MAX_INSTANCES => {
                        Err(Diagnostic::error("Invalid count argument", format!("count must be at most {MAX_INSTANCES}, got {}.", v.value.render_inline()))
                            .at(Some(e.span.clone()))
                            .hint("split the instances over several blocks or modules"))
                    }
                    Some(n) if n >= 0 => Ok((0..n).map(|i| (Some(InstanceKey::Int(i.unsigned_abs())), None, Some(i))).collect()),
                    _ => Err(Diagnostic::error("Invalid count argument", format!("count must be a whole number >= 0, got {}.", v.value.render_inline()))
                        .at(Some(e.span.clone()))),
                },
                other => {
                    Err(Diagnostic::error("Invalid count argument", format!("count must be a number, got {}.", other.type_name())).at(Some(e.span.clone())))
                }
            }
        }
        Repetition::ForEach(e) => {
            let v = scope.eval(&e.expr, e.span.file)?;
            if v.is_wholly_sensitive() {
                return Err(Diagnostic::error(
                    "Invalid for_each argument",
                    "for_each cannot use a sensitive value: instance keys appear in addresses and output.",
                )
                .at(Some(e.span.clone()))
                .hint("use nonsensitive(...) on the keys if they are not secret"));
            }
            match &v.value {
                Value::Unknown(_) => Err(unknown_repetition(&e.span, "for_each", what)),
                Value::Map(m) => Ok(m
                    .iter()
                    .map(|(k, item)| {
                        (Some(InstanceKey::Str(k.clone())), Some((Value::String(k.clone()), v.child(&PathStep::Key(k.clone()), item.clone()))), None)
                    })
                    .collect()),
                Value::List(items) => {
                    let mut out = Vec::new();
                    let mut seen = BTreeSet::new();
                    for item in items {
                        match item {
                            Value::String(s) => {
                                if seen.insert(s.clone()) {
                                    out.push((Some(InstanceKey::Str(s.clone())), Some((item.clone(), Marked::plain(item.clone()))), None));
                                }
                            }
                            Value::Unknown(_) => return Err(unknown_repetition(&e.span, "for_each", what)),
                            other => {
                                return Err(Diagnostic::error(
                                    "Invalid for_each argument",
                                    format!("A for_each set must contain strings, got {}.", other.type_name()),
                                )
                                .at(Some(e.span.clone()))
                                .hint("use toset([for x in ... : tostring(x)]) or a map"));
                            }
                        }
                    }
                    Ok(out)
                }
                Value::Null => Err(Diagnostic::error("Invalid for_each argument", "for_each is null.").at(Some(e.span.clone()))),
                other => Err(Diagnostic::error("Invalid for_each argument", format!("for_each needs a map or a set of strings, got {}.", other.type_name()))
                    .at(Some(e.span.clone()))),
            }
        }
    }
}

fn unknown_repetition(span: &Span, arg: &str, what: &str) -> Diagnostic {
    Diagnostic::error(
        format!("Invalid {arg} argument"),
        format!("The {arg} of {what} depends on values that are known only after apply, so kdeploy cannot tell how many instances to plan."),
    )
    .at(Some(span.clone()))
    .hint(format!("compute {arg} from variables and locals only, or apply the components it depends on first with -target"))
    .from_unknown()
}

/// Expands module calls and component blocks into instances and resolves every reference.
pub fn expand(stack: &Stack, sources: &SourceMap, root_vars: &BTreeMap<String, Marked>) -> (Expanded, Diagnostics) {
    let mut diags = Diagnostics::new();
    let mut modules: BTreeMap<ModulePath, ModuleInstance> = BTreeMap::new();
    modules.insert(ModulePath::root(), ModuleInstance { module: 0, parent: None, call: None, each: None, count: None });

    // Module instances, breadth first (a call's repetition is evaluated in its parent).
    let mut queue = vec![ModulePath::root()];
    while let Some(path) = queue.pop() {
        let m = modules[&path].module;
        let calls: Vec<_> = stack.modules[m].calls.values().collect();
        for call in calls {
            let keys = {
                let resolver = Unknowns { stack, modules: &modules };
                let ctx = Ctx::new(stack, sources, root_vars, &modules, &resolver);
                let scope = ctx.scope(&path);
                repetition_keys(&scope, &call.repetition, &format!("module {:?}", call.name))
            };
            match keys {
                Ok(keys) => {
                    for (key, each, count) in keys {
                        let child = path.child(&call.name, key);
                        modules.insert(
                            child.clone(),
                            ModuleInstance { module: call.module, parent: Some(path.clone()), call: Some(call.name.clone()), each, count },
                        );
                        queue.push(child);
                    }
                }
                Err(d) => diags.push(d),
            }
        }
    }

    let mut instances = BTreeMap::new();
    {
        let resolver = Unknowns { stack, modules: &modules };
        let ctx = Ctx::new(stack, sources, root_vars, &modules, &resolver);
        for (path, mi) in &modules {
            let config = &stack.modules[mi.module];
            for (di, decl) in config.components.iter().enumerate() {
                let scope = ctx.scope(path);
                let what = format!("{} {:?}", decl.kind, decl.name);
                match repetition_keys(&scope, &decl.repetition, &what) {
                    Ok(keys) => {
                        for (key, each, count) in keys {
                            let mut addr = Address::new(decl.kind, &decl.name).in_module(path.clone());
                            addr.key = key;
                            instances.insert(addr.clone(), Instance { addr, module: mi.module, decl: di, each, count });
                        }
                    }
                    Err(d) => diags.push(d),
                }
            }
        }
    }

    let mut expanded = Expanded { modules, instances, deps: BTreeMap::new() };
    let clusters = expanded.clusters();
    let mut deps = BTreeMap::new();
    for (addr, inst) in &expanded.instances {
        let decl = &stack.modules[inst.module].components[inst.decl];
        let mut found: BTreeSet<Dep> = BTreeSet::new();
        let resolver = Unknowns { stack, modules: &expanded.modules };
        let ctx = Ctx::new(stack, sources, root_vars, &expanded.modules, &resolver);
        let mut scope = ctx.scope(&addr.module);
        scope.each = inst.each.clone();
        scope.count = inst.count;
        let mut walker = RefWalker { stack, expanded: &expanded, diags: &mut diags, visiting: BTreeSet::new(), scope: Some(&scope) };
        let mut exprs: Vec<&Expr> = decl.attrs.values().map(|(e, _)| e).collect();
        exprs.extend(decl.blocks.iter().flat_map(|b| b.attrs.values().map(|(e, _)| e)));
        exprs.extend(decl.type_expr.iter());
        // `each.value` and `count` can carry a component's object into the attributes.
        if let Repetition::ForEach(e) | Repetition::Count(e) = &decl.repetition {
            exprs.push(e);
        }
        for e in exprs {
            for (target, span) in walker.refs_of(&addr.module, e) {
                found.insert(Dep { target, span, kind: DepKind::Reference });
            }
        }
        for e in &decl.depends_on {
            for (target, span) in walker.depends_on(&addr.module, e) {
                found.insert(Dep { target, span, kind: DepKind::DependsOn });
            }
        }
        // depends_on of enclosing module calls applies to everything inside.
        let mut path = addr.module.clone();
        while let Some(step) = path.0.last().cloned() {
            path.0.pop();
            let m = expanded.modules.get(&path).map(|i| i.module).unwrap_or(0);
            if let Some(call) = stack.modules[m].calls.get(&step.name) {
                for e in &call.depends_on {
                    for (target, span) in walker.depends_on(&path, e) {
                        found.insert(Dep { target, span, kind: DepKind::DependsOn });
                    }
                }
            }
        }
        // The implicit cluster: components that run on a cluster but do not name one run on
        // the stack's only cluster.
        if !decl.attrs.contains_key("cluster") && decl.kind != Kind::Cluster {
            let needs_cluster = component_type(&scope, decl).map(|(_, s)| s.attr("cluster").is_some()).unwrap_or(false);
            if needs_cluster && clusters.len() == 1 {
                found.insert(Dep { target: clusters[0].clone(), span: decl.span.clone(), kind: DepKind::Cluster });
            }
        }
        found.retain(|d| d.target != *addr);
        let mut list: Vec<Dep> = Vec::new();
        for d in found {
            // One edge per target: the first reason in source order.
            if !list.iter().any(|x| x.target == d.target) {
                list.push(d);
            }
        }
        deps.insert(addr.clone(), list);
    }
    expanded.deps = deps;
    (expanded, diags)
}

/// A reference found in an expression: the root name and up to three following attribute names.
struct Found {
    root: String,
    attrs: Vec<Option<String>>,
    index_literal: Option<InstanceKey>,
    /// The index when it is an expression (`cluster.site[each.value.site]`): evaluated in the
    /// instance's scope when it can be, so that the reference reaches one instance, not all.
    index_expr: Option<Expression>,
    /// The same for a data source (`data.TYPE.NAME[key]`).
    data_index_literal: Option<InstanceKey>,
    span: std::ops::Range<usize>,
}

#[derive(Default)]
struct Collector {
    found: Vec<Found>,
}

impl Visit for Collector {
    fn visit_traversal(&mut self, node: &hcl_edit::expr::Traversal) {
        if let Expression::Variable(v) = &node.expr {
            let attrs = node
                .operators
                .iter()
                .take(4)
                .map(|o| match o.value() {
                    TraversalOperator::GetAttr(id) => Some(id.as_str().to_string()),
                    _ => None,
                })
                .collect();
            let literal = |i: usize| {
                node.operators.get(i).and_then(|o| match o.value() {
                    TraversalOperator::Index(Expression::String(s)) => Some(InstanceKey::Str(s.value().clone())),
                    TraversalOperator::Index(Expression::Number(n)) => n.value().as_u64().map(InstanceKey::Int),
                    _ => None,
                })
            };
            let (index_literal, data_index_literal) = (literal(1), literal(2));
            let index_expr = match node.operators.get(1).map(|o| o.value()) {
                Some(TraversalOperator::Index(e)) if index_literal.is_none() => Some(e.clone()),
                _ => None,
            };
            self.found.push(Found { root: v.as_str().to_string(), attrs, index_literal, index_expr, data_index_literal, span: node.span().unwrap_or(0..0) });
            for op in &node.operators {
                self.visit_traversal_operator(op);
            }
        } else {
            visit::visit_traversal(self, node);
        }
    }
}

struct RefWalker<'a> {
    stack: &'a Stack,
    expanded: &'a Expanded,
    diags: &'a mut Diagnostics,
    visiting: BTreeSet<(ModulePath, String)>,
    /// The scope of the instance whose references are walked (its `each` and `count`), for
    /// instance indexes written as expressions in its own attributes.
    scope: Option<&'a Scope<'a>>,
}

impl RefWalker<'_> {
    fn config(&self, path: &ModulePath) -> &ModuleConfig {
        let m = self.expanded.modules.get(path).map(|i| i.module).unwrap_or(0);
        &self.stack.modules[m]
    }

    fn instances_of(&self, path: &ModulePath, kind: Kind, name: &str, key: Option<&InstanceKey>) -> Vec<Address> {
        let base = Address::new(kind, name).in_module(path.clone());
        if let Some(key) = key {
            let one = Address { key: Some(key.clone()), ..base };
            return if self.expanded.instances.contains_key(&one) { vec![one] } else { Vec::new() };
        }
        self.expanded.instances.range(base.clone()..).take_while(|(a, _)| a.config_addr() == base).map(|(a, _)| a.clone()).collect()
    }

    /// Component instances an expression reaches, each with the span (in `e`'s file) of the
    /// reference that leads there.
    fn refs_of(&mut self, path: &ModulePath, e: &Expr) -> Vec<(Address, Span)> {
        let mut c = Collector::default();
        c.visit_expr(&e.expr);
        let file = e.span.file;
        let mut out = Vec::new();
        for f in c.found {
            let at = Span { file, range: f.span.clone() };
            for target in self.resolve(path, &f, file) {
                out.push((target, at.clone()));
            }
        }
        out
    }

    /// The instance key an index expression evaluates to in the walked instance's own
    /// attributes, when it is known without any component (`each.value.site`); None otherwise
    /// (then the reference reaches every instance, which is always safe).
    fn index_key(&self, path: &ModulePath, f: &Found, file: FileId) -> Option<InstanceKey> {
        let scope = self.scope.filter(|s| s.path == *path && self.visiting.is_empty())?;
        let key = scope.eval(f.index_expr.as_ref()?, file).ok()?;
        if !key.sensitive.is_empty() || !key.components.is_empty() {
            return None;
        }
        InstanceKey::from_value(&key.value)
    }

    fn resolve(&mut self, path: &ModulePath, f: &Found, file: FileId) -> Vec<Address> {
        let first = f.attrs.first().cloned().flatten();
        match (f.root.as_str(), first) {
            ("local", Some(name)) => {
                let key = (path.clone(), format!("local.{name}"));
                if !self.visiting.insert(key.clone()) {
                    return Vec::new();
                }
                let expr = self.config(path).locals.get(&name).cloned();
                let out = expr.map(|e| self.refs_of(path, &e).into_iter().map(|(a, _)| a).collect()).unwrap_or_default();
                self.visiting.remove(&key);
                out
            }
            ("var", Some(name)) if !path.is_root() => {
                let Some(inst) = self.expanded.modules.get(path).cloned() else { return Vec::new() };
                let parent = inst.parent.clone().unwrap_or_default();
                let key = (path.clone(), format!("var.{name}"));
                if !self.visiting.insert(key.clone()) {
                    return Vec::new();
                }
                let input = inst.call.as_deref().and_then(|c| self.config(&parent).calls.get(c)).and_then(|c| c.inputs.get(&name)).map(|(e, _)| e.clone());
                let out = input.map(|e| self.refs_of(&parent, &e).into_iter().map(|(a, _)| a).collect()).unwrap_or_default();
                self.visiting.remove(&key);
                out
            }
            ("module", Some(name)) => {
                let Some(call) = self.config(path).calls.get(&name).cloned() else { return Vec::new() };
                let children: Vec<ModulePath> = self
                    .expanded
                    .modules
                    .iter()
                    .filter(|(p, i)| i.parent.as_ref() == Some(path) && i.call.as_deref() == Some(name.as_str()) && p.0.len() == path.0.len().saturating_add(1))
                    .map(|(p, _)| p.clone())
                    .collect();
                let child_cfg = self.stack.modules[call.module].clone();
                // module.x.outputs.y / module.x.y / module.x[k].y
                let names: Vec<String> = f.attrs.iter().skip(1).flatten().filter(|a| *a != "outputs").cloned().collect();
                let wanted: Vec<String> = match names.first() {
                    Some(n) if child_cfg.outputs.contains_key(n) => vec![n.clone()],
                    _ => child_cfg.outputs.keys().cloned().collect(),
                };
                let mut out = Vec::new();
                for child in children {
                    for o in &wanted {
                        let key = (child.clone(), format!("output.{o}"));
                        if !self.visiting.insert(key.clone()) {
                            continue;
                        }
                        if let Some(decl) = child_cfg.outputs.get(o) {
                            out.extend(self.refs_of(&child, &decl.value).into_iter().map(|(a, _)| a));
                        }
                        self.visiting.remove(&key);
                    }
                }
                out
            }
            ("data", Some(ty)) => match f.attrs.get(1).cloned().flatten() {
                // data.TYPE.NAME[key]: the key is the third operator.
                Some(name) => self.instances_of(path, Kind::Data, &format!("{ty}.{name}"), f.data_index_literal.as_ref()),
                None => Vec::new(),
            },
            (kw, Some(name)) => match Kind::from_keyword(kw) {
                Some(kind) => {
                    let key = f.index_literal.clone().or_else(|| self.index_key(path, f, file));
                    self.instances_of(path, kind, &name, key.as_ref())
                }
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// `depends_on` entries: a component (all instances) or a whole module call.
    fn depends_on(&mut self, path: &ModulePath, e: &Expr) -> Vec<(Address, Span)> {
        let file = e.span.file;
        let at = e.span.clone();
        let (root, attrs) = match &e.expr {
            Expression::Traversal(t) => match &t.expr {
                Expression::Variable(v) => (
                    v.as_str().to_string(),
                    t.operators
                        .iter()
                        .map(|o| match o.value() {
                            TraversalOperator::GetAttr(id) => Some(id.as_str().to_string()),
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => (String::new(), Vec::new()),
            },
            _ => (String::new(), Vec::new()),
        };
        let name = attrs.first().cloned().flatten();
        match (root.as_str(), name) {
            ("module", Some(name)) => {
                if !self.config(path).calls.contains_key(&name) {
                    self.diags.push(
                        Diagnostic::error("Invalid depends_on reference", format!("No module call named {name:?} is declared in this module.")).at(Some(at)),
                    );
                    return Vec::new();
                }
                let prefix = path.child(&name, None);
                let out: Vec<(Address, Span)> = self
                    .expanded
                    .instances
                    .keys()
                    .filter(|a| {
                        a.module.0.len() > path.0.len()
                            && a.module.0[..path.0.len()] == path.0[..]
                            && a.module.0[path.0.len()].name == prefix.0[path.0.len()].name
                    })
                    .map(|a| (a.clone(), at.clone()))
                    .collect();
                out
            }
            (kw, Some(name)) if Kind::from_keyword(kw).is_some() => {
                let kind = Kind::from_keyword(kw).expect("checked");
                if self.config(path).component(kind, &name).is_none() {
                    let declared: Vec<String> = self.config(path).components.iter().filter(|c| c.kind == kind).map(|c| c.name.clone()).collect();
                    let mut d =
                        Diagnostic::error("Reference to undeclared component", format!("depends_on names {kw}.{name}, which is not declared in this module."))
                            .at(Some(at));
                    if let Some(s) = did_you_mean(&name, declared.iter().map(String::as_str)) {
                        d = d.hint(format!("did you mean {kw}.{s}?"));
                    }
                    self.diags.push(d);
                    return Vec::new();
                }
                self.instances_of(path, kind, &name, None).into_iter().map(|a| (a, at.clone())).collect()
            }
            _ => {
                self.diags.push(
                    Diagnostic::error(
                        "Invalid depends_on reference",
                        "depends_on entries must be component or module references, like vault.main or module.site.",
                    )
                    .at(Some(Span { file, range: e.span.range.clone() })),
                );
                Vec::new()
            }
        }
    }
}

/// The evaluated desired configuration of one instance.
#[derive(Debug, Clone)]
pub struct Desired {
    pub addr: Address,
    pub type_name: String,
    pub schema: &'static ComponentSchema,
    /// Every input attribute (set, defaulted, or null); component references are addresses.
    pub inputs: Value,
    /// Sensitive paths of `inputs` (from sensitive values and sensitive schema attributes).
    pub sensitive: Vec<AttrPath>,
    /// The cluster this component runs on, if it runs on one.
    pub cluster: Option<Address>,
    /// Component-typed attributes: attribute name → referenced address.
    pub refs: BTreeMap<String, Address>,
    pub lifecycle: Lifecycle,
}

impl Desired {
    /// The desired inputs, with the live value of every attribute `ignore_changes` names
    /// (planning and applying both use it, so both see the same inputs).
    pub fn inputs_keeping_ignored(&self, live: Option<&Value>) -> Value {
        let mut inputs = self.inputs.clone();
        if let (Some(live), Value::Map(m)) = (live, &mut inputs) {
            let ignored = &self.lifecycle.ignore_changes;
            let ignore_all = ignored.iter().any(|(n, _)| n == "all");
            for a in self.schema.inputs() {
                if (ignore_all || ignored.iter().any(|(n, _)| n == a.name))
                    && let Some(v) = live.as_map().and_then(|p| p.get(a.name))
                {
                    m.insert(a.name.to_string(), v.clone());
                }
            }
        }
        inputs
    }

    /// The sensitive paths of the planned value: the desired ones and every computed
    /// sensitive attribute (generated secrets).
    pub fn planned_sensitive(&self) -> Vec<AttrPath> {
        let mut out = self.sensitive.clone();
        out.extend(self.schema.attributes.iter().filter(|a| a.sensitive && a.computed).map(|a| AttrPath::attr(a.name)));
        out.sort();
        out.dedup();
        out
    }
}

/// The value of a root output; a sensitive value in an output not marked sensitive is an
/// error (validate, plan and apply all evaluate outputs through this).
pub fn root_output(scope: &Scope<'_>, decl: &super::OutputDecl) -> Result<Marked, Diagnostic> {
    let v = scope.eval(&decl.value.expr, decl.value.span.file)?;
    if v.is_sensitive() && !decl.sensitive {
        return Err(Diagnostic::error("Output refers to sensitive values", format!("The output {:?} would show a sensitive value.", decl.name))
            .at(Some(decl.value.span.clone()))
            .hint("add sensitive = true to the output block (the value is then hidden in plans and `kdeploy output`)"));
    }
    Ok(v)
}

/// The Kubernetes namespaces of the stack's components on `cluster` (a drift_schedule's default
/// `namespaces`), sorted. A component whose cluster or namespace depends on its `each` or
/// `count` is counted on every cluster, with its kind's namespace when its own cannot be told.
fn stack_namespaces(ctx: &Ctx<'_>, stack: &Stack, cluster: Option<&Address>) -> Value {
    let mut found = std::collections::BTreeSet::new();
    for path in ctx.instances.keys() {
        let scope = ctx.scope(path);
        for decl in stack.modules[scope.module].components.iter().filter(|d| !matches!(d.kind, Kind::Cluster | Kind::Data)) {
            let Ok((type_name, schema)) = component_type(&scope, decl) else { continue };
            let Some(attr) = schema.attr("namespace") else { continue };
            if type_name == "external" || !on_cluster(&scope, decl, cluster) {
                continue;
            }
            let declared =
                decl.attrs.get("namespace").and_then(|(e, _)| scope.eval(&e.expr, e.span.file).ok()).and_then(|m| m.value.as_str().map(str::to_string));
            let ns = declared
                .or_else(|| attr.default.as_ref().and_then(Value::as_str).map(str::to_string))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| kdeploy_provider::names::default_namespace(decl.kind, &type_name).to_string());
            found.insert(ns);
        }
    }
    Value::List(found.into_iter().map(Value::String).collect())
}

/// Whether a declaration may run on `cluster`: it names no cluster (the stack's only one), or
/// one that cannot be told without its `each`, or that one.
fn on_cluster(scope: &Scope<'_>, decl: &ComponentDecl, cluster: Option<&Address>) -> bool {
    let (Some(cluster), Some((e, _))) = (cluster, decl.attrs.get("cluster")) else { return true };
    scope.reference_address(&e.expr, e.span.file).is_none_or(|a| a == *cluster)
}

/// The type of a cluster (`docker`, `kubernetes`, ...), when its `type` can be told without
/// its instance's `each` or `count`.
fn cluster_type(ctx: &Ctx<'_>, stack: &Stack, addr: &Address) -> Option<String> {
    let scope = ctx.scope(&addr.module);
    let decl = stack.modules[scope.module].components.iter().find(|d| d.kind == Kind::Cluster && d.name == addr.name)?;
    component_type(&scope, decl).ok().map(|(t, _)| t)
}

/// Evaluates an instance's `type` (must be known) and returns its schema.
pub fn component_type(scope: &Scope<'_>, decl: &ComponentDecl) -> Result<(String, &'static ComponentSchema), Diagnostic> {
    let kind = decl.kind;
    let valid = kind.types().join(", ");
    let type_name = match &decl.type_expr {
        None => match kind.default_type() {
            Some(t) => t.to_string(),
            None => {
                return Err(Diagnostic::error("Missing required argument", format!("A {kind} needs a type: one of {valid}."))
                    .at(Some(decl.span.clone()))
                    .hint(format!("add type = \"{}\"", kind.types()[0])));
            }
        },
        Some(e) => {
            let v = scope.eval(&e.expr, e.span.file)?;
            match v.value {
                Value::String(s) => s,
                Value::Unknown(_) => {
                    return Err(Diagnostic::error("Invalid component type", "The type must be known before apply (use a literal, a variable or a local).")
                        .at(Some(e.span.clone())));
                }
                other => {
                    return Err(
                        Diagnostic::error("Invalid component type", format!("The type must be a string, got {}.", other.type_name())).at(Some(e.span.clone()))
                    );
                }
            }
        }
    };
    match kdeploy_provider::schema_ref(kind, &type_name) {
        Some(s) => Ok((type_name, s)),
        None => {
            let at = decl.type_expr.as_ref().map(|e| e.span.clone()).unwrap_or_else(|| decl.span.clone());
            let mut d = Diagnostic::error("Unknown component type", format!("{type_name:?} is not a {kind} type. Valid types: {valid}.")).at(Some(at));
            if let Some(s) = did_you_mean(&type_name, kind.types().iter().copied()) {
                d = d.hint(format!("did you mean type = \"{s}\"?"));
            }
            Err(d)
        }
    }
}

/// Evaluates one instance's attributes (and nested blocks) against its schema, then the
/// component's own naming rules. All problems are collected.
pub fn desired(ctx: &Ctx<'_>, stack: &Stack, inst: &Instance, clusters: &[Address]) -> Result<Desired, Diagnostics> {
    let decl = &stack.modules[inst.module].components[inst.decl];
    let mut scope = ctx.scope(&inst.addr.module);
    scope.each = inst.each.clone();
    scope.count = inst.count;
    let (type_name, schema) = component_type(&scope, decl).map_err(Diagnostics::from)?;
    let mut ev = InstanceEval { scope: &scope, decl, type_name: &type_name, diags: Diagnostics::new(), refs: BTreeMap::new(), spans: Vec::new() };

    let mut entries: Vec<(String, Marked)> = Vec::new();
    for (name, (expr, key_span)) in &decl.attrs {
        let Some(attr) = schema.attr(name) else {
            if null_for_another_type(&scope, decl.kind, name, expr) {
                continue;
            }
            let valid: Vec<&str> = schema.inputs().map(|a| a.name).collect();
            let mut d = Diagnostic::error(
                "Unsupported argument",
                format!("A {} of type {type_name:?} has no argument {name:?}. Valid arguments: {}.", decl.kind, valid.join(", ")),
            )
            .at(Some(key_span.clone()));
            if let Some(s) = did_you_mean(name, valid.iter().copied()) {
                d = d.hint(format!("did you mean {s}?"));
            }
            ev.diags.push(d);
            continue;
        };
        if attr.computed {
            ev.diags.push(
                Diagnostic::error("Value for computed attribute", format!("{name:?} is set by kdeploy after apply and cannot be configured."))
                    .at(Some(key_span.clone()))
                    .hint(format!("read it elsewhere as {}.{name}", inst.addr)),
            );
            continue;
        }
        if let Some(v) = ev.attribute(name, attr, expr) {
            entries.push((name.clone(), v));
        }
    }
    entries.extend(ev.nested_blocks(schema));
    for attr in schema.inputs() {
        if entries.iter().any(|(n, _)| n == attr.name) || decl.attrs.contains_key(attr.name) || attr.name == "cluster" {
            continue;
        }
        if attr.required {
            ev.diags.push(
                Diagnostic::error(
                    "Missing required argument",
                    format!("The argument {:?} is required for a {} of type {type_name:?}, but it is not set.", attr.name, decl.kind),
                )
                .at(Some(decl.span.clone()))
                .hint(format!("add {} = ... ({})", attr.name, attr.description)),
            );
            continue;
        }
        let default = attr.default.clone().or_else(|| {
            attr.derived_default.map(|d| match d {
                kdeploy_provider::schema::DerivedDefault::StackName => Value::String(stack.name()),
                kdeploy_provider::schema::DerivedDefault::StackNamespaces => {
                    let own = ev.refs.get("cluster").cloned().or_else(|| (clusters.len() == 1).then(|| clusters[0].clone()));
                    stack_namespaces(ctx, stack, own.as_ref())
                }
            })
        });
        entries.push((attr.name.to_string(), Marked::plain(default.unwrap_or(Value::Null))));
    }
    // The cluster: explicit, or the only cluster in the stack.
    let mut cluster = ev.refs.get("cluster").cloned();
    if schema.attr("cluster").is_some() && cluster.is_none() {
        match clusters {
            [only] => cluster = Some(only.clone()),
            [] => ev.diags.push(
                Diagnostic::error("No cluster to run on", format!("{} runs on a cluster, but the stack declares none.", inst.addr))
                    .at(Some(decl.span.clone()))
                    .hint("declare one, e.g. cluster \"edge\" { type = \"docker\" }"),
            ),
            many => ev.diags.push(
                Diagnostic::error(
                    "Ambiguous cluster",
                    format!(
                        "The stack declares {} clusters ({}), so {} must say which one it runs on.",
                        many.len(),
                        many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                        inst.addr
                    ),
                )
                .at(Some(decl.span.clone()))
                .hint(format!("add cluster = {}", many[0])),
            ),
        }
        if let Some(c) = &cluster {
            entries.push(("cluster".into(), Marked::plain(Value::String(c.to_string()))));
        }
    }
    if ev.diags.has_errors() {
        return Err(ev.diags);
    }
    let mut marked = marked_map(entries);
    if let Value::Map(m) = &marked.value {
        for attr in schema.inputs() {
            marked.sensitive.extend(attr.sensitive_paths(m.get(attr.name).unwrap_or(&Value::Null)));
        }
        // The component's own rules (a vault's provider, queue and account names), with the
        // referenced components' values as far as known, borrowed from the value table.
        let mut problems = Vec::new();
        let runtime = cluster.as_ref().and_then(|c| cluster_type(ctx, stack, c));
        ctx.resolver.with_values(&ev.refs, &mut |referenced| problems = kdeploy_provider::components::check(decl.kind, m, referenced, runtime.as_deref()));
        for p in problems {
            ev.diags.push(Diagnostic::error("Invalid component configuration", p.message).at(Some(ev.span_of(&p.path))).hint(p.hint));
        }
    }
    marked.sensitive.sort();
    marked.sensitive.dedup();
    for (name, span) in &decl.lifecycle.ignore_changes {
        if name != "all" && schema.attr(name).is_none() {
            let mut d = Diagnostic::error("Invalid ignore_changes", format!("{name:?} is not an argument of a {} of type {type_name:?}.", decl.kind))
                .at(Some(span.clone()));
            if let Some(s) = did_you_mean(name, schema.inputs().map(|a| a.name)) {
                d = d.hint(format!("did you mean {s}?"));
            }
            ev.diags.push(d);
        }
    }
    if ev.diags.has_errors() {
        return Err(ev.diags);
    }
    let refs = ev.refs;
    Ok(Desired {
        addr: inst.addr.clone(),
        type_name,
        schema,
        inputs: marked.value,
        sensitive: marked.sensitive,
        cluster,
        refs,
        lifecycle: decl.lifecycle.clone(),
    })
}

/// The evaluation of one instance: what it found so far.
struct InstanceEval<'a, 's> {
    scope: &'a Scope<'s>,
    decl: &'a ComponentDecl,
    type_name: &'a str,
    diags: Diagnostics,
    /// Component-typed attributes (`storage`, or `providers.archive.storage` in a block) →
    /// the referenced address.
    refs: BTreeMap<String, Address>,
    /// Where each input path was written, for diagnostics about values.
    spans: Vec<(AttrPath, Span)>,
}

impl InstanceEval<'_, '_> {
    /// Evaluates one attribute (top level, or `path` inside a block) against its schema.
    fn attribute(&mut self, path: &str, attr: &kdeploy_provider::AttrSchema, expr: &Expr) -> Option<Marked> {
        let at = path_of(path);
        self.spans.push((at, expr.span.clone()));
        // A plain reference (`vault = vault.central`) is known by its address alone: the
        // referenced component's value (a central Vault's every account) is not copied.
        let plain_ref = match &attr.ty {
            AttrType::Component(_) => self.scope.reference_address(&expr.expr, expr.span.file),
            _ => None,
        };
        let value = match plain_ref {
            Some(addr) => Marked::component(&addr, Value::Unknown(addr.to_string()), Vec::new()),
            None => match self.scope.eval(&expr.expr, expr.span.file) {
                Ok(v) => v,
                Err(d) => {
                    self.diags.push(d);
                    return None;
                }
            },
        };
        if let AttrType::Component(want) = &attr.ty {
            return self.reference(path, *want, value, expr).map(|a| Marked::plain(Value::String(a.to_string())));
        }
        match attr.ty.conform(&value.value) {
            Ok(v) => {
                let v = self.block_map_refs(path, &attr.ty, v, &value.components, expr);
                Some(Marked { value: v, sensitive: value.sensitive, components: Vec::new() })
            }
            Err(e) => {
                let shown = if value.is_sensitive() { "the value is sensitive".to_string() } else { e };
                self.diags
                    .push(Diagnostic::error("Incorrect attribute value type", format!("Invalid value for {path:?}: {shown}.")).at(Some(expr.span.clone())));
                None
            }
        }
    }

    /// A component reference: recorded as an edge target and kept as its address.
    fn reference(&mut self, path: &str, want: Kind, marked: Marked, expr: &Expr) -> Option<Address> {
        // A component that is not evaluated (it has an error of its own) is unknown and still
        // marked as that component: a valid reference, so its error is not echoed here.
        let target = marked.component_address().cloned();
        let value = marked.value;
        match target {
            Some(target) if target.kind == want => {
                self.refs.insert(path.to_string(), target.clone());
                return Some(target);
            }
            Some(target) => self.diags.push(
                Diagnostic::error("Incorrect attribute value type", format!("{path:?} must reference a {want} component, but {target} is a {}.", target.kind))
                    .at(Some(expr.span.clone()))
                    .hint(format!("use a reference like {want}.NAME")),
            ),
            None if value.is_unknown() => self.diags.push(
                Diagnostic::error("Invalid component reference", format!("{path:?} must be known before apply: a reference like {want}.NAME."))
                    .at(Some(expr.span.clone())),
            ),
            None if value.is_null() => {}
            None => self.diags.push(
                Diagnostic::error(
                    "Incorrect attribute value type",
                    format!("{path:?} must be a reference to a {want} component, like {want}.main; got {}.", value.type_name()),
                )
                .at(Some(expr.span.clone()))
                .hint(format!("write {path} = {want}.NAME")),
            ),
        }
        None
    }

    /// In a block map written as an attribute (`providers = { a = { storage = ... } }`), the
    /// component references become addresses and edges, as in the block form.
    fn block_map_refs(&mut self, path: &str, ty: &AttrType, value: Value, components: &[(AttrPath, Address)], expr: &Expr) -> Value {
        let (AttrType::Map(inner), Value::Map(entries)) = (ty, &value) else { return value };
        let AttrType::Object(fields) = inner.as_ref() else { return value };
        let mut out = entries.clone();
        for (key, entry) in out.iter_mut() {
            let Value::Map(m) = entry else { continue };
            for f in fields {
                if let (AttrType::Component(want), Some(v)) = (&f.ty, m.get(f.name).cloned()) {
                    if v.is_null() {
                        continue;
                    }
                    let field_path = format!("{path}.{key}.{}", f.name);
                    let at = AttrPath::root().child_key(key).child_key(f.name);
                    let marks = components.iter().filter(|(p, _)| *p == at).map(|(_, a)| (AttrPath::root(), a.clone())).collect();
                    let addr = self.reference(&field_path, *want, Marked { value: v, sensitive: Vec::new(), components: marks }, expr);
                    m.insert(f.name.to_string(), addr.map(|a| Value::String(a.to_string())).unwrap_or(Value::Null));
                }
            }
        }
        Value::Map(out)
    }

    /// The nested blocks, as (map attribute, entries by block name).
    fn nested_blocks(&mut self, schema: &kdeploy_provider::ComponentSchema) -> Vec<(String, Marked)> {
        let mut by_attr: BTreeMap<&'static str, Vec<(String, Marked)>> = BTreeMap::new();
        let mut seen: BTreeMap<(String, String), Span> = BTreeMap::new();
        for nb in &self.decl.blocks {
            let Some(bs) = schema.block(&nb.ident) else {
                let mut valid: Vec<&str> = schema.blocks.iter().map(|b| b.name).collect();
                valid.push("lifecycle");
                let mut d = Diagnostic::error(
                    "Unsupported block type",
                    format!(
                        "Blocks of type {:?} are not expected in a {} of type {:?}. Valid: {}.",
                        nb.ident,
                        self.decl.kind,
                        self.type_name,
                        valid.join(", ")
                    ),
                )
                .at(Some(nb.span.clone()));
                d = match did_you_mean(&nb.ident, valid.iter().copied()) {
                    Some(s) => d.hint(format!("did you mean {s}?")),
                    None => d.hint(format!("maps are written as attributes: {} = {{ key = \"value\" }}", nb.ident)),
                };
                self.diags.push(d);
                continue;
            };
            let (key, key_span) = match (&nb.label, bs.unlabeled_name) {
                (Some((l, sp)), _) => (l.clone(), sp.clone()),
                (None, Some(n)) => (n.to_string(), nb.span.clone()),
                (None, None) => {
                    self.diags.push(
                        Diagnostic::error("Missing block label", format!("A {} block needs a name.", nb.ident))
                            .at(Some(nb.span.clone()))
                            .hint(format!("write {} \"NAME\" {{ ... }}", nb.ident)),
                    );
                    continue;
                }
            };
            if let Some(first) = seen.get(&(nb.ident.clone(), key.clone())) {
                let at = self.scope.ctx.sources.location(first);
                self.diags.push(
                    Diagnostic::error("Duplicate block", format!("A {} block named {key:?} is already defined at {at}; names must be unique.", nb.ident))
                        .at(Some(key_span))
                        .hint("rename or remove one of them"),
                );
                continue;
            }
            seen.insert((nb.ident.clone(), key.clone()), key_span.clone());
            if let Some((_, attr_span)) = self.decl.attrs.get(bs.attr) {
                self.diags.push(
                    Diagnostic::error("Conflicting definitions", format!("{} is set as an attribute and by {} blocks.", bs.attr, nb.ident))
                        .at(Some(nb.span.clone()))
                        .hint(format!("use either the {} blocks or {} = {{ ... }} (at {})", nb.ident, bs.attr, self.scope.ctx.sources.location(attr_span))),
                );
                continue;
            }
            let entry_path = format!("{}.{key}", bs.attr);
            self.spans.push((path_of(&entry_path), key_span));
            let fields = schema.block_fields(bs);
            let mut obj: Vec<(String, Marked)> = Vec::new();
            for (name, (expr, name_span)) in &nb.attrs {
                let Some(f) = fields.iter().find(|f| f.name == name) else {
                    let valid: Vec<&str> = fields.iter().map(|f| f.name).collect();
                    let mut d = Diagnostic::error(
                        "Unsupported argument",
                        format!("A {} block has no argument {name:?}. Valid arguments: {}.", nb.ident, valid.join(", ")),
                    )
                    .at(Some(name_span.clone()));
                    if let Some(s) = did_you_mean(name, valid.iter().copied()) {
                        d = d.hint(format!("did you mean {s}?"));
                    }
                    self.diags.push(d);
                    continue;
                };
                if let Some(v) = self.attribute(&format!("{entry_path}.{name}"), f, expr) {
                    obj.push((name.clone(), v));
                }
            }
            for f in fields {
                if nb.attrs.contains_key(f.name) {
                    continue;
                }
                if f.required {
                    self.diags.push(
                        Diagnostic::error(
                            "Missing required argument",
                            format!("The argument {:?} is required in a {} block, but it is not set.", f.name, nb.ident),
                        )
                        .at(Some(nb.span.clone()))
                        .hint(format!("add {} = ... ({})", f.name, f.description)),
                    );
                    continue;
                }
                obj.push((f.name.to_string(), Marked::plain(f.default.clone().unwrap_or(Value::Null))));
            }
            by_attr.entry(bs.attr).or_default().push((key, marked_map(obj)));
        }
        by_attr.into_iter().map(|(attr, entries)| (attr.to_string(), marked_map(entries))).collect()
    }

    /// The span of the innermost recorded path that contains `path`, else the block header.
    fn span_of(&self, path: &AttrPath) -> Span {
        self.spans.iter().filter(|(p, _)| path.starts_with(p)).max_by_key(|(p, _)| p.0.len()).map(|(_, s)| s.clone()).unwrap_or_else(|| self.decl.span.clone())
    }
}

/// `accounts.site-a.provider` → the attribute path (keys may contain anything but dots).
fn path_of(dotted: &str) -> AttrPath {
    AttrPath(dotted.split('.').map(|k| PathStep::Key(k.to_string())).collect())
}

/// An argument of another type of the same kind, set to null: a block whose type comes from a
/// variable (`type = var.kubeconfig == null ? "docker" : "microk8s"`) sets the arguments of each
/// type it can take and null for the others; null is the same as not set.
fn null_for_another_type(scope: &Scope<'_>, kind: Kind, name: &str, expr: &Expr) -> bool {
    let elsewhere = kind.types().iter().filter_map(|t| kdeploy_provider::schema_ref(kind, t)).any(|s| s.attr(name).is_some_and(|a| !a.computed));
    elsewhere && scope.eval(&expr.expr, expr.span.file).is_ok_and(|v| v.value.is_null())
}

/// What a provider is told about a referenced component.
pub fn reference(addr: &Address, type_name: &str, value: std::sync::Arc<Value>) -> kdeploy_provider::Reference {
    kdeploy_provider::Reference {
        component: kdeploy_provider::ComponentRef { address: addr.clone(), kind: addr.kind, type_name: type_name.to_string() },
        attributes: value,
    }
}

/// A component instance's object value as references see it: its attributes, marked as that
/// component's.
pub fn object_value(addr: &Address, attrs: &Value, sensitive: &[AttrPath]) -> Marked {
    Marked::component(addr, attrs.clone(), sensitive.to_vec())
}

/// Groups instance object values the way a reference to the block sees them: the object, a
/// map by key (for_each) or a list (count).
pub fn block_value(decl: &ComponentDecl, instances: Vec<(Option<InstanceKey>, Marked)>) -> Marked {
    match decl.repetition {
        Repetition::Single => instances.into_iter().next().map(|(_, v)| v).unwrap_or_default(),
        Repetition::ForEach(_) => marked_map(instances.into_iter().map(|(k, v)| {
            let key = match k {
                Some(InstanceKey::Str(s)) => s,
                Some(InstanceKey::Int(n)) => n.to_string(),
                None => String::new(),
            };
            (key, v)
        })),
        Repetition::Count(_) => marked_list(instances.into_iter().map(|(_, v)| v).collect()),
    }
}

/// Component values by instance address, as references see them: planned values while
/// planning, applied values while applying.
pub struct ValueTable<'a> {
    stack: &'a Stack,
    expanded: &'a Expanded,
    /// Values added during this evaluation (the planner adds each planned instance).
    pub values: std::cell::RefCell<BTreeMap<Address, Marked>>,
    /// Values borrowed from the caller (the applied values during apply), read-only.
    base: Option<&'a BTreeMap<Address, Marked>>,
}

impl<'a> ValueTable<'a> {
    pub fn new(stack: &'a Stack, expanded: &'a Expanded, values: BTreeMap<Address, Marked>) -> ValueTable<'a> {
        ValueTable { stack, expanded, values: std::cell::RefCell::new(values), base: None }
    }

    /// A table over values the caller keeps (no copy).
    pub fn borrowed(stack: &'a Stack, expanded: &'a Expanded, base: &'a BTreeMap<Address, Marked>) -> ValueTable<'a> {
        ValueTable { stack, expanded, values: std::cell::RefCell::new(BTreeMap::new()), base: Some(base) }
    }
}

impl Resolver for ValueTable<'_> {
    fn component(&self, module: &ModulePath, kind: Kind, name: &str) -> Option<Marked> {
        let m = self.expanded.modules.get(module).map(|i| i.module).unwrap_or(0);
        let decl = self.stack.modules[m].component(kind, name)?;
        let base = Address::new(kind, name).in_module(module.clone());
        let values = self.values.borrow();
        let instances: Vec<(Option<InstanceKey>, Marked)> = self
            .expanded
            .instances
            .range(base.clone()..)
            .take_while(|(a, _)| a.config_addr() == base)
            .map(|(a, _)| {
                let v = values
                    .get(a)
                    .or_else(|| self.base.and_then(|b| b.get(a)))
                    .cloned()
                    .unwrap_or_else(|| Marked::component(a, Value::Unknown(a.to_string()), Vec::new()));
                (a.key.clone(), v)
            })
            .collect();
        Some(block_value(decl, instances))
    }

    fn instance(&self, module: &ModulePath, kind: Kind, name: &str, key: &Value) -> Option<Marked> {
        let addr = self.instance_address(module, kind, name, Some(key))?;
        let values = self.values.borrow();
        let v = values.get(&addr).or_else(|| self.base.and_then(|b| b.get(&addr))).cloned();
        Some(v.unwrap_or_else(|| Marked::component(&addr, Value::Unknown(addr.to_string()), Vec::new())))
    }

    fn instance_address(&self, module: &ModulePath, kind: Kind, name: &str, key: Option<&Value>) -> Option<Address> {
        let m = self.expanded.modules.get(module).map(|i| i.module).unwrap_or(0);
        let decl = self.stack.modules[m].component(kind, name)?;
        let key = match (&decl.repetition, key) {
            (Repetition::Single, None) => None,
            (Repetition::ForEach(_), Some(k @ Value::String(_))) | (Repetition::Count(_), Some(k @ Value::Number(_))) => Some(InstanceKey::from_value(k)?),
            _ => return None,
        };
        let addr = Address { key, ..Address::new(kind, name).in_module(module.clone()) };
        self.expanded.instances.contains_key(&addr).then_some(addr)
    }

    fn with_values(&self, addrs: &BTreeMap<String, Address>, f: &mut dyn FnMut(&Referenced<'_>)) {
        let values = self.values.borrow();
        let found = addrs
            .iter()
            .filter_map(|(attr, a)| {
                let v = values.get(a).or_else(|| self.base.and_then(|b| b.get(a)))?;
                Some((attr.clone(), v.value.as_map()?))
            })
            .collect();
        f(&found);
    }
}
