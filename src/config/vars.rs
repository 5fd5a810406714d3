//! Root variable values, from lowest to highest precedence (Terraform's order): the declared
//! default, `KDEPLOY_VAR_<name>` environment variables, `*.auto.kdvars` files in the stack
//! directory (in lexical order), then `-var-file` and `-var` in command-line order.
#![deny(clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use hcl_edit::structure::Structure;
use kdeploy_provider::{Kind, Value};

use super::Stack;
use super::eval::{Ctx, Marked, ModuleInstance, Resolver};
use super::load::span;
use crate::addr::ModulePath;
use crate::diag::{Diagnostic, Diagnostics, FileId, SourceMap, did_you_mean};

/// One `-var NAME=VALUE` or `-var-file FILE`, in command-line order.
#[derive(Debug, Clone, PartialEq)]
pub enum VarArg {
    Var { name: String, raw: String },
    File(PathBuf),
}

impl VarArg {
    /// Parses the text after `-var`.
    pub fn parse_var(s: &str) -> Result<VarArg, String> {
        match s.split_once('=') {
            Some((name, raw)) if !name.trim().is_empty() => Ok(VarArg::Var { name: name.trim().to_string(), raw: raw.to_string() }),
            _ => Err(format!("-var takes NAME=VALUE, got {s:?}")),
        }
    }
}

/// The environment variable prefix for variable values.
pub const ENV_PREFIX: &str = "KDEPLOY_VAR_";

struct NoComponents;
impl Resolver for NoComponents {
    fn component(&self, _: &ModulePath, _: Kind, _: &str) -> Option<Marked> {
        None
    }
}

enum Raw {
    /// A string from the environment or -var: literal for primitive types, HCL otherwise.
    Text { raw: String, origin: String },
    /// An expression from a kdvars file.
    Expr { expr: hcl_edit::expr::Expression, file: FileId, origin: String },
}

/// Collects, converts and validates the root variables.
pub fn root_values(
    stack: &Stack,
    sources: &mut SourceMap,
    args: &[VarArg],
    env: &BTreeMap<String, String>,
    allow_missing: bool,
) -> (BTreeMap<String, Marked>, Diagnostics) {
    let mut diags = Diagnostics::new();
    let raw = raw_values(stack, sources, args, env, &mut diags);
    let instances: BTreeMap<ModulePath, ModuleInstance> =
        [(ModulePath::root(), ModuleInstance { module: 0, parent: None, call: None, each: None, count: None })].into();
    let mut values = typed_values(stack, sources, &instances, raw, allow_missing, &mut diags);
    // A variable whose value was rejected is unknown from here on, so that the rest of the
    // stack is still checked without echoing the same problem.
    for name in stack.root().variables.keys() {
        values.entry(name.clone()).or_insert_with(|| Marked::plain(Value::Unknown(format!("var.{name}"))));
    }
    validate(stack, sources, &instances, &values, &mut diags);
    (values, diags)
}

/// The raw value of each root variable, later sources winning: `KDEPLOY_VAR_*`, then the
/// `*.auto.kdvars` files in name order, then `-var` and `-var-file` in command-line order.
fn raw_values(stack: &Stack, sources: &mut SourceMap, args: &[VarArg], env: &BTreeMap<String, String>, diags: &mut Diagnostics) -> BTreeMap<String, Raw> {
    let root = stack.root();
    let mut raw: BTreeMap<String, Raw> = BTreeMap::new();
    for (k, v) in env {
        if let Some(name) = k.strip_prefix(ENV_PREFIX)
            && root.variables.contains_key(name)
        {
            raw.insert(name.to_string(), Raw::Text { raw: v.clone(), origin: format!("environment variable {k}") });
        }
    }
    for path in auto_var_files(&root.dir) {
        read_var_file(stack, sources, &path, true, &mut raw, diags);
    }
    for a in args {
        match a {
            VarArg::File(p) => read_var_file(stack, sources, p, false, &mut raw, diags),
            VarArg::Var { name, raw: value } if root.variables.contains_key(name) => {
                raw.insert(name.clone(), Raw::Text { raw: value.clone(), origin: format!("-var {name}=...") });
            }
            VarArg::Var { name, .. } => {
                let mut d = Diagnostic::error(
                    "Value for undeclared variable",
                    format!("A variable named {name:?} was assigned on the command line, but the stack does not declare it."),
                );
                d = match did_you_mean(name, root.variables.keys().map(String::as_str)) {
                    Some(s) => d.hint(format!("did you mean -var {s}=...?")),
                    None => d.hint(format!("declare it with variable \"{name}\" {{}} or remove the -var")),
                };
                diags.push(d);
            }
        }
    }
    raw
}

/// The `*.auto.kdvars` files of the stack directory, in name order.
fn auto_var_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut auto: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".auto.kdvars")))
        .collect();
    auto.sort();
    auto
}

/// Reads one variables file into `raw`. An undeclared name is a warning in an automatic file
/// and an error in one given with -var-file.
fn read_var_file(stack: &Stack, sources: &mut SourceMap, path: &std::path::Path, auto: bool, raw: &mut BTreeMap<String, Raw>, diags: &mut Diagnostics) {
    let root = stack.root();
    let text = match crate::files::read_text(path, crate::files::SOURCE_LIMIT) {
        Ok(t) => t,
        Err(e) => return diags.push(Diagnostic::error("Cannot read variables file", e.0).hint("check the -var-file path")),
    };
    let shown = path.strip_prefix(&root.dir).unwrap_or(path).display().to_string();
    let file = sources.add(path, shown.clone(), text.clone());
    let body = match hcl_edit::parser::parse_body(&text) {
        Ok(b) => b,
        Err(e) => return diags.push(super::load::syntax_error(file, &text, &e, "The variables file")),
    };
    for s in body.iter() {
        match s {
            Structure::Attribute(a) if root.variables.contains_key(a.key.as_str()) => {
                raw.insert(a.key.as_str().to_string(), Raw::Expr { expr: a.value.clone(), file, origin: shown.clone() });
            }
            Structure::Attribute(a) => {
                let name = a.key.as_str();
                let mut d = Diagnostic::warning(
                    "Value for undeclared variable",
                    format!("The file assigns {name:?}, which the stack does not declare; it is ignored."),
                )
                .at(Some(span(file, &a.key)));
                if let Some(s) = did_you_mean(name, root.variables.keys().map(String::as_str)) {
                    d = d.hint(format!("did you mean {s}?"));
                }
                if !auto {
                    d.severity = crate::diag::Severity::Error;
                }
                diags.push(d);
            }
            Structure::Block(b) => diags.push(
                Diagnostic::error("Unexpected block in variables file", "A variables file holds only NAME = VALUE lines.").at(Some(span(file, &b.ident))),
            ),
        }
    }
}

/// Each declared variable's value converted to its type: given, else its default, else
/// unknown (`allow_missing`) or an error. Rejected values are left out or unknown.
fn typed_values(
    stack: &Stack,
    sources: &SourceMap,
    instances: &BTreeMap<ModulePath, ModuleInstance>,
    mut raw: BTreeMap<String, Raw>,
    allow_missing: bool,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Marked> {
    let empty = BTreeMap::new();
    let ctx = Ctx::new(stack, sources, &empty, instances, &NoComponents);
    let scope = ctx.scope(&ModulePath::root());
    let mut values: BTreeMap<String, Marked> = BTreeMap::new();
    for (name, decl) in &stack.root().variables {
        let mark = |v: Value| if decl.sensitive { Marked::secret(v) } else { Marked::plain(v) };
        let given = match raw.remove(name) {
            Some(Raw::Expr { expr, file, origin }) => scope.eval(&expr, file).map(|v| (v.value, origin)).map_err(|d| diags.push(d)).ok(),
            Some(Raw::Text { raw, origin }) => text_value(name, decl, raw, &origin).map(|v| (v, origin)).map_err(|d| diags.push(d)).ok(),
            None => match &decl.default {
                Some(d) => scope.eval(&d.expr, d.span.file).map(|v| (v.value, "the default".to_string())).map_err(|d| diags.push(d)).ok(),
                None if allow_missing => {
                    values.insert(name.clone(), mark(Value::Unknown(format!("var.{name}"))));
                    None
                }
                None => {
                    diags.push(
                        Diagnostic::error("No value for required variable", format!("The root variable {name:?} has no default and no value was given."))
                            .at(Some(decl.span.clone()))
                            .hint(format!("set it with -var {name}=..., a *.auto.kdvars file, or {ENV_PREFIX}{name}")),
                    );
                    None
                }
            },
        };
        let Some((value, origin)) = given else { continue };
        match decl.ty.convert(&value) {
            Ok(v) => {
                values.insert(name.clone(), mark(v));
            }
            Err(e) => {
                let e = if decl.sensitive { "the value is sensitive, so it is not shown".to_string() } else { e };
                diags.push(
                    Diagnostic::error("Invalid value for variable", format!("The value of {name:?} from {origin} is not a valid {}: {e}.", decl.ty))
                        .at(Some(decl.span.clone())),
                );
                values.insert(name.clone(), Marked::plain(Value::Unknown(format!("var.{name}"))));
            }
        }
    }
    values
}

/// A value given as text (`-var`, the environment): a string for primitive types, a literal
/// HCL value for collections.
fn text_value(name: &str, decl: &super::VariableDecl, raw: String, origin: &str) -> Result<Value, Diagnostic> {
    if decl.ty.is_primitive() || decl.ty == super::types::VarType::Any {
        return Ok(Value::String(raw));
    }
    match hcl_edit::parser::parse_expr(&raw) {
        Ok(expr) => literal_value(&expr).ok_or_else(|| {
            Diagnostic::error(
                "Invalid value for variable",
                format!("The value of {name:?} from {origin} must be a literal {} (no references or functions).", decl.ty),
            )
            .at(Some(decl.span.clone()))
        }),
        Err(e) => {
            Err(Diagnostic::error("Invalid value for variable", format!("The value of {name:?} from {origin} is not a valid {}: {}.", decl.ty, e.message()))
                .at(Some(decl.span.clone()))
                .hint("collections are written in HCL syntax, e.g. -var 'cams={front=\"rtsp://...\"}'"))
        }
    }
}

/// Runs the validation rules, which see every typed value.
fn validate(stack: &Stack, sources: &SourceMap, instances: &BTreeMap<ModulePath, ModuleInstance>, values: &BTreeMap<String, Marked>, diags: &mut Diagnostics) {
    let ctx = Ctx::new(stack, sources, values, instances, &NoComponents);
    let scope = ctx.scope(&ModulePath::root());
    for (name, decl) in &stack.root().variables {
        if values.get(name).is_some_and(|v| v.value.is_unknown()) {
            continue;
        }
        for v in &decl.validations {
            match scope.eval(&v.condition.expr, v.condition.span.file) {
                Ok(m) => match m.value {
                    Value::Bool(true) | Value::Unknown(_) => {}
                    Value::Bool(false) => diags.push(
                        Diagnostic::error("Invalid value for variable", format!("{}\n(validation rule of variable {name:?})", v.message))
                            .at(Some(v.condition.span.clone())),
                    ),
                    other => diags.push(
                        Diagnostic::error("Invalid validation condition", format!("The condition must be a bool, got {}.", other.type_name()))
                            .at(Some(v.condition.span.clone())),
                    ),
                },
                Err(d) => diags.push(d),
            }
        }
    }
}

/// A literal HCL value (no references), as written after `-var name=`.
fn literal_value(expr: &hcl_edit::expr::Expression) -> Option<Value> {
    use hcl_edit::expr::{Expression, ObjectKey};
    Some(match expr {
        Expression::Null(_) => Value::Null,
        Expression::Bool(b) => Value::Bool(*b.value()),
        Expression::Number(n) => Value::from_f64(n.value().as_f64()?),
        Expression::String(s) => Value::String(s.value().clone()),
        Expression::Array(a) => Value::List(a.iter().map(literal_value).collect::<Option<_>>()?),
        Expression::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        ObjectKey::Ident(i) => i.as_str().to_string(),
                        ObjectKey::Expression(Expression::String(s)) => s.value().clone(),
                        _ => return None,
                    };
                    Some((key, literal_value(v.expr())?))
                })
                .collect::<Option<_>>()?,
        ),
        Expression::Parenthesis(p) => literal_value(p.inner())?,
        _ => return None,
    })
}
