//! The planner: desired (the evaluated stack) + recorded (state) + live (provider reads) →
//! [`Plan`]. It calls providers' `read` and `plan`, never their write methods.
//!
//! [`plan`] is the recipe: refresh ([`super::refresh`]), one [`Planner::instance`] per declared
//! component in dependency order (the action chosen by [`super::decide`]), the deletes
//! ([`super::deletes`]), `-target` ([`super::targets`]) and the outputs ([`super::outputs`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use kdeploy_provider::{AttrPath, ComponentRef, DataRequest, DataResult, ImportRequest, Kind, PlanRequest, Provider, Reference, Value};
use kdeploy_state::{PendingKind, State};

use super::decide::{Decision, Facts, decide};
use super::deletes::deletes;
use super::refresh::{PendingCtx, orphan_deletes, pending_notes, pending_reads, recorded_only, settled_pending};
use super::{Change, Note, PLAN_FORMAT_VERSION, Plan, PlanOptions, outputs, targets};
use crate::addr::{Address, Target};
use crate::config::Stack;
use crate::config::eval::{Ctx, Marked};
use crate::config::evaluator::Evaluator;
use crate::config::expand::{self, Desired, Expanded, reference};
use crate::diag::{Diagnostic, Diagnostics, SourceMap};
use crate::graph::DepGraph;
use crate::providers::Providers;

pub use super::refresh::{PendingRead, Refreshed, changed_paths, refresh, state_attrs, verify};

/// Everything the planner reads.
pub struct PlanInput<'a> {
    pub stack: &'a Stack,
    pub sources: &'a SourceMap,
    pub root_vars: &'a BTreeMap<String, Marked>,
    pub expanded: &'a Expanded,
    pub graph: &'a DepGraph,
    /// The state as recorded by the previous run.
    pub state: &'a State,
    pub providers: &'a Providers,
    pub options: &'a PlanOptions,
    pub kdeploy_version: &'a str,
}

/// Computes the plan.
pub async fn plan(input: PlanInput<'_>) -> Result<(Plan, Refreshed), Diagnostics> {
    let PlanInput { stack, sources, root_vars, expanded, graph, state: whole, providers, options, kdeploy_version } = input;
    let (target_list, replace_list) = targets::parse(options)?;
    // With -partition, only that partition's recorded components are refreshed, planned and
    // deleted; the others are read from `whole`.
    let own = options.partition.as_deref().map(|p| crate::partition::restrict(whole, p));
    let state = own.as_ref().unwrap_or(whole);
    let eval = Evaluator::new(stack, sources, root_vars, expanded);
    let types = instance_types(stack, expanded, &eval.ctx());
    // Imports of what state already records are done: the block can stay.
    let (mut imports, import_diags) = crate::config::imports::ids(stack, &eval.ctx());
    imports.retain(|a, _| state.resource(a).is_none());

    let pending = pending_reads(state, &PendingCtx { expanded, eval: &eval, types: &types });
    let refreshed = if options.refresh {
        super::refresh::settle_interrupted(state).await;
        super::refresh::refresh(state, providers, &pending).await?
    } else {
        recorded_only(state)
    };

    let mut planner = Planner {
        stack,
        expanded,
        graph,
        state,
        providers,
        options,
        eval: &eval,
        types: &types,
        refreshed: &refreshed,
        replace_list: &replace_list,
        changes: Vec::new(),
        imports: &imports,
        diags: import_diags,
        notes: pending_notes(state),
        partition: options.partition.as_deref().map(|p| Foreign { partition: p, whole, missing: BTreeMap::new() }),
    };
    if !options.destroy {
        for addr in graph.topo_order() {
            planner.instance(&addr).await;
        }
    }
    let Planner { mut changes, mut diags, mut notes, .. } = planner;
    changes.extend(deletes(stack, expanded, state, &refreshed, options));
    let orphans = orphan_deletes(&pending, expanded, &refreshed, options, &changes);
    changes.extend(orphans);
    targets::restrict(&mut changes, &target_list, graph, options, &mut diags);
    // Only what this plan destroys is checked: a targeted destroy of other components is not
    // blocked by a protected one it leaves alone.
    for c in changes.iter().filter(|c| c.action == super::Action::Delete || c.action.is_replace()) {
        if let Some(decl) = expanded.decl(stack, &c.address)
            && decl.lifecycle.prevent_destroy
        {
            diags.push(prevent_destroy_diag(&c.address, Some(decl.span.clone())));
        }
    }
    if options.refresh_only {
        changes.clear();
    }
    // The root outputs are in the default partition: only its runs (and whole ones) change them.
    let outputs_here = options.partition.as_deref().is_none_or(|p| p == kdeploy_state::DEFAULT_PARTITION);
    let output_changes = if options.refresh_only || !outputs_here { Vec::new() } else { outputs::changes(stack, state, &eval, options, &mut diags) };
    if diags.has_errors() {
        return Err(diags);
    }
    notes.extend(diags.0.iter().filter(|d| d.severity == crate::diag::Severity::Warning).map(|d| Note::from_diagnostic(d, Some(sources))));
    changes.sort_by(|a, b| a.address.cmp(&b.address));
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION.to_string(),
        kdeploy_version: kdeploy_version.to_string(),
        lineage: if whole.serial == 0 && whole.resources.is_empty() { None } else { Some(whole.lineage.clone()) },
        serial: whole.serial,
        config_digest: String::new(),
        options: options.clone(),
        changes,
        drift: refreshed.drift.clone(),
        output_changes,
        notes,
        health: refreshed.health.iter().map(|c| c.message.clone()).collect(),
        settled_pending: if options.refresh { settled_pending(&pending, &refreshed) } else { Vec::new() },
        sources: BTreeMap::new(),
        variables: BTreeMap::new(),
    };
    Ok((plan, refreshed))
}

/// The type of every instance (for provider routing and the reads of pending creates).
fn instance_types(stack: &Stack, expanded: &Expanded, ctx: &Ctx<'_>) -> BTreeMap<Address, String> {
    let mut types = BTreeMap::new();
    for (addr, inst) in &expanded.instances {
        let decl = &stack.modules[inst.module].components[inst.decl];
        let mut scope = ctx.scope(&addr.module);
        scope.each = inst.each.clone();
        scope.count = inst.count;
        if let Ok((t, _)) = expand::component_type(&scope, decl) {
            types.insert(addr.clone(), t);
        }
    }
    types
}

/// The planning of the declared components, one at a time in dependency order: each one's
/// planned value is recorded so that the components after it can refer to it.
struct Planner<'a> {
    stack: &'a Stack,
    expanded: &'a Expanded,
    graph: &'a DepGraph,
    state: &'a State,
    providers: &'a Providers,
    options: &'a PlanOptions,
    eval: &'a Evaluator<'a>,
    types: &'a BTreeMap<Address, String>,
    refreshed: &'a Refreshed,
    replace_list: &'a [Target],
    changes: Vec<Change>,
    /// The ids of the `import` blocks whose components state does not record yet.
    imports: &'a BTreeMap<Address, String>,
    diags: Diagnostics,
    notes: Vec<Note>,
    /// With -partition: the partition planned, and where the others' values come from.
    partition: Option<Foreign<'a>>,
}

/// A plan of one partition: the components of other partitions are not planned; their values
/// are those their partitions recorded.
struct Foreign<'a> {
    partition: &'a str,
    /// Every partition's state.
    whole: &'a State,
    /// Components of other partitions with no recorded state, and their partition.
    missing: BTreeMap<Address, String>,
}

/// What one component's plan is computed from.
struct Subject<'d> {
    addr: Address,
    desired: &'d Desired,
    provider_name: String,
    provider: Arc<dyn Provider>,
    /// The live attributes, when found live.
    prior: Option<Value>,
    /// What state records.
    recorded: Option<Value>,
    /// The desired inputs, ignored attributes taken from the live object.
    inputs: Value,
    refs: BTreeMap<String, Reference>,
    cluster: Option<Value>,
}

impl Planner<'_> {
    /// Plans one declared instance; problems become diagnostics and leave it out.
    async fn instance(&mut self, addr: &Address) {
        let desired = match self.eval.desired(addr) {
            None => return,
            Some(Ok(d)) => d,
            Some(Err(d)) => {
                // In a run of one partition, a component of another one, or one that needs what
                // another has not recorded, is not evaluated for itself.
                let deps = self.graph.dependencies(addr);
                let cluster = deps.iter().find(|d| d.kind == Kind::Cluster);
                if self.in_partition(addr, cluster, deps.iter()) {
                    self.diags.extend(d);
                }
                return;
            }
        };
        if !self.in_partition(addr, desired.cluster.as_ref(), desired.refs.values().chain(desired.cluster.iter())) {
            return;
        }
        if !self.same_cluster_references(addr, &desired) {
            return;
        }
        let Some((provider_name, provider)) = self.provider(addr, &desired) else { return };
        // A cluster's provider checks the target first (reachable, add-ons, storage).
        if addr.kind == Kind::Cluster && !self.preflight(addr, &desired, provider.as_ref()).await {
            return;
        }
        let (refs, cluster) = self.references(&desired);
        if addr.kind == Kind::Data {
            self.data_source(&desired, provider_name, provider.as_ref(), cluster).await;
            return;
        }
        let import_id = self.imports.get(addr).cloned();
        let prior = match &import_id {
            Some(id) => match self.import(addr, id, &desired, provider.as_ref(), &refs, cluster.as_ref()).await {
                Some(found) => Some(found),
                None => return,
            },
            None => self.refreshed.live_value(addr),
        };
        let recorded = self.state.resource(addr).map(state_attrs);
        let inputs = desired.inputs_keeping_ignored(prior.as_ref());
        let subject = Subject { addr: addr.clone(), desired: &desired, provider_name, provider, prior, recorded, inputs, refs, cluster };
        let Some((decision, after, replace_paths)) = self.decide(&subject, import_id.is_some()).await else { return };
        if decision.reason == Some(super::ActionReason::ImportNeedsReplace) {
            self.cannot_take_over(addr, &replace_paths);
            return;
        }
        let after = keep_generated_secrets(&subject, &decision, after);
        let after_sensitive = desired.planned_sensitive();
        self.eval.record(addr, &after, &after_sensitive);
        let mut change = self.change(subject, decision, after, after_sensitive, replace_paths);
        change.import_id = import_id;
        self.changes.push(change);
    }

    /// Reads a data source now, for what refers to it: its value is recorded in the evaluator,
    /// and the plan gets a `Read` change that tells apply to read it again (so the value is
    /// never kept in the plan). On a cluster this plan creates, its value is known only then.
    async fn data_source(&mut self, desired: &Desired, provider_name: String, provider: &dyn Provider, cluster: Option<Value>) {
        let addr = &desired.addr;
        let span = self.eval.decl(addr).map(|d| d.span.clone());
        // A Secret is on a Kubernetes cluster, a container's environment on a Docker host.
        if let Some(c) = &desired.cluster
            && let Some(t) = self.type_of(c)
            && kdeploy_provider::provider_for(Kind::Agent, "kerberos", Some(&t)) != provider_name
        {
            self.diags.push(
                Diagnostic::error("Data source on another kind of cluster", format!("{addr} is read through the {provider_name} provider, but {c} is a {t:?} cluster."))
                    .at(span)
                    .hint("read Secrets (kubernetes_secret) on Kubernetes clusters and container environments (docker_container_env) on Docker clusters; set cluster = ... to the right one"),
            );
            return;
        }
        // As for components: a cluster another provider creates in this plan (EKS, AKS, GKE)
        // has nothing to read yet. A Kubernetes or Docker cluster kdeploy records the first
        // time exists already.
        let deferred = desired.cluster.as_ref().is_some_and(|c| {
            self.changes.iter().any(|cc| cc.address == *c && (cc.action == super::Action::Create || cc.action.is_replace()) && cc.provider != provider_name)
        });
        let unread = || {
            let mut m = desired.inputs.as_map().cloned().unwrap_or_default();
            for a in desired.schema.computed() {
                m.insert(a.name.to_string(), Value::Unknown(format!("{addr}.{}", a.name)));
            }
            Value::Map(m)
        };
        let value = if deferred || desired.inputs.contains_unknown() {
            unread()
        } else {
            let source = ComponentRef { address: addr.clone(), kind: addr.kind, type_name: desired.type_name.clone() };
            match provider.read_data(DataRequest { source, args: &desired.inputs, cluster: cluster.as_ref() }).await {
                Ok(DataResult::Found(v)) => v,
                Ok(DataResult::Missing(what)) => {
                    let on = desired.cluster.as_ref().map(|c| format!(" on {c}")).unwrap_or_default();
                    self.diags.push(
                        Diagnostic::error("Data source not found", format!("{addr} reads {what}, which does not exist{on}."))
                            .at(span)
                            .hint("check the block's arguments (namespace, name, container), or create the object first (kubectl create secret generic NAME -n NAMESPACE --from-literal=KEY=VALUE; docker run --name NAME ...)"),
                    );
                    return;
                }
                Err(e) => {
                    self.diags.push(Diagnostic::error("Cannot read data source", prefixed(addr, &e.message)).at(span));
                    return;
                }
            }
        };
        let sensitive = desired.planned_sensitive();
        self.eval.record(addr, &value, &sensitive);
        self.changes.push(Change {
            address: addr.clone(),
            kind: addr.kind,
            type_name: desired.type_name.clone(),
            provider: provider_name,
            action: super::Action::Read,
            reason: if deferred {
                Some(super::ActionReason::ReadBecauseDependencyPending)
            } else if desired.inputs.contains_unknown() {
                Some(super::ActionReason::ReadBecauseConfigUnknown)
            } else {
                None
            },
            before: None,
            after: Some(unread()),
            before_sensitive: Vec::new(),
            after_sensitive: sensitive,
            replace_paths: Vec::new(),
            depends_on: self.graph.dependencies(addr),
            cluster: desired.cluster.clone(),
            refs: desired.refs.clone(),
            delete_data: false,
            deferred,
            import_id: None,
        });
    }

    /// Whether to plan `addr` in this run: always without -partition. With it, a component of
    /// another partition gets its recorded value instead (for what refers to it), and one of
    /// this partition that needs another partition's component with no recorded state is
    /// reported (that partition must be applied first).
    fn in_partition<'r>(&mut self, addr: &Address, cluster: Option<&Address>, needs: impl Iterator<Item = &'r Address>) -> bool {
        let Some(f) = self.partition.as_mut() else { return true };
        let part = crate::partition::component_partition(addr, cluster);
        if part != f.partition {
            match f.whole.resource(addr) {
                Some(r) => self.eval.record(addr, &state_attrs(r), &r.sensitive_paths),
                None => {
                    f.missing.insert(addr.clone(), part);
                }
            }
            return false;
        }
        let mut ok = true;
        for target in needs {
            let Some(other) = f.missing.get(target) else { continue };
            let span = self.eval.decl(addr).map(|d| d.span.clone());
            self.diags.push(
                Diagnostic::error(
                    "Value of another partition not recorded",
                    format!("{addr} (partition {:?}) needs {target}, which partition {other:?} has not recorded yet: a run of one partition reads the others' values from their state.", f.partition),
                )
                .at(span)
                .hint(format!("apply partition {other:?} first (kdeploy apply -partition={other}), or apply the whole stack without -partition")),
            );
            ok = false;
        }
        ok
    }

    /// A component reaches the components it refers to inside its own cluster only: their
    /// endpoints are cluster-internal names. The one exception is an agent uploading to (or a
    /// Vault forwarding to) a Vault exposed outside its cluster, through its external URL. False,
    /// with a diagnostic per reference, when a reference crosses clusters otherwise.
    fn same_cluster_references(&mut self, addr: &Address, desired: &Desired) -> bool {
        let Some(here) = &desired.cluster else { return true };
        let mut ok = true;
        for (path, target) in &desired.refs {
            let Some((there, exposed)) = self
                .eval
                .with_value(target, |value| {
                    let field = |name: &str| value.as_map().and_then(|m| m.get(name));
                    let there = field("cluster").and_then(Value::as_str).filter(|t| *t != here.to_string()).map(str::to_string);
                    there.map(|t| (t, field("external_url").is_some_and(|u| !u.is_null())))
                })
                .flatten()
            else {
                continue;
            };
            // Agents upload to it, other Vaults forward to it (a site Vault behind a poor uplink).
            if matches!(addr.kind, Kind::Agent | Kind::Vault) && target.kind == Kind::Vault && exposed {
                continue;
            }
            let decl = self.eval.decl(addr);
            let span = decl.and_then(|d| d.attrs.get(path.split('.').next().unwrap_or(path)).map(|(e, _)| e.span.clone())).or(decl.map(|d| d.span.clone()));
            let how = if target.kind == Kind::Vault {
                format!(
                    "expose {target} outside its cluster: service_type = \"NodePort\" (its node_port on the cluster's address) or \"LoadBalancer\" (the address the cluster's load balancer gives it) on Kubernetes; a Docker cluster publishes node_port on its host. Or run both on one cluster"
                )
            } else {
                format!("run both on one cluster, or declare {target} as type \"external\" with an endpoint reachable from {here}")
            };
            self.diags.push(
                Diagnostic::error(
                    "Reference across clusters",
                    format!("{addr} runs on {here} and refers to {target}, which runs on {there}: {target} is reachable only inside {there}."),
                )
                .at(span)
                .hint(how),
            );
            ok = false;
        }
        ok
    }

    /// The provider that manages the component, or a diagnostic.
    fn provider(&mut self, addr: &Address, desired: &Desired) -> Option<(String, Arc<dyn Provider>)> {
        let cluster_type = desired.cluster.as_ref().and_then(|c| self.type_of(c));
        let name = kdeploy_provider::provider_for(addr.kind, &desired.type_name, cluster_type.as_deref()).to_string();
        match self.providers.get(&name) {
            Ok(p) => Some((name, p)),
            Err(e) => {
                let span = self.expanded.decl(self.stack, addr).map(|d| d.span.clone());
                self.diags.push(Diagnostic::error("Provider not available", format!("{addr} needs the {name} provider, but {e}.")).at(span));
                None
            }
        }
    }

    /// The type of a component: declared in the stack, else recorded in state.
    fn type_of(&self, addr: &Address) -> Option<String> {
        self.types.get(addr).cloned().or_else(|| self.state.resource(addr).map(|r| r.type_name.clone()))
    }

    /// Runs the cluster provider's checks; false when the cluster cannot be planned.
    async fn preflight(&mut self, addr: &Address, desired: &Desired, provider: &dyn Provider) -> bool {
        let component = ComponentRef { address: addr.clone(), kind: addr.kind, type_name: desired.type_name.clone() };
        let pre = provider.preflight(&[(component, desired.inputs.clone())]).await;
        let span = self.expanded.decl(self.stack, addr).map(|d| d.span.clone());
        for e in &pre.errors {
            self.diags.push(Diagnostic::error("Cluster not ready", prefixed(addr, e)).at(span.clone()));
        }
        self.notes.extend(pre.warnings.iter().map(|w| Note::sentence(format!("{addr}: {w}"))));
        pre.errors.is_empty()
    }

    /// The planned values of the components it refers to, and of its cluster.
    fn references(&self, desired: &Desired) -> (BTreeMap<String, Reference>, Option<Value>) {
        let refs = desired.refs.iter().filter_map(|(k, a)| Some((k.clone(), reference(a, &self.type_of(a)?, self.eval.shared(a)?)))).collect();
        (refs, desired.cluster.as_ref().and_then(|c| self.eval.value(c)))
    }

    /// Asks the provider, decides, and plans the object again from nothing when it is created
    /// or replaced. `None` when the provider's plan failed (reported).
    async fn decide(&mut self, s: &Subject<'_>, importing: bool) -> Option<(Decision, Value, Vec<AttrPath>)> {
        let interrupted = self.state.pending.iter().any(|p| p.address == s.addr);
        let interrupted_delete = self.state.pending.iter().any(|p| p.address == s.addr && p.operation == PendingKind::Delete);
        let mut facts = Facts {
            live: s.prior.is_some(),
            recorded: s.recorded.is_some(),
            interrupted,
            interrupted_delete,
            cluster_replaced: s.desired.cluster.as_ref().is_some_and(|c| self.changes.iter().any(|cc| cc.address == *c && cc.action.is_replace())),
            replace_requested: self.replace_list.iter().any(|t| s.addr.matches(t)),
            create_before_destroy: s.desired.lifecycle.create_before_destroy,
            importing,
            ..Facts::default()
        };
        let with_prior = match &s.prior {
            Some(prior) => {
                let resp = self.provider_plan(s, Some(prior)).await?;
                facts.requires_replace = !resp.requires_replace.is_empty();
                facts.changed = !changed_paths(prior, &resp.planned).is_empty();
                Some(resp)
            }
            None => None,
        };
        let decision = decide(&facts);
        match with_prior {
            // An import that needs a replacement is reported with the paths that need it.
            Some(resp) if decision.reason == Some(super::ActionReason::ImportNeedsReplace) => Some((decision, resp.planned, resp.requires_replace)),
            Some(resp) if !decision.fresh() => Some((decision, resp.planned, Vec::new())),
            resp => {
                let fresh = self.provider_plan(s, None).await?;
                Some((decision, fresh.planned, resp.map(|r| r.requires_replace).unwrap_or_default()))
            }
        }
    }

    /// The existing object an import block names, as the component's live attributes; None
    /// (reported) when it cannot be found or read.
    async fn import(
        &mut self,
        addr: &Address,
        id: &str,
        desired: &Desired,
        provider: &dyn Provider,
        refs: &BTreeMap<String, Reference>,
        cluster: Option<&Value>,
    ) -> Option<Value> {
        let request = ImportRequest {
            component: ComponentRef { address: addr.clone(), kind: addr.kind, type_name: desired.type_name.clone() },
            id,
            desired: &desired.inputs,
            cluster,
            refs,
            force_conflicts: self.options.force_conflicts,
        };
        let span = self.import_span(addr);
        match provider.import(request).await {
            Ok(found) => {
                self.notes.extend(found.warnings.into_iter().map(Note::sentence));
                if found.attributes.is_none() {
                    self.diags.push(
                        Diagnostic::error("Cannot import non-existent object", format!("{addr}: nothing with the import id {id:?} exists on its target."))
                            .at(span)
                            .hint("check the id (Kubernetes: NAMESPACE/NAME of its Deployment or StatefulSet; Docker: the container name), or remove the import block to create the component"),
                    );
                }
                found.attributes
            }
            Err(e) => {
                self.diags.push(Diagnostic::error("Cannot import", prefixed(addr, &e.message)).at(span));
                None
            }
        }
    }

    fn import_span(&self, addr: &Address) -> Option<crate::diag::Span> {
        self.stack.imports.iter().find(|i| i.to.0 == *addr).map(|i| i.span.clone())
    }

    /// An import whose object differs in what cannot change in place: nothing is replaced
    /// unless `-replace` says so.
    fn cannot_take_over(&mut self, addr: &Address, paths: &[AttrPath]) {
        let what: Vec<String> = paths.iter().map(ToString::to_string).collect();
        self.diags.push(
            Diagnostic::error(
                "Import needs a replacement",
                format!("{addr} cannot be taken over in place: {} cannot change on the existing object.", what.join(", ")),
            )
            .at(self.import_span(addr))
            .hint(format!("plan with -replace={addr} to replace it (volumes and claims with data are kept), or change the stack to match it")),
        );
    }

    /// The provider's plan of the object from `prior` (None: from nothing).
    async fn provider_plan(&mut self, s: &Subject<'_>, prior: Option<&Value>) -> Option<kdeploy_provider::PlanResponse> {
        let carried = if prior.is_none() { replacing_adopted(s) } else { None };
        let request = PlanRequest {
            component: ComponentRef { address: s.addr.clone(), kind: s.addr.kind, type_name: s.desired.type_name.clone() },
            schema: s.desired.schema,
            prior,
            recorded: s.recorded.as_ref(),
            desired: carried.as_ref().unwrap_or(&s.inputs),
            cluster: s.cluster.as_ref(),
            refs: &s.refs,
            force_conflicts: self.options.force_conflicts,
        };
        match s.provider.plan(request).await {
            Ok(r) => {
                self.provider_warnings(&s.addr, &r.warnings);
                Some(r)
            }
            Err(e) => {
                self.diags.push(Diagnostic::error("Provider plan failed", prefixed(&s.addr, &e.message)));
                None
            }
        }
    }

    /// A provider's plan warnings, each once (a component may be planned twice), at the
    /// component's block; the summary is the address and the warning's first clause.
    fn provider_warnings(&mut self, addr: &Address, warnings: &[String]) {
        let span = self.expanded.decl(self.stack, addr).map(|d| d.span.clone());
        for w in warnings {
            let (first, rest) = w.split_once(": ").unwrap_or((w, ""));
            let summary = prefixed(addr, first);
            if self.diags.0.iter().any(|d| d.summary == summary && d.detail == rest) {
                continue;
            }
            self.diags.push(Diagnostic::warning(summary, rest).at(span.clone()));
        }
    }

    fn change(&self, s: Subject<'_>, decision: Decision, after: Value, after_sensitive: Vec<AttrPath>, replace_paths: Vec<AttrPath>) -> Change {
        // In-cluster components of a cluster that another provider creates in this plan (EKS,
        // AKS, GKE) wait for it: planned from the stack alone, counted apart.
        let deferred = decision.action != super::Action::NoOp
            && s.desired.cluster.as_ref().is_some_and(|c| {
                self.changes
                    .iter()
                    .any(|cc| cc.address == *c && (cc.action == super::Action::Create || cc.action.is_replace()) && cc.provider != s.provider_name)
            });
        let recorded = self.state.resource(&s.addr);
        let before_sensitive = recorded.map(|r| r.sensitive_paths.clone()).unwrap_or_else(|| imported_sensitive(&s, &after_sensitive));
        Change {
            address: s.addr.clone(),
            kind: s.addr.kind,
            type_name: s.desired.type_name.clone(),
            provider: s.provider_name,
            action: decision.action,
            reason: decision.reason,
            before: s.prior,
            after: Some(after),
            before_sensitive,
            after_sensitive,
            replace_paths,
            depends_on: self.graph.dependencies(&s.addr),
            cluster: s.desired.cluster.clone(),
            refs: s.desired.refs.clone(),
            delete_data: false,
            deferred,
            import_id: None,
        }
    }
}

/// What is sensitive in the attributes an import read (no state records them yet): what the
/// stack's are, and every attribute the schema marks sensitive (a UI password the provider read
/// from the running container), so the plan never shows one in the clear.
fn imported_sensitive(s: &Subject<'_>, after_sensitive: &[AttrPath]) -> Vec<AttrPath> {
    if s.prior.is_none() {
        return Vec::new();
    }
    let mut paths = after_sensitive.to_vec();
    paths.extend(s.desired.schema.attributes.iter().filter(|a| a.sensitive).map(|a| AttrPath::attr(a.name)));
    paths.sort();
    paths.dedup();
    paths
}

/// Generated secrets outlive a replacement or an out-of-band deletion: data kept in volumes was
/// initialised with them, and dependants already use them.
fn keep_generated_secrets(s: &Subject<'_>, decision: &Decision, mut after: Value) -> Value {
    if !decision.fresh() {
        return after;
    }
    if let (Some(Value::Map(old)), Value::Map(new)) = (s.prior.as_ref().or(s.recorded.as_ref()), &mut after) {
        for a in s.desired.schema.computed().filter(|a| a.sensitive) {
            if new.get(a.name).is_some_and(Value::is_unknown)
                && let Some(v) = old.get(a.name).filter(|v| !v.is_null() && !v.contains_unknown())
            {
                new.insert(a.name.to_string(), v.clone());
            }
        }
    }
    after
}

/// `ADDR: message`, without repeating the address when the provider already named it.
fn prefixed(addr: &Address, message: &str) -> String {
    let a = addr.to_string();
    if message.starts_with(&format!("{a}: ")) { message.to_string() } else { format!("{a}: {message}") }
}

fn prevent_destroy_diag(addr: &Address, span: Option<crate::diag::Span>) -> Diagnostic {
    Diagnostic::error("Instance cannot be destroyed", format!("{addr} has lifecycle.prevent_destroy set, but the plan would destroy it."))
        .at(span)
        .hint("remove prevent_destroy from its lifecycle block if destroying it is really intended, or change the plan so it is kept")
}

/// The inputs of a Docker container that replaces one an import adopted: with what the adoption
/// recorded (the adopted container's volumes and bind mounts), so that the new container
/// re-attaches its data. A Docker container cannot be taken over in place (its labels cannot
/// change), so this replacement is how it is adopted.
fn replacing_adopted(s: &Subject<'_>) -> Option<Value> {
    if s.provider_name != "docker" {
        return None;
    }
    let adopted = s.prior.as_ref()?.as_map()?.get(kdeploy_provider::ADOPTED).filter(|v| !v.is_null())?;
    let mut inputs = s.inputs.as_map()?.clone();
    inputs.insert(kdeploy_provider::ADOPTED.to_string(), adopted.clone());
    Some(Value::Map(inputs))
}
