//! Cloud resource names derived from component addresses, shared by the cloud providers.

/// A DNS-label-like name from a component address: `cluster.cloud` → `cloud`,
/// `module.site.cluster.c["Front Door"]` → `site-c-front-door`. Lowercase letters, digits and
/// single dashes; `kdeploy` when nothing is left.
pub fn from_address(address: &str) -> String {
    let mut out = String::new();
    for part in address.split('.') {
        if matches!(part, "module" | "cluster" | "object_storage") {
            continue;
        }
        for ch in part.chars() {
            let c = if ch.is_ascii_alphanumeric() { ch.to_ascii_lowercase() } else { '-' };
            if c == '-' && (out.is_empty() || out.ends_with('-')) {
                continue;
            }
            out.push(c);
        }
        if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "kdeploy".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::from_address;

    #[test]
    fn names_from_addresses() {
        assert_eq!(from_address("cluster.cloud"), "cloud");
        assert_eq!(from_address("module.site.cluster.c[\"Front Door\"]"), "site-c-front-door");
        assert_eq!(from_address("cluster.x_y"), "x-y");
        assert_eq!(from_address("cluster.__"), "kdeploy");
    }
}
