//! Reading a stack directory: every `*.hcl` file, parsed with hcl-edit (spans kept), decoded
//! into typed declarations, and the local modules it calls, recursively.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hcl_edit::Span as _;
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Attribute, Block, Body, Structure};
use kdeploy_provider::Kind;

use super::types::VarType;
use super::*;
use crate::diag::{Diagnostic, Diagnostics, FileId, SourceMap, Span, did_you_mean};

const TOP_BLOCKS: &[&str] = &[
    "stack",
    "variable",
    "locals",
    "output",
    "import",
    "data",
    "module",
    "cluster",
    "object_storage",
    "database",
    "broker",
    "vault",
    "agent",
    "hub",
    "factory",
    "drift_schedule",
    "chart",
];

/// The `.hcl` entries of a directory, sorted by name: every one, whatever it is (a dangling
/// symlink, a FIFO or a directory named `*.hcl` is reported when read, never skipped: skipping
/// it would plan to destroy what it declares).
pub fn stack_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "hcl")).collect();
    files.sort();
    Ok(files)
}

/// `override.hcl` and `*_override.hcl`, as Terraform names them.
pub fn is_override_file(path: &Path) -> bool {
    path.file_stem().and_then(|s| s.to_str()).is_some_and(|s| s == "override" || s.ends_with("_override"))
}

fn display_path(base: &Path, path: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).display().to_string()
}

/// Loads the stack in `dir`. Every problem found is returned as a diagnostic; the stack is
/// returned as far as it could be decoded.
pub fn load_stack(dir: &Path, sources: &mut SourceMap) -> (Stack, Diagnostics) {
    let mut loader = Loader {
        base: dir.to_path_buf(),
        sources,
        diags: Diagnostics::new(),
        stack: Stack::default(),
        loading: Vec::new(),
        overriding: false,
        unreadable: Default::default(),
    };
    loader.load_module(dir, None);
    let Loader { stack, diags, .. } = loader;
    (stack, diags)
}

struct Loader<'a> {
    base: PathBuf,
    sources: &'a mut SourceMap,
    diags: Diagnostics,
    stack: Stack,
    /// Module directories being loaded (to report a module that calls itself).
    loading: Vec<PathBuf>,
    /// Decoding override files: blocks that cannot be overridden are refused.
    overriding: bool,
    /// Modules whose directory could not be read (reported once, not checked further).
    unreadable: std::collections::BTreeSet<usize>,
}

pub(crate) fn span(file: FileId, node: &impl hcl_edit::Span) -> Span {
    Span { file, range: node.span().unwrap_or(0..0) }
}

/// The diagnostic of an HCL syntax error in `text` (`what`: "The file", "The variables file"),
/// the caret on the culprit: the parser reports where it gave up, which for an invalid escape
/// is after the backslash that starts it.
pub(crate) fn syntax_error(file: FileId, text: &str, e: &hcl_edit::parser::Error, what: &str) -> Diagnostic {
    let message = e.message().to_string();
    let mut at = e.location().offset().min(text.len());
    if message.contains("escape") {
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        if let Some(backslash) = text[line_start..at].rfind('\\') {
            at = line_start + backslash;
        }
    }
    let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
    Diagnostic::error("Invalid HCL syntax", format!("{what} could not be parsed: {message}.")).at(Some(range_span(file, at..end)))
}

fn range_span(file: FileId, range: Range<usize>) -> Span {
    Span { file, range }
}

impl Loader<'_> {
    fn load_module(&mut self, dir: &Path, call_span: Option<&Span>) -> usize {
        let index = self.stack.modules.len();
        self.stack.modules.push(ModuleConfig { dir: dir.to_path_buf(), ..Default::default() });
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        self.loading.push(canonical);
        let files = match stack_files(dir) {
            Ok(f) => f,
            Err(e) => {
                self.stack.incomplete = true;
                self.diags.push(
                    Diagnostic::error("Cannot read stack directory", format!("{}: {e}", dir.display()))
                        .at(call_span.cloned())
                        .hint("check the path (for modules: `source` is relative to the calling file's directory)"),
                );
                self.loading.pop();
                self.unreadable.insert(index);
                return index;
            }
        };
        if files.is_empty() {
            self.stack.incomplete = true;
            self.diags.push(
                Diagnostic::error("No stack files", format!("{} contains no .hcl files.", dir.display()))
                    .at(call_span.cloned())
                    .hint("stack files end in .hcl; use -C DIR to point kdeploy at the stack directory"),
            );
        }
        // Override files (`override.hcl`, `*_override.hcl`) are merged into the blocks the other
        // files declare, after them, as Terraform does.
        let (overrides, files): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|p| is_override_file(p));
        self.load_files(index, files);
        if !overrides.is_empty() {
            let scratch = self.stack.modules.len();
            self.stack.modules.push(ModuleConfig { dir: dir.to_path_buf(), ..Default::default() });
            self.overriding = true;
            self.load_files(scratch, overrides);
            self.overriding = false;
            let over = self.stack.modules.remove(scratch);
            self.merge_override(index, over);
        }
        self.loading.pop();
        index
    }

    fn load_files(&mut self, index: usize, files: Vec<PathBuf>) {
        for path in files {
            let bytes = match crate::files::read(&path, crate::files::SOURCE_LIMIT) {
                Ok(b) => b,
                Err(e) => {
                    self.stack.incomplete = true;
                    self.diags.push(
                        Diagnostic::error("Cannot read stack file", e.0)
                            .hint("every .hcl file of the stack directory belongs to the stack: fix it, or rename it so it does not end in .hcl"),
                    );
                    continue;
                }
            };
            let text = match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                    let file = self.sources.add(&path, display_path(&self.base, &path), lossy);
                    self.stack.incomplete = true;
                    self.diags.push(
                        Diagnostic::error("Invalid UTF-8", format!("The file is not valid UTF-8 at byte {at}."))
                            .at(Some(range_span(file, at..at + char::REPLACEMENT_CHARACTER.len_utf8())))
                            .hint("save the file as UTF-8"),
                    );
                    continue;
                }
            };
            let file = self.sources.add(&path, display_path(&self.base, &path), text.clone());
            match hcl_edit::parser::parse_body(&text) {
                Ok(body) => self.decode_body(index, file, &body, index == 0),
                Err(e) => {
                    self.stack.incomplete = true;
                    self.diags.push(syntax_error(file, &text, &e, "The file").hint("fix the syntax at the marked position; other files were still checked"));
                }
            }
        }
    }

    /// Merges the blocks of override files into the module's blocks of the same type and
    /// name: set attributes replace the base ones, nested blocks of a type replace all of that
    /// type. An override without a base block is an error.
    fn merge_override(&mut self, index: usize, over: ModuleConfig) {
        let missing = |what: String, span: &Span| {
            Diagnostic::error("Missing base block for override", format!("{what} is overridden, but no other file of the stack declares it."))
                .at(Some(span.clone()))
                .hint("override files only change blocks declared elsewhere; declare it in a normal .hcl file")
        };
        for c in over.components {
            let Some(base) = self.stack.modules[index].components.iter_mut().find(|b| b.kind == c.kind && b.name == c.name) else {
                self.diags.push(missing(format!("{}.{}", c.kind, c.name), &c.span));
                continue;
            };
            base.attrs.extend(c.attrs);
            if c.type_expr.is_some() {
                base.type_expr = c.type_expr;
            }
            if !matches!(c.repetition, Repetition::Single) {
                base.repetition = c.repetition;
            }
            if !c.depends_on.is_empty() {
                base.depends_on = c.depends_on;
            }
            for ident in c.blocks.iter().map(|b| b.ident.clone()).collect::<std::collections::BTreeSet<_>>() {
                base.blocks.retain(|b| b.ident != ident);
            }
            base.blocks.extend(c.blocks);
        }
        for (name, v) in over.variables {
            let Some(base) = self.stack.modules[index].variables.get_mut(&name) else {
                self.diags.push(missing(format!("variable {name:?}"), &v.span));
                continue;
            };
            if v.default.is_some() {
                base.default = v.default;
            }
            if v.ty != types::VarType::Any {
                base.ty = v.ty;
            }
            if v.description.is_some() {
                base.description = v.description;
            }
        }
        for (name, o) in over.outputs {
            match self.stack.modules[index].outputs.get_mut(&name) {
                Some(base) => base.value = o.value,
                None => self.diags.push(missing(format!("output {name:?}"), &o.span)),
            }
        }
        for (name, e) in over.locals {
            match self.stack.modules[index].locals.get_mut(&name) {
                Some(base) => *base = e,
                None => self.diags.push(missing(format!("local {name:?}"), &e.span)),
            }
        }
    }

    fn module(&mut self, index: usize) -> &mut ModuleConfig {
        &mut self.stack.modules[index]
    }

    fn decode_body(&mut self, m: usize, file: FileId, body: &Body, is_root: bool) {
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => {
                    self.diags.push(
                        Diagnostic::error(
                            "Unexpected attribute",
                            format!("An attribute {:?} is not expected at the top level of a stack file.", attr.key.as_str()),
                        )
                        .at(Some(span(file, &attr.key)))
                        .hint("top-level values go in a `locals { ... }` block"),
                    );
                }
                Structure::Block(block) => self.decode_block(m, file, block, is_root),
            }
        }
    }

    fn labels(&mut self, file: FileId, block: &Block, want: usize, example: &str) -> Option<Vec<String>> {
        if block.labels.len() != want {
            self.diags.push(
                Diagnostic::error(
                    "Wrong number of block labels",
                    format!("A {} block takes {want} label(s), this one has {}.", block.ident.as_str(), block.labels.len()),
                )
                .at(Some(span(file, &block.ident)))
                .hint(format!("write it as {example}")),
            );
            return None;
        }
        Some(block.labels.iter().map(|l| l.as_str().to_string()).collect())
    }

    fn decode_block(&mut self, m: usize, file: FileId, block: &Block, is_root: bool) {
        let ident = block.ident.as_str();
        if self.overriding && matches!(ident, "stack" | "module") {
            self.diags.push(
                Diagnostic::error("Unsupported override", format!("A {ident} block cannot be overridden in this kdeploy version."))
                    .at(Some(span(file, &block.ident)))
                    .hint("override files may change components, variables, outputs and locals"),
            );
            return;
        }
        let header = header_span(file, block);
        match ident {
            "stack" => self.decode_stack(file, block, header, is_root),
            "variable" => self.decode_variable(m, file, block, header),
            "locals" => self.decode_locals(m, file, block),
            "output" => self.decode_output(m, file, block, header),
            "module" => self.decode_module_call(m, file, block, header),
            "import" => self.decode_import(file, block, header, is_root),
            "data" => self.decode_data(m, file, block, header),
            kw => self.decode_component_block(m, file, block, kw, header),
        }
    }

    /// `stack "NAME" { backend ... drift ... }`: root module only, once.
    fn decode_stack(&mut self, file: FileId, block: &Block, header: Span, is_root: bool) {
        if !is_root {
            self.diags.push(Diagnostic::error("Stack block in a module", "Only the root stack directory may have a stack block.").at(Some(header)));
            return;
        }
        let name = block.labels.first().map(|l| l.as_str().to_string()).unwrap_or_default();
        if let Some(prev) = &self.stack.stack.span {
            let at = self.sources.location(prev);
            self.diags.push(Diagnostic::error("Duplicate stack block", format!("The stack block was already declared at {at}.")).at(Some(header)));
            return;
        }
        let mut sb = StackBlock { name, span: Some(header), ..Default::default() };
        for s in block.body.iter() {
            match s {
                Structure::Attribute(a) if a.key.as_str() == "name" => {
                    if let Expression::String(s) = &a.value {
                        sb.name = s.as_str().to_string();
                    }
                }
                Structure::Block(b) if b.ident.as_str() == "backend" => {
                    let kind = b.labels.first().map(|l| l.as_str().to_string()).unwrap_or_else(|| "local".into());
                    let config =
                        b.body.attributes().map(|a| (a.key.as_str().to_string(), Expr { expr: a.value.clone(), span: span(file, &a.value) })).collect();
                    sb.backend = Some(Backend { kind, config, span: header_span(file, b) });
                }
                Structure::Block(b) if b.ident.as_str() == "drift" => {
                    if let Some(a) = b.body.get_attribute("ignore")
                        && let Expression::Array(items) = &a.value
                    {
                        for item in items.iter() {
                            match item {
                                Expression::String(s) => sb.drift_ignore.push(s.as_str().to_string()),
                                other => self.diags.push(
                                    Diagnostic::error("Invalid drift ignore rule", "Each rule is a string such as \"agent.*.replicas\".")
                                        .at(Some(span(file, other))),
                                ),
                            }
                        }
                    }
                }
                Structure::Attribute(a) if a.key.as_str() == "partition" => sb.partition = self.decode_partition(file, a),
                Structure::Attribute(a) => self.unexpected_attr(file, a, "stack", &["name", "partition"]),
                Structure::Block(b) => self.unexpected_block(file, b, "stack", &["backend", "drift"]),
            }
        }
        self.stack.stack = sb;
    }

    /// `partition = "cluster"`; any other value is reported at it with the valid ones.
    fn decode_partition(&mut self, file: FileId, a: &Attribute) -> Option<super::Partitioning> {
        let value = self.literal_string(file, a)?;
        match value.as_str() {
            "cluster" => Some(super::Partitioning::Cluster),
            other => {
                self.diags.push(
                    Diagnostic::error(
                        "Invalid partition",
                        format!("partition = {other:?} is not a way to split state; it takes \"cluster\" (one state per cluster)."),
                    )
                    .at(Some(span(file, &a.value)))
                    .hint(format!("valid values: {}", super::Partitioning::VALUES.join(", "))),
                );
                None
            }
        }
    }

    /// `variable "NAME" { type, default, description, sensitive, validation {...} }`.
    fn decode_variable(&mut self, m: usize, file: FileId, block: &Block, header: Span) {
        let Some(labels) = self.labels(file, block, 1, "variable \"name\" { ... }") else { return };
        let name = labels[0].clone();
        if let Some(prev) = self.stack.modules[m].variables.get(&name) {
            let at = self.sources.location(&prev.span);
            self.duplicate(header, "variable", &name, &at);
            return;
        }
        let mut decl =
            VariableDecl { name: name.clone(), ty: VarType::Any, default: None, description: None, sensitive: false, validations: Vec::new(), span: header };
        for s in block.body.iter() {
            match s {
                Structure::Attribute(a) => match a.key.as_str() {
                    "type" => match VarType::parse(&a.value) {
                        Ok(t) => decl.ty = t,
                        Err(e) => self.diags.push(Diagnostic::error("Invalid type constraint", e).at(Some(span(file, &a.value)))),
                    },
                    "default" => decl.default = Some(Expr { expr: a.value.clone(), span: span(file, &a.value) }),
                    "description" => decl.description = self.literal_string(file, a),
                    "sensitive" => decl.sensitive = self.literal_bool(file, a),
                    "nullable" => {}
                    _ => self.unexpected_attr(file, a, "variable", &["type", "default", "description", "sensitive"]),
                },
                Structure::Block(b) if b.ident.as_str() == "validation" => {
                    let condition = b.body.get_attribute("condition");
                    let message = b.body.get_attribute("error_message").or_else(|| b.body.get_attribute("message"));
                    match (condition, message) {
                        (Some(c), Some(msg)) => {
                            let message = self.literal_string(file, msg).unwrap_or_default();
                            decl.validations.push(Validation {
                                condition: Expr { expr: c.value.clone(), span: span(file, &c.value) },
                                message,
                                span: header_span(file, b),
                            });
                        }
                        _ => self.diags.push(
                            Diagnostic::error("Incomplete validation block", "A validation block needs `condition` and `message` (or `error_message`).")
                                .at(Some(header_span(file, b)))
                                .hint("validation { condition = length(var.x) > 0  message = \"x must not be empty\" }"),
                        ),
                    }
                }
                Structure::Block(b) => self.unexpected_block(file, b, "variable", &["validation"]),
            }
        }
        self.module(m).variables.insert(name, decl);
    }

    /// `locals { NAME = EXPR ... }`.
    fn decode_locals(&mut self, m: usize, file: FileId, block: &Block) {
        for s in block.body.iter() {
            match s {
                Structure::Attribute(a) => {
                    let name = a.key.as_str().to_string();
                    if let Some(prev) = self.stack.modules[m].locals.get(&name) {
                        let at = self.sources.location(&prev.span);
                        self.duplicate(span(file, &a.key), "local value", &name, &at);
                        continue;
                    }
                    self.module(m).locals.insert(name, Expr { expr: a.value.clone(), span: span(file, &a.value) });
                }
                Structure::Block(b) => self.unexpected_block(file, b, "locals", &[]),
            }
        }
    }

    /// `output "NAME" { value, sensitive, description }`.
    fn decode_output(&mut self, m: usize, file: FileId, block: &Block, header: Span) {
        let Some(labels) = self.labels(file, block, 1, "output \"name\" { value = ... }") else { return };
        let name = labels[0].clone();
        if let Some(prev) = self.stack.modules[m].outputs.get(&name) {
            let at = self.sources.location(&prev.span);
            self.duplicate(header, "output", &name, &at);
            return;
        }
        let mut value = None;
        let mut sensitive = false;
        let mut description = None;
        for s in block.body.iter() {
            match s {
                Structure::Attribute(a) => match a.key.as_str() {
                    "value" => value = Some(Expr { expr: a.value.clone(), span: span(file, &a.value) }),
                    "sensitive" => sensitive = self.literal_bool(file, a),
                    "description" => description = self.literal_string(file, a),
                    _ => self.unexpected_attr(file, a, "output", &["value", "sensitive", "description"]),
                },
                Structure::Block(b) => self.unexpected_block(file, b, "output", &[]),
            }
        }
        match value {
            Some(value) => {
                self.module(m).outputs.insert(name.clone(), OutputDecl { name, value, sensitive, description, span: header });
            }
            None => self.missing_attr(header, "output", &name, "value"),
        }
    }

    /// `import { to = ADDRESS, id = "..." }`: root module only; `to` is checked against the
    /// declared components once they are expanded.
    fn decode_import(&mut self, file: FileId, block: &Block, header: Span, is_root: bool) {
        if !is_root {
            self.diags.push(
                Diagnostic::error("Import block in a module", "Only the root stack directory may have import blocks.")
                    .at(Some(header))
                    .hint("move it to the root stack and write `to` with the module's address, e.g. module.site.vault.main"),
            );
            return;
        }
        let Some(_) = self.labels(file, block, 0, "import { to = vault.main, id = \"kerberos-vault/vault\" }") else { return };
        let (mut to, mut id) = (None, None);
        for s in block.body.iter() {
            match s {
                Structure::Attribute(a) => match a.key.as_str() {
                    "to" => to = self.import_target(file, a),
                    "id" => id = Some(Expr { expr: a.value.clone(), span: span(file, &a.value) }),
                    _ => self.unexpected_attr(file, a, "import", &["to", "id"]),
                },
                Structure::Block(b) => self.unexpected_block(file, b, "import", &[]),
            }
        }
        let missing = |attr: &str| {
            Diagnostic::error("Missing required argument", format!("An import block needs an argument {attr:?}."))
                .at(Some(header.clone()))
                .hint("write it as import { to = vault.main, id = \"kerberos-vault/vault\" }")
        };
        match (to, id, block.body.iter().any(|s| s.as_attribute().is_some_and(|a| a.key.as_str() == "to"))) {
            (Some(to), Some(id), _) => self.stack.imports.push(ImportDecl { to, id, span: header }),
            (None, _, false) => self.diags.push(missing("to")),
            (Some(_), None, _) => self.diags.push(missing("id")),
            // A `to` that is not an address was reported.
            (None, _, true) => {}
        }
    }

    /// The component address `to` names, written as a reference (`vault.main`,
    /// `agent.cam["front"]`, `module.site.vault.main`).
    fn import_target(&mut self, file: FileId, a: &Attribute) -> Option<(crate::addr::Address, Span)> {
        let at = span(file, &a.value);
        let text = self.sources.text(file).get(at.range.clone()).unwrap_or_default().trim().to_string();
        let parsed = match &a.value {
            Expression::Traversal(_) => text.parse::<crate::addr::Address>().map_err(|e| e.reason),
            Expression::String(_) => Err("it is a string; write the address without quotes".to_string()),
            _ => Err(format!("{text} is not an address")),
        };
        match parsed {
            Ok(addr) => Some((addr, at)),
            Err(why) => {
                self.diags.push(
                    Diagnostic::error(
                        "Invalid import address",
                        format!("`to` must name a component instance, like vault.main or agent.cam[\"front\"]: {why}."),
                    )
                    .at(Some(at))
                    .hint("write it as to = vault.main"),
                );
                None
            }
        }
    }

    /// `module "NAME" { source = "./dir" ... inputs }`: loads the called module.
    fn decode_module_call(&mut self, m: usize, file: FileId, block: &Block, header: Span) {
        let Some(labels) = self.labels(file, block, 1, "module \"name\" { source = \"./modules/x\" }") else { return };
        let name = labels[0].clone();
        if let Some(prev) = self.stack.modules[m].calls.get(&name) {
            let at = self.sources.location(&prev.span);
            self.duplicate(header, "module", &name, &at);
            return;
        }
        let mut source = None;
        let mut inputs = BTreeMap::new();
        let mut count = None;
        let mut for_each = None;
        let mut depends_on = Vec::new();
        for s in block.body.iter() {
            match s {
                Structure::Attribute(a) => match a.key.as_str() {
                    "source" => source = self.literal_string(file, a).map(|s| (s, span(file, &a.value))),
                    "count" => count = Some(Expr { expr: a.value.clone(), span: span(file, &a.value) }),
                    "for_each" => for_each = Some(Expr { expr: a.value.clone(), span: span(file, &a.value) }),
                    "depends_on" => depends_on = self.depends_on(file, a),
                    key => {
                        inputs.insert(key.to_string(), (Expr { expr: a.value.clone(), span: span(file, &a.value) }, span(file, &a.key)));
                    }
                },
                Structure::Block(b) => self.unexpected_block(file, b, "module", &[]),
            }
        }
        let Some((source, source_span)) = source else {
            self.missing_attr(header, "module", &name, "source");
            return;
        };
        if !(source.starts_with("./") || source.starts_with("../")) {
            self.diags.push(
                Diagnostic::error("Unsupported module source", format!("Module sources must be local paths; {source:?} is not."))
                    .at(Some(source_span))
                    .hint("use a path relative to this stack directory, starting with ./ or ../"),
            );
            return;
        }
        let repetition = self.repetition(header.clone(), count, for_each);
        let dir = self.stack.modules[m].dir.join(&source);
        let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if self.loading.contains(&canonical) {
            self.diags.push(
                Diagnostic::error(
                    "Module calls itself",
                    format!("Module {name:?} ({source}) is already being loaded: modules may not call themselves, directly or indirectly."),
                )
                .at(Some(source_span)),
            );
            return;
        }
        let child = self.load_module(&dir, Some(&source_span));
        // A module that could not be read has no variables to check against: that error is enough.
        if !self.unreadable.contains(&child) {
            self.check_module_inputs(&name, &source, child, &inputs, &header);
        }
        self.module(m).calls.insert(name.clone(), ModuleCall { name, source, inputs, repetition, depends_on, span: header, module: child });
    }

    /// Inputs must match the module's variables: unknown ones are typos, and required ones
    /// must be given even if nothing in the module reads them yet.
    fn check_module_inputs(&mut self, name: &str, source: &str, child: usize, inputs: &BTreeMap<String, (Expr, Span)>, header: &Span) {
        let declared: Vec<String> = self.stack.modules[child].variables.keys().cloned().collect();
        for (key, (_, key_span)) in inputs {
            if !declared.contains(key) {
                let mut d = Diagnostic::error(
                    "Unsupported argument",
                    format!(
                        "Module {name:?} ({source}) has no input variable {key:?}.{}",
                        if declared.is_empty() { String::new() } else { format!(" Its inputs: {}.", declared.join(", ")) }
                    ),
                )
                .at(Some(key_span.clone()));
                if let Some(s) = did_you_mean(key, declared.iter().map(String::as_str)) {
                    d = d.hint(format!("did you mean {s}?"));
                } else {
                    d = d.hint(format!("declare it in the module with variable \"{key}\" {{}}, or remove it here"));
                }
                self.diags.push(d);
            }
        }
        let missing: Vec<String> =
            self.stack.modules[child].variables.values().filter(|v| v.default.is_none() && !inputs.contains_key(&v.name)).map(|v| v.name.clone()).collect();
        for var in missing {
            self.diags.push(
                Diagnostic::error("Missing required argument", format!("The module input {var:?} is required, but no value was given by the module call."))
                    .at(Some(header.clone()))
                    .hint(format!("add {var} = ... to the module block")),
            );
        }
    }

    /// A component block (`vault "main" { ... }`), or an unknown block type.
    fn decode_component_block(&mut self, m: usize, file: FileId, block: &Block, kw: &str, header: Span) {
        let Some(kind) = Kind::from_keyword(kw) else {
            let mut d =
                Diagnostic::error("Unsupported block type", format!("Blocks of type {kw:?} are not expected here. Valid blocks: {}.", TOP_BLOCKS.join(", ")))
                    .at(Some(span(file, &block.ident)));
            if let Some(s) = did_you_mean(kw, TOP_BLOCKS.iter().copied()) {
                d = d.hint(format!("did you mean {s}?"));
            }
            self.diags.push(d);
            return;
        };
        let example = format!("{kw} \"name\" {{ type = \"{}\" ... }}", kind.types()[0]);
        let Some(labels) = self.labels(file, block, 1, &example) else { return };
        let name = labels[0].clone();
        if let Some(prev) = self.stack.modules[m].component(kind, &name) {
            let at = self.sources.location(&prev.span);
            self.duplicate(header, kw, &name, &at);
            return;
        }
        self.decode_component(m, file, block, kind, name, header);
    }

    /// `data "TYPE" "NAME" { ... }`: a data source, kept as a component of kind data named
    /// `TYPE.NAME` whose type is TYPE, so that its arguments are checked against its schema,
    /// its references are graph edges and `data.TYPE.NAME` resolves like a component.
    fn decode_data(&mut self, m: usize, file: FileId, block: &Block, header: Span) {
        let Some(labels) = self.labels(file, block, 2, "data \"kubernetes_secret\" \"name\" { namespace = \"...\", name = \"...\" }") else { return };
        let (ty, name) = (&labels[0], &labels[1]);
        let ty_span = span(file, &block.labels[0]);
        let types = Kind::Data.types();
        if !types.contains(&ty.as_str()) {
            let mut d = Diagnostic::error("Unknown data source type", format!("{ty:?} is not a data source type. Valid types: {}.", types.join(", ")))
                .at(Some(ty_span));
            if let Some(s) = did_you_mean(ty, types.iter().copied()) {
                d = d.hint(format!("did you mean {s:?}?"));
            }
            self.diags.push(d);
            return;
        }
        let full = format!("{ty}.{name}");
        if let Some(prev) = self.stack.modules[m].component(Kind::Data, &full) {
            let at = self.sources.location(&prev.span);
            self.duplicate(header, "data source", &full, &at);
            return;
        }
        if let Some(a) = block.body.get_attribute("type") {
            self.unexpected_attr(file, a, "data", &[]);
            return;
        }
        self.decode_component(m, file, block, Kind::Data, full, header);
        if let Some(decl) = self.module(m).components.last_mut() {
            decl.type_expr = Some(Expr { expr: Expression::from(ty.as_str()), span: ty_span });
        }
    }

    fn decode_component(&mut self, m: usize, file: FileId, block: &Block, kind: Kind, name: String, header: Span) {
        let mut decl = ComponentDecl {
            kind,
            name,
            type_expr: None,
            attrs: BTreeMap::new(),
            repetition: Repetition::Single,
            depends_on: Vec::new(),
            lifecycle: Lifecycle::default(),
            blocks: Vec::new(),
            span: header.clone(),
        };
        let mut count = None;
        let mut for_each = None;
        let mut seen: BTreeMap<String, Span> = BTreeMap::new();
        for s in block.body.iter() {
            match s {
                Structure::Attribute(a) => {
                    let key = a.key.as_str().to_string();
                    let key_span = span(file, &a.key);
                    if let Some(prev) = seen.get(&key) {
                        let at = self.sources.location(prev);
                        self.duplicate(key_span, "attribute", &key, &at);
                        continue;
                    }
                    seen.insert(key.clone(), key_span.clone());
                    let expr = Expr { expr: a.value.clone(), span: span(file, &a.value) };
                    match key.as_str() {
                        "type" => decl.type_expr = Some(expr),
                        "count" => count = Some(expr),
                        "for_each" => for_each = Some(expr),
                        "depends_on" => decl.depends_on = self.depends_on(file, a),
                        _ => {
                            decl.attrs.insert(key, (expr, key_span));
                        }
                    }
                }
                Structure::Block(b) if b.ident.as_str() == "lifecycle" => {
                    for la in b.body.attributes() {
                        match la.key.as_str() {
                            "prevent_destroy" => decl.lifecycle.prevent_destroy = self.literal_bool(file, la),
                            "create_before_destroy" => decl.lifecycle.create_before_destroy = self.literal_bool(file, la),
                            "ignore_changes" => decl.lifecycle.ignore_changes = self.ignore_changes(file, la),
                            _ => self.unexpected_attr(file, la, "lifecycle", &["prevent_destroy", "create_before_destroy", "ignore_changes"]),
                        }
                    }
                    for lb in b.body.blocks() {
                        self.unexpected_block(file, lb, "lifecycle", &[]);
                    }
                }
                Structure::Block(b) => {
                    if let Some(nested) = self.nested_block(file, b) {
                        decl.blocks.push(nested);
                    }
                }
            }
        }
        decl.repetition = self.repetition(header, count, for_each);
        self.module(m).components.push(decl);
    }

    /// A block inside a component: at most one label, attributes only. Whether the component
    /// accepts it is decided once its type (and so its schema) is known.
    fn nested_block(&mut self, file: FileId, b: &Block) -> Option<NestedBlock> {
        let header = header_span(file, b);
        let labels: Vec<(String, Span)> = b.labels.iter().map(|l| (l.as_str().to_string(), span(file, l))).collect();
        if labels.len() > 1 {
            self.diags.push(
                Diagnostic::error("Extraneous label", format!("A {} block takes at most one label (its name).", b.ident.as_str()))
                    .at(Some(labels[1].1.clone()))
                    .hint(format!("write {} \"NAME\" {{ ... }}", b.ident.as_str())),
            );
            return None;
        }
        let mut attrs = BTreeMap::new();
        let mut seen: BTreeMap<String, Span> = BTreeMap::new();
        for s in b.body.iter() {
            match s {
                Structure::Attribute(a) => {
                    let key = a.key.as_str().to_string();
                    let key_span = span(file, &a.key);
                    if let Some(prev) = seen.get(&key) {
                        let at = self.sources.location(prev);
                        self.duplicate(key_span, "attribute", &key, &at);
                        continue;
                    }
                    seen.insert(key.clone(), key_span.clone());
                    attrs.insert(key, (Expr { expr: a.value.clone(), span: span(file, &a.value) }, key_span));
                }
                Structure::Block(inner) => self.unexpected_block(file, inner, b.ident.as_str(), &[]),
            }
        }
        Some(NestedBlock { ident: b.ident.as_str().to_string(), label: labels.into_iter().next(), attrs, span: header })
    }

    fn repetition(&mut self, header: Span, count: Option<Expr>, for_each: Option<Expr>) -> Repetition {
        match (count, for_each) {
            (Some(_), Some(f)) => {
                self.diags.push(
                    Diagnostic::error("Invalid combination of count and for_each", "A block may use count or for_each, not both.")
                        .at(Some(f.span))
                        .hint("remove one of them"),
                );
                let _ = header;
                Repetition::Single
            }
            (Some(c), None) => Repetition::Count(c),
            (None, Some(f)) => Repetition::ForEach(f),
            (None, None) => Repetition::Single,
        }
    }

    fn depends_on(&mut self, file: FileId, a: &Attribute) -> Vec<Expr> {
        match &a.value {
            Expression::Array(items) => items.iter().map(|e| Expr { expr: e.clone(), span: span(file, e) }).collect(),
            other => {
                self.diags.push(
                    Diagnostic::error("Invalid depends_on", "depends_on is a list of component or module references.")
                        .at(Some(span(file, other)))
                        .hint("depends_on = [vault.main, module.site]"),
                );
                Vec::new()
            }
        }
    }

    fn ignore_changes(&mut self, file: FileId, a: &Attribute) -> Vec<(String, Span)> {
        match &a.value {
            Expression::Variable(v) if v.as_str() == "all" => vec![("all".into(), span(file, &a.value))],
            Expression::Array(items) => items
                .iter()
                .filter_map(|e| match e {
                    Expression::Variable(v) => Some((v.as_str().to_string(), span(file, e))),
                    Expression::String(s) => Some((s.as_str().to_string(), span(file, e))),
                    other => {
                        self.diags.push(
                            Diagnostic::error("Invalid ignore_changes", "ignore_changes lists attribute names.")
                                .at(Some(span(file, other)))
                                .hint("ignore_changes = [image, env]"),
                        );
                        None
                    }
                })
                .collect(),
            other => {
                self.diags
                    .push(Diagnostic::error("Invalid ignore_changes", "ignore_changes is a list of attribute names, or `all`.").at(Some(span(file, other))));
                Vec::new()
            }
        }
    }

    fn literal_string(&mut self, file: FileId, a: &Attribute) -> Option<String> {
        match &a.value {
            Expression::String(s) => Some(s.as_str().to_string()),
            _ => {
                self.diags.push(
                    Diagnostic::error("Literal string required", format!("{} must be a literal string here (no references or templates).", a.key.as_str()))
                        .at(Some(span(file, &a.value))),
                );
                None
            }
        }
    }

    fn literal_bool(&mut self, file: FileId, a: &Attribute) -> bool {
        match &a.value {
            Expression::Bool(b) => *b.value(),
            other => {
                self.diags.push(Diagnostic::error("Literal bool required", format!("{} must be true or false.", a.key.as_str())).at(Some(span(file, other))));
                false
            }
        }
    }

    fn unexpected_attr(&mut self, file: FileId, a: &Attribute, block: &str, valid: &[&str]) {
        let key = a.key.as_str();
        let mut d = Diagnostic::error(
            "Unsupported argument",
            format!(
                "An argument named {key:?} is not expected in {} {block} block.{}",
                crate::config::eval::article(block).to_lowercase(),
                if valid.is_empty() { String::new() } else { format!(" Valid: {}.", valid.join(", ")) }
            ),
        )
        .at(Some(span(file, &a.key)));
        if let Some(s) = did_you_mean(key, valid.iter().copied()) {
            d = d.hint(format!("did you mean {s}?"));
        }
        self.diags.push(d);
    }

    fn unexpected_block(&mut self, file: FileId, b: &Block, block: &str, valid: &[&str]) {
        let ident = b.ident.as_str();
        let mut d = Diagnostic::error(
            "Unsupported block type",
            format!(
                "Blocks of type {ident:?} are not expected in a {block} block.{}",
                if valid.is_empty() { String::new() } else { format!(" Valid: {}.", valid.join(", ")) }
            ),
        )
        .at(Some(span(file, &b.ident)));
        if let Some(s) = did_you_mean(ident, valid.iter().copied()) {
            d = d.hint(format!("did you mean {s}?"));
        } else {
            d = d.hint(format!("maps are written as attributes: {ident} = {{ key = \"value\" }}"));
        }
        self.diags.push(d);
    }

    fn duplicate(&mut self, at: Span, what: &str, name: &str, first: &str) {
        self.diags.push(
            Diagnostic::error(format!("Duplicate {what}"), format!("A {what} named {name:?} was already declared at {first}."))
                .at(Some(at))
                .hint("names must be unique within a module; rename or remove one of them"),
        );
    }

    fn missing_attr(&mut self, at: Span, block: &str, name: &str, attr: &str) {
        self.diags.push(
            Diagnostic::error("Missing required argument", format!("The {block} {name:?} needs an argument {attr:?}."))
                .at(Some(at))
                .hint(format!("add {attr} = ... to the block")),
        );
    }
}

/// The span of a block's header (`vault "main"`), not its whole body.
fn header_span(file: FileId, block: &Block) -> Span {
    let start = block.ident.span().map(|r| r.start).unwrap_or(0);
    let end = block
        .labels
        .last()
        .and_then(|l| match l {
            hcl_edit::structure::BlockLabel::Ident(i) => i.span(),
            hcl_edit::structure::BlockLabel::String(s) => s.span(),
        })
        .map(|r| r.end)
        .or_else(|| block.ident.span().map(|r| r.end))
        .unwrap_or(start);
    Span { file, range: start..end }
}
