# The Kerberos stack on Azure in one `kdeploy apply`: an AKS cluster with one system node pool, a storage account with
# a private blob container and a lifecycle rule for recordings, then MongoDB, Kerberos Vault and the cameras' agents
# inside the new cluster. Unlike on EKS, MongoDB runs in the cluster: AKS ships a default StorageClass (Azure Disk CSI).
# See README.md for credentials, costs and teardown.

stack "azure-aks" {}

variable "location" {
  description = "Azure region for the resource group, the cluster and the storage account."
  type        = string
  default     = "westeurope"
}

variable "resource_group" {
  description = "Resource group for everything (created when absent, never deleted by kdeploy)."
  type        = string
  default     = "kerberos"
}

variable "storage_account" {
  description = "Storage account name: 3-24 lowercase letters and digits, globally unique."
  type        = string
  default     = "kerberosrecchangeme"
}

variable "kubernetes_version" {
  description = "AKS Kubernetes version, e.g. \"1.32\" (az aks get-versions); empty uses AKS's default."
  type        = string
  default     = ""
}

variable "retention_days" {
  description = "Days recordings are kept: the container's lifecycle rule and Vault's account limit."
  type        = number
  default     = 30
}

variable "cameras" {
  description = "Cameras by name: main (rtsp) and sub stream (sub) RTSP URLs, reachable from the cluster."
  type        = map(object({ rtsp = string, sub = string }))
  default     = {
    front = { rtsp = "rtsp://10.0.10.11/stream1", sub = "rtsp://10.0.10.11/stream2" }
    back  = { rtsp = "rtsp://10.0.10.12/stream1", sub = "rtsp://10.0.10.12/stream2" }
  }
}

variable "timezone" {
  type    = string
  default = "Europe/Brussels"
}

cluster "cloud" {
  type           = "aks"
  location       = var.location
  resource_group = var.resource_group
  version        = var.kubernetes_version
  vm_size        = "Standard_D2s_v3"
  node_count     = 2
  tags           = { project = "kerberos" }
}

object_storage "recordings" {
  type           = "azure_blob"
  account_name   = var.storage_account
  container      = "recordings"
  resource_group = var.resource_group
  location       = var.location
  retention_days = var.retention_days
}

database "meta" {
  type         = "mongodb"
  storage_size = "8Gi"
}

vault "main" {
  database       = database.meta
  storage        = object_storage.recordings
  service_type   = "LoadBalancer"
  retention_days = var.retention_days
}

module "cameras" {
  source   = "../../modules/camera-agents"
  vault    = vault.main
  cameras  = var.cameras
  timezone = var.timezone
}

output "vault_url" {
  description = "Vault's API inside the cluster (what the agents use); the public address is the LoadBalancer's."
  value       = vault.main.url
}

output "cluster_endpoint" {
  value = cluster.cloud.endpoint
}

output "vault_provider" {
  description = "Name of the storage provider kdeploy configures in Vault (the storage component's name)."
  value       = vault.main.provider
}

output "storage_account_name" {
  value = object_storage.recordings.access_key
}

output "storage_account_key" {
  value     = object_storage.recordings.secret_key
  sensitive = true
}

output "vault_access_key" {
  value     = vault.main.access_key
  sensitive = true
}

output "vault_secret_key" {
  value     = vault.main.secret_key
  sensitive = true
}

output "vault_login_password" {
  value     = vault.main.admin_password
  sensitive = true
}

output "agent_keys" {
  value = module.cameras.agent_keys
}
