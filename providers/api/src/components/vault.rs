//! Kerberos Vault's declarative configuration: the storage providers, integrations and accounts
//! a `vault` block describes, resolved from its attributes and the components it references,
//! and rendered as the three JSON environment variables Vault reads at start-up
//! (`VAULT_STORAGE_PROVIDERS`, `VAULT_INTEGRATIONS`, `VAULT_ACCOUNTS`; see
//! `shared/docs/vault-config.md` §1).
//!
//! By default a vault has one provider (derived from its `storage`), one integration (from its
//! `broker` when that broker is a queue) and one account (its flat `account`, `directory` and
//! `retention_days` attributes). `provider`, `forward` and `account` blocks add more. Both
//! runtimes render the same three variables from [`resolve`]; [`check`] finds naming mistakes
//! before anything is planned.

use std::collections::{BTreeMap, BTreeSet};

use crate::attrs::Attrs;
use crate::provider::Reference;
use crate::value::{AttrPath, Value};

pub const PROVIDERS_VAR: &str = "VAULT_STORAGE_PROVIDERS";
pub const INTEGRATIONS_VAR: &str = "VAULT_INTEGRATIONS";
pub const ACCOUNTS_VAR: &str = "VAULT_ACCOUNTS";

/// The computed attribute holding every account with its settings in effect and its keys
/// (name → {directory, provider, access_key, secret_key}).
pub const ACCOUNTS_ATTR: &str = "vault_accounts";
/// The computed attribute holding the three variables (sensitive: they carry keys).
pub const CONFIG_ATTR: &str = "vault_configuration";

/// Added to a readiness timeout of Vault: the first of the two ways the declarative
/// configuration fails (`shared/docs/vault-config.md` §1).
pub const NOT_STARTED_HINT: &str = "\nVault did not start. Vault refuses to start when VAULT_STORAGE_PROVIDERS, VAULT_INTEGRATIONS or VAULT_ACCOUNTS is invalid (a duplicate name, an unknown type, a missing field): if its last log lines say so, correct the vault's storage, broker, provider, forward or account settings and apply again.";

/// Where a storage provider keeps recordings, by Vault provider type.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderSpec {
    /// MinIO and every S3-compatible store (an external one, GCS interoperability).
    Minio {
        bucket: String,
        region: String,
        host: String,
        access_key: String,
        secret: String,
        use_ssl: bool,
    },
    Aws {
        bucket: String,
        region: String,
        access_key: String,
        secret: String,
    },
    Gcp {
        bucket: String,
        service_key: String,
    },
    Azure {
        account_name: String,
        account_key: String,
        container_name: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageProvider {
    pub name: String,
    pub spec: ProviderSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IntegrationSpec {
    RabbitMq {
        broker: String,
        topic: String,
        username: String,
        password: String,
        exchange: Option<String>,
    },
    Kafka {
        broker: String,
        group: String,
        topic: String,
        username: String,
        password: String,
        mechanism: String,
        security: String,
    },
    /// Forwarding to another Vault: every recording, or (`on_demand`) the ones Kerberos Hub
    /// asks for.
    KerberosVault {
        vault_url: String,
        provider: String,
        access_key: String,
        secret: String,
        on_demand: Option<HubLink>,
    },
}

/// What an on-demand forward knows of the Hub that asks for recordings: its API URL, the
/// cloud key (the Hub user's public key) and that user's name (`shared/docs/vault-config.md`
/// §1, `kerberosvault`).
#[derive(Debug, Clone, PartialEq)]
pub struct HubLink {
    pub url: String,
    pub cloudkey: String,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub name: String,
    pub spec: IntegrationSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub name: String,
    /// A concrete folder, or `*` (each agent then uploads under its own folder).
    pub directory: String,
    pub provider: String,
    pub secondary_providers: Vec<String>,
    pub queues: Vec<String>,
    pub retention_days: u32,
    pub enabled: bool,
    pub access_key: String,
    pub secret_key: String,
}

/// Everything a Vault is told at start-up.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultConfig {
    pub providers: Vec<StorageProvider>,
    pub integrations: Vec<Integration>,
    pub accounts: Vec<Account>,
}

/// Why a configuration cannot be resolved (yet).
#[derive(Debug, Clone, PartialEq)]
pub enum Unresolved {
    /// A value it needs is known only after apply (a generated key, an endpoint).
    Unknown,
    /// The stack is wrong; the message says what to change.
    Invalid(String),
}

fn pairs(fields: &[(&str, &str)]) -> serde_json::Value {
    serde_json::Value::Object(fields.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect())
}

fn flag(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

impl StorageProvider {
    pub fn type_name(&self) -> &'static str {
        match self.spec {
            ProviderSpec::Minio { .. } => "minio",
            ProviderSpec::Aws { .. } => "aws",
            ProviderSpec::Gcp { .. } => "gcp",
            ProviderSpec::Azure { .. } => "azure",
        }
    }

    /// The element of `VAULT_STORAGE_PROVIDERS`: every scalar a string, no id/type/environment.
    pub fn to_json(&self) -> serde_json::Value {
        let n = self.name.as_str();
        let t = self.type_name();
        match &self.spec {
            ProviderSpec::Minio { bucket, region, host, access_key, secret, use_ssl } => pairs(&[
                ("name", n),
                ("provider", t),
                ("bucket", bucket),
                ("region", region),
                ("host", host),
                ("access_key", access_key),
                ("secret", secret),
                ("use_ssl", flag(*use_ssl)),
            ]),
            ProviderSpec::Aws { bucket, region, access_key, secret } => {
                pairs(&[("name", n), ("provider", t), ("bucket", bucket), ("region", region), ("access_key", access_key), ("secret", secret)])
            }
            ProviderSpec::Gcp { bucket, service_key } => pairs(&[("name", n), ("provider", t), ("bucket", bucket), ("serviceKey", service_key)]),
            ProviderSpec::Azure { account_name, account_key, container_name } => {
                pairs(&[("name", n), ("provider", t), ("account_name", account_name), ("account_key", account_key), ("container_name", container_name)])
            }
        }
    }
}

impl Integration {
    pub fn to_json(&self) -> serde_json::Value {
        let n = self.name.as_str();
        match &self.spec {
            IntegrationSpec::RabbitMq { broker, topic, username, password, exchange } => {
                let mut v = pairs(&[("name", n), ("queue", "rabbitmq"), ("broker", broker), ("topic", topic), ("username", username), ("password", password)]);
                if let (Some(e), Some(m)) = (exchange, v.as_object_mut()) {
                    m.insert("exchange".into(), serde_json::Value::String(e.clone()));
                }
                v
            }
            IntegrationSpec::Kafka { broker, group, topic, username, password, mechanism, security } => pairs(&[
                ("name", n),
                ("queue", "kafka"),
                ("broker", broker),
                ("group", group),
                ("topic", topic),
                ("username", username),
                ("password", password),
                ("mechanism", mechanism),
                ("security", security),
            ]),
            IntegrationSpec::KerberosVault { vault_url, provider, access_key, secret, on_demand } => {
                let mut fields = vec![
                    ("name", n),
                    ("queue", "kerberosvault"),
                    ("vault_url", vault_url),
                    ("provider", provider),
                    ("access_key", access_key),
                    ("secret", secret),
                ];
                match on_demand {
                    None => fields.push(("forward_type", "continuous")),
                    Some(hub) => fields.extend([("forward_type", "ondemand"), ("url", &hub.url), ("cloudkey", &hub.cloudkey), ("username", &hub.username)]),
                }
                pairs(&fields)
            }
        }
    }
}

impl Account {
    pub fn to_json(&self) -> serde_json::Value {
        let limit = self.retention_days.to_string();
        let mut v = pairs(&[
            ("account", &self.name),
            ("directory", &self.directory),
            ("provider", &self.provider),
            ("access_key", &self.access_key),
            ("secret_access_key", &self.secret_key),
            ("limit", &limit),
            ("enabled", flag(self.enabled)),
        ]);
        let names = |l: &[String]| serde_json::Value::Array(l.iter().map(|s| serde_json::Value::String(s.clone())).collect());
        if let Some(m) = v.as_object_mut() {
            if !self.queues.is_empty() {
                m.insert("queues".into(), names(&self.queues));
            }
            if !self.secondary_providers.is_empty() {
                m.insert("secondary_providers".into(), names(&self.secondary_providers));
            }
        }
        v
    }
}

impl VaultConfig {
    /// The three environment variables, in a fixed order, each a compact JSON array.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let arr = |items: Vec<serde_json::Value>| serde_json::Value::Array(items).to_string();
        vec![
            (PROVIDERS_VAR, arr(self.providers.iter().map(StorageProvider::to_json).collect())),
            (INTEGRATIONS_VAR, arr(self.integrations.iter().map(Integration::to_json).collect())),
            (ACCOUNTS_VAR, arr(self.accounts.iter().map(Account::to_json).collect())),
        ]
    }

    /// The value of the computed `vault_configuration` attribute.
    pub fn to_value(&self) -> Value {
        Value::Map(self.env().into_iter().map(|(k, v)| (k.to_string(), Value::String(v))).collect())
    }
}

fn text(m: &Attrs, k: &str) -> Result<Option<String>, Unresolved> {
    match m.get(k) {
        Some(Value::Unknown(_)) => Err(Unresolved::Unknown),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        _ => Ok(None),
    }
}

fn need(m: &Attrs, k: &str, what: &str) -> Result<String, Unresolved> {
    text(m, k)?.ok_or_else(|| Unresolved::Invalid(format!("{what} has no {k}")))
}

fn names_list(m: &Attrs, k: &str) -> Result<Option<Vec<String>>, Unresolved> {
    match m.get(k) {
        Some(Value::Unknown(_)) => Err(Unresolved::Unknown),
        Some(Value::List(l)) => l
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Unknown(_) => Err(Unresolved::Unknown),
                other => Ok(other.render_inline()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Ok(None),
    }
}

fn map_of(v: Option<&Value>) -> Result<BTreeMap<String, Attrs>, Unresolved> {
    match v {
        Some(Value::Unknown(_)) => Err(Unresolved::Unknown),
        Some(Value::Map(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Map(inner) => Ok((k.clone(), inner.clone())),
                Value::Unknown(_) => Err(Unresolved::Unknown),
                _ => Ok((k.clone(), Attrs::new())),
            })
            .collect(),
        _ => Ok(BTreeMap::new()),
    }
}

/// The Vault provider a storage component describes. Mapping: kdeploy's MinIO and `external` →
/// `minio`; `s3` → `aws`; `azure_blob` → `azure`; `gcs` → `minio` against GCS's
/// S3-interoperable endpoint with the HMAC key, or `gcp` when the storage has a
/// `service_account_key`.
pub fn provider_from_storage(name: &str, storage: &Reference) -> Result<StorageProvider, Unresolved> {
    let m = storage.attributes.as_map().cloned().unwrap_or_default();
    let what = &storage.component.address.to_string();
    let spec = match storage.component.type_name.as_str() {
        "minio" | "external" => ProviderSpec::Minio {
            bucket: need(&m, "bucket", what)?,
            region: text(&m, "region")?.unwrap_or_else(|| "us-east-1".into()),
            host: need(&m, "endpoint", what)?,
            access_key: need(&m, "access_key", what)?,
            secret: need(&m, "secret_key", what)?,
            use_ssl: matches!(m.get("use_ssl"), Some(Value::Bool(true))),
        },
        "s3" => ProviderSpec::Aws {
            bucket: need(&m, "bucket", what)?,
            region: match text(&m, "bucket_region")? {
                Some(r) => r,
                None => need(&m, "region", what)?,
            },
            access_key: need(&m, "access_key", what)?,
            secret: need(&m, "secret_key", what)?,
        },
        "azure_blob" => ProviderSpec::Azure {
            account_name: need(&m, "account_name", what)?,
            account_key: need(&m, "secret_key", what)?,
            container_name: need(&m, "container", what)?,
        },
        "gcs" => match text(&m, "service_account_key")? {
            Some(key) => ProviderSpec::Gcp { bucket: need(&m, "bucket", what)?, service_key: key },
            None => ProviderSpec::Minio {
                bucket: need(&m, "bucket", what)?,
                region: "auto".into(),
                host: GCS_INTEROP_HOST.into(),
                access_key: need(&m, "access_key", what)?,
                secret: need(&m, "secret_key", what)?,
                use_ssl: true,
            },
        },
        other => return Err(Unresolved::Invalid(format!("{what} (object_storage type {other:?}) cannot be a Vault storage provider"))),
    };
    Ok(StorageProvider { name: name.to_string(), spec })
}

/// Cloud Storage's S3-compatible (XML API) endpoint, used with HMAC keys.
pub const GCS_INTEROP_HOST: &str = "storage.googleapis.com:443";

/// The queue protocol of a broker component: `Some("amqp")`, `Some("kafka")`, or None for MQTT
/// brokers and external brokers that do not say.
pub fn broker_protocol(broker: &Reference) -> Option<String> {
    match broker.component.type_name.as_str() {
        "rabbitmq" => Some("amqp".into()),
        "kafka" => Some("kafka".into()),
        "external" => {
            broker.attributes.as_map().and_then(|m| m.get("protocol")).and_then(Value::as_str).filter(|p| *p == "amqp" || *p == "kafka").map(str::to_string)
        }
        _ => None,
    }
}

/// Whether a broker's attributes (as the language sees them) describe a queue: RabbitMQ and
/// Kafka brokers (they have a `queue` or `topic`), or an external one with protocol amqp or
/// kafka; MQTT brokers are not.
pub fn broker_is_queue(broker: &Attrs) -> bool {
    match broker.get("protocol") {
        Some(Value::String(p)) => p == "amqp" || p == "kafka",
        Some(Value::Null) => false,
        _ => broker.contains_key("queue") || broker.contains_key("topic"),
    }
}

/// The integration a queue broker gives Vault, None for MQTT brokers.
pub fn integration_from_broker(name: &str, broker: &Reference) -> Result<Option<Integration>, Unresolved> {
    let m = broker.attributes.as_map().cloned().unwrap_or_default();
    let what = &broker.component.address.to_string();
    let host_port = || -> Result<String, Unresolved> {
        match (text(&m, "host")?, text(&m, "port")?) {
            (Some(h), Some(p)) if !h.contains(':') => Ok(format!("{h}:{p}")),
            (Some(h), _) => Ok(h),
            (None, _) => Err(Unresolved::Invalid(format!("{what} has no host"))),
        }
    };
    let spec = match broker_protocol(broker).as_deref() {
        Some("amqp") => IntegrationSpec::RabbitMq {
            broker: format!("amqp://{}", host_port()?),
            topic: need(&m, "queue", what)?,
            username: text(&m, "username")?.unwrap_or_default(),
            password: match text(&m, "admin_password")? {
                Some(p) => p,
                None => text(&m, "password")?.unwrap_or_default(),
            },
            exchange: text(&m, "exchange")?,
        },
        Some("kafka") => IntegrationSpec::Kafka {
            broker: match text(&m, "brokers")? {
                Some(b) => b,
                None => host_port()?,
            },
            group: text(&m, "group")?.unwrap_or_else(|| "kerberos-vault".into()),
            topic: match text(&m, "topic")? {
                Some(t) => t,
                None => need(&m, "queue", what)?,
            },
            username: text(&m, "username")?.unwrap_or_default(),
            password: match text(&m, "admin_password")? {
                Some(p) => p,
                None => text(&m, "password")?.unwrap_or_default(),
            },
            mechanism: text(&m, "mechanism")?.unwrap_or_else(|| "PLAIN".into()),
            security: text(&m, "security")?.unwrap_or_else(|| "SASL_PLAINTEXT".into()),
        },
        _ => return Ok(None),
    };
    Ok(Some(Integration { name: name.to_string(), spec }))
}

/// The explicit `provider "NAME" { ... }` blocks (the `providers` attribute).
fn extra_provider(name: &str, m: &Attrs, refs: &BTreeMap<String, Reference>) -> Result<StorageProvider, Unresolved> {
    if let Some(storage) = refs.get(&format!("providers.{name}.storage")) {
        return provider_from_storage(name, storage);
    }
    let what = format!("provider {name:?}");
    let ty = need(m, "type", &what)?;
    let spec = match ty.as_str() {
        "minio" => ProviderSpec::Minio {
            bucket: need(m, "bucket", &what)?,
            region: text(m, "region")?.unwrap_or_else(|| "us-east-1".into()),
            host: need(m, "host", &what)?,
            access_key: need(m, "access_key", &what)?,
            secret: need(m, "secret_key", &what)?,
            use_ssl: matches!(m.get("use_ssl"), Some(Value::Bool(true))),
        },
        "aws" => ProviderSpec::Aws {
            bucket: need(m, "bucket", &what)?,
            region: need(m, "region", &what)?,
            access_key: need(m, "access_key", &what)?,
            secret: need(m, "secret_key", &what)?,
        },
        "gcp" => ProviderSpec::Gcp { bucket: need(m, "bucket", &what)?, service_key: need(m, "service_key", &what)? },
        "azure" => ProviderSpec::Azure {
            account_name: need(m, "account_name", &what)?,
            account_key: need(m, "account_key", &what)?,
            container_name: need(m, "container", &what)?,
        },
        other => return Err(Unresolved::Invalid(format!("{what}: unknown provider type {other:?}"))),
    };
    Ok(StorageProvider { name: name.to_string(), spec })
}

/// The name of the default storage provider (the `storage` component's name).
pub fn default_provider_name(vault: &Attrs) -> Option<String> {
    vault.get("storage").and_then(Value::as_str).and_then(|a| a.parse::<crate::addr::Address>().ok()).map(|a| a.instance_name())
}

/// The name of the default integration (the `broker` component's name), when there is a broker.
pub fn default_integration_name(vault: &Attrs) -> Option<String> {
    vault.get("broker").and_then(Value::as_str).and_then(|a| a.parse::<crate::addr::Address>().ok()).map(|a| a.instance_name())
}

/// The default account's name.
pub fn default_account_name(vault: &Attrs) -> String {
    vault.get("account").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("kdeploy").to_string()
}

/// Settings of one account as declared (keys not included): the default account from the flat
/// attributes, every `account` block on top (a block named like the default account replaces
/// its flat settings).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountDecl {
    pub directory: String,
    pub provider: Option<String>,
    pub secondary_providers: Vec<String>,
    /// None: every integration.
    pub queues: Option<Vec<String>>,
    pub retention_days: u32,
    pub enabled: bool,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

fn days(v: Option<&Value>, default: u32) -> u32 {
    v.and_then(Value::as_f64).filter(|d| *d >= 1.0 && *d <= 100_000.0).map(|d| d as u32).unwrap_or(default)
}

/// The declared accounts, by name, in name order. Unknown values (a `for_each` known only after
/// apply) make the whole set unknown.
pub fn declared_accounts(vault: &Attrs) -> Result<BTreeMap<String, AccountDecl>, Unresolved> {
    let retention = days(vault.get("retention_days"), 30);
    let mut out = BTreeMap::new();
    out.insert(default_account_name(vault), default_decl(vault, retention)?);
    for (name, m) in map_of(vault.get("accounts"))? {
        out.insert(name, account_decl(&m, retention)?);
    }
    Ok(out)
}

/// One declared account by name (the default account unless `accounts` declares it again),
/// without reading the others: every agent looks its own up, and a fleet's Vault has an
/// account per site.
fn declared_account(vault: &Attrs, name: &str) -> Result<Option<AccountDecl>, Unresolved> {
    let retention = days(vault.get("retention_days"), 30);
    match vault.get("accounts") {
        Some(Value::Unknown(_)) => return Err(Unresolved::Unknown),
        Some(Value::Map(m)) => match m.get(name) {
            Some(Value::Map(entry)) => return account_decl(entry, retention).map(Some),
            Some(Value::Unknown(_)) => return Err(Unresolved::Unknown),
            Some(_) => return account_decl(&Attrs::new(), retention).map(Some),
            None => {}
        },
        _ => {}
    }
    if name == default_account_name(vault) { default_decl(vault, retention).map(Some) } else { Ok(None) }
}

/// The account a Vault has without an `accounts` entry: its own directory, all providers.
fn default_decl(vault: &Attrs, retention: u32) -> Result<AccountDecl, Unresolved> {
    Ok(AccountDecl {
        directory: text(vault, "directory")?.unwrap_or_else(|| "*".into()),
        provider: None,
        secondary_providers: Vec::new(),
        queues: None,
        retention_days: retention,
        enabled: true,
        access_key: None,
        secret_key: None,
    })
}

/// An `accounts` entry.
fn account_decl(m: &Attrs, retention: u32) -> Result<AccountDecl, Unresolved> {
    Ok(AccountDecl {
        directory: text(m, "directory")?.unwrap_or_else(|| "*".into()),
        provider: text(m, "provider")?,
        secondary_providers: names_list(m, "secondary_providers")?.unwrap_or_default(),
        queues: names_list(m, "queues")?,
        retention_days: days(m.get("retention_days"), retention),
        enabled: !matches!(m.get("enabled"), Some(Value::Bool(false))),
        access_key: text(m, "access_key")?,
        secret_key: text(m, "secret_key")?,
    })
}

/// Fills `vault_accounts` (name → directory, provider, access_key, secret_key) from the declared
/// accounts: explicit keys, else the keys the account already has (in `vault_accounts`, or the
/// flat `access_key`/`secret_key` for the default account of a vault made by an older kdeploy),
/// else new keys from `generate` (apply) or unknown (plan). Also sets the flat `access_key`,
/// `secret_key` and `provider` of the default account.
pub fn fill_accounts(address: &str, attrs: &mut Attrs, generate: &mut dyn FnMut(&str) -> Option<String>) {
    let Ok(declared) = declared_accounts(attrs) else {
        attrs.insert(ACCOUNTS_ATTR.into(), Value::Unknown(format!("{address}.{ACCOUNTS_ATTR}")));
        return;
    };
    let default_name = default_account_name(attrs);
    let default_provider = default_provider_name(attrs).unwrap_or_else(|| "storage".into());
    let prior = match attrs.get(ACCOUNTS_ATTR) {
        Some(Value::Map(m)) => m.clone(),
        _ => BTreeMap::new(),
    };
    let mut out = BTreeMap::new();
    for (name, decl) in &declared {
        let prior_account = prior.get(name).and_then(Value::as_map);
        let key = |k: &str, explicit: &Option<String>, generate: &mut dyn FnMut(&str) -> Option<String>| -> Value {
            if let Some(v) = explicit {
                return Value::String(v.clone());
            }
            if let Some(Value::String(s)) = prior_account.and_then(|p| p.get(k)) {
                return Value::String(s.clone());
            }
            if *name == default_name
                && let Some(Value::String(s)) = attrs.get(k)
            {
                return Value::String(s.clone());
            }
            match generate(k) {
                Some(s) => Value::String(s),
                None => Value::Unknown(format!("{address}.{ACCOUNTS_ATTR}[\"{name}\"].{k}")),
            }
        };
        let access_key = key("access_key", &decl.access_key, generate);
        let secret_key = key("secret_key", &decl.secret_key, generate);
        let entry: Attrs = [
            ("directory".to_string(), Value::String(decl.directory.clone())),
            ("provider".to_string(), Value::String(decl.provider.clone().unwrap_or_else(|| default_provider.clone()))),
            ("access_key".to_string(), access_key),
            ("secret_key".to_string(), secret_key),
        ]
        .into();
        out.insert(name.clone(), Value::Map(entry));
    }
    if let Some(Value::Map(d)) = out.get(&default_name) {
        for k in ["access_key", "secret_key"] {
            if let Some(v) = d.get(k) {
                attrs.insert(k.to_string(), v.clone());
            }
        }
    }
    attrs.insert("provider".into(), Value::String(default_provider));
    attrs.insert(ACCOUNTS_ATTR.into(), Value::Map(out));
}

/// Resolves the whole configuration from the vault's attributes (inputs plus
/// `vault_accounts`) and the components it references.
pub fn resolve(attrs: &Attrs, refs: &BTreeMap<String, Reference>) -> Result<VaultConfig, Unresolved> {
    let mut providers = Vec::new();
    if let (Some(name), Some(storage)) = (default_provider_name(attrs), refs.get("storage")) {
        providers.push(provider_from_storage(&name, storage)?);
    }
    for (name, m) in map_of(attrs.get("providers"))? {
        providers.push(extra_provider(&name, &m, refs)?);
    }
    let mut integrations = Vec::new();
    if let (Some(name), Some(broker)) = (default_integration_name(attrs), refs.get("broker")) {
        let declared = broker.attributes.as_map().and_then(|m| m.get("protocol")).is_some_and(|p| !p.is_null());
        if broker.component.type_name == "external" && !declared {
            return Err(Unresolved::Invalid(format!(
                "{} is an external broker that does not say its protocol, so Vault cannot use it; add protocol = \"amqp\" (RabbitMQ), \"kafka\" or \"mqtt\" to it",
                broker.component.address
            )));
        }
        integrations.extend(integration_from_broker(&name, broker)?);
    }
    for (name, m) in map_of(attrs.get("forwards"))? {
        let spec = forward_spec(attrs, &name, &m, refs)?;
        integrations.push(Integration { name: name.clone(), spec });
    }
    let all_queues: Vec<String> = integrations.iter().map(|i| i.name.clone()).collect();
    let keys = match attrs.get(ACCOUNTS_ATTR) {
        Some(Value::Map(m)) => m.clone(),
        Some(Value::Unknown(_)) => return Err(Unresolved::Unknown),
        _ => BTreeMap::new(),
    };
    let mut accounts = Vec::new();
    for (name, decl) in declared_accounts(attrs)? {
        let k = keys.get(&name).and_then(Value::as_map).cloned().unwrap_or_default();
        accounts.push(Account {
            directory: decl.directory,
            provider: match text(&k, "provider")? {
                Some(p) => p,
                None => decl.provider.clone().or_else(|| providers.first().map(|p| p.name.clone())).unwrap_or_default(),
            },
            secondary_providers: decl.secondary_providers,
            queues: decl.queues.unwrap_or_else(|| all_queues.clone()),
            retention_days: decl.retention_days,
            enabled: decl.enabled,
            access_key: need(&k, "access_key", &format!("account {name:?}"))?,
            secret_key: need(&k, "secret_key", &format!("account {name:?}"))?,
            name,
        });
    }
    Ok(VaultConfig { providers, integrations, accounts })
}

/// A forward block's target: given whole (`vault_url`, `provider`, `access_key`,
/// `secret_key`), or derived from `vault = vault.NAME` and its `account` (default: that vault's
/// default account), which the explicit fields still override. An on-demand forward also
/// carries its Hub ([`hub_link`]).
fn forward_spec(attrs: &Attrs, name: &str, m: &Attrs, refs: &BTreeMap<String, Reference>) -> Result<IntegrationSpec, Unresolved> {
    let what = format!("forward {name:?}");
    let on_demand = match text(m, "forward_type")?.as_deref() {
        Some("ondemand") => Some(hub_link(attrs, &what, m, refs.get(&format!("forwards.{name}.hub")))?),
        _ => None,
    };
    let Some(target) = refs.get(&format!("forwards.{name}.vault")) else {
        let need = |k: &str| need(m, k, &format!("{what} (without vault = vault.NAME)"));
        return Ok(IntegrationSpec::KerberosVault {
            vault_url: need("vault_url")?,
            provider: need("provider")?,
            access_key: need("access_key")?,
            secret: need("secret_key")?,
            on_demand,
        });
    };
    let none = Attrs::new();
    let there = target.attributes.as_map().unwrap_or(&none);
    let address = target.component.address.to_string();
    let creds = credentials_for(m.get("account"), there, &address)?;
    let url = match text(m, "vault_url")? {
        Some(u) => Value::String(u),
        None => reach(attrs.get("cluster"), target).map_err(|there| {
            Unresolved::Invalid(format!("{what} sends to {address}, which runs on {there} and is not exposed outside it: set service_type = \"NodePort\" or \"LoadBalancer\" on {address}, or give vault_url"))
        })?,
    };
    Ok(IntegrationSpec::KerberosVault {
        vault_url: explicit_or(m, "vault_url", url)?,
        provider: explicit_or(m, "provider", Value::String(creds.provider))?,
        access_key: explicit_or(m, "access_key", creds.access_key)?,
        secret: explicit_or(m, "secret_key", creds.secret_key)?,
        on_demand,
    })
}

/// The block's `explicit` field when given, else the value derived from the stack (unknown
/// until that is known).
fn explicit_or(m: &Attrs, explicit: &str, derived: Value) -> Result<String, Unresolved> {
    match text(m, explicit)? {
        Some(v) => Ok(v),
        None => match derived {
            Value::String(s) => Ok(s),
            _ => Err(Unresolved::Unknown),
        },
    }
}

/// The Hub of an on-demand forward: `hub = hub.NAME` gives its API URL (in-cluster `endpoint`
/// on the vault's cluster, its `external_url` from another one), its first user's public key
/// (`hub_key`, generated when Hub is applied) and name (`hub_username`, the agents' upload
/// folder); `hub_url`, `hub_key` and `hub_username` give them literally or override them.
fn hub_link(attrs: &Attrs, what: &str, m: &Attrs, hub: Option<&Reference>) -> Result<HubLink, Unresolved> {
    let Some(hub) = hub else {
        let need = |k: &str| need(m, k, &format!("{what} (on demand, without hub = hub.NAME)"));
        return Ok(HubLink { url: need("hub_url")?, cloudkey: need("hub_key")?, username: need("hub_username")? });
    };
    let none = Attrs::new();
    let there = hub.attributes.as_map().unwrap_or(&none);
    let address = hub.component.address.to_string();
    let url = match text(m, "hub_url")? {
        Some(u) => Value::String(u),
        None => reach(attrs.get("cluster"), hub).map_err(|there| {
            Unresolved::Invalid(format!(
                "{what} is asked for recordings by {address}, which runs on {there} and is not reachable from outside it: set ingress and api_url on {address}, or give hub_url"
            ))
        })?,
    };
    let field = |k: &str| there.get(k).cloned().unwrap_or_else(|| Value::Unknown(format!("{address}.{k}")));
    Ok(HubLink {
        url: explicit_or(m, "hub_url", url)?,
        cloudkey: explicit_or(m, "hub_key", field("hub_key"))?,
        username: explicit_or(m, "hub_username", field("hub_username"))?,
    })
}

/// The URL a component on cluster `from` reaches a Vault (or Hub) at: its in-cluster
/// `endpoint` on the same cluster, its `external_url` from another one. Err(its cluster) when
/// it is on another cluster and not exposed.
pub fn reach(from: Option<&Value>, vault: &Reference) -> Result<Value, String> {
    let there_attrs = vault.attributes.as_map();
    let cluster = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let (here, there) = (cluster(from), cluster(there_attrs.and_then(|m| m.get("cluster"))));
    let field = |k: &str| there_attrs.and_then(|m| m.get(k)).cloned();
    if here.is_none() || there.is_none() || here == there {
        return Ok(field("endpoint").unwrap_or_else(|| Value::Unknown(format!("{}.endpoint", vault.component.address))));
    }
    match field("external_url") {
        Some(Value::Null) | None => Err(there.unwrap_or_default()),
        Some(v) => Ok(v),
    }
}

/// Where an account is checked and with which headers (`shared/docs/vault-config.md` §2).
pub const PING_PATH: &str = "/api/ping";
pub const ACCESS_KEY_HEADER: &str = "X-Kerberos-Storage-AccessKey";
pub const SECRET_KEY_HEADER: &str = "X-Kerberos-Storage-SecretAccessKey";

/// One account to check: its name and keys.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountCheck {
    pub account: String,
    pub access_key: String,
    pub secret_key: String,
}

/// The enabled accounts of a recorded vault whose keys are known.
pub fn account_checks(vault: &Attrs) -> Vec<AccountCheck> {
    let Ok(declared) = declared_accounts(vault) else { return Vec::new() };
    let Some(Value::Map(keys)) = vault.get(ACCOUNTS_ATTR) else { return Vec::new() };
    declared
        .into_iter()
        .filter(|(_, d)| d.enabled)
        .filter_map(|(name, _)| {
            let k = keys.get(&name)?.as_map()?;
            Some(AccountCheck { access_key: k.get("access_key")?.as_str()?.to_string(), secret_key: k.get("secret_key")?.as_str()?.to_string(), account: name })
        })
        .collect()
}

/// What the answer to an account's ping means, for the user. `answer` is the HTTP status, or
/// why Vault could not be reached; `image` is the Vault image in use.
pub fn ping_check(address: &crate::addr::Address, account: &str, image: &str, url: &str, answer: Result<u16, String>) -> crate::Check {
    match answer {
        Ok(200) => crate::Check {
            address: address.clone(),
            ok: true,
            message: format!("{address}: account {account:?} verified (POST {PING_PATH} answered 200 at {url})."),
        },
        Ok(code) => crate::Check {
            address: address.clone(),
            ok: false,
            message: format!(
                "{address}: Vault runs but does not know the account {account:?} (POST {PING_PATH} answered {code} at {url}). The image {image} may predate the VAULT_* variables kdeploy configures Vault with (no release notes say which release reads them): \
                 set image = \"...\" on {address} to a release that reads them and apply again, or, as a fallback, open the Vault UI at {url}, add the storage provider and the account {account:?} with the keys kdeploy generated (in state: {address}.{ACCOUNTS_ATTR})."
            ),
        },
        Err(e) => crate::Check {
            address: address.clone(),
            ok: false,
            message: format!(
                "{address}: cannot reach Vault at {url} to check the account {account:?}: {e}. Check that Vault runs and that its URL is reachable from where kdeploy runs."
            ),
        },
    }
}

/// A naming mistake in a vault's configuration, at an attribute path of its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: AttrPath,
    pub message: String,
    pub hint: String,
}

/// Checks the names of a vault's inputs: provider and integration names unique, every provider,
/// secondary provider and queue an account names exists, directories usable, an on-demand
/// forward has its Hub. Works on the desired inputs (component references are addresses), so `validate`
/// reports mistakes with their location.
pub fn check(inputs: &Attrs, broker: Option<&Attrs>) -> Vec<Problem> {
    let mut out = Vec::new();
    let problem = |path: AttrPath, message: String, hint: &str| Problem { path, message, hint: hint.to_string() };
    let mut provider_names: BTreeSet<String> = BTreeSet::new();
    let default_provider = default_provider_name(inputs);
    provider_names.extend(default_provider.clone());
    let blocks = |attr: &str| -> Vec<(String, Attrs)> { map_of(inputs.get(attr)).map(|m| m.into_iter().collect()).unwrap_or_default() };
    for (name, m) in blocks("providers") {
        let at = AttrPath::attr("providers").child_key(&name);
        if Some(&name) == default_provider.as_ref() {
            out.push(problem(
                at.clone(),
                format!("The provider name {name:?} is already the vault's default provider (from its storage)."),
                "give this provider block another name",
            ));
        }
        provider_names.insert(name.clone());
        let has_storage = m.get("storage").is_some_and(|v| !v.is_null());
        let has_type = m.get("type").is_some_and(|v| !v.is_null());
        if has_storage == has_type {
            out.push(problem(
                at,
                format!("The provider {name:?} needs exactly one of storage (an object_storage component) or type (minio, aws, gcp, azure)."),
                "e.g. storage = object_storage.archive",
            ));
        }
    }
    let mut queue_names: BTreeSet<String> = BTreeSet::new();
    let default_queue = default_integration_name(inputs).filter(|_| broker.is_none_or(broker_is_queue));
    queue_names.extend(default_queue.clone());
    for (name, m) in blocks("forwards") {
        let at = AttrPath::attr("forwards").child_key(&name);
        if Some(&name) == default_queue.as_ref() {
            out.push(problem(
                at.clone(),
                format!("The integration name {name:?} is already the vault's broker integration."),
                "give this forward block another name",
            ));
        }
        queue_names.insert(name.clone());
        let given = |k: &str| m.get(k).is_some_and(|v| !v.is_null());
        let missing: Vec<&str> = ["vault_url", "provider", "access_key", "secret_key"].into_iter().filter(|k| !given(k)).collect();
        if !given("vault") && !missing.is_empty() {
            out.push(problem(
                at.clone(),
                format!("The forward {name:?} says neither which Vault of the stack it sends to nor {}.", missing.join(", ")),
                "set vault = vault.NAME (and account = \"...\"), or give vault_url, provider, access_key and secret_key",
            ));
        }
        if given("account") && !given("vault") {
            out.push(problem(
                at.child_key("account"),
                format!("The forward {name:?} names an account but no vault."),
                "set vault = vault.NAME, or give access_key and secret_key",
            ));
        }
        out.extend(check_on_demand(&name, &at, &m));
        out.extend(check_on_demand_mqtt(&name, &at, &m, inputs));
    }
    let dir_problem = |at: AttrPath, d: &str| -> Option<Problem> {
        let bad = d.is_empty() || d.chars().any(|c| c.is_whitespace() || c == '/' || c == '\\') || d == "." || d == "..";
        bad.then(|| Problem {
            path: at,
            message: format!("The directory {d:?} is not usable: write a folder name (letters, digits, '-', '_', '.') or \"*\" (every agent uploads under its own directory)."),
            hint: "e.g. directory = \"site-a\"".into(),
        })
    };
    if let Some(d) = inputs.get("directory").and_then(Value::as_str) {
        out.extend(dir_problem(AttrPath::attr("directory"), d));
    }
    for (name, m) in blocks("accounts") {
        let at = AttrPath::attr("accounts").child_key(&name);
        if let Some(p) = m.get("provider").and_then(Value::as_str)
            && !provider_names.contains(p)
        {
            out.push(problem(
                at.child_key("provider"),
                format!("The account {name:?} uses the provider {p:?}, which this vault does not have (its providers: {}).", join(&provider_names)),
                "name a provider block or the default provider",
            ));
        }
        for p in m.get("secondary_providers").and_then(Value::as_list).unwrap_or_default().iter().filter_map(Value::as_str) {
            if !provider_names.contains(p) {
                out.push(problem(
                    at.child_key("secondary_providers"),
                    format!(
                        "The account {name:?} names the secondary provider {p:?}, which this vault does not have (its providers: {}).",
                        join(&provider_names)
                    ),
                    "add a provider block with that name",
                ));
            }
        }
        for q in m.get("queues").and_then(Value::as_list).unwrap_or_default().iter().filter_map(Value::as_str) {
            if !queue_names.contains(q) {
                let have = if queue_names.is_empty() { "none".to_string() } else { join(&queue_names) };
                out.push(problem(
                    at.child_key("queues"),
                    format!("The account {name:?} names the queue {q:?}, which is not an integration of this vault (its integrations: {have})."),
                    "integrations come from the vault's broker and its forward blocks",
                ));
            }
        }
        if let Some(d) = m.get("directory").and_then(Value::as_str) {
            out.extend(dir_problem(at.child_key("directory"), d));
        }
    }
    out
}

/// An on-demand forward needs its Hub (`hub`, or all of `hub_url`, `hub_key`, `hub_username`);
/// a continuous one has none.
fn check_on_demand(name: &str, at: &AttrPath, m: &Attrs) -> Option<Problem> {
    let given = |k: &str| m.get(k).is_some_and(|v| !v.is_null());
    const LITERAL: [&str; 3] = ["hub_url", "hub_key", "hub_username"];
    if m.get("forward_type").and_then(Value::as_str) == Some("ondemand") {
        let missing: Vec<&str> = LITERAL.into_iter().filter(|k| !given(k)).collect();
        return (!given("hub") && !missing.is_empty()).then(|| Problem {
            path: at.child_key("forward_type"),
            message: format!(
                "The forward {name:?} is on demand: Kerberos Hub asks this Vault for the recordings to forward, so it needs Hub's URL, cloud key and user name, and has neither hub nor {}.",
                missing.join(", ")
            ),
            hint: "add hub = hub.NAME (a hub of the stack), or give hub_url, hub_key and hub_username".into(),
        });
    }
    let named = ["hub"].into_iter().chain(LITERAL).find(|k| given(k))?;
    Some(Problem {
        path: at.child_key(named),
        message: format!("The forward {name:?} sets {named}, which only an on-demand forward uses: it forwards every recording (forward_type \"continuous\")."),
        hint: format!("set forward_type = \"ondemand\", or remove {named}"),
    })
}

/// An on-demand forward needs the vault to have an MQTT broker: Hub sends its forwarding
/// requests to Vault over MQTT (`mqtt`, or a non-empty `mqtt_uri`).
fn check_on_demand_mqtt(name: &str, at: &AttrPath, m: &Attrs, vault: &Attrs) -> Option<Problem> {
    let on_demand = m.get("forward_type").and_then(Value::as_str) == Some("ondemand");
    let mqtt = vault.get("mqtt").is_some_and(|v| !v.is_null()) || vault.get("mqtt_uri").is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
    (on_demand && !mqtt).then(|| Problem {
        path: at.child_key("forward_type"),
        message: format!(
            "The forward {name:?} is on demand: Kerberos Hub sends this Vault its forwarding requests over MQTT, and the vault has neither mqtt nor mqtt_uri."
        ),
        hint: "add mqtt = broker.NAME (a mosquitto or vernemq broker, the one Hub uses) to the vault, or mqtt_uri = \"tcp://...\"".into(),
    })
}

/// An agent's `account` must be one of its vault's accounts.
pub fn check_agent(agent: &Attrs, vault: &Attrs) -> Vec<Problem> {
    let Some(account) = agent.get("account").and_then(Value::as_str) else { return Vec::new() };
    // Its own account only (a fleet's Vault declares one per site, and every agent is checked);
    // all of them only to name them when it is not there.
    if !matches!(declared_account(vault, account), Ok(None)) {
        return Vec::new();
    }
    let Ok(declared) = declared_accounts(vault) else { return Vec::new() };
    let names: BTreeSet<String> = declared.keys().cloned().collect();
    vec![Problem {
        path: AttrPath::attr("account"),
        message: format!("The account {account:?} is not an account of this agent's vault (its accounts: {}).", join(&names)),
        hint: "declare it with an account block in the vault, or remove account to use the vault's default account".into(),
    }]
}

fn join(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// What an agent of this vault sends: the account it uploads with, and the concrete folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub account: String,
    pub provider: String,
    pub directory: String,
    pub access_key: Value,
    pub secret_key: Value,
}

/// The upload settings of an agent: its `account` (default: the vault's default account) and
/// the folder it uploads under: the account's directory, or, when that is `*`, the agent's own
/// `directory`. Never `*`. The account and folder follow from the declared inputs; the keys
/// are unknown until the vault is applied.
pub fn upload_for(agent: &Attrs, vault: &Attrs, vault_address: &str) -> Result<Upload, Unresolved> {
    let creds = credentials_for(agent.get("account"), vault, vault_address)?;
    let directory = if creds.directory == "*" {
        text(agent, "directory")?.ok_or_else(|| Unresolved::Invalid("the agent has no directory".into()))?
    } else {
        creds.directory
    };
    Ok(Upload { access_key: creds.access_key, secret_key: creds.secret_key, account: creds.account, provider: creds.provider, directory })
}

/// What Hub reads its vault with: the agents' upload settings for Hub's `account`, with Hub's
/// `username` as the folder when the account's directory is `*`. That folder is the name of
/// Hub's first user (`hub_username`): Hub shows the recordings of the user named like their
/// folder.
pub fn hub_upload(hub: &Attrs, vault: &Attrs, vault_address: &str) -> Result<Upload, Unresolved> {
    let as_agent: Attrs = [("account", hub.get("account").cloned()), ("directory", hub.get("username").cloned())]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect();
    upload_for(&as_agent, vault, vault_address)
}

/// What one uses an account of a vault with: its name, directory (a folder or `*`), provider
/// and keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub account: String,
    pub directory: String,
    pub provider: String,
    pub access_key: Value,
    pub secret_key: Value,
}

/// The credentials of `account` (default: the vault's default account) on a vault; the keys
/// are unknown until the vault has generated them.
pub fn credentials_for(account: Option<&Value>, vault: &Attrs, vault_address: &str) -> Result<Credentials, Unresolved> {
    let account = match account {
        Some(Value::Unknown(_)) => return Err(Unresolved::Unknown),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => default_account_name(vault),
    };
    let Some(decl) = declared_account(vault, &account)? else {
        let names: BTreeSet<String> = declared_accounts(vault)?.into_keys().collect();
        return Err(Unresolved::Invalid(format!("the account {account:?} is not an account of {vault_address} (its accounts: {})", join(&names))));
    };
    let provider = decl.provider.clone().or_else(|| default_provider_name(vault)).unwrap_or_default();
    let entry = match vault.get(ACCOUNTS_ATTR) {
        Some(Value::Map(m)) => m.get(&account).and_then(Value::as_map).cloned().unwrap_or_default(),
        _ => Attrs::new(),
    };
    let key = |k: &str| match entry.get(k) {
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::Unknown(format!("{vault_address}.{ACCOUNTS_ATTR}[\"{account}\"].{k}")),
    };
    Ok(Credentials { access_key: key("access_key"), secret_key: key("secret_key"), directory: decl.directory.clone(), account, provider })
}

#[cfg(test)]
mod tests;
