//! Shared state backends from the command line: `state pull`/`state push`, `init
//! -migrate-state`, `-backend-config`, errored.kdstate after a failed backend write, and
//! encryption of sensitive values with KDEPLOY_STATE_KEY. The Kubernetes backend runs against
//! the in-process test API server.

use std::collections::BTreeMap;

use kdeploy_kube_testserver::{Options, TestServer};
use kdeploy_provider::fake::FakeWorld;

use crate::support::{TestStack, basic_stack, fake_providers, run, run_with};

fn kube_backend(kubeconfig: &std::path::Path, suffix: &str) -> String {
    format!(
        "  backend \"kubernetes\" {{\n    namespace     = \"default\"\n    secret_suffix = \"{suffix}\"\n    kubeconfig    = \"{}\"\n    context       = \"test\"\n  }}\n",
        kubeconfig.display()
    )
}

/// The basic stack with `backend` inside its stack block.
fn stack_with_backend(backend: &str) -> String {
    basic_stack(&[("front", "rtsp://front")]).replacen("stack \"test\" {}", &format!("stack \"test\" {{\n{backend}}}"), 1)
}

fn head_secret(server: &TestServer, suffix: &str) -> Option<serde_json::Value> {
    server.object("v1", "Secret", Some("default"), &format!("kdeploy-state-{suffix}"))
}

#[test]
fn state_pull_and_push_refuse_other_lineage_and_lower_serial() {
    let world = FakeWorld::new();
    let s = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://front")]))]);
    let r = run(s.path(), &world, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let pulled = run(s.path(), &world, &["state", "pull"]);
    assert_eq!(pulled.code, 0, "{}", pulled.stderr);
    let state = kdeploy_state::decode(pulled.stdout.as_bytes(), "pull").unwrap();
    assert_eq!(state, s.state());
    s.write("pulled.kdstate", &pulled.stdout);

    // The same state pushes back (the serial keeps increasing).
    let r = run(s.path(), &world, &["state", "push", "pulled.kdstate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.state().serial, state.serial + 1);
    assert_eq!(s.state().resources, state.resources);

    // A lower serial is refused.
    let r = run(s.path(), &world, &["state", "push", "pulled.kdstate"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("newer than the pushed state") && r.stderr.contains("--force"), "{}", r.stderr);

    // Another lineage is refused, unless --force.
    let mut foreign = kdeploy_state::State::new("test");
    foreign.serial = 100;
    s.write("foreign.kdstate", std::str::from_utf8(&kdeploy_state::encode(&foreign)).unwrap());
    let r = run(s.path(), &world, &["state", "push", "foreign.kdstate"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("lineage") && r.stderr.contains(&foreign.lineage), "{}", r.stderr);
    assert_eq!(s.state().lineage, state.lineage, "nothing was replaced");
    let r = run(s.path(), &world, &["state", "push", "-force", "foreign.kdstate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.state().lineage, foreign.lineage);
}

#[test]
fn backend_config_overrides_the_backend_block() {
    let world = FakeWorld::new();
    let s = TestStack::new(&[("main.hcl", &stack_with_backend("  backend \"local\" {\n    path = \"a.json\"\n  }\n"))]);
    let r = run(s.path(), &world, &["apply", "--auto-approve", "-backend-config", "path=b.json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(s.path().join("b.json").exists() && !s.path().join("a.json").exists());
    let r = run(s.path(), &world, &["state", "list", "-backend-config=path=b.json"]);
    assert!(r.stdout.contains("vault.main"), "{}", r.stdout);
    let r = run(s.path(), &world, &["state", "list"]);
    assert!(!r.stdout.contains("vault.main"), "{}", r.stdout);

    // Kubernetes: the suffix comes from the command line.
    let server = TestServer::start(Options::default());
    let kc = server.write_kubeconfig(s.path(), "test");
    s.write("main.hcl", &stack_with_backend(&kube_backend(&kc, "unused")));
    let r = run(s.path(), &world, &["plan", "-backend-config", "secret_suffix=prod"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(s.path(), &world, &["apply", "--auto-approve", "-backend-config", "secret_suffix=prod"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(head_secret(&server, "prod").is_some());
    assert!(head_secret(&server, "unused").is_none());
    assert!(server.object("coordination.k8s.io/v1", "Lease", Some("default"), "kdeploy-lock-prod").is_none(), "the lock is released");
    let r = run(s.path(), &world, &["state", "list", "-backend-config", "secret_suffix=prod"]);
    assert!(r.stdout.contains("vault.main"), "{}", r.stdout);

    let r = run(s.path(), &world, &["plan", "-backend-config", "nonsense"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("KEY=VALUE"), "{}", r.stderr);
    let r = run(s.path(), &world, &["plan", "-backend-config", "bucket=x"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("has no setting \"bucket\""), "{}", r.stderr);
}

#[test]
fn init_migrate_state_moves_local_state_to_kubernetes() {
    let world = FakeWorld::new();
    let s = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://front")]))]);
    let r = run(s.path(), &world, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let local = s.state();

    let server = TestServer::start(Options::default());
    let kc = server.write_kubeconfig(s.path(), "test");
    s.write("main.hcl", &stack_with_backend(&kube_backend(&kc, "edge")));
    let r = run(s.path(), &world, &["init"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("no state yet"), "{}", r.stdout);

    let r = run(s.path(), &world, &["init", "-migrate-state"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("Migrated the state"), "{}", r.stdout);
    assert!(head_secret(&server, "edge").is_some());
    let pulled = run(s.path(), &world, &["state", "pull"]);
    let remote = kdeploy_state::decode(pulled.stdout.as_bytes(), "pull").unwrap();
    assert_eq!(remote.lineage, local.lineage);
    assert_eq!(remote.resources, local.resources);
    // Both locks were released.
    assert!(server.object("coordination.k8s.io/v1", "Lease", Some("default"), "kdeploy-lock-edge").is_none());
    let r = run(s.path(), &world, &["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "nothing to change after the migration: {}{}", r.stdout, r.stderr);

    // And back, with -from-backend-config naming the source.
    let other = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://front")]))]);
    let r = run(
        other.path(),
        &world,
        &[
            "init",
            "-migrate-state",
            "-from-backend-config",
            "type=kubernetes",
            "-from-backend-config",
            &format!("kubeconfig={}", kc.display()),
            "-from-backend-config",
            "secret_suffix=edge",
            "-from-backend-config",
            "context=test",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(other.state().resources, local.resources);
}

#[test]
fn failed_backend_write_during_apply_leaves_errored_kdstate() {
    let world = FakeWorld::new();
    // Credentials that may read and lock but not write Secrets: the first state write fails.
    let broken = TestServer::start(Options {
        forbidden: vec![("create".into(), "secrets".into(), None), ("update".into(), "secrets".into(), None)],
        ..Options::default()
    });
    let s = TestStack::new(&[]);
    let kc = broken.write_kubeconfig(s.path(), "test");
    s.write("main.hcl", &stack_with_backend(&kube_backend(&kc, "edge")));
    let r = run(s.path(), &world, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("forbidden"), "{}", r.stderr);
    assert!(r.stderr.contains("kdeploy state push errored.kdstate"), "{}", r.stderr);
    assert!(s.path().join("errored.kdstate").exists());
    std::fs::remove_file(s.path().join("errored.kdstate")).unwrap();

    // The API server goes away in the middle of an apply (network failure): what finished
    // before and during the outage is in errored.kdstate.
    let server = TestServer::start(Options::default());
    let kc = server.write_kubeconfig(s.path(), "test");
    s.write("main.hcl", &stack_with_backend(&kube_backend(&kc, "edge")));
    world.delay("vault.main", std::time::Duration::from_millis(1500));
    let r = std::thread::scope(|scope| {
        let apply = scope.spawn(|| run(s.path(), &world, &["apply", "--auto-approve"]));
        let t = std::time::Instant::now();
        while world.object("object_storage.rec").is_none() || world.object("database.meta").is_none() {
            assert!(t.elapsed() < std::time::Duration::from_secs(30), "the apply did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(server);
        apply.join().unwrap()
    });
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("kdeploy state push errored.kdstate"), "{}", r.stderr);
    let errored = std::fs::read(s.path().join("errored.kdstate")).unwrap();
    let saved = kdeploy_state::decode(&errored, "errored").unwrap();
    assert!(saved.resource(&"vault.main".parse().unwrap()).is_some(), "the unsaved state has what the run did: {:?}", saved.resources);

    // Once a working backend is reachable, the file is pushed there.
    let good = TestServer::start(Options::default());
    let good_kc = good.write_kubeconfig(&s.path().join("good"), "test");
    let cfg = format!("kubeconfig={}", good_kc.display());
    let r = run(s.path(), &world, &["state", "push", "errored.kdstate", "-backend-config", &cfg]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(s.path(), &world, &["state", "list", "-backend-config", &cfg]);
    assert!(r.stdout.contains("vault.main"), "{}", r.stdout);
}

#[test]
fn state_key_keeps_sensitive_values_out_of_the_state_file() {
    let world = FakeWorld::new();
    let s = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://front")]))]);
    let key: BTreeMap<String, String> = [("KDEPLOY_STATE_KEY".to_string(), "0123456789abcdef0123456789abcdef".to_string())].into();
    let go = |args: &[&str], vars: &BTreeMap<String, String>| run_with(s.path(), fake_providers(&world), args, vars.clone(), "");
    let r = go(&["apply", "--auto-approve"], &key);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = go(&["output", "-raw", "vault_secret"], &key);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let secret = r.stdout.clone();
    assert!(secret.len() >= 8, "{secret:?}");
    let file = std::fs::read_to_string(s.state_path()).unwrap();
    assert!(!file.contains(&secret), "the state file holds the secret in clear");
    assert!(file.contains("(encrypted)") && file.contains("vault.main"));

    // Without the key everything else still reads, and the value shows as encrypted.
    let none = BTreeMap::new();
    let r = go(&["state", "list"], &none);
    assert!(r.stdout.contains("vault.main"), "{}", r.stdout);
    let r = go(&["output", "-raw", "vault_secret"], &none);
    assert!(r.stdout.starts_with("(encrypted)"), "{}", r.stdout);
    // A keyless edit keeps the ciphertext.
    let r = go(&["state", "rm", "agent.cam"], &none);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = go(&["output", "-raw", "vault_secret"], &key);
    assert_eq!(r.stdout, secret);
    // A wrong key is reported.
    let wrong: BTreeMap<String, String> = [("KDEPLOY_STATE_KEY".to_string(), "wrong".to_string())].into();
    let r = go(&["state", "list"], &wrong);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("another key"), "{}", r.stderr);
}
