database "x" {
  count = -1
  type  = "external"
  uri   = "mongodb://h/db"
}
