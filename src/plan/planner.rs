//! The planner: desired (the evaluated stack) + recorded (state) + live (provider reads) →
//! [`Plan`]. It calls providers' `read` and `plan`, never their write methods.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kdeploy_provider::{AttrPath, Check, ComponentRef, Kind, PlanRequest, Provider, ReadRequest, ReadResult, Reference, Value};
use kdeploy_state::{PendingKind, ResourceState, State};

use super::{Action, ActionReason, Change, Drift, OutputChange, PLAN_FORMAT_VERSION, Plan, PlanOptions};
use crate::addr::{Address, InstanceKey, ModulePath, Target};
use crate::config::Stack;
use crate::config::eval::{Ctx, Marked, values_equal};
use crate::config::expand::{self, Desired, Expanded, ValueTable, object_value, reference};
use crate::diag::{Diagnostic, Diagnostics, SourceMap};
use crate::graph::DepGraph;
use crate::providers::Providers;

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

/// What one refresh found.
#[derive(Debug, Clone, Default)]
pub struct Refreshed {
    /// Live attributes by address (None: deleted out of band).
    pub live: BTreeMap<String, Option<(Value, Option<String>)>>,
    pub drift: Vec<Drift>,
    pub notes: Vec<String>,
    /// Health checks of the providers (Vault answering /api/health, its accounts /api/ping).
    pub health: Vec<Check>,
}

pub fn state_attrs(r: &ResourceState) -> Value {
    Value::from_json(&r.attributes)
}

fn parse_addr(s: &str) -> Option<Address> {
    s.parse().ok()
}

/// Read requests for the recorded resources `keep` selects, by provider; invalid addresses
/// are reported.
fn read_requests(state: &State, keep: impl Fn(&ResourceState) -> bool, diags: &mut Diagnostics) -> BTreeMap<String, Vec<ReadRequest>> {
    let mut by_provider: BTreeMap<String, Vec<ReadRequest>> = BTreeMap::new();
    let cluster_of = |r: &ResourceState| -> Option<Value> {
        let c = r.attributes.get("cluster")?.as_str()?;
        state.resource(c).map(state_attrs)
    };
    for (i, r) in state.resources.iter().enumerate().filter(|(_, r)| keep(r)) {
        let Some(addr) = parse_addr(&r.address) else {
            diags.push(
                Diagnostic::error("Invalid state", format!("The state records an invalid address {:?} (field `resources[{i}].address`).", r.address))
                    .hint("fix it with `kdeploy state mv` or `kdeploy state rm`"),
            );
            continue;
        };
        by_provider.entry(r.provider.clone()).or_default().push(ReadRequest {
            component: ComponentRef { address: r.address.clone(), kind: addr.kind, type_name: r.type_name.clone() },
            recorded: state_attrs(r),
            cluster: cluster_of(r),
        });
    }
    by_provider
}

/// The health checks of the recorded vaults (their accounts answer): run after apply.
pub async fn verify(state: &State, providers: &Providers) -> Vec<Check> {
    let mut ignored = Diagnostics::new();
    let mut out = Vec::new();
    for (name, requests) in read_requests(state, |r| r.kind == Kind::Vault.keyword(), &mut ignored) {
        if let Ok(provider) = providers.get(&name) {
            out.extend(provider.health(&requests).await);
        }
    }
    out
}

/// An object an interrupted operation may have left without recording it, and how to read it:
/// what the operation knew (its planned attributes) and the connection of its cluster.
#[derive(Debug, Clone)]
pub struct PendingRead {
    pub addr: Address,
    pub type_name: String,
    pub provider: String,
    pub recorded: Value,
    pub cluster: Option<Value>,
    /// The cluster's address, for a delete of the object.
    pub cluster_addr: Option<Address>,
    pub dependencies: Vec<Address>,
}

/// Reads every recorded resource, one batched call per provider, and compares with state.
/// `extra` are objects interrupted operations may have left unrecorded: the live system decides.
pub async fn refresh(state: &State, providers: &Providers, extra: &[PendingRead]) -> Result<Refreshed, Diagnostics> {
    let mut out = Refreshed::default();
    let mut diags = Diagnostics::new();
    let mut by_provider = read_requests(state, |_| true, &mut diags);
    for p in extra {
        by_provider.entry(p.provider.clone()).or_default().push(ReadRequest {
            component: ComponentRef { address: p.addr.to_string(), kind: p.addr.kind, type_name: p.type_name.clone() },
            recorded: p.recorded.clone(),
            cluster: p.cluster.clone(),
        });
    }
    for (name, requests) in by_provider {
        let provider = match providers.get(&name) {
            Ok(p) => p,
            Err(e) => {
                let addresses: Vec<&str> = requests.iter().map(|r| r.component.address.as_str()).collect();
                diags.push(
                    Diagnostic::error(
                        "Provider not available",
                        format!("The state records {} as managed by the provider {name:?}, but {e}.", addresses.join(", ")),
                    )
                    .hint("build kdeploy with that provider, or if the state was edited by hand, restore it (`kdeploy state push` of the backup)"),
                );
                continue;
            }
        };
        let addresses: Vec<String> = requests.iter().map(|r| r.component.address.clone()).collect();
        let health_requests = requests.clone();
        match provider.read(requests).await {
            Ok(results) if results.len() == addresses.len() => {
                out.health.extend(provider.health(&health_requests).await);
                for (a, r) in addresses.into_iter().zip(results) {
                    out.live.insert(
                        a,
                        match r {
                            ReadResult::Found { attributes, fingerprint } => Some((attributes, fingerprint)),
                            ReadResult::Missing => None,
                        },
                    );
                }
            }
            Ok(results) => diags
                .push(Diagnostic::error("Provider error", format!("The {name} provider answered {} reads for {} requests.", results.len(), addresses.len()))),
            Err(e) => diags.push(
                Diagnostic::error("Cannot read live state", format!("The {name} provider could not read the deployed components: {e}"))
                    .hint("check that the target is reachable and the credentials are valid; --refresh=false plans from the recorded state alone"),
            ),
        }
    }
    if diags.has_errors() {
        return Err(diags);
    }
    for r in &state.resources {
        let Some(addr) = parse_addr(&r.address) else { continue };
        // kdeploy's own interrupted operation (a replacement that deleted the old object) is not
        // a change made outside kdeploy.
        if state.pending.iter().any(|p| p.address == r.address) {
            continue;
        }
        let recorded = state_attrs(r);
        match out.live.get(&r.address) {
            Some(Some((live, _))) => {
                let paths = changed_paths(&recorded, live);
                if !paths.is_empty() {
                    out.drift.push(Drift {
                        address: addr,
                        kind: Kind::from_keyword(&r.kind).unwrap_or(Kind::Cluster),
                        type_name: r.type_name.clone(),
                        provider: r.provider.clone(),
                        before: recorded,
                        after: Some(live.clone()),
                        sensitive: r.sensitive_paths.clone(),
                        paths,
                    });
                }
            }
            Some(None) => out.drift.push(Drift {
                address: addr,
                kind: Kind::from_keyword(&r.kind).unwrap_or(Kind::Cluster),
                type_name: r.type_name.clone(),
                provider: r.provider.clone(),
                before: recorded,
                after: None,
                sensitive: r.sensitive_paths.clone(),
                paths: Vec::new(),
            }),
            None => {}
        }
    }
    Ok(out)
}

/// The attribute paths whose values differ (absent and null are the same), descending into
/// maps so that a report names `env.AGENT_NAME` or `objects["apps/v1/..."]`, not a whole map.
pub fn changed_paths(a: &Value, b: &Value) -> Vec<AttrPath> {
    fn walk(a: &Value, b: &Value, at: &AttrPath, out: &mut Vec<AttrPath>) {
        let empty = BTreeMap::new();
        let am = a.as_map().unwrap_or(&empty);
        let bm = b.as_map().unwrap_or(&empty);
        let keys: BTreeSet<&String> = am.keys().chain(bm.keys()).collect();
        for k in keys {
            let (x, y) = (am.get(k).unwrap_or(&Value::Null), bm.get(k).unwrap_or(&Value::Null));
            if values_equal(x, y) {
                continue;
            }
            let here = at.child_key(k);
            match (x, y) {
                (Value::Map(_), Value::Map(_)) => walk(x, y, &here, out),
                _ => out.push(here),
            }
        }
    }
    let mut out = Vec::new();
    walk(a, b, &AttrPath::root(), &mut out);
    out
}

fn targets(options: &PlanOptions) -> Result<Vec<Target>, Diagnostics> {
    let mut out = Vec::new();
    let mut diags = Diagnostics::new();
    for t in options.targets.iter().chain(options.replace.iter()) {
        match t.parse::<Target>() {
            Ok(t) => out.push(t),
            Err(e) => diags
                .push(Diagnostic::error("Invalid -target address", e.to_string()).hint("addresses look like vault.main, agent.cam[\"front\"] or module.site")),
        }
    }
    if diags.has_errors() { Err(diags) } else { Ok(out) }
}

/// Computes the plan.
pub async fn plan(input: PlanInput<'_>) -> Result<(Plan, Refreshed), Diagnostics> {
    let PlanInput { stack, sources, root_vars, expanded, graph, state, providers, options, kdeploy_version } = input;
    let mut diags = Diagnostics::new();
    targets(options)?;
    let target_list: Vec<Target> = options.targets.iter().filter_map(|t| t.parse().ok()).collect();
    let replace_list: Vec<Target> = options.replace.iter().filter_map(|t| t.parse().ok()).collect();

    let clusters = expanded.clusters();
    let resolver = ValueTable::new(stack, expanded, BTreeMap::new());
    let ctx = Ctx::new(stack, sources, root_vars, &expanded.modules, &resolver);

    // Types of every instance (for provider routing and pending-create reads).
    let mut types: BTreeMap<Address, String> = BTreeMap::new();
    for (addr, inst) in &expanded.instances {
        let decl = &stack.modules[inst.module].components[inst.decl];
        let mut scope = ctx.scope(&addr.module);
        scope.each = inst.each.clone();
        scope.count = inst.count;
        if let Ok((t, _)) = expand::component_type(&scope, decl) {
            types.insert(addr.clone(), t);
        }
    }
    let cluster_type = |c: &Option<Address>, types: &BTreeMap<Address, String>| -> Option<String> {
        c.as_ref().and_then(|c| types.get(c).cloned().or_else(|| state.resource(&c.to_string()).map(|r| r.type_name.clone())))
    };

    // Refresh.
    let mut notes = Vec::new();
    let pending_reads = pending_reads(state, &PendingCtx { stack, expanded, ctx: &ctx, types: &types, clusters: &clusters });
    for p in &state.pending {
        notes.push(format!(
            "A previous run was interrupted while it was {} {} (started {}). kdeploy read the live object to decide what is left to do.",
            match p.operation {
                PendingKind::Create => "creating",
                PendingKind::Update => "updating",
                PendingKind::Delete => "deleting",
            },
            p.address,
            p.started_at
        ));
    }
    let refreshed = if options.refresh {
        refresh(state, providers, &pending_reads).await?
    } else {
        let mut r = Refreshed::default();
        for res in &state.resources {
            r.live.insert(res.address.clone(), Some((state_attrs(res), res.fingerprint.clone())));
        }
        r
    };
    let live_of = |addr: &Address| -> Option<Value> {
        match refreshed.live.get(&addr.to_string()) {
            Some(Some((v, _))) => Some(v.clone()),
            _ => None,
        }
    };

    let mut changes: Vec<Change> = Vec::new();
    let mut desired_all: BTreeMap<Address, Desired> = BTreeMap::new();
    if !options.destroy {
        for addr in graph.topo_order() {
            let Some(inst) = expanded.instances.get(&addr) else { continue };
            let desired = match expand::desired(&ctx, stack, inst, &clusters) {
                Ok(d) => d,
                Err(d) => {
                    diags.extend(d);
                    continue;
                }
            };
            let provider_name = kdeploy_provider::provider_for(addr.kind, &desired.type_name, cluster_type(&desired.cluster, &types).as_deref()).to_string();
            let provider: Arc<dyn Provider> = match providers.get(&provider_name) {
                Ok(p) => p,
                Err(e) => {
                    let decl = expanded.decl(stack, &addr);
                    diags.push(
                        Diagnostic::error("Provider not available", format!("{addr} needs the {provider_name} provider, but {e}."))
                            .at(decl.map(|d| d.span.clone())),
                    );
                    continue;
                }
            };
            // A cluster's provider checks the target first (reachable, add-ons, storage).
            if addr.kind == Kind::Cluster {
                let pre = provider
                    .preflight(&[(ComponentRef { address: addr.to_string(), kind: addr.kind, type_name: desired.type_name.clone() }, desired.inputs.clone())])
                    .await;
                let span = expanded.decl(stack, &addr).map(|d| d.span.clone());
                for e in &pre.errors {
                    diags.push(Diagnostic::error("Cluster not ready", prefixed(&addr, e)).at(span.clone()));
                }
                notes.extend(pre.warnings.iter().map(|w| format!("{addr}: {w}")));
                if !pre.errors.is_empty() {
                    continue;
                }
            }
            let (refs, cluster_value) = {
                let values = resolver.values.borrow();
                let value_of = |a: &Address| values.get(a).map(|m| m.value.clone());
                let refs: BTreeMap<String, Reference> = desired
                    .refs
                    .iter()
                    .filter_map(|(k, a)| {
                        let type_name = types.get(a).cloned().or_else(|| state.resource(&a.to_string()).map(|r| r.type_name.clone()))?;
                        Some((k.clone(), reference(a, &type_name, &value_of(a)?)))
                    })
                    .collect();
                (refs, desired.cluster.as_ref().and_then(value_of))
            };
            let recorded = state.resource(&addr.to_string());
            let prior = live_of(&addr);
            let mut inputs = desired.inputs.clone();
            // ignore_changes: keep the live value of ignored attributes.
            if let (Some(prior), Value::Map(m)) = (&prior, &mut inputs) {
                let ignore_all = desired.lifecycle.ignore_changes.iter().any(|(n, _)| n == "all");
                for a in desired.schema.inputs() {
                    if (ignore_all || desired.lifecycle.ignore_changes.iter().any(|(n, _)| n == a.name))
                        && let Some(v) = prior.as_map().and_then(|p| p.get(a.name))
                    {
                        m.insert(a.name.to_string(), v.clone());
                    }
                }
            }
            let component = ComponentRef { address: addr.to_string(), kind: addr.kind, type_name: desired.type_name.clone() };
            let recorded_attrs = recorded.map(state_attrs);
            let force_conflicts = options.force_conflicts;
            let mk = |component: &ComponentRef, schema, prior, desired, cluster, refs| PlanRequest {
                component: component.clone(),
                schema,
                prior,
                recorded: recorded_attrs.as_ref(),
                desired,
                cluster,
                refs,
                force_conflicts,
            };
            let mut after_sensitive = desired.sensitive.clone();
            for a in desired.schema.attributes.iter().filter(|a| a.sensitive && a.computed) {
                after_sensitive.push(AttrPath::attr(a.name));
            }
            after_sensitive.sort();
            after_sensitive.dedup();
            // Everything inside a cluster that is being replaced must be created again in the
            // new one.
            let cluster_replaced = desired.cluster.as_ref().is_some_and(|c| changes.iter().any(|cc| cc.address == *c && cc.action.is_replace()));
            let replace_requested = cluster_replaced || replace_list.iter().any(|t| addr.matches(t));
            let (action, reason, after, replace_paths) = match &prior {
                None => {
                    let interrupted = state.pending.iter().any(|p| p.address == addr.to_string());
                    let reason = match recorded {
                        Some(_) if interrupted => Some(ActionReason::RecoverPendingOperation),
                        Some(_) => Some(ActionReason::RecreateBecauseDeletedOutOfBand),
                        None => None,
                    };
                    match provider.plan(mk(&component, desired.schema, None, &inputs, cluster_value.as_ref(), &refs)).await {
                        Ok(r) => (Action::Create, reason, r.planned, Vec::new()),
                        Err(e) => {
                            diags.push(Diagnostic::error("Provider plan failed", prefixed(&addr, &e.message)));
                            continue;
                        }
                    }
                }
                Some(p) => {
                    let resp = match provider.plan(mk(&component, desired.schema, Some(p), &inputs, cluster_value.as_ref(), &refs)).await {
                        Ok(r) => r,
                        Err(e) => {
                            diags.push(Diagnostic::error("Provider plan failed", prefixed(&addr, &e.message)));
                            continue;
                        }
                    };
                    let replace_action = if desired.lifecycle.create_before_destroy { Action::CreateThenDelete } else { Action::DeleteThenCreate };
                    let interrupted_delete = state.pending.iter().any(|p| p.address == addr.to_string() && p.operation == PendingKind::Delete);
                    if replace_requested || interrupted_delete || !resp.requires_replace.is_empty() {
                        let fresh = match provider.plan(mk(&component, desired.schema, None, &inputs, cluster_value.as_ref(), &refs)).await {
                            Ok(r) => r.planned,
                            Err(e) => {
                                diags.push(Diagnostic::error("Provider plan failed", prefixed(&addr, &e.message)));
                                continue;
                            }
                        };
                        let reason = if cluster_replaced {
                            ActionReason::ReplaceBecauseClusterReplaced
                        } else if interrupted_delete && resp.requires_replace.is_empty() && !replace_requested {
                            ActionReason::ReplaceInterruptedDelete
                        } else if replace_requested {
                            ActionReason::ReplaceByRequest
                        } else {
                            ActionReason::ReplaceBecauseCannotUpdate
                        };
                        (replace_action, Some(reason), fresh, resp.requires_replace)
                    } else if recorded.is_none() {
                        // Found live but never recorded: an interrupted create. Record it (the
                        // provider's apply is idempotent) instead of creating a duplicate.
                        (Action::Update, Some(ActionReason::RecoverPendingOperation), resp.planned, Vec::new())
                    } else if changed_paths(p, &resp.planned).is_empty() {
                        (Action::NoOp, None, resp.planned, Vec::new())
                    } else {
                        (Action::Update, None, resp.planned, Vec::new())
                    }
                }
            };
            // Generated secrets outlive a replacement or an out-of-band deletion: data kept in
            // volumes was initialised with them, and dependants already use them.
            let mut after = after;
            if matches!(action, Action::Create) || action.is_replace() {
                let keep = prior.as_ref().or(recorded_attrs.as_ref());
                if let (Some(Value::Map(old)), Value::Map(new)) = (keep, &mut after) {
                    for a in desired.schema.computed().filter(|a| a.sensitive) {
                        if new.get(a.name).is_some_and(Value::is_unknown)
                            && let Some(v) = old.get(a.name).filter(|v| !v.is_null() && !v.contains_unknown())
                        {
                            new.insert(a.name.to_string(), v.clone());
                        }
                    }
                }
            }
            if (action.is_replace()) && desired.lifecycle.prevent_destroy {
                let decl = expanded.decl(stack, &addr);
                diags.push(prevent_destroy_diag(&addr, decl.map(|d| d.span.clone())));
            }
            resolver.values.borrow_mut().insert(addr.clone(), object_value(&addr, &after, &after_sensitive));
            // In-cluster components of a cluster that another provider creates in this plan
            // (EKS, AKS, GKE) wait for it: planned from the stack alone, counted apart.
            let deferred = desired.cluster.as_ref().is_some_and(|c| {
                changes.iter().any(|cc| cc.address == *c && (cc.action == Action::Create || cc.action.is_replace()) && cc.provider != provider_name)
                    && action != Action::NoOp
            });
            changes.push(Change {
                address: addr.clone(),
                kind: addr.kind,
                type_name: desired.type_name.clone(),
                provider: provider_name,
                action,
                reason,
                before: prior.clone(),
                after: Some(after),
                before_sensitive: recorded.map(|r| r.sensitive_paths.clone()).unwrap_or_default(),
                after_sensitive,
                replace_paths,
                depends_on: graph.dependencies(&addr),
                cluster: desired.cluster.clone(),
                refs: desired.refs.clone(),
                delete_data: false,
                deferred,
            });
            desired_all.insert(addr.clone(), desired);
        }
    }

    // Deletes: recorded components that are no longer wanted (or all of them for destroy).
    for r in &state.resources {
        let Some(addr) = parse_addr(&r.address) else { continue };
        if !options.destroy && expanded.instances.contains_key(&addr) {
            continue;
        }
        let Some(live) = live_of(&addr) else {
            // Already gone: nothing to delete, the state entry is dropped on apply.
            changes.push(Change {
                address: addr.clone(),
                kind: addr.kind,
                type_name: r.type_name.clone(),
                provider: r.provider.clone(),
                action: Action::Delete,
                reason: Some(ActionReason::RecreateBecauseDeletedOutOfBand),
                before: None,
                after: None,
                before_sensitive: r.sensitive_paths.clone(),
                after_sensitive: Vec::new(),
                replace_paths: Vec::new(),
                depends_on: r.dependencies.iter().filter_map(|d| d.parse().ok()).collect(),
                cluster: None,
                refs: BTreeMap::new(),
                delete_data: options.delete_data,
                deferred: false,
            });
            continue;
        };
        let reason = if options.destroy {
            ActionReason::DeleteBecauseDestroy
        } else if !expanded.modules.contains_key(&addr.module) {
            ActionReason::DeleteBecauseNoModule
        } else {
            let m = expanded.modules[&addr.module].module;
            match (stack.modules[m].component(addr.kind, &addr.name), &addr.key) {
                (Some(_), Some(InstanceKey::Int(_))) => ActionReason::DeleteBecauseCountIndex,
                (Some(_), Some(InstanceKey::Str(_))) => ActionReason::DeleteBecauseEachKey,
                _ => ActionReason::DeleteBecauseNoConfig,
            }
        };
        if let Some(decl) = expanded.decl(stack, &addr)
            && decl.lifecycle.prevent_destroy
        {
            diags.push(prevent_destroy_diag(&addr, Some(decl.span.clone())));
        }
        changes.push(Change {
            address: addr.clone(),
            kind: addr.kind,
            type_name: r.type_name.clone(),
            provider: r.provider.clone(),
            action: Action::Delete,
            reason: Some(reason),
            before: Some(live),
            after: None,
            before_sensitive: r.sensitive_paths.clone(),
            after_sensitive: Vec::new(),
            replace_paths: Vec::new(),
            depends_on: r.dependencies.iter().filter_map(|d| d.parse().ok()).collect(),
            cluster: r.attributes.get("cluster").and_then(|c| c.as_str()).and_then(|c| c.parse().ok()),
            refs: BTreeMap::new(),
            delete_data: options.delete_data,
            deferred: false,
        });
    }
    let orphans = orphan_deletes(&pending_reads, expanded, &refreshed, options, &changes);
    changes.extend(orphans);

    // -target: keep the targets and what they need (or, for destroy, what needs them).
    if !target_list.is_empty() {
        let hits: Vec<Address> = changes.iter().map(|c| c.address.clone()).filter(|a| target_list.iter().any(|t| a.matches(t))).collect();
        if hits.is_empty() {
            diags.push(Diagnostic::warning(
                "No components matched -target",
                format!("None of {} names a component in this stack or its state.", options.targets.join(", ")),
            ));
        }
        let keep: BTreeSet<Address> = if options.destroy {
            let mut keep: BTreeSet<Address> = hits.iter().cloned().collect();
            // Recorded dependents of the targets must go first.
            let mut grew = true;
            while grew {
                grew = false;
                for c in &changes {
                    if !keep.contains(&c.address) && c.depends_on.iter().any(|d| keep.contains(d)) {
                        keep.insert(c.address.clone());
                        grew = true;
                    }
                }
            }
            keep
        } else {
            graph.with_dependencies(&hits).into_iter().chain(hits.iter().cloned()).collect()
        };
        changes.retain(|c| keep.contains(&c.address));
    }

    if options.refresh_only {
        changes.clear();
    }

    // Outputs (root module only).
    let mut output_changes = Vec::new();
    if !options.refresh_only {
        let scope = ctx.scope(&ModulePath::root());
        for (name, out) in &stack.root().outputs {
            let before = state.outputs.get(name).map(|o| Value::from_json(&o.value));
            if options.destroy {
                if before.is_some() {
                    output_changes.push(OutputChange {
                        name: name.clone(),
                        action: Action::Delete,
                        before,
                        after: None,
                        sensitive: state.outputs[name].sensitive,
                    });
                }
                continue;
            }
            match scope.eval(&out.value.expr, out.value.span.file) {
                Ok(v) => {
                    if v.is_sensitive() && !out.sensitive {
                        diags.push(
                            Diagnostic::error("Output refers to sensitive values", format!("The output {name:?} would show a sensitive value."))
                                .at(Some(out.value.span.clone()))
                                .hint("add sensitive = true to the output block (the value is then hidden in plans and `kdeploy output`)"),
                        );
                        continue;
                    }
                    let action = match &before {
                        None => Action::Create,
                        Some(b) if values_equal(b, &v.value) => Action::NoOp,
                        Some(_) => Action::Update,
                    };
                    output_changes.push(OutputChange { name: name.clone(), action, before, after: Some(v.value), sensitive: out.sensitive });
                }
                Err(d) => diags.push(d),
            }
        }
        for (name, o) in &state.outputs {
            if !stack.root().outputs.contains_key(name) {
                output_changes.push(OutputChange {
                    name: name.clone(),
                    action: Action::Delete,
                    before: Some(Value::from_json(&o.value)),
                    after: None,
                    sensitive: o.sensitive,
                });
            }
        }
    }
    if diags.has_errors() {
        return Err(diags);
    }
    notes.extend(diags.0.iter().filter(|d| d.severity == crate::diag::Severity::Warning).map(|d| format!("{}: {}", d.summary, d.detail)));
    changes.sort_by(|a, b| a.address.cmp(&b.address));
    let mut refreshed = refreshed;
    refreshed.notes = notes.clone();
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION.to_string(),
        kdeploy_version: kdeploy_version.to_string(),
        lineage: if state.serial == 0 && state.resources.is_empty() { None } else { Some(state.lineage.clone()) },
        serial: state.serial,
        config_digest: String::new(),
        options: options.clone(),
        changes,
        drift: refreshed.drift.clone(),
        output_changes,
        notes,
        health: refreshed.health.iter().map(|c| c.message.clone()).collect(),
        settled_pending: if options.refresh { settled_pending(&pending_reads, &refreshed) } else { Vec::new() },
        sources: BTreeMap::new(),
        variables: BTreeMap::new(),
    };
    Ok((plan, refreshed))
}

/// What [`pending_reads`] needs of the stack.
struct PendingCtx<'a> {
    stack: &'a Stack,
    expanded: &'a Expanded,
    ctx: &'a Ctx<'a>,
    types: &'a BTreeMap<Address, String>,
    clusters: &'a [Address],
}

/// The objects interrupted operations may have left unrecorded (a create, a replacement, a
/// delete of an unrecorded object), with what is needed to read them: what the operation
/// recorded, or, for records of older versions, the stack's declaration. The connection is the
/// one the component's cluster has in state, as for every other read: the cluster the stack
/// declares for it now, else the one the operation recorded.
fn pending_reads(state: &State, pc: &PendingCtx<'_>) -> Vec<PendingRead> {
    state
        .pending
        .iter()
        .filter(|p| state.resource(&p.address).is_none() && (p.target.is_some() || p.operation == PendingKind::Create))
        .filter_map(|p| {
            let addr: Address = p.address.parse().ok()?;
            let desired = pc.expanded.instances.get(&addr).and_then(|inst| expand::desired(pc.ctx, pc.stack, inst, pc.clusters).ok());
            let (type_name, provider, recorded, dependencies) = match &p.target {
                Some(t) => {
                    (t.type_name.clone(), t.provider.clone(), Value::from_json(&t.attributes), t.dependencies.iter().filter_map(|d| d.parse().ok()).collect())
                }
                None => {
                    let d = desired.as_ref()?;
                    let cluster_type =
                        d.cluster.as_ref().and_then(|c| pc.types.get(c).cloned().or_else(|| state.resource(&c.to_string()).map(|r| r.type_name.clone())));
                    let provider = kdeploy_provider::provider_for(addr.kind, &d.type_name, cluster_type.as_deref()).to_string();
                    (d.type_name.clone(), provider, d.inputs.clone(), Vec::new())
                }
            };
            let cluster_addr = desired.as_ref().and_then(|d| d.cluster.clone()).or_else(|| recorded.as_map()?.get("cluster")?.as_str()?.parse().ok());
            let cluster = cluster_addr.as_ref().and_then(|c| state.resource(&c.to_string())).map(state_attrs);
            Some(PendingRead { addr, type_name, provider, recorded, cluster, cluster_addr, dependencies })
        })
        .collect()
}

/// The pending operations whose objects the refresh read and found absent.
fn settled_pending(pending: &[PendingRead], refreshed: &Refreshed) -> Vec<String> {
    pending.iter().map(|p| p.addr.to_string()).filter(|a| matches!(refreshed.live.get(a), Some(None))).collect()
}

/// Deletes of what interrupted operations created and the stack no longer declares (or all of
/// it, for destroy): found live, so tracked until deleted.
fn orphan_deletes(pending: &[PendingRead], expanded: &Expanded, refreshed: &Refreshed, options: &PlanOptions, planned: &[Change]) -> Vec<Change> {
    pending
        .iter()
        .filter(|p| options.destroy || !expanded.instances.contains_key(&p.addr))
        .filter(|p| !planned.iter().any(|c| c.address == p.addr))
        .filter_map(|p| {
            let Some(Some((live, _))) = refreshed.live.get(&p.addr.to_string()) else { return None };
            let sensitive = kdeploy_provider::schema_ref(p.addr.kind, &p.type_name)
                .map(|s| s.attributes.iter().filter(|a| a.sensitive).map(|a| AttrPath::attr(a.name)).collect())
                .unwrap_or_default();
            Some(Change {
                address: p.addr.clone(),
                kind: p.addr.kind,
                type_name: p.type_name.clone(),
                provider: p.provider.clone(),
                action: Action::Delete,
                reason: Some(ActionReason::DeleteInterruptedCreate),
                before: Some(live.clone()),
                after: None,
                before_sensitive: sensitive,
                after_sensitive: Vec::new(),
                replace_paths: Vec::new(),
                depends_on: p.dependencies.clone(),
                cluster: p.cluster_addr.clone(),
                refs: BTreeMap::new(),
                delete_data: options.delete_data,
                deferred: false,
            })
        })
        .collect()
}

fn prevent_destroy_diag(addr: &Address, span: Option<crate::diag::Span>) -> Diagnostic {
    Diagnostic::error("Instance cannot be destroyed", format!("{addr} has lifecycle.prevent_destroy set, but the plan would destroy it."))
        .at(span)
        .hint("remove prevent_destroy from its lifecycle block if destroying it is really intended, or change the plan so it is kept")
}

/// `ADDR: message`, without repeating the address when the provider already named it.
fn prefixed(addr: &Address, message: &str) -> String {
    let a = addr.to_string();
    if message.starts_with(&format!("{a}: ")) { message.to_string() } else { format!("{a}: {message}") }
}
