//! Crash safety: the real binary is killed (`kill -9`) at random points of applies and destroys
//! of a whole stack, on Kubernetes (the test API server) and on Docker (the real engine, with
//! stand-in images), and after every kill the next `kdeploy apply` must converge: exit 0, a plan
//! with no changes, every live object kdeploy labels belongs to the state (nothing orphaned),
//! each component exists once (no duplicates), the state parses with nothing pending, and the
//! previous state is kept as the backup.
//!
//! CI runs [`DEFAULT_POINTS`] kill points per provider. Run more, or replay a failure:
//! `KDEPLOY_CRASH_POINTS=200 KDEPLOY_CRASH_SEED=<seed printed by the failure> cargo test --test it crash::`
#![cfg(all(feature = "docker", feature = "kubernetes"))]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kdeploy_kube_testserver::{Options, TestServer};
use kdeploy_provider_docker::testing;
use kdeploy_standins::vault::Release;

use crate::docker::{Cleanup, engine, free_port};
use crate::recording::docker_override;
use crate::support::{Out, TestStack, binary, example, kill9, run_limited, vault_standin};

/// Kill points per provider in CI.
pub const DEFAULT_POINTS: usize = 20;

/// The cameras a run may declare.
const CAMERAS: [&str; 4] = ["front", "back", "yard", "side"];

/// splitmix64: small, seedable, enough to pick kill points reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A non-empty subset of the cameras.
    fn cameras(&mut self) -> Vec<&'static str> {
        let mask = 1 + self.below(15);
        CAMERAS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, c)| *c).collect()
    }
}

/// The number of points and the seed (from KDEPLOY_CRASH_POINTS / KDEPLOY_CRASH_SEED), printed
/// so that a failure can be replayed.
fn series(provider: &str) -> (usize, Rng) {
    let points = std::env::var("KDEPLOY_CRASH_POINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_POINTS);
    let seed = std::env::var("KDEPLOY_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    eprintln!("{provider} crash series: {points} points, KDEPLOY_CRASH_SEED={seed}");
    (points, Rng(seed))
}

/// The `-var cameras=...` value for a set of cameras.
fn cameras_var(cams: &[&str]) -> String {
    let entries: Vec<String> = cams.iter().map(|c| format!("{c} = {{ rtsp = \"rtsp://10.0.0.9/{c}\", sub = \"rtsp://10.0.0.9/{c}-sub\" }}")).collect();
    format!("cameras={{ {} }}", entries.join(", "))
}

/// A provider the series runs against.
trait Target {
    fn dir(&self) -> &Path;
    /// Extra arguments of every plan/apply/destroy (variables).
    fn args(&self) -> Vec<String>;
    /// Live objects kdeploy manages, as (kdeploy address, object identity).
    fn live(&self) -> Vec<(String, String)>;
    /// How many live objects one component address may have (Deployment + Service + Secret ...).
    fn same_address_ok(&self, identities: &[String]) -> Result<(), String>;
    fn env(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Whether a live object is data (a volume claim, a volume): kept when its component is
    /// deleted unless `destroy -delete-data`, so not an orphan.
    fn is_data(&self, identity: &str) -> bool;
    /// Whether the component at `address` has live objects of its own.
    fn has_objects(&self, _address: &str) -> bool {
        true
    }
}

fn command(t: &dyn Target, op: &str, cams: &[&str]) -> Vec<String> {
    let mut args = vec![op.to_string(), "-auto-approve".to_string(), "-var".to_string(), cameras_var(cams)];
    args.extend(t.args());
    args
}

fn run(t: &dyn Target, op: &str, cams: &[&str], extra: &[&str]) -> Out {
    let mut args = command(t, op, cams);
    if op == "plan" {
        args.retain(|a| a != "-auto-approve");
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = t.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_limited(t.dir(), &env, &args, 300)
}

/// Starts `op` and kills it with SIGKILL after `delay`; `None` when it was still running then,
/// how long it took when it had finished.
fn kill_after(t: &dyn Target, op: &str, cams: &[&str], delay: Duration) -> Option<Duration> {
    let args = command(t, op, cams);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = t.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = binary(t.dir(), &env, &args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn kdeploy");
    let start = Instant::now();
    while start.elapsed() < delay {
        if child.try_wait().expect("wait").is_some() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    kill9(child);
    None
}

/// The addresses a stack with these cameras has (for `fixed` components plus one agent each).
fn addresses(fixed: &[&str], cams: &[&str]) -> BTreeSet<String> {
    fixed.iter().map(|a| a.to_string()).chain(cams.iter().map(|c| format!("agent.cam[\"{c}\"]"))).collect()
}

/// Everything that must hold after a converging apply of `cams`.
fn assert_converged(t: &dyn Target, fixed: &[&str], cams: &[&str], what: &str) {
    let r = run(t, "plan", cams, &["-detailed-exitcode"]);
    assert_eq!(r.code, 0, "{what}: the plan after the converging apply has changes:\n{}", r.text());
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(t.dir().join(".kdeploy/state.json")).expect("state"))
        .unwrap_or_else(|e| panic!("{what}: state is not JSON: {e}"));
    assert_eq!(state["pending"].as_array().map(Vec::len), Some(0), "{what}: nothing pending: {state}");
    let recorded = recorded_addresses(t.dir());
    let want = addresses(fixed, cams);
    assert_eq!(recorded, want, "{what}: the state records exactly the stack's components");
    if what != "the first apply" {
        check_backup(t.dir(), &state, what);
    }
    let mut by_address: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (address, identity) in t.live() {
        if !t.is_data(&identity) || want.contains(&address) {
            by_address.entry(address).or_default().push(identity);
        }
    }
    let live: BTreeSet<String> = by_address.keys().cloned().collect();
    let want: BTreeSet<String> = want.into_iter().filter(|a| t.has_objects(a)).collect();
    assert_eq!(live, want, "{what}: live objects belong exactly to the stack's components (nothing orphaned): {by_address:#?}");
    for (address, identities) in &by_address {
        if let Err(e) = t.same_address_ok(identities) {
            panic!("{what}: {address} is duplicated: {e}: {identities:?}");
        }
    }
}

fn recorded_addresses(dir: &Path) -> BTreeSet<String> {
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(".kdeploy/state.json")).expect("state")).expect("state JSON");
    state["resources"].as_array().expect("resources").iter().map(|r| r["address"].as_str().unwrap().to_string()).collect()
}

/// The backup is the state before the last run: same lineage, a lower serial, valid JSON.
fn check_backup(dir: &Path, state: &serde_json::Value, what: &str) {
    let backup = std::fs::read(dir.join(".kdeploy/state.json.backup")).unwrap_or_else(|e| panic!("{what}: the backup is kept: {e}"));
    let backup: serde_json::Value = serde_json::from_slice(&backup).unwrap_or_else(|e| panic!("{what}: the backup is valid JSON: {e}"));
    assert_eq!(backup["lineage"], state["lineage"], "{what}: the backup is of the same state");
    assert!(backup["serial"].as_u64() < state["serial"].as_u64(), "{what}: the backup is older: {} vs {}", backup["serial"], state["serial"]);
}

/// After a destroy converges, nothing kdeploy manages is left but data, and after `-delete-data`
/// not even the data of `recorded` (the components the state held: the data of cameras removed
/// from the stack earlier was kept when they were removed, and is not tracked any more).
fn assert_destroyed(t: &dyn Target, what: &str, recorded: Option<&BTreeSet<String>>) {
    let live: Vec<(String, String)> = t.live().into_iter().filter(|(a, i)| !t.is_data(i) || recorded.is_some_and(|r| r.contains(a))).collect();
    assert!(live.is_empty(), "{what}: destroy left {live:?}");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(t.dir().join(".kdeploy/state.json")).expect("state")).expect("state JSON");
    assert_eq!(state["resources"].as_array().map(Vec::len), Some(0), "{what}: {state}");
    assert_eq!(state["pending"].as_array().map(Vec::len), Some(0), "{what}: {state}");
}

/// The series: each point kills an apply (of a random set of cameras) or a destroy at a random
/// moment within the time a whole run takes, then converges with a full run and checks.
fn crash_series(t: &dyn Target, provider: &str, fixed: &[&str]) {
    let (points, mut rng) = series(provider);
    // A whole apply from nothing, timed: kill points fall within it.
    let start = Instant::now();
    let r = run(t, "apply", &CAMERAS, &[]);
    assert_eq!(r.code, 0, "{}", r.text());
    let whole = start.elapsed();
    assert_converged(t, fixed, &CAMERAS, "the first apply");
    // A run that finishes before its kill point is not a point: the next one is drawn within the
    // time that run took.
    let (mut killed, mut attempts, mut window) = (0, 0, whole);
    while killed < points {
        attempts += 1;
        assert!(attempts <= points * 5, "only {killed} of {attempts} runs were still running at their kill point");
        let destroy = rng.below(5) == 0;
        let cams = rng.cameras();
        let delay = Duration::from_millis(rng.below(window.as_millis() as u64 + 1));
        let op = if destroy { "destroy" } else { "apply" };
        let what = format!("point {killed}: {op} of {cams:?} killed after {delay:?} (KDEPLOY_CRASH_SEED reproduces)");
        if let Some(took) = kill_after(t, op, &cams, delay) {
            window = took;
            continue;
        }
        eprintln!("{what}");
        killed += 1;
        window = whole;
        if destroy && rng.below(2) == 0 {
            let r = run(t, "destroy", &cams, &[]);
            assert_eq!(r.code, 0, "{what}: the converging destroy\n{}", r.text());
            assert_destroyed(t, &what, None);
        }
        let converge = rng.cameras();
        let r = run(t, "apply", &converge, &[]);
        assert_eq!(r.code, 0, "{what}: the converging apply of {converge:?}\n{}", r.text());
        assert_converged(t, fixed, &converge, &format!("{what}, converged to {converge:?} by:\n{}\n", r.text()));
    }
    let recorded: BTreeSet<String> = if t.dir().join(".kdeploy/state.json").exists() { recorded_addresses(t.dir()) } else { Default::default() };
    let r = run(t, "destroy", &CAMERAS, &["-delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_destroyed(t, "the final destroy", Some(&recorded));
}

/// Kill points at the journal itself, every one of them: an apply of the whole stack from
/// nothing dies at its n-th journal append (through the test hook `KDEPLOY_TEST_JOURNAL_CRASH`,
/// an abort: no cleanup runs, as under `kill -9`), either with that group cut in half
/// (`torn`) or just after it is durable (`synced`), for n = 1, 2, ... until an apply makes
/// fewer appends than n. After each, `state list` works, the next apply converges with
/// everything checked as in the random series, and a destroy returns to nothing.
fn journal_series(t: &dyn Target, fixed: &[&str]) {
    let mut points = 0;
    for n in 1.. {
        let mut finished = 0;
        for stage in ["torn", "synced"] {
            let what = format!("apply killed at journal append {n} ({stage})");
            let env: Vec<(&str, String)> = t.env().into_iter().chain([("KDEPLOY_TEST_JOURNAL_CRASH", format!("{n}:{stage}"))]).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let args = command(t, "apply", &CAMERAS);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = run_limited(t.dir(), &env, &args, 300);
            if r.code == 0 {
                finished += 1;
            } else {
                assert_eq!(r.code, -1, "{what}: killed by the hook, not an error:\n{}", r.text());
                points += 1;
                eprintln!("{what}");
            }
            let r = run_limited(t.dir(), &[], &["state", "list"], 60);
            assert_eq!(r.code, 0, "{what}: state list reads the journal\n{}", r.text());
            let r = run(t, "apply", &CAMERAS, &[]);
            assert_eq!(r.code, 0, "{what}: the converging apply\n{}", r.text());
            assert_converged(t, fixed, &CAMERAS, &format!("{what}, converged by:\n{}\n", r.text()));
            let r = run(t, "destroy", &CAMERAS, &["-delete-data"]);
            assert_eq!(r.code, 0, "{what}: the destroy\n{}", r.text());
            assert_destroyed(t, &what, Some(&addresses(fixed, &CAMERAS)));
        }
        if finished == 2 {
            break;
        }
    }
    assert!(points >= 8, "an apply of the whole stack makes several journal appends: {points} kill points");
}

// ------------------------------------------------------------------ Kubernetes

struct Kube {
    server: TestServer,
    kubeconfig: String,
    s: TestStack,
}

impl Target for Kube {
    fn dir(&self) -> &Path {
        self.s.path()
    }
    fn args(&self) -> Vec<String> {
        vec!["-var".into(), format!("kubeconfig={}", self.kubeconfig), "-var".into(), "context=test".into()]
    }
    fn live(&self) -> Vec<(String, String)> {
        self.server
            .all_objects()
            .into_iter()
            .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kdeploy")
            .filter_map(|o| {
                let address = o["metadata"]["annotations"]["kdeploy.io/address"].as_str()?.to_string();
                Some((
                    address,
                    format!(
                        "{} {}/{}",
                        o["kind"].as_str().unwrap_or("?"),
                        o["metadata"]["namespace"].as_str().unwrap_or(""),
                        o["metadata"]["name"].as_str().unwrap_or("?")
                    ),
                ))
            })
            .collect()
    }
    fn is_data(&self, identity: &str) -> bool {
        identity.starts_with("PersistentVolumeClaim ")
    }
    fn has_objects(&self, address: &str) -> bool {
        // A kubernetes cluster is a connection: kdeploy creates nothing for it.
        !address.starts_with("cluster.")
    }
    fn same_address_ok(&self, identities: &[String]) -> Result<(), String> {
        // One object per kind: two Deployments (or Services) for one component are duplicates.
        let mut kinds = BTreeMap::new();
        for i in identities {
            *kinds.entry(i.split(' ').next().unwrap_or("")).or_insert(0) += 1;
        }
        match kinds.iter().find(|(_, n)| **n > 1) {
            Some((kind, n)) => Err(format!("{n} objects of kind {kind}")),
            None => Ok(()),
        }
    }
}

#[test]
fn kill_9_at_random_points_of_kubernetes_applies_always_converges() {
    let server = TestServer::start(Options { ready_after: Some(Duration::from_millis(300)), ..Options::default() });
    vault_standin(&server, "kerberos-vault", "vault-main", Release::Current);
    let s = example("kubernetes");
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    let k = Kube { server, kubeconfig, s };
    let fixed = ["cluster.edge", "database.meta", "object_storage.recordings", "broker.events", "vault.main", "factory.ui"];
    crash_series(&k, "kubernetes", &fixed);
}

#[test]
fn kill_at_every_journal_append_of_a_kubernetes_apply_always_converges() {
    let server = TestServer::start(Options { ready_after: Some(Duration::from_millis(100)), ..Options::default() });
    vault_standin(&server, "kerberos-vault", "vault-main", Release::Current);
    let s = example("kubernetes");
    let kubeconfig = server.write_kubeconfig(s.path(), "test").display().to_string();
    let k = Kube { server, kubeconfig, s };
    let fixed = ["cluster.edge", "database.meta", "object_storage.recordings", "broker.events", "vault.main", "factory.ui"];
    journal_series(&k, &fixed);
}

// ------------------------------------------------------------------ Docker

const CLUSTER: &str = "crashtest";

struct Docker {
    s: TestStack,
}

impl Target for Docker {
    fn dir(&self) -> &Path {
        self.s.path()
    }
    fn args(&self) -> Vec<String> {
        Vec::new()
    }
    fn live(&self) -> Vec<(String, String)> {
        let objects = testing::objects(CLUSTER).expect("list the cluster's objects");
        let address = |name: &str| -> String {
            let slug = name.strip_prefix(&format!("kdeploy-{CLUSTER}-")).unwrap_or(name);
            match slug {
                "object-storage-recordings" => "object_storage.recordings".into(),
                "database-meta" => "database.meta".into(),
                "broker-events" => "broker.events".into(),
                "vault-main" => "vault.main".into(),
                s => match s.strip_prefix("agent-cam-") {
                    Some(c) => format!("agent.cam[\"{c}\"]"),
                    None => format!("unknown container {name}"),
                },
            }
        };
        let mut live: Vec<(String, String)> = objects.containers.iter().map(|(n, running)| (address(n), format!("container {n} running={running}"))).collect();
        // The cluster is its network.
        live.extend(objects.networks.iter().map(|n| (format!("cluster.{CLUSTER}"), format!("network {n}"))));
        live.extend(objects.volumes.iter().map(|v| (format!("volume of {}", v), format!("volume {v}"))));
        live
    }
    fn is_data(&self, identity: &str) -> bool {
        identity.starts_with("volume ")
    }
    fn same_address_ok(&self, identities: &[String]) -> Result<(), String> {
        if identities.len() > 1 {
            return Err(format!("{} objects", identities.len()));
        }
        match identities.first() {
            Some(i) if i.starts_with("container") && !i.ends_with("running=true") => Err("its container is not running".into()),
            _ => Ok(()),
        }
    }
}

#[test]
fn kill_9_at_random_points_of_docker_applies_always_converges() {
    if !engine() {
        return;
    }
    // Its own cluster name: the example's `edge` is used by other tests running at the same time.
    testing::cleanup(CLUSTER);
    let _guard = Cleanup(CLUSTER.into());
    let s = example("docker");
    let main = std::fs::read_to_string(s.path().join("main.hcl")).unwrap();
    assert!(main.contains("cluster \"edge\""));
    s.write("main.hcl", &main.replace("cluster \"edge\"", &format!("cluster \"{CLUSTER}\"")));
    s.write("test_override.hcl", &docker_override(free_port()));
    let d = Docker { s };
    let fixed = ["cluster.crashtest", "database.meta", "object_storage.recordings", "broker.events", "vault.main"];
    crash_series(&d, "docker", &fixed);
}
