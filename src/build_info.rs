//! What `build.rs` recorded about this binary, for `kdeploy version`.

/// The git commit the binary was built from (`KDEPLOY_BUILD_COMMIT` when the build set it),
/// or `unknown` when it was built outside a git checkout.
pub const GIT_COMMIT: &str = env!("KDEPLOY_GIT_COMMIT");

/// When it was built, RFC 3339 in UTC: `SOURCE_DATE_EPOCH` when the build set it.
pub const BUILD_DATE: &str = env!("KDEPLOY_BUILD_DATE");

/// The Rust target triple it was built for, e.g. `x86_64-unknown-linux-gnu`.
pub const TARGET: &str = env!("KDEPLOY_BUILD_TARGET");
