//! Golden JSON of the three variables for every storage type and queue broker type, and the
//! naming checks.

use super::*;
use crate::provider::ComponentRef;

fn attrs(pairs: &[(&str, Value)]) -> Attrs {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn s(v: &str) -> Value {
    Value::string(v)
}

fn reference(address: &str, kind: Kind, type_name: &str, pairs: &[(&str, Value)]) -> Reference {
    Reference { component: ComponentRef { address: address.parse().unwrap(), kind, type_name: type_name.into() }, attributes: Value::Map(attrs(pairs)).into() }
}

use crate::schema::Kind;

fn vault(extra: &[(&str, Value)]) -> Attrs {
    let mut a = attrs(&[("storage", s("object_storage.rec")), ("account", s("kdeploy")), ("directory", s("*")), ("retention_days", Value::from_i64(30))]);
    for (k, v) in extra {
        a.insert(k.to_string(), v.clone());
    }
    // Keys as apply generates them, deterministic for the golden text.
    let mut n = 0;
    fill_accounts("vault.main", &mut a, &mut |k| {
        n += 1;
        Some(format!("{k}-{n}"))
    });
    a
}

fn minio() -> Reference {
    reference(
        "object_storage.rec",
        Kind::ObjectStorage,
        "minio",
        &[("bucket", s("recordings")), ("region", s("na")), ("endpoint", s("object-storage-rec.minio:9000")), ("access_key", s("AK")), ("secret_key", s("SK"))],
    )
}

fn env_of(a: &Attrs, refs: &BTreeMap<String, Reference>) -> BTreeMap<&'static str, String> {
    resolve(a, refs).unwrap().env().into_iter().collect()
}

#[test]
fn minio_storage_and_default_account() {
    let refs: BTreeMap<String, Reference> = [("storage".to_string(), minio())].into();
    let env = env_of(&vault(&[]), &refs);
    assert_eq!(
        env[PROVIDERS_VAR],
        r#"[{"name":"rec","provider":"minio","bucket":"recordings","region":"na","host":"object-storage-rec.minio:9000","access_key":"AK","secret":"SK","use_ssl":"false"}]"#
    );
    assert_eq!(env[INTEGRATIONS_VAR], "[]");
    assert_eq!(
        env[ACCOUNTS_VAR],
        r#"[{"account":"kdeploy","directory":"*","provider":"rec","access_key":"access_key-1","secret_access_key":"secret_key-2","limit":"30","enabled":"true"}]"#
    );
}

#[test]
fn every_storage_type() {
    let cases: Vec<(Reference, &str)> = vec![
        (
            reference(
                "object_storage.ext",
                Kind::ObjectStorage,
                "external",
                &[
                    ("bucket", s("b")),
                    ("region", s("eu-1")),
                    ("endpoint", s("ceph.example.com:7480")),
                    ("access_key", s("AK")),
                    ("secret_key", s("SK")),
                    ("use_ssl", Value::Bool(true)),
                ],
            ),
            r#"[{"name":"ext","provider":"minio","bucket":"b","region":"eu-1","host":"ceph.example.com:7480","access_key":"AK","secret":"SK","use_ssl":"true"}]"#,
        ),
        (
            reference(
                "object_storage.s3",
                Kind::ObjectStorage,
                "s3",
                &[("bucket", s("b")), ("region", Value::Null), ("bucket_region", s("eu-west-1")), ("access_key", s("AK")), ("secret_key", s("SK"))],
            ),
            r#"[{"name":"s3","provider":"aws","bucket":"b","region":"eu-west-1","access_key":"AK","secret":"SK"}]"#,
        ),
        (
            reference(
                "object_storage.blob",
                Kind::ObjectStorage,
                "azure_blob",
                &[("account_name", s("acct")), ("container", s("recordings")), ("access_key", s("acct")), ("secret_key", s("KEY=="))],
            ),
            r#"[{"name":"blob","provider":"azure","account_name":"acct","account_key":"KEY==","container_name":"recordings"}]"#,
        ),
        (
            reference("object_storage.gcs", Kind::ObjectStorage, "gcs", &[("bucket", s("b")), ("access_key", s("GOOG1")), ("secret_key", s("hmac"))]),
            r#"[{"name":"gcs","provider":"minio","bucket":"b","region":"auto","host":"storage.googleapis.com:443","access_key":"GOOG1","secret":"hmac","use_ssl":"true"}]"#,
        ),
        (
            reference(
                "object_storage.gcs",
                Kind::ObjectStorage,
                "gcs",
                &[("bucket", s("b")), ("access_key", s("GOOG1")), ("secret_key", s("hmac")), ("service_account_key", s("{\"type\":\"service_account\"}"))],
            ),
            r#"[{"name":"gcs","provider":"gcp","bucket":"b","serviceKey":"{\"type\":\"service_account\"}"}]"#,
        ),
    ];
    for (storage, want) in cases {
        let a = vault(&[("storage", s(&storage.component.address.to_string()))]);
        let refs: BTreeMap<String, Reference> = [("storage".to_string(), storage.clone())].into();
        let env = env_of(&a, &refs);
        assert_eq!(env[PROVIDERS_VAR], want, "{}", storage.component.type_name);
        // The default account stores into the storage's provider.
        let accounts: serde_json::Value = serde_json::from_str(&env[ACCOUNTS_VAR]).unwrap();
        assert_eq!(accounts[0]["provider"], storage.component.address.instance_name());
    }
}

#[test]
fn every_queue_broker_type() {
    let rabbit = reference(
        "broker.events",
        Kind::Broker,
        "rabbitmq",
        &[
            ("host", s("broker-events.rabbitmq")),
            ("port", Value::from_i64(5672)),
            ("queue", s("data-filtering")),
            ("username", s("kerberos")),
            ("admin_password", s("PW")),
        ],
    );
    let kafka = reference(
        "broker.stream",
        Kind::Broker,
        "kafka",
        &[("brokers", s("broker-stream.kafka:9092")), ("topic", s("kcloud-event-queue")), ("username", s("kerberos")), ("admin_password", s("PW"))],
    );
    let ext_amqp = reference(
        "broker.ext",
        Kind::Broker,
        "external",
        &[("host", s("mq.example.com:5672")), ("protocol", s("amqp")), ("queue", s("q")), ("username", s("u")), ("password", s("p"))],
    );
    let ext_kafka = reference(
        "broker.ext",
        Kind::Broker,
        "external",
        &[("host", s("k.example.com:9094")), ("protocol", s("kafka")), ("queue", s("t")), ("username", s("u")), ("password", s("p"))],
    );
    let mqtt = reference("broker.live", Kind::Broker, "vernemq", &[("uri", s("tcp://broker-live.vernemq:1883"))]);
    let ext_mqtt = reference("broker.ext", Kind::Broker, "external", &[("host", s("mqtt.example.com:1883")), ("protocol", s("mqtt"))]);
    let cases = [
        (
            rabbit,
            r#"[{"name":"events","queue":"rabbitmq","broker":"amqp://broker-events.rabbitmq:5672","topic":"data-filtering","username":"kerberos","password":"PW"}]"#,
        ),
        (
            kafka,
            r#"[{"name":"stream","queue":"kafka","broker":"broker-stream.kafka:9092","group":"kerberos-vault","topic":"kcloud-event-queue","username":"kerberos","password":"PW","mechanism":"PLAIN","security":"SASL_PLAINTEXT"}]"#,
        ),
        (ext_amqp, r#"[{"name":"ext","queue":"rabbitmq","broker":"amqp://mq.example.com:5672","topic":"q","username":"u","password":"p"}]"#),
        (
            ext_kafka,
            r#"[{"name":"ext","queue":"kafka","broker":"k.example.com:9094","group":"kerberos-vault","topic":"t","username":"u","password":"p","mechanism":"PLAIN","security":"SASL_PLAINTEXT"}]"#,
        ),
        (mqtt, "[]"),
        (ext_mqtt, "[]"),
    ];
    for (broker, want) in cases {
        let a = vault(&[("broker", s(&broker.component.address.to_string()))]);
        let refs: BTreeMap<String, Reference> = [("storage".to_string(), minio()), ("broker".to_string(), broker.clone())].into();
        let env = env_of(&a, &refs);
        assert_eq!(env[INTEGRATIONS_VAR], want, "{} {:?}", broker.component.type_name, broker.attributes);
        let accounts: serde_json::Value = serde_json::from_str(&env[ACCOUNTS_VAR]).unwrap();
        if want == "[]" {
            assert!(accounts[0].get("queues").is_none(), "MQTT brokers are never integrations");
        } else {
            assert_eq!(accounts[0]["queues"], serde_json::json!([broker.component.address.instance_name()]));
        }
    }
}

#[test]
fn an_external_broker_must_say_its_protocol() {
    let ext = reference("broker.ext", Kind::Broker, "external", &[("host", s("mq:5672"))]);
    let a = vault(&[("broker", s("broker.ext"))]);
    let refs: BTreeMap<String, Reference> = [("storage".to_string(), minio()), ("broker".to_string(), ext)].into();
    match resolve(&a, &refs) {
        Err(Unresolved::Invalid(m)) => assert!(m.contains("protocol = \"amqp\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn blocks_extend_the_defaults() {
    let account = |pairs: &[(&str, Value)]| Value::Map(attrs(pairs));
    let a = vault(&[
        ("broker", s("broker.events")),
        (
            "providers",
            Value::Map(
                [(
                    "archive".to_string(),
                    Value::Map(attrs(&[
                        ("type", s("aws")),
                        ("bucket", s("arch")),
                        ("region", s("eu-central-1")),
                        ("access_key", s("A2")),
                        ("secret_key", s("S2")),
                    ])),
                )]
                .into(),
            ),
        ),
        (
            "forwards",
            Value::Map(
                [(
                    "central".to_string(),
                    Value::Map(attrs(&[
                        ("vault_url", s("https://vault.example.com/api")),
                        ("provider", s("cloud")),
                        ("access_key", s("FA")),
                        ("secret_key", s("FS")),
                    ])),
                )]
                .into(),
            ),
        ),
        (
            "accounts",
            Value::Map(
                [
                    (
                        "site-a".to_string(),
                        account(&[
                            ("directory", s("site-a")),
                            ("provider", s("archive")),
                            ("secondary_providers", Value::List(vec![s("rec")])),
                            ("queues", Value::List(vec![s("central")])),
                            ("retention_days", Value::from_i64(7)),
                        ]),
                    ),
                    ("site-b".to_string(), account(&[("access_key", s("given-ak")), ("secret_key", s("given-sk"))])),
                ]
                .into(),
            ),
        ),
    ]);
    assert!(check(&a, None).is_empty(), "{:?}", check(&a, None));
    let rabbit = reference(
        "broker.events",
        Kind::Broker,
        "rabbitmq",
        &[("host", s("rmq")), ("port", Value::from_i64(5672)), ("queue", s("q")), ("username", s("u")), ("admin_password", s("p"))],
    );
    let refs: BTreeMap<String, Reference> = [("storage".to_string(), minio()), ("broker".to_string(), rabbit)].into();
    let env = env_of(&a, &refs);
    assert_eq!(
        env[PROVIDERS_VAR],
        r#"[{"name":"rec","provider":"minio","bucket":"recordings","region":"na","host":"object-storage-rec.minio:9000","access_key":"AK","secret":"SK","use_ssl":"false"},{"name":"archive","provider":"aws","bucket":"arch","region":"eu-central-1","access_key":"A2","secret":"S2"}]"#
    );
    assert_eq!(
        env[INTEGRATIONS_VAR],
        r#"[{"name":"events","queue":"rabbitmq","broker":"amqp://rmq:5672","topic":"q","username":"u","password":"p"},{"name":"central","queue":"kerberosvault","vault_url":"https://vault.example.com/api","provider":"cloud","access_key":"FA","secret":"FS","forward_type":"continuous"}]"#
    );
    let accounts: serde_json::Value = serde_json::from_str(&env[ACCOUNTS_VAR]).unwrap();
    let names: Vec<&str> = accounts.as_array().unwrap().iter().map(|a| a["account"].as_str().unwrap()).collect();
    assert_eq!(names, ["kdeploy", "site-a", "site-b"]);
    assert_eq!(accounts[0]["queues"], serde_json::json!(["events", "central"]), "the default account gets every integration");
    assert_eq!(
        accounts[1],
        serde_json::json!({"account": "site-a", "directory": "site-a", "provider": "archive", "access_key": "access_key-3", "secret_access_key": "secret_key-4", "limit": "7", "enabled": "true", "queues": ["central"], "secondary_providers": ["rec"]})
    );
    assert_eq!(accounts[2]["access_key"], "given-ak");
    assert_eq!(accounts[2]["limit"], "30", "the vault's retention_days is the default");
    for v in env.values() {
        let parsed: serde_json::Value = serde_json::from_str(v).unwrap();
        for item in parsed.as_array().unwrap() {
            for (k, v) in item.as_object().unwrap() {
                assert!(v.is_string() || (v.is_array() && v.as_array().unwrap().iter().all(|x| x.is_string())), "{k} must be a string: {v}");
                assert!(!["id", "type", "environment"].contains(&k.as_str()), "Vault assigns {k}");
            }
        }
    }
}

#[test]
fn keys_are_kept_across_plans_and_generated_once() {
    let mut a = vault(&[]);
    let first = a.get(ACCOUNTS_ATTR).cloned().unwrap();
    // A new account: the existing keys stay, the new one is unknown at plan.
    a.insert("accounts".into(), Value::Map([("new".to_string(), Value::Map(Attrs::new()))].into()));
    fill_accounts("vault.main", &mut a, &mut |_| None);
    let m = a[ACCOUNTS_ATTR].as_map().unwrap();
    assert_eq!(m["kdeploy"], first.as_map().unwrap()["kdeploy"]);
    assert_eq!(m["new"].as_map().unwrap()["access_key"], Value::Unknown("vault.main.vault_accounts[\"new\"].access_key".into()));
    assert!(matches!(resolve(&a, &BTreeMap::new()), Err(Unresolved::Unknown)));
    // A vault recorded by an older kdeploy has only the flat keys: they become the default account's.
    let mut old = attrs(&[("storage", s("object_storage.rec")), ("access_key", s("OLD-AK")), ("secret_key", s("OLD-SK"))]);
    fill_accounts("vault.main", &mut old, &mut |_| Some("new".into()));
    assert_eq!(old[ACCOUNTS_ATTR].as_map().unwrap()["kdeploy"].as_map().unwrap()["access_key"], s("OLD-AK"));
    assert_eq!(old["secret_key"], s("OLD-SK"));
}

#[test]
fn agents_upload_under_a_concrete_directory() {
    let a = vault(&[("accounts", Value::Map([("site-a".to_string(), Value::Map(attrs(&[("directory", s("site-a"))])))].into()))]);
    let agent = attrs(&[("directory", s("edge"))]);
    let up = upload_for(&agent, &a, "vault.main").unwrap();
    assert_eq!(
        (up.account.as_str(), up.directory.as_str(), up.provider.as_str()),
        ("kdeploy", "edge", "rec"),
        "the default account's * means the agent's own folder"
    );
    let agent = attrs(&[("directory", s("edge")), ("account", s("site-a"))]);
    let up = upload_for(&agent, &a, "vault.main").unwrap();
    assert_eq!(up.directory, "site-a");
    assert_eq!(up.access_key, a[ACCOUNTS_ATTR].as_map().unwrap()["site-a"].as_map().unwrap()["access_key"]);
    let agent = attrs(&[("account", s("nope"))]);
    match upload_for(&agent, &a, "vault.main") {
        Err(Unresolved::Invalid(m)) => assert!(m.contains("\"nope\" is not an account of vault.main") && m.contains("\"site-a\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn naming_mistakes_point_at_their_attribute() {
    let a = attrs(&[
        ("storage", s("object_storage.rec")),
        ("broker", s("broker.events")),
        ("directory", s("a b")),
        ("providers", Value::Map([("rec".to_string(), Value::Map(attrs(&[("type", s("aws"))]))), ("both".to_string(), Value::Map(Attrs::new()))].into())),
        (
            "forwards",
            Value::Map(
                [(
                    "events".to_string(),
                    Value::Map(attrs(&[
                        ("forward_type", s("ondemand")),
                        ("vault_url", s("https://v.example.com/api")),
                        ("provider", s("p")),
                        ("access_key", s("a")),
                        ("secret_key", s("s")),
                    ])),
                )]
                .into(),
            ),
        ),
        (
            "accounts",
            Value::Map(
                [(
                    "x".to_string(),
                    Value::Map(attrs(&[
                        ("provider", s("missing")),
                        ("secondary_providers", Value::List(vec![s("gone")])),
                        ("queues", Value::List(vec![s("nope")])),
                        ("directory", s("a/b")),
                    ])),
                )]
                .into(),
            ),
        ),
    ]);
    let problems = check(&a, None);
    let paths: Vec<String> = problems.iter().map(|p| p.path.to_string()).collect();
    assert_eq!(
        paths,
        [
            "providers.both",
            "providers.rec",
            "forwards.events",
            "forwards.events.forward_type",
            "forwards.events.forward_type",
            "directory",
            "accounts.x.provider",
            "accounts.x.secondary_providers",
            "accounts.x.queues",
            "accounts.x.directory",
        ],
        "{problems:#?}"
    );
    assert!(problems[3].message.contains("Hub's URL") && problems[4].message.contains("over MQTT"), "{problems:#?}");
    assert!(problems[6].message.contains("\"missing\"") && problems[6].message.contains("\"both\", \"rec\""), "{}", problems[6].message);
}

/// A central Vault with the accounts "kdeploy" and "north", on `cluster`.
fn central(cluster: &str, external_url: Value) -> Reference {
    let mut a = vault(&[("accounts", Value::Map([("north".to_string(), Value::Map(attrs(&[("directory", s("north"))])))].into()))]);
    a.insert("cluster".into(), s(cluster));
    a.insert("endpoint".into(), s("http://vault-central.kerberos-vault:80/api"));
    a.insert("external_url".into(), external_url);
    a.insert("provider".into(), s("rec"));
    let mut r = reference("vault.central", Kind::Vault, "kerberos", &[]);
    r.attributes = Value::Map(a).into();
    r
}

fn forwarding(cluster: &str, to: Reference) -> (Attrs, BTreeMap<String, Reference>) {
    let forward = Value::Map(attrs(&[("vault", s("vault.central")), ("account", s("north"))]));
    let mut site = vault(&[("forwards", Value::Map([("central".to_string(), forward)].into()))]);
    site.insert("cluster".into(), s(cluster));
    let refs: BTreeMap<String, Reference> = [("storage".to_string(), minio()), ("forwards.central.vault".to_string(), to)].into();
    (site, refs)
}

#[test]
fn a_forward_to_a_vault_of_the_stack_takes_its_url_provider_and_the_accounts_keys() {
    let to = central("cluster.central", s("http://203.0.113.10:80/api"));
    let keys = to.attributes.as_map().unwrap()[ACCOUNTS_ATTR].as_map().unwrap()["north"].as_map().unwrap().clone();
    // From another cluster: the external URL.
    let (site, refs) = forwarding("cluster.north", to.clone());
    let env = env_of(&site, &refs);
    let integrations: serde_json::Value = serde_json::from_str(&env[INTEGRATIONS_VAR]).unwrap();
    assert_eq!(integrations[0]["queue"], "kerberosvault");
    assert_eq!(integrations[0]["vault_url"], "http://203.0.113.10:80/api");
    assert_eq!(integrations[0]["provider"], "rec");
    assert_eq!(integrations[0]["access_key"], keys["access_key"].as_str().unwrap());
    assert_eq!(integrations[0]["secret"], keys["secret_key"].as_str().unwrap());
    // On the same cluster: the in-cluster endpoint.
    let (site, refs) = forwarding("cluster.central", to);
    let integrations: serde_json::Value = serde_json::from_str(&env_of(&site, &refs)[INTEGRATIONS_VAR]).unwrap();
    assert_eq!(integrations[0]["vault_url"], "http://vault-central.kerberos-vault:80/api");
    // Not exposed: an error that says how to expose it; not yet known: unknown, not an error.
    let (site, refs) = forwarding("cluster.north", central("cluster.central", Value::Null));
    match resolve(&site, &refs) {
        Err(Unresolved::Invalid(m)) => assert!(m.contains("is not exposed outside it") && m.contains("LoadBalancer"), "{m}"),
        other => panic!("{other:?}"),
    }
    let (site, refs) = forwarding("cluster.north", central("cluster.central", Value::Unknown("vault.central.external_url".into())));
    assert!(matches!(resolve(&site, &refs), Err(Unresolved::Unknown)));
}

#[test]
fn a_forward_says_where_it_sends() {
    let forward = Value::Map(attrs(&[("vault_url", s("https://v.example.com/api")), ("account", s("north"))]));
    let problems = check(&attrs(&[("forwards", Value::Map([("partner".to_string(), forward)].into()))]), None);
    let text: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
    assert!(text.iter().any(|t| t.contains("says neither which Vault of the stack it sends to nor provider, access_key, secret_key")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("account") && t.contains("names an account but no vault")), "{text:?}");
}

/// A hub on `cluster`, as its provider fills it: endpoint, external URL, key and user name.
fn hub(cluster: &str, hub_key: Value) -> Reference {
    reference(
        "hub.main",
        Kind::Hub,
        "kerberos",
        &[
            ("cluster", s(cluster)),
            ("endpoint", s("http://hub-api-svc.kerberos-hub:8081")),
            ("external_url", s("http://203.0.113.20:32081")),
            ("hub_key", hub_key),
            ("hub_username", s("north")),
        ],
    )
}

fn on_demand(cluster: &str, fields: &[(&str, Value)], hub_ref: Option<Reference>) -> (Attrs, BTreeMap<String, Reference>) {
    let (mut site, mut refs) = forwarding(cluster, central("cluster.central", s("http://203.0.113.10:80/api")));
    let mut forward = attrs(&[("vault", s("vault.central")), ("account", s("north")), ("forward_type", s("ondemand"))]);
    forward.extend(fields.iter().map(|(k, v)| (k.to_string(), v.clone())));
    site.insert("forwards".into(), Value::Map([("central".to_string(), Value::Map(forward))].into()));
    refs.extend(hub_ref.map(|h| ("forwards.central.hub".to_string(), h)));
    (site, refs)
}

fn integration(site: &Attrs, refs: &BTreeMap<String, Reference>) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_str(&env_of(site, refs)[INTEGRATIONS_VAR]).unwrap();
    all[0].clone()
}

#[test]
fn an_on_demand_forward_carries_its_hubs_url_cloud_key_and_user_name() {
    // From another cluster: Hub's external URL; the key and user name Hub was given.
    let (site, refs) = on_demand("cluster.north", &[("hub", s("hub.main"))], Some(hub("cluster.central", s("kdhubkey"))));
    let i = integration(&site, &refs);
    assert_eq!(i["queue"], "kerberosvault");
    assert_eq!(i["forward_type"], "ondemand");
    assert_eq!(i["vault_url"], "http://203.0.113.10:80/api");
    assert_eq!(i["url"], "http://203.0.113.20:32081");
    assert_eq!(i["cloudkey"], "kdhubkey");
    assert_eq!(i["username"], "north");
    // On Hub's cluster: its in-cluster endpoint.
    let (site, refs) = on_demand("cluster.central", &[("hub", s("hub.main"))], Some(hub("cluster.central", s("kdhubkey"))));
    assert_eq!(integration(&site, &refs)["url"], "http://hub-api-svc.kerberos-hub:8081");
    // The literal fields override what the hub gives.
    let (site, refs) =
        on_demand("cluster.north", &[("hub", s("hub.main")), ("hub_url", s("https://api.hub.example.com"))], Some(hub("cluster.central", s("k"))));
    assert_eq!(integration(&site, &refs)["url"], "https://api.hub.example.com");
    // Before Hub is applied its key is unknown, and so is the configuration (not an error).
    let (site, refs) = on_demand("cluster.north", &[("hub", s("hub.main"))], Some(hub("cluster.central", Value::Unknown("hub.main.hub_key".into()))));
    assert!(matches!(resolve(&site, &refs), Err(Unresolved::Unknown)));
}

#[test]
fn an_on_demand_forward_to_a_hub_outside_the_stack_is_given_literally() {
    let fields = [("hub_url", s("https://api.hub.example.com")), ("hub_key", s("AKHUB")), ("hub_username", s("site-a"))];
    let (site, refs) = on_demand("cluster.north", &fields, None);
    let i = integration(&site, &refs);
    assert_eq!(
        i,
        serde_json::json!({
            "name": "central", "queue": "kerberosvault", "vault_url": "http://203.0.113.10:80/api", "provider": "rec",
            "access_key": i["access_key"], "secret": i["secret"],
            "forward_type": "ondemand", "url": "https://api.hub.example.com", "cloudkey": "AKHUB", "username": "site-a",
        })
    );
    // A continuous forward has no Hub fields.
    let (site, refs) = forwarding("cluster.north", central("cluster.central", s("http://203.0.113.10:80/api")));
    let i = integration(&site, &refs);
    assert_eq!(i["forward_type"], "continuous");
    assert!(i.get("cloudkey").is_none() && i.get("url").is_none(), "{i}");
}

#[test]
fn an_on_demand_forward_needs_a_hub_and_a_continuous_one_names_none() {
    let forwards = |m: Attrs| attrs(&[("forwards", Value::Map([("central".to_string(), Value::Map(m))].into())), ("mqtt", s("broker.live"))]);
    let problems = check(&forwards(attrs(&[("vault", s("vault.central")), ("forward_type", s("ondemand")), ("hub_key", s("k"))])), None);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].path.to_string(), "forwards.central.forward_type");
    assert!(problems[0].message.contains("neither hub nor hub_url, hub_username"), "{}", problems[0].message);
    assert!(problems[0].hint.contains("hub = hub.NAME"), "{}", problems[0].hint);
    let ok = check(&forwards(attrs(&[("vault", s("vault.central")), ("forward_type", s("ondemand")), ("hub", s("hub.main"))])), None);
    assert!(ok.is_empty(), "{ok:#?}");
    let problems = check(&forwards(attrs(&[("vault", s("vault.central")), ("forward_type", s("continuous")), ("hub", s("hub.main"))])), None);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].path.to_string(), "forwards.central.hub");
    assert!(problems[0].hint.contains("forward_type = \"ondemand\""), "{}", problems[0].hint);
}

#[test]
fn an_on_demand_forward_needs_the_mqtt_broker_hub_asks_on() {
    let vault = |extra: &[(&str, Value)]| {
        let forward = attrs(&[("vault", s("vault.central")), ("forward_type", s("ondemand")), ("hub", s("hub.main"))]);
        let mut a = attrs(&[("forwards", Value::Map([("central".to_string(), Value::Map(forward))].into()))]);
        a.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        a
    };
    for without in [vault(&[]), vault(&[("mqtt", Value::Null), ("mqtt_uri", s(""))])] {
        let problems = check(&without, None);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].path.to_string(), "forwards.central.forward_type");
        assert!(problems[0].message.contains("over MQTT, and the vault has neither mqtt nor mqtt_uri"), "{}", problems[0].message);
        assert!(problems[0].hint.contains("mqtt = broker.NAME"), "{}", problems[0].hint);
    }
    assert!(check(&vault(&[("mqtt", s("broker.live"))]), None).is_empty());
    assert!(check(&vault(&[("mqtt_uri", s("tcp://mqtt.example.com:1883"))]), None).is_empty());
}
