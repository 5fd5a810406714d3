database "x" {
  count = 1e12
  type  = "external"
  uri   = "mongodb://h/db"
}
