//! Lock contention between processes: this test holds the state lock, and the real `kdeploy`
//! binary, started as a child process, must fail at once naming the holder, or wait with
//! --lock-timeout.

use std::process::Command;
use std::time::Duration;

use kdeploy_state::{LocalStore, LockInfo, StateStore};

use crate::support::TestStack;

const STACK: &str = "variable \"greeting\" {\n  default = \"hello\"\n}\n\noutput \"greeting\" {\n  value = var.greeting\n}\n";

fn kdeploy(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kdeploy"));
    c.arg("-C").arg(dir).args(args).env("NO_COLOR", "1");
    c
}

#[test]
fn a_second_run_fails_at_once_naming_the_holder_or_waits_with_lock_timeout() {
    let s = TestStack::new(&[("main.hcl", STACK)]);
    let mut store = LocalStore::new(s.state_path());
    let info = LockInfo::new("apply", "test");
    let id = info.id.clone();
    store.lock(info, Duration::ZERO).unwrap();

    let out = kdeploy(s.path(), &["apply", "--auto-approve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&id), "the holder's lock id is named:\n{err}");
    assert!(err.contains("apply"), "{err}");
    assert!(err.contains("force-unlock"), "{err}");
    assert!(!s.state_path().exists(), "nothing was written");

    // With a timeout the second run waits for the lock to be released.
    let child = kdeploy(s.path(), &["apply", "--auto-approve", "-lock-timeout=20s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    store.unlock().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Apply complete!"));
    let out = kdeploy(s.path(), &["output", "greeting"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"hello\"\n");
}

#[test]
fn force_unlock_needs_the_exact_id() {
    let s = TestStack::new(&[("main.hcl", STACK)]);
    let mut holder = LocalStore::new(s.state_path());
    let info = LockInfo::new("apply", "test");
    let id = info.id.clone();
    holder.lock(info, Duration::ZERO).unwrap();
    let out = kdeploy(s.path(), &["force-unlock", "not-the-id"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&id));
    // The holder is alive (it holds the OS lock): refused, and the lock stays.
    let out = kdeploy(s.path(), &["force-unlock", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is held by a run that is still alive") && err.contains(&format!("kdeploy force-unlock --even-if-running {id}")), "{err}");
    assert_eq!(kdeploy(s.path(), &["plan"]).output().unwrap().status.code(), Some(1), "still locked");
    // Forced harder, with a warning.
    let out = kdeploy(s.path(), &["force-unlock", "--even-if-running", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: breaking the lock of a run that may still be running"));
    let out = kdeploy(s.path(), &["plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    drop(holder);

    // A holder that died leaves its lock file, but nobody holds the OS lock: it locks nothing.
    let dead = LockInfo::new("apply", "test");
    std::fs::write(s.state_path().with_extension("json.lock"), serde_json::to_vec(&dead).unwrap()).unwrap();
    let out = kdeploy(s.path(), &["force-unlock", &dead.id]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is nothing to unlock"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(kdeploy(s.path(), &["plan"]).output().unwrap().status.code(), Some(0));
}
