//! Generated secrets: which attributes of a component kdeploy generates (passwords, keys), the
//! input that decides each one when the user sets it, and how they are made. Generated once and
//! kept in state: the data volumes were initialised with them.

use crate::attrs::Attrs;
use crate::schema::Kind;
use crate::value::Value;

use super::vault;

/// A generated attribute, and the input that takes its place when set (`password` →
/// `admin_password`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    pub attr: &'static str,
    pub input: Option<&'static str>,
}

const fn g(attr: &'static str, input: Option<&'static str>) -> Generated {
    Generated { attr, input }
}

const PASSWORD: &[Generated] = &[g("admin_password", Some("password"))];
const ROOT_KEYS: &[Generated] = &[g("access_key", None), g("secret_key", None)];
const UI_PASSWORD: &[Generated] = &[g("admin_password", Some("login_password"))];
const AGENT: &[Generated] = &[g("key", None), g("admin_password", Some("login_password"))];
const HUB: &[Generated] = &[g("admin_password", Some("login_password")), g("hub_key", None), g("hub_private_key", None), g("jwt_secret", None)];

/// The generated attributes of a kind and type.
pub fn generated(kind: Kind, type_name: &str) -> &'static [Generated] {
    match (kind, type_name) {
        (Kind::Database, "mongodb") | (Kind::Broker, "rabbitmq" | "kafka" | "mosquitto" | "vernemq") | (Kind::Turn, "coturn") => PASSWORD,
        (Kind::ObjectStorage, "minio") => ROOT_KEYS,
        (Kind::Vault, _) | (Kind::Factory, _) => UI_PASSWORD,
        (Kind::Agent, _) => AGENT,
        (Kind::Hub, _) => HUB,
        _ => &[],
    }
}

/// A fresh secret from the OS CSPRNG (two UUID v4: 244 random bits), hex. Access keys are
/// shorter and look like identifiers.
pub fn new_secret(attr: &str) -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    if attr == "access_key" || attr == "key" || attr == "hub_key" {
        return format!("kd{}", &a[..18]);
    }
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{}", &b[..8])
}

fn known_string(v: Option<&Value>) -> Option<Value> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(Value::String(s.clone())),
        _ => None,
    }
}

/// Fills every generated attribute of a component: the explicit input when set, else the value
/// it already has, else one `remembered` from an earlier read (a recreation keeps the secrets
/// its data volumes were initialised with), else a new one when `generate` (apply) or unknown
/// (plan). Vault account keys are filled the same way ([`vault::fill_accounts`]).
pub fn fill(kind: Kind, type_name: &str, address: &str, attrs: &mut Attrs, remembered: &Attrs, generate: bool) {
    for generated_attr in generated(kind, type_name) {
        if let Some(input) = generated_attr.input {
            match attrs.get(input) {
                Some(Value::Unknown(u)) => {
                    attrs.insert(generated_attr.attr.to_string(), Value::Unknown(u.clone()));
                    continue;
                }
                v => {
                    if let Some(v) = known_string(v) {
                        attrs.insert(generated_attr.attr.to_string(), v);
                        continue;
                    }
                }
            }
        }
        if known_string(attrs.get(generated_attr.attr)).is_some() {
            continue;
        }
        let value = known_string(remembered.get(generated_attr.attr)).unwrap_or_else(|| {
            if generate { Value::String(new_secret(generated_attr.attr)) } else { Value::Unknown(format!("{address}.{}", generated_attr.attr)) }
        });
        attrs.insert(generated_attr.attr.to_string(), value);
    }
    if kind == Kind::Vault {
        let remembered_accounts = remembered.get(vault::ACCOUNTS_ATTR).cloned();
        if !matches!(attrs.get(vault::ACCOUNTS_ATTR), Some(Value::Map(_)))
            && let Some(r) = remembered_accounts
        {
            attrs.insert(vault::ACCOUNTS_ATTR.into(), r);
        }
        vault::fill_accounts(address, attrs, &mut |k| generate.then(|| new_secret(k)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_then_kept_then_remembered_then_new() {
        let mut a: Attrs = [("password".to_string(), Value::string("given"))].into();
        fill(Kind::Database, "mongodb", "database.meta", &mut a, &Attrs::new(), false);
        assert_eq!(a["admin_password"], Value::string("given"));

        let mut a = Attrs::new();
        fill(Kind::Database, "mongodb", "database.meta", &mut a, &Attrs::new(), false);
        assert_eq!(a["admin_password"], Value::Unknown("database.meta.admin_password".into()), "plan: known after apply");
        let remembered: Attrs = [("admin_password".to_string(), Value::string("old"))].into();
        fill(Kind::Database, "mongodb", "database.meta", &mut a, &remembered, true);
        assert_eq!(a["admin_password"], Value::string("old"), "a recreation keeps the volume's password");

        let mut a = Attrs::new();
        fill(Kind::Agent, "kerberos", "agent.cam", &mut a, &Attrs::new(), true);
        let key = a["key"].as_str().unwrap().to_string();
        let pw = a["admin_password"].as_str().unwrap().to_string();
        assert!(key.starts_with("kd") && key.len() == 20 && pw.len() == 40, "{key} {pw}");
        fill(Kind::Agent, "kerberos", "agent.cam", &mut a, &Attrs::new(), true);
        assert_eq!(a["key"].as_str(), Some(key.as_str()), "generated once");
        assert_ne!(new_secret("secret_key"), new_secret("secret_key"));
    }

    #[test]
    fn vault_accounts_get_keys() {
        let mut a: Attrs = [("storage".to_string(), Value::string("object_storage.rec"))].into();
        fill(Kind::Vault, "kerberos", "vault.main", &mut a, &Attrs::new(), true);
        let accounts = a[vault::ACCOUNTS_ATTR].as_map().unwrap();
        let d = accounts["kdeploy"].as_map().unwrap();
        assert_eq!(d["access_key"], a["access_key"]);
        assert_eq!(d["provider"], Value::string("rec"));
        assert!(a["admin_password"].as_str().is_some());
    }
}
