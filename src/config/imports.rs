//! `import` blocks: where they point (checked once the components are expanded) and their ids
//! (evaluated at plan, in the root module's scope).

use std::collections::BTreeMap;

use kdeploy_provider::Value;

use super::Stack;
use super::eval::Ctx;
use super::expand::Expanded;
use crate::addr::{Address, ModulePath};
use crate::diag::{Diagnostic, Diagnostics, Span, did_you_mean};

/// Every `to` names a declared component instance, at most once.
pub fn check(stack: &Stack, expanded: &Expanded) -> Diagnostics {
    let mut diags = Diagnostics::new();
    let mut seen: BTreeMap<&Address, &Span> = BTreeMap::new();
    for imp in &stack.imports {
        let (to, at) = &imp.to;
        if !expanded.instances.contains_key(to) {
            let declared: Vec<String> = expanded.instances.keys().filter(|a| a.kind == to.kind).map(ToString::to_string).collect();
            let mut d = Diagnostic::error("Import to an undeclared component", format!("The import block names {to}, which the stack does not declare."))
                .at(Some(at.clone()))
                .hint("declare the component first: an import takes an existing object over as a component of the stack");
            if let Some(s) = did_you_mean(&to.to_string(), declared.iter().map(String::as_str)) {
                d = d.hint(format!("did you mean {s}?"));
            }
            diags.push(d);
            continue;
        }
        if seen.insert(to, at).is_some() {
            diags.push(
                Diagnostic::error("Duplicate import", format!("{to} is the target of more than one import block."))
                    .at(Some(at.clone()))
                    .hint("one object becomes one component: remove one of the blocks"),
            );
        }
    }
    diags
}

/// The id of each import, evaluated in the root module: a string known at plan.
pub fn ids(stack: &Stack, ctx: &Ctx<'_>) -> (BTreeMap<Address, String>, Diagnostics) {
    let mut out = BTreeMap::new();
    let mut diags = Diagnostics::new();
    let scope = ctx.scope(&ModulePath::root());
    for imp in &stack.imports {
        let value = match scope.eval(&imp.id.expr, imp.id.span.file) {
            Ok(v) => v.value,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let why = match &value {
            Value::String(s) if !s.is_empty() => {
                out.insert(imp.to.0.clone(), s.clone());
                continue;
            }
            v if v.contains_unknown() => "its value is known only after apply; an import id must be known when planning",
            Value::String(_) => "it is empty",
            _ => "it is not a string",
        };
        diags.push(Diagnostic::error("Invalid import id", format!("The id of the import of {}: {why}.", imp.to.0)).at(Some(imp.id.span.clone())).hint(
            "a string known at plan: the provider's id of the existing object (Kubernetes: \"NAMESPACE/NAME\" of the component's Deployment or StatefulSet)",
        ));
    }
    (out, diags)
}
