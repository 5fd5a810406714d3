# The Kerberos stack on AWS in one `kdeploy apply`: an EKS cluster with a managed node group (and the VPC and IAM roles
# it needs), an S3 bucket for recordings with a bucket-scoped IAM user, then Kerberos Vault and the cameras' agents
# inside the new cluster. MongoDB is external (DocumentDB or Atlas): in-cluster volumes need the EBS CSI add-on, which
# kdeploy does not manage yet. See README.md for credentials, costs and teardown.

stack "aws-eks" {}

variable "region" {
  description = "AWS region for the cluster and the bucket."
  type        = string
  default     = "eu-west-1"
}

variable "bucket" {
  description = "Recordings bucket name (globally unique)."
  type        = string
  default     = "kerberos-recordings-change-me"
}

variable "mongodb_uri" {
  description = "Connection string of Vault's MongoDB (DocumentDB, Atlas, ...)."
  type        = string
  default     = "mongodb://kerberos:change-me@docdb.example.com:27017/admin?tls=true&retryWrites=false"
  sensitive   = true
}

variable "retention_days" {
  description = "Days recordings are kept: the bucket's expiration rule and Vault's account limit."
  type        = number
  default     = 30
}

variable "cameras" {
  description = "Cameras by name: main stream RTSP URL."
  type        = map(string)
  default     = {
    front = "rtsp://10.0.10.11/stream1"
    back  = "rtsp://10.0.10.12/stream1"
  }
}

cluster "cloud" {
  type                   = "eks"
  region                 = var.region
  version                = "1.31"
  endpoint_public_access = true
  instance_types         = ["t3.large"]
  ami_type               = "AL2023_x86_64_STANDARD"
  min_size               = 1
  max_size               = 3
  desired_size           = 2
  tags                   = { project = "kerberos" }
}

object_storage "recordings" {
  type           = "s3"
  region         = var.region
  bucket         = var.bucket
  versioning     = false
  retention_days = var.retention_days
  tags           = { project = "kerberos" }
}

database "meta" {
  type   = "external"
  uri    = var.mongodb_uri
  flavor = "documentdb"
}

vault "main" {
  database       = database.meta
  storage        = object_storage.recordings
  service_type   = "LoadBalancer"
  retention_days = var.retention_days
}

agent "cam" {
  for_each = var.cameras
  vault    = vault.main
  rtsp_url = each.value
}

output "vault_url" {
  value = vault.main.url
}

output "cluster_endpoint" {
  value = cluster.cloud.endpoint
}
