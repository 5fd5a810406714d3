//! Whether a cluster gives Services of type LoadBalancer an address, told before apply: a
//! LoadBalancer Service on a cluster without a load-balancer implementation (bare metal,
//! MicroK8s without its metallb add-on, kind) stays pending forever, and the component behind
//! it is unreachable. Plans warn, naming what to install, instead of letting apply wait for
//! `readiness_timeout` and fail.
//!
//! [`judge`] decides from what [`gather`] read; kdeploy concludes "none" only when every read
//! succeeded and none shows an implementation, so a cluster it may not inspect is never
//! reported.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use crate::api::{ApiError, Conn};

/// The address pools of the load-balancer implementations kdeploy recognises: (name,
/// apiVersion, kind of the pool). An implementation without a pool gives no address.
pub const POOLS: &[(&str, &str, &str)] = &[
    ("MetalLB", "metallb.io/v1beta1", "IPAddressPool"),
    ("Cilium LB IPAM", "cilium.io/v2", "CiliumLoadBalancerIPPool"),
    ("Cilium LB IPAM", "cilium.io/v2alpha1", "CiliumLoadBalancerIPPool"),
    ("PureLB", "purelb.io/v1", "ServiceGroup"),
    ("OpenELB", "network.kubesphere.io/v1alpha2", "Eip"),
];

/// Node `spec.providerID` schemes of cloud controllers (and k3s' ServiceLB) that implement
/// LoadBalancer Services.
const CLOUDS: &[&str] =
    &["aws", "azure", "gce", "digitalocean", "linode", "hcloud", "openstack", "oci", "ibm", "alicloud", "scaleway", "exoscale", "vultr", "k3s"];

/// ConfigMaps whose presence means an implementation configured without pool objects: MetalLB
/// before 0.13, kube-vip's cloud provider.
pub const CONFIG_MAPS: &[(&str, &str, &str)] = &[("MetalLB", "metallb-system", "config"), ("kube-vip", "kube-system", "kubevip")];

/// What the cluster shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// A LoadBalancer Service that has an address (`namespace/name`).
    pub served: Option<String>,
    /// The providerID schemes of its nodes.
    pub node_providers: BTreeSet<String>,
    /// Implementations installed (their kinds served), with how many pools each has.
    pub pools: Vec<(String, usize)>,
    /// Implementations configured by ConfigMap.
    pub configured: Vec<String>,
    /// A chart of this plan that installs one (its address and the implementation).
    pub installed_by: Option<(String, String)>,
    /// A read was refused or failed: nothing can be concluded.
    pub unreadable: Option<String>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Support {
    /// An implementation is there (why kdeploy thinks so).
    Present(String),
    /// None found: what was looked at, and what to install.
    Absent(String),
    /// kdeploy could not tell.
    Unknown,
}

/// Decides from the facts.
pub fn judge(f: &Facts) -> Support {
    if let Some(service) = &f.served {
        return Support::Present(format!("Service {service} has a load-balancer address"));
    }
    if let Some((chart, name)) = &f.installed_by {
        return Support::Present(format!("{chart} installs {name}"));
    }
    if let Some(cloud) = f.node_providers.iter().find(|p| CLOUDS.contains(&p.as_str())) {
        return Support::Present(format!("its nodes are run by the {cloud} cloud controller"));
    }
    if let Some(name) = f.configured.first() {
        return Support::Present(format!("{name} is configured"));
    }
    if let Some((name, _)) = f.pools.iter().find(|(_, n)| *n > 0) {
        return Support::Present(format!("{name} has an address pool"));
    }
    if f.unreadable.is_some() {
        return Support::Unknown;
    }
    if let Some((name, _)) = f.pools.first() {
        let (_, api_version, kind) = POOLS.iter().find(|(n, _, _)| n == name).copied().unwrap_or_default();
        return Support::Absent(format!(
            "{name} is installed but has no {kind} ({api_version}), so it gives no Service an address: create one with the addresses it may hand out"
        ));
    }
    Support::Absent(
        "the cluster has no load-balancer implementation (no LoadBalancer Service has an address, no node is run by a cloud controller, and no MetalLB, Cilium LB IPAM, PureLB, OpenELB or kube-vip is installed): install one first (on MicroK8s `microk8s enable metallb:FIRST_IP-LAST_IP`; elsewhere MetalLB with an IPAddressPool), for instance with a chart component this component depends on".into(),
    )
}

/// How a warning names the LoadBalancer Services a plan writes: `Service ns/name`, or
/// `Services a, b`.
pub fn named(services: &[String]) -> String {
    match services {
        [one] => format!("Service {one}"),
        many => format!("Services {}", many.join(", ")),
    }
}

/// The warning of a plan that writes LoadBalancer Services (`what`, see [`named`]) where none
/// gets an address; `fix` says what else to change. None when they will get one, or kdeploy
/// cannot tell.
pub fn warning(support: &Support, what: &str, fix: &str) -> Option<String> {
    let Support::Absent(why) = support else { return None };
    Some(format!(
        "{what} of type LoadBalancer would stay pending: {why}. Without one, apply waits readiness_timeout for an address and then fails; alternatively, {fix}"
    ))
}

/// Reads what [`judge`] decides from: every read is a LIST or GET, none writes.
pub async fn gather(conn: &Conn) -> Facts {
    let mut f = Facts::default();
    match conn.list("v1", "Service", None, "").await {
        Ok(services) => f.served = services.iter().find(|s| has_address(s)).map(name_of),
        Err(e) => f.unreadable = Some(failed("Services", e)),
    }
    match conn.list("v1", "Node", None, "").await {
        Ok(nodes) => f.node_providers = nodes.iter().filter_map(|n| n["spec"]["providerID"].as_str()?.split_once("://").map(|(s, _)| s.to_string())).collect(),
        Err(e) => f.unreadable = Some(failed("Nodes", e)),
    }
    for (name, api_version, kind) in POOLS {
        if f.pools.iter().any(|(n, _)| n == name) {
            continue;
        }
        match conn.discover(api_version, kind).await {
            Ok(None) => {}
            Ok(Some(_)) => match conn.list(api_version, kind, None, "").await {
                Ok(pools) => f.pools.push((name.to_string(), pools.len())),
                Err(e) => f.unreadable = Some(failed(kind, e)),
            },
            Err(e) => f.unreadable = Some(failed(kind, e)),
        }
    }
    for (name, ns, cm) in CONFIG_MAPS {
        match conn.get(&crate::api::path("v1", "ConfigMap", Some(ns), Some(cm))).await {
            Ok(Some(_)) => f.configured.push(name.to_string()),
            Ok(None) => {}
            Err(e) => f.unreadable = Some(failed("ConfigMaps", e)),
        }
    }
    f
}

fn failed(what: &str, e: ApiError) -> String {
    format!("{what}: {e:?}")
}

/// What a chart's objects install of a load-balancer implementation: its pool kind's CRD or a
/// pool itself.
pub fn installed_by(objects: &[Json]) -> Option<String> {
    objects.iter().find_map(|o| {
        let (kind, api_version) = (o["kind"].as_str()?, o["apiVersion"].as_str()?);
        POOLS.iter().find_map(|(name, av, k)| {
            let group = av.split('/').next().unwrap_or_default();
            let defines = kind == "CustomResourceDefinition" && o["spec"]["group"] == group && o["spec"]["names"]["kind"] == *k;
            (defines || (kind == *k && api_version == *av)).then(|| name.to_string())
        })
    })
}

fn has_address(s: &Json) -> bool {
    s["spec"]["type"] == "LoadBalancer" && s.pointer("/status/loadBalancer/ingress/0").is_some()
}

fn name_of(o: &Json) -> String {
    format!("{}/{}", o["metadata"]["namespace"].as_str().unwrap_or("default"), o["metadata"]["name"].as_str().unwrap_or_default())
}

/// The `namespace/name` of each Service of type LoadBalancer among `objects`.
pub fn balancers(objects: &[Json]) -> Vec<String> {
    objects.iter().filter(|o| o["kind"] == "Service" && o["spec"]["type"] == "LoadBalancer").map(name_of).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bare_cluster_has_none_and_the_warning_says_what_to_install() {
        let support = judge(&Facts { node_providers: ["kind".to_string()].into(), ..Facts::default() });
        let w = warning(&support, &named(&["kerberos-hub/vault-proxy-svc".into()]), "do X").expect("a warning");
        assert!(
            w.starts_with("Service kerberos-hub/vault-proxy-svc of type LoadBalancer would stay pending: the cluster has no load-balancer implementation"),
            "{w}"
        );
        assert!(w.contains("microk8s enable metallb:") && w.ends_with("alternatively, do X"), "{w}");
        let two = warning(&support, &named(&["a/x".into(), "a/y".into()]), "do X").expect("a warning");
        assert!(two.starts_with("Services a/x, a/y of type LoadBalancer"), "{two}");
    }

    #[test]
    fn any_sign_of_an_implementation_is_enough() {
        let served = Facts { served: Some("ingress/nginx".into()), ..Facts::default() };
        let cloud = Facts { node_providers: ["aws".to_string()].into(), ..Facts::default() };
        let pool = Facts { pools: vec![("MetalLB".into(), 1)], ..Facts::default() };
        let configured = Facts { configured: vec!["kube-vip".into()], ..Facts::default() };
        let chart = Facts { installed_by: Some(("chart.metallb".into(), "MetalLB".into())), ..Facts::default() };
        for f in [served, cloud, pool, configured, chart] {
            assert!(matches!(judge(&f), Support::Present(_)), "{f:?}");
        }
    }

    #[test]
    fn an_implementation_without_a_pool_is_named_with_the_pool_it_needs() {
        let Support::Absent(why) = judge(&Facts { pools: vec![("MetalLB".into(), 0)], ..Facts::default() }) else { panic!("absent") };
        assert!(why.contains("MetalLB is installed but has no IPAddressPool (metallb.io/v1beta1)"), "{why}");
    }

    #[test]
    fn a_cluster_kdeploy_may_not_read_is_never_reported() {
        let f = Facts { unreadable: Some("Nodes: forbidden".into()), ..Facts::default() };
        assert_eq!(judge(&f), Support::Unknown);
        assert_eq!(warning(&judge(&f), "Service a/b", "x"), None);
    }

    #[test]
    fn a_chart_installs_an_implementation_by_its_pool_crd_or_a_pool() {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "spec": {"group": "metallb.io", "names": {"kind": "IPAddressPool"}}});
        assert_eq!(installed_by(&[crd]).as_deref(), Some("MetalLB"));
        let pool = json!({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool", "metadata": {"name": "p"}});
        assert_eq!(installed_by(&[pool]).as_deref(), Some("Cilium LB IPAM"));
        let other = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "spec": {"group": "monitoring.coreos.com", "names": {"kind": "ServiceMonitor"}}});
        assert_eq!(installed_by(&[other]), None);
    }

    #[test]
    fn only_load_balancer_services_are_listed() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"}, "spec": {"type": "LoadBalancer"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "n"}, "spec": {"type": "NodePort"}}),
        ];
        assert_eq!(balancers(&objects), vec!["n/a".to_string()]);
    }
}
