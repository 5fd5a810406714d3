//! Information about who holds a state lock.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Describes a lock holder. A store writes it next to the lock so that others can see who
/// holds the lock, since when, and which id `kdeploy force-unlock` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Unique lock id (UUID v4); `kdeploy force-unlock <ID>` needs it.
    pub id: String,
    /// The operation holding the lock: `plan`, `apply`, `destroy`, ...
    pub operation: String,
    /// `user@host`, or a CI job description when running in CI.
    pub who: String,
    /// Version of kdeploy that took the lock.
    pub version: String,
    /// When the lock was taken (RFC 3339).
    pub created: String,
    /// The locked state's location; filled in by the store when empty.
    #[serde(default)]
    pub path: String,
    /// Process id of the holder.
    #[serde(default)]
    pub pid: u32,
    /// When the lock expires unless its holder renews it (RFC 3339); empty for locks that
    /// never expire on their own (the local store's OS lock dies with its holder instead).
    /// Shared backends renew it while the run lasts; an expired lock may be taken over.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expires: String,
}

impl LockInfo {
    /// Lock information for the current process, with a fresh id and the current time.
    pub fn new(operation: &str, kdeploy_version: &str) -> LockInfo {
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.to_string(),
            who: who(),
            version: kdeploy_version.to_string(),
            created: crate::now_rfc3339(),
            path: String::new(),
            pid: std::process::id(),
            expires: String::new(),
        }
    }

    /// Placeholder for a holder whose information cannot be read (for example while it is
    /// still being written, or when the lock file was written by a foreign tool).
    pub(crate) fn unknown(path: &str) -> LockInfo {
        let unknown = || "(unknown)".to_string();
        LockInfo {
            id: unknown(),
            operation: unknown(),
            who: unknown(),
            version: unknown(),
            created: unknown(),
            path: path.to_string(),
            pid: 0,
            expires: String::new(),
        }
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lock {} held by {} for {} since {} (kdeploy {}, pid {})", self.id, self.who, self.operation, self.created, self.version, self.pid)?;
        if !self.expires.is_empty() {
            write!(f, ", expires {}", self.expires)?;
        }
        Ok(())
    }
}

/// Who is running: a CI job when the environment says so, otherwise `user@host`.
fn who() -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if var("GITHUB_ACTIONS").is_some() {
        let repo = var("GITHUB_REPOSITORY").unwrap_or_else(|| "(unknown repository)".into());
        let run = var("GITHUB_RUN_ID").unwrap_or_else(|| "?".into());
        let mut who = format!("GitHub Actions {repo} run {run}");
        if let Some(job) = var("GITHUB_JOB") {
            who.push_str(&format!(" job {job}"));
        }
        if let Some(actor) = var("GITHUB_ACTOR") {
            who.push_str(&format!(" (by {actor})"));
        }
        return who;
    }
    if let Some(job) = var("CI_JOB_ID") {
        let mut who = format!("CI job {job}");
        if let Some(project) = var("CI_PROJECT_PATH") {
            who.push_str(&format!(" of {project}"));
        }
        if let Some(user) = var("GITLAB_USER_LOGIN") {
            who.push_str(&format!(" (by {user})"));
        }
        return who;
    }
    let user = var("USER").or_else(|| var("LOGNAME")).or_else(|| var("USERNAME")).unwrap_or_else(|| "unknown".into());
    format!("{user}@{}", hostname())
}

fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .or_else(|| std::env::var("COMPUTERNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_fills_everything() {
        let a = LockInfo::new("apply", "0.1.0");
        let b = LockInfo::new("apply", "0.1.0");
        assert_ne!(a.id, b.id);
        assert!(uuid::Uuid::parse_str(&a.id).is_ok());
        assert_eq!(a.operation, "apply");
        assert_eq!(a.version, "0.1.0");
        assert_eq!(a.pid, std::process::id());
        assert!(!a.who.is_empty());
        assert!(time::OffsetDateTime::parse(&a.created, &time::format_description::well_known::Rfc3339).is_ok());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<LockInfo>(&json).unwrap(), a);
    }
}
