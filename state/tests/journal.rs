//! The journal of the local store: append, replay by every reader, folding, a last record cut
//! short by a crash, a crash between records, damage, stale journals, encryption of records,
//! and a broken lock.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kdeploy_provider::AttrPath;
use kdeploy_provider::Kind;
use kdeploy_provider::addr::Address;
use kdeploy_state::{
    Append, CryptStore, LocalStore, LockInfo, OutputState, PendingKind, PendingOp, PendingTarget, Record, Recorder, ResourceState, State, StateError, StateKey,
    StateStore, decode,
};
use serde_json::json;

const VERSION: &str = "0.1.0-test";

fn a(addr: &str) -> Address {
    addr.parse().unwrap()
}

fn resource(addr: &str, secret: &str) -> ResourceState {
    ResourceState {
        address: a(addr),
        kind: Kind::Vault,
        type_name: "minio".into(),
        provider: "docker".into(),
        attributes: json!({"root_password": secret, "name": addr}),
        sensitive_paths: vec![AttrPath::attr("root_password")],
        dependencies: vec![],
        fingerprint: None,
        create_before_destroy: false,
    }
}

fn begin(addr: &str, secret: &str) -> (Record, String) {
    let target = PendingTarget {
        kind: Kind::Vault,
        type_name: "minio".into(),
        provider: "docker".into(),
        attributes: json!({"root_password": secret, "name": addr}),
        dependencies: vec![],
    };
    let p = PendingOp::start(&a(addr), PendingKind::Create, Some(target));
    let id = p.id.clone();
    (Record::Begin { pending: p, sensitive_paths: vec![AttrPath::attr("root_password")] }, id)
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { dir: tempfile::tempdir().unwrap() }
    }
    fn store(&self) -> LocalStore {
        LocalStore::new(self.dir.path().join(".kdeploy").join("state.json"))
    }
    fn locked(&self) -> LocalStore {
        let mut s = self.store();
        s.lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap();
        s
    }
    fn state_path(&self) -> std::path::PathBuf {
        self.dir.path().join(".kdeploy/state.json")
    }
    fn journal_path(&self) -> std::path::PathBuf {
        self.dir.path().join(".kdeploy/state.json.journal")
    }
    /// The state file alone, as a reader that knows nothing of the journal sees it.
    fn file_state(&self) -> State {
        decode(&std::fs::read(self.state_path()).unwrap(), "test").unwrap()
    }
    /// What a fresh reader without the lock sees (journal replayed, nothing written).
    fn read(&self) -> State {
        self.store().read().unwrap().unwrap()
    }
}

/// An apply of `n` creates through a recorder: each begins in one group and finishes in the
/// next, as the coordinator does. Returns the state in memory.
fn apply_creates(store: &mut dyn StateStore, state: &mut State, n: usize, finish: bool) -> Recorder {
    let mut rec = Recorder::new();
    rec.persist(state, store).unwrap();
    for i in 0..n {
        let addr = format!("vault.v{i}");
        let (b, id) = begin(&addr, "pw");
        rec.record(state, b).unwrap();
        rec.persist(state, store).unwrap();
        rec.record(state, Record::Upsert { resource: resource(&addr, &format!("secret-{i}")) }).unwrap();
        rec.record(state, Record::Finish { id }).unwrap();
        rec.persist(state, store).unwrap();
    }
    if finish {
        rec.finish(state, store).unwrap();
    }
    rec
}

#[test]
fn appends_go_to_the_journal_and_every_reader_replays_them() {
    let f = Fixture::new();
    let mut store = f.locked();
    let mut state = State::new(VERSION);
    let _rec = apply_creates(&mut store, &mut state, 3, false);
    // The state file is the checkpoint of the first persist; the journal holds the rest.
    assert_eq!(f.file_state().serial, 1);
    assert!(f.file_state().resources.is_empty());
    let lines = std::fs::read_to_string(f.journal_path()).unwrap();
    assert_eq!(lines.lines().count(), 1 + 6, "a header and one line per group: {lines}");
    assert!(lines.lines().next().unwrap().contains("\"base_serial\":1"), "{lines}");
    // A reader without the lock sees everything the journal recorded.
    let read = f.read();
    assert_eq!(read, state);
    assert_eq!(read.serial, 7);
    assert!(read.pending.is_empty());
    assert!(f.journal_path().exists(), "a reader without the lock leaves the journal");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(f.journal_path()).unwrap().permissions().mode() & 0o077, 0, "the journal holds secrets too");
}

#[test]
fn finish_folds_the_journal_into_the_state_file() {
    let f = Fixture::new();
    let mut store = f.locked();
    let mut state = State::new(VERSION);
    apply_creates(&mut store, &mut state, 3, true);
    assert!(!f.journal_path().exists(), "folded");
    assert_eq!(f.file_state(), state, "the state file is the whole state, at the last group's serial");
    assert_eq!(f.file_state().serial, 7);
    // The backup is the state before the run's first write.
    assert!(!f.dir.path().join(".kdeploy/state.json.backup").exists());
    store.unlock().unwrap();
    // A second run: the backup becomes the first run's state.
    let mut store = f.locked();
    let mut state = store.read().unwrap().unwrap();
    let mut rec = Recorder::new();
    rec.record(&mut state, Record::Remove { address: a("vault.v0") }).unwrap();
    rec.persist(&mut state, &mut store).unwrap();
    rec.finish(&state, &mut store).unwrap();
    let backup = decode(&std::fs::read(f.dir.path().join(".kdeploy/state.json.backup")).unwrap(), "b").unwrap();
    assert_eq!(backup.serial, 7);
}

#[test]
fn a_long_journal_is_folded_on_the_way() {
    let f = Fixture::new();
    let mut store = f.locked();
    let mut state = State::new(VERSION);
    let mut rec = Recorder::new();
    rec.persist(&mut state, &mut store).unwrap();
    // Groups much larger than the state file: the journal outgrows 1 MiB quickly.
    let big = "x".repeat(200 * 1024);
    for i in 0..12 {
        rec.record(&mut state, Record::Upsert { resource: resource("vault.big", &format!("{big}{i}")) }).unwrap();
        rec.persist(&mut state, &mut store).unwrap();
    }
    let journal = std::fs::metadata(f.journal_path()).map(|m| m.len()).unwrap_or(0);
    assert!(journal <= 2 << 20, "the journal was folded when it outgrew the state: {journal} bytes");
    assert!(f.file_state().serial > 1, "a fold wrote the state file on the way");
    assert_eq!(f.read(), state);
}

#[test]
fn a_last_record_cut_short_is_ignored() {
    let f = Fixture::new();
    let mut store = f.locked();
    let mut state = State::new(VERSION);
    apply_creates(&mut store, &mut state, 2, false);
    let before = f.read();
    drop(store);
    // A crash in the middle of the next append: half a line, no newline.
    let (b, _) = begin("vault.v9", "pw");
    let line = serde_json::to_string(&json!({"serial": 6, "records": [b]})).unwrap();
    let mut bytes = std::fs::read(f.journal_path()).unwrap();
    bytes.extend_from_slice(&line.as_bytes()[..line.len() / 2]);
    std::fs::write(f.journal_path(), &bytes).unwrap();
    assert_eq!(f.read(), before, "the torn group is left out");
    // Garbage after the last complete line (a filesystem may leave zeros), also with newlines.
    bytes.extend_from_slice(b"\0\0\0\n\0\0{\"serial\n");
    std::fs::write(f.journal_path(), &bytes).unwrap();
    assert_eq!(f.read(), before);
    // The next locked read folds what is complete and removes the journal.
    let mut store = f.locked();
    assert_eq!(store.read().unwrap().unwrap(), before);
    assert!(!f.journal_path().exists());
    assert_eq!(f.file_state(), before);
}

#[test]
fn a_crash_between_groups_keeps_every_complete_group() {
    let f = Fixture::new();
    let mut state = State::new(VERSION);
    {
        let mut store = f.locked();
        let mut rec = Recorder::new();
        rec.persist(&mut state, &mut store).unwrap();
        let (b, id) = begin("vault.a", "pw");
        rec.record(&mut state, b).unwrap();
        rec.persist(&mut state, &mut store).unwrap();
        rec.record(&mut state, Record::Upsert { resource: resource("vault.a", "s") }).unwrap();
        rec.record(&mut state, Record::Finish { id }).unwrap();
        rec.persist(&mut state, &mut store).unwrap();
        let (b, _) = begin("vault.b", "pw");
        rec.record(&mut state, b).unwrap();
        rec.persist(&mut state, &mut store).unwrap();
        // The process dies here: no finish, no fold, the lock dies with it.
    }
    let read = f.read();
    assert_eq!(read, state);
    assert!(read.resource(&a("vault.a")).is_some());
    assert_eq!(read.pending.len(), 1, "the interrupted create is pending");
    assert_eq!(read.pending[0].address, a("vault.b"));
    // The next run under the lock folds it first, keeping the serial.
    let mut store = f.locked();
    assert_eq!(store.read().unwrap().unwrap(), state);
    assert_eq!(f.file_state(), state);
    assert!(!f.journal_path().exists());
    let backup = decode(&std::fs::read(f.dir.path().join(".kdeploy/state.json.backup")).unwrap(), "b").unwrap();
    assert!(backup.serial < state.serial);
    assert!(store.take_warnings().is_empty());
}

#[test]
fn damage_before_a_complete_record_is_an_error_naming_the_journal() {
    let f = Fixture::new();
    let mut store = f.locked();
    let mut state = State::new(VERSION);
    apply_creates(&mut store, &mut state, 2, false);
    drop(store);
    let text = std::fs::read_to_string(f.journal_path()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"serial\": 3, \"records\": [{\"op\": \"nonsense\"}]}";
    std::fs::write(f.journal_path(), lines.join("\n") + "\n").unwrap();
    let err = f.store().read().unwrap_err();
    assert!(matches!(err, StateError::Journal { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("state.json.journal") && msg.contains("line 3") && msg.contains("move it away"), "{msg}");
    // Records that do not follow each other, or that the state cannot hold, are errors too.
    lines[2] = "{\"serial\": 9, \"records\": []}";
    std::fs::write(f.journal_path(), lines.join("\n") + "\n").unwrap();
    let msg = f.store().read().unwrap_err().to_string();
    assert!(msg.contains("group 9 follows serial"), "{msg}");
    std::fs::write(f.journal_path(), "not a header\n").unwrap();
    let msg = f.store().read().unwrap_err().to_string();
    assert!(msg.contains("line 1 is not a journal header"), "{msg}");
    // A header of a newer kdeploy.
    let header = lines[0].replace("\"kdeploy_journal\":1", "\"kdeploy_journal\":99");
    std::fs::write(f.journal_path(), header + "\n").unwrap();
    let msg = f.store().read().unwrap_err().to_string();
    assert!(msg.contains("upgrade kdeploy"), "{msg}");
}

#[test]
fn random_damage_never_panics() {
    let f = Fixture::new();
    let mut store = f.locked();
    let mut state = State::new(VERSION);
    apply_creates(&mut store, &mut state, 2, false);
    drop(store);
    let good = std::fs::read(f.journal_path()).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..300 {
        let mut bytes = good.clone();
        for _ in 0..(1 + round % 4) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % bytes.len();
            match round % 3 {
                0 => bytes[at] = (seed >> 32) as u8,
                1 => bytes.truncate(at),
                _ => bytes.insert(at, b'\n'),
            }
            if bytes.is_empty() {
                break;
            }
        }
        std::fs::write(f.journal_path(), &bytes).unwrap();
        // Either a state (possibly without the damaged tail) or an error naming the journal.
        match f.store().read() {
            Ok(Some(s)) => assert!(s.serial <= state.serial),
            Ok(None) => panic!("the state file is intact"),
            Err(e) => assert!(e.to_string().contains("state.json.journal"), "{e}"),
        }
    }
}

#[test]
fn a_journal_over_another_state_file_is_ignored() {
    let f = Fixture::new();
    let mut store = f.locked();
    let mut state = State::new(VERSION);
    apply_creates(&mut store, &mut state, 2, false);
    drop(store);
    let journal = std::fs::read(f.journal_path()).unwrap();
    // The fold wrote the new state file, then died before removing the journal.
    let mut store = f.locked();
    let folded = store.read().unwrap().unwrap();
    assert!(!f.journal_path().exists());
    std::fs::write(f.journal_path(), &journal).unwrap();
    assert_eq!(f.read(), folded, "the journal follows the older state file: ignored");
    // The same serial but other bytes (the state file restored by hand from elsewhere).
    store.unlock().unwrap();
    let mut edited = f.file_state();
    edited.serial = 1;
    edited.resources.clear();
    edited.outputs.insert("restored".into(), OutputState { value: json!("by hand"), sensitive: false });
    std::fs::write(f.state_path(), kdeploy_state::encode(&edited)).unwrap();
    let header: serde_json::Value = serde_json::from_slice(journal.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(header["base_serial"], 1);
    assert_eq!(f.read(), edited, "the journal names the exact bytes it follows");
    // The next whole write removes the stale journal.
    let mut store = f.locked();
    let mut s = store.read().unwrap().unwrap();
    s.bump_serial().unwrap();
    store.write(&s).unwrap();
    assert!(!f.journal_path().exists());
}

#[test]
fn without_the_lock_every_persist_writes_the_whole_state() {
    let f = Fixture::new();
    let mut store = f.store();
    let mut state = State::new(VERSION);
    apply_creates(&mut store, &mut state, 2, true);
    assert!(!f.journal_path().exists());
    assert_eq!(f.file_state(), state);
    // And a bare append without the lock is refused.
    assert!(store.append(99, &[]).is_err());
}

#[test]
fn records_of_an_encrypted_state_hold_no_cleartext() {
    const SECRET: &str = "correct-horse-battery-staple";
    let f = Fixture::new();
    let key = StateKey::new("a test key of enough entropy 0123456789", "test");
    let mut store = CryptStore::new(Box::new(f.locked()), Some(key.clone()));
    let mut state = State::new(VERSION);
    let mut rec = Recorder::new();
    rec.persist(&mut state, &mut store).unwrap();
    let (b, id) = begin("vault.main", SECRET);
    rec.record(&mut state, b).unwrap();
    rec.persist(&mut state, &mut store).unwrap();
    rec.record(&mut state, Record::Upsert { resource: resource("vault.main", SECRET) }).unwrap();
    rec.record(&mut state, Record::Output { name: "pw".into(), value: Some(OutputState { value: json!(SECRET), sensitive: true }) }).unwrap();
    rec.record(&mut state, Record::Output { name: "url".into(), value: Some(OutputState { value: json!("http://vault"), sensitive: false }) }).unwrap();
    rec.persist(&mut state, &mut store).unwrap();
    let (b, _) = begin("vault.other", SECRET);
    rec.record(&mut state, b).unwrap();
    rec.persist(&mut state, &mut store).unwrap();
    let _ = id;
    let journal = std::fs::read_to_string(f.journal_path()).unwrap();
    assert!(!journal.contains(SECRET), "{journal}");
    assert!(journal.contains("(encrypted)") && journal.contains("http://vault"), "{journal}");
    // With the key, a reader gets the values back; without it, markers.
    let read = CryptStore::new(Box::new(f.store()), Some(key.clone())).read().unwrap().unwrap();
    assert_eq!(read.resource(&a("vault.main")).unwrap().attributes["root_password"], SECRET);
    assert_eq!(read.outputs["pw"].value, SECRET);
    let keyless = CryptStore::new(Box::new(f.store()), None).read().unwrap().unwrap();
    assert!(keyless.resource(&a("vault.main")).unwrap().attributes["root_password"].as_str().unwrap().starts_with("(encrypted)"));
    // Without the key, an encrypted state's journal gains no cleartext either.
    drop(store);
    let mut keyless = CryptStore::new(Box::new(f.locked()), None);
    let mut s = keyless.read().unwrap().unwrap();
    let mut rec = Recorder::new();
    rec.persist(&mut s, &mut keyless).unwrap();
    rec.record(&mut s, Record::Upsert { resource: resource("vault.new", "new-cleartext") }).unwrap();
    let err = rec.persist(&mut s, &mut keyless).unwrap_err();
    assert!(matches!(err, StateError::Encryption { .. }), "{err:?}");
    assert!(!std::fs::read_to_string(f.journal_path()).unwrap_or_default().contains("new-cleartext"));
}

#[test]
fn a_broken_lock_stops_the_old_holder_appending() {
    let f = Fixture::new();
    let mut old = f.store();
    let info = LockInfo::new("apply", VERSION);
    old.lock(info.clone(), Duration::ZERO).unwrap();
    let mut state = State::new(VERSION);
    let mut rec = apply_creates(&mut old, &mut state, 1, false);
    let id = info.id;
    // Someone breaks the lock and edits the state meanwhile.
    let mut other = f.store();
    other.force_unlock_running(&id).unwrap();
    other.lock(LockInfo::new("state rm", VERSION), Duration::ZERO).unwrap();
    let mut theirs = other.read().unwrap().unwrap();
    theirs.remove(&a("vault.v0"));
    theirs.bump_serial().unwrap();
    other.write(&theirs).unwrap();
    other.unlock().unwrap();
    // The old holder's next group is refused: nothing it does later is recorded as durable.
    let (b, _) = begin("vault.late", "pw");
    rec.record(&mut state, b).unwrap();
    let err = rec.persist(&mut state, &mut old).unwrap_err();
    assert!(matches!(err, StateError::ReplacedWhileLocked { .. }), "{err:?}");
    assert_eq!(f.read(), theirs);
}

#[test]
fn an_unlocked_writer_does_not_lose_groups_it_has_not_read() {
    let f = Fixture::new();
    let mut holder = f.locked();
    let mut state = State::new(VERSION);
    let mut rec = apply_creates(&mut holder, &mut state, 1, false);
    // -lock=false: read now...
    let mut unlocked = f.store();
    let mut theirs = unlocked.read().unwrap().unwrap();
    // ... the holder appends another group ...
    let (b, _) = begin("vault.b", "pw");
    rec.record(&mut state, b).unwrap();
    rec.persist(&mut state, &mut holder).unwrap();
    // ... and the unlocked write is refused.
    theirs.bump_serial().unwrap();
    let err = unlocked.write(&theirs).unwrap_err();
    assert!(matches!(err, StateError::ChangedSinceRead { .. }), "{err:?}");
}

#[test]
fn append_outside_a_journal_is_refused_and_groups_follow_each_other() {
    let f = Fixture::new();
    let mut store = f.locked();
    let err = store.append(1, &[]).unwrap_err();
    assert!(err.to_string().contains("no journal is open"), "{err}");
    let mut state = State::new(VERSION);
    state.bump_serial().unwrap();
    assert!(store.checkpoint(&state).unwrap());
    assert!(matches!(store.append(5, &[]), Err(StateError::InvalidState { .. })));
    // After a failed append nothing more is appended until the next checkpoint.
    assert!(store.append(2, &[]).is_err());
    assert!(store.checkpoint(&state).is_err(), "the same serial twice is refused");
    state.bump_serial().unwrap();
    assert!(store.checkpoint(&state).unwrap());
    assert_eq!(store.append(3, &[]).unwrap(), Append::Recorded { fold: false });
}
