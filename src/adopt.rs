//! `kdeploy adopt`: a Kerberos site found running on a cluster, written as stack HCL. The
//! provider lists what runs ([`Running`]); this module decides what each workload is (by its
//! image), which settings to keep (camera RTSP URLs, endpoints, users) and writes components,
//! `import` blocks for what kdeploy can take over, and `data` blocks through which passwords are
//! referenced where they are kept instead of being copied.
//!
//! What kdeploy does not run itself the way it runs (a Helm-managed MongoDB, an operator-managed
//! MinIO Tenant, RabbitMQ, Kafka, VerneMQ) becomes an `external` component pointing at it, so
//! kdeploy never fights the controller that manages it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kdeploy_provider::{EnvSource, Running};

/// What a workload is, by its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    MongoDb,
    MinIo,
    RabbitMq,
    Kafka,
    VerneMq,
    Vault,
    Agent,
    Factory,
    Hub,
}

impl Role {
    /// The block keyword it is written as.
    fn keyword(self) -> &'static str {
        match self {
            Role::MongoDb => "database",
            Role::MinIo => "object_storage",
            Role::RabbitMq | Role::Kafka | Role::VerneMq => "broker",
            Role::Vault => "vault",
            Role::Agent => "agent",
            Role::Factory => "factory",
            Role::Hub => "hub",
        }
    }
}

/// The role of an image (`ghcr.io/uug-ai/vault:v1.4.0` → Vault), None for what is not part of a
/// Kerberos site.
pub fn role(image: &str) -> Option<Role> {
    let repo = image.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(image, |(r, _)| r).to_ascii_lowercase();
    let last = repo.rsplit('/').next().unwrap_or(&repo);
    let kerberos = ["kerberos", "uug-ai", "uugai"].iter().any(|o| repo.contains(o));
    match last {
        "vault" if kerberos => Some(Role::Vault),
        "agent" if kerberos => Some(Role::Agent),
        "factory" if kerberos => Some(Role::Factory),
        l if kerberos && l.starts_with("hub") => Some(Role::Hub),
        "mongodb" | "mongo" => Some(Role::MongoDb),
        "minio" => Some(Role::MinIo),
        "rabbitmq" => Some(Role::RabbitMq),
        "kafka" => Some(Role::Kafka),
        "vernemq" => Some(Role::VerneMq),
        _ => None,
    }
}

/// The generated stack file and what was found, one line each, for the user.
#[derive(Debug, Default)]
pub struct Adoption {
    pub hcl: String,
    pub found: Vec<String>,
    pub skipped: Vec<String>,
}

/// How the cluster's workloads are reached and named.
pub struct Site<'a> {
    /// `cluster.NAME`.
    pub cluster: &'a str,
    /// A Docker host (containers, their environments) rather than Kubernetes.
    pub docker: bool,
    /// Labels the stack already uses (`vault.main`), which generated blocks must not take.
    pub taken: &'a [String],
    /// Import ids the stack already has: what they take over is the stack's already.
    pub imported: &'a [String],
}

/// Writes the HCL of a site from what runs on its cluster.
pub fn adopt(site: &Site<'_>, running: &[Running]) -> Adoption {
    let mut w = Writer {
        site,
        data: BTreeMap::new(),
        variables: BTreeMap::new(),
        blocks: Vec::new(),
        imports: Vec::new(),
        labels: Vec::new(),
        out: Adoption::default(),
    };
    let mut by_role: BTreeMap<Role, Vec<&Running>> = BTreeMap::new();
    for r in running {
        if r.managed_by.as_deref() == Some("kdeploy") || site.imported.contains(&r.id) {
            continue;
        }
        match r.images.iter().find_map(|i| role(i)) {
            // What an earlier adopt wrote (and the stack kept) is the stack's already.
            Some(role) if site.taken.contains(&format!("{}.{}", role.keyword(), ident(&r.name))) => {
                w.out.skipped.push(format!("{}: already declared as {}.{}", r.id, role.keyword(), ident(&r.name)));
            }
            Some(role) => by_role.entry(role).or_default().push(r),
            None => w.out.skipped.push(format!("{} ({}): not a Kerberos component", r.id, r.images.join(", "))),
        }
    }
    let database = by_role.get(&Role::MongoDb).and_then(|v| v.first()).map(|r| w.mongodb(r));
    let storage = by_role.get(&Role::MinIo).and_then(|v| v.first()).map(|r| w.minio(r));
    let mut queue = None;
    for (role, protocol, port) in [(Role::RabbitMq, "amqp", 5672), (Role::Kafka, "kafka", 9092), (Role::VerneMq, "mqtt", 1883)] {
        for r in by_role.get(&role).into_iter().flatten() {
            let label = w.broker(r, protocol, port);
            if protocol != "mqtt" && queue.is_none() {
                queue = Some(label);
            }
        }
    }
    let vaults: Vec<String> =
        by_role.get(&Role::Vault).into_iter().flatten().map(|r| w.vault(r, database.as_deref(), storage.as_deref(), queue.as_deref())).collect();
    let factories = factory_namespaces(running);
    for r in by_role.get(&Role::Agent).into_iter().flatten() {
        if let Some((_, factory)) = factories.iter().find(|(ns, _)| r.namespace.as_deref() == Some(ns.as_str())) {
            w.out.skipped.push(format!("{} (agent): created by Factory {factory}, which manages it; manage that camera in Factory's UI", r.id));
            continue;
        }
        match vaults.first() {
            Some(v) => w.agent(r, v),
            None => w.out.skipped.push(format!("{} (agent): no Vault found to upload to; declare one, then run adopt again", r.id)),
        }
    }
    for r in by_role.get(&Role::Factory).into_iter().flatten() {
        w.factory(r);
    }
    for r in by_role.get(&Role::Hub).into_iter().flatten() {
        w.out.skipped.push(format!(
            "{} (hub): installed by Helm, and kdeploy does not import a Helm release; declare a `hub` block (see the README) to replace it: kdeploy applies its chart over the release",
            r.id
        ));
    }
    w.finish()
}

struct Writer<'a> {
    site: &'a Site<'a>,
    /// `data` blocks by label.
    data: BTreeMap<String, String>,
    /// Sensitive variables (values kept where kdeploy cannot read them) by name.
    variables: BTreeMap<String, String>,
    blocks: Vec<String>,
    imports: Vec<String>,
    labels: Vec<String>,
    out: Adoption,
}

impl Writer<'_> {
    fn finish(mut self) -> Adoption {
        let mut hcl = format!("# Written by `kdeploy adopt --cluster {}`: review it, then plan.\n", self.site.cluster.trim_start_matches("cluster."));
        for text in self.variables.values().chain(self.data.values()).chain(self.blocks.iter()).chain(self.imports.iter()) {
            hcl.push('\n');
            hcl.push_str(text);
        }
        self.out.hcl = hcl;
        self.out
    }

    /// A block label of `kind` from a workload name, unique and not taken by the stack.
    fn label(&mut self, kind: &str, name: &str) -> String {
        let base = ident(name);
        let mut label = base.clone();
        let mut n = 2;
        while self.labels.contains(&format!("{kind}.{label}")) || self.site.taken.contains(&format!("{kind}.{label}")) {
            label = format!("{base}_{n}");
            n += 1;
        }
        self.labels.push(format!("{kind}.{label}"));
        label
    }

    /// The HCL of a variable's value: a string literal, or a reference to where a password is
    /// kept (a Secret, the container's environment) — never a copy of it.
    fn value(&mut self, r: &Running, var: &str, secret: bool) -> Option<String> {
        match r.env.get(var)? {
            EnvSource::Secret { namespace, name, key } => Some(format!("data.kubernetes_secret.{}.data[{}]", self.secret(namespace, name), quote(key))),
            EnvSource::Value(_) if secret && self.site.docker => Some(format!("data.docker_container_env.{}.env[{}]", self.container(&r.name), quote(var))),
            EnvSource::Value(_) if secret => Some(format!("var.{}", self.variable(&r.name, var))),
            EnvSource::Value(v) => Some(quote(v)),
        }
    }

    fn secret(&mut self, namespace: &str, name: &str) -> String {
        let label = ident(&format!("{namespace}_{name}"));
        let text = format!(
            "data \"kubernetes_secret\" \"{label}\" {{\n  cluster = {}\n  namespace = {}\n  name = {}\n}}\n",
            self.site.cluster,
            quote(namespace),
            quote(name)
        );
        self.data.entry(label.clone()).or_insert(text);
        label
    }

    fn container(&mut self, name: &str) -> String {
        let label = ident(name);
        let text = format!("data \"docker_container_env\" \"{label}\" {{\n  cluster = {}\n  container = {}\n}}\n", self.site.cluster, quote(name));
        self.data.entry(label.clone()).or_insert(text);
        label
    }

    /// A password set inline in a Kubernetes workload: kdeploy has no data source for a
    /// workload's environment, so it is asked for (`-var`), never copied into the file.
    fn variable(&mut self, workload: &str, var: &str) -> String {
        let name = ident(&format!("{workload}_{var}")).to_ascii_lowercase();
        let where_ = if var.chars().any(|c| c.is_ascii_uppercase()) { "set inline in the workload" } else { "not kept where kdeploy can read it" };
        let text = format!(
            "variable \"{name}\" {{\n  type = string\n  sensitive = true\n  description = {}\n}}\n",
            quote(&format!("{var} of {workload} ({where_}): give it with -var {name}=... or KDEPLOY_VAR_{name}"))
        );
        self.variables.entry(name.clone()).or_insert(text);
        name
    }

    /// `host:port` of a workload: its first Service with the port, else its first Service, else
    /// its name (a Docker container on the site's network).
    fn host(&self, r: &Running, port: u16) -> String {
        let ns = r.namespace.as_deref().map(|n| format!(".{n}")).unwrap_or_default();
        let hl = r.services.iter().find(|(n, p)| *p == port && n.ends_with("-hl"));
        match hl.or_else(|| r.services.iter().find(|(_, p)| *p == port)).or(r.services.first()) {
            Some((name, p)) => format!("{name}{ns}:{p}"),
            None => format!("{}{ns}:{port}", r.name),
        }
    }

    fn mongodb(&mut self, r: &Running) -> String {
        let label = self.label("database", &r.name);
        let user_var = ["MONGODB_ROOT_USER", "MONGO_INITDB_ROOT_USERNAME"].into_iter().find(|v| r.env.contains_key(*v));
        let pass_var = ["MONGODB_ROOT_PASSWORD", "MONGO_INITDB_ROOT_PASSWORD"].into_iter().find(|v| r.env.contains_key(*v));
        let user = match user_var.and_then(|v| r.env.get(v)) {
            Some(EnvSource::Value(u)) => template_text(u),
            _ => "root".to_string(),
        };
        let password = pass_var.and_then(|v| self.value(r, v, true));
        let credentials = password.map(|p| format!("{user}:${{{p}}}@")).unwrap_or_default();
        let uri = format!("\"mongodb://{credentials}{}/admin\"", template_text(&self.host(r, 27017)));
        self.blocks.push(format!("database \"{label}\" {{\n  type = \"external\"\n  uri = {uri}\n}}\n"));
        self.found(r, &format!("database.{label} (external: {})", self.manager(r)));
        label
    }

    fn minio(&mut self, r: &Running) -> String {
        let label = self.label("object_storage", &r.name);
        let endpoint = quote(&self.host(r, 9000));
        let access = self.value(r, "MINIO_ROOT_USER", true).unwrap_or_else(|| format!("var.{}", self.variable(&r.name, "access_key")));
        let secret = self.value(r, "MINIO_ROOT_PASSWORD", true).unwrap_or_else(|| format!("var.{}", self.variable(&r.name, "secret_key")));
        self.blocks.push(format!(
            "object_storage \"{label}\" {{\n  type = \"external\"\n  endpoint = {endpoint}\n  # The bucket Vault's storage provider writes to (the deployment guide's; check it in Vault).\n  bucket = \"mybucket\"\n  access_key = {access}\n  secret_key = {secret}\n}}\n"
        ));
        self.found(r, &format!("object_storage.{label} (external: {})", self.manager(r)));
        label
    }

    fn broker(&mut self, r: &Running, protocol: &str, port: u16) -> String {
        let label = self.label("broker", &r.name);
        let host = quote(&self.host(r, port));
        let mut body = format!("  type = \"external\"\n  protocol = \"{protocol}\"\n  host = {host}\n");
        let (user, pass) = match protocol {
            "amqp" => ("RABBITMQ_USERNAME", "RABBITMQ_PASSWORD"),
            "kafka" => ("KAFKA_CLIENT_USERS", "KAFKA_CLIENT_PASSWORDS"),
            _ => ("", ""),
        };
        if let Some(u) = self.value(r, user, false) {
            let _ = writeln!(body, "  username = {u}");
        }
        if let Some(p) = self.value(r, pass, true) {
            let _ = writeln!(body, "  password = {p}");
        }
        // VerneMQ's users are variables DOCKER_VERNEMQ_USER_<NAME>=<password>.
        if protocol == "mqtt"
            && let Some(var) = r.env.keys().find(|k| k.starts_with("DOCKER_VERNEMQ_USER_")).cloned()
        {
            let _ = writeln!(body, "  username = {}", quote(&var["DOCKER_VERNEMQ_USER_".len()..].to_ascii_lowercase()));
            if let Some(p) = self.value(r, &var, true) {
                let _ = writeln!(body, "  password = {p}");
            }
        }
        self.blocks.push(format!("broker \"{label}\" {{\n{body}}}\n"));
        self.found(r, &format!("broker.{label} (external {protocol}: {})", self.manager(r)));
        label
    }

    fn vault(&mut self, r: &Running, database: Option<&str>, storage: Option<&str>, queue: Option<&str>) -> String {
        let label = self.label("vault", &r.name);
        let database = database.map(str::to_string).unwrap_or_else(|| {
            let v = self.variable(&r.name, "mongodb_uri");
            self.blocks.push(format!("database \"{label}_db\" {{\n  type = \"external\"\n  uri = var.{v}\n}}\n"));
            format!("{label}_db")
        });
        let storage = storage.map(str::to_string).unwrap_or_else(|| {
            let (a, s, e) = (self.variable(&r.name, "access_key"), self.variable(&r.name, "secret_key"), self.variable(&r.name, "storage_endpoint"));
            self.blocks.push(format!(
                "object_storage \"{label}_storage\" {{\n  type = \"external\"\n  endpoint = var.{e}\n  bucket = \"mybucket\"\n  access_key = var.{a}\n  secret_key = var.{s}\n}}\n"
            ));
            format!("{label}_storage")
        });
        let mut body = format!("  cluster = {}\n", self.site.cluster);
        if let Some(ns) = &r.namespace {
            let _ = writeln!(body, "  namespace = {}", quote(ns));
        }
        let _ = writeln!(body, "  database = database.{database}\n  storage = object_storage.{storage}");
        if let Some(q) = queue {
            let _ = writeln!(body, "  broker = broker.{q}");
        }
        self.blocks.push(format!("vault \"{label}\" {{\n{body}}}\n"));
        self.import(&format!("vault.{label}"), r);
        label
    }

    fn agent(&mut self, r: &Running, vault: &str) {
        let label = self.label("agent", &r.name);
        let mut body = format!("  cluster = {}\n", self.site.cluster);
        if let Some(ns) = &r.namespace {
            let _ = writeln!(body, "  namespace = {}", quote(ns));
        }
        let _ = writeln!(body, "  vault = vault.{vault}");
        let rtsp = self.value(r, "AGENT_CAPTURE_IPCAMERA_RTSP", false).unwrap_or_else(|| format!("var.{}", self.variable(&r.name, "rtsp_url")));
        let _ = writeln!(body, "  rtsp_url = {rtsp}");
        for (attr, var) in [("sub_rtsp_url", "AGENT_CAPTURE_IPCAMERA_SUB_RTSP"), ("camera_name", "AGENT_NAME"), ("timezone", "AGENT_TIMEZONE")] {
            if let Some(v) = self.value(r, var, false) {
                let _ = writeln!(body, "  {attr} = {v}");
            }
        }
        self.blocks.push(format!("agent \"{label}\" {{\n{body}}}\n"));
        self.import(&format!("agent.{label}"), r);
    }

    /// Factory v2 on Kubernetes, as kdeploy runs it. Its UI password is not written: the import
    /// keeps the one in effect (read from the live workload into `admin_password`). It needs no
    /// database: a Factory that keeps its configuration in MongoDB (v1, or
    /// `FACTORY_CONFIGURATION=mongodb`) would lose it when run as kdeploy runs it, so it is
    /// skipped, as is one whose agents go to another namespace than its own.
    fn factory(&mut self, r: &Running) {
        if let Some(why) = factory_not_adoptable(r, self.site.docker) {
            self.out.skipped.push(format!("{} (factory): {why}", r.id));
            return;
        }
        let label = self.label("factory", &r.name);
        let mut body = format!("  cluster = {}\n", self.site.cluster);
        if let Some(ns) = &r.namespace {
            let _ = writeln!(body, "  namespace = {}", quote(ns));
        }
        if let Some(image) = self.value(r, "KERBEROS_AGENT_IMAGE", false) {
            let _ = writeln!(body, "  agent_image = {image}");
        }
        let _ = writeln!(body, "  # The UI password in effect is kept by the import (see admin_password); set login_password to change it.");
        self.blocks.push(format!("factory \"{label}\" {{\n{body}}}\n"));
        self.import(&format!("factory.{label}"), r);
    }

    fn import(&mut self, to: &str, r: &Running) {
        self.imports.push(format!("import {{\n  to = {to}\n  id = {}\n}}\n", quote(&r.id)));
        self.found(r, &format!("{to} (imported)"));
    }

    fn found(&mut self, r: &Running, what: &str) {
        self.out.found.push(format!("{} -> {what}", r.id));
    }

    fn manager(&self, r: &Running) -> String {
        match (&r.managed_by, self.site.docker) {
            (Some(m), _) => format!("managed by {m}"),
            (None, true) => "a container kdeploy does not run".into(),
            (None, false) => "a workload kdeploy does not run".into(),
        }
    }
}

/// The namespaces Factories create their agents in (their `NAMESPACE`, else their own), each
/// with the Factory's id: the agents there are Factory's, whoever manages Factory itself.
fn factory_namespaces(running: &[Running]) -> Vec<(String, String)> {
    running
        .iter()
        .filter(|r| r.images.iter().any(|i| role(i) == Some(Role::Factory)))
        .filter_map(|r| {
            let ns = match r.env.get("NAMESPACE") {
                Some(EnvSource::Value(v)) => Some(v.clone()),
                _ => r.namespace.clone(),
            };
            ns.map(|ns| (ns, r.id.clone()))
        })
        .collect()
}

/// Why a running Factory cannot be taken over as kdeploy runs it (v2, configuration in
/// ConfigMaps, agents in its own namespace, on Kubernetes), if it cannot.
fn factory_not_adoptable(r: &Running, docker: bool) -> Option<String> {
    let plain = |var: &str| match r.env.get(var) {
        Some(EnvSource::Value(v)) => Some(v.as_str()),
        _ => None,
    };
    if docker {
        return Some("kdeploy runs Kerberos Factory on Kubernetes only (it creates agents through the Kubernetes API); declare one `agent` block per camera instead, and remove the container yourself".into());
    }
    let configuration = plain("FACTORY_CONFIGURATION");
    if configuration == Some("mongodb") || (configuration.is_none() && r.env.keys().any(|k| k.starts_with("MONGODB_"))) {
        return Some("keeps its configuration in MongoDB (Factory v1, or FACTORY_CONFIGURATION=mongodb), and kdeploy runs Factory v2 with ConfigMaps: taking it over would lose the agents it knows. Upgrade it to Factory v2 first, then run adopt again".into());
    }
    match (plain("NAMESPACE"), r.namespace.as_deref()) {
        (Some(agents), Some(ns)) if agents != ns => Some(format!(
            "creates its agents in namespace {agents:?}, not in its own ({ns:?}) as kdeploy runs it: taking it over would leave the agents it created unmanaged. Move it to {agents:?}, or keep it out of the stack"
        )),
        _ => None,
    }
}

/// An HCL identifier from a name (`myminio-pool-0` → `myminio_pool_0`).
fn ident(name: &str) -> String {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

/// A quoted HCL string literal.
fn quote(s: &str) -> String {
    format!("\"{}\"", template_text(s))
}

/// Text inside a quoted HCL string: escapes, and template markers doubled.
fn template_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").replace("${", "$${").replace("%{", "%%{")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_recognised() {
        assert_eq!(role("ghcr.io/uug-ai/vault:v1.4.0"), Some(Role::Vault));
        assert_eq!(role("uugai/vault:v1.0.6"), Some(Role::Vault));
        assert_eq!(role("kerberos/agent:latest"), Some(Role::Agent));
        assert_eq!(role("ghcr.io/uug-ai/factory:v2.0.4"), Some(Role::Factory));
        assert_eq!(role("uugai/hub-api:v1.0.0"), Some(Role::Hub));
        assert_eq!(role("bitnamilegacy/mongodb:8.0.13-debian-12-r0"), Some(Role::MongoDb));
        assert_eq!(role("mongo:4.4.16"), Some(Role::MongoDb));
        assert_eq!(role("quay.io/minio/minio:RELEASE.2024-11-07T00-52-20Z"), Some(Role::MinIo));
        assert_eq!(role("localhost:5000/vernemq/vernemq"), Some(Role::VerneMq));
        assert_eq!(role("hashicorp/vault:1.15"), None);
        assert_eq!(role("nginx"), None);
    }

    fn workload(ns: &str, name: &str, image: &str, env: &[(&str, EnvSource)], services: &[(&str, u16)]) -> Running {
        Running {
            id: format!("{ns}/{name}"),
            name: name.into(),
            namespace: Some(ns.into()),
            kind: "StatefulSet".into(),
            images: vec![image.into()],
            env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            managed_by: Some("Helm".into()),
            services: services.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
        }
    }

    #[test]
    fn brokers_are_external_with_their_passwords_referenced() {
        let secret = |name: &str, key: &str| EnvSource::Secret { namespace: "rabbitmq".into(), name: name.into(), key: key.into() };
        let running = [
            workload(
                "rabbitmq",
                "rabbitmq",
                "bitnamilegacy/rabbitmq:3.12.13-debian-12-r2",
                &[("RABBITMQ_USERNAME", EnvSource::Value("yourusername".into())), ("RABBITMQ_PASSWORD", secret("rabbitmq", "rabbitmq-password"))],
                &[("rabbitmq", 5672), ("rabbitmq-headless", 4369)],
            ),
            workload(
                "vernemq",
                "vernemq",
                "vernemq/vernemq:2.0.1-alpine",
                &[("DOCKER_VERNEMQ_USER_YOURUSERNAME", EnvSource::Value("yourpassword".into()))],
                &[],
            ),
        ];
        let site = Site { cluster: "cluster.k8s", docker: false, taken: &[], imported: &[] };
        let a = adopt(&site, &running);
        for text in [
            "data \"kubernetes_secret\" \"rabbitmq_rabbitmq\"",
            "broker \"rabbitmq\" {\n  type = \"external\"\n  protocol = \"amqp\"\n  host = \"rabbitmq.rabbitmq:5672\"\n  username = \"yourusername\"\n  password = data.kubernetes_secret.rabbitmq_rabbitmq.data[\"rabbitmq-password\"]",
            "protocol = \"mqtt\"\n  host = \"vernemq.vernemq:1883\"\n  username = \"yourusername\"\n  password = var.vernemq_docker_vernemq_user_yourusername",
        ] {
            assert!(a.hcl.contains(text), "{text}\n{}", a.hcl);
        }
        assert!(!a.hcl.contains("yourpassword"), "{}", a.hcl);
        assert_eq!(a.found.len(), 2, "{:?}", a.found);
    }

    #[test]
    fn a_factory_that_would_lose_its_agents_is_skipped_saying_why() {
        let v = |s: &str| EnvSource::Value(s.into());
        let guide = [("FACTORY_CONFIGURATION", v("configmap")), ("NAMESPACE", v("kerberos-factory")), ("KERBEROS_AGENT_IMAGE", v("kerberos/agent:latest"))];
        let legacy = [("MONGODB_URI", v("mongodb://mongodb.mongodb:27017")), ("MONGODB_DATABASE_FACTORY", v("KerberosFactory"))];
        let elsewhere = [("FACTORY_CONFIGURATION", v("configmap")), ("NAMESPACE", v("kerberos-agent"))];
        let running = [
            workload("kerberos-factory", "factory", "ghcr.io/uug-ai/factory:v2.0.4", &guide, &[]),
            workload("legacy", "factory", "uugai/factory:v1.0.5", &legacy, &[]),
            workload("elsewhere", "factory", "ghcr.io/uug-ai/factory:v2.0.4", &elsewhere, &[]),
            workload("kerberos-factory", "camera1", "kerberos/agent:latest", &[("AGENT_NAME", v("camera1"))], &[]),
        ];
        let site = Site { cluster: "cluster.k8s", docker: false, taken: &[], imported: &[] };
        let a = adopt(&site, &running);
        assert!(
            a.hcl.contains("factory \"factory\" {\n  cluster = cluster.k8s\n  namespace = \"kerberos-factory\"\n  agent_image = \"kerberos/agent:latest\""),
            "{}",
            a.hcl
        );
        assert_eq!(a.found, ["kerberos-factory/factory -> factory.factory (imported)"]);
        assert_eq!(a.skipped.len(), 3, "{:?}", a.skipped);
        assert!(a.skipped.iter().any(|l| l.starts_with("legacy/factory (factory): keeps its configuration in MongoDB")), "{:?}", a.skipped);
        assert!(a.skipped.iter().any(|l| l.starts_with("elsewhere/factory (factory): creates its agents in namespace \"kerberos-agent\"")), "{:?}", a.skipped);
        assert!(
            a.skipped.iter().any(|l| l.starts_with("kerberos-factory/camera1 (agent): created by Factory kerberos-factory/factory, which manages it")),
            "{:?}",
            a.skipped
        );
        let docker = Site { docker: true, ..site };
        let a = adopt(&docker, &running[..1]);
        assert_eq!(a.skipped.len(), 1, "{:?}", a.skipped);
        assert!(a.skipped[0].contains("kdeploy runs Kerberos Factory on Kubernetes only"), "{:?}", a.skipped);
        assert!(!a.hcl.contains("factory"), "{}", a.hcl);
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote("a\"b${c}"), "\"a\\\"b$${c}\"");
        assert_eq!(ident("agent.1"), "agent_1");
        assert_eq!(ident("myminio-pool-0"), "myminio_pool_0");
        assert_eq!(ident("1cam"), "_1cam");
    }
}
