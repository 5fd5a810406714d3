use super::*;

fn attrs(pairs: &[(&str, Value)]) -> Attrs {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn s(v: &str) -> Value {
    Value::string(v)
}

fn cref(address: &str, kind: Kind, type_name: &str) -> ComponentRef {
    ComponentRef { address: address.parse().unwrap(), kind, type_name: type_name.into() }
}

fn reference(address: &str, kind: Kind, type_name: &str, pairs: &[(&str, Value)]) -> Reference {
    Reference { component: cref(address, kind, type_name), attributes: Value::Map(attrs(pairs)).into() }
}

fn vault_attrs() -> Attrs {
    let mut a = attrs(&[
        ("storage", s("object_storage.rec")),
        ("database", s("database.meta")),
        ("login_username", s("root")),
        ("admin_password", s("uipw")),
        ("node_port", Value::from_i64(30080)),
        ("service_type", s("NodePort")),
        ("readiness_timeout", s("1m30s")),
    ]);
    secrets::fill(Kind::Vault, "kerberos", "vault.main", &mut a, &Attrs::new(), true);
    a
}

fn vault_refs(db: Reference) -> BTreeMap<String, Reference> {
    let minio = reference(
        "object_storage.rec",
        Kind::ObjectStorage,
        "minio",
        &[("bucket", s("recordings")), ("region", s("na")), ("endpoint", s("minio:9000")), ("access_key", s("AK")), ("secret_key", s("SK"))],
    );
    [("storage".to_string(), minio), ("database".to_string(), db)].into()
}

fn mongodb_ref() -> Reference {
    reference(
        "database.meta",
        Kind::Database,
        "mongodb",
        &[("host", s("mongo.db")), ("port", Value::from_i64(27017)), ("username", s("root")), ("admin_password", s("dbpw"))],
    )
}

#[test]
fn vault_is_configured_declaratively_and_waits_for_its_database() {
    let a = vault_attrs();
    let refs = vault_refs(mongodb_ref());
    let c = cref("vault.main", Kind::Vault, "kerberos");
    let w = workload(&Spec { component: &c, attrs: &a, refs: &refs, namespace: None }).unwrap();
    for var in [vault::PROVIDERS_VAR, vault::INTEGRATIONS_VAR, vault::ACCOUNTS_VAR] {
        let e = w.env.iter().find(|e| e.name == var).unwrap_or_else(|| panic!("{var}"));
        assert!(e.secret, "{var} carries keys");
        serde_json::from_str::<serde_json::Value>(&e.value).unwrap();
    }
    assert!(w.env.iter().all(|e| !e.name.starts_with("STORAGE_") && !e.name.starts_with("ACCOUNT_")), "variables Vault never reads are gone");
    assert_eq!(w.env_value("MONGODB_HOST"), Some("mongo.db"));
    assert_eq!(w.waits, vec![("mongo.db".to_string(), 27017)]);
    assert_eq!(w.readiness_timeout, Duration::from_secs(90), "Go syntax, the same on every runtime");
    assert_eq!(w.ports, vec![Port::tcp("http", 80, Some(30080))]);
    assert!(w.secret_values().contains(&"dbpw".to_string()) && w.secret_values().contains(&"uipw".to_string()));
}

#[test]
fn an_external_documentdb_gets_tls_and_no_wait_on_srv_hosts() {
    let db = reference(
        "database.ext",
        Kind::Database,
        "external",
        &[("uri", s("mongodb+srv://u:p@cluster0.example.net/?retryWrites=false")), ("flavor", s("documentdb")), ("tls_ca", s("-----BEGIN CERTIFICATE-----"))],
    );
    let a = vault_attrs();
    let refs = vault_refs(db);
    let c = cref("vault.main", Kind::Vault, "kerberos");
    let w = workload(&Spec { component: &c, attrs: &a, refs: &refs, namespace: None }).unwrap();
    assert_eq!(w.env_value("MONGODB_FLAVOR"), Some("documentdb"));
    assert_eq!(w.env_value("MONGODB_RETRY_WRITES"), Some("false"));
    assert_eq!(w.env_value("MONGODB_TLS"), Some("true"));
    assert_eq!(w.env_value("MONGODB_TLS_CA_FILE"), Some("/certs/ca.pem"));
    assert_eq!(w.files, vec![File { path: "/certs/ca.pem".into(), source: FileSource::Inline("-----BEGIN CERTIFICATE-----".into()) }]);
    assert!(w.waits.is_empty(), "an SRV host has no A record to wait on");
    assert!(w.env.iter().any(|e| e.name == "MONGODB_URI" && e.secret));
    assert_eq!(mongodb_wait_target("mongodb://u:p@db1.example.com:27018,db2:27017/admin?tls=true"), Some(("db1.example.com".into(), 27018)));
    assert_eq!(mongodb_wait_target("mongodb://db"), Some(("db".into(), 27017)));
}

#[test]
fn agents_get_their_account_a_concrete_directory_and_a_generated_login() {
    let vault = vault_attrs();
    let mut a = attrs(&[
        ("vault", s("vault.main")),
        ("rtsp_url", s("rtsp://u:p@10.0.0.1/s1")),
        ("directory", s("edge")),
        ("login_username", s("admin")),
        ("persistence", Value::Bool(true)),
        ("storage_size", s("1Gi")),
        ("fs_group", Value::from_i64(2000)),
    ]);
    secrets::fill(Kind::Agent, "kerberos", "agent.cam[\"front\"]", &mut a, &Attrs::new(), true);
    let mut vref = vault.clone();
    vref.insert("endpoint".into(), s("http://vault:80/api"));
    let refs: BTreeMap<String, Reference> =
        [("vault".to_string(), Reference { component: cref("vault.main", Kind::Vault, "kerberos"), attributes: Value::Map(vref).into() })].into();
    let c = cref("agent.cam[\"front\"]", Kind::Agent, "kerberos");
    let w = workload(&Spec { component: &c, attrs: &a, refs: &refs, namespace: None }).unwrap();
    assert_eq!(w.env_value("AGENT_NAME"), Some("front"));
    assert_eq!(w.env_value("AGENT_KERBEROSVAULT_DIRECTORY"), Some("edge"), "never *");
    assert_eq!(w.env_value("AGENT_KERBEROSVAULT_PROVIDER"), Some("rec"));
    assert_eq!(w.env_value("AGENT_KERBEROSVAULT_ACCESS_KEY"), vault["access_key"].as_str());
    assert_eq!(w.env_value("AGENT_USERNAME"), Some("admin"));
    let pw = w.env.iter().find(|e| e.name == "AGENT_PASSWORD").unwrap();
    assert!(pw.secret && pw.value.len() >= 32 && pw.value != "root", "a generated password, not root/root");
    assert_eq!(w.env_value("AGENT_MQTT_URI"), Some(""), "explicit, never the public default");
    assert_eq!(w.security, Security { run_as_user: None, fs_group: Some(2000) });
    assert!(w.seed[0].command[2].contains("chgrp -R 2000 /seed") && !w.seed[0].command[2].contains("100:101"), "{:?}", w.seed);
    assert_eq!(w.seed[0].image, images::AGENT);
    assert_eq!(
        w.mounts.iter().map(|m| (m.path.as_str(), m.volume_suffix())).collect::<Vec<_>>(),
        [("/home/agent/data/config", "config"), ("/home/agent/data/recordings", "recordings")]
    );
    // An account the vault does not have.
    a.insert("account".into(), s("other"));
    match workload(&Spec { component: &c, attrs: &a, refs: &refs, namespace: None }) {
        Err(WorkloadError::Invalid(m)) => assert!(m.contains("\"other\" is not an account of vault.main"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_agent_on_another_cluster_uploads_to_the_external_url_of_vault() {
    let mut a =
        attrs(&[("vault", s("vault.main")), ("rtsp_url", s("rtsp://10.0.0.1/s1")), ("directory", s("north")), ("cluster", s("cluster.site[\"north\"]"))]);
    secrets::fill(Kind::Agent, "kerberos", "agent.cam", &mut a, &Attrs::new(), true);
    let mut vref = vault_attrs();
    vref.insert("endpoint".into(), s("http://vault-main.kerberos-vault:80/api"));
    vref.insert("cluster".into(), s("cluster.central"));
    let c = cref("agent.cam", Kind::Agent, "kerberos");
    let with = |vref: &Attrs| -> BTreeMap<String, Reference> {
        [("vault".to_string(), Reference { component: cref("vault.main", Kind::Vault, "kerberos"), attributes: Value::Map(vref.clone()).into() })].into()
    };
    vref.insert("external_url".into(), s("http://10.1.2.3:30080/api"));
    let w = workload(&Spec { component: &c, attrs: &a, refs: &with(&vref), namespace: None }).unwrap();
    assert_eq!(w.env_value("AGENT_KERBEROSVAULT_URI"), Some("http://10.1.2.3:30080/api"));
    // On Vault's own cluster: its in-cluster endpoint.
    a.insert("cluster".into(), s("cluster.central"));
    let w = workload(&Spec { component: &c, attrs: &a, refs: &with(&vref), namespace: None }).unwrap();
    assert_eq!(w.env_value("AGENT_KERBEROSVAULT_URI"), Some("http://vault-main.kerberos-vault:80/api"));
    // Not exposed: a clear error naming both components and both clusters.
    a.insert("cluster".into(), s("cluster.site[\"north\"]"));
    vref.insert("external_url".into(), Value::Null);
    match workload(&Spec { component: &c, attrs: &a, refs: &with(&vref), namespace: None }) {
        Err(WorkloadError::Invalid(m)) => assert!(
            m.contains("agent.cam runs on cluster.site[\"north\"]") && m.contains("vault.main, which runs on cluster.central") && m.contains("NodePort"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_inputs_leave_the_workload_unknown() {
    let mut a = vault_attrs();
    a.insert(vault::ACCOUNTS_ATTR.into(), Value::Unknown("vault.main.vault_accounts".into()));
    let refs = vault_refs(mongodb_ref());
    let c = cref("vault.main", Kind::Vault, "kerberos");
    assert_eq!(workload(&Spec { component: &c, attrs: &a, refs: &refs, namespace: None }), Err(WorkloadError::Unknown));
}

#[test]
fn minio_creates_its_bucket_and_rabbitmq_its_queue() {
    let a = attrs(&[
        ("bucket", s("recs")),
        ("endpoint", s("minio:9000")),
        ("access_key", s("AK")),
        ("secret_key", s("SKSK")),
        ("region", s("na")),
        ("size", s("10Gi")),
    ]);
    let c = cref("object_storage.rec", Kind::ObjectStorage, "minio");
    let w = workload(&Spec { component: &c, attrs: &a, refs: &BTreeMap::new(), namespace: None }).unwrap();
    assert_eq!(w.env_value("MINIO_REGION"), Some("na"));
    assert_eq!(w.jobs.len(), 1);
    assert_eq!(w.jobs[0].image, images::MINIO_CLIENT);
    assert!(w.jobs[0].command[2].contains("http://minio:9000") && w.jobs[0].command[2].contains("local/recs"));
    let a = attrs(&[("host", s("rmq")), ("queue", s("events")), ("username", s("u")), ("admin_password", s("pwpw"))]);
    let c = cref("broker.q", Kind::Broker, "rabbitmq");
    let w = workload(&Spec { component: &c, attrs: &a, refs: &BTreeMap::new(), namespace: None }).unwrap();
    assert_eq!(w.image, images::RABBITMQ, "the exact pin");
    assert!(w.jobs[0].command[2].contains("name=events"));
}
