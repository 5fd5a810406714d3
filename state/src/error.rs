//! Errors of the state crate. Every message names the file or address concerned and says what
//! to do about it.

use std::io;
use std::path::PathBuf;

use crate::lock::LockInfo;

/// Everything that can go wrong while reading, writing or locking state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file-system operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "read state file".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The state is not valid JSON, or does not have the expected shape.
    #[error("{}", decode_message(source_name, *line, *column, message))]
    Decode {
        /// Where the bytes came from (a path or a store description).
        source_name: String,
        /// 1-based line of the problem, or 0 when the position is not known (for example when
        /// the problem was found after upgrading an older format).
        line: usize,
        /// 1-based column of the problem, or 0 when not known.
        column: usize,
        message: String,
    },

    /// The state was written by a newer kdeploy whose format this build cannot read.
    #[error(
        "state at {source_name} was written by a newer kdeploy (format version {found}, this build \
         reads up to {supported}); upgrade kdeploy"
    )]
    NewerVersion { source_name: String, found: u64, supported: u32 },

    /// A partitioned state cannot do what was asked (see [`crate::partition`]); the message
    /// says what to run instead.
    #[error("{message}")]
    Partition { message: String },

    /// The state on disk belongs to a different lineage (a different stack or a re-created state).
    #[error(
        "state at {location} belongs to lineage {existing}, this run has lineage {ours}; refusing \
         to overwrite. The file belongs to another stack or was re-created: check that you are in \
         the right directory, or move the file away if it really is obsolete"
    )]
    LineageMismatch { location: String, existing: String, ours: String },

    /// The serial being written is not greater than the one already stored.
    #[error(
        "refusing to write state to {location}: its serial must strictly increase, but the stored \
         state already has serial {existing} and this write has serial {attempted}. Another run \
         probably wrote the state meanwhile; run the command again so it starts from the current \
         state"
    )]
    SerialNotIncreasing { location: String, existing: u64, attempted: u64 },

    /// The state changed on disk between this run's read and its write.
    #[error(
        "refusing to write state to {location}: it changed since this run read it (serial \
         {read_serial} was read, serial {disk_serial} is stored now). Another run wrote it \
         meanwhile; run the command again, and do not disable locking"
    )]
    ChangedSinceRead { location: String, read_serial: u64, disk_serial: u64 },

    /// The serial cannot increase any more.
    #[error(
        "the state's serial is {serial}, the largest there is, so it cannot be written again; copy \
         the state with a lower serial (kdeploy state pull > s.json, edit \"serial\", then \
         kdeploy state push -force s.json)"
    )]
    SerialExhausted { serial: u64 },

    /// The state file was replaced while this run held the lock (someone broke the lock).
    #[error(
        "refusing to write state to {location}: the file was changed by someone else while this \
         run held the lock (the lock was probably broken with force-unlock). Nothing was \
         overwritten"
    )]
    ReplacedWhileLocked { location: String },

    /// `force-unlock` of a lock whose holder is still running.
    #[error(
        "the lock on {path} is held by a run that is still alive ({} for {}, PID {}): breaking it \
         would let two runs write the state at once, and one would lose the other's changes. Wait \
         for it or stop it. Only if you are sure it will never write again, run \
         `kdeploy force-unlock --even-if-running {}`",
        holder.who, holder.operation, holder.pid, holder.id
    )]
    HolderRunning { holder: Box<LockInfo>, path: String },

    /// The state is locked by someone else.
    #[error("{}", locked_message(holder, path))]
    Locked {
        /// Who holds the lock (boxed to keep `Result<_, StateError>` small).
        holder: Box<LockInfo>,
        /// The lock location (for the local store, the lock file).
        path: String,
    },

    /// `force-unlock` was given an id that is not the id of the current lock.
    #[error(
        "lock ID {given} does not match the lock on {path}: it is held by {} for {} since {} with \
         lock ID {}. Check the ID and run `kdeploy force-unlock {}` only if that run is gone",
        holder.who, holder.operation, holder.created, holder.id, holder.id
    )]
    LockIdMismatch { given: String, holder: Box<LockInfo>, path: String },

    /// There is no lock to release.
    #[error("no lock is held on {path}; there is nothing to unlock")]
    NotLocked { path: String },

    /// This store already holds the lock; locking twice is a bug in the caller.
    #[error(
        "the lock on {path} is already held by this run (lock ID {id}); this is a bug in kdeploy, \
         please report it"
    )]
    AlreadyLocked { path: String, id: String },

    /// No resource matched an address or address prefix.
    #[error(
        "no resource in the state matches `{pattern}`; check the address (e.g. `agent.cam[\"front\"]`, \
         `agent.cam` for all its instances, or `module.site` for a whole module)"
    )]
    NothingMatched { pattern: String },

    /// A move would overwrite an existing resource.
    #[error(
        "cannot move `{from}` to `{to}`: `{to}` already exists in the state; remove it first or \
         choose another destination"
    )]
    DestinationExists { from: String, to: String },

    /// An address given by the user is not usable.
    #[error("invalid address `{address}`: {reason}")]
    InvalidAddress { address: String, reason: String },

    /// A remote backend failed (network, credentials, permissions, an unexpected answer).
    #[error("{backend}: {message}")]
    Backend {
        /// The store, e.g. `S3 state s3://bucket/key`.
        backend: String,
        message: String,
    },

    /// The state changed in the backend since this run read it (a compare-and-swap write was
    /// rejected): this run lost its lock, or someone wrote without locking.
    #[error(
        "refusing to write state to {location}: it was changed by someone else since this run          read it{reason}. This run's lock may have expired and been taken over; nothing was          overwritten. Run the command again so it starts from the current state"
    )]
    WriteConflict { location: String, reason: String },

    /// Encryption of sensitive values: a wrong key, a missing key, a damaged value.
    #[error("{message}")]
    Encryption { message: String },

    /// A journal of an apply's operations is damaged (more than a last record cut short by a
    /// crash, which is ignored).
    #[error(
        "could not read the state journal {location}: {message}. The journal holds the operations \
         of an apply that did not finish (it was killed or crashed). Restore it if you have a \
         copy; otherwise move it away: the state is then read without those operations, and the \
         next plan finds what they changed only by reading the live objects"
    )]
    Journal { location: String, message: String },

    /// The state to be written violates an invariant of the model.
    #[error("refusing to write state: {reason}; this is a bug in kdeploy, please report it")]
    InvalidState { reason: String },
}

fn decode_message(source_name: &str, line: usize, column: usize, message: &str) -> String {
    let position = if line > 0 { format!(" at line {line}, column {column}") } else { String::new() };
    format!(
        "could not read state from {source_name}{position}: {message}. Fix the file by hand or \
         restore it from its backup"
    )
}

fn locked_message(holder: &LockInfo, path: &str) -> String {
    format!(
        "the state is locked by another kdeploy run ({path})\n  \
         Lock ID:   {}\n  \
         Who:       {}\n  \
         Operation: {}\n  \
         Since:     {}\n  \
         Expires:   {}\n  \
         kdeploy:   {}\n  \
         PID:       {}\n\
         Wait for that run to finish, pass `--lock-timeout <DURATION>` to wait for it, or, if that \
         run is gone, release the lock with `kdeploy force-unlock {}`",
        holder.id,
        holder.who,
        holder.operation,
        holder.created,
        if holder.expires.is_empty() { "when that run ends" } else { &holder.expires },
        holder.version,
        holder.pid,
        holder.id
    )
}

impl StateError {
    /// Builds an [`StateError::Io`].
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StateError::Io { action, path: path.into(), source }
    }
}
