//! State for kdeploy: the model of what has been deployed, the versioned file format with its
//! upgrade path, the [`StateStore`] abstraction and the local file store with locking, atomic
//! writes and backups.
//!
//! This crate deliberately knows nothing about HCL or providers: resources are stored as plain
//! JSON attributes together with the attribute paths that are sensitive.
//!
//! Sensitive values are stored in the state (later runs need them), so every `Debug`/`Display`
//! implementation in this crate hides attribute and output values.

pub mod error;
pub mod file;
pub mod local;
pub mod lock;
pub mod model;
pub mod store;

pub use error::StateError;
pub use file::{decode, encode};
pub use local::LocalStore;
pub use lock::LockInfo;
pub use model::{
    OutputState, PendingKind, PendingOp, ResourceState, STATE_VERSION, State, address_matches,
};
pub use store::StateStore;

/// The current time as an RFC 3339 timestamp in UTC, e.g. `2024-05-01T12:00:00Z`.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        // Formatting only fails for years outside 0..=9999, which the system clock never yields;
        // fall back to the Unix timestamp rather than failing an operation over a timestamp.
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}
