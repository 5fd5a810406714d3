//! Deletes: recorded components the stack no longer declares (or all of them, for destroy).

use std::collections::BTreeMap;

use kdeploy_provider::Value;
use kdeploy_state::{ResourceState, State};

use super::refresh::Refreshed;
use super::{Action, ActionReason, Change, PlanOptions};
use crate::addr::{Address, InstanceKey};
use crate::config::Stack;
use crate::config::expand::Expanded;

/// The deletes of recorded components that are no longer wanted. One already gone is a delete
/// without a live object (its state entry is dropped on apply).
pub fn deletes(stack: &Stack, expanded: &Expanded, state: &State, refreshed: &Refreshed, options: &PlanOptions) -> Vec<Change> {
    let mut out = Vec::new();
    for r in &state.resources {
        let addr = &r.address;
        if !options.destroy && expanded.instances.contains_key(addr) {
            continue;
        }
        let Some(live) = refreshed.live_value(addr) else {
            out.push(Change { reason: Some(ActionReason::RecreateBecauseDeletedOutOfBand), before: None, cluster: None, ..delete(addr, r, options) });
            continue;
        };
        let cluster = r.attributes.get("cluster").and_then(|c| c.as_str()).and_then(|c| c.parse().ok());
        out.push(Change { reason: Some(why(stack, expanded, addr, options)), before: Some(live), cluster, ..delete(addr, r, options) });
    }
    out
}

/// Why a recorded component is deleted.
fn why(stack: &Stack, expanded: &Expanded, addr: &Address, options: &PlanOptions) -> ActionReason {
    if options.destroy {
        return ActionReason::DeleteBecauseDestroy;
    }
    let Some(module) = expanded.modules.get(&addr.module) else { return ActionReason::DeleteBecauseNoModule };
    match (stack.modules[module.module].component(addr.kind, &addr.name), &addr.key) {
        (Some(_), Some(InstanceKey::Int(_))) => ActionReason::DeleteBecauseCountIndex,
        (Some(_), Some(InstanceKey::Str(_))) => ActionReason::DeleteBecauseEachKey,
        _ => ActionReason::DeleteBecauseNoConfig,
    }
}

/// A delete of the recorded `r`, before its reason, live value and cluster are known.
fn delete(addr: &Address, r: &ResourceState, options: &PlanOptions) -> Change {
    Change {
        address: addr.clone(),
        kind: addr.kind,
        type_name: r.type_name.clone(),
        provider: r.provider.clone(),
        action: Action::Delete,
        reason: None,
        before: None::<Value>,
        after: None,
        before_sensitive: r.sensitive_paths.clone(),
        after_sensitive: Vec::new(),
        replace_paths: Vec::new(),
        depends_on: r.dependencies.clone(),
        cluster: None,
        refs: BTreeMap::new(),
        delete_data: options.delete_data,
        deferred: false,
        import_id: None,
    }
}
