//! End-to-end scale benchmark: a generated stack with (by default) 5,000 component instances,
//! run through load → plan (all creates) → apply (fake world) → plan again (no changes) with
//! the fake providers. Each phase is timed separately; peak RSS, what the apply wrote to state
//! (whole states and journal groups) and the second plan's read batching are reported.
//!
//! Run: `cargo bench --bench plan_5000`
//! Env:  KDEPLOY_BENCH_ITERS       iterations (default 3)
//!       KDEPLOY_BENCH_COMPONENTS  number of component instances (default 5000, minimum 20)
//!       KDEPLOY_BENCH_SIZES       several sizes in one run, e.g. `1000,5000`: each is reported,
//!                                 then the growth exponent of apply between the first and last

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kdeploy::apply::{ApplyOptions, Quiet};
use kdeploy::config::vars::VarArg;
use kdeploy::engine::{self, Loaded, VarSource};
use kdeploy::plan::{Action, PlanOptions};
use kdeploy::providers::Providers;
use kdeploy_provider::fake::FakeWorld;
use kdeploy_state::{Append, LocalStore, LockInfo, Record, State, StateError, StateStore};

const DATABASES: usize = 4; // database "meta" { count = 4 }
const STORAGES: usize = 4; // object_storage "rec_N" blocks
const BROKERS: usize = 2; // broker "events_N" blocks
const VAULTS: usize = 4; // vault "vN" blocks
const AGENT_BLOCKS: usize = 50;
/// Cluster + databases + storages + brokers + vaults.
const FIXED: usize = 1 + DATABASES + STORAGES + BROKERS + VAULTS;

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a positive integer, got {v:?}")),
        Err(_) => default,
    }
}

/// The generated stack's shape.
struct Shape {
    total: usize,
    agent_blocks: usize,
    cameras_per_block: usize,
    counted_agents: usize,
}

impl Shape {
    fn new(total: usize) -> Shape {
        assert!(total > FIXED, "KDEPLOY_BENCH_COMPONENTS must be at least {}", FIXED + 1);
        let agents = total - FIXED;
        let agent_blocks = AGENT_BLOCKS.min(agents);
        let cameras_per_block = agents / agent_blocks;
        let counted_agents = agents - agent_blocks * cameras_per_block;
        Shape { total, agent_blocks, cameras_per_block, counted_agents }
    }
}

/// A realistic large stack: one Docker host, a few MongoDBs (count), MinIOs and RabbitMQs
/// (separate blocks), vaults referencing them, `agent_blocks` agent blocks each with for_each
/// over the cameras map (half via the variable directly, half via a local), and one agent
/// block with count for the remainder.
fn generate(shape: &Shape) -> String {
    let mut s = String::new();
    s.push_str("stack \"bench\" {}\n\n");

    s.push_str("variable \"cameras\" {\n  type = map(object({ rtsp = string, sub = string }))\n  default = {\n");
    for c in 0..shape.cameras_per_block {
        let (a, b) = (c / 250, c % 250 + 1);
        writeln!(s, "    cam{c:03} = {{ rtsp = \"rtsp://10.0.{a}.{b}/stream1\", sub = \"rtsp://10.0.{a}.{b}/stream2\" }}").unwrap();
    }
    s.push_str("  }\n  validation {\n    condition = length(var.cameras) > 0\n    message   = \"Declare at least one camera.\"\n  }\n}\n\n");
    s.push_str("variable \"timezone\" {\n  type    = string\n  default = \"Europe/Brussels\"\n}\n\n");
    writeln!(s, "variable \"extra_cameras\" {{\n  type    = number\n  default = {}\n}}\n", shape.counted_agents).unwrap();
    s.push_str("locals {\n  retention_days = 30\n  cameras        = var.cameras\n}\n\n");

    s.push_str("cluster \"edge\" {\n  type = \"docker\"\n}\n\n");
    writeln!(s, "database \"meta\" {{\n  count = {DATABASES}\n  type  = \"mongodb\"\n}}\n").unwrap();
    for i in 0..STORAGES {
        writeln!(s, "object_storage \"rec_{i}\" {{\n  type   = \"minio\"\n  bucket = \"recordings-{i}\"\n}}\n").unwrap();
    }
    for i in 0..BROKERS {
        writeln!(s, "broker \"events_{i}\" {{\n  type = \"rabbitmq\"\n}}\n").unwrap();
    }
    for i in 0..VAULTS {
        writeln!(
            s,
            "vault \"v{i}\" {{\n  database       = database.meta[{i}]\n  storage        = object_storage.rec_{i}\n  broker         = broker.events_{}\n  node_port      = {}\n  retention_days = local.retention_days\n}}\n",
            i % BROKERS,
            30080 + i
        )
        .unwrap();
    }
    for b in 0..shape.agent_blocks {
        let src = if b % 2 == 0 { "var.cameras" } else { "local.cameras" };
        writeln!(
            s,
            "agent \"site{b:02}\" {{\n  for_each     = {src}\n  vault        = vault.v{}\n  camera_name  = \"site{b:02}-${{each.key}}\"\n  rtsp_url     = each.value.rtsp\n  sub_rtsp_url = each.value.sub\n  timezone     = var.timezone\n}}\n",
            b % VAULTS
        )
        .unwrap();
    }
    if shape.counted_agents > 0 {
        s.push_str("agent \"lobby\" {\n  count       = var.extra_cameras\n  vault       = vault.v0\n  camera_name = \"lobby-${count.index}\"\n  rtsp_url    = \"rtsp://10.9.0.${count.index}/stream1\"\n}\n\n");
    }
    s.push_str("output \"vault_urls\" {\n  value = [vault.v0.url, vault.v1.url]\n}\n\n");
    s.push_str("output \"vault_secret\" {\n  value     = vault.v0.secret_key\n  sensitive = true\n}\n");
    s
}

/// Every platform provider replaced by the fake over `world`; `external` stays real
/// (as tests/it/support.rs does).
fn fake_providers(world: &FakeWorld) -> Providers {
    let mut p = Providers::builtin();
    for name in ["aws", "azure", "docker", "gcp", "kubernetes"] {
        p.insert(name, world.provider(name));
    }
    p
}

/// What the apply wrote to the state: whole states (checkpoints, folds) and journal appends.
#[derive(Default)]
struct Written {
    whole: AtomicU64,
    whole_bytes: AtomicU64,
    appends: AtomicU64,
    append_bytes: AtomicU64,
}

/// A local store that counts what is written through it.
struct Counting {
    inner: LocalStore,
    written: Arc<Written>,
}

impl Counting {
    fn whole(&self, state: &State) {
        self.written.whole.fetch_add(1, Ordering::Relaxed);
        self.written.whole_bytes.fetch_add(kdeploy_state::encode(state).len() as u64, Ordering::Relaxed);
    }
}

impl StateStore for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn read(&mut self) -> Result<Option<State>, StateError> {
        self.inner.read()
    }
    fn write(&mut self, state: &State) -> Result<(), StateError> {
        self.whole(state);
        self.inner.write(state)
    }
    fn checkpoint(&mut self, state: &State) -> Result<bool, StateError> {
        self.whole(state);
        self.inner.checkpoint(state)
    }
    fn append(&mut self, serial: u64, records: &[Record]) -> Result<Append, StateError> {
        self.written.appends.fetch_add(1, Ordering::Relaxed);
        self.written.append_bytes.fetch_add(serde_json::to_vec(records).map_or(0, |v| v.len() as u64), Ordering::Relaxed);
        self.inner.append(serial, records)
    }
    fn lock(&mut self, info: LockInfo, timeout: Duration) -> Result<(), StateError> {
        self.inner.lock(info, timeout)
    }
    fn unlock(&mut self) -> Result<(), StateError> {
        self.inner.unlock()
    }
    fn lock_info(&mut self) -> Result<Option<LockInfo>, StateError> {
        self.inner.lock_info()
    }
    fn force_unlock(&mut self, id: &str) -> Result<(), StateError> {
        self.inner.force_unlock(id)
    }
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[derive(Default)]
struct Timings {
    load: Vec<Duration>,
    plan1: Vec<Duration>,
    apply: Vec<Duration>,
    plan2: Vec<Duration>,
}

struct IterFacts {
    written: Arc<Written>,
    instances: usize,
    edges: usize,
    creates: usize,
    read_batches: Vec<usize>,
    read_calls: usize,
}

/// Per-phase progress on stderr (the table goes to stdout at the end).
fn progress(phase: &str, d: Option<&Duration>) {
    if let Some(d) = d {
        eprintln!("  {phase}: {:.3}s", d.as_secs_f64());
    }
}

fn load(dir: &Path) -> Loaded {
    let args: &[VarArg] = &[];
    match engine::load(dir, args, &BTreeMap::new(), &VarSource::Inputs, false) {
        Ok(l) => {
            if l.diags.has_errors() {
                let msgs: Vec<String> = l.diags.0.iter().take(10).map(|d| format!("{}: {}", d.summary, d.detail)).collect();
                panic!("generated stack has errors:\n{}", msgs.join("\n"));
            }
            l
        }
        Err(e) => {
            let msgs: Vec<String> = e.diags.0.iter().take(10).map(|d| format!("{}: {}", d.summary, d.detail)).collect();
            panic!("generated stack failed to load:\n{}", msgs.join("\n"));
        }
    }
}

fn iteration(rt: &tokio::runtime::Runtime, dir: &Path, shape: &Shape, t: &mut Timings) -> IterFacts {
    let state_dir = dir.join(".kdeploy");
    let _ = std::fs::remove_dir_all(&state_dir);
    let world = FakeWorld::new();
    let providers = fake_providers(&world);
    let options = PlanOptions { refresh: true, ..PlanOptions::default() };

    // Phase 1: load (parse + evaluate + expand + graph).
    let start = Instant::now();
    let loaded = load(dir);
    t.load.push(start.elapsed());
    progress("load", t.load.last());
    let instances = loaded.expanded.instances.len();
    let edges: usize = loaded.expanded.deps.values().map(Vec::len).sum();
    assert_eq!(instances, shape.total, "expanded instance count");

    // Phase 2: first plan against an empty state: everything is a create.
    let empty = State::new(engine::VERSION);
    let start = Instant::now();
    let plan1 = rt
        .block_on(engine::plan(&loaded, &empty, &providers, &options))
        .unwrap_or_else(|d| panic!("first plan failed: {:?}", d.0.iter().take(5).map(|d| format!("{}: {}", d.summary, d.detail)).collect::<Vec<_>>()));
    t.plan1.push(start.elapsed());
    progress("plan #1", t.plan1.last());
    let creates = plan1.changes.iter().filter(|c| c.action == Action::Create).count();
    assert_eq!(creates, shape.total, "first plan creates every instance");
    assert_eq!(plan1.counts(), (shape.total, 0, 0));

    // Phase 3: apply to the fake world, state persisted through a LocalStore in the temp dir.
    let written = Arc::new(Written::default());
    let counting = Counting { inner: LocalStore::new(engine::default_state_path(dir)), written: written.clone() };
    let (mut store, mut state) = engine::lock_and_read(Box::new(counting), "apply", Duration::from_secs(5)).expect("lock state");
    let start = Instant::now();
    let outcome = rt.block_on(engine::apply(
        &loaded,
        &plan1,
        &mut state,
        &mut *store,
        &providers,
        ApplyOptions { parallelism: 10, ..ApplyOptions::default() },
        &mut Quiet,
        Arc::new(tokio::sync::Notify::new()),
    ));
    t.apply.push(start.elapsed());
    progress("apply", t.apply.last());
    assert!(outcome.ok(), "apply failed: failed={:?} state_error={:?}", outcome.failed.iter().take(5).collect::<Vec<_>>(), outcome.state_error);
    assert_eq!(outcome.done.len(), shape.total);
    assert_eq!(world.objects().len(), shape.total, "fake world holds every object");
    store.release().expect("unlock");

    // Phase 4: plan again from the saved state: refresh (batched reads), no changes.
    let saved = kdeploy_state::decode(&std::fs::read(engine::default_state_path(dir)).expect("state file"), "bench").expect("valid state");
    assert_eq!(saved.resources.len(), shape.total, "state holds every resource");
    world.clear_calls();
    let start = Instant::now();
    let plan2 = rt
        .block_on(engine::plan(&loaded, &saved, &providers, &options))
        .unwrap_or_else(|d| panic!("second plan failed: {:?}", d.0.iter().take(5).map(|d| format!("{}: {}", d.summary, d.detail)).collect::<Vec<_>>()));
    t.plan2.push(start.elapsed());
    progress("plan #2", t.plan2.last());
    let mutating: Vec<String> = plan2.changes.iter().filter(|c| c.action.mutates()).take(5).map(|c| format!("{} {}", c.action, c.address)).collect();
    assert!(
        !plan2.has_changes(),
        "second plan must show no changes, got e.g. {mutating:?} / outputs {:?}",
        plan2.output_changes.iter().filter(|o| o.action != Action::NoOp).map(|o| &o.name).collect::<Vec<_>>()
    );
    assert!(plan2.drift.is_empty(), "second plan found drift");
    let read_batches = world.read_batches();
    let read_calls = world.calls().iter().filter(|c| c.op == "read").count();
    assert_eq!(read_batches.iter().sum::<usize>(), shape.total, "every instance refreshed exactly once");
    IterFacts { written, instances, edges, creates, read_batches, read_calls }
}

fn best_median(v: &[Duration]) -> (Duration, Duration) {
    let mut s = v.to_vec();
    s.sort();
    let median = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2 };
    (s[0], median)
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// One size: the stack generated, `iters` iterations, the table printed. Returns the apply
/// times.
fn run_size(rt: &tokio::runtime::Runtime, total: usize, iters: usize) -> Vec<Duration> {
    let shape = Shape::new(total);
    let dir = tempfile::tempdir().expect("temp dir");
    let text = generate(&shape);
    std::fs::write(dir.path().join("main.hcl"), &text).expect("write stack");
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    println!(
        "kdeploy plan_5000: {} instances = 1 cluster + {DATABASES} databases (count) + {STORAGES} object_storage + {BROKERS} brokers + {VAULTS} vaults + {} agents ({} for_each blocks x {} cameras{})",
        shape.total,
        shape.total - FIXED,
        shape.agent_blocks,
        shape.cameras_per_block,
        if shape.counted_agents > 0 { format!(" + 1 count block x {}", shape.counted_agents) } else { String::new() }
    );
    println!("stack: {} bytes of HCL; iterations: {iters}; available_parallelism: {threads}; apply parallelism: 10", text.len());

    let mut t = Timings::default();
    let mut facts = None;
    for i in 0..iters {
        let start = Instant::now();
        let f = iteration(rt, dir.path(), &shape, &mut t);
        eprintln!("iteration {}/{iters}: {:.3}s", i + 1, start.elapsed().as_secs_f64());
        facts = Some(f);
    }
    let f = facts.expect("at least one iteration");
    report(&t, &f);
    t.apply
}

fn report(t: &Timings, f: &IterFacts) {
    println!();
    println!("{:<44} {:>10} {:>10}", "phase", "best (s)", "median (s)");
    println!("{:-<44} {:->10} {:->10}", "", "", "");
    let rows: [(&str, &[Duration]); 4] = [
        ("load (parse+evaluate+expand+graph)", &t.load),
        ("plan #1 (empty state, creates)", &t.plan1),
        ("apply (fake world, LocalStore, par. 10)", &t.apply),
        ("plan #2 (refresh, 0 changes)", &t.plan2),
    ];
    for (name, v) in rows {
        let (best, median) = best_median(v);
        println!("{name:<44} {:>10} {:>10}", secs(best), secs(median));
    }
    println!();
    println!("instances: {}   dependency edges: {}   plan #1 creates: {}", f.instances, f.edges, f.creates);
    let w = &f.written;
    let mib = |b: &AtomicU64| b.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
    println!(
        "apply wrote the whole state {} time(s) ({:.1} MiB) and appended {} journal group(s) ({:.1} MiB of records)",
        w.whole.load(Ordering::Relaxed),
        mib(&w.whole_bytes),
        w.appends.load(Ordering::Relaxed),
        mib(&w.append_bytes)
    );
    println!("plan #2 provider reads: {} read call(s) (batches: {:?}; {} per-address read calls recorded)", f.read_batches.len(), f.read_batches, f.read_calls);
    match peak_rss_mib() {
        Some(mib) => println!("peak memory (VmHWM, this process so far): {mib:.1} MiB"),
        None => println!("peak memory (VmHWM): unavailable"),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a libtest-style filter argument is accepted and ignored.
    let iters = env_usize("KDEPLOY_BENCH_ITERS", 3).max(1);
    let sizes: Vec<usize> = match std::env::var("KDEPLOY_BENCH_SIZES") {
        Ok(v) => {
            v.split(',').map(|n| n.trim().parse().unwrap_or_else(|_| panic!("KDEPLOY_BENCH_SIZES must be sizes separated by commas, got {v:?}"))).collect()
        }
        Err(_) => vec![env_usize("KDEPLOY_BENCH_COMPONENTS", 5000)],
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let mut applies = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        if i > 0 {
            println!();
        }
        applies.push((size, run_size(&rt, size, iters)));
    }
    // How apply grows: t ~ n^k between the smallest and the largest size, k from the best times.
    if let (Some((n1, t1)), Some((n2, t2))) = (applies.first(), applies.last())
        && n1 != n2
    {
        let (b1, b2) = (best_median(t1).0.as_secs_f64(), best_median(t2).0.as_secs_f64());
        let (m1, m2) = (best_median(t1).1.as_secs_f64(), best_median(t2).1.as_secs_f64());
        let k = |a: f64, b: f64| (b / a).ln() / (*n2 as f64 / *n1 as f64).ln();
        println!();
        println!("apply growth exponent between {n1} and {n2} components: {:.2} (best times), {:.2} (medians)", k(b1, b2), k(m1, m2));
    }
}
