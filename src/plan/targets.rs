//! `-target` and `-replace`: which addresses the user named, and what a targeted plan keeps.

use std::collections::BTreeSet;

use super::{Change, PlanOptions};
use crate::addr::{Address, Target};
use crate::diag::{Diagnostic, Diagnostics};
use crate::graph::DepGraph;

/// The `-target` and `-replace` addresses, parsed; every invalid one is reported.
pub fn parse(options: &PlanOptions) -> Result<(Vec<Target>, Vec<Target>), Diagnostics> {
    let mut diags = Diagnostics::new();
    let mut parse_all = |list: &[String]| -> Vec<Target> {
        list.iter()
            .filter_map(|t| match t.parse::<Target>() {
                Ok(t) => Some(t),
                Err(e) => {
                    diags.push(
                        Diagnostic::error("Invalid -target address", e.to_string()).hint("addresses look like vault.main, agent.cam[\"front\"] or module.site"),
                    );
                    None
                }
            })
            .collect()
    };
    let targets = parse_all(&options.targets);
    let replace = parse_all(&options.replace);
    if diags.has_errors() { Err(diags) } else { Ok((targets, replace)) }
}

/// Keeps the changes of the targets and of what they need (for destroy: of what needs them,
/// which must go first). Warns when no target names a change.
pub fn restrict(changes: &mut Vec<Change>, targets: &[Target], graph: &DepGraph, options: &PlanOptions, diags: &mut Diagnostics) {
    if targets.is_empty() {
        return;
    }
    diags.push(Diagnostic::warning(
        "Resource targeting is in effect",
        "You are creating a plan with the -target option, which means that the result of this plan may not represent all of the changes requested by the current configuration.\n\nThe -target option is not for routine use, and is provided only for exceptional situations such as recovering from errors or mistakes, or when kdeploy specifically suggests to use it as part of an error message.",
    ));
    let hits: Vec<Address> = changes.iter().map(|c| c.address.clone()).filter(|a| targets.iter().any(|t| a.matches(t))).collect();
    if hits.is_empty() {
        diags.push(Diagnostic::warning(
            "No components matched -target",
            format!("None of {} names a component in this stack or its state.", options.targets.join(", ")),
        ));
    }
    let keep: BTreeSet<Address> =
        if options.destroy { dependents(changes, &hits) } else { graph.with_dependencies(&hits).into_iter().chain(hits.iter().cloned()).collect() };
    changes.retain(|c| keep.contains(&c.address));
}

/// `hits` and every change that depends on them, recursively (as the state records it).
fn dependents(changes: &[Change], hits: &[Address]) -> BTreeSet<Address> {
    let mut keep: BTreeSet<Address> = hits.iter().cloned().collect();
    let mut grew = true;
    while grew {
        grew = false;
        for c in changes {
            if !keep.contains(&c.address) && c.depends_on.iter().any(|d| keep.contains(d)) {
                keep.insert(c.address.clone());
                grew = true;
            }
        }
    }
    keep
}
