//! The storage abstraction for state.

use std::time::Duration;

use crate::error::StateError;
use crate::journal::Record;
use crate::lock::LockInfo;
use crate::model::State;

/// What [`StateStore::append`] did with a group of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// The records are durable. With `fold`, the journal has grown past the size of the state:
    /// fold it now with [`StateStore::checkpoint`] (so that the total written stays linear).
    Recorded { fold: bool },
    /// The records were not recorded (e.g. too large for one journal entry): only a
    /// [`StateStore::checkpoint`] of the state makes them durable.
    Declined,
}

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

    /// Writes the whole `state` as [`StateStore::write`] does, and returns whether later changes
    /// may be appended to a journal over it with [`StateStore::append`] (a store keeps one only
    /// while it holds the lock). Apply calls it through [`crate::Recorder`]: first, whenever a
    /// journal has grown past the state, and at the end to fold the journal (then `state` has
    /// the serial of the last group appended). The default writes and returns false: every
    /// batch of an apply then writes the whole state, which is correct for any store.
    fn checkpoint(&mut self, state: &State) -> Result<bool, StateError> {
        self.write(state).map(|()| false)
    }

    /// Appends one group of records to the journal started by the last [`StateStore::checkpoint`]
    /// that returned true, durably (one fsync or one request), at a cost that does not depend
    /// on the size of the state. `serial` is the state's serial after the records: one more
    /// than the previous group's (or the checkpoint's). Refused when the stored state was
    /// replaced since the checkpoint (a broken lock) or when no journal is open.
    fn append(&mut self, serial: u64, records: &[Record]) -> Result<Append, StateError> {
        let _ = (serial, records);
        Err(StateError::Backend { backend: self.describe(), message: "this store keeps no journal; this is a bug in kdeploy, please report it".to_string() })
    }

    /// Warnings collected since the last call, for the user (e.g. an expired lock of another
    /// run was taken over).
    fn take_warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
}
