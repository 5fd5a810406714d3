//! The AWS provider end to end: the real `kdeploy` binary, run as a child process with AWS_*
//! variables pointing at moto's server (started here on a free port), and for the in-cluster
//! phase at the Kubernetes test API server through the test-only KDEPLOY_TEST_EKS_ENDPOINT.
//! Without `moto_server` the tests are skipped with a printed reason, unless CI is set.
#![cfg(feature = "aws")]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use kdeploy_kube_testserver::{Options, TestServer};
use kdeploy_provider_aws::sdk;

use crate::support::{Out, TestStack, assert_stack_in_cluster, run_binary, stack_on_cloud};

const REGION: &str = "us-east-1";

/// A moto server on a free port, stopped (by its pid) on drop.
pub(crate) struct Moto {
    child: Child,
    pub(crate) url: String,
}

fn find_on_path(exe: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(exe)).find(|f| f.is_file()))
}

impl Moto {
    pub(crate) fn start() -> Option<Moto> {
        let Some(exe) = find_on_path("moto_server") else {
            if std::env::var_os("CI").is_some() {
                panic!("moto_server is not installed (pip install 'moto[server]'); CI is set, so this is a failure");
            }
            eprintln!("skipping: moto_server is not installed (pip install 'moto[server]' to run the AWS tests)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let mut moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited early: {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(60), "moto_server did not listen on {port} within 60s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// SDK configuration for checking what kdeploy made (explicit, no environment).
    async fn conf(&self) -> sdk::config::SdkConfig {
        sdk::config::defaults(sdk::config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(sdk::config::Region::new(REGION))
            .credentials_provider(sdk::credential_types::Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await
    }

    async fn eks(&self) -> sdk::eks::Client {
        sdk::eks::Client::new(&self.conf().await)
    }
    async fn iam(&self) -> sdk::iam::Client {
        sdk::iam::Client::new(&self.conf().await)
    }
    async fn ec2(&self) -> sdk::ec2::Client {
        sdk::ec2::Client::new(&self.conf().await)
    }
    async fn s3(&self) -> sdk::s3::Client {
        sdk::s3::Client::from_conf(sdk::s3::config::Builder::from(&self.conf().await).force_path_style(true).build())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `bucket` on moto.
pub(crate) fn create_bucket(moto: &Moto, bucket: &str) {
    rt().block_on(async { moto.s3().await.create_bucket().bucket(bucket).send().await.unwrap() });
}

/// Every key in `bucket`.
pub(crate) fn object_keys(moto: &Moto, bucket: &str) -> Vec<String> {
    rt().block_on(async {
        let out = moto.s3().await.list_objects_v2().bucket(bucket).send().await.unwrap();
        out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
    })
}

/// Writes `body` at `key` in `bucket`.
pub(crate) fn put_object(moto: &Moto, bucket: &str, key: &str, body: String) {
    rt().block_on(async { moto.s3().await.put_object().bucket(bucket).key(key).body(body.into_bytes().into()).send().await.unwrap() });
}

/// Deletes `key` from `bucket`.
pub(crate) fn delete_object(moto: &Moto, bucket: &str, key: &str) {
    rt().block_on(async { moto.s3().await.delete_object().bucket(bucket).key(key).send().await.unwrap() });
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Runs the real binary in `dir` with static test credentials and the endpoint at moto (no
/// AWS variable of this process reaches it, see [`run_binary`]).
pub(crate) fn kdeploy(dir: &Path, moto_url: &str, extra: &[(&str, &str)], args: &[&str]) -> Out {
    let (config, credentials) = (dir.join("no-aws-config"), dir.join("no-aws-credentials"));
    let (config, credentials) = (config.to_string_lossy(), credentials.to_string_lossy());
    let mut env = vec![
        ("AWS_ENDPOINT_URL", moto_url),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_CONFIG_FILE", &*config),
        ("AWS_SHARED_CREDENTIALS_FILE", &*credentials),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    env.extend_from_slice(extra);
    run_binary(dir, &env, args)
}

fn cloud_stack(name: Option<&str>, desired_size: i64, bucket: &str) -> String {
    let name = name.map(|n| format!("  name           = \"{n}\"\n")).unwrap_or_default();
    format!(
        r#"cluster "cloud" {{
  type           = "eks"
{name}  version        = "1.31"
  instance_types = ["t4g.large"]
  ami_type       = "AL2023_ARM_64_STANDARD"
  min_size       = 1
  max_size       = 4
  desired_size   = {desired_size}
  tags           = {{ team = "video" }}
}}

object_storage "recordings" {{
  type           = "s3"
  bucket         = "{bucket}"
  versioning     = true
  retention_days = 14
}}

output "recordings_endpoint" {{
  value = object_storage.recordings.endpoint
}}
"#
    )
}

async fn role_exists(iam: &sdk::iam::Client, name: &str) -> bool {
    iam.get_role().role_name(name).send().await.is_ok()
}

async fn kdeploy_vpcs(ec2: &sdk::ec2::Client, cluster: &str) -> usize {
    let f = sdk::ec2::types::Filter::builder().name("tag:kdeploy:cluster").values(cluster).build();
    ec2.describe_vpcs().filters(f).send().await.unwrap().vpcs().len()
}

#[test]
fn eks_and_s3_lifecycle_against_moto() {
    let Some(moto) = Moto::start() else { return };
    let rt = rt();
    let s = TestStack::new(&[("main.hcl", &cloud_stack(None, 2, "kdeploy-it-recordings"))]);
    let run = |args: &[&str]| kdeploy(s.path(), &moto.url, &[], args);

    // From empty: cluster, node group, roles, VPC, bucket, user, policy and key.
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Plan: 2 to add, 0 to change, 0 to destroy."), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Apply complete! Resources: 2 added, 0 changed, 0 destroyed."), "{}", r.text());
    assert!(!r.stdout.contains(s.attr("object_storage.recordings", "secret_key").as_str().unwrap()), "the secret key is never printed");
    rt.block_on(async {
        let eks = moto.eks().await;
        let c = eks.describe_cluster().name("cloud").send().await.unwrap().cluster.unwrap();
        assert_eq!(c.version(), Some("1.31"));
        assert_eq!(c.tags().unwrap().get("team").map(String::as_str), Some("video"));
        assert_eq!(c.resources_vpc_config().unwrap().subnet_ids().len(), 2);
        let g = eks.describe_nodegroup().cluster_name("cloud").nodegroup_name("default").send().await.unwrap().nodegroup.unwrap();
        assert_eq!(g.scaling_config().unwrap().desired_size(), Some(2));
        assert_eq!(g.instance_types(), ["t4g.large".to_string()]);
        assert_eq!(g.ami_type().map(|a| a.as_str()), Some("AL2023_ARM_64_STANDARD"));
        let iam = moto.iam().await;
        assert!(role_exists(&iam, "kdeploy-cloud-cluster").await && role_exists(&iam, "kdeploy-cloud-node").await);
        let attached = iam.list_attached_role_policies().role_name("kdeploy-cloud-node").send().await.unwrap();
        assert_eq!(attached.attached_policies().len(), 3);
        assert_eq!(kdeploy_vpcs(&moto.ec2().await, "cloud").await, 1);
        let s3 = moto.s3().await;
        // moto's answer has a root element the SDK does not parse; the status is in the body.
        match s3.get_bucket_versioning().bucket("kdeploy-it-recordings").send().await {
            Ok(v) => assert_eq!(v.status().map(|s| s.as_str()), Some("Enabled")),
            Err(e) => assert!(format!("{e:?}").contains("<Status>Enabled</Status>"), "{e:?}"),
        }
        let lc = s3.get_bucket_lifecycle_configuration().bucket("kdeploy-it-recordings").send().await.unwrap();
        assert_eq!(lc.rules()[0].expiration().unwrap().days(), Some(14));
        assert!(s3.get_bucket_encryption().bucket("kdeploy-it-recordings").send().await.is_ok());
        let pab = s3.get_public_access_block().bucket("kdeploy-it-recordings").send().await.unwrap();
        assert_eq!(pab.public_access_block_configuration().unwrap().block_public_acls(), Some(true));
        let policy = iam.get_user_policy().user_name("kdeploy-kdeploy-it-recordings").policy_name("kdeploy-recordings-bucket").send().await.unwrap();
        let doc = policy.policy_document();
        let doc = if doc.starts_with('%') || doc.contains("%22") {
            doc.replace("%22", "\"").replace("%3A", ":").replace("%2F", "/").replace("%2A", "*")
        } else {
            doc.to_string()
        };
        assert!(doc.contains("arn:aws:s3:::kdeploy-it-recordings/*"), "{doc}");
        let keys = iam.list_access_keys().user_name("kdeploy-kdeploy-it-recordings").send().await.unwrap();
        let ids: Vec<&str> = keys.access_key_metadata().iter().filter_map(|k| k.access_key_id()).collect();
        assert_eq!(ids, vec![s.attr("object_storage.recordings", "access_key").as_str().unwrap()]);
    });
    let st = s.state();
    let storage = st.resources.iter().find(|r| r.address.to_string() == "object_storage.recordings").unwrap();
    assert!(storage.sensitive_paths.iter().any(|p| p.to_string().contains("secret_key")), "{:?}", storage.sensitive_paths);
    assert_eq!(s.attr("cluster.cloud", "token_source"), "eks");
    assert_eq!(s.attr("cluster.cloud", "cluster_name"), "cloud");
    assert_eq!(s.attr("cluster.cloud", "cluster_region"), REGION);
    assert!(s.attr("cluster.cloud", "endpoint").as_str().unwrap().starts_with("https://"));

    // Plan again: no changes.
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("No changes."), "{}", r.text());

    // Node group size: an in-place update.
    s.write("main.hcl", &cloud_stack(None, 3, "kdeploy-it-recordings"));
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Plan: 0 to add, 1 to change, 0 to destroy."), "{}", r.text());
    assert!(!r.stdout.contains("must be replaced"), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("0 added, 1 changed, 0 destroyed"), "{}", r.text());
    rt.block_on(async {
        let g = moto.eks().await.describe_nodegroup().cluster_name("cloud").nodegroup_name("default").send().await.unwrap().nodegroup.unwrap();
        assert_eq!(g.scaling_config().unwrap().desired_size(), Some(3));
    });
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = run(&["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "no false positives right after apply: {}", r.text());

    // Scaled out of band: drift, planned back in place.
    rt.block_on(async {
        let sc = sdk::eks::types::NodegroupScalingConfig::builder().min_size(1).max_size(4).desired_size(1).build();
        moto.eks().await.update_nodegroup_config().cluster_name("cloud").nodegroup_name("default").scaling_config(sc).send().await.unwrap();
    });
    let r = run(&["drift", "--detailed-exitcode", "--json"]);
    assert_eq!(r.code, 2, "{}", r.text());
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["summary"]["drifted"], 1, "{}", r.stdout);
    assert_eq!(j["drift"][0]["address"], "cluster.cloud");
    assert!(j["drift"][0]["attributes"].as_array().unwrap().iter().any(|a| a["path"] == "desired_size" && a["before"] == 3 && a["after"] == 1), "{}", r.stdout);
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("Objects have changed outside of kdeploy"), "{}", r.text());
    assert!(r.stdout.contains("Plan: 0 to add, 1 to change, 0 to destroy."), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());

    // Cluster name: a replacement, shown as such.
    s.write("main.hcl", &cloud_stack(Some("cloud-b"), 3, "kdeploy-it-recordings"));
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("# cluster.cloud must be replaced"), "{}", r.text());
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 1 to destroy."), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    rt.block_on(async {
        let eks = moto.eks().await;
        let names = eks.list_clusters().send().await.unwrap().clusters().to_vec();
        assert_eq!(names, vec!["cloud-b".to_string()]);
        let iam = moto.iam().await;
        assert!(!role_exists(&iam, "kdeploy-cloud-cluster").await, "the old cluster's roles are gone");
        assert!(role_exists(&iam, "kdeploy-cloud-b-node").await);
        let ec2 = moto.ec2().await;
        assert_eq!(kdeploy_vpcs(&ec2, "cloud").await, 0, "the old cluster's VPC is gone");
        assert_eq!(kdeploy_vpcs(&ec2, "cloud-b").await, 1);
    });

    // The bucket deleted out of band: drift, and apply recreates it.
    rt.block_on(async {
        moto.s3().await.delete_bucket().bucket("kdeploy-it-recordings").send().await.unwrap();
    });
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}", r.text());
    assert!(r.stdout.contains("object_storage.recordings has been deleted"), "{}", r.text());
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 0 to destroy."), "{}", r.text());
    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());

    // Destroy: a bucket with recordings is refused without --delete-data.
    rt.block_on(async {
        let body = sdk::s3::primitives::ByteStream::from_static(b"mp4");
        moto.s3().await.put_object().bucket("kdeploy-it-recordings").key("cam/1.mp4").body(body).send().await.unwrap();
    });
    let r = run(&["destroy", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("--delete-data") || r.stdout.contains("--delete-data"), "{}", r.text());
    rt.block_on(async {
        assert!(moto.s3().await.head_bucket().bucket("kdeploy-it-recordings").send().await.is_ok(), "the bucket is kept");
    });
    let r = run(&["destroy", "--auto-approve", "--delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
    rt.block_on(async {
        assert!(moto.eks().await.list_clusters().send().await.unwrap().clusters().is_empty());
        assert!(moto.s3().await.list_buckets().send().await.unwrap().buckets().is_empty());
        let iam = moto.iam().await;
        assert!(iam.list_users().send().await.unwrap().users().is_empty());
        let roles = iam.list_roles().send().await.unwrap();
        assert!(!roles.roles().iter().any(|r| r.role_name().starts_with("kdeploy-")), "{:?}", roles.roles());
        assert_eq!(kdeploy_vpcs(&moto.ec2().await, "cloud-b").await, 0);
    });
    assert!(s.state().resources.is_empty());
}

#[test]
fn missing_credentials_stop_the_plan_before_any_change() {
    let s = TestStack::new(&[("main.hcl", &cloud_stack(None, 2, "kdeploy-it-nocreds"))]);
    // Nothing listens here: the SDK must fail on the missing credentials before any request.
    let r = kdeploy(s.path(), "http://127.0.0.1:9", &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")], &["apply", "--auto-approve"]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("credentials"), "{}", r.text());
    assert!(r.stderr.contains("AWS_PROFILE"), "says how to fix it: {}", r.text());
    assert!(!s.state_path().exists() || s.state().resources.is_empty(), "nothing was applied");
}

fn whole_stack(bucket: &str) -> String {
    stack_on_cloud(
        &format!(
            r#"cluster "cloud" {{
  type    = "eks"
  version = "1.31"
}}

object_storage "recordings" {{
  type           = "s3"
  bucket         = "{bucket}"
  retention_days = var.retention_days
}}
"#
        ),
        "mongodb://kerberos:secret@docdb.example.com:27017/admin",
    )
}

#[test]
fn one_apply_creates_the_cloud_then_the_stack_inside_it() {
    let Some(moto) = Moto::start() else { return };
    let server = TestServer::start(Options::default());
    crate::support::vault_standin(&server, "kerberos-vault", "vault-main", Default::default());
    let url = server.url();
    let s = TestStack::new(&[("main.hcl", &whole_stack("kdeploy-it-whole"))]);
    let env = [("KDEPLOY_TEST_EKS_ENDPOINT", url.as_str())];
    let run = |args: &[&str]| kdeploy(s.path(), &moto.url, &env, args);

    // The cluster does not exist yet: the in-cluster creates are still planned.
    let r = run(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("vault.main") && r.stdout.contains("agent.cam"), "{}", r.text());
    assert!(server.requests().is_empty(), "planning creates did not need the cluster: {:?}", server.requests());

    let r = run(&["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("Apply complete! Resources: 5 added"), "{}", r.text());
    let secret = assert_stack_in_cluster(&server);
    // Vault's storage keys are the bucket user's key.
    let access_key = s.attr("object_storage.recordings", "access_key").as_str().unwrap().to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&access_key);
    let providers = base64::engine::general_purpose::STANDARD.decode(secret["data"]["VAULT_STORAGE_PROVIDERS"].as_str().unwrap()).unwrap();
    let providers: serde_json::Value = serde_json::from_slice(&providers).unwrap();
    assert_eq!(providers[0]["access_key"].as_str(), Some(access_key.as_str()), "{secret}");
    let _ = b64;
    rt().block_on(async {
        let lc = moto.s3().await.get_bucket_lifecycle_configuration().bucket("kdeploy-it-whole").send().await.unwrap();
        assert_eq!(lc.rules()[0].expiration().unwrap().days(), Some(30), "expiration = the Vault retention");
    });

    // Again: no changes, read through the cluster's endpoint with an EKS token.
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("No changes."), "{}", r.text());

    // Destroy: the stack inside the cluster first, then the cloud resources.
    let r = run(&["destroy", "--auto-approve", "--delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(server.object("apps/v1", "Deployment", Some("kerberos-vault"), "vault-main").is_none());
    rt().block_on(async {
        assert!(moto.eks().await.list_clusters().send().await.unwrap().clusters().is_empty());
        assert!(moto.s3().await.list_buckets().send().await.unwrap().buckets().is_empty());
    });
}

/// The example stack itself, applied through moto and the test API server: the cloud, then
/// Vault and the agents inside the new cluster, with Vault's account verified.
#[test]
fn the_example_records_after_one_apply() {
    let Some(moto) = Moto::start() else { return };
    let server = crate::support::managed_cluster();
    crate::support::vault_standin(&server, "kerberos-vault", "vault-main", Default::default());
    let url = server.url();
    let s = crate::support::example("aws-eks");
    let env = [("KDEPLOY_TEST_EKS_ENDPOINT", url.as_str())];
    let region = format!("region={REGION}");
    let run = |cmd: &[&str]| {
        let mut args = cmd.to_vec();
        args.extend(["-var", &region, "-var", "bucket=kdeploy-it-example"]);
        kdeploy(s.path(), &moto.url, &env, &args)
    };
    let r = run(&["apply", "-auto-approve"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("vault.main: account \"kdeploy\" verified (POST /api/ping answered 200"), "{}", r.text());
    let lb = format!("http://{}:80", crate::support::CLOUD_LB_IP);
    assert_eq!(s.attr("vault.main", "url"), lb.as_str(), "Vault's URL is its load balancer's address");
    let env = server.workload_env("apps/v1", "Deployment", "kerberos-vault", "vault-main").unwrap();
    let providers: serde_json::Value = serde_json::from_str(&env["VAULT_STORAGE_PROVIDERS"]).unwrap();
    assert_eq!(providers[0]["provider"], "aws", "{providers}");
    assert_eq!(providers[0]["bucket"], "kdeploy-it-example");
    assert_eq!(env["MONGODB_FLAVOR"], "documentdb");
    assert_eq!(env["MONGODB_RETRY_WRITES"], "false");
    assert_eq!(env["MONGODB_TLS"], "true");
    assert_eq!(run(&["plan", "-detailed-exitcode"]).code, 0);
    let r = run(&["destroy", "-auto-approve", "-delete-data"]);
    assert_eq!(r.code, 0, "{}", r.text());
}
