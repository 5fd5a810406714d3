//! The journal: what an apply changes in the state, recorded operation by operation, so that
//! recording one operation costs what the operation's records cost, not what the whole state
//! costs.
//!
//! An apply records a pending operation before each provider call and its result after it. A
//! [`Recorder`] turns each such batch into [`Record`]s and makes them durable through the
//! store: the first batch writes the whole state (a *checkpoint*, as [`StateStore::write`]
//! does), later ones are appended to a journal over that checkpoint
//! ([`StateStore::append`], one fsync or one request per batch), and the end of the apply
//! folds the journal into a new whole state (another checkpoint). A store that keeps no
//! journal writes the whole state every time, as before.
//!
//! Each appended batch (a *group*) carries the serial the state has after it: one more than the
//! previous group's, the first one more than the checkpoint's. A reader that finds a journal
//! over the state it read replays its groups in order (see [`replay`]), so everything that
//! reads state sees what the journal recorded; a journal over another state (an older
//! checkpoint, another lineage) is left over from a fold that was interrupted after the new
//! state was written, and is ignored.
//!
//! How each store keeps its journal is described with the store ([`crate::local`],
//! [`crate::s3`], [`crate::kube`]); the records are the same JSON everywhere.

use std::fmt;

use kdeploy_provider::AttrPath;
use kdeploy_provider::addr::Address;
use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::model::{OutputState, PendingOp, ResourceState, State};
use crate::store::{Append, StateStore};

/// The version of the journal format this build writes and reads.
pub const JOURNAL_VERSION: u32 = 1;

/// One change to the state.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Record {
    /// An operation starts: its pending operation is recorded.
    Begin {
        pending: PendingOp,
        /// Paths of the pending target's attributes whose values are sensitive: encrypted in
        /// the journal when a state key is set.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sensitive_paths: Vec<AttrPath>,
    },
    /// An operation ended, whatever its outcome: its pending operation goes.
    Finish { id: String },
    /// A resource is recorded (created, updated or replaced).
    Upsert { resource: ResourceState },
    /// A resource is gone.
    Remove { address: Address },
    /// A root output is set (`Some`) or removed (`None`).
    Output { name: String, value: Option<OutputState> },
}

/// Shows what a record does to which address, never a value.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Begin { pending, .. } => write!(f, "Begin({} {} {})", pending.operation, pending.address, pending.id),
            Record::Finish { id } => write!(f, "Finish({id})"),
            Record::Upsert { resource } => write!(f, "Upsert({})", resource.address),
            Record::Remove { address } => write!(f, "Remove({address})"),
            Record::Output { name, value } => write!(f, "Output({name}, {})", if value.is_some() { "set" } else { "removed" }),
        }
    }
}

impl Record {
    /// Applies the record to `state`. Fails (saying why) on a record a writer never produces: a
    /// pending operation without an id, a resource with attributes that are not an object or
    /// not known.
    pub fn apply(&self, state: &mut State) -> Result<(), String> {
        match self {
            Record::Begin { pending, .. } => {
                if pending.id.is_empty() {
                    return Err("a pending operation without an id".to_string());
                }
                if !state.pending.iter().any(|p| p.id == pending.id) {
                    state.pending.push(pending.clone());
                }
            }
            Record::Finish { id } => state.finish_pending(id),
            Record::Upsert { resource } => {
                resource.check()?;
                state.upsert(resource.clone());
            }
            Record::Remove { address } => {
                state.remove(address);
            }
            Record::Output { name, value: Some(value) } => {
                value.check(name)?;
                state.outputs.insert(name.clone(), value.clone());
            }
            Record::Output { name, value: None } => {
                state.outputs.remove(name);
            }
        }
        Ok(())
    }
}

/// One appended batch: the records made durable together, and the serial of the state after
/// them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub serial: u64,
    pub records: Vec<Record>,
}

/// Replays `groups` over `state`, the state they were appended to: each group's serial must be
/// one more than the previous one's (the first one more than the state's), and each record must
/// apply. The state ends with the last group's serial. Returns how many groups were replayed;
/// the error says what is wrong (the caller names the journal).
pub fn replay(state: &mut State, groups: impl IntoIterator<Item = Group>) -> Result<usize, String> {
    let mut count = 0usize;
    for group in groups {
        let expected = state.serial.checked_add(1).ok_or("the serial of a group is beyond the largest serial")?;
        if group.serial != expected {
            return Err(format!("group {} follows serial {}: groups must follow each other one serial at a time", group.serial, state.serial));
        }
        for (i, record) in group.records.iter().enumerate() {
            record.apply(state).map_err(|e| format!("record {} of group {}: {e}", i.saturating_add(1), group.serial))?;
        }
        state.serial = group.serial;
        count = count.saturating_add(1);
    }
    Ok(count)
}

/// Checks that a group of serial `serial` may follow serial `last` (an append out of order is
/// a bug in the caller).
pub(crate) fn follows(last: u64, serial: u64) -> Result<(), StateError> {
    if last.checked_add(1) == Some(serial) {
        Ok(())
    } else {
        Err(StateError::InvalidState { reason: format!("a journal group of serial {serial} cannot follow serial {last}") })
    }
}

/// The hex SHA-256 of `bytes`: how a journal names the exact state it was appended to.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Encodes one group as a line of JSON (what the local journal appends, and the body of the
/// remote stores' journal entries without the newline).
pub(crate) fn encode_group(serial: u64, records: &[Record]) -> Result<Vec<u8>, StateError> {
    #[derive(Serialize)]
    struct GroupRef<'a> {
        serial: u64,
        records: &'a [Record],
    }
    let mut line = serde_json::to_vec(&GroupRef { serial, records })
        .map_err(|e| StateError::InvalidState { reason: format!("a journal group of serial {serial} cannot be encoded: {e}") })?;
    line.push(b'\n');
    Ok(line)
}

/// The first line of a local journal file: what it was appended to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FileHeader {
    /// [`JOURNAL_VERSION`].
    pub kdeploy_journal: u32,
    pub lineage: String,
    /// The serial of the state file the groups follow.
    pub base_serial: u64,
    /// The SHA-256 of that state file's bytes.
    pub base_sha256: String,
}

impl FileHeader {
    pub(crate) fn line(&self) -> Result<Vec<u8>, StateError> {
        let mut line = serde_json::to_vec(self).map_err(|e| StateError::InvalidState { reason: format!("the journal header cannot be encoded: {e}") })?;
        line.push(b'\n');
        Ok(line)
    }
}

/// A local journal file, parsed.
#[derive(Debug)]
pub(crate) struct FileJournal {
    pub header: FileHeader,
    pub groups: Vec<Group>,
}

/// Parses a local journal file (`location` names it in errors). `None` when not even the
/// header is complete. A last group cut short by a crash (or garbage after the last complete
/// group, with no complete group after it) is left out: nothing acted on it, since the records
/// of a group are acted on only once the whole group is durable. Damage with complete groups
/// after it is an error, as is a header of a newer format.
pub(crate) fn parse_file(bytes: &[u8], location: &str) -> Result<Option<FileJournal>, StateError> {
    let err = |message: String| StateError::Journal { location: location.to_string(), message };
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    // What follows the last newline was being written when the process died (empty when the
    // file ends with a newline, as every complete write does): left out.
    lines.pop();
    let mut lines = lines.into_iter();
    let Some(first) = lines.next() else { return Ok(None) };
    let header: FileHeader = serde_json::from_slice(first).map_err(|e| err(format!("line 1 is not a journal header ({e})")))?;
    if header.kdeploy_journal > JOURNAL_VERSION {
        return Err(err(format!(
            "it was written by a newer kdeploy (journal format {}, this build reads up to {JOURNAL_VERSION}); upgrade kdeploy",
            header.kdeploy_journal
        )));
    }
    let rest: Vec<&[u8]> = lines.collect();
    let mut groups = Vec::with_capacity(rest.len());
    for (i, line) in rest.iter().enumerate() {
        match serde_json::from_slice::<Group>(line) {
            Ok(g) => groups.push(g),
            Err(e) => {
                let after = rest.get(i.saturating_add(1)..).unwrap_or_default();
                if after.iter().all(|l| serde_json::from_slice::<Group>(l).is_err()) {
                    break;
                }
                return Err(err(format!("line {} is damaged ({e}), and complete records follow it", i.saturating_add(2))));
            }
        }
    }
    Ok(Some(FileJournal { header, groups }))
}

/// One entry of a remote store's journal (an S3 object, a Kubernetes Secret): one group, with
/// what it follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// [`JOURNAL_VERSION`].
    pub kdeploy_journal: u32,
    pub lineage: String,
    /// The serial of the stored state the journal follows.
    pub base_serial: u64,
    /// The version of that stored state: its S3 ETag, its Secret's resourceVersion.
    pub base: String,
    pub serial: u64,
    pub records: Vec<Record>,
}

/// Encodes an [`Entry`] (borrowing its records).
pub(crate) fn encode_entry(lineage: &str, base_serial: u64, base: &str, serial: u64, records: &[Record]) -> Result<Vec<u8>, StateError> {
    #[derive(Serialize)]
    struct EntryRef<'a> {
        kdeploy_journal: u32,
        lineage: &'a str,
        base_serial: u64,
        base: &'a str,
        serial: u64,
        records: &'a [Record],
    }
    serde_json::to_vec(&EntryRef { kdeploy_journal: JOURNAL_VERSION, lineage, base_serial, base, serial, records })
        .map_err(|e| StateError::InvalidState { reason: format!("a journal entry of serial {serial} cannot be encoded: {e}") })
}

/// Parses an [`Entry`]; the error says what is wrong (the caller names the entry).
pub(crate) fn parse_entry(bytes: &[u8]) -> Result<Entry, String> {
    let entry: Entry = serde_json::from_slice(bytes).map_err(|e| format!("it is not a journal entry ({e})"))?;
    if entry.kdeploy_journal > JOURNAL_VERSION {
        return Err(format!(
            "it was written by a newer kdeploy (journal format {}, this build reads up to {JOURNAL_VERSION}); upgrade kdeploy",
            entry.kdeploy_journal
        ));
    }
    Ok(entry)
}

/// Whether a remote journal holding `count` entries of `bytes` in all, over a state of
/// `state_len` bytes, is due to be folded: once it is larger than the state (so that the bytes
/// written stay proportional to the work) or has many entries (each costs a request to read).
pub(crate) fn remote_fold_due(bytes: u64, count: u64, state_len: u64) -> bool {
    bytes > state_len.max(1 << 20) || count >= 1000
}

/// Where a remote store's journal (S3 objects, Kubernetes Secrets) stands: the same bookkeeping
/// for both, so that they open, append and fold alike.
#[derive(Debug, Default)]
pub(crate) enum RemoteJournal {
    #[default]
    Off,
    /// Entries over a checkpoint.
    Active(OpenJournal),
    /// An append failed: nothing more is appended until the next checkpoint.
    Broken,
}

/// A journal over the checkpoint `base` (the state object's ETag, the head Secret's
/// resourceVersion) written at `base_serial`.
#[derive(Debug)]
pub(crate) struct OpenJournal {
    lineage: String,
    pub base_serial: u64,
    pub base: String,
    last_serial: u64,
    bytes: u64,
    count: u64,
    state_len: u64,
}

impl RemoteJournal {
    /// A journal over the checkpoint of `state` just written (`state_len` bytes) as `base`.
    pub fn open(state: &State, base: String, state_len: usize) -> RemoteJournal {
        RemoteJournal::Active(OpenJournal {
            lineage: state.lineage.clone(),
            base_serial: state.serial,
            base,
            last_serial: state.serial,
            bytes: 0,
            count: 0,
            state_len: u64::try_from(state_len).unwrap_or(u64::MAX),
        })
    }

    /// Whether writing `state` whole now folds entries of this journal.
    pub fn folded_by(&self, state: &State) -> bool {
        matches!(self, RemoteJournal::Active(j) if j.count > 0 && j.last_serial == state.serial)
    }

    /// The open journal, for an entry at `serial`; the journal stays broken until the entry is
    /// stored ([`OpenJournal::stored`]) or declined ([`OpenJournal::declined`]).
    pub fn take(&mut self, serial: u64, backend: &str) -> Result<OpenJournal, StateError> {
        let RemoteJournal::Active(open) = std::mem::replace(self, RemoteJournal::Broken) else {
            return Err(StateError::Backend {
                backend: backend.to_string(),
                message: "no journal is open (the last append failed, or nothing was checkpointed); this is a bug in kdeploy, please report it".into(),
            });
        };
        follows(open.last_serial, serial)?;
        Ok(open)
    }
}

impl OpenJournal {
    /// The entry at `serial` holding `records`.
    pub fn entry(&self, serial: u64, records: &[Record]) -> Result<Vec<u8>, StateError> {
        encode_entry(&self.lineage, self.base_serial, &self.base, serial, records)
    }

    /// The journal once the entry at `serial` (`len` bytes) is stored, and whether a fold is due.
    pub fn stored(mut self, serial: u64, len: usize) -> (RemoteJournal, Append) {
        self.bytes = self.bytes.saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        self.count = self.count.saturating_add(1);
        self.last_serial = serial;
        let fold = remote_fold_due(self.bytes, self.count, self.state_len);
        (RemoteJournal::Active(self), Append::Recorded { fold })
    }

    /// The journal unchanged, when the store could not hold the entry (the caller writes the
    /// whole state instead).
    pub fn declined(self) -> (RemoteJournal, Append) {
        (RemoteJournal::Active(self), Append::Declined)
    }
}

/// Records the changes of an apply in a store. The caller owns the state and changes it only
/// through [`Recorder::record`] between two [`Recorder::persist`] calls; changes made before
/// the first `persist` need no records, since the first `persist` writes the whole state.
#[derive(Debug, Default)]
pub struct Recorder {
    records: Vec<Record>,
    mode: Mode,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Mode {
    /// Nothing persisted yet: the next persist writes the whole state.
    #[default]
    Fresh,
    /// The store keeps no journal (or cannot now, e.g. without the lock): every persist writes
    /// the whole state.
    Whole,
    /// A journal over the last checkpoint; `appended` once a group is in it.
    Journal { appended: bool },
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Applies `record` to `state` now and keeps it for the next [`Recorder::persist`]. A record
    /// that does not apply (see [`Record::apply`]) changes nothing and is not kept.
    pub fn record(&mut self, state: &mut State, record: Record) -> Result<(), StateError> {
        record.apply(state).map_err(|reason| StateError::InvalidState { reason })?;
        self.records.push(record);
        Ok(())
    }

    /// Makes everything recorded since the last call durable: bumps the serial, then appends the
    /// records as one group (one fsync or request), or writes the whole state when the store
    /// keeps no journal, when nothing was persisted yet, or when the store asks for it.
    pub fn persist(&mut self, state: &mut State, store: &mut dyn StateStore) -> Result<(), StateError> {
        state.bump_serial()?;
        let records = std::mem::take(&mut self.records);
        match self.mode {
            Mode::Journal { .. } => match store.append(state.serial, &records)? {
                Append::Recorded { fold: false } => {
                    self.mode = Mode::Journal { appended: true };
                    Ok(())
                }
                Append::Recorded { fold: true } | Append::Declined => self.checkpoint(state, store),
            },
            Mode::Fresh | Mode::Whole => self.checkpoint(state, store),
        }
    }

    /// Folds the journal into a whole state, at the end of an apply (nothing to do when nothing
    /// was appended since the last checkpoint).
    pub fn finish(&mut self, state: &State, store: &mut dyn StateStore) -> Result<(), StateError> {
        if self.mode == (Mode::Journal { appended: true }) {
            self.checkpoint(state, store)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, state: &State, store: &mut dyn StateStore) -> Result<(), StateError> {
        let journals = store.checkpoint(state)?;
        self.mode = if journals { Mode::Journal { appended: false } } else { Mode::Whole };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::res;
    use crate::model::{PendingKind, PendingTarget};
    use serde_json::json;

    fn begin(addr: &str) -> (Record, String) {
        let target = PendingTarget {
            kind: kdeploy_provider::Kind::Agent,
            type_name: "docker".into(),
            provider: "docker".into(),
            attributes: json!({}),
            dependencies: vec![],
        };
        let p = PendingOp::start(&addr.parse().unwrap(), PendingKind::Create, Some(target));
        let id = p.id.clone();
        (Record::Begin { pending: p, sensitive_paths: vec![] }, id)
    }

    #[test]
    fn records_apply_and_round_trip_as_json() {
        let mut s = State::new("t");
        let (b, id) = begin("agent.a");
        let records = vec![
            b,
            Record::Upsert { resource: res("agent.a") },
            Record::Finish { id: id.clone() },
            Record::Output { name: "url".into(), value: Some(OutputState { value: json!("http://x"), sensitive: false }) },
            Record::Upsert { resource: res("agent.b") },
            Record::Remove { address: "agent.b".parse().unwrap() },
        ];
        let json = serde_json::to_string(&Group { serial: 1, records: records.clone() }).unwrap();
        assert!(json.contains("\"op\":\"begin\"") && json.contains("\"op\":\"finish\""), "{json}");
        let back: Group = serde_json::from_str(&json).unwrap();
        assert_eq!(back.records, records);
        assert_eq!(replay(&mut s, [back]).unwrap(), 1);
        assert_eq!(s.serial, 1);
        assert!(s.pending.is_empty());
        assert_eq!(s.resources.iter().map(|r| r.address.to_string()).collect::<Vec<_>>(), ["agent.a"]);
        assert_eq!(s.outputs["url"].value, json!("http://x"));
    }

    #[test]
    fn replay_refuses_gaps_and_bad_records() {
        let mut s = State::new("t");
        s.serial = 4;
        let err = replay(&mut s.clone(), [Group { serial: 6, records: vec![] }]).unwrap_err();
        assert!(err.contains("group 6 follows serial 4"), "{err}");
        let mut bad = res("agent.a");
        bad.attributes = json!({"x": {"$unknown": "y"}});
        let err = replay(&mut s, [Group { serial: 5, records: vec![Record::Upsert { resource: bad }] }]).unwrap_err();
        assert!(err.contains("record 1 of group 5") && err.contains("unknown"), "{err}");
        let mut idless = begin("agent.a").0;
        if let Record::Begin { pending, .. } = &mut idless {
            pending.id.clear();
        }
        assert!(idless.apply(&mut s).is_err());
    }

    #[test]
    fn debug_shows_no_values() {
        let mut r = res("vault.main");
        r.attributes = json!({"password": "hunter2"});
        let text = format!(
            "{:?}",
            [Record::Upsert { resource: r }, Record::Output { name: "pw".into(), value: Some(OutputState { value: json!("out-secret"), sensitive: true }) }]
        );
        assert!(!text.contains("hunter2") && !text.contains("out-secret"), "{text}");
    }
}
