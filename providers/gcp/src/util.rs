//! Attribute access (from `kdeploy_provider::attrs`), names and URL encoding.

pub use kdeploy_provider::attrs::{Attrs, attrs, n, s};

/// A resource name derived from a component address: `cluster.cloud` → `cloud`.
pub fn name_from_address(address: &str) -> String {
    let mut out = kdeploy_provider::names::from_address(address);
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "k-");
    }
    out.truncate(40);
    out.trim_end_matches('-').to_string()
}

/// Percent-encodes one URL path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_addresses() {
        assert_eq!(name_from_address("cluster.cloud"), "cloud");
        assert_eq!(name_from_address("module.site[\"eu\"].cluster.Main_1"), "site-eu-main-1");
        assert_eq!(name_from_address("cluster.1x"), "k-1x");
        assert_eq!(enc("a b@c.iam"), "a%20b%40c.iam");
    }
}
