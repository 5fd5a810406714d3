//! Distribution (issue 20): shell completions, man pages and `version --json` through the real
//! binary; the Dockerfile (statically always, built when its base images are present); the
//! release workflow, the setup action and the scripts they run.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value as Yaml;

use crate::support::{Out, TestStack, run_binary};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kdeploy(args: &[&str]) -> Out {
    let s = TestStack::new(&[]);
    run_binary(s.path(), &[], args)
}

/// Whether `tool` can be run; prints why the check is skipped when not.
fn have(tool: &str, why: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping {why}: {tool} is not installed");
    }
    found
}

/// Every command path: `plan`, `state`, `state list`, ... (clap's own `help` left out).
pub(crate) fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(&kdeploy::cli::args::command(), &[], &mut out);
    out
}

fn top_level_commands() -> Vec<String> {
    command_paths().into_iter().filter(|p| p.len() == 1).map(|p| p[0].clone()).collect()
}

#[test]
fn the_commands_include_completion_man_and_version() {
    let top = top_level_commands();
    for c in ["completion", "man", "version", "plan", "state"] {
        assert!(top.contains(&c.to_string()), "{c} missing from {top:?}");
    }
}

#[test]
fn bash_completion_is_valid_and_completes_every_command() {
    let r = kdeploy(&["completion", "bash"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kdeploy.bash");
    std::fs::write(&script, &r.stdout).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}", String::from_utf8_lossy(&syntax.stderr));
    // Ask the completion function what follows `kdeploy ` and `kdeploy state `, as bash does on TAB.
    let complete = |words: &str| -> Vec<String> {
        let prog = format!(
            "source {}; COMP_WORDS=({words} ''); COMP_CWORD=${{#COMP_WORDS[@]}}; COMP_CWORD=$((COMP_CWORD-1)); COMP_LINE='{words} '; COMP_POINT=${{#COMP_LINE}}; _kdeploy kdeploy '' \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").arg("-c").arg(&prog).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect()
    };
    let offered = complete("kdeploy");
    for c in top_level_commands() {
        assert!(offered.contains(&c), "bash does not complete `kdeploy {c}`: {offered:?}");
    }
    let offered = complete("kdeploy state");
    for p in command_paths().iter().filter(|p| p.len() == 2 && p[0] == "state") {
        assert!(offered.contains(&p[1]), "bash does not complete `kdeploy state {}`: {offered:?}", p[1]);
    }
}

#[test]
fn zsh_fish_and_powershell_completions_name_every_command() {
    for (shell, checker) in [("zsh", Some(("zsh", "-n"))), ("fish", Some(("fish", "--no-execute"))), ("powershell", None)] {
        let r = kdeploy(&["completion", shell]);
        assert_eq!(r.code, 0, "{shell}: {}", r.text());
        for c in top_level_commands() {
            assert!(r.stdout.contains(&c), "{shell} completion does not name {c}");
        }
        if let Some((tool, flag)) = checker {
            if !have(tool, &format!("the {shell} syntax check")) {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let script = dir.path().join("completion");
            std::fs::write(&script, &r.stdout).unwrap();
            let out = Command::new(tool).arg(flag).arg(&script).output().unwrap();
            assert!(out.status.success(), "{tool} {flag}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let r = kdeploy(&["completion", "tcsh"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("possible values: bash"), "{}", r.stderr);
}

/// Renders a man page to text with `man -l` (or groff); None when neither is installed.
fn render_man(page: &Path) -> Option<String> {
    let (tool, args): (&str, Vec<&str>) = if have("groff", "rendering with groff") {
        // All warnings on; long lines, no hyphenation or justification, plain text: easy to search.
        ("groff", vec!["-man", "-Tutf8", "-ww", "-rLL=300n", "-rHY=0", "-dAD=l", "-P-cbou"])
    } else if have("man", "rendering with man -l") {
        ("man", vec!["-l"])
    } else {
        return None;
    };
    let out = Command::new(tool).args(&args).arg(page).env("MANWIDTH", "300").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{tool} {}: {err}", page.display());
    // Drop overstrike bold/underline sequences (c\bc, _\bc), if any are left.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    Some(plain)
}

#[test]
fn man_pages_render_for_kdeploy_and_every_command() {
    let r = kdeploy(&["man"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.starts_with(".ie") || r.stdout.contains(".TH kdeploy 1"), "{}", &r.stdout[..200.min(r.stdout.len())]);
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let r = kdeploy(&["man", "--out-dir", pages.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.text());
    std::fs::write(dir.path().join("stdout.1"), {
        let out = kdeploy(&["man"]);
        out.stdout
    })
    .unwrap();
    let mut expected: Vec<String> = command_paths().iter().map(|p| format!("kdeploy-{}.1", p.join("-"))).collect();
    expected.push("kdeploy.1".into());
    for page in &expected {
        assert!(pages.join(page).is_file(), "{page} not written: {:?}", std::fs::read_dir(&pages).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>());
    }
    let Some(text) = render_man(&pages.join("kdeploy.1")) else {
        eprintln!("skipping the rendering checks: neither groff nor man is installed");
        return;
    };
    assert!(text.contains("NAME") && text.contains("kdeploy - Declarative provisioning"), "{text}");
    for c in top_level_commands() {
        assert!(text.contains(&format!("kdeploy-{c}(1)")), "kdeploy.1 does not list {c}: {text}");
    }
    for page in &expected {
        let text = render_man(&pages.join(page)).unwrap();
        assert!(text.contains("SYNOPSIS"), "{page}: {text}");
    }
    let plan = render_man(&pages.join("kdeploy-plan.1")).unwrap();
    assert!(plan.contains("--detailed-exitcode") && plan.contains("Show what apply would change"), "{plan}");
    assert_eq!(render_man(&dir.path().join("stdout.1")), render_man(&pages.join("kdeploy.1")), "`kdeploy man` prints kdeploy.1");
}

#[test]
fn man_out_dir_that_cannot_be_written_is_a_clear_error() {
    let s = TestStack::new(&[("file", "not a directory")]);
    let r = run_binary(s.path(), &[], &["man", "--out-dir", s.path().join("file").to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("Cannot write the man pages"), "{}", r.stderr);
}

#[test]
fn version_json_has_the_commit_and_build_date() {
    let r = kdeploy(&["version", "--json"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["kdeploy_version"], env!("CARGO_PKG_VERSION"));
    let commit = j["git_commit"].as_str().unwrap();
    let git = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(repo()).output().ok().filter(|o| o.status.success());
    match (option_env!("KDEPLOY_BUILD_COMMIT"), git) {
        (Some(given), _) if !given.is_empty() => assert_eq!(commit, given),
        (_, Some(out)) => assert_eq!(commit, String::from_utf8_lossy(&out.stdout).trim(), "the commit of this checkout"),
        (_, None) => assert_eq!(commit, "unknown", "built outside a git checkout"),
    }
    let date = j["build_date"].as_str().unwrap();
    let built = time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339).unwrap_or_else(|e| panic!("{date}: {e}"));
    match option_env!("SOURCE_DATE_EPOCH").and_then(|s| s.parse::<i64>().ok()) {
        Some(epoch) => assert_eq!(built.unix_timestamp(), epoch),
        None => assert!(built <= time::OffsetDateTime::now_utc() && built.year() >= 2025, "{date}"),
    }
    assert!(j["target"].as_str().unwrap().contains('-'), "{}", j["target"]);
    assert_eq!(j["image"], format!("{}:{}", kdeploy_provider::images::KDEPLOY_REPOSITORY, env!("CARGO_PKG_VERSION")));
    assert!(j["providers"].as_array().unwrap().iter().any(|p| p == "kubernetes"));
}

#[test]
fn version_text() {
    let r = kdeploy(&["version"]);
    insta::with_settings!({filters => vec![
        (r"v\d+\.\d+\.\d+\S*", "v[VERSION]"),
        (r":\d+\.\d+\.\d+\S*", ":[VERSION]"),
        (r"commit: ([0-9a-f]{40}|unknown)", "commit: [COMMIT]"),
        (r"built: \S+ for \S+", "built: [DATE] for [TARGET]"),
    ]}, {
        insta::assert_snapshot!("version_text", r.text());
    });
}

/// Instructions of one Dockerfile stage: (instruction, arguments), continuation lines joined.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (ins, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let ins = ins.to_ascii_uppercase();
        if ins == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push((ins, args.trim().to_string()));
        }
    }
    stages
}

#[test]
fn dockerfile_runtime_stage_is_small_non_root_with_ca_certificates_and_kdeploy_as_entrypoint() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "multi-stage");
    let runtime = stages.last().unwrap();
    let get = |ins: &str| runtime.iter().filter(|(i, _)| i == ins).map(|(_, a)| a.clone()).collect::<Vec<_>>();
    // A slim base (the ARG default), not the Rust toolchain image.
    let from = &get("FROM")[0];
    let base_arg = from.split_whitespace().next().unwrap().trim_start_matches("${").trim_end_matches('}');
    let base = text.lines().find_map(|l| l.strip_prefix(&format!("ARG {base_arg}="))).unwrap_or(base_arg);
    assert!(base.contains("slim") || base.contains("distroless"), "runtime base {base}");
    assert!(!base.starts_with("rust"), "runtime base {base}");
    assert!(get("RUN").iter().any(|r| r.contains("ca-certificates")), "CA certificates installed");
    let user = get("USER").last().cloned().expect("a USER in the runtime stage");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "non-root: USER {user}");
    assert!(uid.parse::<u32>().is_ok(), "a numeric UID, so that runAsNonRoot can check it: USER {user}");
    let entrypoint = get("ENTRYPOINT").last().cloned().expect("an ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entrypoint).expect("exec form");
    assert!(entry[0].ends_with("/kdeploy") || entry[0] == "kdeploy", "{entrypoint}");
    assert!(get("COPY").iter().any(|c| c.starts_with("--from=build")), "the binary comes from the build stage");
    // The build stage installs the man pages and completions the binary generates.
    let build: String = stages[0].iter().map(|(i, a)| format!("{i} {a}\n")).collect();
    for needle in ["kdeploy man --out-dir /out/usr/local/share/man/man1", "completion bash", "completion zsh", "completion fish", "--locked"] {
        assert!(build.contains(needle), "build stage lacks {needle:?}");
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target"), "the build context leaves target/ out");
}

/// The base images named by the Dockerfile's ARG defaults.
fn dockerfile_base_images() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("ARG "))
        .filter(|l| l.contains("_IMAGE="))
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Builds the image and runs it. There is no registry on the project's machines or CI, so
/// without the base images in the local engine this test is skipped, also when CI is set (the
/// one exemption from "fail when CI is set"; the static test above always runs).
#[test]
fn dockerfile_builds_and_the_image_runs_kdeploy_as_non_root() {
    let docker_ok = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !docker_ok {
        eprintln!(
            "skipping the Dockerfile build: no Docker engine reachable (exempt from failing under CI: no registry exists there to pull the base images from)"
        );
        return;
    }
    let bases = dockerfile_base_images();
    let missing: Vec<&String> =
        bases.iter().filter(|b| !Command::new("docker").args(["image", "inspect", b.as_str()]).output().map(|o| o.status.success()).unwrap_or(false)).collect();
    if !missing.is_empty() {
        eprintln!(
            "skipping the Dockerfile build: base image(s) {missing:?} not in the local Docker engine and there is no registry to pull them from (this test is exempt from failing when CI is set; the runtime stage is still checked statically)"
        );
        return;
    }
    let tag = format!("kdeploy-it:{}", uuid::Uuid::new_v4().simple());
    let build = Command::new("docker")
        .args(["build", "-t", &tag, "--build-arg", "KDEPLOY_BUILD_COMMIT=0123456789abcdef0123456789abcdef01234567", "."])
        .current_dir(repo())
        .output()
        .unwrap();
    let cleanup = || {
        let _ = Command::new("docker").args(["image", "rm", "-f", &tag]).output();
    };
    if !build.status.success() {
        cleanup();
        panic!("docker build: {}", String::from_utf8_lossy(&build.stderr));
    }
    let run = |args: &[&str]| Command::new("docker").args(["run", "--rm"]).args(args).output().unwrap();
    let version = run(&[&tag, "version", "--json"]);
    let id = run(&["--entrypoint", "id", &tag, "-u"]);
    let files = run(&[
        "--entrypoint",
        "ls",
        &tag,
        "/etc/ssl/certs/ca-certificates.crt",
        "/usr/local/share/man/man1/kdeploy.1",
        "/usr/share/bash-completion/completions/kdeploy",
    ]);
    cleanup();
    let j: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&version.stderr)));
    assert_eq!(j["git_commit"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), "10001");
    assert!(files.status.success(), "{}", String::from_utf8_lossy(&files.stderr));
}

fn yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Every step (`uses:` or `run:`) of a workflow's jobs or a composite action.
fn steps(doc: &Yaml) -> Vec<&Yaml> {
    let mut out = Vec::new();
    if let Some(jobs) = doc["jobs"].as_mapping() {
        for (name, job) in jobs {
            assert!(job["runs-on"].is_string() || job["uses"].is_string(), "job {name:?} has no runs-on");
            out.extend(job["steps"].as_sequence().map(|s| s.iter().collect::<Vec<_>>()).unwrap_or_default());
        }
    }
    if let Some(s) = doc["runs"]["steps"].as_sequence() {
        out.extend(s.iter());
    }
    out
}

/// What a `uses:` names, checked: local actions and this repository's actions exist, others are
/// pinned to a version.
fn check_uses(uses: &str, file: &Path) {
    const THIS_REPO: &str = "kerberos-io/kdeploy/";
    assert_eq!(
        kdeploy_provider::images::KDEPLOY_REPOSITORY,
        format!("ghcr.io/{}", THIS_REPO.trim_end_matches('/')),
        "the image and the action live in the same repository"
    );
    let local = uses.strip_prefix("./").map(str::to_string).or_else(|| uses.strip_prefix(THIS_REPO).and_then(|r| r.split('@').next()).map(str::to_string));
    match local {
        Some(path) => assert!(repo().join(&path).join("action.yml").is_file(), "{}: uses {uses}, but {path}/action.yml does not exist", file.display()),
        None => assert!(uses.split_once('@').is_some_and(|(_, v)| !v.is_empty()), "{}: {uses} is not pinned", file.display()),
    }
}

/// The repository scripts a `run:` block calls, resolved against the repository (or the
/// action's directory for `$GITHUB_ACTION_PATH`), and the block with expressions replaced, for
/// `bash -n`.
fn check_run(script: &str, file: &Path) {
    let action_dir = file.parent().unwrap();
    for word in script.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '(' || c == ')') {
        let path = if let Some(rest) = word.strip_prefix("$GITHUB_ACTION_PATH/") {
            action_dir.join(rest)
        } else if word.starts_with(".github/") || word.starts_with(".ci/") {
            repo().join(word)
        } else {
            continue;
        };
        assert!(path.is_file(), "{}: runs {word}, which does not exist", file.display());
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
        assert!(mode & 0o111 != 0, "{} is not executable", path.display());
        let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(syntax.status.success(), "bash -n {}: {}", path.display(), String::from_utf8_lossy(&syntax.stderr));
    }
    let mut plain = String::new();
    let mut rest = script;
    while let Some(i) = rest.find("${{") {
        plain.push_str(&rest[..i]);
        plain.push_str("EXPR");
        rest = rest[i..].split_once("}}").map(|(_, r)| r).unwrap_or("");
    }
    plain.push_str(rest);
    let out = Command::new("bash").args(["-n", "-c", &plain]).output().unwrap();
    assert!(out.status.success(), "{}: a run block is not valid bash: {}\n{script}", file.display(), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn workflows_and_the_setup_action_parse_and_reference_what_exists() {
    let files = [
        repo().join(".github/workflows/release.yml"),
        repo().join(".github/actions/setup-kdeploy/action.yml"),
        repo().join("examples/drift/github-actions.yml"),
        repo().join("examples/ci/github-actions.yml"),
    ];
    for file in &files {
        let doc = yaml(file);
        let steps = steps(&doc);
        assert!(!steps.is_empty(), "{}: no steps", file.display());
        for step in steps {
            match (step["uses"].as_str(), step["run"].as_str()) {
                (Some(uses), None) => check_uses(uses, file),
                (None, Some(run)) => check_run(run, file),
                _ => panic!("{}: a step needs exactly one of uses/run: {step:?}", file.display()),
            }
        }
    }
    let release = yaml(&files[0]);
    assert!(release["on"]["push"]["tags"].as_sequence().is_some_and(|t| !t.is_empty()), "released on a tag");
    assert_eq!(release["env"]["IMAGE"].as_str(), Some(kdeploy_provider::images::KDEPLOY_REPOSITORY), "the workflow pushes the drift_schedule default image");
    let targets: Vec<&str> =
        release["jobs"]["binaries"]["strategy"]["matrix"]["include"].as_sequence().unwrap().iter().filter_map(|t| t["target"].as_str()).collect();
    for t in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu", "aarch64-apple-darwin"] {
        assert!(targets.contains(&t), "{t} is not released: {targets:?}");
    }
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("SHA256SUMS") && text.contains("gh release create"), "checksums and a GitHub release");
    let example = std::fs::read_to_string(&files[2]).unwrap();
    assert!(example.contains("setup-kdeploy@v") && !example.contains("cargo install"), "the example installs a pinned release");
    // The review workflow: markdown plan on pull requests, the saved plan applied after approval.
    let ci = yaml(&files[3]);
    assert!(ci["on"]["pull_request"].is_mapping() && ci["on"]["push"]["branches"].as_sequence().is_some(), "runs on pull requests and merges");
    assert!(ci["concurrency"]["group"].is_string(), "a concurrency group");
    assert_eq!(ci["jobs"]["apply"]["environment"].as_str(), Some("production"), "apply waits for an environment approval");
    assert_eq!(ci["jobs"]["apply"]["needs"].as_str(), Some("plan-merge"));
    let text = std::fs::read_to_string(&files[3]).unwrap();
    assert!(text.contains("-format=markdown") && text.contains("-diagnostics-format=github"), "markdown plan and annotations");
    assert!(text.contains("-out merge.kdplan") && text.contains("apply -input=false -diagnostics-format=github merge.kdplan"), "applies the saved plan");
    let pr_job = serde_yaml::to_string(&ci["jobs"]["plan"]).unwrap();
    assert!(!pr_job.contains("upload-artifact") && !pr_job.contains("-out"), "no plan file leaves a pull request's runner");
}

#[test]
fn the_drift_examples_use_the_release_image_of_this_version() {
    let image = kdeploy_provider::images::kdeploy();
    let cronjob = std::fs::read_to_string(repo().join("examples/drift/cronjob.yaml")).unwrap();
    assert!(cronjob.contains(&format!("image: {image} ")), "examples/drift/cronjob.yaml runs {image}");
    let schema = kdeploy_provider::schema(kdeploy_provider::Kind::DriftSchedule, "kubernetes").unwrap();
    let attr = schema.attr("image").unwrap();
    assert!(!attr.required);
    assert_eq!(attr.default, Some(kdeploy_provider::Value::string(image.as_str())));
}

#[test]
fn check_version_accepts_only_the_tag_of_the_workspace_version() {
    let script = repo().join(".github/scripts/check-version.sh");
    let version = env!("CARGO_PKG_VERSION");
    let ok = Command::new(&script).arg(format!("v{version}")).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), version);
    let bad = Command::new(&script).arg("v9.9.9").output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not match"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// package.sh packs the binary the way the release workflow does; install.sh (what the setup
/// action runs) installs it from a file:// mirror and refuses an archive whose checksum differs.
#[test]
fn the_setup_action_installs_a_packaged_release_and_refuses_a_bad_checksum() {
    if !have("curl", "the setup action test") || !have("sha256sum", "the setup action test") {
        return;
    }
    let version = env!("CARGO_PKG_VERSION");
    let target = "x86_64-unknown-linux-gnu"; // the name only: the binary is this machine's
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    let dist = mirror.join(format!("v{version}"));
    let package = Command::new(repo().join(".github/scripts/package.sh")).args([env!("CARGO_BIN_EXE_kdeploy"), version, target]).arg(&dist).output().unwrap();
    assert!(package.status.success(), "package.sh: {}", String::from_utf8_lossy(&package.stderr));
    let archive = format!("kdeploy-{version}-{target}.tar.gz");
    let listing = Command::new("tar").arg("-tzf").arg(dist.join(&archive)).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for f in [
        "kdeploy",
        "man/man1/kdeploy.1",
        "man/man1/kdeploy-plan.1",
        "completions/kdeploy.bash",
        "completions/_kdeploy",
        "completions/kdeploy.fish",
        "README.md",
    ] {
        assert!(listing.lines().any(|l| l == format!("kdeploy-{version}-{target}/{f}")), "{f} not in the archive:\n{listing}");
    }
    std::fs::copy(dist.join(format!("{archive}.sha256")), dist.join("SHA256SUMS")).unwrap();
    let sum = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap().split_whitespace().next().unwrap().to_string();
    let install = |pinned: &str, bin: &Path| {
        Command::new(repo().join(".github/actions/setup-kdeploy/install.sh"))
            .env("KDEPLOY_VERSION", version)
            .env("KDEPLOY_SHA256", pinned)
            .env("KDEPLOY_BASE_URL", format!("file://{}", mirror.display()))
            .env("KDEPLOY_INSTALL_DIR", bin)
            .env("KDEPLOY_TARGET", target)
            .output()
            .unwrap()
    };
    let bin = tmp.path().join("bin");
    let ok = install(&sum, &bin);
    assert!(ok.status.success(), "{}{}", String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));
    let v = Command::new(bin.join("kdeploy")).args(["version", "--json"]).output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(j["kdeploy_version"], version);

    let wrong_pin = install(&"0".repeat(64), &tmp.path().join("bin2"));
    assert!(!wrong_pin.status.success());
    assert!(String::from_utf8_lossy(&wrong_pin.stderr).contains("checksum mismatch"), "{}", String::from_utf8_lossy(&wrong_pin.stderr));
    assert!(!tmp.path().join("bin2/kdeploy").exists(), "nothing installed");

    // A replaced asset: the archive no longer matches SHA256SUMS.
    let mut bytes = std::fs::read(dist.join(&archive)).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(dist.join(&archive), bytes).unwrap();
    let tampered = install("", &tmp.path().join("bin3"));
    assert!(!tampered.status.success());
    assert!(String::from_utf8_lossy(&tampered.stderr).contains("checksum mismatch"), "{}", String::from_utf8_lossy(&tampered.stderr));
    assert!(!tmp.path().join("bin3/kdeploy").exists(), "nothing installed");
}
