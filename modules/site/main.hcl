# One edge site: a Docker host, or a MicroK8s node (kubeconfig), next to the cameras (RTSP
# streams live on the site network) and one agent per camera, uploading to a central Vault with the site's own account. With
# forward = true (a site with a poor uplink) the site keeps its recordings first: its agents
# upload to a Vault, MinIO and MongoDB on the site's host, and that Vault forwards every
# recording to the central Vault with the site's account.

variable "name" {
  description = "The site's name: its Vault account on the central Vault, and its upload folder."
  type        = string
}

variable "vault" {
  description = "The central vault (pass vault.NAME). It must be exposed outside its cluster (NodePort)."
}

variable "docker_host" {
  description = "The site's Docker engine, e.g. tcp://10.10.1.5:2376 (a Docker site)."
  type        = string
  default     = null
}

variable "cert_path" {
  description = "Directory with the engine's ca.pem, cert.pem and key.pem (TLS; a Docker site)."
  type        = string
  default     = null
}

variable "kubeconfig" {
  description = "Kubeconfig of the site's MicroK8s node (`microk8s config`): the site runs on MicroK8s instead of Docker."
  type        = string
  default     = null
}

variable "context" {
  description = "With kubeconfig: its context (default: its current context)."
  type        = string
  default     = null
}

variable "cameras" {
  description = "The site's cameras: name => RTSP URL."
  type        = map(string)
}

variable "forward" {
  description = "Record on site first and forward every recording to the central Vault (for sites with a poor uplink)."
  type        = bool
  default     = false
}

variable "site_vault_port" {
  description = "With forward: the host port of the site's own Vault."
  type        = number
  default     = 30080
}

variable "timezone" {
  type    = string
  default = "UTC"
}

# A Docker host, or a MicroK8s node when a kubeconfig is given: each type's arguments are null
# for the other.
cluster "edge" {
  type       = var.kubeconfig == null ? "docker" : "microk8s"
  host       = var.docker_host
  tls_verify = var.kubeconfig == null ? true : null
  cert_path  = var.cert_path
  kubeconfig = var.kubeconfig
  context    = var.context
}

# With forward: the site's own Vault and what it stores in.
database "site" {
  count   = var.forward ? 1 : 0
  cluster = cluster.edge
  type    = "mongodb"
}

object_storage "site" {
  count   = var.forward ? 1 : 0
  cluster = cluster.edge
  type    = "minio"
}

vault "site" {
  count     = var.forward ? 1 : 0
  cluster   = cluster.edge
  database  = database.site[0]
  storage   = object_storage.site[0]
  node_port = var.site_vault_port
  account   = var.name # the same account name and folder as on the central Vault
  directory = var.name

  forward "central" {
    vault   = var.vault # its external URL, and the keys of the site's account there
    account = var.name
  }
}

agent "cam" {
  for_each    = var.cameras
  cluster     = cluster.edge
  vault       = var.forward ? vault.site[0] : var.vault
  account     = var.name
  camera_name = each.key
  rtsp_url    = each.value
  timezone    = var.timezone
}

output "site_vault_url" {
  description = "With forward: the site Vault's URL on the site's host (null without)."
  value       = var.forward ? vault.site[0].url : null
}

output "agents" {
  description = "The site's agents by camera name."
  value       = { for name, a in agent.cam : name => a.upload_directory }
}
