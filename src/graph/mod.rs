//! The dependency graph of component instances, built as an ordered list of small transforms
//! and validated once at the end. Edges point from a dependency to its dependent, so a
//! topological order is an apply order.

pub mod render;

use std::collections::{BTreeMap, HashSet};

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};

use crate::addr::Address;
use crate::config::expand::{Dep, DepKind, Expanded};
use crate::diag::{Diagnostic, Diagnostics, Span};
use kdeploy_provider::schema::Kind;

/// An edge: why `to` depends on `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub kind: DepKind,
    pub span: Option<Span>,
}

/// The dependency graph. Node weights are addresses; lookups by address go through `index`.
#[derive(Debug, Clone, Default)]
pub struct DepGraph {
    pub graph: StableDiGraph<Address, Edge>,
    pub index: BTreeMap<Address, NodeIndex>,
    /// The edges added, (dependency, dependent): `find_edge` walks every edge of a node, and a
    /// central Vault has an edge to each agent of a fleet, so checking through it made building
    /// the graph quadratic in the agents.
    edges: HashSet<(NodeIndex, NodeIndex)>,
}

/// One graph transform: a single purpose, in a fixed order.
type Transform = fn(&mut DepGraph, &Expanded, &mut Diagnostics);

/// The transforms, in order. Each line says why it exists.
const TRANSFORMS: &[(&str, Transform)] = &[
    // Every component instance (count/for_each already expanded) is a node.
    ("instances", add_instances),
    // An expression that reads another component must run after it.
    ("references", |g, e, _| add_edges(g, e, DepKind::Reference)),
    // depends_on orders what references cannot express (side effects).
    ("depends_on", |g, e, _| add_edges(g, e, DepKind::DependsOn)),
    // In-cluster components need their cluster first, even when they do not name it.
    ("clusters", |g, e, _| add_edges(g, e, DepKind::Cluster)),
    // A cycle has no apply order: report every node on it.
    ("acyclic", validate_acyclic),
];

fn add_instances(g: &mut DepGraph, e: &Expanded, _: &mut Diagnostics) {
    for addr in e.instances.keys() {
        g.add_node(addr.clone());
    }
}

fn add_edges(g: &mut DepGraph, e: &Expanded, kind: DepKind) {
    for (addr, deps) in &e.deps {
        for Dep { target, span, kind: k } in deps {
            if *k == kind {
                g.add_dep(addr, target, Edge { kind, span: Some(span.clone()) });
            }
        }
    }
}

fn validate_acyclic(g: &mut DepGraph, _: &Expanded, diags: &mut Diagnostics) {
    for cycle in g.cycles() {
        let names: Vec<String> = cycle.iter().map(ToString::to_string).collect();
        let first = &cycle[0];
        let last = cycle.last().unwrap_or(first);
        // Point at the reference that closes the cycle (the last node depends on the first).
        let span = g.edge(last, first).and_then(|e| e.span.clone());
        diags.push(
            Diagnostic::error("Dependency cycle", format!("These components depend on each other in a cycle: {} -> {}.", names.join(" -> "), names[0]))
                .at(span)
                .hint(cycle_hint(&cycle)),
        );
    }
}

/// The fix of a cycle: the one a Vault and its Hub make named, else the general one.
fn cycle_hint(cycle: &[Address]) -> &'static str {
    let has = |k: Kind| cycle.iter().any(|a| a.kind == k);
    if has(Kind::Hub) && has(Kind::Vault) {
        // A vault's on-demand forward needs its Hub's key, and Hub needs its Vault's keys.
        return "a hub reads the Vault its on-demand forwards send to, not a Vault that forwards to it: set the hub's vault to the forward's vault, or give the forward hub_url, hub_key and hub_username instead of hub";
    }
    "remove one of the references or depends_on entries on the cycle"
}

impl DepGraph {
    /// Builds the graph by running every transform in order.
    pub fn build(expanded: &Expanded) -> (DepGraph, Diagnostics) {
        let mut g = DepGraph::default();
        let mut diags = Diagnostics::new();
        for (_, t) in TRANSFORMS {
            t(&mut g, expanded, &mut diags);
        }
        (g, diags)
    }

    pub fn add_node(&mut self, addr: Address) -> NodeIndex {
        if let Some(i) = self.index.get(&addr) {
            return *i;
        }
        let i = self.graph.add_node(addr.clone());
        self.index.insert(addr, i);
        i
    }

    /// Records that `dependent` depends on `dependency`.
    pub fn add_dep(&mut self, dependent: &Address, dependency: &Address, edge: Edge) {
        let (Some(&a), Some(&b)) = (self.index.get(dependent), self.index.get(dependency)) else { return };
        if self.edges.insert((b, a)) {
            self.graph.add_edge(b, a, edge);
        }
    }

    pub fn edge(&self, dependent: &Address, dependency: &Address) -> Option<&Edge> {
        let (a, b) = (self.index.get(dependent)?, self.index.get(dependency)?);
        self.graph.find_edge(*b, *a).and_then(|e| self.graph.edge_weight(e))
    }

    /// Direct dependencies of `addr`, sorted.
    pub fn dependencies(&self, addr: &Address) -> Vec<Address> {
        let Some(&i) = self.index.get(addr) else { return Vec::new() };
        let mut v: Vec<Address> = self.graph.neighbors_directed(i, Direction::Incoming).map(|n| self.graph[n].clone()).collect();
        v.sort();
        v
    }

    /// Direct dependents of `addr`, sorted.
    pub fn dependents(&self, addr: &Address) -> Vec<Address> {
        let Some(&i) = self.index.get(addr) else { return Vec::new() };
        let mut v: Vec<Address> = self.graph.neighbors_directed(i, Direction::Outgoing).map(|n| self.graph[n].clone()).collect();
        v.sort();
        v
    }

    /// Every edge as (dependent, dependency, kind), sorted.
    pub fn edges(&self) -> Vec<(Address, Address, DepKind)> {
        let mut v: Vec<_> = self.graph.edge_references().map(|e| (self.graph[e.target()].clone(), self.graph[e.source()].clone(), e.weight().kind)).collect();
        v.sort();
        v
    }

    /// All addresses `roots` depend on, transitively, plus the roots.
    pub fn with_dependencies(&self, roots: &[Address]) -> Vec<Address> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack: Vec<Address> = roots.to_vec();
        while let Some(a) = stack.pop() {
            if seen.insert(a.clone()) {
                stack.extend(self.dependencies(&a));
            }
        }
        seen.into_iter().collect()
    }

    /// A deterministic topological order (Kahn's algorithm, ties broken by address). Nodes on
    /// cycles are left out.
    pub fn topo_order(&self) -> Vec<Address> {
        let mut indegree: BTreeMap<&Address, usize> = BTreeMap::new();
        for (addr, &i) in &self.index {
            indegree.insert(addr, self.graph.neighbors_directed(i, Direction::Incoming).count());
        }
        let mut ready: std::collections::BTreeSet<&Address> = indegree.iter().filter(|(_, d)| **d == 0).map(|(a, _)| *a).collect();
        let mut out = Vec::with_capacity(self.index.len());
        while let Some(a) = ready.pop_first() {
            out.push(a.clone());
            let i = self.index[a];
            for n in self.graph.neighbors_directed(i, Direction::Outgoing) {
                let dep = &self.graph[n];
                if let Some(d) = indegree.get_mut(dep) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(dep);
                    }
                }
            }
        }
        out
    }

    /// Every cycle, each as the list of its nodes in dependency order starting from the
    /// smallest address.
    pub fn cycles(&self) -> Vec<Vec<Address>> {
        let mut out = Vec::new();
        for scc in tarjan_scc(&self.graph) {
            let is_cycle = scc.len() > 1 || scc.first().is_some_and(|&n| self.graph.find_edge(n, n).is_some());
            if !is_cycle {
                continue;
            }
            let members: std::collections::BTreeSet<NodeIndex> = scc.iter().copied().collect();
            // Walk dependent -> dependency inside the SCC from the smallest address.
            let start = *scc.iter().min_by_key(|&&n| &self.graph[n]).expect("non-empty");
            let mut path = vec![start];
            let mut cur = start;
            loop {
                let mut next: Vec<NodeIndex> = self.graph.neighbors_directed(cur, Direction::Incoming).filter(|n| members.contains(n)).collect();
                next.sort_by_key(|n| self.graph[*n].clone());
                let Some(n) = next.into_iter().find(|n| *n == start || !path.contains(n)) else { break };
                if n == start {
                    break;
                }
                path.push(n);
                cur = n;
            }
            out.push(path.into_iter().map(|n| self.graph[n].clone()).collect());
        }
        out.sort();
        out
    }
}
