//! The commands about kdeploy itself: `version`, `completion` and `man`. Completions and man
//! pages are generated from the same clap definitions as the parser, so they never disagree
//! with it.

use std::io::{self, Write};
use std::path::Path;

use clap_complete::Shell;
use serde_json::{Value, json};

use super::args;
use crate::build_info;
use crate::engine::VERSION;

/// What `kdeploy version --json` prints.
pub fn version_json(providers: &[&str]) -> Value {
    json!({
        "kdeploy_version": VERSION,
        "git_commit": build_info::GIT_COMMIT,
        "build_date": build_info::BUILD_DATE,
        "target": build_info::TARGET,
        "image": kdeploy_provider::images::kdeploy(),
        "state_format": kdeploy_state::STATE_VERSION,
        "plan_format": crate::plan::PLAN_FORMAT_VERSION,
        "providers": providers,
    })
}

/// What `kdeploy version` prints.
pub fn version_text(providers: &[&str]) -> String {
    format!(
        "kdeploy v{VERSION}\ncommit: {}\nbuilt: {} for {}\nimage: {}\nproviders: {}\n",
        build_info::GIT_COMMIT,
        build_info::BUILD_DATE,
        build_info::TARGET,
        kdeploy_provider::images::kdeploy(),
        providers.join(", "),
    )
}

/// Writes the completion script for `shell`. It is generated in memory first: clap_complete
/// panics on a write error, and a closed pipe must be an error, not a crash.
pub fn completion(out: &mut dyn Write, shell: Shell) -> io::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut args::command(), "kdeploy", &mut buf);
    out.write_all(&buf)
}

/// Writes the man page of `kdeploy` (roff) to `out`: the same `kdeploy.1` as [`man_pages`]
/// writes (clap's `help` subcommand has no page, so it is not listed).
pub fn man_page(out: &mut dyn Write) -> io::Result<()> {
    let mut cmd = args::command().disable_help_subcommand(true);
    cmd.build();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    out.write_all(&buf)
}

/// Writes `kdeploy.1` and one page per command (`kdeploy-plan.1`, `kdeploy-state-list.1`, ...)
/// into `dir`, creating it.
pub fn man_pages(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(args::command(), dir)
}
