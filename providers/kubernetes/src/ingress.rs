//! What an Ingress in front of a component (`ingress_host`) needs from its cluster, told at
//! plan: an ingress controller whose IngressClass it uses (`ingress_class`, else the cluster's
//! default class), cert-manager and the ClusterIssuer `cert_issuer` names, the Secret
//! `ingress_tls_secret` names. Without them the Ingress is never served, or serves the
//! controller's default certificate, which agents uploading over HTTPS refuse: kdeploy does
//! not wait for an Ingress, so the plan says so.
//!
//! [`problems`] decides from what [`gather`] read; reads that fail say nothing.

use serde_json::Value as Json;

use crate::api::{Conn, path};

/// cert-manager's cluster-wide issuer kind.
const ISSUER: (&str, &str) = ("cert-manager.io/v1", "ClusterIssuer");

/// What an Ingress asks for: its class, issuer and TLS Secret, and where it lives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    pub host: String,
    pub namespace: String,
    pub class: Option<String>,
    pub issuer: Option<String>,
    pub tls_secret: Option<String>,
}

/// What the cluster has of it; `None` where a read failed (nothing concluded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// The IngressClasses: name, and whether it is the default one.
    pub classes: Option<Vec<(String, bool)>>,
    /// Whether cert-manager's ClusterIssuer kind is served, and the named issuer exists.
    pub issuer: Option<(bool, bool)>,
    /// Whether the named TLS Secret exists.
    pub tls_secret: Option<bool>,
}

impl Wanted {
    /// What a rendered Ingress asks for (a chart's): its class from `spec.ingressClassName` or
    /// the older `kubernetes.io/ingress.class` annotation, cert-manager's `cluster-issuer`
    /// annotation, and its TLS Secret unless that issuer makes it.
    pub fn of_object(o: &Json) -> Option<Wanted> {
        if o["kind"] != "Ingress" {
            return None;
        }
        let text = |v: &Json| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let annotations = &o["metadata"]["annotations"];
        let issuer = text(&annotations["cert-manager.io/cluster-issuer"]);
        Some(Wanted {
            host: text(&o["spec"]["rules"][0]["host"]).unwrap_or_else(|| o["metadata"]["name"].as_str().unwrap_or_default().to_string()),
            namespace: text(&o["metadata"]["namespace"]).unwrap_or_else(|| "default".into()),
            class: text(&o["spec"]["ingressClassName"]).or_else(|| text(&annotations["kubernetes.io/ingress.class"])),
            tls_secret: if issuer.is_some() { None } else { text(&o["spec"]["tls"][0]["secretName"]) },
            issuer,
        })
    }
}

/// One warning per missing piece, each starting with what is missing.
pub fn problems(w: &Wanted, f: &Found) -> Vec<String> {
    let mut out = Vec::new();
    let unserved = format!("the Ingress for {} would not be served, and agents on other clusters could not upload through it", w.host);
    match (&f.classes, &w.class) {
        (Some(classes), _) if classes.is_empty() => out.push(format!(
            "The cluster has no IngressClass (no ingress controller): {unserved}. Install one first (on MicroK8s `microk8s enable ingress`; elsewhere ingress-nginx or Traefik, for instance as a chart component), or expose the component with service_type instead of ingress_host"
        )),
        (Some(classes), Some(class)) if !classes.iter().any(|(n, _)| n == class) => out.push(format!(
            "IngressClass {class:?} does not exist: {unserved}. Set ingress_class to one the cluster has ({})",
            names(classes)
        )),
        (Some(classes), None) if !classes.iter().any(|(_, default)| *default) => out.push(format!(
            "The cluster has no default IngressClass, and ingress_class is not set: {unserved}. Set ingress_class to one of {}, or mark one default (annotation ingressclass.kubernetes.io/is-default-class=true)",
            names(classes)
        )),
        _ => {}
    }
    if let (Some(issuer), Some((served, exists))) = (&w.issuer, f.issuer) {
        if !served {
            out.push(format!(
                "cert-manager is not installed (the cluster does not serve ClusterIssuer, cert-manager.io/v1): nothing would issue the certificate cert_issuer = {issuer:?} asks for, so the Ingress for {} would serve the controller's default certificate, which agents refuse. Install cert-manager with a ClusterIssuer {issuer:?} first (for instance as chart components), or give ingress_tls_secret",
                w.host
            ));
        } else if !exists {
            out.push(format!(
                "ClusterIssuer {issuer:?} does not exist: no certificate would be issued for {}, and agents would refuse the controller's default certificate. Create it, or set cert_issuer to an existing one",
                w.host
            ));
        }
    }
    if let (Some(secret), Some(false)) = (&w.tls_secret, f.tls_secret) {
        out.push(format!(
            "Secret {}/{secret} (ingress_tls_secret) does not exist: the Ingress for {} would serve the controller's default certificate, which agents refuse. Create it before apply (kubectl -n {} create secret tls {secret} --cert=CERT --key=KEY), or use cert_issuer",
            w.namespace, w.host, w.namespace
        ));
    }
    out
}

fn names(classes: &[(String, bool)]) -> String {
    classes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}

/// Reads what [`problems`] decides from; only what `w` asks for is read.
pub async fn gather(conn: &Conn, w: &Wanted) -> Found {
    let classes = conn.list("networking.k8s.io/v1", "IngressClass", None, "").await.ok().map(|list| {
        list.iter()
            .map(|c| {
                let default = c["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"].as_str() == Some("true");
                (c["metadata"]["name"].as_str().unwrap_or_default().to_string(), default)
            })
            .collect()
    });
    let issuer = match &w.issuer {
        None => None,
        Some(name) => match conn.discover(ISSUER.0, ISSUER.1).await {
            Ok(None) => Some((false, false)),
            Ok(Some(_)) => match conn.path_of(ISSUER.0, ISSUER.1, None, Some(name)).await {
                Ok(p) => conn.get(&p).await.ok().map(|o| (true, o.is_some())),
                Err(_) => None,
            },
            Err(_) => None,
        },
    };
    let tls_secret = match &w.tls_secret {
        None => None,
        Some(name) => conn.get(&path("v1", "Secret", Some(&w.namespace), Some(name))).await.ok().map(|o: Option<Json>| o.is_some()),
    };
    Found { classes, issuer, tls_secret }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted() -> Wanted {
        Wanted { host: "vault.example.com".into(), namespace: "kerberos-vault".into(), ..Wanted::default() }
    }

    fn classes(list: &[(&str, bool)]) -> Option<Vec<(String, bool)>> {
        Some(list.iter().map(|(n, d)| (n.to_string(), *d)).collect())
    }

    #[test]
    fn an_ingress_needs_a_controller_and_a_class_it_can_use() {
        let none = problems(&wanted(), &Found { classes: classes(&[]), ..Found::default() });
        assert_eq!(none.len(), 1);
        assert!(
            none[0].starts_with("The cluster has no IngressClass (no ingress controller): the Ingress for vault.example.com would not be served"),
            "{}",
            none[0]
        );
        assert!(none[0].contains("microk8s enable ingress"), "{}", none[0]);
        let no_default = problems(&wanted(), &Found { classes: classes(&[("nginx", false), ("public", false)]), ..Found::default() });
        assert!(no_default[0].contains("no default IngressClass") && no_default[0].contains("one of nginx, public"), "{}", no_default[0]);
        assert!(problems(&wanted(), &Found { classes: classes(&[("public", true)]), ..Found::default() }).is_empty());
        let named = Wanted { class: Some("traefik".into()), ..wanted() };
        let missing = problems(&named, &Found { classes: classes(&[("public", true)]), ..Found::default() });
        assert!(missing[0].starts_with("IngressClass \"traefik\" does not exist") && missing[0].contains("(public)"), "{}", missing[0]);
        assert!(problems(&named, &Found { classes: classes(&[("traefik", false)]), ..Found::default() }).is_empty(), "named: no default needed");
    }

    #[test]
    fn a_certificate_needs_cert_manager_and_its_issuer_or_the_secret() {
        let ok = classes(&[("public", true)]);
        let w = Wanted { issuer: Some("letsencrypt".into()), ..wanted() };
        let no_cm = problems(&w, &Found { classes: ok.clone(), issuer: Some((false, false)), ..Found::default() });
        assert!(no_cm[0].starts_with("cert-manager is not installed"), "{}", no_cm[0]);
        let no_issuer = problems(&w, &Found { classes: ok.clone(), issuer: Some((true, false)), ..Found::default() });
        assert!(no_issuer[0].starts_with("ClusterIssuer \"letsencrypt\" does not exist"), "{}", no_issuer[0]);
        assert!(problems(&w, &Found { classes: ok.clone(), issuer: Some((true, true)), ..Found::default() }).is_empty());
        let tls = Wanted { tls_secret: Some("vault-cert".into()), ..wanted() };
        let no_secret = problems(&tls, &Found { classes: ok.clone(), tls_secret: Some(false), ..Found::default() });
        assert!(no_secret[0].starts_with("Secret kerberos-vault/vault-cert (ingress_tls_secret) does not exist"), "{}", no_secret[0]);
    }

    #[test]
    fn a_rendered_ingress_says_what_it_asks_for() {
        let o = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "hub-api", "namespace": "kerberos-hub", "annotations": {"kubernetes.io/ingress.class": "nginx", "cert-manager.io/cluster-issuer": "le"}},
            "spec": {"rules": [{"host": "api.hub.example.com"}], "tls": [{"hosts": ["api.hub.example.com"], "secretName": "hub-api-tls"}]}});
        let w = Wanted::of_object(&o).expect("an Ingress");
        assert_eq!(
            w,
            Wanted {
                host: "api.hub.example.com".into(),
                namespace: "kerberos-hub".into(),
                class: Some("nginx".into()),
                issuer: Some("le".into()),
                tls_secret: None
            },
            "the issuer makes the Secret"
        );
        let own = serde_json::json!({"kind": "Ingress", "metadata": {"name": "x", "namespace": "n"}, "spec": {"ingressClassName": "public", "tls": [{"secretName": "mine"}]}});
        let w = Wanted::of_object(&own).unwrap();
        assert_eq!((w.host.as_str(), w.class.as_deref(), w.tls_secret.as_deref()), ("x", Some("public"), Some("mine")));
        assert_eq!(Wanted::of_object(&serde_json::json!({"kind": "Service"})), None);
    }

    #[test]
    fn reads_that_failed_say_nothing() {
        let w = Wanted { issuer: Some("x".into()), tls_secret: Some("y".into()), ..wanted() };
        assert!(problems(&w, &Found::default()).is_empty());
    }
}
