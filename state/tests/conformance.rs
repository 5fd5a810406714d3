//! The state backend conformance suite: the same checks against every backend this build has.
//!
//! - local: a temporary directory;
//! - s3: a `moto_server` started on a free port for each test and stopped after it (skipped
//!   with a printed reason when moto_server is not installed, unless CI is set);
//! - kubernetes: the in-process Kubernetes test API server.
//!
//! Cross-process checks re-run this test binary as a child (`conformance_child`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kdeploy_provider::AttrPath;
use kdeploy_state::{
    CryptStore, LockInfo, OutputState, PendingKind, PendingOp, Record, Recorder, ResourceState, State, StateError, StateKey, StateStore, open_backend,
};
use serde_json::json;

const VERSION: &str = "0.1.0-test";
/// Lease of the shared backends in these tests: short, so that expiry can be observed.
const TTL_SECS: u64 = 2;

/// A running backend and how to open stores on it.
struct Backend {
    kind: &'static str,
    config: BTreeMap<String, String>,
    dir: tempfile::TempDir,
    moto: Option<Moto>,
    #[cfg(feature = "kubernetes")]
    kube: Option<kdeploy_kube_testserver::TestServer>,
}

impl Backend {
    fn store(&self) -> Box<dyn StateStore> {
        open_backend(self.kind, &self.config, self.dir.path()).unwrap()
    }

    /// Stops the backend's server (a network failure for the stores using it).
    fn stop_server(&mut self) {
        if let Some(m) = self.moto.take() {
            drop(m);
        }
        #[cfg(feature = "kubernetes")]
        if let Some(k) = self.kube.take() {
            drop(k);
        }
        if self.kind == "local" {
            // Replace the state directory by a file: every write fails.
            let d = self.dir.path().join(".kdeploy");
            std::fs::remove_dir_all(&d).unwrap();
            std::fs::write(&d, "not a directory").unwrap();
        }
    }
}

fn local() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    Some(Backend {
        kind: "local",
        config: BTreeMap::new(),
        dir,
        moto: None,
        #[cfg(feature = "kubernetes")]
        kube: None,
    })
}

/// A moto_server process, killed when dropped.
struct Moto {
    child: std::process::Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_available() -> bool {
    Command::new("moto_server").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

#[allow(dead_code)]
fn s3() -> Option<Backend> {
    if !moto_available() {
        if std::env::var_os("CI").is_some() {
            panic!("moto_server is not installed, and CI is set: install it with pip install 'moto[server]'");
        }
        eprintln!("SKIPPED: moto_server is not installed (pip install 'moto[server]'); the S3 backend is not checked");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto { child };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Create the bucket (moto accepts unsigned requests) once the server answers.
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let req = format!("PUT /kdeploy-state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
                    break;
                }
            }
        }
        assert!(Instant::now() < deadline, "moto_server did not start on port {port}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let config: BTreeMap<String, String> = [
        ("bucket", "kdeploy-state".to_string()),
        ("key", "stacks/edge.json".to_string()),
        ("region", "us-east-1".to_string()),
        ("endpoint", format!("http://127.0.0.1:{port}")),
        ("access_key", "test".to_string()),
        ("secret_key", "test".to_string()),
        ("lock_ttl", TTL_SECS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Some(Backend {
        kind: "s3",
        config,
        dir: tempfile::tempdir().unwrap(),
        moto: Some(moto),
        #[cfg(feature = "kubernetes")]
        kube: None,
    })
}

#[cfg(feature = "kubernetes")]
fn kube() -> Option<Backend> {
    let server = kdeploy_kube_testserver::TestServer::start(kdeploy_kube_testserver::Options::default());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.write_kubeconfig(dir.path(), "test");
    let config: BTreeMap<String, String> = [
        ("namespace", "default".to_string()),
        ("secret_suffix", "edge".to_string()),
        ("kubeconfig", kubeconfig.display().to_string()),
        ("context", "test".to_string()),
        ("lock_ttl", TTL_SECS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Some(Backend { kind: "kubernetes", config, dir, moto: None, kube: Some(server) })
}

fn resource(addr: &str, secret: &str) -> ResourceState {
    ResourceState {
        address: addr.parse().unwrap(),
        kind: kdeploy_provider::Kind::Vault,
        type_name: "minio".into(),
        provider: "docker".into(),
        attributes: json!({"root_password": secret, "name": addr}),
        sensitive_paths: vec![AttrPath::attr("root_password")],
        dependencies: vec![],
        fingerprint: None,
        create_before_destroy: false,
    }
}

fn shared(b: &Backend) -> bool {
    b.kind != "local"
}

// ---------------------------------------------------------------------------------------------
// The checks, each run against every backend.

fn check_round_trip_and_serials(b: Backend) {
    let mut store = b.store();
    assert!(store.read().unwrap().is_none());
    let mut s = State::new(VERSION);
    s.upsert(resource("vault.main", "pw"));
    s.bump_serial().unwrap();
    store.write(&s).unwrap();
    s.bump_serial().unwrap();
    store.write(&s).unwrap();
    let mut other = b.store();
    assert_eq!(other.read().unwrap().unwrap(), s);
    // A stale serial is refused.
    let mut stale = s.clone();
    stale.serial = 1;
    assert!(matches!(other.write(&stale), Err(StateError::SerialNotIncreasing { .. })), "stale serial accepted");
}

fn check_lock_basics(b: Backend) {
    let mut a = b.store();
    let info = LockInfo::new("apply", VERSION);
    a.lock(info.clone(), Duration::ZERO).unwrap();
    let mut other = b.store();
    match other.lock(LockInfo::new("plan", VERSION), Duration::ZERO) {
        Err(StateError::Locked { holder, .. }) => {
            assert_eq!(holder.id, info.id);
            assert_eq!(holder.operation, "apply");
            assert_eq!(holder.who, info.who);
            assert!(!holder.created.is_empty());
            if shared(&b) {
                assert!(!holder.expires.is_empty(), "a lease lock records its expiry");
            }
            let msg = StateError::Locked { holder: holder.clone(), path: "x".into() }.to_string();
            assert!(msg.contains(&info.id) && msg.contains("force-unlock"), "{msg}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(other.lock_info().unwrap().unwrap().id, info.id);
    // force-unlock needs the exact id.
    match other.force_unlock("not-the-id") {
        Err(StateError::LockIdMismatch { holder, .. }) => assert_eq!(holder.id, info.id),
        r => panic!("expected LockIdMismatch, got {r:?}"),
    }
    // Waiting with a timeout gets the lock once it is released.
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        other.lock(LockInfo::new("plan", VERSION), Duration::from_secs(20)).map(|()| (t.elapsed(), other))
    });
    std::thread::sleep(Duration::from_millis(700));
    a.unlock().unwrap();
    let (waited, mut other) = waiter.join().unwrap().unwrap();
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    other.unlock().unwrap();
    // force-unlock with the right id. The local store knows when the holder still runs (it
    // holds the OS lock) and refuses unless forced harder; remote stores cannot tell.
    let info = LockInfo::new("apply", VERSION);
    a.lock(info.clone(), Duration::ZERO).unwrap();
    if b.kind == "local" {
        let err = b.store().force_unlock(&info.id).unwrap_err();
        assert!(matches!(err, StateError::HolderRunning { .. }), "{err:?}");
        assert!(err.to_string().contains("force-unlock --even-if-running"), "{err}");
        b.store().force_unlock_running(&info.id).unwrap();
    } else {
        b.store().force_unlock(&info.id).unwrap();
    }
    assert!(b.store().lock_info().unwrap().is_none());
    let mut c = b.store();
    c.lock(LockInfo::new("plan", VERSION), Duration::ZERO).unwrap();
    c.unlock().unwrap();
}

/// Two processes race for the lock at the same instant: exactly one wins.
fn check_lock_race(b: Backend) {
    let start = now_ms() + 2500;
    let spawn = || child(&b, "race", &[("CONF_START_AT", start.to_string())]);
    let (mut c1, mut c2) = (spawn(), spawn());
    let r1 = c1.marker(&["WON", "LOST"]);
    let r2 = c2.marker(&["WON", "LOST"]);
    let won = [&r1, &r2].iter().filter(|r| r.0 == "WON").count();
    assert_eq!(won, 1, "exactly one process must win the lock: {r1:?} {r2:?}");
    // The loser names the winner's lock.
    let (winner, loser) = if r1.0 == "WON" { (&r1, &r2) } else { (&r2, &r1) };
    assert_eq!(winner.1, loser.1, "the loser reports the winner's lock id");
}

/// A holder killed with SIGKILL: others are refused until its lease expires (at once for the
/// local store, whose OS lock dies with the process), then take over with a warning.
fn check_killed_holder(b: Backend) {
    let mut holder = child(&b, "hold", &[]);
    let (_, id) = holder.marker(&["LOCKED"]);
    let mut store = b.store();
    if shared(&b) {
        // While the holder lives it renews its lease: still locked after more than one lease.
        std::thread::sleep(Duration::from_secs(TTL_SECS + 1));
        match store.lock(LockInfo::new("plan", VERSION), Duration::ZERO) {
            Err(StateError::Locked { holder, .. }) => assert_eq!(holder.id, id),
            other => panic!("a live holder's lock must be refused, got {other:?}"),
        }
    }
    holder.kill();
    if shared(&b) {
        match store.lock(LockInfo::new("plan", VERSION), Duration::ZERO) {
            Err(StateError::Locked { holder, .. }) => assert_eq!(holder.id, id, "refused until the lease expires"),
            Ok(()) => panic!("the killed holder's lease cannot have expired yet"),
            Err(e) => panic!("{e}"),
        }
        let t = Instant::now();
        store.lock(LockInfo::new("plan", VERSION), Duration::from_secs(TTL_SECS * 5)).unwrap();
        assert!(t.elapsed() <= Duration::from_secs(TTL_SECS * 3), "taken over soon after expiry: {:?}", t.elapsed());
        let warnings = store.take_warnings();
        assert!(warnings.iter().any(|w| w.contains(&id) && w.contains("expired")), "the takeover names the old holder: {warnings:?}");
    } else {
        store.lock(LockInfo::new("plan", VERSION), Duration::ZERO).unwrap();
    }
    assert_eq!(store.lock_info().unwrap().unwrap().operation, "plan");
    // The new holder keeps it (and renews it) for longer than a lease.
    if shared(&b) {
        std::thread::sleep(Duration::from_secs(TTL_SECS + 1));
        assert!(matches!(b.store().lock(LockInfo::new("x", VERSION), Duration::ZERO), Err(StateError::Locked { .. })));
    }
    store.unlock().unwrap();
}

/// A writer that lost its lock can never overwrite a newer state.
fn check_stale_writer_rejected(b: Backend) {
    let mut s = State::new(VERSION);
    s.bump_serial().unwrap();
    b.store().write(&s).unwrap();

    let mut stale = b.store();
    let info = LockInfo::new("apply", VERSION);
    stale.lock(info.clone(), Duration::ZERO).unwrap();
    let mut mine = stale.read().unwrap().unwrap();

    // Another run breaks the lock (forced, although the holder still runs), takes it, writes
    // serial 2.
    let mut other = b.store();
    other.force_unlock_running(&info.id).unwrap();
    other.lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap();
    let mut theirs = other.read().unwrap().unwrap();
    theirs.upsert(resource("vault.theirs", "x"));
    theirs.bump_serial().unwrap();
    other.write(&theirs).unwrap();
    other.unlock().unwrap();

    // The stale writer's write is rejected, whatever its serial.
    for serial in [2, 9] {
        mine.upsert(resource("vault.mine", "y"));
        mine.serial = serial;
        let err = stale.write(&mine).unwrap_err();
        assert!(
            matches!(err, StateError::WriteConflict { .. } | StateError::ChangedSinceRead { .. } | StateError::ReplacedWhileLocked { .. }),
            "expected a rejected write, got {err:?}"
        );
    }
    assert_eq!(b.store().read().unwrap().unwrap(), theirs);
    let _ = stale.unlock();
}

/// A state of another lineage is refused (what `state push` without --force relies on);
/// force_write replaces it.
fn check_other_lineage_refused(b: Backend) {
    let mut s = State::new(VERSION);
    s.bump_serial().unwrap();
    b.store().write(&s).unwrap();
    let mut foreign = State::new(VERSION);
    foreign.serial = 10;
    let err = b.store().write(&foreign).unwrap_err();
    assert!(matches!(err, StateError::LineageMismatch { .. }), "{err:?}");
    assert_eq!(b.store().read().unwrap().unwrap().lineage, s.lineage);
    b.store().force_write(&foreign).unwrap();
    assert_eq!(b.store().read().unwrap().unwrap(), foreign);
}

/// A state well above 1 MiB even compressed.
fn check_large_state(b: Backend) {
    let mut s = State::new(VERSION);
    // Random hex compresses to about half: 4 MiB of it is ~2 MiB gzipped.
    for i in 0..64 {
        let blob: String = (0..(64 * 1024 / 32)).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
        let mut r = resource(&format!("agent.cam[{i}]"), "pw");
        r.attributes["blob"] = json!(blob);
        s.upsert(r);
    }
    s.bump_serial().unwrap();
    let mut store = b.store();
    store.write(&s).unwrap();
    assert_eq!(b.store().read().unwrap().unwrap(), s);
    #[cfg(feature = "kubernetes")]
    if let Some(server) = &b.kube {
        let secrets: Vec<_> = server.objects("v1", "Secret").into_iter().filter(|o| o["metadata"]["labels"]["kdeploy.io/state"] == "edge").collect();
        assert!(secrets.len() >= 3, "split across several Secrets: {}", secrets.len());
        for o in &secrets {
            let size = serde_json::to_vec(o).unwrap().len();
            assert!(size < 1024 * 1024, "each Secret stays under the 1 MiB object limit: {size}");
        }
        // A smaller state replaces it and the old chunks go away.
        let mut small = s.clone();
        small.resources.truncate(1);
        small.bump_serial().unwrap();
        store.write(&small).unwrap();
        assert_eq!(b.store().read().unwrap().unwrap(), small);
        let left = server.objects("v1", "Secret").into_iter().filter(|o| o["metadata"]["labels"]["kdeploy.io/state"] == "edge").count();
        assert_eq!(left, 1, "the previous chunks are deleted");
    }
}

/// The backend failing mid-run: the write fails with an error (it does not hang or panic).
fn check_backend_failure(mut b: Backend) {
    let mut store = b.store();
    store.lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap();
    let mut s = store.read().unwrap().unwrap_or_else(|| State::new(VERSION));
    s.bump_serial().unwrap();
    store.write(&s).unwrap();
    b.stop_server();
    s.upsert(resource("vault.main", "pw"));
    s.bump_serial().unwrap();
    let t = Instant::now();
    let err = store.write(&s).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(90), "failed in {:?}", t.elapsed());
    assert!(!err.to_string().is_empty());
    drop(store);
}

/// Sensitive values are encrypted with the key; without the key the rest still reads and the
/// ciphertext survives writes.
fn check_no_cleartext_secret(b: Backend) {
    const SECRET: &str = "correct-horse-battery-staple";
    let key = StateKey::new("a test key of enough entropy 0123456789", "test");
    let mut store = CryptStore::new(b.store(), Some(key.clone()));
    let mut s = State::new(VERSION);
    s.upsert(resource("vault.main", SECRET));
    s.outputs.insert("password".into(), OutputState { value: json!(SECRET), sensitive: true });
    s.outputs.insert("url".into(), OutputState { value: json!("http://vault"), sensitive: false });
    s.bump_serial().unwrap();
    store.write(&s).unwrap();
    // What is stored has no cleartext.
    let stored = b.store().read().unwrap().unwrap();
    let text = String::from_utf8(kdeploy_state::encode(&stored)).unwrap();
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("http://vault") && text.contains("(encrypted)"));
    if b.kind == "local" {
        let raw = std::fs::read_to_string(b.dir.path().join(".kdeploy/state.json")).unwrap();
        assert!(!raw.contains(SECRET));
    }
    // With the key everything comes back.
    assert_eq!(CryptStore::new(b.store(), Some(key.clone())).read().unwrap().unwrap().resources, s.resources);
    // Without the key: readable, marked, and kept by a write.
    let mut keyless = CryptStore::new(b.store(), None);
    let mut read = keyless.read().unwrap().unwrap();
    assert!(read.resources[0].attributes["root_password"].as_str().unwrap().starts_with("(encrypted)"));
    assert_eq!(read.resources[0].attributes["name"], "vault.main");
    read.outputs.remove("url");
    read.bump_serial().unwrap();
    keyless.write(&read).unwrap();
    let back = CryptStore::new(b.store(), Some(key)).read().unwrap().unwrap();
    assert_eq!(back.resources[0].attributes["root_password"], SECRET);
    assert_eq!(back.outputs["password"].value, SECRET);
}

/// How many journal objects the backend holds (S3 objects, Kubernetes Secrets, the local file).
fn journal_objects(b: &Backend) -> usize {
    match b.kind {
        "local" => usize::from(b.dir.path().join(".kdeploy/state.json.journal").exists()),
        #[cfg(feature = "kubernetes")]
        "kubernetes" => {
            b.kube.as_ref().unwrap().objects("v1", "Secret").into_iter().filter(|o| o["metadata"]["labels"]["kdeploy.io/journal"] == "edge").count()
        }
        // S3: counted through what readers see (the entries are not listed from here).
        _ => 0,
    }
}

/// One create as apply records it: pending in one group, the result in the next.
fn create(rec: &mut Recorder, state: &mut State, store: &mut dyn StateStore, addr: &str) -> Result<(), StateError> {
    let p = PendingOp::start(&addr.parse().unwrap(), PendingKind::Create, None);
    let id = p.id.clone();
    rec.record(state, Record::Begin { pending: p, sensitive_paths: vec![] })?;
    rec.persist(state, store)?;
    rec.record(state, Record::Upsert { resource: resource(addr, "pw") })?;
    rec.record(state, Record::Finish { id })?;
    rec.persist(state, store)
}

/// An apply's groups are appended to the backend's journal, every reader replays them, a run
/// killed mid-way leaves them to the next reader (which folds them under the lock), and the
/// end of an apply folds them into the state.
fn check_journal(b: Backend) {
    let mut store = b.store();
    store.lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap();
    let mut state = State::new(VERSION);
    state.bump_serial().unwrap();
    assert!(store.checkpoint(&state).unwrap(), "a store that holds the lock keeps a journal");
    let mut rec = Recorder::new();
    rec.persist(&mut state, &mut *store).unwrap();
    for i in 0..3 {
        create(&mut rec, &mut state, &mut *store, &format!("vault.v{i}")).unwrap();
    }
    let p = PendingOp::start(&"vault.late".parse().unwrap(), PendingKind::Create, None);
    rec.record(&mut state, Record::Begin { pending: p, sensitive_paths: vec![] }).unwrap();
    rec.persist(&mut state, &mut *store).unwrap();
    assert_eq!(state.serial, 9);
    if b.kind != "s3" {
        assert_eq!(journal_objects(&b), if b.kind == "local" { 1 } else { 7 }, "one entry per group");
    }
    // Another reader (no lock) sees everything recorded, the interrupted create pending.
    let read = b.store().read().unwrap().unwrap();
    assert_eq!(read, state);
    assert_eq!(read.pending.len(), 1);
    // The run dies here (its lease, for the shared backends, would expire: released instead).
    drop(store);
    let mut next = b.store();
    next.lock(LockInfo::new("apply", VERSION), Duration::from_secs(TTL_SECS * 5)).unwrap();
    assert_eq!(next.read().unwrap().unwrap(), state, "replayed, and folded under the lock");
    assert!(next.take_warnings().is_empty());
    assert_eq!(journal_objects(&b), 0, "folded into the state");
    assert_eq!(b.store().read().unwrap().unwrap(), state);
    // A whole apply ends folded, at the last group's serial.
    let mut state = next.read().unwrap().unwrap();
    let mut rec = Recorder::new();
    rec.persist(&mut state, &mut *next).unwrap();
    create(&mut rec, &mut state, &mut *next, "vault.late").unwrap();
    rec.finish(&state, &mut *next).unwrap();
    assert_eq!(journal_objects(&b), 0);
    assert_eq!(b.store().read().unwrap().unwrap(), state);
    assert_eq!(state.serial, 12);
    next.unlock().unwrap();
}

/// A run whose lock was broken appends nothing more once another run wrote the state, and a
/// run writing without the lock cannot drop groups it has not read.
fn check_journal_stale_writer(b: Backend) {
    let mut old = b.store();
    let info = LockInfo::new("apply", VERSION);
    old.lock(info.clone(), Duration::ZERO).unwrap();
    let mut state = State::new(VERSION);
    let mut rec = Recorder::new();
    rec.persist(&mut state, &mut *old).unwrap();
    create(&mut rec, &mut state, &mut *old, "vault.a").unwrap();
    // -lock=false: read now, write after the holder appended more: refused.
    let mut unlocked = b.store();
    let mut theirs = unlocked.read().unwrap().unwrap();
    create(&mut rec, &mut state, &mut *old, "vault.b").unwrap();
    theirs.bump_serial().unwrap();
    let err = unlocked.write(&theirs).unwrap_err();
    assert!(matches!(err, StateError::WriteConflict { .. } | StateError::ChangedSinceRead { .. }), "{err:?}");
    // The lock is broken; another run writes the state.
    let mut other = b.store();
    other.force_unlock_running(&info.id).unwrap();
    other.lock(LockInfo::new("apply", VERSION), Duration::ZERO).unwrap();
    let mut s = other.read().unwrap().unwrap();
    assert_eq!(s, state);
    s.remove(&"vault.a".parse().unwrap());
    s.bump_serial().unwrap();
    other.write(&s).unwrap();
    other.unlock().unwrap();
    // The old holder's next group is refused.
    let err = create(&mut rec, &mut state, &mut *old, "vault.c").unwrap_err();
    assert!(matches!(err, StateError::WriteConflict { .. } | StateError::ReplacedWhileLocked { .. }), "{err:?}");
    assert_eq!(b.store().read().unwrap().unwrap(), s);
}

// ---------------------------------------------------------------------------------------------
// Child processes.

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

struct ChildProc {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl ChildProc {
    /// Waits for a line with one of `markers`; returns (marker, rest).
    fn marker(&mut self, markers: &[&str]) -> (String, String) {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            for m in markers {
                if let Some((_, rest)) = line.split_once(&format!("{m} ")) {
                    return (m.to_string(), rest.trim().to_string());
                }
            }
        }
        panic!("child exited without printing any of {markers:?}: {:?}", self.child.wait());
    }

    fn kill(&mut self) {
        // std's kill sends SIGKILL: no cleanup runs in the child.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn child(b: &Backend, mode: &str, extra: &[(&str, String)]) -> ChildProc {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "conformance_child", "--nocapture", "--test-threads=1"])
        .env("CONF_CHILD_MODE", mode)
        .env("CONF_BACKEND", b.kind)
        .env("CONF_CONFIG", serde_json::to_string(&b.config).unwrap())
        .env("CONF_DIR", b.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    ChildProc { child, lines }
}

/// The child side of the cross-process checks; does nothing unless CONF_CHILD_MODE is set.
#[test]
fn conformance_child() {
    let Ok(mode) = std::env::var("CONF_CHILD_MODE") else { return };
    let kind = std::env::var("CONF_BACKEND").unwrap();
    let config: BTreeMap<String, String> = serde_json::from_str(&std::env::var("CONF_CONFIG").unwrap()).unwrap();
    let dir = std::path::PathBuf::from(std::env::var("CONF_DIR").unwrap());
    let mut store = open_backend(&kind, &config, &dir).unwrap();
    let info = LockInfo::new("apply", VERSION);
    match mode.as_str() {
        "hold" => {
            store.lock(info.clone(), Duration::ZERO).unwrap();
            println!("LOCKED {}", info.id);
        }
        "race" => {
            // Warm the connection up, then start together.
            let _ = store.lock_info();
            let start: u64 = std::env::var("CONF_START_AT").unwrap().parse().unwrap();
            std::thread::sleep(Duration::from_millis(start.saturating_sub(now_ms())));
            match store.lock(info.clone(), Duration::ZERO) {
                Ok(()) => println!("WON {}", info.id),
                Err(StateError::Locked { holder, .. }) => println!("LOST {}", holder.id),
                Err(e) => println!("ERROR {e}"),
            }
        }
        other => panic!("unknown mode {other}"),
    }
    // Hold until killed (or for a while).
    std::thread::sleep(Duration::from_secs(30));
}

// ---------------------------------------------------------------------------------------------
// The matrix.

macro_rules! suite {
    ($backend:ident, $cfg:meta) => {
        #[$cfg]
        mod $backend {
            use super::*;
            fn backend() -> Option<Backend> {
                super::$backend()
            }
            #[test]
            fn round_trip_and_serials() {
                if let Some(b) = backend() {
                    check_round_trip_and_serials(b)
                }
            }
            #[test]
            fn lock_basics() {
                if let Some(b) = backend() {
                    check_lock_basics(b)
                }
            }
            #[test]
            fn lock_race_between_processes() {
                if let Some(b) = backend() {
                    check_lock_race(b)
                }
            }
            #[test]
            fn killed_holder() {
                if let Some(b) = backend() {
                    check_killed_holder(b)
                }
            }
            #[test]
            fn stale_writer_rejected() {
                if let Some(b) = backend() {
                    check_stale_writer_rejected(b)
                }
            }
            #[test]
            fn other_lineage_refused() {
                if let Some(b) = backend() {
                    check_other_lineage_refused(b)
                }
            }
            #[test]
            fn large_state() {
                if let Some(b) = backend() {
                    check_large_state(b)
                }
            }
            #[test]
            fn backend_failure() {
                if let Some(b) = backend() {
                    check_backend_failure(b)
                }
            }
            #[test]
            fn journal() {
                if let Some(b) = backend() {
                    check_journal(b)
                }
            }
            #[test]
            fn journal_stale_writer() {
                if let Some(b) = backend() {
                    check_journal_stale_writer(b)
                }
            }
            #[test]
            fn no_cleartext_secret() {
                if let Some(b) = backend() {
                    check_no_cleartext_secret(b)
                }
            }
        }
    };
}

suite!(local, cfg(all()));
suite!(s3, cfg(feature = "s3"));
suite!(kube, cfg(feature = "kubernetes"));
