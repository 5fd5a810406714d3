stack "x" {
  backend "kubernetes" {
    secret_suffix = "x"
    lock_ttl      = "inf"
  }
}
