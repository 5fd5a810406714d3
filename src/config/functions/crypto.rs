//! Hash functions (`sha256`).
#![deny(clippy::arithmetic_side_effects)]

use std::fmt::Write as _;

use kdeploy_provider::Value;
use sha2::{Digest, Sha256};

use super::{Call, Result};

pub(super) fn f_sha256(c: &Call) -> Result<Value> {
    let digest = Sha256::digest(c.str(0)?.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(Value::String(hex))
}

#[cfg(test)]
mod tests {
    use crate::config::functions::test_support::*;

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(ok("sha256", vec![s("hello world")]), s("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"));
        assert_eq!(ok("sha256", vec![s("")]), s("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    }
}
