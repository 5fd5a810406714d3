//! EKS clusters: the IAM roles, an optional VPC, the control plane and one managed node group.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_eks::types::{AmiTypes, Cluster, ClusterStatus, Nodegroup, NodegroupScalingConfig, NodegroupStatus, VpcConfigRequest};
use kdeploy_provider::{ProviderError, Value};

use crate::clients::{Shared, reported_endpoint};
use crate::network;
use crate::plan::{NODE_GROUP, role_name};
use crate::policy;
use crate::util::{Attrs, TAG_COMPONENT, TAG_MANAGED_BY, b, is_code, list, live_tags, n, s, sdk_err, tag_map, wait_for};

const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const NODE_GROUP_TIMEOUT: Duration = Duration::from_secs(25 * 60);

/// Tags on every AWS object of a cluster: the user's plus kdeploy's.
pub fn aws_tags(planned: &Attrs, address: &str) -> BTreeMap<String, String> {
    let mut t = tag_map(planned, "tags");
    t.insert(TAG_MANAGED_BY.into(), "kdeploy".into());
    t.insert(TAG_COMPONENT.into(), address.into());
    t
}

pub async fn describe_cluster(eks: &aws_sdk_eks::Client, name: &str) -> Result<Option<Cluster>, ProviderError> {
    match eks.describe_cluster().name(name).send().await {
        Ok(o) => Ok(o.cluster.filter(|c| !matches!(c.status(), Some(ClusterStatus::Deleting)))),
        Err(e) if is_code(&e, &["ResourceNotFoundException"]) => Ok(None),
        Err(e) => Err(sdk_err(format!("describing EKS cluster {name}"), e)),
    }
}

pub async fn describe_nodegroup(eks: &aws_sdk_eks::Client, cluster: &str) -> Result<Option<Nodegroup>, ProviderError> {
    match eks.describe_nodegroup().cluster_name(cluster).nodegroup_name(NODE_GROUP).send().await {
        Ok(o) => Ok(o.nodegroup.filter(|g| !matches!(g.status(), Some(NodegroupStatus::Deleting)))),
        Err(e) if is_code(&e, &["ResourceNotFoundException"]) => Ok(None),
        Err(e) => Err(sdk_err(format!("describing node group {NODE_GROUP} of EKS cluster {cluster}"), e)),
    }
}

/// Every cluster name in a region (one paginated ListClusters).
pub async fn list_clusters(eks: &aws_sdk_eks::Client) -> Result<Vec<String>, ProviderError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = eks.list_clusters().set_next_token(token.take()).send().await.map_err(|e| sdk_err("listing EKS clusters", e))?;
        out.extend(page.clusters().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

/// The attributes of a live cluster, in the shape of `recorded`: inputs the stack left unset
/// stay unset, so an unchanged stack plans no changes.
pub fn live_attributes(recorded: &Attrs, cluster: &Cluster, group: Option<&Nodegroup>) -> Attrs {
    let mut m = recorded.clone();
    let set_if_recorded = |m: &mut Attrs, k: &str, v: Value| {
        if recorded.get(k).is_some_and(|r| !r.is_null()) {
            m.insert(k.into(), v);
        }
    };
    if let Some(v) = cluster.version() {
        set_if_recorded(&mut m, "version", Value::string(v));
    }
    if let Some(vpc) = cluster.resources_vpc_config() {
        m.insert("endpoint_public_access".into(), Value::Bool(vpc.endpoint_public_access()));
    }
    let tags = cluster.tags().map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()).unwrap_or_default();
    m.insert("tags".into(), live_tags(tags, recorded.get("tags")));
    let (endpoint, ca) = reported_endpoint(cluster.endpoint(), cluster.certificate_authority().and_then(|c| c.data()));
    m.insert("endpoint".into(), Value::String(endpoint));
    m.insert("certificate_authority".into(), Value::String(ca));
    m.insert("arn".into(), cluster.arn().map(Value::string).unwrap_or_default());
    match group {
        Some(g) => {
            if let Some(sc) = g.scaling_config() {
                for (k, v) in [("min_size", sc.min_size()), ("max_size", sc.max_size()), ("desired_size", sc.desired_size())] {
                    if let Some(v) = v {
                        m.insert(k.into(), Value::from_i64(v.into()));
                    }
                }
            }
            set_if_recorded(&mut m, "instance_types", Value::List(g.instance_types().iter().map(Value::string).collect()));
            if let Some(a) = g.ami_type() {
                set_if_recorded(&mut m, "ami_type", Value::string(a.as_str()));
            }
            m.insert("node_group_arn".into(), g.nodegroup_arn().map(Value::string).unwrap_or_default());
        }
        None => {
            m.insert("node_group_arn".into(), Value::Null);
        }
    }
    m
}

/// Creates a role when absent (adopting one kdeploy made before) and attaches `policies`.
async fn ensure_role(
    iam: &aws_sdk_iam::Client,
    name: &str,
    service: &str,
    policies: &[String],
    tags: &BTreeMap<String, String>,
) -> Result<String, ProviderError> {
    let arn = match iam.get_role().role_name(name).send().await {
        Ok(o) => o.role().map(|r| r.arn().to_string()).unwrap_or_default(),
        Err(e) if is_code(&e, &["NoSuchEntity"]) => {
            let mut req = iam.create_role().role_name(name).assume_role_policy_document(policy::trust(service).to_string()).description("Created by kdeploy");
            for (k, v) in tags {
                req = req.tags(aws_sdk_iam::types::Tag::builder().key(k).value(v).build().map_err(|e| ProviderError::other(e.to_string()))?);
            }
            let o = req.send().await.map_err(|e| sdk_err(format!("creating IAM role {name}"), e))?;
            o.role().map(|r| r.arn().to_string()).unwrap_or_default()
        }
        Err(e) => return Err(sdk_err(format!("reading IAM role {name}"), e)),
    };
    for p in policies {
        iam.attach_role_policy().role_name(name).policy_arn(p).send().await.map_err(|e| sdk_err(format!("attaching {p} to IAM role {name}"), e))?;
    }
    Ok(arn)
}

/// Detaches every policy of a role kdeploy created and deletes it (absent is fine).
async fn delete_role(iam: &aws_sdk_iam::Client, name: &str) -> Result<(), ProviderError> {
    let attached = match iam.list_attached_role_policies().role_name(name).send().await {
        Ok(o) => o.attached_policies().iter().filter_map(|p| p.policy_arn().map(str::to_string)).collect::<Vec<_>>(),
        Err(e) if is_code(&e, &["NoSuchEntity"]) => return Ok(()),
        Err(e) => return Err(sdk_err(format!("listing the policies of IAM role {name}"), e)),
    };
    for p in attached {
        match iam.detach_role_policy().role_name(name).policy_arn(&p).send().await {
            Ok(_) => {}
            Err(e) if is_code(&e, &["NoSuchEntity"]) => {}
            Err(e) => return Err(sdk_err(format!("detaching {p} from IAM role {name}"), e)),
        }
    }
    if let Ok(o) = iam.list_role_policies().role_name(name).send().await {
        for p in o.policy_names() {
            let _ = iam.delete_role_policy().role_name(name).policy_name(p).send().await;
        }
    }
    match iam.delete_role().role_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &["NoSuchEntity"]) => Ok(()),
        Err(e) => Err(sdk_err(format!("deleting IAM role {name}"), e)),
    }
}

async fn wait_cluster_active(eks: &aws_sdk_eks::Client, name: &str) -> Result<Cluster, ProviderError> {
    wait_for(&format!("waiting for EKS cluster {name} to become ACTIVE"), CLUSTER_TIMEOUT, || async {
        match describe_cluster(eks, name).await? {
            Some(c) if matches!(c.status(), Some(ClusterStatus::Active)) => Ok(Some(c)),
            Some(c) if matches!(c.status(), Some(ClusterStatus::Failed)) => {
                Err(ProviderError::other(format!("EKS cluster {name} FAILED to create; see its health in the EKS console, delete it and apply again")))
            }
            Some(_) => Ok(None),
            None => Err(ProviderError::other(format!("EKS cluster {name} disappeared while waiting for it"))),
        }
    })
    .await
}

async fn wait_nodegroup_active(eks: &aws_sdk_eks::Client, cluster: &str) -> Result<Nodegroup, ProviderError> {
    wait_for(&format!("waiting for node group {NODE_GROUP} of EKS cluster {cluster} to become ACTIVE"), NODE_GROUP_TIMEOUT, || async {
        match describe_nodegroup(eks, cluster).await? {
            Some(g) if matches!(g.status(), Some(NodegroupStatus::Active)) => Ok(Some(g)),
            Some(g) if matches!(g.status(), Some(NodegroupStatus::CreateFailed | NodegroupStatus::Degraded)) => {
                let issues: Vec<String> = g.health().map(|h| h.issues().iter().filter_map(|i| i.message().map(str::to_string)).collect()).unwrap_or_default();
                Err(ProviderError::other(format!(
                    "node group {NODE_GROUP} of EKS cluster {cluster} is {}: {}",
                    g.status().map(|s| s.as_str()).unwrap_or("?"),
                    issues.join("; ")
                )))
            }
            Some(_) => Ok(None),
            None => Err(ProviderError::other(format!("node group {NODE_GROUP} of EKS cluster {cluster} disappeared while waiting for it"))),
        }
    })
    .await
}

fn scaling(planned: &Attrs) -> NodegroupScalingConfig {
    let i = |k: &str, d: i64| n(planned, k).unwrap_or(d) as i32;
    NodegroupScalingConfig::builder().min_size(i("min_size", 1)).max_size(i("max_size", 3)).desired_size(i("desired_size", 2)).build()
}

/// Creates or converges the cluster and node group to `planned`; returns the attributes.
pub async fn apply(shared: &Shared, address: &str, planned: &Attrs) -> Result<Attrs, ProviderError> {
    let name = s(planned, "cluster_name").ok_or_else(|| ProviderError::other(format!("{address}: the cluster name is unknown")))?;
    let region = shared.region(s(planned, "cluster_region"), address).await?;
    let (eks, iam, ec2) = (shared.eks(&region).await, shared.iam(&region).await, shared.ec2(&region).await);
    let tags = aws_tags(planned, address);
    let hash_tags: HashMap<String, String> = tags.clone().into_iter().collect();

    let cluster_role = match s(planned, "role_arn") {
        Some(a) => a,
        None => ensure_role(&iam, &role_name(&name, "cluster"), "eks.amazonaws.com", &policy::cluster_policies(&region), &tags).await?,
    };
    let node_role = match s(planned, "node_role_arn") {
        Some(a) => a,
        None => ensure_role(&iam, &role_name(&name, "node"), "ec2.amazonaws.com", &policy::node_policies(&region), &tags).await?,
    };
    let (subnets, vpc_id) = match list(planned, "subnet_ids").filter(|l| !l.is_empty()) {
        Some(l) => (l, None),
        None => {
            let cidr = s(planned, "vpc_cidr").unwrap_or_else(|| "10.20.0.0/16".into());
            let (vpc, subnets) = network::ensure_vpc(&ec2, &name, &cidr, &tags).await?;
            (subnets, Some(vpc))
        }
    };

    let public = b(planned, "endpoint_public_access").unwrap_or(true);
    let mut cluster = match describe_cluster(&eks, &name).await? {
        Some(c) => c,
        None => {
            // A role made a moment ago may not be assumable by EKS yet (IAM is eventually
            // consistent): retry that one error for a minute.
            let mut attempt = 0;
            loop {
                let vpc =
                    VpcConfigRequest::builder().set_subnet_ids(Some(subnets.clone())).endpoint_public_access(public).endpoint_private_access(true).build();
                let r = eks
                    .create_cluster()
                    .name(&name)
                    .set_version(s(planned, "version"))
                    .role_arn(&cluster_role)
                    .resources_vpc_config(vpc)
                    .set_tags(Some(hash_tags.clone()))
                    .send()
                    .await;
                match r {
                    Ok(o) => break o.cluster.ok_or_else(|| ProviderError::other(format!("EKS returned no cluster for {name}")))?,
                    Err(e) if attempt < 6 && is_code(&e, &["InvalidParameterException"]) && format!("{e:?}").contains("ole") => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    Err(e) => return Err(sdk_err(format!("creating EKS cluster {name}"), e)),
                }
            }
        }
    };
    if !matches!(cluster.status(), Some(ClusterStatus::Active)) {
        cluster = wait_cluster_active(&eks, &name).await?;
    }

    // In-place updates EKS allows, one at a time (EKS refuses concurrent updates).
    if let Some(want) = s(planned, "version")
        && cluster.version() != Some(want.as_str())
    {
        eks.update_cluster_version()
            .name(&name)
            .version(&want)
            .send()
            .await
            .map_err(|e| sdk_err(format!("updating EKS cluster {name} to Kubernetes {want}"), e))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster = wait_cluster_active(&eks, &name).await?;
    }
    if cluster.resources_vpc_config().map(|v| v.endpoint_public_access()) != Some(public) {
        let vpc = VpcConfigRequest::builder().endpoint_public_access(public).endpoint_private_access(true).build();
        eks.update_cluster_config()
            .name(&name)
            .resources_vpc_config(vpc)
            .send()
            .await
            .map_err(|e| sdk_err(format!("updating the endpoint access of EKS cluster {name}"), e))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster = wait_cluster_active(&eks, &name).await?;
    }
    let cluster_arn = cluster.arn().unwrap_or_default().to_string();
    sync_tags(&eks, &cluster_arn, cluster.tags(), &hash_tags).await?;

    let mut group = match describe_nodegroup(&eks, &name).await? {
        Some(g) => g,
        None => {
            let mut req = eks
                .create_nodegroup()
                .cluster_name(&name)
                .nodegroup_name(NODE_GROUP)
                .node_role(&node_role)
                .set_subnets(Some(subnets.clone()))
                .set_instance_types(list(planned, "instance_types"))
                .set_version(cluster.version().map(str::to_string))
                .scaling_config(scaling(planned))
                .set_tags(Some(hash_tags.clone()));
            if let Some(a) = s(planned, "ami_type") {
                req = req.ami_type(AmiTypes::from(a.as_str()));
            }
            req.send()
                .await
                .map_err(|e| sdk_err(format!("creating node group {NODE_GROUP} of EKS cluster {name}"), e))?
                .nodegroup
                .ok_or_else(|| ProviderError::other(format!("EKS returned no node group for {name}")))?
        }
    };
    if !matches!(group.status(), Some(NodegroupStatus::Active)) {
        group = wait_nodegroup_active(&eks, &name).await?;
    }
    let want = scaling(planned);
    let live = group.scaling_config();
    if live.map(|l| (l.min_size(), l.max_size(), l.desired_size())) != Some((want.min_size(), want.max_size(), want.desired_size())) {
        eks.update_nodegroup_config()
            .cluster_name(&name)
            .nodegroup_name(NODE_GROUP)
            .scaling_config(want)
            .send()
            .await
            .map_err(|e| sdk_err(format!("scaling node group {NODE_GROUP} of EKS cluster {name}"), e))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        group = wait_nodegroup_active(&eks, &name).await?;
    }
    if let (Some(cv), Some(gv)) = (cluster.version(), group.version())
        && cv != gv
    {
        eks.update_nodegroup_version()
            .cluster_name(&name)
            .nodegroup_name(NODE_GROUP)
            .version(cv)
            .send()
            .await
            .map_err(|e| sdk_err(format!("updating node group {NODE_GROUP} of EKS cluster {name} to Kubernetes {cv}"), e))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        group = wait_nodegroup_active(&eks, &name).await?;
    }
    if let Some(arn) = group.nodegroup_arn() {
        sync_tags(&eks, arn, group.tags(), &hash_tags).await?;
    }

    let mut out = planned.clone();
    let (endpoint, ca) = reported_endpoint(cluster.endpoint(), cluster.certificate_authority().and_then(|c| c.data()));
    out.insert("endpoint".into(), Value::String(endpoint));
    out.insert("certificate_authority".into(), Value::String(ca));
    out.insert("arn".into(), Value::String(cluster_arn));
    out.insert("node_group_arn".into(), group.nodegroup_arn().map(Value::string).unwrap_or_default());
    out.insert("vpc_id".into(), vpc_id.map(Value::String).unwrap_or_default());
    out.insert("cluster_region".into(), Value::String(region));
    out.insert("token_source".into(), Value::string("eks"));
    Ok(out)
}

async fn sync_tags(eks: &aws_sdk_eks::Client, arn: &str, live: Option<&HashMap<String, String>>, want: &HashMap<String, String>) -> Result<(), ProviderError> {
    let empty = HashMap::new();
    let live = live.unwrap_or(&empty);
    let stale: Vec<String> = live.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
    if !stale.is_empty() {
        eks.untag_resource().resource_arn(arn).set_tag_keys(Some(stale)).send().await.map_err(|e| sdk_err(format!("untagging {arn}"), e))?;
    }
    if want.iter().any(|(k, v)| live.get(k) != Some(v)) {
        eks.tag_resource().resource_arn(arn).set_tags(Some(want.clone())).send().await.map_err(|e| sdk_err(format!("tagging {arn}"), e))?;
    }
    Ok(())
}

/// Deletes the node group, the cluster, and the roles and VPC kdeploy created for it.
pub async fn delete(shared: &Shared, address: &str, prior: &Attrs) -> Result<(), ProviderError> {
    let Some(name) = s(prior, "cluster_name").or_else(|| s(prior, "name")) else { return Ok(()) };
    let region = shared.region(s(prior, "cluster_region").or_else(|| s(prior, "region")), address).await?;
    let (eks, iam, ec2) = (shared.eks(&region).await, shared.iam(&region).await, shared.ec2(&region).await);
    if describe_nodegroup(&eks, &name).await?.is_some() {
        match eks.delete_nodegroup().cluster_name(&name).nodegroup_name(NODE_GROUP).send().await {
            Ok(_) => {}
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => {}
            Err(e) => return Err(sdk_err(format!("deleting node group {NODE_GROUP} of EKS cluster {name}"), e)),
        }
        wait_for(&format!("waiting for node group {NODE_GROUP} of EKS cluster {name} to be deleted"), NODE_GROUP_TIMEOUT, || async {
            Ok(describe_nodegroup(&eks, &name).await?.is_none().then_some(()))
        })
        .await?;
    }
    if describe_cluster(&eks, &name).await?.is_some() {
        match eks.delete_cluster().name(&name).send().await {
            Ok(_) => {}
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => {}
            Err(e) => return Err(sdk_err(format!("deleting EKS cluster {name}"), e)),
        }
        wait_for(&format!("waiting for EKS cluster {name} to be deleted"), CLUSTER_TIMEOUT, || async {
            Ok(describe_cluster(&eks, &name).await?.is_none().then_some(()))
        })
        .await?;
    }
    if s(prior, "node_role_arn").is_none() {
        delete_role(&iam, &role_name(&name, "node")).await?;
    }
    if s(prior, "role_arn").is_none() {
        delete_role(&iam, &role_name(&name, "cluster")).await?;
    }
    if !matches!(list(prior, "subnet_ids"), Some(l) if !l.is_empty()) {
        network::delete_vpcs(&ec2, &name).await?;
    }
    Ok(())
}

/// Reads clusters of one region: one ListClusters, then Describe for the ones that exist.
pub async fn read_region(shared: &Shared, region: &str, requests: &[(usize, String, Attrs)]) -> Result<Vec<(usize, Option<Attrs>)>, ProviderError> {
    let eks = shared.eks(region).await;
    let names = list_clusters(&eks).await?;
    let mut out = Vec::new();
    for (i, name, recorded) in requests {
        if !names.contains(name) {
            out.push((*i, None));
            continue;
        }
        let Some(cluster) = describe_cluster(&eks, name).await? else {
            out.push((*i, None));
            continue;
        };
        let group = describe_nodegroup(&eks, name).await?;
        out.push((*i, Some(live_attributes(recorded, &cluster, group.as_ref()))));
    }
    Ok(out)
}
