//! Structure-aware fuzzing of everything a user hands kdeploy: stack files, variable files and
//! `-var` options, state files, plan files and command-line arguments. Each case runs the CLI
//! in-process with the fake provider (`validate`, `plan`, `state ...`, `show`, `apply PLANFILE`)
//! and must end within a time limit, without a panic anywhere (the case's own threads and its
//! runtime's), with exit code 0, 1 or 2, and with every rejection naming where the problem is (a
//! `--> file:line:col` location, the file, or the option).
//!
//! The corpus in tests/fuzz/corpus/<target>/ (the edge values that once panicked or hung, and
//! cases the generators found) runs first, every time. CI runs a bounded number of generated
//! cases; run more locally with
//! `KDEPLOY_FUZZ_CASES=5000 cargo test --test it fuzz:: -- --nocapture`
//! (KDEPLOY_FUZZ_SEED replays a run; KDEPLOY_FUZZ_CASE_SECS changes the per-case time limit).
//! A failing case is printed in full and shrunk; add it to the corpus once fixed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kdeploy::cli::{self, Env, Io};
use kdeploy_provider::fake::FakeWorld;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::support::{TestStack, basic_stack, fake_providers};

/// Generated cases per target in CI.
const DEFAULT_CASES: u32 = 200;

// ------------------------------------------------------------------ running one case

/// Panics seen on threads whose name starts with "fuzz-": (thread name, message).
fn panics() -> &'static Mutex<Vec<(String, String)>> {
    static PANICS: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            if name.starts_with("fuzz-")
                && let Some(p) = PANICS.get()
            {
                p.lock().unwrap_or_else(|e| e.into_inner()).push((name, info.to_string()));
            }
            previous(info);
        }));
        Mutex::new(Vec::new())
    })
}

fn case_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("fuzz-{}-", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn case_secs() -> u64 {
    std::env::var("KDEPLOY_FUZZ_CASE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `kdeploy ARGS` in-process in `dir` on a thread of its own with a runtime of its own,
/// both named after the case, and waits at most the per-case limit.
fn run_case(dir: &Path, args: &[String]) -> Result<Outcome, String> {
    let id = case_id();
    let (tx, rx) = std::sync::mpsc::channel();
    let (dir, argv) = (dir.to_path_buf(), args.to_vec());
    let worker = id.clone();
    std::thread::Builder::new()
        .name(format!("{id}main"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(format!("{worker}rt")).enable_all().build().expect("runtime");
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut input = std::io::Cursor::new(Vec::new());
            let env =
                Env { providers: fake_providers(&FakeWorld::new()), vars: BTreeMap::new(), cwd: dir.clone(), interrupt: Arc::new(tokio::sync::Notify::new()) };
            let mut full = vec!["kdeploy".to_string()];
            full.extend(argv);
            let code = rt.block_on(async {
                let mut io = Io { out: &mut out, err: &mut err, input: &mut input, stdin_tty: false, stdout_tty: false };
                cli::run(full, &mut io, &env).await
            });
            let _ = tx.send(Outcome { code, stdout: String::from_utf8_lossy(&out).into_owned(), stderr: String::from_utf8_lossy(&err).into_owned() });
        })
        .expect("spawn the case thread");
    let outcome = rx.recv_timeout(Duration::from_secs(case_secs()));
    let panicked: Vec<String> = panics().lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|(n, _)| n.starts_with(&id)).map(|(_, m)| m.clone()).collect();
    if !panicked.is_empty() {
        return Err(format!("kdeploy {args:?} panicked: {panicked:?}"));
    }
    outcome.map_err(|_| format!("kdeploy {args:?} did not finish within {}s (or panicked)", case_secs()))
}

/// What every run must satisfy. `names` are the inputs a rejection may point at.
fn check(args: &[String], o: &Outcome, names: &[&str]) -> Result<(), String> {
    let allowed = if args.iter().any(|a| a.contains("detailed-exitcode")) {
        [0, 1, 2].as_slice()
    } else if args.first().is_some_and(|a| a == "fmt") && args.iter().any(|a| a.contains("check")) {
        [0, 1, 3].as_slice()
    } else {
        [0, 1].as_slice()
    };
    if !allowed.contains(&o.code) {
        return Err(format!("kdeploy {args:?} exited {}:\n{}", o.code, o.stderr));
    }
    if o.code == 1 && !located(o, names) {
        return Err(format!("kdeploy {args:?} failed without saying where (expected a --> location or one of {names:?}):\n{}", o.stderr));
    }
    Ok(())
}

/// A `--> file:line:col` location (or, with -json, diagnostics that carry a range), the file, or
/// the option.
fn located(o: &Outcome, names: &[&str]) -> bool {
    if o.stderr.is_empty()
        && let Ok(j) = serde_json::from_str::<serde_json::Value>(&o.stdout)
        && let Some(diags) = j["diagnostics"].as_array()
    {
        let errors: Vec<&serde_json::Value> = diags.iter().filter(|d| d["severity"] == "error").collect();
        return !errors.is_empty() && errors.iter().all(|d| d["range"]["filename"].is_string() || names.iter().any(|n| d.to_string().contains(n)));
    }
    o.stderr.contains(" --> ") || names.iter().any(|n| o.stderr.contains(n))
}

/// Runs every command and checks it, as a proptest case result.
fn run_all(dir: &Path, commands: &[Vec<String>], names: &[&str]) -> Result<(), TestCaseError> {
    for args in commands {
        let o = run_case(dir, args).map_err(TestCaseError::fail)?;
        check(args, &o, names).map_err(TestCaseError::fail)?;
    }
    Ok(())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The generator's runner: KDEPLOY_FUZZ_CASES cases, seeded from KDEPLOY_FUZZ_SEED (printed).
fn runner(target: &str) -> TestRunner {
    let cases = std::env::var("KDEPLOY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES);
    let seed: u64 = std::env::var("KDEPLOY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    eprintln!("fuzz {target}: {cases} cases, KDEPLOY_FUZZ_SEED={seed}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config { cases, max_shrink_iters: 200, failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

fn fuzz<S: Strategy>(target: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner(target).run(&strategy, test) {
        panic!("fuzz {target}: {e}");
    }
}

// ------------------------------------------------------------------ the corpus

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.expect("entry").path()).collect();
    files.sort();
    files.into_iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).expect("corpus file"))).collect()
}

/// Runs a corpus target; collects every failure so that one run lists them all.
fn run_corpus(target: &str, case: impl Fn(&str, &[u8]) -> Result<(), TestCaseError>) {
    let files = corpus(target);
    assert!(!files.is_empty(), "the {target} corpus is empty");
    let failures: Vec<String> = files.iter().filter_map(|(name, bytes)| case(name, bytes).err().map(|e| format!("{target}/{name}: {e}"))).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ------------------------------------------------------------------ generators: HCL values

const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "3",
    "65535",
    "65536",
    "2147483648",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "1e12",
    "1e30",
    "1e308",
    "1e400",
    "-1e400",
    "0.5",
    "1.5e-300",
    "99999999999999999999999999",
    "inf",
    "-0",
];
const STRINGS: &[&str] = &[
    "",
    "docker",
    "kubernetes",
    "microk8s",
    "eks",
    "aks",
    "gke",
    "mongodb",
    "minio",
    "rabbitmq",
    "external",
    "s3",
    "30s",
    "0s",
    "-1s",
    "1h30m",
    "99999999999999999999h",
    "1e30s",
    "NaN",
    "2^64",
    "rtsp://10.0.0.1/s1",
    "/dev/zero",
    "/nonexistent",
    "..",
    "kerberos/agent:v3.11.1",
    "ÄÖ✓",
    "a\\nb",
    "${var.x}",
    "%{ if true }x%{ endif }",
    "*",
    "cam-1",
];
const REFS: &[&str] = &[
    "var.cameras",
    "var.x",
    "var.missing",
    "cluster.edge",
    "database.meta",
    "object_storage.rec",
    "vault.main",
    "vault.main.url",
    "vault.main.access_key",
    "agent.cam",
    "each.key",
    "each.value",
    "count.index",
    "local.x",
    "module.m.out",
    "self",
    "path.module",
    "broker.events",
];
const FUNCTIONS: &[&str] = &[
    "file",
    "length",
    "toset",
    "tolist",
    "tomap",
    "format",
    "join",
    "split",
    "lookup",
    "merge",
    "concat",
    "range",
    "upper",
    "coalesce",
    "keys",
    "values",
    "min",
    "max",
    "abs",
    "jsonencode",
    "base64encode",
    "nope",
];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(pool).prop_map(str::to_string)
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => pick(NUMBERS),
        3 => pick(STRINGS).prop_map(|s| format!("\"{s}\"")),
        2 => pick(REFS),
        1 => prop_oneof![Just("true".to_string()), Just("false".to_string()), Just("null".to_string())],
        1 => "[a-z0-9 ${}%.:/\\\\-]{0,10}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn value() -> impl Strategy<Value = String> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec(("[a-z]{1,6}", inner.clone()), 0..4)
                .prop_map(|kv| format!("{{ {} }}", kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "))),
            (pick(FUNCTIONS), proptest::collection::vec(inner.clone(), 0..3)).prop_map(|(f, a)| format!("{f}({})", a.join(", "))),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(c, a, b)| format!("{c} ? {a} : {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} + {b}")),
            inner.clone().prop_map(|a| format!("[for x in {a} : x]")),
            inner.prop_map(|a| format!("\"${{{a}}}\"")),
        ]
    })
}

// ------------------------------------------------------------------ generators: stacks

const KINDS: &[&str] = &[
    "cluster",
    "database",
    "object_storage",
    "broker",
    "vault",
    "agent",
    "factory",
    "hub",
    "variable",
    "output",
    "module",
    "locals",
    "stack",
    "backend",
    "nonsense",
];
const ATTRS: &[&str] = &[
    "type",
    "cluster",
    "database",
    "storage",
    "broker",
    "vault",
    "count",
    "for_each",
    "rtsp_url",
    "readiness_timeout",
    "lock_ttl",
    "node_port",
    "retention_days",
    "replicas",
    "default",
    "value",
    "sensitive",
    "version",
    "image",
    "command",
    "storage_size",
    "timeout",
    "depends_on",
    "source",
    "kubeconfig",
    "context",
    "namespace",
    "uri",
    "endpoint",
    "bucket",
    "cpu",
    "memory",
    "persistence",
    "directory",
    "account",
    "fs_group",
    "run_as_user",
    "node_count",
    "description",
];
const NESTED: &[&str] = &["account", "lifecycle", "validation", "provider", "forward", "connection", "dynamic"];

/// A block with random attributes and perhaps a nested block.
fn block() -> impl Strategy<Value = String> {
    (
        pick(KINDS),
        proptest::collection::vec("[a-z]{1,4}", 0..3),
        proptest::collection::vec((pick(ATTRS), value()), 0..6),
        proptest::option::of((pick(NESTED), proptest::collection::vec((pick(ATTRS), value()), 0..3))),
    )
        .prop_map(|(kind, labels, attrs, nested)| {
            let mut s = kind.clone();
            for l in labels {
                s.push_str(&format!(" \"{l}\""));
            }
            s.push_str(" {\n");
            for (k, v) in attrs {
                s.push_str(&format!("  {k} = {v}\n"));
            }
            if let Some((n, attrs)) = nested {
                s.push_str(&format!("  {n} {{\n"));
                for (k, v) in attrs {
                    s.push_str(&format!("    {k} = {v}\n"));
                }
                s.push_str("  }\n");
            }
            s.push_str("}\n");
            s
        })
}

/// A valid stack whose attribute values are replaced by random ones (to reach the planner), a
/// free-form stack, or a valid stack with its text cut, spliced or garbled.
fn stack_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec((any::<proptest::sample::Index>(), value()), 1..4).prop_map(|edits| replace_values(&basic_stack(&[("front", "rtsp://10.0.0.1/s1")]), &edits)),
        2 => (proptest::collection::vec(block(), 1..6), proptest::bool::ANY).prop_map(|(blocks, base)| {
            let mut s = if base { basic_stack(&[("front", "rtsp://10.0.0.1/s1")]) } else { String::new() };
            s.push_str(&blocks.join("\n"));
            s
        }),
        2 => proptest::collection::vec(mutation(), 1..4).prop_map(|m| String::from_utf8_lossy(&mutate(basic_stack(&[("front", "a"), ("back", "b")]).as_bytes(), &m)).into_owned()),
    ]
}

/// Replaces the value of the `index`-th `name = value` line.
fn replace_values(text: &str, edits: &[(proptest::sample::Index, String)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let assignments: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.contains(" = ")).map(|(i, _)| i).collect();
    for (index, v) in edits {
        let i = assignments[index.index(assignments.len())];
        let name = lines[i].split(" = ").next().unwrap_or("").to_string();
        lines[i] = format!("{name} = {v}");
    }
    lines.join("\n") + "\n"
}

// ------------------------------------------------------------------ generators: byte mutations

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(proptest::sample::Index),
    Flip(proptest::sample::Index, u8),
    Insert(proptest::sample::Index, Vec<u8>),
    Delete(proptest::sample::Index, usize),
    Duplicate(proptest::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let idx = any::<proptest::sample::Index>;
    prop_oneof![
        idx().prop_map(Mutation::Truncate),
        (idx(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            idx(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..8),
                pick(&["{", "}", "\"", "${", "=", "\n", "[", "#", "<<EOF\n", "\\", "\u{0}", "\u{feff}"]).prop_map(String::into_bytes)
            ]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (idx(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (idx(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for m in mutations {
        let at = |i: &proptest::sample::Index, b: &Vec<u8>| if b.is_empty() { 0 } else { i.index(b.len() + 1) };
        match m {
            Mutation::Truncate(i) => {
                let n = at(i, &b);
                b.truncate(n);
            }
            Mutation::Flip(i, x) if !b.is_empty() => {
                let n = i.index(b.len());
                b[n] ^= x | 1;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, x) => {
                let n = at(i, &b);
                b.splice(n..n, x.iter().copied());
            }
            Mutation::Delete(i, len) => {
                let n = at(i, &b);
                let end = (n + len).min(b.len());
                b.drain(n..end);
            }
            Mutation::Duplicate(i, len) => {
                let n = at(i, &b);
                let end = (n + len).min(b.len());
                let piece = b[n..end].to_vec();
                b.splice(end..end, piece);
            }
        }
    }
    b
}

// ------------------------------------------------------------------ targets

fn stack_case(text: &[u8]) -> Result<(), TestCaseError> {
    let s = TestStack::new(&[]);
    std::fs::write(s.path().join("main.hcl"), text).expect("write");
    run_all(s.path(), &[strings(&["validate"]), strings(&["validate", "-json"]), strings(&["plan", "-detailed-exitcode"]), strings(&["graph"])], &["main.hcl"])
}

#[test]
fn fuzz_stack_files() {
    run_corpus("stack", |_, bytes| stack_case(bytes));
    fuzz("stack", stack_text(), |text| stack_case(text.as_bytes()));
}

/// A stack with variables of every type, for variable files and `-var` options.
const VARS_STACK: &str = r#"variable "name" {
  type = string
}
variable "port" {
  type    = number
  default = 80
}
variable "on" {
  type    = bool
  default = false
}
variable "cams" {
  type    = map(string)
  default = {}
}
variable "list" {
  type    = list(number)
  default = []
}
variable "obj" {
  type    = object({ a = string, b = number })
  default = { a = "x", b = 1 }
}
variable "timeout" {
  type    = string
  default = "30s"
}

cluster "edge" {
  type = "docker"
}

database "meta" {
  type = "mongodb"
}

object_storage "rec" {
  type = "minio"
}

vault "main" {
  database          = database.meta
  storage           = object_storage.rec
  node_port         = var.port
  readiness_timeout = var.timeout
}

agent "cam" {
  for_each = var.cams
  vault    = vault.main
  rtsp_url = each.value
}
"#;

const VAR_NAMES: &[&str] = &["name", "port", "on", "cams", "list", "obj", "timeout", "missing", "x-y", "1bad"];

fn vars_case(file: &[u8], options: &[(String, String)]) -> Result<(), TestCaseError> {
    let s = TestStack::new(&[("main.hcl", VARS_STACK)]);
    std::fs::write(s.path().join("site.kdvars"), file).expect("write");
    let mut args = strings(&["plan", "-var-file", "site.kdvars"]);
    for (k, v) in options {
        args.push("-var".into());
        args.push(format!("{k}={v}"));
    }
    if !options.iter().any(|(k, _)| k == "name") {
        args.extend(strings(&["-var", "name=n"]));
    }
    let mut names = vec!["site.kdvars", "-var"];
    let keys: Vec<String> = options.iter().map(|(k, _)| k.clone()).collect();
    names.extend(keys.iter().map(String::as_str));
    run_all(s.path(), &[args], &names)
}

fn vars_file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec((pick(VAR_NAMES), value()), 0..6).prop_map(|kv| kv.into_iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>().into_bytes()),
        1 => proptest::collection::vec(mutation(), 1..4).prop_map(|m| mutate(b"name = \"n\"\nport = 8080\ncams = { front = \"rtsp://a\" }\n", &m)),
    ]
}

#[test]
fn fuzz_variable_files_and_options() {
    run_corpus("vars", |_, bytes| vars_case(bytes, &[]));
    let options = proptest::collection::vec((pick(VAR_NAMES), prop_oneof![pick(NUMBERS), pick(STRINGS), value()]), 0..3);
    fuzz("vars", (vars_file(), options), |(file, options)| vars_case(&file, &options));
}

/// The state and the plan file of a small applied stack (fake provider), made once.
fn applied() -> &'static (Vec<u8>, Vec<u8>) {
    static APPLIED: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    APPLIED.get_or_init(|| {
        let s = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://10.0.0.1/s1"), ("back", "rtsp://10.0.0.2/s1")]))]);
        let o = run_case(s.path(), &strings(&["apply", "-auto-approve"])).expect("apply");
        assert_eq!(o.code, 0, "{}", o.stderr);
        s.write("main.hcl", &basic_stack(&[("front", "rtsp://10.0.0.1/s2"), ("yard", "rtsp://10.0.0.3/s1")]));
        let o = run_case(s.path(), &strings(&["plan", "-out", "next.kdplan"])).expect("plan");
        assert_eq!(o.code, 0, "{}", o.stderr);
        (std::fs::read(s.state_path()).expect("state"), std::fs::read(s.path().join("next.kdplan")).expect("plan file"))
    })
}

/// Sets the value at the `index`-th path of the JSON tree, or removes it.
fn edit_json(v: &mut serde_json::Value, index: &proptest::sample::Index, new: Option<serde_json::Value>) {
    fn paths(v: &serde_json::Value, here: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(here.clone());
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, c)| {
                here.push(k.clone());
                paths(c, here, out);
                here.pop();
            }),
            serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| {
                here.push(i.to_string());
                paths(c, here, out);
                here.pop();
            }),
            _ => {}
        }
    }
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    let path = &all[index.index(all.len())];
    let Some((last, parent)) = path.split_last() else {
        if let Some(n) = new {
            *v = n;
        }
        return;
    };
    let mut cur = &mut *v;
    for p in parent {
        cur = match cur {
            serde_json::Value::Object(m) => m.get_mut(p).expect("path"),
            serde_json::Value::Array(a) => &mut a[p.parse::<usize>().expect("index")],
            _ => return,
        };
    }
    match (cur, new) {
        (serde_json::Value::Object(m), Some(n)) => {
            m.insert(last.clone(), n);
        }
        (serde_json::Value::Object(m), None) => {
            m.remove(last);
        }
        (serde_json::Value::Array(a), Some(n)) => a[last.parse::<usize>().expect("index")] = n,
        (serde_json::Value::Array(a), None) => {
            a.remove(last.parse::<usize>().expect("index"));
        }
        _ => {}
    }
}

fn json_value() -> impl Strategy<Value = Option<serde_json::Value>> {
    use serde_json::json;
    let leaf = prop_oneof![
        Just(json!(null)),
        Just(json!("7")),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(0.5)),
        Just(json!(true)),
        Just(json!("")),
        Just(json!("agent.cam[\"front\"]")),
        Just(json!("agent.cam[")),
        Just(json!([])),
        Just(json!({})),
        Just(json!({"address": "x", "kind": "agent"})),
        "[a-z.\\[\\]\"]{0,12}".prop_map(|s| json!(s)),
    ];
    proptest::option::weighted(0.8, leaf)
}

fn state_case(state: &[u8]) -> Result<(), TestCaseError> {
    let s = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://10.0.0.1/s1")]))]);
    std::fs::create_dir_all(s.path().join(".kdeploy")).expect("mkdir");
    std::fs::write(s.state_path(), state).expect("write");
    let commands = [
        strings(&["state", "list"]),
        strings(&["state", "show", "agent.cam[\"front\"]"]),
        strings(&["show"]),
        strings(&["show", "-json"]),
        strings(&["output"]),
        strings(&["plan", "-detailed-exitcode"]),
        strings(&["state", "mv", "agent.cam[\"back\"]", "agent.cam[\"side\"]"]),
        strings(&["state", "rm", "agent.cam[\"front\"]"]),
    ];
    run_all(s.path(), &commands, &["state.json", "`resources[", "No state", "cluster.edge", "database.meta", "object_storage.rec", "vault.main", "agent.cam"])
}

#[test]
fn fuzz_state_files() {
    run_corpus("state", |_, bytes| state_case(bytes));
    let base: serde_json::Value = serde_json::from_slice(&applied().0).expect("state JSON");
    let strategy = prop_oneof![
        3 => proptest::collection::vec((any::<proptest::sample::Index>(), json_value()), 1..4).prop_map(move |edits| {
            let mut v = base.clone();
            for (i, n) in edits {
                edit_json(&mut v, &i, n);
            }
            serde_json::to_vec_pretty(&v).expect("JSON")
        }),
        1 => proptest::collection::vec(mutation(), 1..3).prop_map(|m| mutate(&applied().0, &m)),
    ];
    fuzz("state", strategy, |bytes| state_case(&bytes));
}

fn plan_case(plan: &[u8]) -> Result<(), TestCaseError> {
    let s = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://10.0.0.1/s2"), ("yard", "rtsp://10.0.0.3/s1")]))]);
    std::fs::create_dir_all(s.path().join(".kdeploy")).expect("mkdir");
    std::fs::write(s.state_path(), &applied().0).expect("write");
    std::fs::write(s.path().join("next.kdplan"), plan).expect("write");
    run_all(
        s.path(),
        &[strings(&["show", "next.kdplan"]), strings(&["show", "-json", "next.kdplan"]), strings(&["apply", "next.kdplan"])],
        &["next.kdplan", "plan file", "saved plan"],
    )
}

#[test]
fn fuzz_plan_files() {
    run_corpus("plan", |_, bytes| plan_case(bytes));
    let strategy = prop_oneof![
        3 => proptest::collection::vec(mutation(), 1..4).prop_map(|m| mutate(&applied().1, &m)),
        1 => proptest::collection::vec((any::<proptest::sample::Index>(), json_value()), 1..3).prop_map(|edits| {
            match serde_json::from_slice::<serde_json::Value>(&applied().1) {
                Ok(mut v) => {
                    for (i, n) in edits {
                        edit_json(&mut v, &i, n);
                    }
                    serde_json::to_vec(&v).expect("JSON")
                }
                Err(_) => applied().1.clone(),
            }
        }),
    ];
    fuzz("plan", strategy, |bytes| plan_case(&bytes));
}

const FLAGS: &[&str] = &[
    "-lock-timeout",
    "--lock-timeout",
    "-parallelism",
    "-target",
    "-replace",
    "-var",
    "-var-file",
    "-out",
    "-backend-config",
    "-refresh",
    "-lock",
    "-destroy",
    "-detailed-exitcode",
    "-json",
    "-auto-approve",
    "-C",
    "--no-color",
    "-input",
];
const FLAG_VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "99999999999999999999h",
    "1e30s",
    "inf",
    "30s",
    "agent.cam[\"front\"]",
    "agent.cam[",
    "vault.main",
    "x=1",
    "=",
    "/dev/zero",
    "/nonexistent",
    ".",
    "key=",
    "lock_ttl=1e30",
    "lock_ttl=inf",
    "timeout=2^64",
    "true",
    "false",
    "",
    "ÄÖ",
];
const COMMANDS: &[&str] = &[
    "plan",
    "apply",
    "destroy",
    "validate",
    "state list",
    "state rm",
    "state show",
    "show",
    "output",
    "graph",
    "drift",
    "force-unlock",
    "init",
    "version",
    "fmt -check",
];

fn args_case(args: &[String]) -> Result<(), TestCaseError> {
    let s = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://10.0.0.1/s1")]))]);
    // The arguments a message may name, not the command's own words.
    let words: Vec<&str> = COMMANDS.iter().flat_map(|c| c.split(' ')).collect();
    let mut names: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.is_empty() && !words.contains(a)).collect();
    names.extend(args.iter().filter_map(|a| a.split_once('=').map(|(flag, _)| flag)).filter(|f| f.starts_with('-')));
    // Option errors quote the option ('--chdir <DIR>').
    names.extend(["Usage", "argument", "'--", "main.hcl", "backend", "state.json", "No state", "lock"]);
    // An empty argument is named by quoting it.
    if args.iter().any(String::is_empty) {
        names.push("\"\"");
    }
    run_all(s.path(), &[args.to_vec()], &names)
}

#[test]
fn fuzz_command_line_arguments() {
    run_corpus("args", |_, bytes| {
        // One argument per line; a line `""` is an empty argument.
        let args: Vec<String> =
            String::from_utf8_lossy(bytes).lines().filter(|l| !l.trim().is_empty()).map(|l| if l == "\"\"" { String::new() } else { l.to_string() }).collect();
        args_case(&args)
    });
    let strategy = (pick(COMMANDS), proptest::collection::vec((pick(FLAGS), proptest::option::of(pick(FLAG_VALUES))), 0..4)).prop_map(|(cmd, flags)| {
        let mut args: Vec<String> = cmd.split(' ').map(str::to_string).collect();
        for (f, v) in flags {
            args.push(f);
            args.extend(v);
        }
        if args.iter().any(|a| a == "apply" || a == "destroy") && !args.iter().any(|a| a == "-auto-approve") {
            args.push("-auto-approve".into());
        }
        args
    });
    fuzz("args", strategy, |args| args_case(&args));
}
