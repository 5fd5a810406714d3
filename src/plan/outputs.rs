//! The root module's outputs: what a plan does to each (created, updated, removed).

use super::{Action, OutputChange, PlanOptions};
use crate::config::Stack;
use crate::config::evaluator::Evaluator;
use crate::diag::Diagnostics;
use kdeploy_provider::Value;
use kdeploy_state::State;

/// The output changes: every declared output evaluated against the planned values (all of
/// them removed for destroy), and the recorded outputs no longer declared removed.
pub fn changes(stack: &Stack, state: &State, eval: &Evaluator<'_>, options: &PlanOptions, diags: &mut Diagnostics) -> Vec<OutputChange> {
    let mut out = Vec::new();
    for (name, decl) in &stack.root().outputs {
        let before = state.outputs.get(name).map(|o| Value::from_json(&o.value));
        if options.destroy {
            if let (Some(before), Some(o)) = (before, state.outputs.get(name)) {
                out.push(OutputChange { name: name.clone(), action: Action::Delete, before: Some(before), after: None, sensitive: o.sensitive });
            }
            continue;
        }
        match eval.root_output(decl) {
            Ok(v) => {
                let action = match &before {
                    None => Action::Create,
                    Some(b) if b.same_as(&v.value) => Action::NoOp,
                    Some(_) => Action::Update,
                };
                out.push(OutputChange { name: name.clone(), action, before, after: Some(v.value), sensitive: decl.sensitive });
            }
            Err(d) => diags.push(d),
        }
    }
    for (name, o) in &state.outputs {
        if !stack.root().outputs.contains_key(name) {
            out.push(OutputChange {
                name: name.clone(),
                action: Action::Delete,
                before: Some(Value::from_json(&o.value)),
                after: None,
                sensitive: o.sensitive,
            });
        }
    }
    out
}
