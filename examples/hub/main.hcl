# Kerberos Hub on a Kubernetes cluster, next to the Vault its agents upload to: MinIO for
# recordings, MongoDB for Vault's and Hub's metadata, RabbitMQ for the pipeline's events, the
# prometheus-operator CRDs Hub's ServiceMonitors need, Mosquitto and coturn for the live view,
# Hub itself, and two cameras.

stack "hub" {}

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

variable "hub_license" {
  description = "The Kerberos Hub license (ask support@kerberos.io); pass it with -var or KDEPLOY_VAR_hub_license. Empty: the chart's evaluation license (8 cameras)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "cameras" {
  description = "Cameras by name: main stream RTSP URL."
  type        = map(string)
  default = {
    front = "rtsp://10.0.10.11/stream1"
    back  = "rtsp://10.0.10.12/stream1"
  }
}

cluster "main" {
  type       = "kubernetes"
  kubeconfig = var.kubeconfig
  context    = var.context
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

# MQTT for the live view and remote configuration: browsers reach its websocket on NodePort 31080.
broker "live" {
  type = "mosquitto"
}

# The WebRTC relay of the live view (TURN over TCP on NodePort 30478).
turn "relay" {
  type = "coturn"
}

vault "main" {
  database  = database.meta
  storage   = object_storage.recordings
  broker    = broker.events
  mqtt      = broker.live
  node_port = 30080
}

# Agents upload under the stack name ("hub"): the Hub user below gets the same name.
agent "cam" {
  for_each        = var.cameras
  vault           = vault.main
  camera_name     = each.key
  rtsp_url        = each.value
  mqtt            = broker.live
  turn            = turn.relay
  hub_uri         = hub.main.endpoint
  hub_key         = hub.main.hub_key
  hub_private_key = hub.main.hub_private_key
}

# The ServiceMonitor CRD (and the rest of prometheus-operator's), before Hub.
chart "monitoring_crds" {
  repository = "https://prometheus-community.github.io/helm-charts"
  chart      = "prometheus-operator-crds"
  version    = "17.0.2"
}

hub "main" {
  database   = database.meta
  broker     = broker.events
  vault      = vault.main
  monitoring = chart.monitoring_crds
  mqtt       = broker.live
  turn       = turn.relay
  license    = var.hub_license
  version    = "0.130.0"
  # path     = "${path.module}/charts/hub"   # a local copy, for air-gapped sites
  values = {
    kerberoshub = { api = { replicas = 1 }, frontend = { replicas = 1 } }
  }
}

output "hub_frontend" {
  value = "NodePort 32080 on any node"
}
