//! The client kdeploy's provider uses: kube-rs 5 + k8s-openapi 0.29.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kdeploy_kube_testserver::{Options, TestServer};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::time::Duration;

const YAML: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "nginx:1.27", ports: [{containerPort: 80}]}
"#;

async fn client(s: &TestServer) -> Client {
    // The workspace also links the AWS SDK (aws-lc-rs): pick one rustls provider, as kdeploy does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::from_yaml(&s.kubeconfig_yaml("kdeploy-test")).unwrap();
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_round_trip() {
    let s = TestServer::start(Options { ready_after: Some(Duration::from_millis(100)), ..Default::default() });
    let c = client(&s).await;
    let v = c.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    let disc = kube::discovery::Discovery::new(c.clone()).run().await.unwrap();
    assert!(disc.groups().any(|g| g.name() == "apps"));

    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_yaml::from_str(YAML).unwrap();
    let created = deps.patch("web", &PatchParams::apply("kdeploy"), &Patch::Apply(&d)).await.unwrap();
    assert_eq!(created.spec.as_ref().unwrap().revision_history_limit, Some(10));
    let again = deps.patch("web", &PatchParams::apply("kdeploy"), &Patch::Apply(&d)).await.unwrap();
    assert_eq!(again.metadata.generation, Some(1));

    let mut d2 = d.clone();
    d2.spec.as_mut().unwrap().replicas = Some(4);
    match deps.patch("web", &PatchParams::apply("other"), &Patch::Apply(&d2)).await {
        Err(kube::Error::Api(st)) => {
            assert_eq!(st.code, 409);
            assert_eq!(st.reason, "Conflict");
            let causes = &st.details.as_ref().unwrap().causes;
            assert_eq!(causes[0].reason, "FieldManagerConflict");
            assert_eq!(causes[0].field, ".spec.replicas");
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    let forced = deps.patch("web", &PatchParams::apply("other").force(), &Patch::Apply(&d2)).await.unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(4));

    // dry run
    let mut dry = PatchParams::apply("kdeploy");
    dry.dry_run = true;
    let mut d3 = d.clone();
    d3.metadata.name = Some("dry".into());
    deps.patch("dry", &dry, &Patch::Apply(&d3)).await.unwrap();
    assert!(deps.get_opt("dry").await.unwrap().is_none());

    // readiness through the controller
    let mut ready = false;
    for _ in 0..100 {
        let d = deps.get("web").await.unwrap();
        let st = d.status.unwrap_or_default();
        if st.observed_generation == d.metadata.generation && st.ready_replicas == Some(4) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready);
    // no-op re-apply (once the controller is quiet) keeps the resourceVersion
    let before = deps.get("web").await.unwrap();
    let again = deps.patch("web", &PatchParams::apply("other").force(), &Patch::Apply(&d2)).await.unwrap();
    assert_eq!(again.metadata.resource_version, before.metadata.resource_version);
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let l = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(l.items.len(), 4);

    // errors
    match deps.get("nope").await {
        Err(kube::Error::Api(st)) => {
            assert_eq!(st.code, 404);
            assert_eq!(st.message, "deployments.apps \"nope\" not found");
        }
        other => panic!("{other:?}"),
    }
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}, "data": {"a": "b"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(matches!(cms.create(&PostParams::default(), &cm).await, Err(kube::Error::Api(st)) if st.code == 409 && st.reason == "AlreadyExists"));

    // watch
    let mut stream = cms.watch(&WatchParams::default().timeout(2), "0").await.unwrap().boxed();
    let ev = stream.next().await.unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Added(ref o) if o.metadata.name.as_deref() == Some("c")));

    // delete
    let res = deps.delete("web", &DeleteParams::background()).await.unwrap();
    assert!(res.is_right());
    assert!(deps.get_opt("web").await.unwrap().is_none());
    let nss: Api<Namespace> = Api::all(c.clone());
    assert!(nss.list(&ListParams::default()).await.unwrap().items.len() >= 4);
}
