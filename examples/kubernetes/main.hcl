# The Kerberos stack on a conformant Kubernetes cluster (kubeadm, kind, k3s, ...): MinIO for recordings, MongoDB for Vault's
# metadata, RabbitMQ for Vault's integration events, Kerberos Vault, three cameras, Factory.

stack "kubernetes" {}

variable "kubeconfig" {
  description = "Path to the kubeconfig; empty uses KUBECONFIG or ~/.kube/config."
  type        = string
  default     = ""
}

variable "context" {
  description = "kubeconfig context of the cluster."
  type        = string
  default     = "kind-kerberos"
}

variable "storage_class" {
  description = "Storage class for volumes; empty uses the cluster's default StorageClass."
  type        = string
  default     = ""
}

variable "cameras" {
  description = "Cameras by name: main (rtsp) and sub stream (sub) RTSP URLs."
  type        = map(object({ rtsp = string, sub = string }))
  default     = {
    front = { rtsp = "rtsp://10.0.10.11/stream1", sub = "rtsp://10.0.10.11/stream2" }
    back  = { rtsp = "rtsp://10.0.10.12/stream1", sub = "rtsp://10.0.10.12/stream2" }
    yard  = { rtsp = "rtsp://10.0.10.13/stream1", sub = "rtsp://10.0.10.13/stream2" }
  }
}

variable "timezone" {
  type    = string
  default = "Europe/Brussels"
}

cluster "edge" {
  type          = "kubernetes"
  kubeconfig    = var.kubeconfig
  context       = var.context
  storage_class = var.storage_class
}

object_storage "recordings" {
  type   = "minio"
  bucket = "recordings"
  size   = "50Gi"
}

database "meta" {
  type         = "mongodb"
  storage_size = "8Gi"
}

broker "events" {
  type  = "rabbitmq"
  queue = "data-filtering"
}

vault "main" {
  database       = database.meta
  storage        = object_storage.recordings
  broker         = broker.events
  service_type   = "NodePort"
  node_port      = 30080
  retention_days = 30
}

agent "cam" {
  for_each     = var.cameras
  vault        = vault.main
  camera_name  = each.key
  rtsp_url     = each.value.rtsp
  sub_rtsp_url = each.value.sub
  timezone     = var.timezone
  persistence  = true
}

factory "ui" {
  node_port = 30079
}

output "vault_url" {
  value = vault.main.url
}

output "vault_provider" {
  description = "Name of the storage provider kdeploy configures in Vault (the storage component's name)."
  value       = vault.main.provider
}

output "minio_endpoint" {
  value = object_storage.recordings.endpoint
}

output "minio_access_key" {
  value     = object_storage.recordings.access_key
  sensitive = true
}

output "minio_secret_key" {
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

output "rabbitmq_uri" {
  value     = broker.events.uri
  sensitive = true
}

output "factory_url" {
  value = factory.ui.url
}
