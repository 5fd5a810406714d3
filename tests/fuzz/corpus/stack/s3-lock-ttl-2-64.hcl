stack "x" {
  backend "s3" {
    bucket   = "b"
    key      = "k"
    region   = "eu-west-1"
    lock_ttl = "18446744073709551616"
  }
}
