//! Deterministic renderings of the graph: DOT for graphviz and a plain text listing.

use std::fmt::Write as _;

use super::DepGraph;
use crate::config::expand::DepKind;

/// DOT, edges from dependent to dependency (as Terraform prints them), sorted.
pub fn dot(g: &DepGraph) -> String {
    let mut out = String::from("digraph kdeploy {\n  rankdir = \"RL\";\n  node [shape = box];\n");
    for addr in g.index.keys() {
        let _ = writeln!(out, "  {};", quote(&addr.to_string()));
    }
    for (from, to, kind) in g.edges() {
        let style = match kind {
            DepKind::Reference => "",
            DepKind::DependsOn => " [style = dashed, label = \"depends_on\"]",
            DepKind::Cluster => " [style = dotted, label = \"runs on\"]",
        };
        let _ = writeln!(out, "  {} -> {}{style};", quote(&from.to_string()), quote(&to.to_string()));
    }
    out.push_str("}\n");
    out
}

/// One line per component in apply order, each followed by what it depends on.
pub fn text(g: &DepGraph) -> String {
    let mut out = String::new();
    for addr in g.topo_order() {
        let deps = g.dependencies(&addr);
        if deps.is_empty() {
            let _ = writeln!(out, "{addr}");
        } else {
            let names: Vec<String> = deps.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "{addr}\n  depends on: {}", names.join(", "));
        }
    }
    out
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
