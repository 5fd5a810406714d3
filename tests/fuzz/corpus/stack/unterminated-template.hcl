database "x" {
  type = "external"
  uri  = "${