//! Command-line arguments (clap). Terraform's single-dash spellings (`-target`, `-var`,
//! `-out`, ...) are accepted as well as the double-dash ones.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kdeploy",
    version,
    about = "Declarative provisioning for the Kerberos.io video-surveillance stack",
    long_about = "kdeploy reads the HCL stack files in a directory, plans the changes that bring the deployment in line with them, and applies them in dependency order.",
    after_help = "Examples:\n  kdeploy validate\n  kdeploy plan -out tonight.kdplan\n  kdeploy apply tonight.kdplan\n  kdeploy -C stacks/edge plan --detailed-exitcode\n\nExit codes: 0 success, 1 error, 2 changes present (plan --detailed-exitcode)."
)]
pub struct Cli {
    /// Run in DIR (the stack directory) instead of the current directory.
    #[arg(short = 'C', long = "chdir", global = true, value_name = "DIR")]
    pub chdir: Option<PathBuf>,
    /// Never use colour (also when NO_COLOR is set or output is not a terminal).
    #[arg(long = "no-color", global = true)]
    pub no_color: bool,
    /// Override a setting of the stack's state backend, e.g. `-backend-config key=prod.json`
    /// (repeatable; later wins). Applies to every command that opens state.
    #[arg(long = "backend-config", global = true, value_name = "KEY=VALUE")]
    pub backend_config: Vec<String>,
    /// Ask for input when needed (`-input=false`: never ask; an apply then needs -auto-approve).
    #[arg(long = "input", global = true, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub input: bool,
    /// How errors and warnings are printed: human (default), or github (also as GitHub Actions
    /// annotations on standard output, shown on the lines they name in a pull request).
    #[arg(long = "diagnostics-format", global = true, value_enum, default_value = "human")]
    pub diagnostics_format: DiagnosticsFormat,
    /// Warnings without errors are shown as a list of their summaries.
    #[arg(long = "compact-warnings", global = true)]
    pub compact_warnings: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagnosticsFormat {
    Human,
    Github,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the stack files: syntax, references, types, cycles. Needs no target or state.
    #[command(after_help = "Examples:\n  kdeploy validate\n  kdeploy validate --json")]
    Validate {
        /// Machine-readable diagnostics.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite stack files in the canonical format.
    #[command(
        after_help = "Examples:\n  kdeploy fmt\n  kdeploy fmt -check -diff          # CI: exit 3 and show what would change\n  kdeploy fmt -recursive -write=false   # list every unformatted file below"
    )]
    Fmt {
        /// Do not write; list files that are not formatted and exit 3 if any.
        #[arg(long)]
        check: bool,
        /// Show the changes as unified diffs.
        #[arg(long)]
        diff: bool,
        /// Write the formatted files (`-write=false`: only list them).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        write: bool,
        /// Also format the files in subdirectories (hidden directories and `target` left out).
        #[arg(long)]
        recursive: bool,
        /// Files to format (default: every .hcl and .kdvars file in the stack directory).
        files: Vec<PathBuf>,
    },
    /// Show what apply would change.
    #[command(
        after_help = "Examples:\n  kdeploy plan\n  kdeploy plan -out plan.kdplan\n  kdeploy plan --detailed-exitcode   # 0 nothing to do, 2 changes, 1 error\n  kdeploy plan -target 'agent.cam[\"front\"]' --json"
    )]
    Plan(PlanArgs),
    /// Apply the changes (a fresh plan, or exactly a saved plan file).
    #[command(after_help = "Examples:\n  kdeploy apply\n  kdeploy apply --auto-approve --parallelism 4\n  kdeploy apply plan.kdplan")]
    Apply {
        /// A plan saved with `kdeploy plan -out FILE`; applied exactly, refused if stale.
        plan_file: Option<PathBuf>,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        run: ApplyArgs,
    },
    /// Destroy everything the stack manages (plan -destroy, then apply).
    #[command(after_help = "Examples:\n  kdeploy destroy\n  kdeploy destroy --auto-approve --delete-data")]
    Destroy {
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        run: ApplyArgs,
    },
    /// Record an existing object in state as a declared component, without changing it.
    #[command(
        after_help = "Examples:\n  kdeploy import vault.main kerberos-vault/vault            # Kubernetes: NAMESPACE/NAME of its workload\n  kdeploy import 'agent.cam[\"front\"]' kerberos-agent/agent1\n  kdeploy import vault.main vault                           # Docker: the container's name\n\nThe next plan shows what kdeploy changes on it (on Kubernetes, at least taking its fields over)."
    )]
    Import {
        /// The component's address, declared in the stack.
        address: String,
        /// The provider's id of the existing object.
        id: String,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Find a Kerberos site running on a declared cluster and write it as stack HCL: components
    /// with the settings read, import blocks, and passwords referenced through data sources.
    #[command(
        after_help = "Examples:\n  kdeploy adopt --cluster k8s                  # print the HCL\n  kdeploy adopt --cluster k8s -out adopted.hcl # write it into the stack (not over an existing file)\n\nThen: kdeploy plan (it shows the imports), and kdeploy apply."
    )]
    Adopt {
        /// The cluster to look at: a cluster block of the stack (`cluster "NAME"`).
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// Write the HCL to FILE (relative to the stack directory) instead of printing it.
        #[arg(long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Show a saved plan, or the current state.
    #[command(after_help = "Examples:\n  kdeploy show\n  kdeploy show plan.kdplan\n  kdeploy show --json plan.kdplan")]
    Show {
        /// A plan saved with `kdeploy plan -out FILE` (without it: the current state).
        plan_file: Option<PathBuf>,
        /// Print JSON (the shape of `terraform show -json`).
        #[arg(long)]
        json: bool,
    },
    /// Report what changed outside kdeploy since the last apply (read-only; for cron jobs).
    #[command(
        after_help = "Examples:\n  kdeploy drift\n  kdeploy drift --detailed-exitcode   # 0 no drift, 2 drift, 1 error\n  kdeploy drift --format markdown >> \"$GITHUB_STEP_SUMMARY\"\n  kdeploy drift --notify https://hooks.slack.com/services/..."
    )]
    Drift(DriftArgs),
    /// Print the dependency graph.
    #[command(after_help = "Examples:\n  kdeploy graph | dot -Tsvg > graph.svg\n  kdeploy graph --format text")]
    Graph {
        /// dot (Graphviz) or text (the apply order, indented by dependency).
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
        #[command(flatten)]
        vars: VarArgs,
    },
    /// Inspect and edit the recorded state.
    #[command(
        subcommand,
        after_help = "Examples:\n  kdeploy state list\n  kdeploy state show vault.main\n  kdeploy state mv 'agent.cam[\"front\"]' 'agent.cam[\"entrance\"]'\n  kdeploy state rm 'agent.cam[\"yard\"]'\n  kdeploy state pull > backup.kdstate"
    )]
    State(StateCommand),
    /// Print root outputs.
    #[command(after_help = "Examples:\n  kdeploy output\n  kdeploy output vault_url\n  kdeploy output --json")]
    Output {
        /// One output (sensitive outputs are printed only when named).
        name: Option<String>,
        /// Print JSON (`{"NAME": {"sensitive": ..., "value": ...}}`, or the one value).
        #[arg(long)]
        json: bool,
        /// Print a string output without quotes.
        #[arg(long)]
        raw: bool,
    },
    /// Check the state backend; with -migrate-state, copy the state from the previous backend.
    #[command(
        after_help = "Examples:\n  kdeploy init\n  kdeploy init -migrate-state                      # from .kdeploy/state.json to the stack's backend\n  kdeploy init -migrate-state -from-backend-config type=s3 -from-backend-config bucket=old ..."
    )]
    Init {
        /// Copy the state of the previous backend (the local `.kdeploy/state.json` unless
        /// -from-backend-config says otherwise) to the configured one, both locked meanwhile.
        #[arg(long = "migrate-state")]
        migrate_state: bool,
        /// The previous backend: `type=local|s3|kubernetes` and its settings (repeatable).
        #[arg(long = "from-backend-config", value_name = "KEY=VALUE")]
        from_backend_config: Vec<String>,
        /// Replace state of another lineage in the configured backend.
        #[arg(long)]
        force: bool,
        /// Wait this long for each backend's lock (e.g. 30s).
        #[arg(long = "lock-timeout", default_value = "0s", value_parser = parse_duration)]
        lock_timeout: std::time::Duration,
    },
    /// Release a lock left by a run that is gone. Needs the exact lock id. A local lock whose
    /// holder still runs is refused unless --even-if-running is given.
    #[command(
        name = "force-unlock",
        after_help = "Examples:\n  kdeploy force-unlock 4c1f0b7e-2f7d-4a53-9a47-0d3c1d2e5f60\n  kdeploy force-unlock --even-if-running 4c1f0b7e-...   # the holder is alive: it stops at its next write\n\nThe id is in the \"state is locked\" error of the run that could not get the lock."
    )]
    ForceUnlock {
        /// The exact id of the lock to release.
        id: String,
        /// Break the lock even though the run holding it is still alive. That run can then no
        /// longer write the state: it stops at its next write and keeps its changes in
        /// errored.kdstate.
        #[arg(long = "even-if-running")]
        even_if_running: bool,
    },
    /// Print the version, the git commit and the build date.
    #[command(after_help = "Examples:\n  kdeploy version\n  kdeploy version --json")]
    Version {
        /// Print JSON (version, commit, build date, formats, providers).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  kdeploy completion bash > ~/.local/share/bash-completion/completions/kdeploy\n  kdeploy completion zsh > ~/.zfunc/_kdeploy\n  kdeploy completion fish > ~/.config/fish/completions/kdeploy.fish\n  kdeploy completion powershell >> $PROFILE"
    )]
    Completion {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a directory.
    #[command(after_help = "Examples:\n  kdeploy man | man -l -\n  kdeploy man --out-dir ~/.local/share/man/man1   # kdeploy.1, kdeploy-plan.1, ...")]
    Man {
        /// Write kdeploy.1 and one page per command (kdeploy-plan.1, kdeploy-state-list.1, ...) here.
        #[arg(long = "out-dir", value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// The command-line definition: the parser, and the source of the completions and man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List recorded components (optionally only those matching the addresses given).
    #[command(
        after_help = "Examples:\n  kdeploy state list\n  kdeploy state list agent.cam          # every camera\n  kdeploy state list module.site vault.main"
    )]
    List {
        /// Addresses or prefixes to list (`agent.cam` also means all its instances).
        addresses: Vec<String>,
        /// Only the components of this state partition (a stack with partition = "cluster").
        #[arg(long = "partition", value_name = "NAME")]
        partition: Option<String>,
    },
    /// Show one recorded component (sensitive values hidden).
    #[command(after_help = "Examples:\n  kdeploy state show vault.main\n  kdeploy state show 'agent.cam[\"front\"]'")]
    Show {
        /// The component's exact address.
        address: String,
    },
    /// Forget components without destroying them.
    #[command(
        after_help = "Examples:\n  kdeploy state rm 'agent.cam[\"yard\"]'\n  kdeploy state rm module.old_site     # everything in the module\n\nThe live objects are not touched; the next plan proposes to create them again if the stack still declares them."
    )]
    Rm {
        /// Addresses or prefixes to forget.
        #[arg(required = true)]
        addresses: Vec<String>,
        /// Wait this long for the state lock (e.g. 30s).
        #[arg(long = "lock-timeout", default_value = "0s", value_parser = parse_duration)]
        lock_timeout: std::time::Duration,
    },
    /// Rename a recorded component (e.g. after renaming its block).
    #[command(
        after_help = "Examples:\n  kdeploy state mv 'agent.cam[\"front\"]' 'agent.cam[\"entrance\"]'\n  kdeploy state mv agent.cam agent.camera          # every instance\n  kdeploy state mv vault.main module.site.vault.main\n\nA component keeps its kind (a database cannot become a broker); an occupied address is refused."
    )]
    Mv {
        /// The current address (or prefix).
        source: String,
        /// The new address (or prefix).
        destination: String,
        /// Wait this long for the state lock (e.g. 30s).
        #[arg(long = "lock-timeout", default_value = "0s", value_parser = parse_duration)]
        lock_timeout: std::time::Duration,
    },
    /// Print the state as stored (JSON; sensitive values stay encrypted when they are).
    #[command(after_help = "Examples:\n  kdeploy state pull > backup.kdstate\n  kdeploy state pull | jq '.resources[].address'")]
    Pull,
    /// Replace the stored state with FILE (e.g. errored.kdstate). Refuses another lineage or a
    /// lower serial unless --force.
    #[command(
        after_help = "Examples:\n  kdeploy state push errored.kdstate\n  kdeploy state push --force backup.kdstate   # replaces another lineage: be sure"
    )]
    Push {
        /// The state file to upload (relative to the -C directory).
        file: PathBuf,
        /// Push even when the stored state has another lineage or a higher serial.
        #[arg(long)]
        force: bool,
        /// Wait this long for the state lock (e.g. 30s).
        #[arg(long = "lock-timeout", default_value = "0s", value_parser = parse_duration)]
        lock_timeout: std::time::Duration,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: DriftFormat,
    /// Same as --format json.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when nothing drifted, 2 when something did, 1 on error.
    #[arg(long = "detailed-exitcode")]
    pub detailed_exitcode: bool,
    /// POST the JSON report (with a Slack-compatible `text` field) to this webhook when drift is found.
    #[arg(long, value_name = "URL")]
    pub notify: Option<String>,
    /// How long one webhook attempt may take.
    #[arg(long = "notify-timeout", default_value = "10s", value_parser = parse_duration)]
    pub notify_timeout: std::time::Duration,
    /// Check only the components of this state partition (a stack with partition = "cluster").
    #[arg(long = "partition", value_name = "NAME")]
    pub partition: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriftFormat {
    Human,
    Json,
    Markdown,
}

impl PlanArgs {
    /// The output format, `--json` included.
    pub fn output_format(&self) -> PlanFormat {
        if self.json { PlanFormat::Json } else { self.format }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PlanFormat {
    #[default]
    Human,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Text,
}

#[derive(Debug, Clone, Default, Args)]
pub struct VarArgs {
    /// Set a root variable: NAME=VALUE (repeatable; with -var-file, later on the command line wins).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub var: Vec<String>,
    /// Read variables from a file of NAME = VALUE lines (repeatable; with -var, later wins).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_file: Vec<PathBuf>,
    /// The order of `var` and `var_file` on the command line (filled by [`Cli::parse_ordered`];
    /// empty: every -var, then every -var-file).
    #[arg(skip)]
    pub order: Vec<VarSlot>,
}

/// One -var (`Var(i)`: `var[i]`) or -var-file (`File(i)`: `var_file[i]`), in command-line order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarSlot {
    Var(usize),
    File(usize),
}

impl VarArgs {
    /// The slots in command-line order.
    pub fn slots(&self) -> Vec<VarSlot> {
        if self.order.is_empty() {
            (0..self.var.len()).map(VarSlot::Var).chain((0..self.var_file.len()).map(VarSlot::File)).collect()
        } else {
            self.order.clone()
        }
    }
}

impl Cli {
    /// Parses `args` and records the command-line order of -var and -var-file, which clap's
    /// derived fields lose (Terraform applies them in the order given).
    pub fn parse_ordered(args: Vec<String>) -> Result<Cli, clap::Error> {
        use clap::FromArgMatches;
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let (Some((_, sub)), Some(vars)) = (matches.subcommand(), cli.command.var_args_mut()) {
            let at = |id: &str| sub.indices_of(id).map(Iterator::collect::<Vec<usize>>).unwrap_or_default();
            let mut slots: Vec<(usize, VarSlot)> = at("var").into_iter().enumerate().map(|(n, i)| (i, VarSlot::Var(n))).collect();
            slots.extend(at("var_file").into_iter().enumerate().map(|(n, i)| (i, VarSlot::File(n))));
            slots.sort_by_key(|(i, _)| *i);
            vars.order = slots.into_iter().map(|(_, s)| s).collect();
        }
        Ok(cli)
    }
}

impl Command {
    /// The -var/-var-file arguments of the commands that take them.
    fn var_args_mut(&mut self) -> Option<&mut VarArgs> {
        match self {
            Command::Plan(p) | Command::Apply { plan: p, .. } | Command::Destroy { plan: p, .. } => Some(&mut p.vars),
            Command::Drift(d) => Some(&mut d.vars),
            Command::Graph { vars, .. } | Command::Adopt { vars, .. } => Some(vars),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// Plan only these components (and what they depend on). Repeatable.
    #[arg(long = "target", value_name = "ADDR")]
    pub target: Vec<String>,
    /// Plan only the components of this state partition (a stack with partition = "cluster":
    /// a cluster's name, e.g. site-a, or default); the others are read from their state.
    #[arg(long = "partition", value_name = "NAME")]
    pub partition: Option<String>,
    /// Replace these components even if nothing changed. Repeatable.
    #[arg(long = "replace", value_name = "ADDR")]
    pub replace: Vec<String>,
    /// Read live state before planning (default true).
    #[arg(long = "refresh", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub refresh: bool,
    /// Only accept live values into state; plan no other change.
    #[arg(long = "refresh-only")]
    pub refresh_only: bool,
    /// Plan to destroy everything.
    #[arg(long = "destroy")]
    pub destroy: bool,
    /// Save the plan to FILE for `kdeploy apply FILE`.
    #[arg(long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the plan as JSON (the shape of `terraform show -json`).
    #[arg(long)]
    pub json: bool,
    /// Output format of `plan`: human (default), json (as --json), or markdown (a summary
    /// table and collapsible details, for a pull-request comment or $GITHUB_STEP_SUMMARY).
    #[arg(long, value_enum, default_value = "human")]
    pub format: PlanFormat,
    /// Exit 0 when there is nothing to change, 2 when there are changes, 1 on error.
    #[arg(long = "detailed-exitcode")]
    pub detailed_exitcode: bool,
    /// Wait this long for the state lock (e.g. 30s, 2m).
    #[arg(long = "lock-timeout", default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// Hold the state lock while running (`-lock=false`: do not; dangerous when others may run).
    #[arg(long = "lock", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub lock: bool,
    /// Also delete volumes and buckets holding data (destroy and deletes).
    #[arg(long = "delete-data")]
    pub delete_data: bool,
    /// Kubernetes: take ownership of fields that another field manager owns.
    #[arg(long = "force-conflicts")]
    pub force_conflicts: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// Do not ask for approval.
    #[arg(long = "auto-approve")]
    pub auto_approve: bool,
    /// How many operations may be writing at once. Waiting for readiness afterwards (Kubernetes
    /// workloads) does not count.
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
}

/// A Go duration (`30s`, `2m`, `1h30m`, `500ms`) or a number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    kdeploy_provider::Duration::parse_or_seconds(s).map(|d| d.as_std()).map_err(|e| e.to_string())
}

const SINGLE_DASH: &[&str] = &[
    "target",
    "partition",
    "replace",
    "var",
    "var-file",
    "destroy",
    "out",
    "refresh",
    "refresh-only",
    "lock-timeout",
    "parallelism",
    "auto-approve",
    "json",
    "no-color",
    "detailed-exitcode",
    "chdir",
    "check",
    "delete-data",
    "raw",
    "format",
    "force-conflicts",
    "notify",
    "backend-config",
    "from-backend-config",
    "migrate-state",
    "force",
    "even-if-running",
    "diagnostics-format",
    "compact-warnings",
    "diff",
    "write",
    "recursive",
    "input",
    "lock",
    "version",
    "help",
];

/// Rewrites Terraform-style `-flag` arguments to `--flag`.
pub fn normalize(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut after_dashdash = false;
    for a in args {
        if after_dashdash || a == "--" {
            after_dashdash = true;
            out.push(a);
            continue;
        }
        if let Some(rest) = a.strip_prefix('-').filter(|r| !r.starts_with('-')) {
            let name = rest.split('=').next().unwrap_or(rest);
            // Known flags, and any other word after one dash (a misspelled flag): clap then
            // answers with the flag it resembles ("a similar argument exists: '--x'") instead
            // of reading `-detailed-exitcodes` as the short options -d -e -t ...
            let word = name.len() > 1 && name.starts_with(|c: char| c.is_ascii_alphabetic()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if SINGLE_DASH.contains(&name) || word {
                out.push(format!("-{a}"));
                continue;
            }
        }
        out.push(a);
    }
    out
}
