//! Applying a plan: one coordinator owns the state and schedules the plan's changes on a
//! bounded pool of workers. Workers only call providers and send their result back; the
//! coordinator records a pending operation before each mutating call and the result after it,
//! persisting the state each time, so a crash at any moment leaves a state the next plan can
//! converge from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdeploy_provider::{ApplyRequest, AttrPath, ComponentRef, DeleteRequest, Provider, ProviderError, Reference, Value};
use kdeploy_state::{OutputState, PendingKind, PendingTarget, ResourceState, State, StateStore};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::addr::Address;
use crate::config::eval::Marked;
use crate::config::expand::{object_value, reference, without_address};
use crate::plan::{Action, Change, Plan};
use crate::providers::Providers;

/// What the coordinator tells the user as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started {
        address: Address,
        action: Action,
    },
    StillRunning {
        address: Address,
        action: Action,
        elapsed: Duration,
    },
    Finished {
        address: Address,
        action: Action,
        elapsed: Duration,
    },
    Failed {
        address: Address,
        action: Action,
        message: String,
    },
    /// Not started because something it depends on failed (reported once per root cause).
    Skipped {
        addresses: Vec<Address>,
        because: Address,
    },
    Interrupted {
        running: usize,
    },
}

/// Receives apply events (the CLI draws progress from them).
pub trait Reporter {
    fn event(&mut self, event: Event);
}

/// A reporter that ignores everything.
pub struct Quiet;
impl Reporter for Quiet {
    fn event(&mut self, _: Event) {}
}

/// Computes the final inputs of a change at apply time, from the values applied so far (the
/// plan may have had unknowns that are known now), and the root outputs at the end.
pub trait Finalizer: Send + Sync {
    /// The inputs and their sensitive paths.
    fn inputs(&self, change: &Change, applied: &BTreeMap<Address, Marked>) -> Result<(Value, Vec<AttrPath>), String>;
    /// Root outputs: name → (value, sensitive). Outputs that cannot be evaluated are left out.
    fn outputs(&self, applied: &BTreeMap<Address, Marked>) -> BTreeMap<String, (Value, bool)>;
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub parallelism: usize,
    /// How often to report long-running operations.
    pub heartbeat: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { parallelism: 10, heartbeat: Duration::from_secs(10) }
    }
}

/// Why a change failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// Its final inputs could not be computed (a value changed between plan and apply).
    #[error("{0}")]
    Inputs(String),
    /// The provider it needs is not in this build.
    #[error(transparent)]
    Provider(#[from] crate::providers::LookupError),
    /// The provider's call failed.
    #[error("{}", .0.message)]
    Call(kdeploy_provider::ProviderError),
    /// A worker panicked while this change was running.
    #[error("internal error: {0}")]
    Worker(String),
}

/// The result of an apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub done: Vec<(Address, Action)>,
    pub failed: Vec<(Address, Failure)>,
    /// Skipped instances with the failed component that caused it.
    pub skipped: Vec<(Address, Address)>,
    /// Not started because of an interrupt or a state write failure.
    pub not_started: Vec<Address>,
    pub interrupted: bool,
    /// A state write failed: the message, and the state that could not be saved.
    pub state_error: Option<String>,
    /// What was checked after apply (each Vault account answers); a failed check fails the apply.
    pub checks: Vec<kdeploy_provider::Check>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.not_started.is_empty()
            && !self.interrupted
            && self.state_error.is_none()
            && self.checks.iter().all(|c| c.ok)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
}

struct JobResult {
    index: usize,
    result: Result<Option<(Value, Option<String>)>, ProviderError>,
}

/// Runs the provider calls of one change.
async fn run_job(
    provider: Arc<dyn Provider>,
    change: Change,
    planned: Option<Value>,
    cluster: Option<Value>,
    refs: BTreeMap<String, Reference>,
    force_conflicts: bool,
) -> Result<Option<(Value, Option<String>)>, ProviderError> {
    let component = ComponentRef { address: change.address.to_string(), kind: change.kind, type_name: change.type_name.clone() };
    let delete = |prior: Value| DeleteRequest { component: component.clone(), prior, cluster: cluster.clone(), delete_data: change.delete_data };
    let create = |planned: Value, prior: Option<Value>| ApplyRequest {
        component: component.clone(),
        prior,
        planned,
        cluster: cluster.clone(),
        refs: refs.clone(),
        force_conflicts,
    };
    match change.action {
        Action::Delete => {
            if let Some(before) = change.before.clone() {
                provider.delete(delete(before)).await?;
            }
            Ok(None)
        }
        Action::Create => {
            let r = provider.apply(create(planned.unwrap_or_default(), None)).await?;
            Ok(Some((r.attributes, r.fingerprint)))
        }
        Action::Update => {
            let r = provider.apply(create(planned.unwrap_or_default(), change.before.clone())).await?;
            Ok(Some((r.attributes, r.fingerprint)))
        }
        Action::DeleteThenCreate => {
            if let Some(before) = change.before.clone() {
                provider.delete(delete(before)).await?;
            }
            let r = provider.apply(create(planned.unwrap_or_default(), None)).await?;
            Ok(Some((r.attributes, r.fingerprint)))
        }
        Action::CreateThenDelete => {
            let r = provider.apply(create(planned.unwrap_or_default(), None)).await?;
            if let Some(before) = change.before.clone() {
                provider.delete(delete(before)).await?;
            }
            Ok(Some((r.attributes, r.fingerprint)))
        }
        Action::NoOp | Action::Read => Ok(None),
    }
}

/// Merges finalized inputs into the planned value: inputs come from `inputs`, computed
/// attributes keep the planned (possibly unknown) value. Fails when a value that was known at
/// plan time changed.
fn merge_final(change: &Change, inputs: &Value) -> Result<Value, String> {
    let mut out = change.after.as_ref().and_then(Value::as_map).cloned().unwrap_or_default();
    if let Some(m) = inputs.as_map() {
        for (k, v) in m {
            if let Some(planned) = out.get(k)
                && !planned.contains_unknown()
                && !crate::config::eval::values_equal(planned, v)
            {
                return Err(format!(
                    "the value of {k:?} changed between plan and apply; run `kdeploy plan` again (the stack or a variable changed while applying)"
                ));
            }
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Map(out))
}

/// The coordinator. It owns `state` and `store` for the duration of the apply.
pub struct Coordinator<'a> {
    pub plan: &'a Plan,
    pub state: &'a mut State,
    pub store: &'a mut dyn StateStore,
    pub providers: &'a Providers,
    pub finalizer: &'a dyn Finalizer,
    pub reporter: &'a mut dyn Reporter,
    pub options: ApplyOptions,
    /// Notified on Ctrl-C: stop scheduling, let running operations finish, save state.
    pub interrupt: Arc<Notify>,
}

impl Coordinator<'_> {
    fn persist(&mut self) -> Result<(), String> {
        self.state.bump_serial().map_err(|e| e.to_string())?;
        self.store.write(self.state).map_err(|e| e.to_string())
    }

    pub async fn run(mut self) -> Outcome {
        let changes: Vec<&Change> = self.plan.changes.iter().filter(|c| c.action.mutates()).collect();
        let n = changes.len();
        let index: BTreeMap<&Address, usize> = changes.iter().enumerate().map(|(i, c)| (&c.address, i)).collect();
        // waits[i]: jobs that must finish before job i starts.
        let mut waits: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        for (i, c) in changes.iter().enumerate() {
            if c.action == Action::Delete {
                // Deletes wait for everything that depended on the deleted component.
                for (j, other) in changes.iter().enumerate() {
                    let recorded = self.state.resource(&other.address.to_string()).map(|r| r.dependencies.clone()).unwrap_or_default();
                    if j != i && (other.depends_on.contains(&c.address) || recorded.contains(&c.address.to_string())) {
                        waits[i].insert(j);
                    }
                }
            } else {
                for d in &c.depends_on {
                    if let Some(&j) = index.get(d)
                        && changes[j].action != Action::Delete
                    {
                        waits[i].insert(j);
                    }
                }
            }
        }
        let mut status = vec![Status::Waiting; n];
        let mut root_cause: Vec<Option<Address>> = vec![None; n];
        let mut started_at: BTreeMap<usize, Instant> = BTreeMap::new();
        let mut pending_ids: BTreeMap<usize, String> = BTreeMap::new();
        let mut outcome = Outcome::default();
        let mut applied: BTreeMap<Address, Marked> = self
            .state
            .resources
            .iter()
            .filter_map(|r| {
                let a: Address = r.address.parse().ok()?;
                Some((a.clone(), object_value(&a, &Value::from_json(&r.attributes), &r.sensitive_paths)))
            })
            .collect();
        if !self.state.pending.is_empty() {
            let handled: BTreeSet<String> = changes.iter().map(|c| c.address.to_string()).collect();
            crate::plan::forget_settled_pending(self.state, self.plan, &handled);
            if let Err(e) = self.persist() {
                outcome.state_error = Some(e);
                return outcome;
            }
        }
        let mut set: JoinSet<JobResult> = JoinSet::new();
        let mut stopping = false;
        let mut heartbeat = tokio::time::interval(self.options.heartbeat);
        heartbeat.tick().await;
        let parallelism = self.options.parallelism.max(1);

        loop {
            // Skip what can no longer run, schedule what is ready.
            let mut to_start = Vec::new();
            let mut progressed = true;
            while progressed {
                progressed = false;
                for i in 0..n {
                    if status[i] != Status::Waiting {
                        continue;
                    }
                    if let Some(&bad) = waits[i].iter().find(|&&j| matches!(status[j], Status::Failed | Status::Skipped)) {
                        status[i] = Status::Skipped;
                        let cause = root_cause[bad].clone().unwrap_or_else(|| changes[bad].address.clone());
                        root_cause[i] = Some(cause.clone());
                        outcome.skipped.push((changes[i].address.clone(), cause));
                        progressed = true;
                        continue;
                    }
                    if stopping || set.len() + to_start.len() >= parallelism || !waits[i].iter().all(|&j| status[j] == Status::Done) {
                        continue;
                    }
                    let change = changes[i].clone();
                    // Final inputs, now that dependencies are applied.
                    let planned = if change.action == Action::Delete {
                        Ok(None)
                    } else {
                        self.finalizer.inputs(&change, &applied).and_then(|(inputs, _)| merge_final(&change, &inputs)).map(Some)
                    };
                    // Both steps can fail before any provider call: the change fails, nothing ran.
                    let ready = planned.map_err(Failure::Inputs).and_then(|p| Ok((p, self.providers.get(&change.provider)?)));
                    let (planned, provider) = match ready {
                        Ok(x) => x,
                        Err(failure) => {
                            status[i] = Status::Failed;
                            self.reporter.event(Event::Failed { address: change.address.clone(), action: change.action, message: failure.to_string() });
                            outcome.failed.push((change.address.clone(), failure));
                            progressed = true;
                            continue;
                        }
                    };
                    // A delete of an object that is already gone only updates state.
                    if change.action == Action::Delete && change.before.is_none() {
                        self.state.remove(&change.address.to_string());
                        applied.remove(&change.address);
                        if let Err(e) = self.persist() {
                            outcome.state_error = Some(e);
                            stopping = true;
                        }
                        status[i] = Status::Done;
                        outcome.done.push((change.address.clone(), change.action));
                        progressed = true;
                        continue;
                    }
                    let kind = match change.action {
                        Action::Create => PendingKind::Create,
                        Action::Delete => PendingKind::Delete,
                        _ => PendingKind::Update,
                    };
                    // What a later run needs to find the object should this run die mid-way,
                    // even if the component has left the stack by then.
                    let unrecorded = self.state.resource(&change.address.to_string()).is_none();
                    let target = (kind == PendingKind::Create || change.action.is_replace() || unrecorded).then(|| PendingTarget {
                        kind: change.kind.keyword().to_string(),
                        type_name: change.type_name.clone(),
                        provider: change.provider.clone(),
                        attributes: planned.as_ref().or(change.before.as_ref()).map(known_json).unwrap_or(serde_json::Value::Null),
                        dependencies: change.depends_on.iter().map(ToString::to_string).collect(),
                    });
                    let id = self.state.begin_pending(&change.address.to_string(), kind, target);
                    pending_ids.insert(i, id);
                    let cluster = change.cluster.as_ref().and_then(|c| applied.get(c)).map(|m| without_address(&m.value));
                    let refs: BTreeMap<String, Reference> = change
                        .refs
                        .iter()
                        .filter_map(|(k, a)| {
                            let type_name = self.state.resource(&a.to_string())?.type_name.clone();
                            Some((k.clone(), reference(a, &type_name, &applied.get(a)?.value)))
                        })
                        .collect();
                    status[i] = Status::Running;
                    to_start.push((i, provider, change, planned, cluster, refs));
                    progressed = true;
                }
            }
            // One state write records every operation about to start, before any of them does.
            if !to_start.is_empty() {
                if let Err(e) = self.persist() {
                    for (i, ..) in to_start.drain(..) {
                        if let Some(id) = pending_ids.remove(&i) {
                            self.state.finish_pending(&id);
                        }
                        status[i] = Status::Waiting;
                    }
                    outcome.state_error = Some(e);
                    stopping = true;
                }
                let force_conflicts = self.plan.options.force_conflicts;
                for (i, provider, change, planned, cluster, refs) in to_start.drain(..) {
                    started_at.insert(i, Instant::now());
                    self.reporter.event(Event::Started { address: change.address.clone(), action: change.action });
                    set.spawn(async move {
                        let result = run_job(provider, change, planned, cluster, refs, force_conflicts).await;
                        JobResult { index: i, result }
                    });
                }
            }
            if set.is_empty() {
                break;
            }
            let interrupt = self.interrupt.clone();
            tokio::select! {
                joined = set.join_next() => {
                    let Some(joined) = joined else { break };
                    // Everything that has finished by now is recorded with one state write.
                    let mut finished = vec![joined];
                    while let Some(more) = set.try_join_next() {
                        finished.push(more);
                    }
                    for joined in finished {
                    let JobResult { index: i, result } = match joined {
                        Ok(r) => r,
                        Err(e) => {
                            // A worker panicked: we cannot tell which; fail everything running.
                            for (j, s) in status.iter_mut().enumerate() {
                                if *s == Status::Running {
                                    *s = Status::Failed;
                                    outcome.failed.push((changes[j].address.clone(), Failure::Worker(e.to_string())));
                                }
                            }
                            continue;
                        }
                    };
                    let change = changes[i];
                    let elapsed = started_at.get(&i).map(|s| s.elapsed()).unwrap_or_default();
                    if let Some(id) = pending_ids.remove(&i) {
                        self.state.finish_pending(&id);
                    }
                    match result {
                        Ok(result) => {
                            let addr_s = change.address.to_string();
                            match result {
                                None => {
                                    self.state.remove(&addr_s);
                                    applied.remove(&change.address);
                                }
                                Some((attrs, fingerprint)) => {
                                    let sensitive = change.after_sensitive.clone();
                                    applied.insert(change.address.clone(), object_value(&change.address, &attrs, &sensitive));
                                    self.state.upsert(ResourceState {
                                        address: addr_s,
                                        kind: change.kind.keyword().to_string(),
                                        type_name: change.type_name.clone(),
                                        provider: change.provider.clone(),
                                        attributes: attrs.to_json(),
                                        sensitive_paths: sensitive,
                                        dependencies: change.depends_on.iter().map(ToString::to_string).collect(),
                                        fingerprint,
                                        create_before_destroy: change.action == Action::CreateThenDelete,
                                    });
                                }
                            }
                            status[i] = Status::Done;
                            outcome.done.push((change.address.clone(), change.action));
                            self.reporter.event(Event::Finished { address: change.address.clone(), action: change.action, elapsed });
                        }
                        Err(e) => {
                            status[i] = Status::Failed;
                            self.reporter.event(Event::Failed { address: change.address.clone(), action: change.action, message: e.message.clone() });
                            outcome.failed.push((change.address.clone(), Failure::Call(e)));
                        }
                    }
                    }
                    if let Err(e) = self.persist() {
                        outcome.state_error = Some(e);
                        stopping = true;
                    }
                }
                _ = heartbeat.tick() => {
                    for (&i, s) in &started_at {
                        if status[i] == Status::Running && s.elapsed() >= self.options.heartbeat {
                            self.reporter.event(Event::StillRunning { address: changes[i].address.clone(), action: changes[i].action, elapsed: s.elapsed() });
                        }
                    }
                }
                _ = interrupt.notified(), if !stopping => {
                    stopping = true;
                    outcome.interrupted = true;
                    self.reporter.event(Event::Interrupted { running: set.len() });
                }
            }
        }
        for i in 0..n {
            if status[i] == Status::Waiting {
                outcome.not_started.push(changes[i].address.clone());
            }
        }
        // Report skips once per root cause.
        let mut by_cause: BTreeMap<Address, Vec<Address>> = BTreeMap::new();
        for (a, cause) in &outcome.skipped {
            by_cause.entry(cause.clone()).or_default().push(a.clone());
        }
        for (because, addresses) in by_cause {
            self.reporter.event(Event::Skipped { addresses, because });
        }
        // Outputs, from what was applied.
        if outcome.state_error.is_none() {
            let outputs = self.finalizer.outputs(&applied);
            let mut changed = false;
            for (name, (value, sensitive)) in outputs {
                let new = OutputState { value: value.to_json(), sensitive };
                if self.state.outputs.get(&name) != Some(&new) {
                    self.state.outputs.insert(name, new);
                    changed = true;
                }
            }
            if self.plan.options.destroy || self.plan.output_changes.iter().any(|o| o.action == Action::Delete) {
                let removed: Vec<String> = self.plan.output_changes.iter().filter(|o| o.action == Action::Delete).map(|o| o.name.clone()).collect();
                for r in removed {
                    changed |= self.state.outputs.remove(&r).is_some();
                }
            }
            if changed && let Err(e) = self.persist() {
                outcome.state_error = Some(e);
            }
        }
        outcome
    }
}

/// The known part of a value as JSON: unknown values (and the entries holding them) are left
/// out.
fn known_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Map(m) => serde_json::Value::Object(m.iter().filter(|(_, v)| !v.is_unknown()).map(|(k, v)| (k.clone(), known_json(v))).collect()),
        Value::List(l) => serde_json::Value::Array(l.iter().filter(|v| !v.is_unknown()).map(known_json).collect()),
        Value::Unknown(_) => serde_json::Value::Null,
        other => other.to_json(),
    }
}
