# A fleet: Vault, object storage and MongoDB on a central Kubernetes cluster, and one Docker
# host or MicroK8s node per site next to its cameras. Each site's agents upload to the central Vault's external
# URL with the site's own account (its own keys and folder); adding a site to var.sites adds its
# account (Vault restarts once to read it) and its agents.

stack "fleet" {
  # One state and lock per cluster: CI applies the sites in parallel (-partition=site-NAME-edge).
  partition = "cluster"
}

variable "kubeconfig" {
  description = "Kubeconfig of the central cluster."
  type        = string
  default     = "~/.kube/config"
}

variable "sites" {
  description = "Sites by name: their Docker engine and TLS material, or their MicroK8s kubeconfig, and cameras (name => RTSP URL)."
  type = map(object({
    docker_host = optional(string)
    cert_path   = optional(string)
    kubeconfig  = optional(string)
    cameras     = map(string)
  }))
  default = {
    north = {
      docker_host = "tcp://10.10.1.5:2376"
      cert_path   = "certs/north"
      cameras = {
        door = "rtsp://10.10.1.21/stream1"
        yard = "rtsp://10.10.1.22/stream1"
      }
    }
    south = {
      docker_host = "tcp://10.20.1.5:2376"
      cert_path   = "certs/south"
      cameras = {
        gate = "rtsp://10.20.1.21/stream1"
      }
    }
    west = {
      kubeconfig = "kubeconfigs/west" # `microk8s config` of the site's node
      cameras = {
        dock = "rtsp://10.30.1.21/stream1"
      }
    }
  }
}

cluster "central" {
  type       = "kubernetes"
  kubeconfig = var.kubeconfig
}

database "meta" {
  cluster = cluster.central
  type    = "mongodb"
}

object_storage "recordings" {
  cluster = cluster.central
  type    = "minio"
}

vault "central" {
  cluster      = cluster.central
  database     = database.meta
  storage      = object_storage.recordings
  service_type = "NodePort" # agents on the sites upload to its external_url
  node_port    = 30080

  # One account per site: its own keys, its recordings under its own folder.
  accounts = { for name, site in var.sites : name => { directory = name } }
}

module "site" {
  for_each    = var.sites
  source      = "../../modules/site"
  name        = each.key
  vault       = vault.central
  docker_host = each.value.docker_host
  cert_path   = each.value.cert_path
  kubeconfig  = each.value.kubeconfig
  cameras     = each.value.cameras
}

output "vault_url" {
  value = vault.central.url
}

output "upload_folders" {
  description = "Each site's agents and the folder their recordings go to."
  value       = { for name, site in module.site : name => site.agents }
}
