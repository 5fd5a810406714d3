//! The storage abstraction for state.

use std::time::Duration;

use crate::error::StateError;
use crate::lock::LockInfo;
use crate::model::State;

/// Where state lives and how it is locked. [`crate::LocalStore`] is the file implementation.
///
/// A run typically does: `lock`, `read`, then one or more `write`s (each with a higher serial,
/// see [`State::bump_serial`]), then `unlock`.
pub trait StateStore: Send {
    /// Human-readable location, e.g. `local state file /x/.kdeploy/state.json`.
    fn describe(&self) -> String;

    /// Reads the current state; `None` when there is no state yet. The store remembers the
    /// lineage and serial it saw so that a later `write` can detect concurrent changes.
    fn read(&mut self) -> Result<Option<State>, StateError>;

    /// Replaces the stored state. Refuses a different lineage, a newer stored format, and a
    /// serial that does not strictly increase.
    fn write(&mut self, state: &State) -> Result<(), StateError>;

    /// Takes the lock, retrying about every 100 ms for up to `timeout` (zero means fail at
    /// once). Fails with [`StateError::Locked`] naming the holder.
    fn lock(&mut self, info: LockInfo, timeout: Duration) -> Result<(), StateError>;

    /// Releases the lock this store holds; [`StateError::NotLocked`] when it holds none.
    fn unlock(&mut self) -> Result<(), StateError>;

    /// Who holds the lock now, if anyone (this store included).
    fn lock_info(&mut self) -> Result<Option<LockInfo>, StateError>;

    /// Breaks the lock held by someone else. `id` must be the exact id of the current lock;
    /// otherwise the error names the actual holder.
    fn force_unlock(&mut self, id: &str) -> Result<(), StateError>;

    /// Like [`StateStore::force_unlock`], also when the holder is known to be alive (the local
    /// store refuses that otherwise). Remote stores cannot tell, so it is the same for them.
    fn force_unlock_running(&mut self, id: &str) -> Result<(), StateError> {
        self.force_unlock(id)
    }

    /// The state exactly as stored: with [`crate::crypt::CryptStore`], sensitive values stay
    /// encrypted (what `kdeploy state pull` prints). Other stores return [`StateStore::read`].
    fn read_stored(&mut self) -> Result<Option<State>, StateError> {
        self.read()
    }

    /// Replaces the stored state even when it has another lineage (`kdeploy state push
    /// --force`). The serial must still be higher than the stored one.
    fn force_write(&mut self, state: &State) -> Result<(), StateError> {
        let _ = state;
        Err(StateError::Backend { backend: self.describe(), message: "this store cannot replace the state of another lineage".to_string() })
    }

    /// Warnings collected since the last call, for the user (e.g. an expired lock of another
    /// run was taken over).
    fn take_warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
}
