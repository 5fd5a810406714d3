//! A dependency queue: jobs wait for others to finish; a failure skips everything that waits
//! on it, directly or not. The coordinator owns it; it knows nothing of providers or state.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
}

pub struct Queue {
    waits: Vec<BTreeSet<usize>>,
    /// The reverse of `waits`: who waits on each job.
    dependents: Vec<Vec<usize>>,
    /// For each job, how many of the jobs it waits on are not done.
    missing: Vec<usize>,
    /// Waiting jobs with nothing missing, in index order.
    ready: BTreeSet<usize>,
    status: Vec<Status>,
    /// For a skipped job: the failed job that caused it.
    cause: Vec<Option<usize>>,
    /// A job failed or was skipped since the last [`Queue::skip_blocked`].
    blocked: bool,
}

impl Queue {
    pub fn new(waits: Vec<BTreeSet<usize>>) -> Queue {
        let n = waits.len();
        let mut dependents = vec![Vec::new(); n];
        for (i, w) in waits.iter().enumerate() {
            for &j in w {
                dependents[j].push(i);
            }
        }
        let missing: Vec<usize> = waits.iter().map(BTreeSet::len).collect();
        let ready = (0..n).filter(|&i| missing[i] == 0).collect();
        Queue { waits, dependents, missing, ready, status: vec![Status::Waiting; n], cause: vec![None; n], blocked: false }
    }

    pub fn status(&self, i: usize) -> Status {
        self.status[i]
    }

    /// Sets the status of job `i`, keeping the ready set: the cost is that of `i`'s dependents,
    /// not of the whole queue.
    pub fn set(&mut self, i: usize, status: Status) {
        let old = std::mem::replace(&mut self.status[i], status);
        if old == status {
            return;
        }
        if old == Status::Waiting {
            self.ready.remove(&i);
        }
        if status == Status::Waiting && self.missing[i] == 0 {
            self.ready.insert(i);
        }
        if old == Status::Done || status == Status::Done {
            for k in 0..self.dependents[i].len() {
                let d = self.dependents[i][k];
                self.missing[d] = if status == Status::Done { self.missing[d].saturating_sub(1) } else { self.missing[d].saturating_add(1) };
                if self.status[d] == Status::Waiting && self.missing[d] == 0 {
                    self.ready.insert(d);
                } else {
                    self.ready.remove(&d);
                }
            }
        }
        if matches!(status, Status::Failed | Status::Skipped) {
            self.blocked = true;
        }
    }

    /// Skips every waiting job that waits on a failed or skipped one; returns them with the
    /// failed job at the root of each. Nothing to do (and no scan) unless a job failed since
    /// the last call.
    pub fn skip_blocked(&mut self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        if !std::mem::take(&mut self.blocked) {
            return out;
        }
        let mut grew = true;
        while grew {
            grew = false;
            for i in 0..self.status.len() {
                if self.status[i] != Status::Waiting {
                    continue;
                }
                if let Some(&bad) = self.waits[i].iter().find(|&&j| matches!(self.status[j], Status::Failed | Status::Skipped)) {
                    let root = self.cause[bad].unwrap_or(bad);
                    self.set(i, Status::Skipped);
                    self.cause[i] = Some(root);
                    out.push((i, root));
                    grew = true;
                }
            }
        }
        self.blocked = false;
        out
    }

    /// The first waiting job whose dependencies are all done, in index order.
    pub fn next_ready(&self) -> Option<usize> {
        self.ready.first().copied()
    }

    /// The jobs in `status`.
    pub fn all(&self, status: Status) -> impl Iterator<Item = usize> + '_ {
        (0..self.status.len()).filter(move |&i| self.status[i] == status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(edges: &[&[usize]]) -> Queue {
        Queue::new(edges.iter().map(|w| w.iter().copied().collect()).collect())
    }

    #[test]
    fn jobs_start_once_what_they_wait_for_is_done() {
        let mut q = queue(&[&[], &[0], &[0, 1]]);
        assert_eq!(q.next_ready(), Some(0));
        q.set(0, Status::Running);
        assert_eq!(q.next_ready(), None);
        q.set(0, Status::Done);
        assert_eq!(q.next_ready(), Some(1));
        q.set(1, Status::Done);
        assert_eq!(q.next_ready(), Some(2));
    }

    #[test]
    fn the_ready_set_follows_every_change_of_status() {
        let mut q = queue(&[&[], &[], &[0, 1], &[2]]);
        assert_eq!(q.next_ready(), Some(0));
        q.set(0, Status::Running);
        assert_eq!(q.next_ready(), Some(1));
        // A job that could not start goes back to waiting, first again.
        q.set(0, Status::Waiting);
        assert_eq!(q.next_ready(), Some(0));
        q.set(0, Status::Done);
        q.set(1, Status::Done);
        assert_eq!(q.next_ready(), Some(2));
        q.set(2, Status::Done);
        assert_eq!(q.next_ready(), Some(3));
        // Done undone: what waits on it is not ready any more.
        q.set(2, Status::Waiting);
        assert_eq!(q.next_ready(), Some(2));
        q.set(2, Status::Failed);
        assert_eq!(q.skip_blocked(), vec![(3, 2)]);
        assert_eq!(q.next_ready(), None);
        assert!(q.skip_blocked().is_empty());
    }

    #[test]
    fn a_failure_skips_its_dependents_with_the_root_cause() {
        let mut q = queue(&[&[], &[0], &[1], &[]]);
        q.set(0, Status::Failed);
        assert_eq!(q.skip_blocked(), vec![(1, 0), (2, 0)]);
        assert_eq!(q.next_ready(), Some(3));
        assert_eq!(q.all(Status::Skipped).collect::<Vec<_>>(), [1, 2]);
    }
}
