//! Build information for `kdeploy version`: the git commit and the build date, passed to the
//! crate as `KDEPLOY_GIT_COMMIT` and `KDEPLOY_BUILD_DATE` (read in `src/build_info.rs`).
//!
//! Kept cheap: one `git rev-parse`, no dependencies. The script reruns only when the commit can
//! have changed (the `HEAD` file, the branch it points to, `packed-refs`) or when one of its
//! variables changes, never on every build.
//!
//! - `KDEPLOY_BUILD_COMMIT` overrides the commit (builds without `.git`, e.g. the Dockerfile).
//! - `SOURCE_DATE_EPOCH` (reproducible builds) fixes the build date; without it, the time the
//!   script ran.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KDEPLOY_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let git = git_info();
    for path in &git.watch {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let commit = std::env::var("KDEPLOY_BUILD_COMMIT").ok().filter(|c| !c.trim().is_empty()).or(git.commit);
    println!("cargo:rustc-env=KDEPLOY_GIT_COMMIT={}", commit.as_deref().map(str::trim).unwrap_or("unknown"));
    println!("cargo:rustc-env=KDEPLOY_BUILD_DATE={}", rfc3339(build_epoch()));
    println!("cargo:rustc-env=KDEPLOY_BUILD_TARGET={}", std::env::var("TARGET").unwrap_or_default());
}

/// What git says about the checkout, when there is one.
#[derive(Default)]
struct GitInfo {
    commit: Option<String>,
    /// Existing files whose change means a new commit (a missing one would rerun every build).
    watch: Vec<PathBuf>,
}

fn git_info() -> GitInfo {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    // One call: the commit, the ref HEAD points to, and where HEAD and packed-refs live (in a
    // worktree, HEAD is in the worktree's git dir and the refs in the common one).
    let out = Command::new("git")
        .args(["rev-parse", "HEAD", "--symbolic-full-name", "HEAD", "--git-path", "HEAD", "--git-path", "packed-refs"])
        .current_dir(&dir)
        .output();
    let Ok(out) = out.map_err(|e| println!("cargo:warning=git not run ({e}): commit \"unknown\"")) else {
        return GitInfo::default();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let [commit, refname, head, packed] = lines[..] else {
        return GitInfo::default();
    };
    if !out.status.success() {
        return GitInfo::default();
    }
    let absolute = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { dir.join(p) };
    let (head, packed) = (absolute(head), absolute(packed));
    let mut watch = vec![head, packed.clone()];
    if let (Some(common), true) = (packed.parent(), refname.starts_with("refs/")) {
        watch.push(common.join(refname));
    }
    watch.retain(|p| p.exists());
    GitInfo { commit: Some(commit.to_string()), watch }
}

/// Seconds since the epoch: `SOURCE_DATE_EPOCH` when set, else now.
fn build_epoch() -> i64 {
    // Empty counts as unset (the Dockerfile passes its build argument through either way).
    if let Some(v) = std::env::var("SOURCE_DATE_EPOCH").ok().filter(|v| !v.trim().is_empty()) {
        match v.trim().parse::<i64>() {
            Ok(secs) => return secs,
            Err(_) => println!("cargo:warning=SOURCE_DATE_EPOCH={v:?} is not a number of seconds; using the current time"),
        }
    }
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) without a date crate: the civil-from-days algorithm
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
fn rfc3339(epoch: i64) -> String {
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}
