database "x" {
  count = 18446744073709551616
  type  = "external"
  uri   = "mongodb://h/db"
}
