//! The kdeploy Azure provider: `cluster { type = "aks" }` and `object_storage { type = "azure_blob" }`.
//!
//! Talks to Azure Resource Manager with its REST API ([`arm`]) at pinned api-versions
//! (resource groups 2021-04-01, managedClusters 2024-05-01, storage 2023-05-01); long-running
//! operations are followed via `Azure-AsyncOperation` / `Location` with progress lines, and
//! 429 answers are retried after their Retry-After.
//!
//! * **AKS** ([`aks`]): the resource group (`resource_group`, default `kdeploy-<name>`, created
//!   when absent), the managed cluster with a system-assigned identity and one system agent
//!   pool (`node_count` × `vm_size`). `version`, `node_count` and `tags` change in place;
//!   `location`, `name`, `resource_group` and `vm_size` replace the cluster.
//! * **Kubernetes access**: `endpoint`, `certificate_authority` (from listClusterUserCredential's
//!   kubeconfig) and `token_source = "aks"`; the Kubernetes provider asks the
//!   [`AksTokenSource`] for the cluster-user token whenever it connects (no az CLI, no token in
//!   state).
//! * **Blob** ([`blob`]): storage account, container, lifecycle rule deleting blobs older than
//!   `retention_days`, and `access_key` (account name) / `secret_key` (key1, sensitive) for Vault.
//! * **Credentials** ([`credential`], through azure_identity): the first configured of
//!   `AZURE_ACCESS_TOKEN`, a service principal (`AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
//!   `AZURE_CLIENT_SECRET`), workload identity (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_TENANT_ID`,
//!   `AZURE_CLIENT_ID`: AKS pods, CI with OIDC federation), else the Azure CLI login (`az login`);
//!   the subscription from `AZURE_SUBSCRIPTION_ID`; `AZURE_RESOURCE_MANAGER_ENDPOINT` overrides
//!   the ARM endpoint (sovereign clouds, tests) and `AZURE_AUTHORITY_HOST` the Entra ID host.

pub mod aks;
pub mod arm;
pub mod blob;
pub mod blobdata;
pub mod credential;
pub mod util;

use std::sync::Arc;

use async_trait::async_trait;
use kdeploy_provider::{
    ApplyRequest, ApplyResponse, ComponentRef, DeleteRequest, ErrorKind, Kind, PlanRequest, PlanResponse, Preflight, Provider, ProviderError, ReadRequest,
    ReadResult, TokenSource, Value,
};

pub use aks::AksTokenSource;
pub use arm::Arm;
pub use credential::{Credential, StaticToken};

use crate::arm::API_RESOURCE_GROUPS;
use crate::util::attrs;

/// The ARM client, or why it could not be configured (reported when first needed).
#[derive(Clone)]
pub struct Lazy(Result<Arc<Arm>, ProviderError>);

impl Lazy {
    pub fn get(&self) -> Result<Arc<Arm>, ProviderError> {
        self.0.clone()
    }
}

/// The Azure provider.
pub struct AzureProvider {
    arm: Lazy,
}

impl AzureProvider {
    /// From the environment (see the crate docs).
    pub fn from_env() -> AzureProvider {
        let arm = (|| {
            let sub = std::env::var("AZURE_SUBSCRIPTION_ID").ok().filter(|v| !v.is_empty()).ok_or_else(|| {
                ProviderError::new(ErrorKind::Invalid, "AZURE_SUBSCRIPTION_ID is not set: kdeploy needs the subscription to create AKS clusters and storage accounts in (`az account show --query id -o tsv`)")
            })?;
            let endpoint = std::env::var("AZURE_RESOURCE_MANAGER_ENDPOINT").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| arm::DEFAULT_ENDPOINT.into());
            Ok(Arc::new(Arm::new(&endpoint, &sub, credential::from_env()?)))
        })();
        AzureProvider { arm: Lazy(arm) }
    }

    /// With a configured ARM client (tests: a local mock and a static token).
    pub fn new(arm: Arm) -> AzureProvider {
        AzureProvider { arm: Lazy(Ok(Arc::new(arm))) }
    }

    /// The "aks" token source for the Kubernetes provider, sharing this provider's client.
    pub fn token_source(&self) -> Arc<dyn TokenSource> {
        Arc::new(AksTokenSource { arm: self.arm.clone() })
    }
}

fn unsupported(c: &ComponentRef) -> ProviderError {
    ProviderError::new(
        ErrorKind::Invalid,
        format!("{}: the azure provider serves cluster type \"aks\" and object_storage type \"azure_blob\", not {} type {:?}", c.address, c.kind, c.type_name),
    )
}

fn is_aks(c: &ComponentRef) -> bool {
    c.kind == Kind::Cluster && c.type_name == "aks"
}

fn is_blob(c: &ComponentRef) -> bool {
    c.kind == Kind::ObjectStorage && c.type_name == "azure_blob"
}

#[async_trait]
impl Provider for AzureProvider {
    fn name(&self) -> &str {
        "azure"
    }

    /// Checks the configuration and that the credentials can list the subscription's
    /// resource groups.
    async fn preflight(&self, clusters: &[(ComponentRef, Value)]) -> Preflight {
        let mut out = Preflight::default();
        if !clusters.iter().any(|(c, _)| is_aks(c)) {
            return out;
        }
        match self.arm.get() {
            Err(e) => out.errors.push(e.message),
            Ok(arm) => {
                let path = format!("{}/resourcegroups?$top=1", arm.sub());
                if let Err(e) = arm.get(&path, API_RESOURCE_GROUPS, &format!("checking access to Azure subscription {}", arm.subscription_id)).await {
                    out.errors.push(e.message);
                }
            }
        }
        out
    }

    async fn read(&self, requests: Vec<ReadRequest>) -> Result<Vec<ReadResult>, ProviderError> {
        let mut results = Vec::with_capacity(requests.len());
        for r in &requests {
            if !is_aks(&r.component) && !is_blob(&r.component) {
                return Err(unsupported(&r.component));
            }
        }
        if requests.is_empty() {
            return Ok(results);
        }
        let arm = self.arm.get()?;
        // ARM has no cheap batch GET across resource types; one GET per component.
        for r in requests {
            let recorded = attrs(Some(&r.recorded));
            let found = if is_aks(&r.component) {
                aks::read(&arm, &r.component.address.to_string(), &recorded).await?
            } else {
                blob::read(&arm, &r.component.address.to_string(), &recorded).await?
            };
            results.push(match found {
                Some(a) => ReadResult::Found { attributes: Value::Map(a), fingerprint: None },
                None => ReadResult::Missing,
            });
        }
        Ok(results)
    }

    async fn plan(&self, req: PlanRequest<'_>) -> Result<PlanResponse, ProviderError> {
        let c = &req.component;
        if is_aks(c) {
            aks::plan(&c.address.to_string(), req.desired, req.prior)
        } else if is_blob(c) {
            blob::plan(&c.address.to_string(), req.desired, req.prior)
        } else {
            Err(unsupported(c))
        }
    }

    async fn apply(&self, req: ApplyRequest) -> Result<ApplyResponse, ProviderError> {
        let c = &req.component;
        let planned = attrs(Some(&req.planned));
        let attributes = if is_aks(c) {
            aks::apply(&*self.arm.get()?, &c.address.to_string(), &planned).await?
        } else if is_blob(c) {
            blob::apply(&*self.arm.get()?, &c.address.to_string(), &planned).await?
        } else {
            return Err(unsupported(c));
        };
        Ok(ApplyResponse::ready(Value::Map(attributes), None))
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ProviderError> {
        let c = &req.component;
        let prior = attrs(Some(&req.prior));
        if is_aks(c) {
            aks::delete(&*self.arm.get()?, &c.address.to_string(), &prior).await
        } else if is_blob(c) {
            blob::delete(&*self.arm.get()?, &c.address.to_string(), &prior, req.delete_data).await
        } else {
            Err(unsupported(c))
        }
    }
}
