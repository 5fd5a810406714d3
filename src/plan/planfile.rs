//! Saved plans (`kdeploy plan --out FILE`): the whole plan as versioned JSON, including the
//! stack sources and variable values needed to apply it exactly. Plan files can hold secrets,
//! so they are written readable by the owner only.

use std::io::Write as _;
use std::path::Path;

use super::{PLAN_FORMAT_VERSION, Plan};

const MAGIC: &str = "kdeploy-plan";

#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    magic: String,
    /// SHA-256 of the plan as compact JSON, keys in file order: a plan file that was cut, corrupted
    /// or edited is refused before anything is applied from it.
    checksum: String,
    plan: serde_json::Value,
}

fn checksum(plan: &serde_json::Value) -> String {
    use sha2::Digest as _;
    let bytes = serde_json::to_vec(plan).unwrap_or_default();
    sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot write plan file {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read plan file: {reason}")]
    Read { reason: String },
    #[error("{path} is not a kdeploy plan file ({reason}); create one with `kdeploy plan --out {path}`")]
    Invalid { path: String, reason: String },
    #[error("plan file {path} has format {found}, this kdeploy reads {expected}; re-run `kdeploy plan --out` with this version")]
    Version { path: String, found: String, expected: String },
}

pub fn save(plan: &Plan, path: &Path) -> Result<(), PlanFileError> {
    let err = |e: serde_json::Error| PlanFileError::Write { path: path.display().to_string(), source: std::io::Error::other(e) };
    let plan = serde_json::to_value(plan).map_err(err)?;
    let text = serde_json::to_vec_pretty(&Envelope { magic: MAGIC.into(), checksum: checksum(&plan), plan }).map_err(err)?;
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(path)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    write().map_err(|source| PlanFileError::Write { path: path.display().to_string(), source })
}

pub fn load(path: &Path) -> Result<Plan, PlanFileError> {
    let shown = path.display().to_string();
    let bytes = crate::files::read(path, crate::files::PLAN_LIMIT).map_err(|e| PlanFileError::Read { reason: e.0 })?;
    let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| PlanFileError::Invalid { path: shown.clone(), reason: e.to_string() })?;
    if raw.get("magic").and_then(|m| m.as_str()) != Some(MAGIC) {
        return Err(PlanFileError::Invalid { path: shown, reason: "missing kdeploy-plan header".into() });
    }
    let found = raw.pointer("/plan/format_version").and_then(|v| v.as_str()).unwrap_or("?").to_string();
    if found != PLAN_FORMAT_VERSION {
        return Err(PlanFileError::Version { path: shown, found, expected: PLAN_FORMAT_VERSION.into() });
    }
    let env: Envelope = serde_json::from_value(raw).map_err(|e| PlanFileError::Invalid { path: shown.clone(), reason: e.to_string() })?;
    if env.checksum != checksum(&env.plan) {
        return Err(PlanFileError::Invalid {
            path: shown,
            reason: "its checksum does not match: it was changed or damaged after `kdeploy plan` wrote it".into(),
        });
    }
    serde_json::from_value(env.plan).map_err(|e| PlanFileError::Invalid { path: shown, reason: e.to_string() })
}
