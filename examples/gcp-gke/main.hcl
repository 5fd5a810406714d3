# The Kerberos stack on Google Cloud in one `kdeploy apply`: a GKE cluster with one autoscaled node pool, a GCS bucket
# for recordings with a lifecycle rule and a bucket-scoped service account whose HMAC key Vault writes with, then
# MongoDB, Kerberos Vault and the cameras' agents inside the new cluster. Unlike on EKS, MongoDB runs in the cluster:
# GKE ships a default StorageClass (Persistent Disk CSI). See README.md for credentials, costs and teardown.

stack "gcp-gke" {}

variable "project" {
  description = "GCP project id for the cluster and the bucket (kdeploy does not read it from gcloud)."
  type        = string
  default     = "my-project-change-me"
}

variable "location" {
  description = "Zone (one control plane, node_count nodes) or region (node_count nodes in each of its zones)."
  type        = string
  default     = "europe-west1-b"
}

variable "bucket" {
  description = "Recordings bucket name (globally unique)."
  type        = string
  default     = "kerberos-recordings-change-me"
}

variable "bucket_location" {
  description = "Bucket location: a region next to the cluster, or a multi-region (eu)."
  type        = string
  default     = "europe-west1"
}

variable "kubernetes_version" {
  description = "GKE version, e.g. \"1.32\"; empty uses GKE's default (nodes auto-upgrade either way)."
  type        = string
  default     = ""
}

variable "retention_days" {
  description = "Days recordings are kept: the bucket's lifecycle rule and Vault's account limit."
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
  type         = "gke"
  project      = var.project
  location     = var.location
  version      = var.kubernetes_version
  machine_type = "e2-standard-2"
  node_count   = 2
  min_nodes    = 1
  max_nodes    = 3
}

object_storage "recordings" {
  type           = "gcs"
  project        = var.project
  bucket         = var.bucket
  location       = var.bucket_location
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

output "storage_endpoint" {
  value = object_storage.recordings.endpoint
}

output "hmac_access_id" {
  value = object_storage.recordings.access_key
}

output "hmac_secret" {
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
