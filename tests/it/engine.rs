//! Engine behaviour through the CLI and the engine API, with the fake provider: plans of every
//! action, saved and stale plans, parallelism and ordering, failures, crashes and interrupts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kdeploy::apply::{ApplyOptions, Quiet};
use kdeploy::engine::{self, VarSource};
use kdeploy_provider::Value;
use kdeploy_provider::fake::FakeWorld;
use kdeploy_state::{LocalStore, State, StateError, StateStore};

use crate::support::{TestStack, basic_stack, fake_providers, run, run_with};

const CAMS: &[(&str, &str)] = &[("a", "rtsp://10.0.0.1/s1"), ("b", "rtsp://10.0.0.2/s1")];

fn applied(cams: &[(&str, &str)]) -> (TestStack, FakeWorld) {
    let s = TestStack::new(&[("main.hcl", &basic_stack(cams))]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "apply failed:\n{}{}", r.stdout, r.stderr);
    (s, w)
}

#[test]
fn apply_from_empty_creates_everything_then_plan_shows_no_changes() {
    let (s, w) = applied(CAMS);
    let objects = w.objects();
    let names: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(names, ["agent.cam[\"a\"]", "agent.cam[\"b\"]", "cluster.edge", "database.meta", "object_storage.rec", "vault.main"]);
    let state = s.state();
    assert_eq!(state.resources.len(), 6);
    assert!(state.pending.is_empty());
    assert_eq!(state.outputs["vault_url"].value, serde_json::json!("fake://vault.main"));
    assert!(state.outputs["vault_secret"].sensitive);
    // The agent got the vault's generated keys through the reference.
    let agent = w.object("agent.cam[\"a\"]").unwrap();
    assert_eq!(agent.as_map().unwrap()["vault"], Value::string("vault.main"));

    let r = run(s.path(), &w, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
}

#[test]
fn changed_camera_url_is_one_in_place_update() {
    let (s, w) = applied(CAMS);
    s.write("main.hcl", &basic_stack(&[("a", "rtsp://10.0.0.9/s1"), ("b", "rtsp://10.0.0.2/s1")]));
    let r = run(s.path(), &w, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("# agent.cam[\"a\"] will be updated in place"), "{}", r.stdout);
    assert!(r.stdout.contains("~ rtsp_url = \"rtsp://10.0.0.1/s1\" -> \"rtsp://10.0.0.9/s1\""), "{}", r.stdout);
    assert!(r.stdout.contains("Plan: 0 to add, 1 to change, 0 to destroy."), "{}", r.stdout);
    w.clear_calls();
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let calls: Vec<String> = w.calls().iter().map(|c| format!("{} {}", c.op, c.address)).collect();
    assert_eq!(calls, ["apply agent.cam[\"a\"]"]);
    assert_eq!(w.object("agent.cam[\"a\"]").unwrap().as_map().unwrap()["rtsp_url"], Value::string("rtsp://10.0.0.9/s1"));
}

#[test]
fn adding_and_removing_cameras_create_and_delete_one_each() {
    let (s, w) = applied(CAMS);
    s.write("main.hcl", &basic_stack(&[("a", "rtsp://10.0.0.1/s1"), ("c", "rtsp://10.0.0.3/s1")]));
    let r = run(s.path(), &w, &["plan"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("# agent.cam[\"c\"] will be created"), "{}", r.stdout);
    assert!(r.stdout.contains("# agent.cam[\"b\"] will be destroyed\n  # (because its key is no longer in for_each)"), "{}", r.stdout);
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 1 to destroy."), "{}", r.stdout);
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(w.object("agent.cam[\"b\"]").is_none());
    assert!(w.object("agent.cam[\"c\"]").is_some());
    assert!(s.state().resource(&"agent.cam[\"b\"]".parse().unwrap()).is_none());
}

#[test]
fn force_new_attribute_replaces_and_says_why() {
    let (s, w) = applied(CAMS);
    let password = w.object("database.meta").unwrap().as_map().unwrap()["admin_password"].clone();
    assert!(password.as_str().is_some_and(|p| p.starts_with("gen-")));
    let text = basic_stack(CAMS).replace("type = \"mongodb\"", "type = \"mongodb\"\n  namespace = \"db\"");
    s.write("main.hcl", &text);
    let r = run(s.path(), &w, &["plan"]);
    assert!(r.stdout.contains("# database.meta must be replaced"), "{}", r.stdout);
    assert!(r.stdout.contains("-/+ database.meta {"), "{}", r.stdout);
    assert!(r.stdout.lines().any(|l| l.trim_start().starts_with("+ namespace") && l.ends_with("= \"db\" # forces replacement")), "{}", r.stdout);
    w.clear_calls();
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ops: Vec<String> = w.calls().iter().filter(|c| c.address == "database.meta").map(|c| c.op.to_string()).collect();
    assert_eq!(ops, ["delete", "apply"], "delete then create");
    assert_eq!(w.object("database.meta").unwrap().as_map().unwrap()["namespace"], Value::string("db"));
    // Generated secrets outlive the replacement (the data volume was initialised with them) ...
    assert_eq!(w.object("database.meta").unwrap().as_map().unwrap()["admin_password"], password);
    // ... and a recreation after an out-of-band delete.
    w.remove("database.meta");
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(w.object("database.meta").unwrap().as_map().unwrap()["admin_password"], password);
}

#[test]
fn replace_flag_and_create_before_destroy() {
    let (s, w) = applied(CAMS);
    let r = run(s.path(), &w, &["plan", "-replace", "vault.main"]);
    assert!(r.stdout.contains("# vault.main must be replaced\n  # (because replacement was requested with -replace)"), "{}", r.stdout);
    let text =
        basic_stack(CAMS).replace("storage  = object_storage.rec", "storage  = object_storage.rec\n  lifecycle {\n    create_before_destroy = true\n  }");
    s.write("main.hcl", &text);
    w.clear_calls();
    let r = run(s.path(), &w, &["apply", "--auto-approve", "-replace=vault.main"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("+/- vault.main {"), "{}", r.stdout);
    let ops: Vec<String> = w.calls().iter().filter(|c| c.address == "vault.main").map(|c| c.op.to_string()).collect();
    assert_eq!(ops, ["apply", "delete"], "create before destroy");
    assert!(w.object("vault.main").is_some(), "the new object survives the delete of the old one");
}

#[test]
fn saved_plan_is_applied_exactly_and_refused_when_stale() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["plan", "-out", "p.kdplan"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("To perform exactly these actions, run: kdeploy apply p.kdplan"));
    assert!(w.objects().is_empty(), "plan changes nothing");
    // Changing a variable source after the plan does not change what a saved plan applies.
    let r = run_with(s.path(), fake_providers(&w), &["apply", "p.kdplan"], [("KDEPLOY_VAR_cameras".to_string(), "{x = \"y\"}".to_string())].into(), "");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(w.objects().len(), 6);
    assert!(w.object("agent.cam[\"x\"]").is_none());
    // Applying it again: the state moved on.
    let r = run(s.path(), &w, &["apply", "p.kdplan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Saved plan is stale"), "{}", r.stderr);
    assert!(r.stderr.contains("the plan was made before any state existed, but state has been written since"), "{}", r.stderr);
    assert_eq!(w.objects().len(), 6, "no duplicates");

    // A plan made against state is refused once the state has moved on.
    s.write("main.hcl", &basic_stack(&[("a", "rtsp://changed")]));
    let r = run(s.path(), &w, &["plan", "-out", "p2.kdplan"]);
    assert_eq!(r.code, 0);
    let r = run(s.path(), &w, &["state", "rm", "agent.cam[\"b\"]"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(s.path(), &w, &["apply", "p2.kdplan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("the state changed since the plan was made (serial"), "{}", r.stderr);

    // Sources changed since the plan.
    let r = run(s.path(), &w, &["plan", "-out", "q.kdplan"]);
    assert_eq!(r.code, 0);
    s.write("extra.hcl", "locals {\n  x = 1\n}\n");
    let before = s.state().serial;
    let r = run(s.path(), &w, &["apply", "q.kdplan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("the stack's source files changed since the plan was made"), "{}", r.stderr);
    assert_eq!(s.state().serial, before, "nothing written");
}

#[test]
fn plan_made_against_another_lineage_is_refused() {
    let (s, w) = applied(CAMS);
    s.write("main.hcl", &basic_stack(&[("a", "rtsp://changed")]));
    let r = run(s.path(), &w, &["plan", "-out", "p.kdplan"]);
    assert_eq!(r.code, 0);
    // Replace the state with one of another lineage (same serial).
    let old = s.state();
    let mut other = State::new("test");
    other.serial = old.serial;
    other.resources = old.resources.clone();
    std::fs::write(s.state_path(), kdeploy_state::encode(&other)).unwrap();
    let r = run(s.path(), &w, &["apply", "p.kdplan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("lineage"), "{}", r.stderr);
}

fn many_cams(n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("c{i:02}"), format!("rtsp://10.0.1.{i}/s"))).collect()
}

#[test]
fn parallelism_cap_and_dependency_order_are_kept() {
    let cams = many_cams(12);
    let refs: Vec<(&str, &str)> = cams.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let s = TestStack::new(&[("main.hcl", &basic_stack(&refs))]);
    let w = FakeWorld::new();
    w.default_delay(Duration::from_millis(60));
    let r = run(s.path(), &w, &["apply", "--auto-approve", "--parallelism", "3"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(w.max_concurrency(), 3, "12 independent agents must fill exactly 3 slots");
    let calls = w.calls();
    let end_of = |a: &str| calls.iter().find(|c| c.address == a).map(|c| c.end).unwrap();
    let start_of = |a: &str| calls.iter().find(|c| c.address == a).map(|c| c.start).unwrap();
    for c in calls.iter().filter(|c| c.address.starts_with("agent.")) {
        assert!(end_of("vault.main") <= c.start, "{} started before vault.main finished", c.address);
    }
    assert!(end_of("database.meta") <= start_of("vault.main"));
    assert!(end_of("object_storage.rec") <= start_of("vault.main"));
    assert!(end_of("cluster.edge") <= start_of("database.meta"));

    // Destroy runs in reverse order.
    w.clear_calls();
    let r = run(s.path(), &w, &["destroy", "--auto-approve", "--parallelism", "4"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(w.objects().is_empty());
    let calls = w.calls();
    let end_of = |a: &str| calls.iter().find(|c| c.address == a).map(|c| c.end).unwrap();
    let start_of = |a: &str| calls.iter().find(|c| c.address == a).map(|c| c.start).unwrap();
    for c in calls.iter().filter(|c| c.address.starts_with("agent.")) {
        assert!(c.end <= start_of("vault.main"), "vault deleted before {}", c.address);
    }
    assert!(end_of("vault.main") <= start_of("database.meta"));
    assert!(end_of("database.meta") <= start_of("cluster.edge"));
    assert!(r.stdout.contains("Destroy complete! Resources: 16 destroyed."), "{}", r.stdout);
    assert!(s.state().resources.is_empty());
}

#[test]
fn waits_for_readiness_do_not_hold_parallelism_slots_and_dependents_start_after_them() {
    let cams = many_cams(12);
    let refs: Vec<(&str, &str)> = cams.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let s = TestStack::new(&[("main.hcl", &basic_stack(&refs))]);
    let w = FakeWorld::new();
    w.default_delay(Duration::from_millis(30));
    // No agent is ready before all 12 were written: with waits holding the 3 slots, the 4th
    // agent would never be written and every wait would time out.
    w.ready_together("agent.", 12);
    w.ready_after("vault.main", Duration::from_millis(50));
    let r = run(s.path(), &w, &["apply", "--auto-approve", "--parallelism", "3"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(w.max_concurrency(), 3, "writes still fill exactly 3 slots");
    assert!(w.max_waiting() >= 11, "the agents waited together: {}", w.max_waiting());
    let calls = w.calls();
    let vault_ready = calls.iter().find(|c| c.op == "wait" && c.address == "vault.main").expect("vault.main waited").end;
    for c in calls.iter().filter(|c| c.op == "apply" && c.address.starts_with("agent.")) {
        assert!(vault_ready <= c.start, "{} was written before vault.main was ready", c.address);
    }
    let state = s.state();
    assert_eq!(state.resources.len(), 16);
    assert!(state.pending.is_empty());
}

#[test]
fn a_failure_skips_dependents_only_and_reports_the_root_cause_once() {
    let s = TestStack::new(&[("main.hcl", &(basic_stack(CAMS) + "\nbroker \"events\" {\n  type = \"rabbitmq\"\n}\n"))]);
    let w = FakeWorld::new();
    w.fail("vault.main", "vault exploded");
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("vault.main: failed: vault exploded"), "{}", r.stdout);
    assert!(r.stderr.contains("Apply failed: 4 done, 1 failed, 2 skipped, 0 not started."), "{}", r.stderr);
    assert!(r.stderr.contains("skipped: agent.cam[\"a\"], agent.cam[\"b\"] (because vault.main failed)"), "{}", r.stderr);
    assert_eq!(r.stderr.matches("vault exploded").count(), 1, "root cause once:\n{}", r.stderr);
    // The independent branch finished and is recorded.
    let state = s.state();
    assert!(state.resource(&"broker.events".parse().unwrap()).is_some());
    assert!(state.resource(&"vault.main".parse().unwrap()).is_none());
    assert!(state.resource(&"agent.cam[\"a\"]".parse().unwrap()).is_none());
    assert!(state.pending.is_empty());
    // Fix it and converge.
    w.heal("vault.main");
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("Apply complete! Resources: 3 added, 0 changed, 0 destroyed."), "{}", r.stdout);
}

/// A store that fails on its Nth write, as if the process died right before it.
struct CrashingStore {
    inner: LocalStore,
    writes: usize,
    crash_at: usize,
}

impl StateStore for CrashingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn read(&mut self) -> Result<Option<State>, StateError> {
        self.inner.read()
    }
    fn write(&mut self, state: &State) -> Result<(), StateError> {
        self.writes += 1;
        if self.writes == self.crash_at {
            return Err(StateError::NotLocked { path: "simulated crash".into() });
        }
        self.inner.write(state)
    }
    fn lock(&mut self, info: kdeploy_state::LockInfo, timeout: Duration) -> Result<(), StateError> {
        self.inner.lock(info, timeout)
    }
    fn unlock(&mut self) -> Result<(), StateError> {
        self.inner.unlock()
    }
    fn lock_info(&mut self) -> Result<Option<kdeploy_state::LockInfo>, StateError> {
        self.inner.lock_info()
    }
    fn force_unlock(&mut self, id: &str) -> Result<(), StateError> {
        self.inner.force_unlock(id)
    }
}

#[test]
fn crash_between_provider_call_and_state_write_converges_without_duplicates() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let providers = fake_providers(&w);
        let loaded = engine::load(s.path(), &[], &BTreeMap::new(), &VarSource::Inputs, false).ok().expect("loads");
        // Write 1 records cluster.edge as pending; write 2 would record its result: crash there.
        let store = CrashingStore { inner: LocalStore::new(s.state_path()), writes: 0, crash_at: 2 };
        let (mut store, mut state) = engine::lock_and_read(Box::new(store), "apply", Duration::ZERO).unwrap();
        let plan = engine::plan(&loaded, &state, &providers, &Default::default()).await.unwrap();
        let plan = kdeploy::plan::Plan { options: kdeploy::plan::PlanOptions { refresh: true, ..plan.options.clone() }, ..plan };
        let outcome = engine::apply(
            &loaded,
            &plan,
            &mut state,
            &mut *store,
            &providers,
            ApplyOptions { parallelism: 1, ..Default::default() },
            &mut Quiet,
            Arc::new(tokio::sync::Notify::new()),
        )
        .await;
        assert!(outcome.state_error.is_some(), "{outcome:?}");
        store.release().unwrap();
    });
    // On disk: the pending create of the cluster, no resources; live: the cluster exists.
    let state = s.state();
    assert!(state.resources.is_empty());
    assert_eq!(state.pending.len(), 1);
    assert_eq!(state.pending[0].address.to_string(), "cluster.edge");
    assert!(w.object("cluster.edge").is_some());

    let r = run(s.path(), &w, &["plan"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("A previous run was interrupted while it was creating cluster.edge"), "{}", r.stdout);
    assert!(r.stdout.contains("# cluster.edge will be updated in place\n  # (because an interrupted run left this operation unfinished)"), "{}", r.stdout);
    w.clear_calls();
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // No second cluster was created: the recovery only recorded it.
    let cluster_calls = w.calls().iter().filter(|c| c.address == "cluster.edge").count();
    assert_eq!(cluster_calls, 1);
    let state = s.state();
    assert!(state.pending.is_empty());
    assert_eq!(state.resources.len(), 6);
    let r = run(s.path(), &w, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn interrupt_stops_scheduling_lets_running_finish_and_saves_state() {
    let cams = many_cams(6);
    let refs: Vec<(&str, &str)> = cams.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let s = TestStack::new(&[("main.hcl", &basic_stack(&refs))]);
    let w = FakeWorld::new();
    w.default_delay(Duration::from_millis(150));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt.block_on(async {
        let providers = fake_providers(&w);
        let loaded = engine::load(s.path(), &[], &BTreeMap::new(), &VarSource::Inputs, false).ok().expect("loads");
        let (mut store, mut state) = engine::lock_and_read(Box::new(LocalStore::new(s.state_path())), "apply", Duration::ZERO).unwrap();
        let plan = engine::plan(&loaded, &state, &providers, &kdeploy::plan::PlanOptions { refresh: true, ..Default::default() }).await.unwrap();
        let interrupt = Arc::new(tokio::sync::Notify::new());
        let i2 = interrupt.clone();
        tokio::spawn(async move {
            // cluster.edge is running now.
            tokio::time::sleep(Duration::from_millis(60)).await;
            i2.notify_one();
        });
        let o =
            engine::apply(&loaded, &plan, &mut state, &mut *store, &providers, ApplyOptions { parallelism: 2, ..Default::default() }, &mut Quiet, interrupt)
                .await;
        store.release().unwrap();
        o
    });
    assert!(outcome.interrupted);
    assert_eq!(outcome.done.len(), 1, "only the running operation finished: {outcome:?}");
    assert_eq!(outcome.not_started.len(), 9);
    let state = s.state();
    assert_eq!(state.resources.len(), 1, "the finished operation is recorded");
    assert!(state.pending.is_empty());
}

#[test]
fn drift_is_shown_apart_from_changes() {
    let (s, w) = applied(CAMS);
    w.set_attr("agent.cam[\"a\"]", "rtsp_url", Value::string("rtsp://edited-by-hand"));
    w.remove("agent.cam[\"b\"]");
    let r = run(s.path(), &w, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let drift_at = r.stdout.find("Note: Objects have changed outside of kdeploy").expect("drift section");
    let plan_at = r.stdout.find("kdeploy will perform the following actions").expect("changes");
    assert!(drift_at < plan_at);
    assert!(r.stdout.contains("# agent.cam[\"a\"] has changed"), "{}", r.stdout);
    assert!(r.stdout.contains("~ rtsp_url = \"rtsp://10.0.0.1/s1\" -> \"rtsp://edited-by-hand\""), "{}", r.stdout);
    assert!(r.stdout.contains("# agent.cam[\"b\"] has been deleted"), "{}", r.stdout);
    assert!(r.stdout.contains("# agent.cam[\"b\"] will be created\n  # (because it was deleted outside kdeploy)"), "{}", r.stdout);
    assert!(r.stdout.contains("Plan: 1 to add, 1 to change, 0 to destroy."), "{}", r.stdout);
    let r = run(s.path(), &w, &["plan", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["resource_drift"].as_array().unwrap().len(), 2);
    assert_eq!(j["resource_drift"][1]["change"]["actions"], serde_json::json!(["delete"]));
    // Refresh-only accepts the live values without touching anything.
    w.clear_calls();
    let r = run(s.path(), &w, &["apply", "--auto-approve", "--refresh-only"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(w.calls().is_empty());
    let st = s.state();
    assert!(st.resource(&"agent.cam[\"b\"]".parse().unwrap()).is_none());
    assert_eq!(st.resource(&"agent.cam[\"a\"]".parse().unwrap()).unwrap().attributes["rtsp_url"], "rtsp://edited-by-hand");
}

#[test]
fn target_limits_the_plan_to_the_target_and_its_dependencies() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["plan", "-target", "agent.cam[\"a\"]"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("Plan: 5 to add, 0 to change, 0 to destroy."), "{}", r.stdout);
    assert!(!r.stdout.contains("agent.cam[\"b\"]"), "{}", r.stdout);
    let r = run(s.path(), &w, &["plan", "-target", "agent.nope"]);
    assert!(r.stdout.contains("No components matched -target"), "{}{}", r.stdout, r.stderr);
    let r = run(s.path(), &w, &["plan", "-target", "bogus"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Invalid -target address"), "{}", r.stderr);
}

#[test]
fn prevent_destroy_blocks_destroy_and_replacement() {
    let text = basic_stack(CAMS).replace("type = \"mongodb\"", "type = \"mongodb\"\n  lifecycle {\n    prevent_destroy = true\n  }");
    let s = TestStack::new(&[("main.hcl", &text)]);
    let w = FakeWorld::new();
    assert_eq!(run(s.path(), &w, &["apply", "--auto-approve"]).code, 0);
    let r = run(s.path(), &w, &["destroy", "--auto-approve"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("error: Instance cannot be destroyed"), "{}", r.stderr);
    assert!(r.stderr.contains("database.meta has lifecycle.prevent_destroy set"), "{}", r.stderr);
    assert_eq!(w.objects().len(), 6, "nothing destroyed");
    let r = run(s.path(), &w, &["plan", "-replace", "database.meta"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Instance cannot be destroyed"), "{}", r.stderr);
    // A targeted destroy that leaves the protected database alone is not blocked by it, and
    // says that the plan is partial.
    let r = run(s.path(), &w, &["destroy", "--auto-approve", "-target", "agent.cam[\"a\"]"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Resource targeting is in effect"), "{}", r.stdout);
    assert!(w.object("agent.cam[\"a\"]").is_none() && w.object("database.meta").is_some());
    // Targeting the database (or what it needs to go first) is still refused.
    let r = run(s.path(), &w, &["destroy", "--auto-approve", "-target", "database.meta"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("database.meta has lifecycle.prevent_destroy set"), "{}", r.stderr);
}

#[test]
fn apply_without_approval_in_non_interactive_use_fails_fast() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["apply"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Approval required"), "{}", r.stderr);
    assert!(r.stderr.contains("--auto-approve"), "{}", r.stderr);
    assert!(w.objects().is_empty());
    // Interactive: only "yes" approves.
    let r = run_with(s.path(), fake_providers(&w), &["apply"], BTreeMap::new(), "no\n");
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("Apply cancelled."));
    assert!(w.objects().is_empty());
    let r = run_with(s.path(), fake_providers(&w), &["apply"], BTreeMap::new(), "yes\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(w.objects().len(), 6);
}

#[test]
fn sensitive_values_are_never_printed() {
    let text = basic_stack(CAMS).replace(
        "database \"meta\" {\n  type = \"mongodb\"\n}",
        "variable \"db_password\" {\n  type      = string\n  sensitive = true\n}\n\ndatabase \"meta\" {\n  type     = \"mongodb\"\n  password = var.db_password\n}",
    );
    let s = TestStack::new(&[("main.hcl", &text)]);
    let w = FakeWorld::new();
    let secret = "hunter2-very-secret";
    let vars: BTreeMap<String, String> = [("KDEPLOY_VAR_db_password".to_string(), secret.to_string())].into();
    let mut outputs = String::new();
    for args in [
        &["plan"][..],
        &["plan", "--json"],
        &["apply", "--auto-approve"],
        &["show"],
        &["show", "--json"],
        &["state", "show", "database.meta"],
        &["state", "show", "vault.main"],
        &["output"],
        &["output", "--json"],
    ] {
        let r = run_with(s.path(), fake_providers(&w), args, vars.clone(), "");
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        outputs.push_str(&r.stdout);
        outputs.push_str(&r.stderr);
    }
    let generated = w.object("vault.main").unwrap().as_map().unwrap()["secret_key"].as_str().unwrap().to_string();
    assert!(generated.starts_with("gen-"));
    assert!(!outputs.contains(secret), "the variable leaked:\n{outputs}");
    assert!(!outputs.contains(&generated), "the generated key leaked:\n{outputs}");
    assert!(outputs.contains("password") && outputs.contains("(sensitive value)"));
    // Asked for by name, a sensitive output is printed (how users read generated keys).
    let r = run(s.path(), &w, &["output", "--raw", "vault_secret"]);
    assert_eq!(r.stdout, generated);
}

#[test]
fn modules_pass_components_in_and_outputs_out() {
    let module = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/modules/camera-agents/main.hcl")).unwrap();
    let root = basic_stack(&[("a", "rtsp://x")]).replace("agent \"cam\"", "agent \"unused\"").replace(
        "  for_each = var.cameras\n  vault    = vault.main\n  rtsp_url = each.value\n",
        "  count    = 0\n  vault    = vault.main\n  rtsp_url = \"x\"\n",
    ) + r#"
module "site" {
  for_each = { north = "Europe/Oslo", south = "Europe/Rome" }
  source   = "./modules/camera-agents"
  vault    = vault.main
  timezone = each.value
  cameras  = { gate = { rtsp = "rtsp://${each.key}/1", sub = "rtsp://${each.key}/2" } }
}

output "keys" {
  value = { for k, m in module.site : k => m.agent_keys }
}

output "north_count" {
  value = module.site["north"].outputs.count
}
"#;
    let s = TestStack::new(&[("main.hcl", &root), ("modules/camera-agents/main.hcl", &module)]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["graph", "--format", "text"]);
    assert!(r.stdout.contains("module.site[\"north\"].agent.cam[\"gate\"]\n  depends on: cluster.edge, vault.main"), "{}", r.stdout);
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let agent = w.object("module.site[\"south\"].agent.cam[\"gate\"]").expect("module instance created");
    let m = agent.as_map().unwrap();
    assert_eq!(m["timezone"], Value::string("Europe/Rome"));
    assert_eq!(m["rtsp_url"], Value::string("rtsp://south/1"));
    assert_eq!(m["vault"], Value::string("vault.main"));
    let st = s.state();
    assert_eq!(st.outputs["north_count"].value, serde_json::json!(1));
    let key = w.object("module.site[\"north\"].agent.cam[\"gate\"]").unwrap().as_map().unwrap()["key"].clone();
    assert_eq!(st.outputs["keys"].value["north"]["gate"], key.to_json());
    let r = run(s.path(), &w, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    // Removing a module instance deletes what it held.
    s.write("main.hcl", &root.replace("south = \"Europe/Rome\" ", ""));
    let r = run(s.path(), &w, &["plan"]);
    assert!(
        r.stdout.contains("# module.site[\"south\"].agent.cam[\"gate\"] will be destroyed\n  # (because its module call is no longer in the stack)"),
        "{}",
        r.stdout
    );
}

#[test]
fn refresh_false_plans_from_recorded_state() {
    let (s, w) = applied(CAMS);
    w.remove("agent.cam[\"a\"]");
    let r = run(s.path(), &w, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "no read, so no drift: {}", r.stdout);
    assert!(w.read_batches().is_empty());
    let r = run(s.path(), &w, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2);
    assert_eq!(w.read_batches(), [6], "one batched read for the one provider");
}

#[test]
fn preflight_errors_stop_the_plan_with_the_providers_message() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    w.preflight_error("the add-on dns is missing: run `microk8s enable dns`");
    let r = run(s.path(), &w, &["plan"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("error: Cluster not ready"), "{}", r.stderr);
    assert!(r.stderr.contains("cluster.edge: the add-on dns is missing: run `microk8s enable dns`"), "{}", r.stderr);
    assert!(r.stderr.contains("main.hcl:11:1"), "points at the cluster block: {}", r.stderr);
}

#[test]
fn in_cluster_changes_wait_for_a_cluster_the_plan_creates() {
    let text = basic_stack(CAMS).replace("cluster \"edge\" {\n  type = \"docker\"\n}", "cluster \"edge\" {\n  type   = \"eks\"\n  region = \"eu-west-1\"\n}");
    let s = TestStack::new(&[("main.hcl", &text)]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["plan"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("# vault.main will be created (deferred until cluster.edge exists)"), "{}", r.stdout);
    assert!(r.stdout.contains("# cluster.edge will be created\n"), "{}", r.stdout);
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 0 to destroy. 5 more deferred until their cluster exists."), "{}", r.stdout);
    let r = run(s.path(), &w, &["plan", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["summary"]["deferred"], 5);
    // One apply does both phases: the cluster, then what runs in it.
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(w.objects().len(), 6);
    let calls = w.calls();
    let cluster_end = calls.iter().find(|c| c.address == "cluster.edge").unwrap().end;
    assert!(calls.iter().filter(|c| c.address != "cluster.edge").all(|c| c.start >= cluster_end));
    let r = run(s.path(), &w, &["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    // A new region replaces the cluster, and everything in it is created again there.
    s.write("main.hcl", &text.replace("eu-west-1", "eu-central-1"));
    let r = run(s.path(), &w, &["plan"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("# cluster.edge must be replaced"), "{}", r.stdout);
    assert!(
        r.stdout.contains("# vault.main must be replaced (deferred until cluster.edge exists)\n  # (because the cluster it runs in is replaced)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 1 to destroy. 5 more deferred until their cluster exists."), "{}", r.stdout);
}

/// The apply order of `options`'s plan for the stack in `s`, as text.
fn apply_order(s: &TestStack, w: &FakeWorld, options: kdeploy::plan::PlanOptions) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let providers = fake_providers(w);
        let loaded = engine::load(s.path(), &[], &BTreeMap::new(), &VarSource::Inputs, false).ok().expect("loads");
        let state = if s.state_path().exists() { s.state() } else { State::new("test") };
        let plan = engine::plan(&loaded, &state, &providers, &kdeploy::plan::PlanOptions { refresh: true, ..options }).await.unwrap();
        let changes: Vec<&kdeploy::plan::Change> = plan.changes.iter().filter(|c| c.action.mutates()).collect();
        kdeploy::apply::order::render(&changes, &kdeploy::apply::order::waits(&changes, &state))
    })
}

#[test]
fn apply_order_creates_after_dependencies_deletes_before_dependents() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    let mut text = String::from("## create\n");
    text.push_str(&apply_order(&s, &w, Default::default()));
    assert_eq!(run(s.path(), &w, &["apply", "--auto-approve"]).code, 0);
    // Camera b leaves; the vault is replaced, the new one first.
    let cbd =
        basic_stack(&CAMS[..1]).replace("storage  = object_storage.rec", "storage  = object_storage.rec\n  lifecycle {\n    create_before_destroy = true\n  }");
    s.write("main.hcl", &cbd);
    text.push_str("## replace the vault (create_before_destroy), remove a camera\n");
    text.push_str(&apply_order(&s, &w, kdeploy::plan::PlanOptions { replace: vec!["vault.main".into()], ..Default::default() }));
    text.push_str("## destroy\n");
    text.push_str(&apply_order(&s, &w, kdeploy::plan::PlanOptions { destroy: true, ..Default::default() }));
    insta::assert_snapshot!("apply_order", text);
}

#[test]
fn references_pass_through_locals_and_outputs_and_objects_hold_only_attributes() {
    // A reference is recognised by what the language knows (the value is that component's
    // object), wherever the object travelled: a local map, a for_each value; the object
    // itself carries only the component's attributes (no internal `address` key).
    let stack = basic_stack(&[("a", "rtsp://10.0.0.1/s1")])
        + r#"
locals {
  vaults = { central = vault.main }
}

agent "door" {
  for_each = { front = vault.main }
  vault    = each.value
  rtsp_url = "rtsp://10.0.0.9/s1"
}

agent "gate" {
  vault    = local.vaults["central"]
  rtsp_url = "rtsp://10.0.0.8/s1"
}

output "vault_object_keys" {
  value = keys(vault.main)
}
"#;
    let s = TestStack::new(&[("main.hcl", &stack)]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for agent in ["agent.door[\"front\"]", "agent.gate"] {
        assert_eq!(w.object(agent).unwrap().as_map().unwrap()["vault"], Value::string("vault.main"), "{agent}");
        let deps = s.state().resource(&agent.parse().unwrap()).unwrap().dependencies.clone();
        assert!(deps.iter().any(|d| d.to_string() == "vault.main"), "{agent}: {deps:?}");
    }
    let keys = s.state().outputs["vault_object_keys"].value.clone();
    let keys: Vec<&str> = keys.as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(keys.contains(&"url") && !keys.contains(&"address"), "{keys:?}");
}

#[test]
fn a_reference_across_clusters_is_a_diagnostic_naming_both_components_and_clusters() {
    let stack = r#"stack "test" {}

cluster "central" {
  type = "docker"
}

cluster "site" {
  type = "docker"
}

database "meta" {
  cluster = cluster.site
  type    = "mongodb"
}

object_storage "rec" {
  cluster = cluster.central
  type    = "minio"
}

vault "main" {
  cluster  = cluster.central
  database = database.meta
  storage  = object_storage.rec
}

agent "door" {
  cluster  = cluster.site
  vault    = vault.main
  rtsp_url = "rtsp://10.0.0.9/s1"
}
"#;
    let s = TestStack::new(&[("main.hcl", stack)]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["plan"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("Reference across clusters"), "{}", r.stderr);
    assert!(r.stderr.contains("vault.main runs on cluster.central and refers to database.meta, which runs on cluster.site"), "{}", r.stderr);
    assert!(r.stderr.contains("main.hcl:23"), "the database attribute is pointed at: {}", r.stderr);
    assert!(r.stderr.contains("declare database.meta as type \"external\""), "{}", r.stderr);
    // The agent on the site may use the central Vault: it uploads to Vault's external URL
    // (the provider decides; the fake provider's Vault is always exposed).
    assert!(!r.stderr.contains("agent.door runs on"), "{}", r.stderr);
    // Moving the database to the central cluster resolves it.
    std::fs::write(
        s.path().join("main.hcl"),
        stack.replacen("cluster = cluster.site\n  type    = \"mongodb\"", "cluster = cluster.central\n  type    = \"mongodb\"", 1),
    )
    .unwrap();
    let r = run(s.path(), &w, &["plan"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}
