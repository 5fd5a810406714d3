//! The decision for one component the stack declares: what to do and why, from facts the
//! refresh and the provider's plan established. Pure: no I/O, table-tested.

use super::{Action, ActionReason};

/// What is known about one declared component when its action is decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// The object was found live.
    pub live: bool,
    /// State records it.
    pub recorded: bool,
    /// An earlier run left an operation on it pending.
    pub interrupted: bool,
    /// That operation was a delete.
    pub interrupted_delete: bool,
    /// The cluster it runs in is replaced by this plan.
    pub cluster_replaced: bool,
    /// `-replace` names it.
    pub replace_requested: bool,
    /// The provider says a changed attribute cannot be updated in place (live objects only).
    pub requires_replace: bool,
    /// The planned attributes differ from the live ones (live objects only).
    pub changed: bool,
    /// `lifecycle { create_before_destroy = true }`.
    pub create_before_destroy: bool,
    /// An `import` block (or `kdeploy import`) takes the live object over.
    pub importing: bool,
}

/// What to do, and why (`None`: the plain reason the action implies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub reason: Option<ActionReason>,
}

impl Decision {
    /// Whether the object is planned from nothing (created, or created again).
    pub fn fresh(&self) -> bool {
        self.action == Action::Create || self.action.is_replace()
    }
}

pub fn decide(f: &Facts) -> Decision {
    if !f.live {
        let reason = match (f.recorded, f.interrupted) {
            (true, true) => Some(ActionReason::RecoverPendingOperation),
            (true, false) => Some(ActionReason::RecreateBecauseDeletedOutOfBand),
            (false, _) => None,
        };
        return Decision { action: Action::Create, reason };
    }
    let by_request = f.cluster_replaced || f.replace_requested;
    // An import never replaces what runs unless asked to: the plan says why it cannot be taken
    // over in place, and `-replace` confirms a replacement (data kept).
    if f.importing && !f.recorded && f.requires_replace && !by_request {
        return Decision { action: Action::NoOp, reason: Some(ActionReason::ImportNeedsReplace) };
    }
    if by_request || f.interrupted_delete || f.requires_replace {
        let reason = if f.cluster_replaced {
            ActionReason::ReplaceBecauseClusterReplaced
        } else if f.interrupted_delete && !f.requires_replace && !by_request {
            ActionReason::ReplaceInterruptedDelete
        } else if by_request {
            ActionReason::ReplaceByRequest
        } else {
            ActionReason::ReplaceBecauseCannotUpdate
        };
        let action = if f.create_before_destroy { Action::CreateThenDelete } else { Action::DeleteThenCreate };
        return Decision { action, reason: Some(reason) };
    }
    if !f.recorded && f.importing {
        return Decision { action: if f.changed { Action::Update } else { Action::NoOp }, reason: None };
    }
    if !f.recorded {
        // Found live but never recorded: an interrupted create. Record it (the provider's
        // apply is idempotent) instead of creating a duplicate.
        return Decision { action: Action::Update, reason: Some(ActionReason::RecoverPendingOperation) };
    }
    Decision { action: if f.changed { Action::Update } else { Action::NoOp }, reason: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActionReason::*;

    /// Facts from a compact spec: the names of the facts that hold.
    fn facts(spec: &str) -> Facts {
        let mut f = Facts::default();
        for word in spec.split_whitespace() {
            match word {
                "live" => f.live = true,
                "recorded" => f.recorded = true,
                "interrupted" => f.interrupted = true,
                "interrupted_delete" => {
                    f.interrupted = true;
                    f.interrupted_delete = true;
                }
                "cluster_replaced" => f.cluster_replaced = true,
                "replace" => f.replace_requested = true,
                "requires_replace" => f.requires_replace = true,
                "changed" => f.changed = true,
                "cbd" => f.create_before_destroy = true,
                "import" => f.importing = true,
                other => panic!("unknown fact {other}"),
            }
        }
        f
    }

    #[test]
    fn the_decision_table() {
        let table: &[(&str, Action, Option<ActionReason>)] = &[
            // Not live.
            ("", Action::Create, None),
            ("interrupted", Action::Create, None),
            ("recorded", Action::Create, Some(RecreateBecauseDeletedOutOfBand)),
            ("recorded interrupted", Action::Create, Some(RecoverPendingOperation)),
            ("recorded replace requires_replace", Action::Create, Some(RecreateBecauseDeletedOutOfBand)),
            // Live and recorded.
            ("live recorded", Action::NoOp, None),
            ("live recorded changed", Action::Update, None),
            ("live recorded changed requires_replace", Action::DeleteThenCreate, Some(ReplaceBecauseCannotUpdate)),
            ("live recorded changed requires_replace cbd", Action::CreateThenDelete, Some(ReplaceBecauseCannotUpdate)),
            ("live recorded replace", Action::DeleteThenCreate, Some(ReplaceByRequest)),
            ("live recorded replace requires_replace", Action::DeleteThenCreate, Some(ReplaceByRequest)),
            ("live recorded cluster_replaced", Action::DeleteThenCreate, Some(ReplaceBecauseClusterReplaced)),
            ("live recorded cluster_replaced replace cbd", Action::CreateThenDelete, Some(ReplaceBecauseClusterReplaced)),
            ("live recorded interrupted_delete", Action::DeleteThenCreate, Some(ReplaceInterruptedDelete)),
            ("live recorded interrupted_delete requires_replace", Action::DeleteThenCreate, Some(ReplaceBecauseCannotUpdate)),
            ("live recorded interrupted_delete replace", Action::DeleteThenCreate, Some(ReplaceByRequest)),
            ("live recorded interrupted", Action::NoOp, None),
            // Live but never recorded: an interrupted create is adopted, not duplicated.
            ("live", Action::Update, Some(RecoverPendingOperation)),
            ("live interrupted changed", Action::Update, Some(RecoverPendingOperation)),
            ("live requires_replace", Action::DeleteThenCreate, Some(ReplaceBecauseCannotUpdate)),
            // Imported: taken over as it is, or updated; replaced only on request.
            ("live import", Action::NoOp, None),
            ("live import changed", Action::Update, None),
            ("live import changed requires_replace", Action::NoOp, Some(ImportNeedsReplace)),
            ("live import changed requires_replace replace", Action::DeleteThenCreate, Some(ReplaceByRequest)),
            ("live import replace", Action::DeleteThenCreate, Some(ReplaceByRequest)),
            ("live recorded import changed", Action::Update, None),
        ];
        let mut wrong = Vec::new();
        for (spec, action, reason) in table {
            let got = decide(&facts(spec));
            if got != (Decision { action: *action, reason: *reason }) {
                wrong.push(format!("{spec:?}: expected {action:?} {reason:?}, got {:?} {:?}", got.action, got.reason));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn fresh_plans_are_creates_and_replacements() {
        assert!(decide(&facts("")).fresh());
        assert!(decide(&facts("live recorded replace")).fresh());
        assert!(!decide(&facts("live recorded changed")).fresh());
        assert!(!decide(&facts("live")).fresh());
    }
}
