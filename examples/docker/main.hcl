# Kerberos Vault + MongoDB + MinIO + RabbitMQ + one agent per camera on a single Docker host.

stack "edge-docker" {}

variable "cameras" {
  description = "Cameras by name: main and sub stream RTSP URLs."
  type        = map(object({ rtsp = string, sub = string }))
  default     = {
    front = { rtsp = "rtsp://192.168.1.11/stream1", sub = "rtsp://192.168.1.11/stream2" }
    back  = { rtsp = "rtsp://192.168.1.12/stream1", sub = "rtsp://192.168.1.12/stream2" }
    yard  = { rtsp = "rtsp://192.168.1.13/stream1", sub = "rtsp://192.168.1.13/stream2" }
  }
  validation {
    condition = length(var.cameras) > 0
    message   = "Declare at least one camera."
  }
}

variable "timezone" {
  type    = string
  default = "Europe/Brussels"
}

locals {
  retention_days = 30
}

cluster "edge" {
  type = "docker"
}

object_storage "recordings" {
  type   = "minio"
  bucket = "recordings"
}

database "meta" {
  type = "mongodb"
}

broker "events" {
  type = "rabbitmq"
}

vault "main" {
  database       = database.meta
  storage        = object_storage.recordings
  broker         = broker.events
  retention_days = local.retention_days
}

agent "cam" {
  for_each     = var.cameras
  vault        = vault.main
  camera_name  = each.key
  rtsp_url     = each.value.rtsp
  sub_rtsp_url = each.value.sub
  timezone     = var.timezone
}

output "vault_url" {
  value = vault.main.url
}

output "vault_access_key" {
  value     = vault.main.access_key
  sensitive = true
}

output "vault_secret_key" {
  value     = vault.main.secret_key
  sensitive = true
}

# For the Vault UI fallback (see README.md).
output "vault_login_password" {
  value     = vault.main.admin_password
  sensitive = true
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

output "rabbitmq_host" {
  value = broker.events.host
}

output "rabbitmq_password" {
  value     = broker.events.admin_password
  sensitive = true
}
