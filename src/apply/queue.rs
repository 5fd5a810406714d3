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
    status: Vec<Status>,
    /// For a skipped job: the failed job that caused it.
    cause: Vec<Option<usize>>,
}

impl Queue {
    pub fn new(waits: Vec<BTreeSet<usize>>) -> Queue {
        let n = waits.len();
        Queue { waits, status: vec![Status::Waiting; n], cause: vec![None; n] }
    }

    pub fn status(&self, i: usize) -> Status {
        self.status[i]
    }

    pub fn set(&mut self, i: usize, status: Status) {
        self.status[i] = status;
    }

    /// Skips every waiting job that waits on a failed or skipped one; returns them with the
    /// failed job at the root of each.
    pub fn skip_blocked(&mut self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut grew = true;
        while grew {
            grew = false;
            for i in 0..self.status.len() {
                if self.status[i] != Status::Waiting {
                    continue;
                }
                if let Some(&bad) = self.waits[i].iter().find(|&&j| matches!(self.status[j], Status::Failed | Status::Skipped)) {
                    let root = self.cause[bad].unwrap_or(bad);
                    self.status[i] = Status::Skipped;
                    self.cause[i] = Some(root);
                    out.push((i, root));
                    grew = true;
                }
            }
        }
        out
    }

    /// The first waiting job whose dependencies are all done, in index order.
    pub fn next_ready(&self) -> Option<usize> {
        (0..self.status.len()).find(|&i| self.status[i] == Status::Waiting && self.waits[i].iter().all(|&j| self.status[j] == Status::Done))
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
    fn a_failure_skips_its_dependents_with_the_root_cause() {
        let mut q = queue(&[&[], &[0], &[1], &[]]);
        q.set(0, Status::Failed);
        assert_eq!(q.skip_blocked(), vec![(1, 0), (2, 0)]);
        assert_eq!(q.next_ready(), Some(3));
        assert_eq!(q.all(Status::Skipped).collect::<Vec<_>>(), [1, 2]);
    }
}
