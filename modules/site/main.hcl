# One edge site: a Docker host next to the cameras (RTSP streams live on the site network) and
# one agent per camera, uploading to a central Vault with the site's own account.

variable "name" {
  description = "The site's name: its Vault account on the central Vault, and its upload folder."
  type        = string
}

variable "vault" {
  description = "The central vault (pass vault.NAME). It must be exposed outside its cluster (NodePort)."
}

variable "docker_host" {
  description = "The site's Docker engine, e.g. tcp://10.10.1.5:2376."
  type        = string
}

variable "cert_path" {
  description = "Directory with the engine's ca.pem, cert.pem and key.pem (TLS)."
  type        = string
}

variable "cameras" {
  description = "The site's cameras: name => RTSP URL."
  type        = map(string)
}

variable "timezone" {
  type    = string
  default = "UTC"
}

cluster "edge" {
  type       = "docker"
  host       = var.docker_host
  tls_verify = true
  cert_path  = var.cert_path
}

agent "cam" {
  for_each    = var.cameras
  cluster     = cluster.edge
  vault       = var.vault
  account     = var.name
  camera_name = each.key
  rtsp_url    = each.value
  timezone    = var.timezone
}

output "agents" {
  description = "The site's agents by camera name."
  value       = { for name, a in agent.cam : name => a.upload_directory }
}
