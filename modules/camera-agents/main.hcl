# One Kerberos agent per camera, all uploading to the same Vault.

variable "vault" {
  description = "The vault component the agents upload to (pass vault.NAME)."
}

variable "cameras" {
  description = "Cameras by name: main (rtsp) and optional sub stream (sub) RTSP URLs."
  type        = map(object({ rtsp = string, sub = string }))
}

variable "timezone" {
  type    = string
  default = "UTC"
}

variable "mqtt_uri" {
  description = "MQTT broker for the agents; empty disables MQTT (never the public default)."
  type        = string
  default     = ""
}

agent "cam" {
  for_each     = var.cameras
  vault        = var.vault
  camera_name  = each.key
  rtsp_url     = each.value.rtsp
  sub_rtsp_url = each.value.sub
  timezone     = var.timezone
  mqtt_uri     = var.mqtt_uri
}

output "agent_keys" {
  description = "Generated agent keys by camera name."
  value       = { for name, a in agent.cam : name => a.key }
}

output "count" {
  value = length(agent.cam)
}
