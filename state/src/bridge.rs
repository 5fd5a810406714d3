//! The bridge from the synchronous [`crate::StateStore`] to the async SDKs of the remote
//! backends.
//!
//! Each remote store owns a small tokio runtime (one worker thread). A call sends its future to
//! that runtime and waits for the answer on a plain channel, so it works the same from plain
//! threads and from inside the caller's own tokio runtime (where `block_on` would panic): the
//! caller's thread only waits, and the future never needs the caller's runtime. Background
//! work, such as renewing a lock lease, runs on the same runtime while the store lives. The
//! runtime is shut down without waiting when the store is dropped, which is allowed from async
//! contexts too.

use std::future::Future;

use crate::error::StateError;

pub(crate) struct Bridge {
    rt: Option<tokio::runtime::Runtime>,
    name: String,
}

impl Bridge {
    pub(crate) fn new(name: &str) -> Result<Bridge, StateError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kdeploy-state")
            .enable_all()
            .build()
            .map_err(|e| StateError::Backend { backend: name.to_string(), message: format!("cannot start the I/O runtime: {e}") })?;
        Ok(Bridge { rt: Some(rt), name: name.to_string() })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.as_ref().expect("runtime lives until drop").handle()
    }

    /// Runs `fut` on the bridge's runtime and waits for it.
    pub(crate) fn run<T: Send + 'static>(&self, fut: impl Future<Output = Result<T, StateError>> + Send + 'static) -> Result<T, StateError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StateError::Backend { backend: self.name.clone(), message: "the request panicked; this is a bug in kdeploy, please report it".into() })
        })
    }

    /// Starts background work on the bridge's runtime.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) -> tokio::task::JoinHandle<()> {
        self.handle().spawn(fut)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// RFC 3339 for a point `secs` seconds from now.
pub(crate) fn rfc3339_in(secs: f64) -> String {
    rfc3339_plus(time::OffsetDateTime::now_utc(), secs)
}

/// RFC 3339 for `secs` seconds after `from`, saturating at the first or last representable time
/// (a lease read from a cluster can hold any duration).
pub(crate) fn rfc3339_plus(from: time::OffsetDateTime, secs: f64) -> String {
    let limit = if secs < 0.0 { time::PrimitiveDateTime::MIN } else { time::PrimitiveDateTime::MAX };
    let t = time::Duration::checked_seconds_f64(secs).and_then(|d| from.checked_add(d)).unwrap_or_else(|| limit.assume_utc());
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Whether the RFC 3339 time `t` has passed (an unparsable time counts as not passed: better
/// to wait for a human than to take over a live lock).
pub(crate) fn passed(t: &str) -> bool {
    match time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        Ok(t) => t < time::OffsetDateTime::now_utc(),
        Err(_) => false,
    }
}

/// A backend's `lock_ttl`: bare seconds (`60`) or a Go duration (`90s`, `2m`), at least one
/// second and at most a year; checked when the backend opens.
pub(crate) fn parse_ttl(backend: &str, v: &str) -> Result<std::time::Duration, String> {
    let d = kdeploy_provider::Duration::parse_or_seconds(v).map_err(|e| format!("backend {backend:?}: lock_ttl: {e}"))?;
    if d.as_secs() < 1 {
        return Err(format!("backend {backend:?}: lock_ttl must be at least 1s, not {v:?}"));
    }
    Ok(d.as_std())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn lock_ttl_takes_seconds_or_a_duration_in_a_checked_range() {
        assert_eq!(parse_ttl("s3", "60").unwrap().as_secs(), 60);
        assert_eq!(parse_ttl("s3", "90s").unwrap().as_secs(), 90);
        assert_eq!(parse_ttl("s3", "2m").unwrap().as_secs(), 120);
        for bad in ["1e30", "inf", "1e400", "18446744073709551616", "0.5", "0", "-1", "soon"] {
            let e = parse_ttl("kubernetes", bad).unwrap_err();
            assert!(e.starts_with("backend \"kubernetes\": lock_ttl"), "{bad}: {e}");
        }
    }
}
