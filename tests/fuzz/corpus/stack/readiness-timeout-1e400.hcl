cluster "d" {
  type = "docker"
}

object_storage "m" {
  type              = "minio"
  readiness_timeout = 1e400
}
