database "x" {
  for_each = toset(range(1e12))
  type  = "external"
  uri   = "mongodb://h/db"
}
