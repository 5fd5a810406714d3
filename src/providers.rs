//! The provider registry: which provider implementations this build has, by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use kdeploy_provider::{ExternalProvider, Provider};

/// Providers by name (`docker`, `kubernetes`, `aws`, ... and the data-only `external`).
#[derive(Clone)]
pub struct Providers {
    map: BTreeMap<String, Arc<dyn Provider>>,
}

/// Why a provider is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("this kdeploy build does not include the {name} provider (enable the cargo feature \"{name}\" when building kdeploy)")]
    NotInBuild { name: String },
    #[error("there is no provider named {name:?}")]
    Unknown { name: String },
}

/// Every provider name kdeploy knows, whether or not this build includes it.
pub const KNOWN: &[&str] = &["aws", "azure", "docker", "external", "gcp", "kubernetes"];

impl Providers {
    /// The providers compiled into this build.
    pub fn builtin() -> Providers {
        let mut p = Providers::empty();
        p.insert("external", Arc::new(ExternalProvider));
        #[cfg(feature = "docker")]
        p.insert("docker", Arc::new(kdeploy_provider_docker::DockerProvider::new()));
        #[cfg(feature = "aws")]
        let aws = Arc::new(kdeploy_provider_aws::AwsProvider::new());
        #[cfg(feature = "gcp")]
        let gcp = kdeploy_provider_gcp::GcpProvider::from_env().map(Arc::new);
        // Credentials problems (no subscription, no login) are reported when an Azure
        // component is planned, not at start-up.
        #[cfg(feature = "azure")]
        let azure = Arc::new(kdeploy_provider_azure::AzureProvider::from_env());
        #[cfg(feature = "kubernetes")]
        {
            let kubernetes = kdeploy_provider_kubernetes::KubernetesProvider::new();
            // EKS clusters: the Kubernetes provider gets bearer tokens signed with the caller's
            // AWS credentials from the AWS provider (no kubeconfig, no aws CLI).
            #[cfg(feature = "aws")]
            let kubernetes = kubernetes.with_token_source("eks", aws.token_source());
            // GKE clusters: OAuth access tokens from the same Google credentials.
            #[cfg(feature = "gcp")]
            let kubernetes = match &gcp {
                Ok(g) => kubernetes.with_token_source("gke", g.token_source()),
                Err(_) => kubernetes,
            };
            // AKS clusters: cluster-user tokens from the AKS credentials API.
            #[cfg(feature = "azure")]
            let kubernetes = kubernetes.with_token_source("aks", azure.token_source());
            p.insert("kubernetes", Arc::new(kubernetes));
        }
        #[cfg(feature = "azure")]
        p.insert("azure", azure);
        #[cfg(feature = "aws")]
        p.insert("aws", aws);
        #[cfg(feature = "gcp")]
        match gcp {
            Ok(g) => p.insert("gcp", g),
            Err(error) => p.insert("gcp", Arc::new(kdeploy_provider::UnavailableProvider { name: "gcp".into(), error })),
        }
        p
    }

    pub fn empty() -> Providers {
        Providers { map: BTreeMap::new() }
    }

    pub fn insert(&mut self, name: &str, provider: Arc<dyn Provider>) {
        self.map.insert(name.to_string(), provider);
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn Provider>, LookupError> {
        self.map.get(name).cloned().ok_or_else(|| {
            if KNOWN.contains(&name) { LookupError::NotInBuild { name: name.to_string() } } else { LookupError::Unknown { name: name.to_string() } }
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}
