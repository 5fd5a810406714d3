database "x" {
  type = "external"
  uri  = file("/dev/zero")
}
