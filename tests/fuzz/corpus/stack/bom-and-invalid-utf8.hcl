database "x" {
  type = "external"
  uri = "ÿþ"
}
