//! Applying a plan: one coordinator owns the state and schedules the plan's changes on
//! workers. Workers only call providers and send their result back; the coordinator records a
//! pending operation before each mutating call and the result after it, and makes each batch of
//! records durable (a journal group, see [`kdeploy_state::journal`]) before anything acts on it,
//! so a crash at any moment leaves a state the next plan can converge from. The end of the apply
//! folds the journal into the state.
//!
//! `--parallelism` bounds the workers that are writing: a worker holds a slot for its provider
//! writes and gives it back while it waits for readiness (the provider's
//! [`wait`](kdeploy_provider::Provider::wait)), so a thousand agents waiting at once do not stop
//! the next ones from being written. A change counts as done (recorded, its dependents free to
//! start) only when its wait is over.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdeploy_provider::{
    ApplyRequest, AttrPath, ComponentRef, DataRequest, DataResult, DeleteRequest, ErrorKind, Provider, ProviderError, Reference, Value, Wait, WaitRequest,
};
use kdeploy_state::{OutputState, PendingKind, PendingOp, PendingTarget, Record, Recorder, ResourceState, State, StateStore};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::addr::Address;
use crate::config::eval::Marked;
use crate::config::evaluator::SharedValues;
use crate::config::expand::{object_value, reference};
use crate::plan::{Action, Change, Plan};
use crate::providers::Providers;
use queue::{Queue, Status};

pub mod order;
mod queue;

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
    /// How many changes may be writing at once (`--parallelism`). A change waiting for
    /// readiness after its writes ([`kdeploy_provider::ApplyResponse::wait`]) does not count.
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

struct JobResult {
    index: usize,
    result: Result<Option<(Value, Option<String>)>, ProviderError>,
    /// Still held by a change that had nothing to wait for: freed once its result is recorded,
    /// so that with `--parallelism 1` changes without waits run strictly one after another.
    slot: Slot,
}

/// What one apply run tracks; the coordinator owns it.
struct Run<'p> {
    /// The plan's mutating changes; jobs are their indexes.
    changes: Vec<&'p Change>,
    queue: Queue,
    started_at: BTreeMap<usize, Instant>,
    /// The pending operation recorded for each running job.
    pending_ids: BTreeMap<usize, String>,
    /// The values of applied components, for the inputs of what depends on them.
    applied: BTreeMap<Address, Marked>,
    /// Applied values handed to providers as references, made once per value and shared
    /// (every agent of a fleet references the central Vault); dropped when `applied` changes.
    shared: SharedValues,
    set: JoinSet<JobResult>,
    /// The `--parallelism` slots; a job holds one while it writes.
    slots: Arc<Semaphore>,
    /// Jobs say here when they give back their slot.
    freed_tx: mpsc::UnboundedSender<()>,
    freed: mpsc::UnboundedReceiver<()>,
    outcome: Outcome,
    /// No new job starts (interrupted, or a state write failed).
    stopping: bool,
}

/// A job ready to start: a change with its final inputs, cluster and references.
struct Job {
    index: usize,
    provider: Arc<dyn Provider>,
    change: Change,
    planned: Option<Value>,
    cluster: Option<Value>,
    refs: BTreeMap<String, Reference>,
    slot: Slot,
}

/// The values of the components state records.
fn recorded_values(state: &State) -> BTreeMap<Address, Marked> {
    state.resources.iter().map(|r| (r.address.clone(), object_value(&r.address, &Value::from_json(&r.attributes), &r.sensitive_paths))).collect()
}

fn pending_kind(action: Action) -> PendingKind {
    match action {
        Action::Create => PendingKind::Create,
        Action::Delete => PendingKind::Delete,
        _ => PendingKind::Update,
    }
}

/// The state record of an applied change.
fn resource_state(change: &Change, attrs: &Value, fingerprint: Option<String>) -> ResourceState {
    ResourceState {
        address: change.address.clone(),
        kind: change.kind,
        type_name: change.type_name.clone(),
        provider: change.provider.clone(),
        attributes: attrs.to_json(),
        sensitive_paths: change.after_sensitive.clone(),
        dependencies: change.depends_on.clone(),
        fingerprint,
        create_before_destroy: change.action == Action::CreateThenDelete,
    }
}

/// One of the `--parallelism` slots, which bound provider writes: held while a job writes,
/// given back while it waits for readiness (waits share requests in the provider and can be
/// many at once), taken again for a write after the wait (a create-before-destroy delete).
struct Slot {
    slots: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    /// Tells the coordinator a slot is free (it schedules the next job).
    freed: mpsc::UnboundedSender<()>,
}

impl Slot {
    fn release(&mut self) {
        if self.permit.take().is_some() {
            let _ = self.freed.send(());
        }
    }

    async fn acquire(&mut self) {
        if self.permit.is_none() {
            self.permit = self.slots.clone().acquire_owned().await.ok();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Runs the provider calls of one change: its writes in `slot`, its wait for readiness (when
/// the provider asks for one) outside it.
async fn run_job(
    provider: Arc<dyn Provider>,
    change: Change,
    planned: Option<Value>,
    cluster: Option<Value>,
    refs: BTreeMap<String, Reference>,
    force_conflicts: bool,
    slot: &mut Slot,
) -> Result<Option<(Value, Option<String>)>, ProviderError> {
    let component = ComponentRef { address: change.address.clone(), kind: change.kind, type_name: change.type_name.clone() };
    let delete = |prior: Value| DeleteRequest { component: component.clone(), prior, cluster: cluster.clone(), delete_data: change.delete_data };
    let create = |planned: Value, prior: Option<Value>| ApplyRequest {
        component: component.clone(),
        prior,
        planned,
        cluster: cluster.clone(),
        refs: refs.clone(),
        force_conflicts,
    };
    let wait = |slot: &mut Slot, wait: Option<Wait>| {
        if wait.is_some() {
            slot.release();
        }
        let request = wait.map(|wait| WaitRequest { component: component.clone(), cluster: cluster.clone(), wait });
        let provider = provider.clone();
        async move {
            match request {
                Some(request) => provider.wait(request).await,
                None => Ok(()),
            }
        }
    };
    // An import that changes nothing still writes: the provider takes the object over.
    let action = if change.import_id.is_some() && change.action == Action::NoOp { Action::Update } else { change.action };
    match action {
        Action::Delete => {
            if let Some(before) = change.before.clone() {
                provider.delete(delete(before)).await?;
            }
            Ok(None)
        }
        Action::Create | Action::Update | Action::DeleteThenCreate => {
            let prior = if action == Action::Update { change.before.clone() } else { None };
            if action == Action::DeleteThenCreate
                && let Some(before) = change.before.clone()
            {
                provider.delete(delete(before)).await?;
            }
            let r = provider.apply(create(planned.unwrap_or_default(), prior)).await?;
            wait(slot, r.wait).await?;
            Ok(Some((r.attributes, r.fingerprint)))
        }
        Action::CreateThenDelete => {
            let r = provider.apply(create(planned.unwrap_or_default(), None)).await?;
            wait(slot, r.wait).await?;
            if let Some(before) = change.before.clone() {
                slot.acquire().await;
                provider.delete(delete(before)).await?;
            }
            Ok(Some((r.attributes, r.fingerprint)))
        }
        Action::Read => {
            let args = planned.unwrap_or_default();
            match provider.read_data(DataRequest { source: component.clone(), args: &args, cluster: cluster.as_ref() }).await? {
                DataResult::Found(v) => Ok(Some((v, None))),
                DataResult::Missing(what) => Err(ProviderError::new(
                    ErrorKind::Invalid,
                    format!("{}: {what} does not exist (any more); create it, or run `kdeploy plan` again", change.address),
                )),
            }
        }
        Action::NoOp => Ok(None),
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
                && !planned.same_as(v)
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
    /// Every change to `state` goes through it, as a record of the next persist.
    pub recorder: Recorder,
}

impl Coordinator<'_> {
    /// Makes the changes recorded since the last call durable (one journal group).
    fn persist(&mut self) -> Result<(), String> {
        self.recorder.persist(self.state, self.store).map_err(|e| e.to_string())
    }

    /// Changes the state (durable at the next persist).
    fn change(&mut self, record: Record) -> Result<(), String> {
        self.recorder.record(self.state, record).map_err(|e| e.to_string())
    }

    pub async fn run(mut self) -> Outcome {
        if self.plan.options.refresh_only {
            return self.accept_live_values();
        }
        let plan = self.plan;
        // Data sources are read again (the plan does not keep their values) before what refers to them.
        let changes: Vec<&Change> = plan.changes.iter().filter(|c| c.mutates() || c.action == Action::Read).collect();
        let queue = Queue::new(order::waits(&changes, self.state));
        let applied = recorded_values(self.state);
        let (freed_tx, freed) = mpsc::unbounded_channel();
        let mut run = Run {
            changes,
            queue,
            started_at: BTreeMap::new(),
            pending_ids: BTreeMap::new(),
            applied,
            shared: SharedValues::default(),
            set: JoinSet::new(),
            slots: Arc::new(Semaphore::new(self.options.parallelism.max(1))),
            freed_tx,
            freed,
            outcome: Outcome::default(),
            stopping: false,
        };
        if !self.state.pending.is_empty() {
            let handled: BTreeSet<Address> = run.changes.iter().map(|c| c.address.clone()).collect();
            crate::plan::forget_settled_pending(self.state, plan, &handled);
            if let Err(e) = self.persist() {
                run.outcome.state_error = Some(e);
                return run.outcome;
            }
        }
        let mut heartbeat = tokio::time::interval(self.options.heartbeat);
        heartbeat.tick().await;
        loop {
            let jobs = self.schedule(&mut run);
            self.start(&mut run, jobs);
            if run.set.is_empty() {
                break;
            }
            let interrupt = self.interrupt.clone();
            tokio::select! {
                joined = run.set.join_next() => {
                    let Some(joined) = joined else { break };
                    // Everything that has finished by now is recorded with one state write.
                    let mut finished = vec![joined];
                    while let Some(more) = run.set.try_join_next() {
                        finished.push(more);
                    }
                    for joined in finished {
                        self.record(&mut run, joined);
                    }
                    if let Err(e) = self.persist() {
                        run.outcome.state_error = Some(e);
                        run.stopping = true;
                    }
                }
                // A job finished writing and waits: its slot can start another.
                Some(()) = run.freed.recv() => while run.freed.try_recv().is_ok() {},
                _ = heartbeat.tick() => self.still_running(&run),
                _ = interrupt.notified(), if !run.stopping => {
                    run.stopping = true;
                    run.outcome.interrupted = true;
                    self.reporter.event(Event::Interrupted { running: run.set.len() });
                }
            }
        }
        self.finish(run)
    }

    /// `apply -refresh-only`: the live values the plan's refresh found become the record (a
    /// component deleted outside kdeploy leaves the state); no provider is called.
    fn accept_live_values(mut self) -> Outcome {
        let mut outcome = Outcome::default();
        let mut records = Vec::new();
        for d in &self.plan.drift {
            match &d.after {
                Some(after) => {
                    if let Some(r) = self.state.resource(&d.address) {
                        records.push(Record::Upsert { resource: ResourceState { attributes: after.to_json(), ..r.clone() } });
                    }
                }
                None => records.push(Record::Remove { address: d.address.clone() }),
            }
        }
        let saved = records.into_iter().try_for_each(|r| self.change(r));
        if !self.plan.drift.is_empty()
            && let Err(e) = saved.and_then(|()| self.persist()).and_then(|()| self.recorder.finish(self.state, self.store).map_err(|e| e.to_string()))
        {
            outcome.state_error = Some(e);
        }
        outcome
    }

    /// Skips what can no longer run and prepares what is ready, as long as a slot is free.
    fn schedule<'p>(&mut self, run: &mut Run<'p>) -> Vec<Job> {
        let mut jobs = Vec::new();
        loop {
            for (i, root) in run.queue.skip_blocked() {
                run.outcome.skipped.push((run.changes[i].address.clone(), run.changes[root].address.clone()));
            }
            if run.stopping {
                break;
            }
            let Some(i) = run.queue.next_ready() else { break };
            let Ok(permit) = run.slots.clone().try_acquire_owned() else { break };
            let slot = Slot { slots: run.slots.clone(), permit: Some(permit), freed: run.freed_tx.clone() };
            if let Some(job) = self.prepare(run, i, slot) {
                jobs.push(job);
            }
        }
        jobs
    }

    /// Takes job `i` out of waiting: failed (its inputs or provider), done (a delete of what is
    /// already gone), or running with its pending operation recorded and its job returned.
    fn prepare(&mut self, run: &mut Run<'_>, i: usize, slot: Slot) -> Option<Job> {
        let change = run.changes[i];
        // Final inputs, now that dependencies are applied.
        let planned = if change.action == Action::Delete {
            Ok(None)
        } else {
            self.finalizer.inputs(change, &run.applied).and_then(|(inputs, _)| merge_final(change, &inputs)).map(Some)
        };
        // Both steps can fail before any provider call: the change fails, nothing ran.
        let (planned, provider) = match planned.map_err(Failure::Inputs).and_then(|p| Ok((p, self.providers.get(&change.provider)?))) {
            Ok(x) => x,
            Err(failure) => {
                self.fail(run, i, failure);
                return None;
            }
        };
        // A delete of an object that is already gone only updates state.
        if change.action == Action::Delete && change.before.is_none() {
            run.applied.remove(&change.address);
            run.shared.forget(&change.address);
            if let Err(e) = self.change(Record::Remove { address: change.address.clone() }).and_then(|()| self.persist()) {
                run.outcome.state_error = Some(e);
                run.stopping = true;
            }
            run.queue.set(i, Status::Done);
            run.outcome.done.push((change.address.clone(), change.action));
            return None;
        }
        let cluster = change.cluster.as_ref().and_then(|c| run.applied.get(c)).map(|m| m.value.clone());
        // A read changes nothing: no pending operation.
        if change.action == Action::Read {
            run.queue.set(i, Status::Running);
            return Some(Job { index: i, provider, change: change.clone(), planned, cluster, refs: BTreeMap::new(), slot });
        }
        let pending = PendingOp::start(&change.address, pending_kind(change.action), self.pending_target(change, planned.as_ref()));
        let sensitive_paths = if planned.is_some() { change.after_sensitive.clone() } else { change.before_sensitive.clone() };
        run.pending_ids.insert(i, pending.id.clone());
        if let Err(e) = self.change(Record::Begin { pending, sensitive_paths }) {
            run.pending_ids.remove(&i);
            self.fail(run, i, Failure::Inputs(e));
            return None;
        }
        let mut refs: BTreeMap<String, Reference> = BTreeMap::new();
        for (k, a) in &change.refs {
            let (Some(resource), Some(value)) = (self.state.resource(a), run.shared.get_or_copy(a, run.applied.get(a).map(|m| &m.value))) else { continue };
            refs.insert(k.clone(), reference(a, &resource.type_name, value));
        }
        run.queue.set(i, Status::Running);
        Some(Job { index: i, provider, change: change.clone(), planned, cluster, refs, slot })
    }

    /// What a later run needs to find the object should this run die mid-way, even if the
    /// component has left the stack by then.
    fn pending_target(&self, change: &Change, planned: Option<&Value>) -> Option<PendingTarget> {
        let unrecorded = self.state.resource(&change.address).is_none();
        (change.action == Action::Create || change.action.is_replace() || unrecorded).then(|| PendingTarget {
            kind: change.kind,
            type_name: change.type_name.clone(),
            provider: change.provider.clone(),
            attributes: planned.or(change.before.as_ref()).map(known_json).unwrap_or(serde_json::Value::Null),
            dependencies: change.depends_on.clone(),
        })
    }

    fn fail(&mut self, run: &mut Run<'_>, i: usize, failure: Failure) {
        let change = run.changes[i];
        run.queue.set(i, Status::Failed);
        self.reporter.event(Event::Failed { address: change.address.clone(), action: change.action, message: failure.to_string() });
        run.outcome.failed.push((change.address.clone(), failure));
    }

    /// Starts the prepared jobs, after one state write has recorded all of their pending
    /// operations (none starts when that write fails).
    fn start(&mut self, run: &mut Run<'_>, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        if let Err(e) = self.persist() {
            for job in jobs {
                if let Some(id) = run.pending_ids.remove(&job.index) {
                    // Not started: no longer pending (in memory; errored.kdstate keeps it so).
                    let _ = self.change(Record::Finish { id });
                }
                run.queue.set(job.index, Status::Waiting);
            }
            run.outcome.state_error = Some(e);
            run.stopping = true;
            return;
        }
        let force_conflicts = self.plan.options.force_conflicts;
        for Job { index, provider, change, planned, cluster, refs, slot } in jobs {
            run.started_at.insert(index, Instant::now());
            self.reporter.event(Event::Started { address: change.address.clone(), action: change.action });
            run.set.spawn(async move {
                let mut slot = slot;
                let result = run_job(provider, change, planned, cluster, refs, force_conflicts, &mut slot).await;
                JobResult { index, result, slot }
            });
        }
    }

    /// Records a finished job in state (not yet written) and the outcome.
    fn record(&mut self, run: &mut Run<'_>, joined: Result<JobResult, tokio::task::JoinError>) {
        let JobResult { index: i, result, slot: _slot } = match joined {
            Ok(r) => r,
            Err(e) => {
                // A worker panicked: we cannot tell which; fail everything running.
                for j in run.queue.all(Status::Running).collect::<Vec<_>>() {
                    run.queue.set(j, Status::Failed);
                    run.outcome.failed.push((run.changes[j].address.clone(), Failure::Worker(e.to_string())));
                }
                return;
            }
        };
        let change = run.changes[i];
        let elapsed = run.started_at.get(&i).map(|s| s.elapsed()).unwrap_or_default();
        let mut records = Vec::new();
        let failure = match result {
            Ok(None) => {
                run.applied.remove(&change.address);
                run.shared.forget(&change.address);
                records.push(Record::Remove { address: change.address.clone() });
                None
            }
            // A data source's value is for this apply only, never state.
            Ok(Some((attrs, _))) if change.action == Action::Read => {
                run.applied.insert(change.address.clone(), object_value(&change.address, &attrs, &change.after_sensitive));
                run.shared.forget(&change.address);
                None
            }
            Ok(Some((attrs, fingerprint))) => {
                run.applied.insert(change.address.clone(), object_value(&change.address, &attrs, &change.after_sensitive));
                run.shared.forget(&change.address);
                records.push(Record::Upsert { resource: resource_state(change, &attrs, fingerprint) });
                None
            }
            Err(e) => Some(Failure::Call(e)),
        };
        records.extend(run.pending_ids.remove(&i).map(|id| Record::Finish { id }));
        // A result the state cannot hold (a provider bug) fails the change; its pending
        // operation stays, so the next plan reads the live object.
        if let Some(e) = records.into_iter().find_map(|r| self.change(r).err()) {
            return self.fail(run, i, Failure::Worker(e));
        }
        if let Some(failure) = failure {
            return self.fail(run, i, failure);
        }
        run.queue.set(i, Status::Done);
        run.outcome.done.push((change.address.clone(), change.action));
        self.reporter.event(Event::Finished { address: change.address.clone(), action: change.action, elapsed });
    }

    fn still_running(&mut self, run: &Run<'_>) {
        for (&i, s) in &run.started_at {
            if run.queue.status(i) == Status::Running && s.elapsed() >= self.options.heartbeat {
                let c = run.changes[i];
                self.reporter.event(Event::StillRunning { address: c.address.clone(), action: c.action, elapsed: s.elapsed() });
            }
        }
    }

    /// After the last job: what did not start, the skips once per root cause, the outputs.
    fn finish(&mut self, mut run: Run<'_>) -> Outcome {
        for i in run.queue.all(Status::Waiting) {
            run.outcome.not_started.push(run.changes[i].address.clone());
        }
        let mut by_cause: BTreeMap<Address, Vec<Address>> = BTreeMap::new();
        for (a, cause) in &run.outcome.skipped {
            by_cause.entry(cause.clone()).or_default().push(a.clone());
        }
        for (because, addresses) in by_cause {
            self.reporter.event(Event::Skipped { addresses, because });
        }
        if run.outcome.state_error.is_none() {
            // The outputs, then the journal folded into the state.
            let saved = self.record_outputs(&run.applied).and_then(|changed| if changed { self.persist() } else { Ok(()) });
            if let Err(e) = saved.and_then(|()| self.recorder.finish(self.state, self.store).map_err(|e| e.to_string())) {
                run.outcome.state_error = Some(e);
            }
        }
        run.outcome
    }

    /// Records the root outputs from what was applied; true when they changed.
    fn record_outputs(&mut self, applied: &BTreeMap<Address, Marked>) -> Result<bool, String> {
        let mut changes = Vec::new();
        for (name, (value, sensitive)) in self.finalizer.outputs(applied) {
            let new = OutputState { value: value.to_json(), sensitive };
            if self.state.outputs.get(&name) != Some(&new) {
                changes.push(Record::Output { name, value: Some(new) });
            }
        }
        for o in self.plan.output_changes.iter().filter(|o| o.action == Action::Delete) {
            if self.state.outputs.contains_key(&o.name) {
                changes.push(Record::Output { name: o.name.clone(), value: None });
            }
        }
        let changed = !changes.is_empty();
        for r in changes {
            self.change(r)?;
        }
        Ok(changed)
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
