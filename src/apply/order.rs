//! Apply ordering, in one place: which changes must finish before each one starts. Creates and
//! updates wait for what they depend on; deletes run the other way round, waiting for
//! everything that depended on the deleted component (as planned or as recorded); a
//! replacement is one job (`create_before_destroy` decides the order inside it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kdeploy_state::State;

use crate::addr::Address;
use crate::plan::{Action, Change};

/// `waits[i]`: the indexes of the changes that must finish before `changes[i]` starts.
pub fn waits(changes: &[&Change], state: &State) -> Vec<BTreeSet<usize>> {
    let index: BTreeMap<&Address, usize> = changes.iter().enumerate().map(|(i, c)| (&c.address, i)).collect();
    changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c.action == Action::Delete {
                changes.iter().enumerate().filter(|&(j, other)| j != i && depends_on(other, &c.address, state)).map(|(j, _)| j).collect()
            } else {
                c.depends_on.iter().filter_map(|d| index.get(d).copied()).filter(|&j| changes[j].action != Action::Delete).collect()
            }
        })
        .collect()
}

/// Whether `change`'s component depends on `addr`, as planned or as state records it.
fn depends_on(change: &Change, addr: &Address, state: &State) -> bool {
    change.depends_on.contains(addr) || state.resource(&change.address).is_some_and(|r| r.dependencies.contains(addr))
}

/// The ordering as text, one change per line with what it waits for (for review and tests).
pub fn render(changes: &[&Change], waits: &[BTreeSet<usize>]) -> String {
    let mut out = String::new();
    for (i, c) in changes.iter().enumerate() {
        let after: Vec<String> = waits[i].iter().map(|&j| changes[j].address.to_string()).collect();
        let _ = write!(out, "{} {:?}", c.address, c.action);
        if !after.is_empty() {
            let _ = write!(out, " after {}", after.join(", "));
        }
        out.push('\n');
    }
    out
}
