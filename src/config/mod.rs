//! The stack language: HCL files → typed declarations with spans ([`load`]) → variable values
//! ([`vars`]) → expression evaluation ([`eval`]) → component instances and their references
//! ([`expand`]).

pub mod eval;
pub mod evaluator;
pub mod expand;
pub mod functions;
pub mod imports;
pub mod load;
pub mod types;
pub mod vars;

use std::collections::BTreeMap;
use std::path::PathBuf;

use hcl_edit::expr::Expression;
use kdeploy_provider::Kind;

use crate::diag::Span;

/// An expression with the file it came from (its own spans index into that file).
#[derive(Debug, Clone)]
pub struct Expr {
    pub expr: Expression,
    pub span: Span,
}

/// `variable "name" { ... }`
#[derive(Debug, Clone)]
pub struct VariableDecl {
    pub name: String,
    pub ty: types::VarType,
    pub default: Option<Expr>,
    pub description: Option<String>,
    pub sensitive: bool,
    pub validations: Vec<Validation>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Validation {
    pub condition: Expr,
    pub message: String,
    pub span: Span,
}

/// `output "name" { value = ... }`
#[derive(Debug, Clone)]
pub struct OutputDecl {
    pub name: String,
    pub value: Expr,
    pub sensitive: bool,
    pub description: Option<String>,
    pub span: Span,
}

/// How many instances a block has.
#[derive(Debug, Clone)]
pub enum Repetition {
    Single,
    Count(Expr),
    ForEach(Expr),
}

/// `lifecycle { ... }`
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    pub prevent_destroy: bool,
    pub create_before_destroy: bool,
    /// Attribute names (or `all`) whose changes are ignored.
    pub ignore_changes: Vec<(String, Span)>,
}

/// A component block: `vault "main" { ... }`.
#[derive(Debug, Clone)]
pub struct ComponentDecl {
    pub kind: Kind,
    pub name: String,
    /// The `type` attribute, when given.
    pub type_expr: Option<Expr>,
    pub attrs: BTreeMap<String, (Expr, Span)>,
    pub repetition: Repetition,
    pub depends_on: Vec<Expr>,
    pub lifecycle: Lifecycle,
    /// Nested blocks (`account "site-a" { ... }` in a vault), checked against the schema once
    /// the component's type is known.
    pub blocks: Vec<NestedBlock>,
    /// The block header (keyword and labels), for diagnostics about the whole block.
    pub span: Span,
}

/// A block inside a component block.
#[derive(Debug, Clone)]
pub struct NestedBlock {
    pub ident: String,
    pub label: Option<(String, Span)>,
    pub attrs: BTreeMap<String, (Expr, Span)>,
    /// The block header.
    pub span: Span,
}

/// `module "name" { source = "./x" ... }`
#[derive(Debug, Clone)]
pub struct ModuleCall {
    pub name: String,
    pub source: String,
    pub inputs: BTreeMap<String, (Expr, Span)>,
    pub repetition: Repetition,
    pub depends_on: Vec<Expr>,
    pub span: Span,
    /// Index of the called module in [`Stack::modules`].
    pub module: usize,
}

/// `stack "name" { backend "local" { ... } }`
#[derive(Debug, Clone, Default)]
pub struct StackBlock {
    pub name: String,
    pub backend: Option<Backend>,
    pub drift_ignore: Vec<String>,
    /// `partition = "cluster"`: one state (and lock) per cluster, see [`Partitioning`].
    pub partition: Option<Partitioning>,
    pub span: Option<Span>,
}

/// How a stack's state is split (`stack { partition = "..." }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// One partition per cluster, with the components bound to it; `default` for the rest.
    Cluster,
}

impl Partitioning {
    /// The values `partition` accepts.
    pub const VALUES: &[&str] = &["cluster"];
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub kind: String,
    pub config: BTreeMap<String, Expr>,
    pub span: Span,
}

/// One module's declarations (the root stack directory or a module source directory).
#[derive(Debug, Clone, Default)]
pub struct ModuleConfig {
    pub dir: PathBuf,
    pub variables: BTreeMap<String, VariableDecl>,
    pub locals: BTreeMap<String, Expr>,
    pub outputs: BTreeMap<String, OutputDecl>,
    pub calls: BTreeMap<String, ModuleCall>,
    pub components: Vec<ComponentDecl>,
}

impl ModuleConfig {
    pub fn component(&self, kind: Kind, name: &str) -> Option<&ComponentDecl> {
        self.components.iter().find(|c| c.kind == kind && c.name == name)
    }
}

/// `import { to = vault.main, id = "kerberos-vault/vault" }`: take over an object that already
/// runs as the component at `to` (root module only).
#[derive(Debug, Clone)]
pub struct ImportDecl {
    /// The component instance, and where `to` is written.
    pub to: (crate::addr::Address, Span),
    /// The provider's id of the existing object; evaluated at plan (a string known then).
    pub id: Expr,
    /// The block header.
    pub span: Span,
}

/// A whole stack: the root module (index 0) and every module it calls.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    pub stack: StackBlock,
    /// The root module's `import` blocks.
    pub imports: Vec<ImportDecl>,
    pub modules: Vec<ModuleConfig>,
    /// A directory or file of the stack could not be read or parsed: its declarations are
    /// missing, so evaluating the rest would only report echoes of that error.
    pub incomplete: bool,
}

impl Stack {
    pub fn root(&self) -> &ModuleConfig {
        &self.modules[0]
    }

    /// The stack's name: `stack "NAME" {}`, else `kdeploy` (not the directory's name, which
    /// changes with where the stack is checked out).
    pub fn name(&self) -> String {
        if self.stack.name.is_empty() { "kdeploy".into() } else { self.stack.name.clone() }
    }
}
