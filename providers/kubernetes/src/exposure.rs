//! How a served component (Vault, Factory) is reached from outside its cluster: through an
//! Ingress when `ingress_host` is set, else by its `service_type`: a NodePort on the cluster's address (known once the cluster's API server
//! address is), the address a load-balancer implementation gives its LoadBalancer Service
//! (known only once apply has it: kdeploy waits for it), or not at all (ClusterIP).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kdeploy_provider::addr::Address;
use kdeploy_provider::{ErrorKind, ProviderError, Value};
use serde_json::Value as Json;

use crate::api::{Conn, path};

/// How often a pending LoadBalancer Service is read again.
const POLL: Duration = Duration::from_millis(500);

/// A component's exposure, from its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// `ingress_host` set (whatever the Service's type).
    Ingress,
    NodePort,
    LoadBalancer,
    ClusterIp,
}

impl Exposure {
    pub fn of(attrs: &BTreeMap<String, Value>) -> Exposure {
        if ingress_host(attrs).is_some() {
            return Exposure::Ingress;
        }
        match attrs.get("service_type").and_then(Value::as_str) {
            Some("LoadBalancer") => Exposure::LoadBalancer,
            Some("ClusterIP") => Exposure::ClusterIp,
            _ => Exposure::NodePort,
        }
    }
}

/// The URL from outside the cluster (without path), as far as a plan can tell: `None` when the
/// component is not exposed, unknown while the address is (a cluster not yet created, a
/// LoadBalancer not yet given an address). A LoadBalancer keeps the URL its previous apply
/// found (`previous`; the plan drops it when the exposure itself changed).
pub fn outside_url(attrs: &BTreeMap<String, Value>, cluster: &BTreeMap<String, Value>, address: &Address, previous: Option<&Value>) -> Option<Value> {
    let unknown = || Value::Unknown(format!("{address}.url"));
    match Exposure::of(attrs) {
        Exposure::Ingress => {
            let tls = ["ingress_tls_secret", "cert_issuer"].iter().any(|k| attrs.get(*k).and_then(Value::as_str).is_some_and(|v| !v.is_empty()));
            Some(Value::String(format!("{}://{}", if tls { "https" } else { "http" }, ingress_host(attrs).unwrap_or_default())))
        }
        Exposure::ClusterIp => None,
        Exposure::NodePort => Some(match (attrs.get("node_port").and_then(Value::as_i64), cluster.get("server")) {
            (Some(port), Some(Value::String(server))) => Value::String(format!("http://{}:{port}", server_host(server))),
            (Some(_), Some(Value::Unknown(_))) => unknown(),
            // A cluster without an address (none recorded): not reachable by URL.
            _ => return None,
        }),
        Exposure::LoadBalancer => Some(match previous {
            Some(Value::String(url)) => Value::String(url.clone()),
            _ => unknown(),
        }),
    }
}

/// The `tcp://` and `ws://` URIs of an MQTT broker from outside its cluster: its node ports on
/// the cluster's address, the address its LoadBalancer was given (kept from the apply that found
/// it), or null when it is not exposed (ClusterIP). Unknown while the address is.
pub fn outside_mqtt(attrs: &BTreeMap<String, Value>, cluster: &BTreeMap<String, Value>, address: &Address) -> (Value, Value) {
    use kdeploy_provider::components::mqtt::{MQTT_PORT, WEBSOCKET_PORT};
    let node_port = |k: &str| attrs.get(k).and_then(Value::as_i64);
    let unknown = |k: &str| Value::Unknown(format!("{address}.{k}"));
    match (Exposure::of(attrs), cluster.get("server")) {
        (Exposure::NodePort, Some(Value::String(server))) => {
            let host = server_host(server);
            let uri = |scheme: &str, k: &str| node_port(k).map(|p| Value::String(format!("{scheme}://{host}:{p}"))).unwrap_or(Value::Null);
            (uri("tcp", "node_port"), uri("ws", "websocket_node_port"))
        }
        (Exposure::NodePort, Some(Value::Unknown(_))) => (unknown("external_uri"), unknown("external_websocket_uri")),
        (Exposure::LoadBalancer, _) => match attrs.get("external_uri") {
            Some(Value::String(previous)) => {
                let host = server_host(previous);
                (Value::String(format!("tcp://{host}:{MQTT_PORT}")), Value::String(format!("ws://{host}:{WEBSOCKET_PORT}")))
            }
            _ => (unknown("external_uri"), unknown("external_websocket_uri")),
        },
        _ => (Value::Null, Value::Null),
    }
}

/// The `turn:` URI of a TURN server from outside its cluster, as [`outside_mqtt`].
pub fn outside_turn(attrs: &BTreeMap<String, Value>, cluster: &BTreeMap<String, Value>, address: &Address) -> Value {
    use kdeploy_provider::components::turn::{self, TURN_PORT};
    match (Exposure::of(attrs), cluster.get("server"), attrs.get("node_port").and_then(Value::as_i64)) {
        (Exposure::NodePort, Some(Value::String(server)), Some(port)) => Value::String(turn::uri(&server_host(server), port)),
        (Exposure::NodePort, Some(Value::Unknown(_)), _) => Value::Unknown(format!("{address}.external_uri")),
        (Exposure::LoadBalancer, _, _) => match attrs.get("external_uri") {
            Some(Value::String(previous)) => {
                let host = previous.trim_start_matches("turn:").split(':').next().unwrap_or_default();
                Value::String(turn::uri(host, TURN_PORT))
            }
            _ => Value::Unknown(format!("{address}.external_uri")),
        },
        _ => Value::Null,
    }
}

/// The host of the component's Ingress, when it has one.
pub fn ingress_host(attrs: &BTreeMap<String, Value>) -> Option<&str> {
    attrs.get("ingress_host").and_then(Value::as_str).filter(|h| !h.is_empty())
}

/// Host of the API server URL, for NodePort URLs.
pub fn server_host(server: &str) -> String {
    let rest = server.split_once("://").map(|(_, r)| r).unwrap_or(server);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    host.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_else(|| host.to_string())
}

/// What to change when a component's LoadBalancer Service gets no address.
pub const SERVICE_TYPE_FIX: &str = "set service_type = \"NodePort\" (reached on the cluster's node address)";

/// The URL of a LoadBalancer Service once a load-balancer implementation gave it an address:
/// from the answer to its write when it already has one, else read until it has one or
/// `timeout` passes. The error says why an address may never come.
pub async fn balancer_url(conn: &Conn, applied: &[Json], timeout: Duration, address: &Address) -> Result<String, ProviderError> {
    let Some(service) = applied.iter().find(|o| is_balancer(o)) else {
        return Err(ProviderError::other(format!("{address}: service_type is LoadBalancer but no such Service was written")));
    };
    service_url(conn, service, Instant::now() + timeout, timeout, SERVICE_TYPE_FIX).await
}

/// Waits until every LoadBalancer Service among `applied` (a chart's: Hub's in mode `all`, an
/// ingress controller's) has an address, so that one that would stay pending fails the apply
/// with what to install instead of leaving an unreachable component; `fix` says what else to
/// change.
pub async fn balancers_ready(conn: &Conn, applied: &[Json], timeout: Duration, fix: &str) -> Result<(), ProviderError> {
    let deadline = Instant::now() + timeout;
    for service in applied.iter().filter(|o| is_balancer(o)) {
        service_url(conn, service, deadline, timeout, fix).await?;
    }
    Ok(())
}

fn is_balancer(o: &Json) -> bool {
    o["kind"] == "Service" && o["spec"]["type"] == "LoadBalancer"
}

async fn service_url(conn: &Conn, service: &Json, deadline: Instant, timeout: Duration, fix: &str) -> Result<String, ProviderError> {
    let port = service["spec"]["ports"][0]["port"].as_i64().unwrap_or(80);
    let name = service["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let ns = service["metadata"]["namespace"].as_str().map(str::to_string);
    let url = |svc: &Json| balancer_host(svc).map(|host| format!("http://{host}:{port}"));
    if let Some(u) = url(service) {
        return Ok(u);
    }
    let at = path("v1", "Service", ns.as_deref(), Some(&name));
    while Instant::now() < deadline {
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
        let svc = conn.get(&at).await.map_err(|e| e.into_provider(&format!("reading Service {name}"), conn))?;
        match svc {
            Some(svc) => {
                if let Some(u) = url(&svc) {
                    return Ok(u);
                }
            }
            None => return Err(ProviderError::other(format!("Service {name} was deleted while waiting for its load-balancer address"))),
        }
    }
    let support = crate::balancer::judge(&crate::balancer::gather(conn).await);
    Err(ProviderError::new(ErrorKind::Timeout, pending_message(&name, ns.as_deref().unwrap_or("default"), timeout, fix, &support)))
}

/// Why a LoadBalancer Service has no address, as far as the cluster tells, and what to do.
fn pending_message(name: &str, ns: &str, timeout: Duration, fix: &str, support: &crate::balancer::Support) -> String {
    use crate::balancer::Support;
    let why = match support {
        Support::Absent(why) => why.clone(),
        Support::Present(sign) => format!("the cluster seems to have a load-balancer implementation ({sign}), but it gave none: its address pool may be exhausted, or its controller is not running"),
        Support::Unknown => "the cluster has no load-balancer implementation (a cloud controller, or MetalLB: `microk8s enable metallb:RANGE` on MicroK8s), or its address pool is exhausted".into(),
    };
    format!(
        "Service {ns}/{name} of type LoadBalancer got no address within {}s: {why}. Install one, raise readiness_timeout, or {fix}; `kubectl -n {ns} describe service {name}` shows its events",
        timeout.as_secs()
    )
}

/// `status.loadBalancer.ingress[0]`: its IP, else its host name.
fn balancer_host(svc: &Json) -> Option<String> {
    let first = svc.pointer("/status/loadBalancer/ingress/0")?;
    first["ip"]
        .as_str()
        .or_else(|| first["hostname"].as_str())
        .filter(|h| !h.is_empty())
        .map(|h| if h.contains(':') { format!("[{h}]") } else { h.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn addr() -> Address {
        "vault.main".parse().unwrap()
    }

    #[test]
    fn a_node_port_is_reached_on_the_clusters_host_once_it_is_known() {
        let a = attrs(&[("service_type", Value::string("NodePort")), ("node_port", Value::from_i64(30080))]);
        let known = attrs(&[("server", Value::string("https://10.0.0.5:16443"))]);
        assert_eq!(outside_url(&a, &known, &addr(), None), Some(Value::string("http://10.0.0.5:30080")));
        let pending = attrs(&[("server", Value::Unknown("cluster.c.server".into()))]);
        assert!(matches!(outside_url(&a, &pending, &addr(), None), Some(Value::Unknown(_))));
    }

    #[test]
    fn a_load_balancer_is_unknown_until_an_apply_found_its_address_and_cluster_ip_is_not_exposed() {
        let lb = attrs(&[("service_type", Value::string("LoadBalancer"))]);
        let cluster = attrs(&[("server", Value::string("https://10.0.0.5:6443"))]);
        assert!(matches!(outside_url(&lb, &cluster, &addr(), None), Some(Value::Unknown(_))));
        let prev = Value::string("http://192.0.2.10:80");
        assert_eq!(outside_url(&lb, &cluster, &addr(), Some(&prev)), Some(prev.clone()));
        let internal = attrs(&[("service_type", Value::string("ClusterIP"))]);
        assert_eq!(outside_url(&internal, &cluster, &addr(), Some(&prev)), None);
    }

    #[test]
    fn an_ingress_host_comes_first_with_https_when_it_has_a_certificate() {
        let cluster = attrs(&[("server", Value::string("https://10.0.0.5:6443"))]);
        let plain = attrs(&[("service_type", Value::string("LoadBalancer")), ("ingress_host", Value::string("vault.example.com"))]);
        assert_eq!(outside_url(&plain, &cluster, &addr(), None), Some(Value::string("http://vault.example.com")));
        let mut tls = plain.clone();
        tls.insert("cert_issuer".into(), Value::string("letsencrypt"));
        assert_eq!(outside_url(&tls, &cluster, &addr(), None), Some(Value::string("https://vault.example.com")));
    }

    #[test]
    fn an_mqtt_broker_is_reached_on_its_node_ports_or_its_balancers_address() {
        let a = attrs(&[("service_type", Value::string("NodePort")), ("node_port", Value::from_i64(31883)), ("websocket_node_port", Value::from_i64(31080))]);
        let cluster = attrs(&[("server", Value::string("https://10.0.0.5:16443"))]);
        assert_eq!(outside_mqtt(&a, &cluster, &addr()), (Value::string("tcp://10.0.0.5:31883"), Value::string("ws://10.0.0.5:31080")));
        let pending = attrs(&[("server", Value::Unknown("cluster.c.server".into()))]);
        assert!(outside_mqtt(&a, &pending, &addr()).0.is_unknown());
        let mut lb = attrs(&[("service_type", Value::string("LoadBalancer"))]);
        assert!(outside_mqtt(&lb, &cluster, &addr()).1.is_unknown(), "until apply finds the address");
        lb.insert("external_uri".into(), Value::string("tcp://192.0.2.7:1883"));
        assert_eq!(outside_mqtt(&lb, &cluster, &addr()), (Value::string("tcp://192.0.2.7:1883"), Value::string("ws://192.0.2.7:8080")));
        let internal = attrs(&[("service_type", Value::string("ClusterIP"))]);
        assert_eq!(outside_mqtt(&internal, &cluster, &addr()), (Value::Null, Value::Null));
    }

    #[test]
    fn a_pending_balancer_is_explained_by_what_the_cluster_shows() {
        use crate::balancer::Support;
        let t = Duration::from_secs(3);
        let absent = pending_message("v", "ns", t, "do X", &Support::Absent("MetalLB is installed but has no IPAddressPool".into()));
        assert!(absent.starts_with("Service ns/v of type LoadBalancer got no address within 3s: MetalLB is installed but has no IPAddressPool. "), "{absent}");
        assert!(absent.contains("or do X; `kubectl -n ns describe service v`"), "{absent}");
        let present = pending_message("v", "ns", t, "do X", &Support::Present("its nodes are run by the aws cloud controller".into()));
        assert!(
            present.contains("seems to have a load-balancer implementation (its nodes are run by the aws cloud controller), but it gave none"),
            "{present}"
        );
        let unknown = pending_message("v", "ns", t, "do X", &Support::Unknown);
        assert!(unknown.contains("no load-balancer implementation") && unknown.contains("microk8s enable metallb"), "{unknown}");
    }

    #[test]
    fn the_balancer_ip_is_preferred_to_its_host_name_and_ipv6_is_bracketed() {
        assert_eq!(
            balancer_host(&json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1", "hostname": "a.example"}]}}})).as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(
            balancer_host(&json!({"status": {"loadBalancer": {"ingress": [{"hostname": "a.elb.amazonaws.com"}]}}})).as_deref(),
            Some("a.elb.amazonaws.com")
        );
        assert_eq!(balancer_host(&json!({"status": {"loadBalancer": {"ingress": [{"ip": "2001:db8::1"}]}}})).as_deref(), Some("[2001:db8::1]"));
        assert_eq!(balancer_host(&json!({"status": {"loadBalancer": {}}})), None);
    }
}
