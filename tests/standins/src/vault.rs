//! A Kerberos Vault that reads `VAULT_STORAGE_PROVIDERS`, `VAULT_INTEGRATIONS` and
//! `VAULT_ACCOUNTS` as strictly as `shared/docs/vault-config.md` §1 says Vault does: invalid
//! JSON, a duplicate name, an unsupported type, a missing required field, a non-string scalar or
//! a reference to an unknown name stops it from starting. Otherwise it answers `/api/health`, and
//! `POST /api/ping` only for the accounts it was given (§2).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::http::{Request, Response};

pub const PROVIDERS: &str = "VAULT_STORAGE_PROVIDERS";
pub const INTEGRATIONS: &str = "VAULT_INTEGRATIONS";
pub const ACCOUNTS: &str = "VAULT_ACCOUNTS";

/// An account Vault knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub directory: String,
    pub provider: String,
    pub access_key: String,
    pub secret_key: String,
    pub enabled: bool,
}

/// What a started Vault knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub providers: Vec<String>,
    pub integrations: Vec<String>,
    pub accounts: Vec<Account>,
}

fn required_provider_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "minio" | "storj" => &["bucket", "region", "host", "access_key", "secret"],
        "aws" => &["bucket", "region", "access_key", "secret"],
        "gcp" => &["bucket", "serviceKey"],
        "azure" => &["account_name", "account_key", "container_name"],
        _ => return None,
    })
}

fn required_integration_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "rabbitmq" => &["broker", "topic", "username", "password"],
        "kafka" => &["broker", "group", "topic", "username", "password", "mechanism", "security"],
        "sqs" => &["region", "topic"],
        "kerberoscloud" => &["url", "cloudkey"],
        "kerberosvault" => &["vault_url", "provider", "access_key", "secret"],
        _ => return None,
    })
}

const ACCOUNT_FIELDS: &[&str] = &["account", "directory", "provider", "access_key", "secret_access_key", "limit"];
const FLAGS: &[&str] = &["enabled", "temporary", "use_ssl"];
const LISTS: &[&str] = &["queues", "secondary_providers"];
const ASSIGNED: &[&str] = &["id", "type", "environment"];

/// The elements of one variable: unset, empty or `[]` adds nothing.
fn elements(env: &BTreeMap<String, String>, var: &str) -> Result<Vec<serde_json::Map<String, Value>>, String> {
    let Some(text) = env.get(var).filter(|t| !t.trim().is_empty()) else { return Ok(Vec::new()) };
    let parsed: Value = serde_json::from_str(text).map_err(|e| format!("{var}: invalid JSON: {e}"))?;
    let Value::Array(items) = parsed else { return Err(format!("{var}: not a JSON array")) };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok(m),
            other => Err(format!("{var}[{i}]: not an object: {other}")),
        })
        .collect()
}

/// Every scalar a string, flags "true"/"false", lists arrays of strings, no Vault-assigned keys.
fn check_scalars(var: &str, i: usize, m: &serde_json::Map<String, Value>) -> Result<(), String> {
    for (k, v) in m {
        if ASSIGNED.contains(&k.as_str()) {
            return Err(format!("{var}[{i}]: {k} is assigned by Vault and must not be set"));
        }
        match v {
            Value::String(s) if FLAGS.contains(&k.as_str()) && s != "true" && s != "false" => {
                return Err(format!("{var}[{i}].{k}: {s:?} is not \"true\" or \"false\""));
            }
            Value::String(_) => {}
            Value::Array(items) if LISTS.contains(&k.as_str()) => {
                if let Some(bad) = items.iter().find(|x| !x.is_string()) {
                    return Err(format!("{var}[{i}].{k}: {bad} is not a string"));
                }
            }
            other => return Err(format!("{var}[{i}].{k}: {other} is not a string (scalars are JSON strings)")),
        }
    }
    Ok(())
}

fn get<'a>(m: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn require(var: &str, i: usize, m: &serde_json::Map<String, Value>, fields: &[&str]) -> Result<(), String> {
    match fields.iter().find(|f| get(m, f).is_empty()) {
        Some(f) => Err(format!("{var}[{i}]: the required field {f} is missing")),
        None => Ok(()),
    }
}

fn unique(var: &str, names: &[String]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    match names.iter().find(|n| !seen.insert(n.as_str())) {
        Some(n) => Err(format!("{var}: the name {n:?} is used twice")),
        None => Ok(()),
    }
}

fn names(m: &serde_json::Map<String, Value>, k: &str) -> Vec<String> {
    m.get(k).and_then(Value::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// Which Vault release the stand-in plays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Release {
    /// Reads the variables and supports every provider type.
    #[default]
    Current,
    /// Reads the variables but lacks these provider types (as releases before Azure support).
    WithoutProviders(Vec<String>),
    /// Predates the variables: starts, and ignores them.
    PredatesVariables,
}

/// Reads the three variables as the current release does.
pub fn load(env: &BTreeMap<String, String>) -> Result<Config, String> {
    load_for(env, &Release::Current)
}

/// Reads the three variables as `release` does; an error is what Vault would log before exiting.
pub fn load_for(env: &BTreeMap<String, String>, release: &Release) -> Result<Config, String> {
    let lacks: &[String] = match release {
        Release::PredatesVariables => return Ok(Config::default()),
        Release::WithoutProviders(l) => l,
        Release::Current => &[],
    };
    let mut config = Config::default();
    for (i, p) in elements(env, PROVIDERS)?.iter().enumerate() {
        check_scalars(PROVIDERS, i, p)?;
        require(PROVIDERS, i, p, &["name", "provider"])?;
        let kind = get(p, "provider");
        let fields = required_provider_fields(kind)
            .filter(|_| !lacks.iter().any(|l| l == kind))
            .ok_or_else(|| format!("{PROVIDERS}[{i}]: unsupported provider {kind:?}"))?;
        require(PROVIDERS, i, p, fields)?;
        config.providers.push(get(p, "name").to_string());
    }
    unique(PROVIDERS, &config.providers)?;
    for (i, q) in elements(env, INTEGRATIONS)?.iter().enumerate() {
        check_scalars(INTEGRATIONS, i, q)?;
        require(INTEGRATIONS, i, q, &["name", "queue"])?;
        let kind = get(q, "queue");
        let fields = required_integration_fields(kind).ok_or_else(|| format!("{INTEGRATIONS}[{i}]: unsupported queue {kind:?}"))?;
        require(INTEGRATIONS, i, q, fields)?;
        match get(q, "forward_type") {
            "" | "continuous" => {}
            "ondemand" => require(INTEGRATIONS, i, q, &["url", "cloudkey", "username"])?,
            other => return Err(format!("{INTEGRATIONS}[{i}]: unsupported forward_type {other:?}")),
        }
        config.integrations.push(get(q, "name").to_string());
    }
    unique(INTEGRATIONS, &config.integrations)?;
    for (i, a) in elements(env, ACCOUNTS)?.iter().enumerate() {
        check_scalars(ACCOUNTS, i, a)?;
        require(ACCOUNTS, i, a, ACCOUNT_FIELDS)?;
        let limit = get(a, "limit");
        if !limit.parse::<f64>().is_ok_and(|l| l > 0.0) {
            return Err(format!("{ACCOUNTS}[{i}].limit: {limit:?} is not a positive number"));
        }
        let provider = get(a, "provider");
        for p in std::iter::once(provider.to_string()).chain(names(a, "secondary_providers")) {
            if !config.providers.contains(&p) {
                return Err(format!("{ACCOUNTS}[{i}]: unknown provider {p:?}"));
            }
        }
        for q in names(a, "queues") {
            if !config.integrations.contains(&q) {
                return Err(format!("{ACCOUNTS}[{i}]: unknown integration {q:?}"));
            }
        }
        config.accounts.push(Account {
            name: get(a, "account").to_string(),
            directory: get(a, "directory").to_string(),
            provider: provider.to_string(),
            access_key: get(a, "access_key").to_string(),
            secret_key: get(a, "secret_access_key").to_string(),
            enabled: get(a, "enabled") != "false",
        });
    }
    unique(ACCOUNTS, &config.accounts.iter().map(|a| a.name.clone()).collect::<Vec<_>>())?;
    Ok(config)
}

/// Vault's answer to one request, once started with `config`.
pub fn respond(config: &Config, req: &Request) -> Response {
    match (req.method.as_str(), req.path.split('?').next().unwrap_or_default()) {
        ("GET", "/api/health") => Response::json(200, r#"{"status":"ok"}"#),
        ("POST", "/api/ping") => {
            let access = req.header("x-kerberos-storage-accesskey").unwrap_or_default();
            let secret = req.header("x-kerberos-storage-secretaccesskey").unwrap_or_default();
            let known = config.accounts.iter().any(|a| a.enabled && !access.is_empty() && a.access_key == access && a.secret_key == secret);
            if known { Response::json(200, r#"{"data":"pong"}"#) } else { Response::json(403, r#"{"message":"unknown account"}"#) }
        }
        _ => Response::json(404, r#"{"message":"not found"}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(p: &str, i: &str, a: &str) -> BTreeMap<String, String> {
        [(PROVIDERS, p), (INTEGRATIONS, i), (ACCOUNTS, a)].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const P: &str = r#"[{"name":"rec","provider":"minio","bucket":"b","region":"na","host":"m:9000","access_key":"A","secret":"S","use_ssl":"false"}]"#;
    const Q: &str = r#"[{"name":"events","queue":"rabbitmq","broker":"amqp://r:5672","topic":"t","username":"u","password":"p"}]"#;
    const A: &str = r#"[{"account":"kdeploy","directory":"*","provider":"rec","access_key":"AK","secret_access_key":"SK","limit":"30","queues":["events"]}]"#;

    #[test]
    fn a_valid_configuration_starts_and_knows_its_accounts() {
        let c = load(&env(P, Q, A)).unwrap();
        assert_eq!(c.accounts[0].name, "kdeploy");
        let ping = |a: &str, s: &str| {
            respond(&c, &Request::new("POST", "/api/ping", &[("X-Kerberos-Storage-AccessKey", a), ("X-Kerberos-Storage-SecretAccessKey", s)])).status
        };
        assert_eq!(ping("AK", "SK"), 200);
        assert_eq!(ping("AK", "wrong"), 403);
        assert_eq!(ping("", ""), 403);
        assert_eq!(load(&BTreeMap::new()).unwrap(), Config::default(), "unset adds nothing");
    }

    #[test]
    fn it_refuses_to_start_as_the_documentation_says() {
        for (p, q, a, why) in [
            ("[{", "", "", "invalid JSON"),
            (
                r#"[{"name":"x","provider":"minio","bucket":"b","region":"r","host":"h","access_key":"a","secret":"s"},{"name":"x","provider":"aws","bucket":"b","region":"r","access_key":"a","secret":"s"}]"#,
                "",
                "",
                "used twice",
            ),
            (r#"[{"name":"x","provider":"ftp"}]"#, "", "", "unsupported provider"),
            (r#"[{"name":"x","provider":"aws","bucket":"b","region":"r","access_key":"a"}]"#, "", "", "secret is missing"),
            (r#"[{"name":"x","provider":"aws","bucket":"b","region":"r","access_key":"a","secret":"s","use_ssl":true}]"#, "", "", "not a string"),
            (P, "", r#"[{"account":"a","directory":"*","provider":"rec","access_key":"k","secret_access_key":"s","limit":30}]"#, "not a string"),
            (P, "", r#"[{"account":"a","directory":"*","provider":"nope","access_key":"k","secret_access_key":"s","limit":"30"}]"#, "unknown provider"),
            (
                P,
                "",
                r#"[{"account":"a","directory":"*","provider":"rec","access_key":"k","secret_access_key":"s","limit":"30","queues":["q"]}]"#,
                "unknown integration",
            ),
            (P, "", r#"[{"account":"a","directory":"*","provider":"rec","access_key":"k","secret_access_key":"s","limit":"0"}]"#, "positive"),
            (r#"[{"id":"1","name":"x","provider":"gcp","bucket":"b","serviceKey":"k"}]"#, "", "", "assigned by Vault"),
            (
                "",
                r#"[{"name":"f","queue":"kerberosvault","vault_url":"u","provider":"p","access_key":"a","secret":"s","forward_type":"ondemand"}]"#,
                "",
                "url is missing",
            ),
        ] {
            let e = load(&env(p, q, a)).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
