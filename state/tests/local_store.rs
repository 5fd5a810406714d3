//! Behaviour of the local file store: format checks on write, atomicity, backups and locking.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kdeploy_state::{LocalStore, LockInfo, ResourceState, State, StateError, StateStore, decode};
use serde_json::json;

const VERSION: &str = "0.1.0-test";

fn resource(addr: &str, secret: &str) -> ResourceState {
    ResourceState {
        address: addr.parse().unwrap(),
        kind: kdeploy_provider::Kind::Vault,
        type_name: "minio".into(),
        provider: "docker".into(),
        attributes: json!({"root_password": secret}),
        sensitive_paths: vec![kdeploy_provider::AttrPath::attr("root_password")],
        dependencies: vec![],
        fingerprint: None,
        create_before_destroy: false,
    }
}

fn store_in(dir: &tempfile::TempDir) -> LocalStore {
    LocalStore::new(dir.path().join(".kdeploy").join("state.json"))
}

#[test]
fn paths_and_describe() {
    let store = LocalStore::new("/x/.kdeploy/state.json");
    assert_eq!(store.path(), std::path::Path::new("/x/.kdeploy/state.json"));
    assert_eq!(store.backup_path(), std::path::Path::new("/x/.kdeploy/state.json.backup"));
    assert_eq!(store.lock_path(), std::path::Path::new("/x/.kdeploy/state.json.lock"));
    assert_eq!(store.describe(), "local state file /x/.kdeploy/state.json");
}

#[test]
fn read_missing_then_write_creates_directory_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    assert!(store.read().unwrap().is_none());
    let mut state = State::new(VERSION);
    state.upsert(resource("vault.main", "pw1"));
    state.bump_serial().unwrap();
    store.write(&state).unwrap();
    assert_eq!(store.last_seen(), Some((state.lineage.as_str(), 1)));

    let mut other = store_in(&dir);
    assert_eq!(other.read().unwrap().unwrap(), state);
    assert!(!store.backup_path().exists(), "no backup without a previous state");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(store.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "state holds secrets and must not be group/world readable");
}

#[test]
fn backup_contains_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    let mut state = State::new(VERSION);
    state.upsert(resource("vault.main", "first"));
    state.bump_serial().unwrap();
    store.write(&state).unwrap();
    let first = state.clone();

    state.upsert(resource("vault.main", "second"));
    state.bump_serial().unwrap();
    store.write(&state).unwrap();

    let backup = std::fs::read(store.backup_path()).unwrap();
    assert_eq!(decode(&backup, "backup").unwrap(), first);
    assert_eq!(store_in(&dir).read().unwrap().unwrap(), state);
    // No temporary files are left behind.
    let names: Vec<String> =
        std::fs::read_dir(store.path().parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains(".tmp.")), "{names:?}");
}

#[test]
fn lineage_mismatch_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::new(VERSION);
    state.bump_serial().unwrap();
    store_in(&dir).write(&state).unwrap();

    let mut foreign = State::new(VERSION);
    foreign.serial = 10;
    let err = store_in(&dir).write(&foreign).unwrap_err();
    assert!(matches!(err, StateError::LineageMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&state.lineage) && msg.contains(&foreign.lineage), "{msg}");
    assert!(msg.contains("refusing to overwrite"), "{msg}");
    assert!(msg.contains("state.json"), "{msg}");
    assert_eq!(store_in(&dir).read().unwrap().unwrap(), state);
}

#[test]
fn serial_must_strictly_increase() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    let mut state = State::new(VERSION);
    state.serial = 5;
    store.write(&state).unwrap();

    for serial in [5, 4] {
        let mut stale = state.clone();
        stale.serial = serial;
        let err = store_in(&dir).write(&stale).unwrap_err();
        match &err {
            StateError::SerialNotIncreasing { existing, attempted, .. } => {
                assert_eq!((*existing, *attempted), (5, serial));
            }
            other => panic!("expected SerialNotIncreasing, got {other:?}"),
        }
        assert!(err.to_string().contains("must strictly increase"), "{err}");
    }
    state.bump_serial().unwrap();
    store.write(&state).unwrap();
}

#[test]
fn write_detects_change_since_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::new(VERSION);
    state.bump_serial().unwrap();
    store_in(&dir).write(&state).unwrap();

    let mut a = store_in(&dir);
    let mut a_state = a.read().unwrap().unwrap();
    // Someone else writes serial 2 and 3 meanwhile.
    let mut b = store_in(&dir);
    let mut b_state = b.read().unwrap().unwrap();
    b_state.serial = 3;
    b.write(&b_state).unwrap();

    a_state.serial = 4;
    let err = a.write(&a_state).unwrap_err();
    assert!(matches!(err, StateError::ChangedSinceRead { read_serial: 1, disk_serial: 3, .. }), "{err:?}");
}

#[test]
fn newer_version_on_disk_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
    std::fs::write(store.path(), br#"{"version": 7, "serial": 1, "lineage": "x"}"#).unwrap();

    let err = store.read().unwrap_err();
    assert!(matches!(err, StateError::NewerVersion { found: 7, .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade kdeploy"));

    let mut state = State::new(VERSION);
    state.serial = 100;
    let err = store.write(&state).unwrap_err();
    assert!(matches!(err, StateError::NewerVersion { .. }), "{err:?}");
}

#[test]
fn stray_temp_file_from_a_crash_leaves_old_state_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    let mut state = State::new(VERSION);
    state.upsert(resource("vault.main", "old"));
    state.bump_serial().unwrap();
    store.write(&state).unwrap();

    // A crash after writing the temporary file but before the rename leaves a (possibly
    // truncated) temporary file next to the intact state.
    let stray = store.path().with_file_name("state.json.tmp.0123456789abcdef");
    std::fs::write(&stray, b"{\"version\": 1, \"serial\": 2, \"lin").unwrap();

    let mut fresh = store_in(&dir);
    let read = fresh.read().unwrap().unwrap();
    assert_eq!(read, state);

    // The next write still works and ignores the stray file.
    let mut next = read;
    next.upsert(resource("vault.main", "new"));
    next.bump_serial().unwrap();
    fresh.write(&next).unwrap();
    assert_eq!(store_in(&dir).read().unwrap().unwrap(), next);
}

#[test]
fn invalid_state_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::new(VERSION);
    let mut r = resource("vault.main", "x");
    r.attributes = json!({"endpoint": {"$unknown": "vault.main.endpoint"}});
    state.upsert(r);
    state.bump_serial().unwrap();
    let mut store = store_in(&dir);
    assert!(matches!(store.write(&state), Err(StateError::InvalidState { .. })));
    assert!(!store.path().exists());
}

#[test]
fn corrupt_state_names_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_in(&dir);
    std::fs::create_dir_all(store.path().parent().unwrap()).unwrap();
    std::fs::write(store.path(), b"{\n  \"version\": 1,\n  oops\n}").unwrap();
    let err = store.read().unwrap_err();
    assert!(matches!(err, StateError::Decode { line: 3, .. }), "{err:?}");
    assert!(err.to_string().contains(&store.path().display().to_string()));
}

#[test]
fn lock_contention_fails_at_once_naming_holder() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = store_in(&dir);
    let info = LockInfo::new("apply", VERSION);
    first.lock(info.clone(), Duration::ZERO).unwrap();
    assert!(first.lock_path().exists());

    let mut second = store_in(&dir);
    let started = Instant::now();
    let err = second.lock(LockInfo::new("plan", VERSION), Duration::ZERO).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(500));
    match &err {
        StateError::Locked { holder, path } => {
            assert_eq!(holder.id, info.id);
            assert_eq!(holder.operation, "apply");
            assert_eq!(holder.path, first.path().display().to_string());
            assert!(path.ends_with("state.json.lock"));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let msg = err.to_string();
    for needle in [info.id.as_str(), "apply", info.who.as_str(), info.created.as_str(), "--lock-timeout", "kdeploy force-unlock"] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert_eq!(second.lock_info().unwrap().unwrap().id, info.id);

    // Locking twice from the same store is refused.
    assert!(matches!(first.lock(LockInfo::new("apply", VERSION), Duration::ZERO), Err(StateError::AlreadyLocked { .. })));

    first.unlock().unwrap();
    assert!(!first.lock_path().exists());
    assert!(matches!(first.unlock(), Err(StateError::NotLocked { .. })));
    assert!(second.lock_info().unwrap().is_none());
    second.lock(LockInfo::new("plan", VERSION), Duration::ZERO).unwrap();
}

#[test]
fn lock_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut first = store_in(&dir);
        first.lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap();
    }
    let mut second = store_in(&dir);
    second.lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap();
}

#[test]
fn lock_timeout_waits_for_release() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = store_in(&dir);
    first.lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        first.unlock().unwrap();
    });

    let mut second = store_in(&dir);
    let started = Instant::now();
    second.lock(LockInfo::new("plan", VERSION), Duration::from_secs(10)).unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "acquired after {waited:?}, before the release");
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
    releaser.join().unwrap();
    assert_eq!(second.lock_info().unwrap().unwrap().operation, "plan");
}

#[test]
fn lock_timeout_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = store_in(&dir);
    first.lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap();
    let mut second = store_in(&dir);
    let started = Instant::now();
    let err = second.lock(LockInfo::new("plan", VERSION), Duration::from_millis(350)).unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(350) && waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn force_unlock_needs_the_exact_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut holder = store_in(&dir);
    let info = LockInfo::new("apply", VERSION);
    holder.lock(info.clone(), Duration::ZERO).unwrap();

    let mut admin = store_in(&dir);
    let err = admin.force_unlock("not-the-id").unwrap_err();
    match &err {
        StateError::LockIdMismatch { given, holder, .. } => {
            assert_eq!(given, "not-the-id");
            assert_eq!(holder.id, info.id);
        }
        other => panic!("expected LockIdMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains(&info.id), "{err}");

    // The holder is alive (it holds the OS lock): refused, unless forced harder.
    let err = admin.force_unlock(&info.id).unwrap_err();
    assert!(matches!(&err, StateError::HolderRunning { holder, .. } if holder.id == info.id), "{err:?}");
    assert!(admin.lock_path().exists());
    admin.force_unlock_running(&info.id).unwrap();
    assert!(!admin.lock_path().exists());

    // The lock is free for others even though the old holder is alive.
    let mut next = store_in(&dir);
    let next_info = LockInfo::new("plan", VERSION);
    next.lock(next_info.clone(), Duration::ZERO).unwrap();

    // The old holder's unlock must not remove the new holder's lock file.
    holder.unlock().unwrap();
    let err = store_in(&dir).lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap_err();
    assert!(matches!(&err, StateError::Locked { holder, .. } if holder.id == next_info.id), "{err:?}");

    next.unlock().unwrap();
    let err = admin.force_unlock(&next_info.id).unwrap_err();
    assert!(matches!(err, StateError::NotLocked { .. }), "{err:?}");
    assert!(err.to_string().contains("no lock is held"));
}

/// Environment variable that turns [`child_lock_holder`] into a lock-holding helper process.
const CHILD_ENV: &str = "KDEPLOY_STATE_TEST_LOCK_HOLDER";

/// Helper run in a child process by [`lock_held_by_other_process`]: takes the lock on the state
/// file named by [`CHILD_ENV`], reports its id on stdout and holds the lock until killed. Without
/// the variable it does nothing.
#[test]
fn child_lock_holder() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut store = LocalStore::new(path);
    let info = LockInfo::new("apply", VERSION);
    store.lock(info.clone(), Duration::ZERO).unwrap();
    // The harness prints `test child_lock_holder ... ` first, so the marker is not at the
    // start of the line.
    println!("LOCKED {}", info.id);
    // Hold until killed; exit on our own eventually so a failed parent leaves no orphan.
    std::thread::sleep(Duration::from_secs(60));
}

/// Kills the child process when dropped, so a failing assertion leaves no orphan.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn lock_held_by_other_process() {
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join(".kdeploy").join("state.json");
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_lock_holder", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &state_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let child_pid = child.0.id();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let id = loop {
        match lines.next() {
            Some(line) => {
                if let Some((_, id)) = line.unwrap().split_once("LOCKED ") {
                    break id.trim().to_string();
                }
            }
            None => {
                let status = child.0.wait().unwrap();
                panic!("lock holder exited without locking: {status}");
            }
        }
    };

    let mut store = LocalStore::new(&state_path);
    let result = store.lock(LockInfo::new("plan", VERSION), Duration::ZERO);
    let info = store.lock_info();
    // Killing the holder releases its OS lock without any cleanup of the lock file.
    drop(child);

    match result {
        Err(StateError::Locked { holder, .. }) => {
            assert_eq!(holder.id, id);
            assert_eq!(holder.operation, "apply");
            assert_eq!(holder.pid, child_pid);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(info.unwrap().unwrap().id, id);

    assert!(store.lock_path().exists(), "the killed holder leaves its lock file behind");
    assert!(store.lock_info().unwrap().is_none(), "a dead holder's lock file is not a lock");
    store.lock(LockInfo::new("plan", VERSION), Duration::from_secs(5)).unwrap();
    assert_eq!(store.lock_info().unwrap().unwrap().operation, "plan");
}
