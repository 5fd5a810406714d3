//! Whole CLI runs (exit code, stdout, stderr) as insta snapshots, with paths, durations and
//! ids filtered out.

use std::collections::BTreeMap;

use kdeploy_provider::fake::FakeWorld;

use crate::support::{TestStack, basic_stack, run};

const CAMS: &[(&str, &str)] = &[("front", "rtsp://10.0.0.1/s1"), ("back", "rtsp://10.0.0.2/s1")];

fn snap(s: &TestStack, w: &FakeWorld, args: &[&str]) -> String {
    run(s.path(), w, args).snapshot(s.path())
}

#[test]
fn validate_ok_and_errors() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    insta::assert_snapshot!("validate_ok", snap(&s, &w, &["validate"]));
    s.write(
        "main.hcl",
        "cluster \"edge\" {\n  type = \"dokcer\"\n}\n\nvault \"main\" {\n  database = database.mian\n  storage  = object_storage.rec\n}\n\nobject_storage \"rec\" {\n  type = \"minio\"\n}\n",
    );
    insta::assert_snapshot!("validate_errors", snap(&s, &w, &["validate"]));
}

#[test]
fn plan_apply_change_destroy_cycle() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    insta::assert_snapshot!("plan_create", snap(&s, &w, &["plan"]));
    insta::assert_snapshot!("apply_create", snap(&s, &w, &["apply", "--auto-approve", "--parallelism", "1"]));
    insta::assert_snapshot!("plan_no_changes", snap(&s, &w, &["plan", "--detailed-exitcode"]));
    s.write("main.hcl", &basic_stack(&[("front", "rtsp://10.0.0.1/s1"), ("side", "rtsp://10.0.0.3/s1")]));
    insta::assert_snapshot!("plan_add_remove", snap(&s, &w, &["plan", "--detailed-exitcode"]));
    insta::assert_snapshot!("state_list", snap(&s, &w, &["state", "list"]));
    insta::assert_snapshot!("output", snap(&s, &w, &["output"]));
    insta::assert_snapshot!("destroy", snap(&s, &w, &["destroy", "--auto-approve", "--parallelism", "1"]));
}

#[test]
fn plan_json_has_terraform_shape() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://10.0.0.1/s1")]))]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["plan", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("valid JSON");
    assert_eq!(j["format_version"], "1.0");
    let vault = j["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "vault.main").unwrap();
    assert_eq!(vault["change"]["actions"], serde_json::json!(["create"]));
    assert_eq!(vault["change"]["after_unknown"]["secret_key"], true);
    assert_eq!(vault["change"]["after_sensitive"]["secret_key"], true);
    assert_eq!(vault["change"]["after"]["database"], "database.meta");
    assert_eq!(j["summary"]["add"], 5);
    insta::assert_snapshot!("plan_json", crate::support::normalize(&r.stdout, s.path()));
}

#[test]
fn detailed_exit_codes() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    assert_eq!(run(s.path(), &w, &["plan", "--detailed-exitcode"]).code, 2);
    assert_eq!(run(s.path(), &w, &["plan"]).code, 0);
    assert_eq!(run(s.path(), &w, &["apply", "-auto-approve"]).code, 0);
    assert_eq!(run(s.path(), &w, &["plan", "-detailed-exitcode"]).code, 0);
    s.write("broken.hcl", "vault \"x\" {\n");
    assert_eq!(run(s.path(), &w, &["plan", "--detailed-exitcode"]).code, 1);
}

#[test]
fn help_shows_examples() {
    let s = TestStack::new(&[]);
    let w = FakeWorld::new();
    insta::assert_snapshot!("help_plan", snap(&s, &w, &["plan", "--help"]));
    let r = run(s.path(), &w, &["--help"]);
    for cmd in ["validate", "fmt", "plan", "apply", "destroy", "show", "graph", "state", "output", "force-unlock", "version"] {
        assert!(r.stdout.contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn graph_and_fmt() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    insta::assert_snapshot!("graph_text", snap(&s, &w, &["graph", "--format", "text"]));
    let s = TestStack::new(&[("messy.hcl", "locals {\nx = 1\n    longer_name = \"y\"\n}\n")]);
    let r = run(s.path(), &w, &["fmt", "--check"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "messy.hcl\n");
    let r = run(s.path(), &w, &["fmt"]);
    assert_eq!(r.code, 0);
    assert_eq!(std::fs::read_to_string(s.path().join("messy.hcl")).unwrap(), "locals {\n  x           = 1\n  longer_name = \"y\"\n}\n");
    assert_eq!(run(s.path(), &w, &["fmt", "--check"]).code, 0);
}

/// A fleet's agents name their site's cluster with an index expression
/// (`cluster.site[each.value.site]`): each depends on its own site's cluster only, not on every
/// site (a hundred sites of ten cameras were a hundred thousand edges).
#[test]
fn graph_index_expression_reaches_one_instance() {
    let s = TestStack::new(&[(
        "main.hcl",
        r#"stack "fleet" {}

variable "sites" {
  default = { north = "/kc/north", south = "/kc/south", west = "/kc/west" }
}

variable "cameras" {
  default = {
    n1 = { site = "north", rtsp = "rtsp://10.0.0.1/s" }
    s1 = { site = "south", rtsp = "rtsp://10.0.1.1/s" }
  }
}

cluster "central" {
  type       = "kubernetes"
  kubeconfig = "/kc/central"
}

cluster "site" {
  for_each   = var.sites
  type       = "kubernetes"
  kubeconfig = each.value
}

database "meta" {
  cluster = cluster.central
  type    = "mongodb"
}

object_storage "rec" {
  cluster = cluster.central
  type    = "minio"
}

vault "central" {
  cluster   = cluster.central
  database  = database.meta
  storage   = object_storage.rec
  node_port = 30080
  accounts  = { for name, kc in var.sites : name => { directory = name } }
}

agent "cam" {
  for_each = var.cameras
  cluster  = cluster.site[each.value.site]
  vault    = vault.central
  account  = each.value.site
  rtsp_url = each.value.rtsp
}
"#,
    )]);
    let r = crate::support::run_binary(s.path(), &[], &["graph", "--format", "text"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let deps = |addr: &str| {
        let mut lines = r.stdout.lines().skip_while(|l| *l != addr);
        lines.nth(1).unwrap_or_default().trim().to_string()
    };
    assert_eq!(deps("agent.cam[\"n1\"]"), "depends on: cluster.site[\"north\"], vault.central");
    assert_eq!(deps("agent.cam[\"s1\"]"), "depends on: cluster.site[\"south\"], vault.central");
    let r = crate::support::run_binary(s.path(), &[], &["validate"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[test]
fn state_commands() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(CAMS))]);
    let w = FakeWorld::new();
    assert_eq!(run(s.path(), &w, &["apply", "--auto-approve", "--parallelism", "1"]).code, 0);
    insta::assert_snapshot!("state_show", snap(&s, &w, &["state", "show", "agent.cam[\"front\"]"]));
    insta::assert_snapshot!("state_mv", snap(&s, &w, &["state", "mv", "agent.cam[\"front\"]", "agent.cam[\"entrance\"]"]));
    insta::assert_snapshot!("state_rm", snap(&s, &w, &["state", "rm", "agent.cam"]));
    insta::assert_snapshot!("state_rm_missing", snap(&s, &w, &["state", "rm", "agent.nothing"]));
    let st = s.state();
    assert!(st.resources.iter().all(|r| r.address.kind != kdeploy_provider::Kind::Agent));
    // The live objects were not touched.
    assert!(w.object("agent.cam[\"front\"]").is_some());
}

#[test]
fn var_and_var_file_apply_in_command_line_order() {
    // Only a variable and an output: the real binary plans it without any provider.
    let s = TestStack::new(&[
        ("order.hcl", "variable \"site\" {\n  default = \"default\"\n}\n\noutput \"site\" {\n  value = var.site\n}\n"),
        ("prod.kdvars", "site = \"from-file\"\n"),
    ]);
    let site = |args: &[&str]| {
        let mut all = vec!["plan"];
        all.extend_from_slice(args);
        let r = crate::support::run_limited(s.path(), &[], &all, 60);
        assert_eq!(r.code, 0, "{}", r.text());
        r.stdout.lines().find(|l| l.contains("+ site")).unwrap_or_default().trim().to_string()
    };
    assert_eq!(site(&["-var", "site=from-flag", "-var-file", "prod.kdvars"]), "+ site = \"from-file\"");
    assert_eq!(site(&["-var-file", "prod.kdvars", "-var", "site=from-flag"]), "+ site = \"from-flag\"");
    assert_eq!(site(&["-var-file=prod.kdvars", "-var=site=a", "-var-file", "prod.kdvars", "-var", "site=last"]), "+ site = \"last\"");
    assert_eq!(site(&["--var-file", "prod.kdvars", "--var", "site=double-dash"]), "+ site = \"double-dash\"");
    assert_eq!(site(&[]), "+ site = \"default\"");
}

#[test]
fn state_mv_keeps_kinds_refuses_occupied_addresses_and_says_what_it_did() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(&[("a", "rtsp://10.0.0.1/s1"), ("b", "rtsp://10.0.0.2/s1")]))]);
    let w = FakeWorld::new();
    assert_eq!(run(s.path(), &w, &["apply", "--auto-approve"]).code, 0);
    let before = std::fs::read(s.state_path()).unwrap();
    let bin = |args: &[&str]| crate::support::run_limited(s.path(), &[], args, 60);

    let r = bin(&["state", "mv", "database.meta", "broker.meta"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("database.meta is a database, and a broker address cannot hold it"), "{}", r.text());
    let r = bin(&["state", "mv", "agent.cam[\"a\"]", "agent.cam[\"b\"]"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("agent.cam[\"b\"]"), "{}", r.text());
    assert_eq!(std::fs::read(s.state_path()).unwrap(), before, "refused moves change nothing");

    let r = bin(&["state", "mv", "agent.cam", "agent.camera"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout.contains("Moved agent.cam[\"a\"] to agent.camera[\"a\"]\nMoved agent.cam[\"b\"] to agent.camera[\"b\"]\nSuccessfully moved 2 component(s)."),
        "{}",
        r.text()
    );
    let r = bin(&["state", "rm", "agent.camera[\"b\"]"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Removed agent.camera[\"b\"]"), "{}", r.text());
}

#[test]
fn with_chdir_paths_are_relative_to_the_stack_and_hints_run_as_printed() {
    let parent = tempfile::tempdir().unwrap();
    let stack = parent.path().join("stack");
    std::fs::create_dir_all(&stack).unwrap();
    std::fs::write(stack.join("main.hcl"), "variable \"site\" {\n  default = \"x\"\n}\n\noutput \"site\" {\n  value = var.site\n}\n").unwrap();
    std::fs::write(stack.join("prod.kdvars"), "site = \"prod\"\n").unwrap();
    let from_parent = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kdeploy")).args(args).env("NO_COLOR", "1").current_dir(parent.path()).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, stdout, stderr) = from_parent(&["-C", "stack", "plan", "-var-file", "prod.kdvars", "-out", "p.kdplan"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stack.join("p.kdplan").is_file(), "-out is relative to the -C directory");
    let hint = stdout.lines().find_map(|l| l.strip_prefix("To perform exactly these actions, run: ")).expect("a hint").to_string();
    assert_eq!(hint, "kdeploy -C stack apply p.kdplan");
    let args: Vec<&str> = hint.split(' ').skip(1).collect();
    let (code, stdout, stderr) = from_parent(&args);
    assert_eq!(code, 0, "the hint runs as printed: {stdout}{stderr}");
    let (_, stdout, _) = from_parent(&["-C", "stack", "output", "site"]);
    assert_eq!(stdout.trim(), "\"prod\"");
}

#[test]
fn output_before_apply_says_there_are_none_and_apply_ends_with_the_outputs() {
    let s = TestStack::new(&[("main.hcl", "variable \"site\" {\n  default = \"x\"\n}\n\noutput \"site\" {\n  value = var.site\n}\n")]);
    let bin = |args: &[&str]| crate::support::run_limited(s.path(), &[], args, 60);
    let r = bin(&["output"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.text());
    assert!(r.stderr.contains("No outputs found"), "{}", r.text());
    let r = bin(&["output", "-json"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "{}"), "{}", r.text());
    let r = bin(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.ends_with("Apply complete! Resources: 0 added, 0 changed, 0 destroyed.\n\nOutputs:\n\nsite = \"x\"\n"), "{}", r.text());
}

#[test]
fn terraform_flags_input_lock_version_and_misspellings() {
    let s = TestStack::new(&[("main.hcl", "variable \"site\" {\n  default = \"x\"\n}\n\noutput \"site\" {\n  value = var.site\n}\n")]);
    let bin = |args: &[&str]| crate::support::run_limited(s.path(), &[], args, 60);
    // A misspelled flag is answered with the flag it resembles.
    let r = bin(&["plan", "-detailed-exitcodes"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("a similar argument exists: '--detailed-exitcode'"), "{}", r.text());
    let r = bin(&["-version"]);
    assert_eq!((r.code, r.stdout.starts_with("kdeploy ")), (0, true), "{}", r.text());
    // -input=false: no question, so an apply with changes needs -auto-approve.
    let r = bin(&["apply", "-input=false"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("-input=false forbids asking"), "{}", r.text());
    // -lock=false plans while another process holds the lock; without it the plan waits for none.
    let mut holder = kdeploy_state::LocalStore::new(s.state_path());
    kdeploy_state::StateStore::lock(&mut holder, kdeploy_state::LockInfo::new("test", "0"), std::time::Duration::ZERO).unwrap();
    let r = bin(&["plan"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("lock"), "{}", r.text());
    let r = bin(&["plan", "-lock=false"]);
    assert_eq!(r.code, 0, "{}", r.text());
    kdeploy_state::StateStore::unlock(&mut holder).unwrap();
    // -compact-warnings: the summaries only.
    let r = bin(&["plan", "-target", "vault.main", "-compact-warnings"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stdout.starts_with("Warnings:\n\n- Resource targeting is in effect\n- No components matched -target\n\nTo see the full warning notes, run kdeploy without -compact-warnings.\n"),
        "{}",
        r.text()
    );
    let r = bin(&["plan", "-target", "vault.main"]);
    assert!(r.stdout.contains("Warning: Resource targeting is in effect: You are creating a plan with the -target option"), "{}", r.text());
}

#[test]
fn markdown_plan_for_pull_requests() {
    let s = TestStack::new(&[("main.hcl", &basic_stack(&[("front", "rtsp://10.0.0.1/s1"), ("back", "rtsp://10.0.0.2/s1")]))]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["plan", "--format", "markdown"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    insta::assert_snapshot!("plan_markdown", r.stdout);
    assert!(!r.stdout.contains("fake-secret") && r.stdout.contains("(sensitive value)"), "sensitive values stay hidden");

    // As GitHub shows it: the summary tables and one collapsible section per component.
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new_ext(&r.stdout, pulldown_cmark::Options::ENABLE_TABLES));
    assert!(html.contains("<h3>kdeploy plan: 6 to add, 0 to change, 0 to destroy</h3>"), "{html}");
    assert!(html.contains("<th>Kind</th>") && html.contains("<td>agent</td>") && html.contains("<th>Cluster</th>"), "{html}");
    assert_eq!(html.matches("<details><summary>").count(), 6, "{html}");
    assert!(html.contains("<summary>agent.cam[\"front\"] will be created</summary>"), "{html}");

    // Past the size limit the rest is named, not detailed.
    let loaded = kdeploy::engine::load(s.path(), &[], &BTreeMap::new(), &kdeploy::engine::VarSource::Inputs, false).ok().expect("loads");
    let plan = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(kdeploy::engine::plan(&loaded, &kdeploy_state::State::new("t"), &crate::support::fake_providers(&w), &Default::default()))
        .unwrap();
    let short = kdeploy::plan::markdown::markdown_with_limit(&plan, 2_000);
    assert!(short.len() < 2_500, "{short}");
    assert!(short.contains("more components are left out") && short.contains("`vault.main`"), "{short}");
}

#[test]
fn markdown_plan_through_the_binary() {
    let s = TestStack::new(&[("main.hcl", "variable \"site\" {\n  default = \"x\"\n}\n\noutput \"site\" {\n  value = var.site\n}\n")]);
    let r = crate::support::run_limited(s.path(), &[], &["plan", "-format=markdown"], 60);
    assert_eq!(r.code, 0, "{}", r.text());
    assert_eq!(r.stdout, "### kdeploy plan: 0 to add, 0 to change, 0 to destroy\n\nRoot outputs change: 1.\n\n");
}

#[test]
fn diagnostics_as_github_annotations() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("stack")).unwrap();
    std::fs::write(repo.path().join("stack/main.hcl"), "output \"x\" {\n  value = var.nope\n}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kdeploy"))
        .args(["-C", "stack", "validate", "-diagnostics-format=github"])
        .env("GITHUB_WORKSPACE", repo.path())
        .env("NO_COLOR", "1")
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "::error file=stack/main.hcl,line=2,col=11,endColumn=19,title=Reference to undeclared input variable::An input variable named \"nope\" has not been declared.%0AHint: declare it with variable \"nope\" { type = string }\n"
    );
    // The human rendering still goes to the log.
    assert!(String::from_utf8_lossy(&out.stderr).contains(" --> main.hcl:2:11"));
}

#[test]
fn syntax_errors_are_located_in_fmt_and_point_at_the_culprit() {
    let s = TestStack::new(&[("main.hcl", "output \"x\" {\n  value = \"a\\qb\"\n}\n"), ("broken.hcl", "x = {\n")]);
    let bin = |args: &[&str]| crate::support::run_limited(s.path(), &[], args, 60);
    // fmt refuses a file that does not parse, with its location, instead of leaving it alone silently.
    let r = bin(&["fmt", "-check"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains(" --> broken.hcl:1:1"), "{}", r.text());
    // An invalid escape is marked at its backslash.
    assert!(r.stderr.contains(" --> main.hcl:2:13\n  |\n2 |   value = \"a\\qb\"\n  |             ^\n"), "{}", r.text());
    let r = bin(&["validate"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains(" --> main.hcl:2:13"), "{}", r.text());
}

#[test]
fn one_error_one_message() {
    let s =
        TestStack::new(&[("main.hcl", "variable \"cams\" {\n  type = map(string)\n}\n\nagent \"cam\" {\n  for_each = var.cams\n  rtsp_url = each.value\n}\n")]);
    let bin = |args: &[&str]| crate::support::run_limited(s.path(), &[], args, 60);
    // A rejected -var value does not also make for_each "known only after apply".
    let r = bin(&["plan", "-var", "cams=notamap"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert_eq!(r.stderr.matches("error: ").count(), 1, "{}", r.text());
    assert!(r.stderr.contains("error: Invalid value for variable"), "{}", r.text());
    // A module that cannot be read is one error, not also "no input variable" for each argument.
    s.write("main.hcl", "module \"site\" {\n  source = \"./missing\"\n  cams   = {}\n}\n");
    let r = bin(&["validate"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert_eq!(r.stderr.matches("error: ").count(), 1, "{}", r.text());
    assert!(r.stderr.contains("error: Cannot read stack directory"), "{}", r.text());
}

#[test]
fn every_command_help_has_examples_and_describes_each_argument() {
    let root = kdeploy::cli::args::command();
    let mut missing = Vec::new();
    for path in crate::dist::command_paths() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let r = crate::support::run_limited(std::path::Path::new("."), &[], &args, 30);
        if r.code != 0 || !r.stdout.contains("Examples:") {
            missing.push(format!("{}: no examples", path.join(" ")));
        }
        let cmd = path.iter().fold(&root, |c, name| c.find_subcommand(name).unwrap());
        for a in cmd.get_arguments().filter(|a| !["help", "version"].contains(&a.get_id().as_str())) {
            if a.get_help().is_none() {
                missing.push(format!("{}: argument {} is not described", path.join(" "), a.get_id()));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn fmt_keeps_comments_is_idempotent_and_has_terraforms_flags() {
    let messy = "locals {\n# a comment   with  spaces\nx = 1 // trailing   comment\n  /* multi\n     line   kept\n        exactly */\n    longer_name = \"y\"   # end\n}\n";
    let tidy = "locals {\n  # a comment   with  spaces\n  x = 1 // trailing   comment\n  /* multi\n     line   kept\n        exactly */\n  longer_name = \"y\"   # end\n}\n";
    let s = TestStack::new(&[("main.hcl", messy), ("sub/inner.hcl", "x=1\n")]);
    let bin = |args: &[&str]| crate::support::run_limited(s.path(), &[], args, 60);
    let read = |f: &str| std::fs::read_to_string(s.path().join(f)).unwrap();

    let r = bin(&["fmt", "-check", "-diff"]);
    assert_eq!(r.code, 3, "{}", r.text());
    assert!(r.stdout.starts_with("main.hcl\n--- a/main.hcl\n+++ b/main.hcl\n"), "{}", r.text());
    assert!(r.stdout.contains("-    longer_name = \"y\"   # end\n+  longer_name = \"y\"   # end\n"), "{}", r.text());
    assert_eq!(read("main.hcl"), messy, "-check writes nothing");
    let r = bin(&["fmt", "-recursive", "-write=false"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "main.hcl\nsub/inner.hcl\n"), "{}", r.text());
    assert_eq!(read("sub/inner.hcl"), "x=1\n", "-write=false writes nothing");

    let r = bin(&["fmt"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "main.hcl\n"), "{}", r.text());
    assert_eq!(read("main.hcl"), tidy, "comments kept byte for byte, the inside of /* */ included");
    let r = bin(&["fmt", "-check"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "formatting twice changes nothing: {}", r.text());
}

#[test]
fn a_stack_file_the_user_cannot_read_stops_every_command() {
    use std::os::unix::fs::PermissionsExt;
    // As root every file is readable: then kdeploy runs as `nobody` (setpriv) to meet a real
    // permission error; as another user the file's mode is enough.
    let root = std::process::Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    if root && !std::process::Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "setpriv (util-linux) is needed to run this test as root");
        eprintln!("skipped: running as root without setpriv (util-linux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &std::path::Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    open(dir.path(), 0o755);
    // The binary, where `nobody` may run it (the build directory may be private).
    let bin = dir.path().join("kdeploy");
    std::fs::copy(env!("CARGO_BIN_EXE_kdeploy"), &bin).unwrap();
    open(&bin, 0o755);
    let stack = dir.path().join("stack");
    std::fs::create_dir(&stack).unwrap();
    open(&stack, 0o755);
    std::fs::write(stack.join("main.hcl"), "output \"x\" {\n  value = 1\n}\n").unwrap();
    open(&stack.join("main.hcl"), 0o644);
    std::fs::write(stack.join("private.hcl"), "output \"y\" {\n  value = 2\n}\n").unwrap();
    open(&stack.join("private.hcl"), 0o600);
    for command in [&["validate"][..], &["plan"], &["fmt", "-check"]] {
        let mut c = if root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
            c
        } else {
            std::process::Command::new(&bin)
        };
        let out = c.arg("-C").arg(&stack).args(command).env("NO_COLOR", "1").env("HOME", dir.path()).current_dir(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(stderr.contains("private.hcl") && stderr.contains("Permission denied"), "{command:?}: {stderr}");
    }
}
