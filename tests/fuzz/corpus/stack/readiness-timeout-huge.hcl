cluster "d" {
  type = "docker"
}

object_storage "m" {
  type              = "minio"
  readiness_timeout = "99999999999999999999h"
}
