//! The one evaluator of a stack's instances, shared by validate, plan and apply: each instance's
//! desired value (inputs with `ignore_changes` and sensitive paths applied) is evaluated against
//! the values recorded so far, and its planned or applied value is recorded in turn so that the
//! instances after it can refer to it; the root outputs read the same values.
//!
//! Validate records the provider-independent default plan of each instance, plan the providers'
//! planned values, apply the applied values (borrowed from the apply coordinator, which owns
//! them).

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use kdeploy_provider::{AttrPath, Value};

use super::Stack;
use super::eval::{Ctx, Marked};
use super::expand::{self, Desired, Expanded, ValueTable, object_value};
use super::{ComponentDecl, OutputDecl};
use crate::addr::{Address, ModulePath};
use crate::diag::{Diagnostic, Diagnostics, SourceMap};

/// Evaluates instances and outputs over one table of component values.
pub struct Evaluator<'a> {
    stack: &'a Stack,
    sources: &'a SourceMap,
    root_vars: &'a BTreeMap<String, Marked>,
    expanded: &'a Expanded,
    table: ValueTable<'a>,
    /// Computed on first use: an evaluator made for one instance need not list every cluster.
    clusters: OnceCell<Vec<Address>>,
    /// Recorded values shared with provider requests, made once per value (see `shared`).
    shared: RefCell<SharedValues>,
}

impl<'a> Evaluator<'a> {
    /// An evaluator that starts with no component values (validate, plan).
    pub fn new(stack: &'a Stack, sources: &'a SourceMap, root_vars: &'a BTreeMap<String, Marked>, expanded: &'a Expanded) -> Evaluator<'a> {
        Evaluator {
            stack,
            sources,
            root_vars,
            expanded,
            table: ValueTable::new(stack, expanded, BTreeMap::new()),
            clusters: OnceCell::new(),
            shared: RefCell::default(),
        }
    }

    /// An evaluator over values its caller keeps and updates between calls (apply's applied
    /// values): nothing is copied.
    pub fn over(
        stack: &'a Stack,
        sources: &'a SourceMap,
        root_vars: &'a BTreeMap<String, Marked>,
        expanded: &'a Expanded,
        values: &'a BTreeMap<Address, Marked>,
    ) -> Evaluator<'a> {
        Evaluator {
            stack,
            sources,
            root_vars,
            expanded,
            table: ValueTable::borrowed(stack, expanded, values),
            clusters: OnceCell::new(),
            shared: RefCell::default(),
        }
    }

    /// The evaluation context over the recorded values, for scopes of locals and outputs.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx::new(self.stack, self.sources, self.root_vars, &self.expanded.modules, &self.table)
    }

    /// The same evaluator with the stack's clusters listed already (listing them scans every
    /// instance: apply evaluates each change with its own evaluator, and must not scan per change).
    pub fn with_clusters(self, clusters: &[Address]) -> Evaluator<'a> {
        let _ = self.clusters.set(clusters.to_vec());
        self
    }

    /// The clusters of the stack, by address.
    pub fn clusters(&self) -> &[Address] {
        self.clusters.get_or_init(|| self.expanded.clusters())
    }

    /// The declaration of an instance.
    pub fn decl(&self, addr: &Address) -> Option<&'a ComponentDecl> {
        self.expanded.decl(self.stack, addr)
    }

    /// The desired value of the instance at `addr`, its references resolved against the values
    /// recorded so far; `None` when the stack does not declare it.
    pub fn desired(&self, addr: &Address) -> Option<Result<Desired, Diagnostics>> {
        let inst = self.expanded.instances.get(addr)?;
        Some(expand::desired(&self.ctx(), self.stack, inst, self.clusters()))
    }

    /// Records the planned (or validated) value of `addr` for the instances that refer to it.
    pub fn record(&self, addr: &Address, value: &Value, sensitive: &[AttrPath]) {
        self.shared.borrow_mut().forget(addr);
        self.table.values.borrow_mut().insert(addr.clone(), object_value(addr, value, sensitive));
    }

    /// The recorded value of `addr` to hand to providers as a reference: copied once, then
    /// shared by every component that references it (every agent of a fleet references the
    /// central Vault, whose value holds every site's account).
    pub fn shared(&self, addr: &Address) -> Option<Arc<Value>> {
        let values = self.table.values.borrow();
        self.shared.borrow_mut().get_or_copy(addr, values.get(addr).map(|m| &m.value))
    }

    /// The recorded value of `addr`, if any.
    pub fn value(&self, addr: &Address) -> Option<Value> {
        self.table.values.borrow().get(addr).map(|m| m.value.clone())
    }

    /// `f` of the recorded value of `addr`, if any, without copying it (a Vault's value holds
    /// the accounts of every site of a fleet, and each agent's plan looks at it).
    pub fn with_value<T>(&self, addr: &Address, f: impl FnOnce(&Value) -> T) -> Option<T> {
        self.table.values.borrow().get(addr).map(|m| f(&m.value))
    }

    /// A root output's value over the recorded values.
    pub fn root_output(&self, decl: &OutputDecl) -> Result<Marked, Diagnostic> {
        let ctx = self.ctx();
        let scope = ctx.scope(&ModulePath::root());
        expand::root_output(&scope, decl)
    }
}

/// Recorded values handed to providers as references (`Reference.attributes`): copied once per
/// value, then shared by every component that references it (every agent of a fleet references
/// the central Vault, whose value holds every site's account). Plan and apply keep one each.
#[derive(Debug, Default)]
pub struct SharedValues(HashMap<Address, Arc<Value>>);

impl SharedValues {
    /// The shared copy of `addr`'s value, made from `value` the first time.
    pub fn get_or_copy(&mut self, addr: &Address, value: Option<&Value>) -> Option<Arc<Value>> {
        if let Some(v) = self.0.get(addr) {
            return Some(Arc::clone(v));
        }
        let v = Arc::new(value?.clone());
        self.0.insert(addr.clone(), Arc::clone(&v));
        Some(v)
    }

    /// Forgets the copy of `addr`, whose value changed.
    pub fn forget(&mut self, addr: &Address) {
        self.0.remove(addr);
    }
}
