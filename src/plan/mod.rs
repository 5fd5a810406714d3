//! Plans: what kdeploy will do, as plain data. Built by [`planner`] (over [`refresh`] and
//! [`decide`]), rendered by [`render`]
//! (humans) and [`json`] (machines), saved and loaded by [`planfile`].

pub mod decide;
mod deletes;
pub mod json;
pub mod markdown;
mod outputs;
pub mod planfile;
pub mod planner;
pub mod refresh;
pub mod render;
mod targets;

use std::collections::BTreeMap;
use std::fmt;

use kdeploy_provider::{AttrPath, Kind, Value};
use serde::{Deserialize, Serialize};

use crate::addr::Address;

/// What will happen to one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Read,
    Update,
    /// Replace: delete the old object, then create the new one.
    DeleteThenCreate,
    /// Replace under `create_before_destroy`: create the new object, then delete the old one.
    CreateThenDelete,
    Delete,
}

impl Action {
    /// Terraform's plan symbols.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Read => "<=",
            Action::Update => "~",
            Action::DeleteThenCreate => "-/+",
            Action::CreateThenDelete => "+/-",
            Action::Delete => "-",
        }
    }

    /// `resource_changes[].change.actions` in `terraform show -json`.
    pub fn json_actions(self) -> Vec<&'static str> {
        match self {
            Action::NoOp => vec!["no-op"],
            Action::Create => vec!["create"],
            Action::Read => vec!["read"],
            Action::Update => vec!["update"],
            Action::DeleteThenCreate => vec!["delete", "create"],
            Action::CreateThenDelete => vec!["create", "delete"],
            Action::Delete => vec!["delete"],
        }
    }

    pub fn is_replace(self) -> bool {
        matches!(self, Action::DeleteThenCreate | Action::CreateThenDelete)
    }

    /// Whether applying this action calls a provider write method.
    pub fn mutates(self) -> bool {
        !matches!(self, Action::NoOp | Action::Read)
    }
}

/// Why an action was chosen, for display only: the apply never branches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionReason {
    /// `-replace ADDR` asked for it.
    ReplaceByRequest,
    /// An attribute that cannot be updated in place changed.
    ReplaceBecauseCannotUpdate,
    /// The cluster it runs in is replaced: it is created again in the new one.
    ReplaceBecauseClusterReplaced,
    /// The object was deleted out of band: it is created again.
    RecreateBecauseDeletedOutOfBand,
    /// The block is gone from the stack.
    DeleteBecauseNoConfig,
    /// The instance key is no longer in for_each.
    DeleteBecauseEachKey,
    /// The index is beyond count.
    DeleteBecauseCountIndex,
    /// The module call that held it is gone.
    DeleteBecauseNoModule,
    /// `kdeploy destroy`.
    DeleteBecauseDestroy,
    /// A previous run was interrupted during this operation; the live object decides.
    RecoverPendingOperation,
    /// A run was interrupted while creating it, and it is no longer in the stack.
    DeleteInterruptedCreate,
    /// A run was interrupted while deleting it: the engine may still be finishing that delete,
    /// so the object found live cannot be trusted to stay; it is deleted and created again.
    ReplaceInterruptedDelete,
    /// An imported object differs in what cannot change in place: the plan stops and says so;
    /// `-replace` confirms a replacement.
    ImportNeedsReplace,
    /// A data source's cluster is created by this apply: read once it exists.
    ReadBecauseDependencyPending,
    /// A data source's arguments refer to values only apply knows.
    ReadBecauseConfigUnknown,
}

impl ActionReason {
    pub fn describe(self) -> &'static str {
        match self {
            ActionReason::ReplaceByRequest => "replacement was requested with -replace",
            ActionReason::ReplaceBecauseCannotUpdate => "a changed attribute cannot be updated in place",
            ActionReason::ReplaceBecauseClusterReplaced => "the cluster it runs in is replaced",
            ActionReason::RecreateBecauseDeletedOutOfBand => "it was deleted outside kdeploy",
            ActionReason::DeleteBecauseNoConfig => "its block is no longer in the stack",
            ActionReason::DeleteBecauseEachKey => "its key is no longer in for_each",
            ActionReason::DeleteBecauseCountIndex => "its index is beyond count",
            ActionReason::DeleteBecauseNoModule => "its module call is no longer in the stack",
            ActionReason::DeleteBecauseDestroy => "the stack is being destroyed",
            ActionReason::RecoverPendingOperation => "an interrupted run left this operation unfinished",
            ActionReason::DeleteInterruptedCreate => "a run was interrupted while creating it, and it is no longer in the stack",
            ActionReason::ReplaceInterruptedDelete => "a run was interrupted while deleting it, and the delete may still be under way",
            ActionReason::ImportNeedsReplace => "the imported object cannot be taken over in place",
            ActionReason::ReadBecauseDependencyPending => "its cluster is created by this apply",
            ActionReason::ReadBecauseConfigUnknown => "its arguments are known only after apply",
        }
    }

    pub fn json_name(self) -> &'static str {
        match self {
            ActionReason::ReplaceByRequest => "replace_by_request",
            ActionReason::ReplaceBecauseCannotUpdate => "replace_because_cannot_update",
            ActionReason::ReplaceBecauseClusterReplaced => "replace_because_cluster_replaced",
            ActionReason::RecreateBecauseDeletedOutOfBand => "recreate_because_deleted_out_of_band",
            ActionReason::DeleteBecauseNoConfig => "delete_because_no_resource_config",
            ActionReason::DeleteBecauseEachKey => "delete_because_each_key",
            ActionReason::DeleteBecauseCountIndex => "delete_because_count_index",
            ActionReason::DeleteBecauseNoModule => "delete_because_no_module",
            ActionReason::DeleteBecauseDestroy => "delete_because_destroy",
            ActionReason::RecoverPendingOperation => "recover_pending_operation",
            ActionReason::DeleteInterruptedCreate => "delete_because_interrupted_create",
            ActionReason::ReplaceInterruptedDelete => "replace_because_interrupted_delete",
            ActionReason::ImportNeedsReplace => "import_needs_replace",
            ActionReason::ReadBecauseDependencyPending => "read_because_dependency_pending",
            ActionReason::ReadBecauseConfigUnknown => "read_because_config_unknown",
        }
    }
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub kind: Kind,
    #[serde(rename = "type")]
    pub type_name: String,
    pub provider: String,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ActionReason>,
    /// Attributes before (the refreshed live object); None for a create.
    pub before: Option<Value>,
    /// Planned attributes; None for a delete. Unknown parts are known after apply.
    pub after: Option<Value>,
    #[serde(default)]
    pub before_sensitive: Vec<AttrPath>,
    #[serde(default)]
    pub after_sensitive: Vec<AttrPath>,
    /// Changed attributes that force the replacement.
    #[serde(default)]
    pub replace_paths: Vec<AttrPath>,
    /// Components this one depends on (from the graph, or recorded in state for deletes).
    #[serde(default)]
    pub depends_on: Vec<Address>,
    #[serde(default)]
    pub cluster: Option<Address>,
    /// Component-typed attributes: attribute name → referenced address.
    #[serde(default)]
    pub refs: BTreeMap<String, Address>,
    /// Delete volumes and buckets with data too (destroy --delete-data).
    #[serde(default)]
    pub delete_data: bool,
    /// Runs inside a cluster this plan creates: it can only be checked once the cluster exists,
    /// so it is planned from the stack alone and counted apart.
    #[serde(default)]
    pub deferred: bool,
    /// The provider's id of the existing object an `import` block takes over: applying records
    /// it (and writes `after` over it when the action is an update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_id: Option<String>,
}

impl Change {
    /// Whether applying it calls the provider: an import does even when nothing else changes
    /// (Kubernetes: server-side apply takes the fields over).
    pub fn mutates(&self) -> bool {
        self.action.mutates() || self.import_id.is_some()
    }

    /// Whether a plan shows it: what apply changes, and the data sources only apply can read
    /// (a source read at plan is no change, though apply reads it again: plans hold no secrets).
    pub fn shown(&self) -> bool {
        self.mutates() || (self.action == Action::Read && (self.deferred || self.reason.is_some()))
    }
}

/// A difference between what state recorded and what the live system has, found by refresh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub address: Address,
    pub kind: Kind,
    #[serde(rename = "type")]
    pub type_name: String,
    pub provider: String,
    /// Recorded attributes.
    pub before: Value,
    /// Live attributes; None when the object was deleted out of band.
    pub after: Option<Value>,
    pub sensitive: Vec<AttrPath>,
    /// The attributes that differ.
    pub paths: Vec<AttrPath>,
}

/// A change to a root output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputChange {
    pub name: String,
    pub action: Action,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub sensitive: bool,
}

/// Plan-wide options, recorded so that a saved plan is applied the way it was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanOptions {
    pub destroy: bool,
    pub refresh: bool,
    pub refresh_only: bool,
    pub targets: Vec<String>,
    pub replace: Vec<String>,
    pub delete_data: bool,
    /// Take ownership of fields other managers own (Kubernetes server-side apply).
    #[serde(default)]
    pub force_conflicts: bool,
    /// `-partition NAME`: plan only the components of that state partition; the others are
    /// read from their recorded state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
}

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: String,
    pub kdeploy_version: String,
    /// Lineage and serial of the state the plan was made against (None: no state yet).
    pub lineage: Option<String>,
    pub serial: u64,
    /// Digest of every stack source file and variable value.
    pub config_digest: String,
    pub options: PlanOptions,
    pub changes: Vec<Change>,
    pub drift: Vec<Drift>,
    pub output_changes: Vec<OutputChange>,
    /// Warnings to show with the plan (pending operations resolved, and such).
    #[serde(default)]
    pub notes: Vec<Note>,
    /// Health of deployed components as the providers see it (not changes).
    #[serde(default)]
    pub health: Vec<String>,
    /// Addresses of operations an earlier run left pending whose objects this plan's refresh
    /// found absent: nothing is left to track, so applying the plan forgets them, even when it
    /// changes nothing else.
    #[serde(default)]
    pub settled_pending: Vec<Address>,
    /// Stack sources (path relative to the stack directory → text), so that a saved plan can be
    /// applied exactly as planned.
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    /// Root variable values used (sensitive ones included: treat plan files as secrets).
    #[serde(default)]
    pub variables: BTreeMap<String, (Value, bool)>,
}

pub const PLAN_FORMAT_VERSION: &str = "1.0";

impl Plan {
    /// Counts for the summary line: (add, change, destroy), deferred changes excluded.
    pub fn counts(&self) -> (usize, usize, usize) {
        counts(self.changes.iter())
    }

    /// How many existing objects the plan imports.
    pub fn imports(&self) -> usize {
        self.changes.iter().filter(|c| c.import_id.is_some()).count()
    }

    /// [`Plan::counts`] per cluster (a cluster's own change counts for it; `None`: components
    /// on no cluster, such as cloud storage), for a fleet's plan summary.
    pub fn counts_by_cluster(&self) -> BTreeMap<Option<Address>, (usize, usize, usize)> {
        let mut groups: BTreeMap<Option<Address>, Vec<&Change>> = BTreeMap::new();
        for c in &self.changes {
            let cluster = if c.kind == Kind::Cluster { Some(c.address.clone()) } else { c.cluster.clone() };
            groups.entry(cluster).or_default().push(c);
        }
        groups.into_iter().map(|(k, changes)| (k, counts(changes.into_iter()))).filter(|(_, n)| *n != (0, 0, 0)).collect()
    }

    /// True when applying would change something (components or outputs).
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(Change::mutates) || self.output_changes.iter().any(|o| o.action != Action::NoOp)
    }

    /// Changes that wait for a cluster this plan creates.
    pub fn deferred(&self) -> usize {
        self.changes.iter().filter(|c| c.deferred && c.action.mutates()).count()
    }

    pub fn change(&self, addr: &Address) -> Option<&Change> {
        self.changes.iter().find(|c| c.address == *addr)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::NoOp => "no-op",
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::DeleteThenCreate => "replace",
            Action::CreateThenDelete => "replace (create before destroy)",
            Action::Delete => "delete",
        })
    }
}

/// Creates, updates and destroys among `changes` (a replacement counts as one of each).
fn counts<'a>(changes: impl Iterator<Item = &'a Change>) -> (usize, usize, usize) {
    let mut add = 0;
    let mut change = 0;
    let mut destroy = 0;
    for c in changes.filter(|c| !c.deferred) {
        match c.action {
            Action::Create => add += 1,
            Action::Update => change += 1,
            Action::DeleteThenCreate | Action::CreateThenDelete => {
                add += 1;
                destroy += 1;
            }
            Action::Delete => destroy += 1,
            Action::NoOp | Action::Read => {}
        }
    }
    (add, change, destroy)
}

/// A warning shown with a plan: its text, its summary (for `-compact-warnings`) and where in
/// the stack it comes from when it does. In a saved plan it is its text (the plan format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub summary: String,
    pub text: String,
    pub span: Option<crate::diag::Span>,
}

impl Note {
    /// A note written as sentences: its summary is its first clause or sentence.
    pub fn sentence(text: impl Into<String>) -> Note {
        let text = text.into();
        let end = [": ", ". ", "\n"].iter().filter_map(|sep| text.find(sep)).min().unwrap_or(text.len());
        Note { summary: text[..end].trim_end_matches('.').to_string(), text, span: None }
    }

    /// A warning diagnostic of the planning, with its span; the text ends with where it is
    /// (`on main.hcl:18:1`) when `sources` can tell.
    pub fn from_diagnostic(d: &crate::diag::Diagnostic, sources: Option<&crate::diag::SourceMap>) -> Note {
        let mut text = format!("{}: {}", d.summary, d.detail);
        if let (Some(sources), Some(span)) = (sources, &d.span) {
            text.push_str(&format!("\n  on {}", sources.location(span)));
        }
        Note { summary: d.summary.clone(), text, span: d.span.clone() }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Note {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Note {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Note::sentence)
    }
}

/// Forgets the operations an earlier run left pending that `plan` resolved: all of them,
/// except objects they may have left unrecorded that the plan neither handles (`handled`: the
/// addresses it changes; a targeted plan leaves some out) nor found absent. Those stay tracked
/// until they are recorded or deleted. True when something was forgotten.
pub fn forget_settled_pending(state: &mut kdeploy_state::State, plan: &Plan, handled: &std::collections::BTreeSet<Address>) -> bool {
    let before = state.pending.len();
    let keep: Vec<_> = state
        .pending
        .iter()
        .filter(|p| p.target.is_some() && state.resource(&p.address).is_none() && !handled.contains(&p.address) && !plan.settled_pending.contains(&p.address))
        .cloned()
        .collect();
    state.pending = keep;
    state.pending.len() != before
}

#[cfg(test)]
mod tests {
    use super::Note;
    use crate::diag::Diagnostic;

    #[test]
    fn notes_keep_their_summary_and_save_as_their_text() {
        let d = Diagnostic::warning("Resource targeting is in effect", "The plan may be incomplete.");
        let note = Note::from_diagnostic(&d, None);
        assert_eq!(note.summary, "Resource targeting is in effect");
        let saved = serde_json::to_string(&note).unwrap();
        assert_eq!(saved, "\"Resource targeting is in effect: The plan may be incomplete.\"");
        let loaded: Note = serde_json::from_str(&saved).unwrap();
        assert_eq!((loaded.summary.as_str(), loaded.text.as_str()), (note.summary.as_str(), note.text.as_str()));
        let sentence = Note::sentence("A previous run was interrupted while it was creating vault.main (started x). kdeploy read it.");
        assert_eq!(sentence.summary, "A previous run was interrupted while it was creating vault.main (started x)");
        assert_eq!(sentence.to_string(), sentence.text);
    }
}
