//! Refresh: what is live. Every recorded resource is read with one batched call per provider
//! and compared with what state records (drift); the objects interrupted operations may have
//! left unrecorded are read too, and decide what is left of those operations.

use std::collections::{BTreeMap, BTreeSet};

use kdeploy_provider::{AttrPath, Check, ComponentRef, Kind, ReadRequest, ReadResult, Value};
use kdeploy_state::{PendingKind, ResourceState, State};

use super::{Action, ActionReason, Change, Drift, Note, PlanOptions};
use crate::addr::Address;
use crate::config::evaluator::Evaluator;
use crate::config::expand::Expanded;
use crate::diag::{Diagnostic, Diagnostics};
use crate::providers::Providers;

/// What one refresh found.
#[derive(Debug, Clone, Default)]
pub struct Refreshed {
    /// Live attributes by address (None: deleted out of band).
    pub live: BTreeMap<Address, Option<(Value, Option<String>)>>,
    pub drift: Vec<Drift>,
    /// Health checks of the providers (Vault answering /api/health, its accounts /api/ping).
    pub health: Vec<Check>,
}

impl Refreshed {
    /// The live attributes of `addr`, when it was found live.
    pub fn live_value(&self, addr: &Address) -> Option<Value> {
        match self.live.get(addr) {
            Some(Some((v, _))) => Some(v.clone()),
            _ => None,
        }
    }
}

pub fn state_attrs(r: &ResourceState) -> Value {
    Value::from_json(&r.attributes)
}

/// Read requests for the recorded resources `keep` selects, by provider.
fn read_requests(state: &State, keep: impl Fn(&ResourceState) -> bool) -> BTreeMap<String, Vec<ReadRequest>> {
    let mut by_provider: BTreeMap<String, Vec<ReadRequest>> = BTreeMap::new();
    let cluster_of = |r: &ResourceState| -> Option<Value> {
        let c: Address = r.attributes.get("cluster")?.as_str()?.parse().ok()?;
        state.resource(&c).map(state_attrs)
    };
    for r in state.resources.iter().filter(|r| keep(r)) {
        by_provider.entry(r.provider.clone()).or_default().push(ReadRequest {
            component: ComponentRef { address: r.address.clone(), kind: r.address.kind, type_name: r.type_name.clone() },
            recorded: state_attrs(r),
            cluster: cluster_of(r),
        });
    }
    by_provider
}

/// The health checks of the recorded vaults (their accounts answer): run after apply.
pub async fn verify(state: &State, providers: &Providers) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, requests) in read_requests(state, |r| r.kind == Kind::Vault) {
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
/// How long a request a killed run sent may still be carried out by its target (a Docker
/// engine finishing a container create after its client died).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits until the operations an interrupted run started have had [`SETTLE`] to finish, so
/// that reading them does not find nothing while the target is still creating the object
/// (which would then be left behind, recorded nowhere). Only a run right after the
/// interruption waits; a start time in the future (another machine's clock) waits at most
/// [`SETTLE`].
pub async fn settle_interrupted(state: &State) {
    if let Some(wait) = settle_wait(&state.pending, time::OffsetDateTime::now_utc()) {
        tokio::time::sleep(wait).await;
    }
}

/// How long to wait at `now` for [`settle_interrupted`]; None when every operation is older.
fn settle_wait(pending: &[kdeploy_state::PendingOp], now: time::OffsetDateTime) -> Option<std::time::Duration> {
    pending
        .iter()
        .filter_map(|p| time::OffsetDateTime::parse(&p.started_at, &time::format_description::well_known::Rfc3339).ok())
        .filter_map(|started| std::time::Duration::try_from(started + SETTLE - now).ok())
        .max()
        .map(|w| w.min(SETTLE))
}

pub async fn refresh(state: &State, providers: &Providers, extra: &[PendingRead]) -> Result<Refreshed, Diagnostics> {
    let mut out = Refreshed::default();
    let mut diags = Diagnostics::new();
    let mut by_provider = read_requests(state, |_| true);
    for p in extra {
        by_provider.entry(p.provider.clone()).or_default().push(ReadRequest {
            component: ComponentRef { address: p.addr.clone(), kind: p.addr.kind, type_name: p.type_name.clone() },
            recorded: p.recorded.clone(),
            cluster: p.cluster.clone(),
        });
    }
    for (name, requests) in by_provider {
        let provider = match providers.get(&name) {
            Ok(p) => p,
            Err(e) => {
                let addresses: Vec<String> = requests.iter().map(|r| r.component.address.to_string()).collect();
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
        let addresses: Vec<Address> = requests.iter().map(|r| r.component.address.clone()).collect();
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
        let addr = r.address.clone();
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
                        kind: r.kind,
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
                kind: r.kind,
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
            if x.same_as(y) {
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

/// Without a refresh: what state records stands for what is live.
pub fn recorded_only(state: &State) -> Refreshed {
    let mut r = Refreshed::default();
    for res in &state.resources {
        r.live.insert(res.address.clone(), Some((state_attrs(res), res.fingerprint.clone())));
    }
    r
}

/// The notes that tell the user an earlier run was interrupted.
pub fn pending_notes(state: &State) -> Vec<Note> {
    state
        .pending
        .iter()
        .map(|p| {
            let doing = match p.operation {
                PendingKind::Create => "creating",
                PendingKind::Update => "updating",
                PendingKind::Delete => "deleting",
            };
            Note::sentence(format!(
                "A previous run was interrupted while it was {doing} {} (started {}). kdeploy read the live object to decide what is left to do.",
                p.address, p.started_at
            ))
        })
        .collect()
}

/// What [`pending_reads`] needs of the stack.
pub struct PendingCtx<'a> {
    pub expanded: &'a Expanded,
    pub eval: &'a Evaluator<'a>,
    pub types: &'a BTreeMap<Address, String>,
}

/// The objects interrupted operations may have left unrecorded (a create, a replacement, a
/// delete of an unrecorded object), with what is needed to read them: what the operation
/// recorded, or, for records of older versions, the stack's declaration. The connection is the
/// one the component's cluster has in state, as for every other read: the cluster the stack
/// declares for it now, else the one the operation recorded.
pub fn pending_reads(state: &State, pc: &PendingCtx<'_>) -> Vec<PendingRead> {
    state
        .pending
        .iter()
        .filter(|p| state.resource(&p.address).is_none() && (p.target.is_some() || p.operation == PendingKind::Create))
        .filter_map(|p| {
            let addr = p.address.clone();
            let desired = pc.eval.desired(&addr).and_then(Result::ok);
            let (type_name, provider, recorded, dependencies) = match &p.target {
                Some(t) => (t.type_name.clone(), t.provider.clone(), Value::from_json(&t.attributes), t.dependencies.clone()),
                None => {
                    let d = desired.as_ref()?;
                    let cluster_type = d.cluster.as_ref().and_then(|c| pc.types.get(c).cloned().or_else(|| state.resource(c).map(|r| r.type_name.clone())));
                    let provider = kdeploy_provider::provider_for(addr.kind, &d.type_name, cluster_type.as_deref()).to_string();
                    (d.type_name.clone(), provider, d.inputs.clone(), Vec::new())
                }
            };
            let cluster_addr = desired.as_ref().and_then(|d| d.cluster.clone()).or_else(|| recorded.as_map()?.get("cluster")?.as_str()?.parse().ok());
            let cluster = cluster_addr.as_ref().and_then(|c| state.resource(c)).map(state_attrs);
            Some(PendingRead { addr, type_name, provider, recorded, cluster, cluster_addr, dependencies })
        })
        .collect()
}

/// The pending operations whose objects the refresh read and found absent.
pub fn settled_pending(pending: &[PendingRead], refreshed: &Refreshed) -> Vec<Address> {
    pending.iter().map(|p| p.addr.clone()).filter(|a| matches!(refreshed.live.get(a), Some(None))).collect()
}

/// Deletes of what interrupted operations created and the stack no longer declares (or all of
/// it, for destroy): found live, so tracked until deleted.
pub fn orphan_deletes(pending: &[PendingRead], expanded: &Expanded, refreshed: &Refreshed, options: &PlanOptions, planned: &[Change]) -> Vec<Change> {
    pending
        .iter()
        .filter(|p| options.destroy || !expanded.instances.contains_key(&p.addr))
        .filter(|p| !planned.iter().any(|c| c.address == p.addr))
        .filter_map(|p| {
            let Some(Some((live, _))) = refreshed.live.get(&p.addr) else { return None };
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
                import_id: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod settle_tests {
    use kdeploy_state::{PendingKind, PendingOp};

    use super::{SETTLE, settle_wait};

    fn started(at: &str) -> PendingOp {
        PendingOp { started_at: at.into(), ..PendingOp::start(&"agent.cam".parse().unwrap(), PendingKind::Create, None) }
    }

    #[test]
    fn a_run_right_after_an_interruption_waits_out_the_settle_time_and_no_longer() {
        let now = time::macros::datetime!(2026-11-28 09:25:19 UTC);
        assert_eq!(settle_wait(&[started("2026-11-28T09:25:18Z")], now), Some(std::time::Duration::from_secs(2)));
        assert_eq!(settle_wait(&[started("2026-11-28T09:25:10Z")], now), None, "long finished");
        assert_eq!(settle_wait(&[started("2026-11-28T09:25:10Z"), started("2026-11-28T09:25:19Z")], now), Some(SETTLE), "the latest decides");
        assert_eq!(settle_wait(&[started("2026-11-28T10:00:00Z")], now), Some(SETTLE), "another machine's clock ahead: at most the settle time");
        assert_eq!(settle_wait(&[started("not a time")], now), None);
        assert_eq!(settle_wait(&[], now), None);
    }
}
