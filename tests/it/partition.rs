//! State partitions (`stack { partition = "cluster" }`), through the real binary: a central
//! test API server running Vault (a stand-in) and two site test API servers with an agent each.
//! A whole apply writes one state per partition; `-partition` plans and applies one site,
//! reading the central values from the central partition's state; two sites applied at the same
//! time both succeed; a lock held on one partition does not block another; the S3 and
//! Kubernetes backends keep each partition in its own object or Secret with its own lock.
#![cfg(feature = "kubernetes")]

use std::path::PathBuf;
use std::time::Duration;

use kdeploy_kube_testserver::{Options, TestServer};
use kdeploy_standins::vault::Release;

use crate::support::{Out, TestStack, binary, central_services, normalize, run_binary, vault_standin};

/// A central cluster with Vault (NodePort, so its external URL is known at plan) and one
/// cluster and one agent per site; `stack_attrs` go into the stack block.
fn fleet(stack_attrs: &str) -> String {
    format!(
        r#"stack "fleet" {{
{stack_attrs}}}

variable "central" {{
  type = string
}}

variable "edges" {{
  type = map(string)
}}

variable "stream" {{
  default = "stream1"
}}

{central}
vault "central" {{
  cluster      = cluster.central
  database     = database.meta
  storage      = object_storage.recordings
  service_type = "NodePort"
  accounts     = {{ for name, kubeconfig in var.edges : name => {{ directory = name }} }}
}}

cluster "site" {{
  for_each   = var.edges
  type       = "kubernetes"
  kubeconfig = each.value
  context    = "test"
}}

agent "door" {{
  for_each    = var.edges
  cluster     = cluster.site[each.key]
  vault       = vault.central
  account     = each.key
  camera_name = "door"
  rtsp_url    = "rtsp://10.10.1.21/${{var.stream}}"
}}

output "vault_url" {{
  value = vault.central.external_url
}}
"#,
        central = central_services("var.central")
    )
}

struct Fleet {
    central: TestServer,
    edges: [TestServer; 2],
    s: TestStack,
}

const PARTITIONED: &str = "  partition = \"cluster\"\n";

fn start(stack_attrs: &str) -> Fleet {
    let central = TestServer::start(Options::default());
    vault_standin(&central, "kerberos-vault", "vault-central", Release::Current);
    let edges = [TestServer::start(Options::default()), TestServer::start(Options::default())];
    let s = TestStack::new(&[("main.hcl", &fleet(stack_attrs))]);
    let dir = |name: &str| s.path().join(name);
    let central_kc = central.write_kubeconfig(&dir("central"), "test").display().to_string();
    let edge_kc: Vec<String> = edges.iter().zip(["north", "south"]).map(|(e, n)| e.write_kubeconfig(&dir(n), "test").display().to_string()).collect();
    s.write("fleet.auto.kdvars", &format!("central = \"{central_kc}\"\nedges = {{\n  north = \"{}\"\n  south = \"{}\"\n}}\n", edge_kc[0], edge_kc[1]));
    Fleet { central, edges, s }
}

impl Fleet {
    fn run(&self, args: &[&str]) -> Out {
        run_binary(self.s.path(), &[], args)
    }

    fn partition_file(&self, name: &str) -> PathBuf {
        self.s.path().join(".kdeploy").join(format!("state.{name}.json"))
    }

    fn partition(&self, name: &str) -> kdeploy_state::State {
        let bytes = std::fs::read(self.partition_file(name)).unwrap_or_else(|e| panic!("partition {name}: {e}"));
        kdeploy_state::decode(&bytes, name).unwrap()
    }

    fn stream_of(&self, edge: usize, site: &str) -> String {
        let env = self.edges[edge].workload_env("apps/v1", "Deployment", "kerberos-agent", &format!("agent-door-{site}")).expect("the site's agent");
        env["AGENT_CAPTURE_IPCAMERA_RTSP"].clone()
    }
}

/// Removes the south site (its cluster and its agent, in one edit) from the stack.
fn remove_south(f: &Fleet) {
    let vars = std::fs::read_to_string(f.s.path().join("fleet.auto.kdvars")).unwrap();
    let kept: Vec<&str> = vars.lines().filter(|l| !l.trim_start().starts_with("south")).collect();
    f.s.write("fleet.auto.kdvars", &(kept.join("\n") + "\n"));
}

fn south_agent_gone(f: &Fleet) -> bool {
    f.edges[1].workload_env("apps/v1", "Deployment", "kerberos-agent", "agent-door-south").is_none()
}

fn addresses(state: &kdeploy_state::State) -> Vec<String> {
    state.resources.iter().map(|r| r.address.to_string()).collect()
}

#[test]
fn a_partitioned_fleet_keeps_one_state_per_cluster_and_applies_sites_on_their_own() {
    let f = start(PARTITIONED);
    let r = f.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(!f.s.path().join(".kdeploy/state.json").exists(), "no single state");
    assert_eq!(addresses(&f.partition("central")), ["cluster.central", "database.meta", "object_storage.recordings", "vault.central"]);
    assert_eq!(addresses(&f.partition("site-north")), ["agent.door[\"north\"]", "cluster.site[\"north\"]"]);
    assert_eq!(addresses(&f.partition("site-south")), ["agent.door[\"south\"]", "cluster.site[\"south\"]"]);
    let default = f.partition("default");
    assert!(default.resources.is_empty() && default.outputs.contains_key("vault_url"), "the root outputs are in the default partition");
    // state list shows the whole fleet, or one partition.
    let r = f.run(&["state", "list", "-partition=site-north"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), ["agent.door[\"north\"]", "cluster.site[\"north\"]"], "{}", r.text());
    assert_eq!(f.run(&["state", "list"]).stdout.lines().count(), 8);
    let r = f.run(&["state", "list", "-partition=site-west"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("No such partition") && r.stderr.contains("site-north, site-south"), "{}", r.text());
    assert_eq!(f.run(&["plan", "-detailed-exitcode"]).code, 0, "the whole fleet reads every partition");

    // One site: only its components are planned; the central Vault's URL and the site's
    // account keys come from the central partition's state.
    f.s.write("stream.auto.kdvars", "stream = \"stream2\"\n");
    let r = f.run(&["plan", "-partition=site-north", "-detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("agent.door[\"north\"]") && !r.stdout.contains("agent.door[\"south\"]"), "{}", r.text());
    assert!(r.stdout.contains("Plan: 0 to add, 1 to change, 0 to destroy."), "{}", r.text());
    assert!(r.stdout.contains("Partition site-north: only its components are planned"), "the plan names its partition: {}", r.text());

    // Both sites at once: neither waits for nor overwrites the other.
    let central_before = f.partition("central");
    let spawn = |p: &str| {
        let mut c = binary(f.s.path(), &[], &["apply", "-auto-approve", &format!("-partition={p}")]);
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn kdeploy")
    };
    let children = [spawn("site-north"), spawn("site-south")];
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(f.stream_of(0, "north"), "rtsp://10.10.1.21/stream2");
    assert_eq!(f.stream_of(1, "south"), "rtsp://10.10.1.21/stream2");
    for site in ["site-north", "site-south"] {
        let agent = f.partition(site).resources.into_iter().find(|r| r.kind == kdeploy_provider::Kind::Agent).unwrap();
        assert_eq!(agent.attributes["rtsp_url"], "rtsp://10.10.1.21/stream2", "{site}");
    }
    assert_eq!(f.partition("central"), central_before, "a site run never writes the central partition");
    assert_eq!(f.run(&["plan", "-detailed-exitcode"]).code, 0);
    assert!(f.central.object("apps/v1", "Deployment", Some("kerberos-vault"), "vault-central").is_some());
}

#[test]
fn applies_of_two_sites_run_at_the_same_time() {
    let f = start(PARTITIONED);
    assert_eq!(f.run(&["apply", "-auto-approve", "-partition=central"]).code, 0);
    f.s.write("stream.auto.kdvars", "stream = \"stream3\"\n");
    let spawn = |p: &str| {
        let mut c = binary(f.s.path(), &[], &["apply", "-auto-approve", &format!("-partition={p}"), "-lock-timeout=0s"]);
        c.stdout(std::process::Stdio::null()).spawn().expect("spawn kdeploy")
    };
    let (mut north, mut south) = (spawn("site-north"), spawn("site-south"));
    let (n, s) = (north.wait().unwrap(), south.wait().unwrap());
    assert!(n.success() && s.success(), "north {n}, south {s}");
    assert_eq!(f.stream_of(0, "north"), "rtsp://10.10.1.21/stream3");
    assert_eq!(f.stream_of(1, "south"), "rtsp://10.10.1.21/stream3");
    assert_eq!(addresses(&f.partition("site-north")), ["agent.door[\"north\"]", "cluster.site[\"north\"]"]);
    assert_eq!(addresses(&f.partition("site-south")), ["agent.door[\"south\"]", "cluster.site[\"south\"]"]);
}

#[test]
fn a_lock_on_one_partition_does_not_block_another() {
    let f = start(PARTITIONED);
    assert_eq!(f.run(&["apply", "-auto-approve"]).code, 0);
    let mut held = kdeploy_state::LocalStore::new(f.partition_file("site-north"));
    kdeploy_state::StateStore::lock(&mut held, kdeploy_state::LockInfo::new("apply", "test"), Duration::ZERO).unwrap();
    let r = f.run(&["plan", "-partition=site-south", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = f.run(&["plan", "-partition=site-north"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("state.site-north.json"), "the held partition is named: {}", r.text());
    let r = f.run(&["plan"]);
    assert_eq!(r.code, 1, "the whole fleet needs every lock: {}", r.text());
    kdeploy_state::StateStore::unlock(&mut held).unwrap();
    assert_eq!(f.run(&["plan", "-partition=site-north", "-detailed-exitcode"]).code, 0);
}

#[test]
fn partition_errors_name_what_to_do() {
    let f = start(PARTITIONED);
    // A site before the central partition: the Vault it uploads to is not recorded yet.
    let r = f.run(&["plan", "-partition=site-north"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("Value of another partition not recorded"), "{}", r.text());
    assert!(r.stderr.contains("kdeploy apply -partition=central"), "{}", r.text());

    let r = f.run(&["plan", "-partition=nowhere"]);
    insta::assert_snapshot!("partition_unknown", normalize(&r.text(), f.s.path()));

    let bad = TestStack::new(&[("main.hcl", "stack \"x\" {\n  partition = \"site\"\n}\n")]);
    let r = run_binary(bad.path(), &[], &["validate"]);
    insta::assert_snapshot!("partition_invalid_value", normalize(&r.text(), bad.path()));

    let plain = TestStack::new(&[("main.hcl", "stack \"x\" {}\n")]);
    let r = run_binary(plain.path(), &[], &["plan", "-partition=central"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("State is not partitioned"), "{}", r.text());
}

#[test]
fn turning_partitions_on_splits_the_single_state_on_the_next_whole_apply() {
    let f = start("");
    assert_eq!(f.run(&["apply", "-auto-approve"]).code, 0);
    let single = kdeploy_state::decode(&std::fs::read(f.s.path().join(".kdeploy/state.json")).unwrap(), "single").unwrap();
    f.s.write("main.hcl", &fleet(PARTITIONED));
    assert_eq!(f.run(&["plan", "-detailed-exitcode"]).code, 0, "the single state is read until it is split");
    let r = f.run(&["plan", "-partition=site-north"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("not yet split into partitions") && r.stderr.contains("without -partition"), "{}", r.text());

    f.s.write("stream.auto.kdvars", "stream = \"stream4\"\n");
    let r = f.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    for name in ["central", "site-north", "site-south", "default"] {
        assert_eq!(f.partition(name).lineage, single.lineage, "{name} keeps the stack's lineage");
    }
    assert_eq!(addresses(&f.partition("site-south")), ["agent.door[\"south\"]", "cluster.site[\"south\"]"]);
    assert_eq!(f.run(&["plan", "-partition=site-north", "-detailed-exitcode"]).code, 0);

    let serial_south = f.partition("site-south").serial;
    // Turning partitions off again would plan against the single state from before the split
    // (still on disk): every command that reads state refuses, naming the partitions.
    f.s.write("main.hcl", &fleet(""));
    for args in [&["plan"][..], &["apply", "-auto-approve"], &["state", "list"]] {
        let r = f.run(args);
        assert_eq!(r.code, 1, "{args:?}: {}", r.text());
        assert!(r.stderr.contains("State is partitioned") && r.stderr.contains("(central, default, site-north, site-south)"), "{args:?}: {}", r.text());
        assert!(r.stderr.contains("put partition = \"cluster\" back"), "{}", r.text());
    }
    assert_eq!(f.partition("site-south").serial, serial_south, "nothing was written");

    // The way back the README gives: pull the whole fleet while partitioned, delete the
    // partitions, push into the unpartitioned stack over the old single state.
    f.s.write("main.hcl", &fleet(PARTITIONED));
    let pulled = f.run(&["state", "pull"]);
    assert_eq!(pulled.code, 0, "{}", pulled.text());
    f.s.write("fleet.json", &pulled.stdout);
    for name in ["central", "default", "site-north", "site-south"] {
        std::fs::remove_file(f.partition_file(name)).unwrap();
    }
    f.s.write("main.hcl", &fleet(""));
    let r = f.run(&["state", "push", "-force", "fleet.json"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = f.run(&["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "one state again, nothing to change: {}", r.text());
}

#[test]
fn adding_a_site_adds_its_account_and_agent_and_leaves_the_other_site_alone() {
    let f = start(PARTITIONED);
    let both = std::fs::read_to_string(f.s.path().join("fleet.auto.kdvars")).unwrap();
    remove_south(&f);
    assert_eq!(f.run(&["apply", "-auto-approve"]).code, 0);
    let north_version = || {
        let d = f.edges[0].object("apps/v1", "Deployment", Some("kerberos-agent"), "agent-door-north").expect("the north agent");
        d["metadata"]["resourceVersion"].clone()
    };
    let before = north_version();

    f.s.write("fleet.auto.kdvars", &both);
    let r = f.run(&["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("~ vault_configuration = (sensitive value)"), "Vault restarts once to read the new account: {}", r.text());
    assert!(r.stdout.contains("Plan: 2 to add, 1 to change, 0 to destroy."), "the south cluster and agent, and Vault: {}", r.text());
    let r = f.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("vault.central: account \"south\" verified"), "{}", r.text());
    let south = f.edges[1].workload_env("apps/v1", "Deployment", "kerberos-agent", "agent-door-south").expect("the south agent");
    assert_eq!(south.get("AGENT_KERBEROSVAULT_DIRECTORY").map(String::as_str), Some("south"));
    assert_eq!(north_version(), before, "the north agent is not written again");
    assert_eq!(addresses(&f.partition("site-south")), ["agent.door[\"south\"]", "cluster.site[\"south\"]"]);
    assert_eq!(f.run(&["plan", "-detailed-exitcode"]).code, 0);
}

/// The stack with its state on `backend` (inside the stack block), partitioned.
fn with_backend(f: &Fleet, backend: &str) {
    f.s.write("main.hcl", &fleet(&format!("{PARTITIONED}{backend}")));
}

#[test]
fn kubernetes_backend_keeps_each_partition_in_its_own_secret_and_lease() {
    let f = start(PARTITIONED);
    let backend_server = TestServer::start(Options::default());
    let kc = backend_server.write_kubeconfig(&f.s.path().join("backend"), "test");
    with_backend(
        &f,
        &format!(
            "  backend \"kubernetes\" {{\n    namespace     = \"default\"\n    secret_suffix = \"fleet\"\n    kubeconfig    = \"{}\"\n    context       = \"test\"\n  }}\n",
            kc.display()
        ),
    );
    let r = f.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    for name in ["central", "default", "site-north", "site-south"] {
        assert!(backend_server.object("v1", "Secret", Some("default"), &format!("kdeploy-state-fleet-{name}")).is_some(), "{name}: its own Secret");
    }
    assert!(backend_server.object("v1", "Secret", Some("default"), "kdeploy-state-fleet").is_none(), "no single state");
    // A Lease held on one partition blocks that partition only.
    backend_server.put_object(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kdeploy-lock-fleet-site-north", "namespace": "default"},
        "spec": {"holderIdentity": "held-by-another-run", "leaseDurationSeconds": 3600, "acquireTime": now(), "renewTime": now()},
    }));
    let r = f.run(&["plan", "-partition=site-south", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = f.run(&["plan", "-partition=site-north"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("held-by-another-run") && r.stderr.contains("site-north"), "{}", r.text());

    // Removing the south site: a whole apply finds its partition's Secret and deletes its agent.
    backend_server.delete_object("coordination.k8s.io/v1", "Lease", Some("default"), "kdeploy-lock-fleet-site-north");
    remove_south(&f);
    let r = f.run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(south_agent_gone(&f), "the removed site's agent is deleted: {}", r.text());
    assert_eq!(f.stream_of(0, "north"), "rtsp://10.10.1.21/stream1", "the other site untouched");
    let r = f.run(&["state", "list"]);
    assert!(!r.stdout.contains("south") && r.stdout.contains("agent.door[\"north\"]"), "the south partition is emptied: {}", r.text());
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[cfg(feature = "aws")]
#[test]
fn s3_backend_keeps_each_partition_in_its_own_object_and_lock() {
    let Some(moto) = crate::aws::Moto::start() else { return };
    let f = start(PARTITIONED);
    crate::aws::create_bucket(&moto, "fleet-state");
    with_backend(
        &f,
        &format!(
            "  backend \"s3\" {{\n    bucket           = \"fleet-state\"\n    key              = \"fleet/state.json\"\n    region           = \"us-east-1\"\n    endpoint         = \"{}\"\n    force_path_style = true\n  }}\n",
            moto.url
        ),
    );
    let run = |args: &[&str]| crate::aws::kdeploy(f.s.path(), &moto.url, &[], args);
    let r = run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let keys = crate::aws::object_keys(&moto, "fleet-state");
    for name in ["central", "default", "site-north", "site-south"] {
        assert!(keys.contains(&format!("fleet/state.{name}.json")), "{name}: its own object: {keys:?}");
    }
    assert!(!keys.iter().any(|k| k == "fleet/state.json" || k.ends_with(".lock")), "no single state, every lock released: {keys:?}");
    let r = run(&["state", "list"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("agent.door[\"north\"]") && r.stdout.contains("vault.central"), "state list reads every partition: {}", r.text());

    // A lock object on one partition blocks that partition only.
    crate::aws::put_object(&moto, "fleet-state", "fleet/state.site-north.json.lock", held_lock());
    let r = run(&["plan", "-partition=site-south", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = run(&["plan", "-partition=site-north"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("state.site-north.json"), "{}", r.text());

    // Removing the south site: a whole apply finds its partition's object and deletes its agent.
    crate::aws::delete_object(&moto, "fleet-state", "fleet/state.site-north.json.lock");
    remove_south(&f);
    let r = run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(south_agent_gone(&f), "the removed site's agent is deleted: {}", r.text());
    assert_eq!(f.stream_of(0, "north"), "rtsp://10.10.1.21/stream1", "the other site untouched");
    let r = run(&["state", "list"]);
    assert!(!r.stdout.contains("south") && r.stdout.contains("agent.door[\"north\"]"), "the south partition is emptied: {}", r.text());
}

/// A lock object as another run holds it, valid for an hour.
fn held_lock() -> String {
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut info = serde_json::to_value(kdeploy_state::LockInfo::new("apply", "other")).unwrap();
    info["expires"] = serde_json::Value::String(later.format(&time::format_description::well_known::Rfc3339).unwrap());
    info.to_string()
}

#[test]
fn every_partition_is_encrypted_with_the_state_key() {
    let f = start(PARTITIONED);
    let key = [("KDEPLOY_STATE_KEY", "0123456789abcdef0123456789abcdef")];
    let r = run_binary(f.s.path(), &key, &["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    for name in ["central", "site-north", "site-south"] {
        assert!(f.partition(name).encryption.is_some(), "{name} is encrypted");
    }
    let vault = f.partition("central").resources.into_iter().find(|r| r.address.to_string() == "vault.central").unwrap();
    assert!(vault.attributes.as_object().unwrap().values().any(kdeploy_state::crypt::is_encrypted), "Vault's sensitive values are sealed");
    // A site's run opens the central partition's sealed values (its account keys) with the key.
    f.s.write("stream.auto.kdvars", "stream = \"stream5\"\n");
    let r = run_binary(f.s.path(), &key, &["apply", "-auto-approve", "-partition=site-north"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(f.stream_of(0, "north"), "rtsp://10.10.1.21/stream5");
    assert!(f.partition("site-north").encryption.is_some());
}
