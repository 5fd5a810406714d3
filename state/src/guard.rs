//! Holding a store's lock: [`Locked`] releases it on every path (drop), and [`push`] is the one
//! place the rules for replacing a stored state by another live (`state push`, `init
//! -migrate-state`).

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use crate::{LockInfo, State, StateError, StateStore};

/// A store whose lock this process holds. Dropping it releases the lock; [`Locked::release`]
/// does the same and reports a failure.
pub struct Locked {
    store: Box<dyn StateStore>,
    held: bool,
}

impl Locked {
    /// Takes the lock of `store` (see [`StateStore::lock`] for `timeout`).
    pub fn acquire(mut store: Box<dyn StateStore>, info: LockInfo, timeout: Duration) -> Result<Locked, StateError> {
        store.lock(info, timeout)?;
        Ok(Locked { store, held: true })
    }

    /// The store without taking its lock (`-lock=false`): releasing it does nothing.
    pub fn unlocked(store: Box<dyn StateStore>) -> Locked {
        Locked { store, held: false }
    }

    /// Releases the lock now.
    pub fn release(mut self) -> Result<(), StateError> {
        if !std::mem::replace(&mut self.held, false) {
            return Ok(());
        }
        self.store.unlock()
    }
}

impl Deref for Locked {
    type Target = dyn StateStore;
    fn deref(&self) -> &Self::Target {
        self.store.as_ref()
    }
}

impl DerefMut for Locked {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.store.as_mut()
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if self.held {
            // Nobody to tell on this path (an early return, a panic): the lock's holder check
            // lets the next run break a lock left by a process that is gone.
            let _ = self.store.unlock();
        }
    }
}

/// Why a pushed state was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "the state in {location} has lineage {stored}, the pushed state has lineage {pushed}: they are different states, and pushing would replace the other one. Check that this is the right file and backend; pass --force to replace it anyway"
    )]
    OtherLineage { location: String, stored: String, pushed: String },
    #[error(
        "the state in {location} has serial {stored}, newer than the pushed state's serial {pushed}: pushing would lose what was written since. Pull the current state and compare; pass --force to replace it anyway"
    )]
    Older { location: String, stored: u64, pushed: u64 },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Writes `pushed` over the state in `store` (whose lock the caller holds): refuses another
/// lineage or a lower serial unless `force`. The stored serial keeps increasing. Returns the
/// serial written.
pub fn push(store: &mut dyn StateStore, mut pushed: State, force: bool) -> Result<u64, PushError> {
    let mut other_lineage = false;
    if let Some(cur) = store.read_stored()? {
        if cur.lineage != pushed.lineage {
            if !force {
                return Err(PushError::OtherLineage { location: store.describe(), stored: cur.lineage, pushed: pushed.lineage });
            }
            other_lineage = true;
        } else if pushed.serial < cur.serial && !force {
            return Err(PushError::Older { location: store.describe(), stored: cur.serial, pushed: pushed.serial });
        }
        let next = cur.serial.checked_add(1).ok_or(StateError::SerialExhausted { serial: cur.serial })?;
        pushed.serial = pushed.serial.max(next);
    }
    if other_lineage {
        store.force_write(&pushed)?
    } else {
        store.write(&pushed)?
    }
    Ok(pushed.serial)
}
