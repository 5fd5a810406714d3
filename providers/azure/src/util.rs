//! Small helpers: attribute access on [`Value`] maps, names, comparisons.

use std::collections::BTreeMap;

use kdeploy_provider::{ErrorKind, ProviderError, Value};

pub use kdeploy_provider::attrs::{Attrs, attrs, keep, n, s, same, tag_map};

/// The tag kdeploy puts on everything it creates (Azure tag names may not contain ':').
pub const TAG_MANAGED_BY: &str = "kdeploy-managed-by";
pub const TAG_COMPONENT: &str = "kdeploy-component";

/// Tags for an ARM resource: the user's plus kdeploy's own.
pub fn arm_tags(m: &Attrs, address: &str) -> serde_json::Value {
    let mut t: serde_json::Map<String, serde_json::Value> = tag_map(m, "tags").into_iter().map(|(k, v)| (k, v.into())).collect();
    t.insert(TAG_MANAGED_BY.into(), "kdeploy".into());
    t.insert(TAG_COMPONENT.into(), address.into());
    serde_json::Value::Object(t)
}

/// The user's tags as found live (kdeploy's own left out); null when the stack set none and
/// none are there, so an unset `tags` reads back as unset.
pub fn live_tags(live: Option<&serde_json::Value>, recorded: Option<&Value>) -> Value {
    let user: BTreeMap<String, Value> = live
        .and_then(|t| t.as_object())
        .map(|o| o.iter().filter(|(k, _)| !k.starts_with("kdeploy-")).filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), Value::string(v)))).collect())
        .unwrap_or_default();
    if user.is_empty() && recorded.is_none_or(Value::is_null) { Value::Null } else { Value::Map(user) }
}

/// A name from a component address: `cluster.cloud` → `cloud`, `module.site.cluster.c["a"]` → `site-c-a`.
pub fn name_from_address(address: &str) -> String {
    kdeploy_provider::names::from_address(address)
}

/// Azure regions compare without case and spaces ("West Europe" == "westeurope").
pub fn same_location(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    norm(a) == norm(b)
}

pub fn invalid(address: &str, msg: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ErrorKind::Invalid, format!("{address}: {msg}"))
}

/// Percent-encoding of a form/query component (RFC 3986 unreserved characters kept).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_locations_and_tags() {
        assert_eq!(name_from_address("cluster.cloud"), "cloud");
        assert_eq!(name_from_address("module.site.cluster.c[\"Front Door\"]"), "site-c-front-door");
        assert!(same_location("West Europe", "westeurope"));
        assert!(!same_location("westeurope", "northeurope"));
        let live = serde_json::json!({"kdeploy-managed-by": "kdeploy", "team": "video"});
        assert_eq!(live_tags(Some(&live), None), Value::Map([("team".to_string(), Value::string("video"))].into()));
        assert_eq!(live_tags(Some(&serde_json::json!({"kdeploy-component": "x"})), None), Value::Null);
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
