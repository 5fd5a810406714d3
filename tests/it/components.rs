//! One component model, two runtimes: every Kerberos component rendered for Docker (a container)
//! and for Kubernetes (objects) from the same attributes, and what each produces compared: image,
//! command, environment (secret or not), ports, probe, volumes, files, user and group, limits,
//! one-shot steps and how long apply waits. The only differences allowed are the ones the model
//! names (Kubernetes-only waits and volume seeding, which Docker gets from dependency order and
//! from filling new volumes from the image).
#![cfg(all(feature = "docker", feature = "kubernetes"))]

use std::collections::BTreeMap;

use base64::Engine as _;
use kdeploy_provider::components::secrets;
use kdeploy_provider::{ComponentRef, Kind, Reference, Value, images};
use kdeploy_provider_docker::spec::{self as docker, RenderCtx};
use kdeploy_provider_kubernetes::render::{self as k8s, Input};
use serde_json::Value as Json;

type Attrs = BTreeMap<String, Value>;

fn attrs(pairs: &[(&str, Value)]) -> Attrs {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn s(v: &str) -> Value {
    Value::string(v)
}

fn cref(address: &str, kind: Kind, type_name: &str) -> ComponentRef {
    ComponentRef { address: address.parse().unwrap(), kind, type_name: type_name.into() }
}

/// What a runtime produced, in a form both can be put in.
#[derive(Debug, Default, PartialEq)]
struct Facts {
    image: String,
    args: Option<Vec<String>>,
    /// name → (value, kept in a Secret on Kubernetes)
    env: BTreeMap<String, String>,
    ports: Vec<u16>,
    /// (container port, published port, protocol)
    published: Vec<(u16, u16, String)>,
    probe: Vec<String>,
    /// mount path → volume
    mounts: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
    user: Option<String>,
    groups: Vec<String>,
    memory: Option<String>,
    cpu: Option<String>,
    /// (image, command, env) of the one-shot steps run after the component is ready
    jobs: Vec<(String, Vec<String>, BTreeMap<String, String>)>,
    wait_secs: u64,
}

fn docker_facts(c: &ComponentRef, a: &Attrs, refs: &BTreeMap<String, Reference>) -> Facts {
    let spec = docker::render(&RenderCtx { component: c, cluster_name: "edge", network: "n", attrs: a, refs }).unwrap().unwrap();
    let name = spec.name.clone();
    Facts {
        image: spec.image,
        args: spec.command,
        env: spec.env,
        ports: Vec::new(),
        published: spec.ports.iter().map(|p| (p.container, p.host, p.protocol.kubernetes().to_string())).collect(),
        probe: spec.healthcheck.map(|h| h[1..].to_vec()).unwrap_or_default(),
        mounts: spec.volumes.into_iter().map(|(v, p)| (p, v.trim_start_matches(&format!("{name}-")).to_string())).collect(),
        files: spec.files.into_iter().collect(),
        user: spec.user,
        groups: spec.group_add,
        memory: spec.memory.map(|m| m.to_string()),
        cpu: spec.nano_cpus.map(|c| c.to_string()),
        jobs: spec.jobs.into_iter().map(|j| (j.image, j.command, j.env)).collect(),
        wait_secs: spec.wait.as_secs(),
    }
}

fn decode(v: &Json) -> String {
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()).unwrap()
}

/// Resolves a container's env against the Secrets among the rendered objects.
fn k8s_env(container: &Json, objects: &[Json]) -> BTreeMap<String, String> {
    let secret = |name: &str, key: &str| -> String {
        let o = objects.iter().find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == name).unwrap_or_else(|| panic!("Secret {name}"));
        decode(&o["data"][key])
    };
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let value = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None => secret(e["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap(), e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap()),
            };
            (name, value)
        })
        .collect()
}

/// Kubernetes quantities as Docker counts them (bytes, nano CPUs).
fn bytes(q: &Json) -> Option<String> {
    q.as_str().and_then(docker::parse_memory).map(|b| b.to_string())
}

fn nanos(q: &Json) -> Option<String> {
    q.as_str().and_then(docker::parse_cpu).map(|n| n.to_string())
}

fn k8s_facts(c: &ComponentRef, a: &Attrs, refs: &BTreeMap<String, Reference>) -> Facts {
    let objects = k8s::render(&Input { component: c, attrs: a, refs, cluster: &BTreeMap::new() }).unwrap().unwrap();
    let workload = objects.iter().find(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet").expect("a workload");
    let pod = &workload["spec"]["template"]["spec"];
    let main = &pod["containers"][0];
    let probe = match &main["readinessProbe"] {
        p if p["exec"].is_object() => p["exec"]["command"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        // An HTTP probe: Docker runs the model's command for it (compared in `probes_are_the_models`).
        p if p["httpGet"].is_object() => vec![format!("GET :{}{}", p["httpGet"]["port"], p["httpGet"]["path"].as_str().unwrap())],
        _ => Vec::new(),
    };
    let svc = objects.iter().find(|o| o["kind"] == "Service");
    let published = svc
        .map(|s| {
            s["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| Some((p["port"].as_u64()? as u16, p["nodePort"].as_u64()? as u16, p["protocol"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let volumes: BTreeMap<String, Json> =
        pod["volumes"].as_array().into_iter().flatten().map(|v| (v["name"].as_str().unwrap().to_string(), v.clone())).collect();
    let mut mounts = BTreeMap::new();
    let mut files = BTreeMap::new();
    for m in main["volumeMounts"].as_array().into_iter().flatten() {
        let path = m["mountPath"].as_str().unwrap().to_string();
        let vol = m["name"].as_str().unwrap();
        match volumes.get(vol).filter(|v| v["secret"].is_object()) {
            Some(v) => {
                let secret = objects.iter().find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == v["secret"]["secretName"]).expect("files Secret");
                files.insert(path, decode(&secret["data"][v["secret"]["items"][0]["key"].as_str().unwrap()]));
            }
            None => {
                mounts.insert(path, m["subPath"].as_str().unwrap_or(vol).to_string());
            }
        }
    }
    let jobs = objects
        .iter()
        .filter(|o| o["kind"] == "Job")
        .map(|j| {
            let c = &j["spec"]["template"]["spec"]["containers"][0];
            (
                c["image"].as_str().unwrap().to_string(),
                c["command"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                k8s_env(c, &objects),
            )
        })
        .collect();
    Facts {
        image: main["image"].as_str().unwrap().to_string(),
        args: main["args"].as_array().map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect()),
        env: k8s_env(main, &objects),
        ports: main["ports"].as_array().into_iter().flatten().map(|p| p["containerPort"].as_u64().unwrap() as u16).collect(),
        published,
        probe,
        mounts,
        files,
        user: pod["securityContext"]["runAsUser"].as_i64().map(|u| u.to_string()),
        groups: pod["securityContext"]["fsGroup"].as_i64().map(|g| g.to_string()).into_iter().collect(),
        memory: bytes(&main["resources"]["limits"]["memory"]),
        cpu: nanos(&main["resources"]["limits"]["cpu"]),
        jobs,
        wait_secs: k8s::readiness_timeout(&objects).map(|d| d.as_secs()).unwrap_or_default(),
    }
}

/// Compares the two renderings: everything but what only one runtime expresses (Kubernetes'
/// container ports and HTTP probes, Docker's probe commands: checked against the model apart).
fn assert_same(what: &str, d: &Facts, k: &Facts) {
    assert_eq!(d.image, k.image, "{what}: image");
    assert_eq!(d.args, k.args, "{what}: command");
    assert_eq!(d.env, k.env, "{what}: environment");
    assert_eq!(d.published, k.published, "{what}: published ports");
    assert_eq!(d.mounts, k.mounts, "{what}: volumes");
    assert_eq!(d.files, k.files, "{what}: files");
    assert_eq!((&d.user, &d.groups), (&k.user, &k.groups), "{what}: user and group");
    assert_eq!((&d.memory, &d.cpu), (&k.memory, &k.cpu), "{what}: limits");
    assert_eq!(d.jobs, k.jobs, "{what}: one-shot steps");
    assert_eq!(d.wait_secs, k.wait_secs, "{what}: readiness timeout");
    if !k.probe.first().is_some_and(|p| p.starts_with("GET ")) {
        assert_eq!(d.probe, k.probe, "{what}: probe");
    }
}

fn mongodb() -> (ComponentRef, Attrs) {
    let mut a = attrs(&[
        ("username", s("root")),
        ("storage_size", s("8Gi")),
        ("readiness_timeout", s("1m30s")),
        ("host", s("mongo.db")),
        ("port", Value::from_i64(27017)),
    ]);
    secrets::fill(Kind::Database, "mongodb", "database.meta", &mut a, &Attrs::new(), true);
    (cref("database.meta", Kind::Database, "mongodb"), a)
}

fn minio() -> (ComponentRef, Attrs) {
    let mut a = attrs(&[("bucket", s("recordings")), ("region", s("na")), ("size", s("10Gi")), ("endpoint", s("minio:9000")), ("readiness_timeout", s("2m"))]);
    secrets::fill(Kind::ObjectStorage, "minio", "object_storage.rec", &mut a, &Attrs::new(), true);
    (cref("object_storage.rec", Kind::ObjectStorage, "minio"), a)
}

fn rabbitmq() -> (ComponentRef, Attrs) {
    let mut a = attrs(&[
        ("username", s("kerberos")),
        ("queue", s("data-filtering")),
        ("storage_size", s("8Gi")),
        ("host", s("rabbitmq")),
        ("readiness_timeout", s("90s")),
    ]);
    secrets::fill(Kind::Broker, "rabbitmq", "broker.events", &mut a, &Attrs::new(), true);
    (cref("broker.events", Kind::Broker, "rabbitmq"), a)
}

fn as_ref((c, a): (ComponentRef, Attrs)) -> Reference {
    Reference { component: c, attributes: Value::Map(a).into() }
}

fn vault_attrs(extra: &[(&str, Value)]) -> Attrs {
    let mut a = attrs(&[
        ("storage", s("object_storage.rec")),
        ("database", s("database.meta")),
        ("broker", s("broker.events")),
        ("login_username", s("root")),
        ("service_type", s("NodePort")),
        ("node_port", Value::from_i64(30080)),
        ("readiness_timeout", s("1m30s")),
        ("endpoint", s("http://vault:80/api")),
    ]);
    a.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    secrets::fill(Kind::Vault, "kerberos", "vault.main", &mut a, &Attrs::new(), true);
    a
}

fn vault_refs(database: Reference) -> BTreeMap<String, Reference> {
    [("storage".to_string(), as_ref(minio())), ("database".to_string(), database), ("broker".to_string(), as_ref(rabbitmq()))].into()
}

#[test]
fn every_component_renders_the_same_on_docker_and_kubernetes() {
    let external_db = Reference {
        component: cref("database.ext", Kind::Database, "external"),
        attributes: Value::Map(attrs(&[
            ("uri", s("mongodb://u:p@docdb.example.com:27017/admin")),
            ("flavor", s("documentdb")),
            ("tls_ca", s("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")),
        ]))
        .into(),
    };
    let vault = vault_attrs(&[]);
    let mut agent = attrs(&[
        ("vault", s("vault.main")),
        ("rtsp_url", s("rtsp://u:p@10.0.0.1/s1")),
        ("directory", s("site")),
        ("login_username", s("admin")),
        ("persistence", Value::Bool(true)),
        ("storage_size", s("1Gi")),
        ("fs_group", Value::from_i64(2000)),
        ("run_as_user", Value::from_i64(1000)),
        ("cpu", s("500m")),
        ("memory", s("256Mi")),
        ("readiness_timeout", s("45s")),
    ]);
    secrets::fill(Kind::Agent, "kerberos", "agent.cam", &mut agent, &Attrs::new(), true);
    let agent_refs: BTreeMap<String, Reference> =
        [("vault".to_string(), Reference { component: cref("vault.main", Kind::Vault, "kerberos"), attributes: Value::Map(vault.clone()).into() })].into();
    let none = BTreeMap::new();
    let cases: Vec<(&str, ComponentRef, Attrs, BTreeMap<String, Reference>)> = vec![
        ("mongodb", mongodb().0, mongodb().1, none.clone()),
        ("minio", minio().0, minio().1, none.clone()),
        ("rabbitmq", rabbitmq().0, rabbitmq().1, none.clone()),
        ("vault with MongoDB", cref("vault.main", Kind::Vault, "kerberos"), vault.clone(), vault_refs(as_ref(mongodb()))),
        ("vault with DocumentDB", cref("vault.main", Kind::Vault, "kerberos"), vault.clone(), vault_refs(external_db)),
        ("agent", cref("agent.cam", Kind::Agent, "kerberos"), agent, agent_refs),
    ];
    for (what, c, a, refs) in &cases {
        let d = docker_facts(c, a, refs);
        let k = k8s_facts(c, a, refs);
        assert_same(what, &d, &k);
        assert!(!d.env.is_empty(), "{what}");
    }
    // The differences the issue named are gone: "1m30s" is 90 s on both, MINIO_REGION on both,
    // RabbitMQ's exact pin used by both.
    let (c, a) = mongodb();
    assert_eq!(k8s_facts(&c, &a, &none).wait_secs, 90);
    let (c, a) = minio();
    assert_eq!(k8s_facts(&c, &a, &none).env["MINIO_REGION"], "na");
    let (c, a) = rabbitmq();
    assert_eq!(docker_facts(&c, &a, &none).image, images::RABBITMQ);
    assert_eq!(k8s_facts(&c, &a, &none).image, images::RABBITMQ);
}

/// The part each runtime expresses its own way, against the model: Docker runs the model's probe
/// command, Kubernetes its HTTP or exec probe; only Kubernetes waits for the database in an init
/// container and seeds the agent's volume.
#[test]
fn probes_waits_and_seeds_are_the_models() {
    use kdeploy_provider::components::{Probe, Spec, workload};
    let vault = vault_attrs(&[]);
    let refs = vault_refs(as_ref(mongodb()));
    let c = cref("vault.main", Kind::Vault, "kerberos");
    let w = workload(&Spec { component: &c, attrs: &vault, refs: &refs, namespace: None }).unwrap();
    let d = docker::render(&RenderCtx { component: &c, cluster_name: "edge", network: "n", attrs: &vault, refs: &refs }).unwrap().unwrap();
    assert_eq!(d.healthcheck.unwrap()[1..], w.probe.as_ref().unwrap().as_command()[..]);
    let objects = k8s::render(&Input { component: &c, attrs: &vault, refs: &refs, cluster: &BTreeMap::new() }).unwrap().unwrap();
    let dep = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let Some(Probe::Http { path, port, .. }) = &w.probe else { panic!("vault has an HTTP probe") };
    assert_eq!(dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"], serde_json::json!({"path": path, "port": port}));
    assert_eq!(w.waits, vec![("mongo.db".to_string(), 27017)]);
    assert!(dep["spec"]["template"]["spec"]["initContainers"][0]["command"][2].as_str().unwrap().contains("nc -z mongo.db 27017"));
    // The DocumentDB vault on an SRV URI waits for nothing.
    let srv = Reference {
        component: cref("database.ext", Kind::Database, "external"),
        attributes: Value::Map(attrs(&[("uri", s("mongodb+srv://u:p@cluster0.example.net/"))])).into(),
    };
    let refs = vault_refs(srv);
    let objects = k8s::render(&Input { component: &c, attrs: &vault, refs: &refs, cluster: &BTreeMap::new() }).unwrap().unwrap();
    let dep = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert!(dep["spec"]["template"]["spec"]["initContainers"].is_null(), "no TCP wait on a mongodb+srv host: {dep}");
    assert_eq!("database.ext".parse::<kdeploy::addr::Address>().unwrap().instance_name(), "ext");
}

/// Factory v2 hands GLOBAL_AGENT_* settings to the agents it creates, which only agents from
/// v3.6.29 read: its default agent image is at least that.
#[test]
fn factory_creates_agents_that_read_its_global_settings() {
    let mut a = attrs(&[("service_type", s("NodePort")), ("node_port", Value::from_i64(30079))]);
    secrets::fill(Kind::Factory, "kerberos", "factory.ui", &mut a, &Attrs::new(), true);
    let c = cref("factory.ui", Kind::Factory, "kerberos");
    let objects = k8s::render(&Input { component: &c, attrs: &a, refs: &BTreeMap::new(), cluster: &BTreeMap::new() }).unwrap().unwrap();
    let dep = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let image =
        dep["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().iter().find(|e| e["name"] == "KERBEROS_AGENT_IMAGE").unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string();
    let version: Vec<u32> = image.rsplit_once(":v").unwrap().1.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(version >= vec![3, 6, 29], "{image}");
    assert_eq!(image, images::AGENT, "Factory's agents and kdeploy's agents run the same pin");
}

/// Every default image is pinned to an exact release (no floating `3.13-management`).
#[test]
fn default_images_are_exact_releases() {
    for image in [images::VAULT, images::AGENT, images::FACTORY, images::MONGODB, images::MINIO, images::MINIO_CLIENT, images::RABBITMQ, images::BUSYBOX] {
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap();
        let exact =
            tag.starts_with("RELEASE.") || tag.trim_start_matches('v').split('-').next().unwrap().split('.').filter(|p| p.parse::<u32>().is_ok()).count() == 3;
        assert!(exact, "{image} is not an exact release");
    }
    let schema = kdeploy_provider::schema(Kind::Broker, "rabbitmq").unwrap();
    assert_eq!(schema.attr("version").unwrap().default, Some(s(images::RABBITMQ.trim_start_matches("rabbitmq:"))), "the version default is the pin");
}
