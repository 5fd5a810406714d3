//! Data sources: `data "kubernetes_secret" "NAME" { namespace, name }` reads an existing
//! Secret's keys, so a stack refers to a password it holds instead of copying it into files.

use std::collections::BTreeMap;

use base64::Engine as _;
use kdeploy_provider::{DataRequest, DataResult, ErrorKind, ProviderError, Value};
use serde_json::Value as Json;

use crate::KubernetesProvider;
use crate::api::path;

impl KubernetesProvider {
    pub(crate) async fn read_secret(&self, req: DataRequest<'_>) -> Result<DataResult, ProviderError> {
        let address = req.source.address.to_string();
        if req.source.type_name != "kubernetes_secret" {
            return Err(ProviderError::new(ErrorKind::Invalid, format!("{address}: the kubernetes provider has no data source {:?}", req.source.type_name)));
        }
        let mut args = req.args.as_map().cloned().unwrap_or_default();
        let arg = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string).unwrap_or_default();
        let (ns, name) = (arg("namespace"), arg("name"));
        let conn = self.conn(req.cluster).await?;
        let found =
            conn.get(&path("v1", "Secret", Some(&ns), Some(&name))).await.map_err(|e| e.into_provider(&format!("reading Secret {ns}/{name}"), &conn))?;
        let Some(secret) = found else { return Ok(DataResult::Missing(format!("Secret {ns}/{name}"))) };
        args.insert("data".into(), Value::Map(decoded(&secret)));
        Ok(DataResult::Found(Value::Map(args)))
    }
}

/// A Secret's `data`, decoded from base64 (a value that is not UTF-8 is kept as its base64).
fn decoded(secret: &Json) -> BTreeMap<String, Value> {
    let Some(data) = secret["data"].as_object() else { return BTreeMap::new() };
    data.iter()
        .filter_map(|(k, v)| {
            let b64 = v.as_str()?;
            let text = base64::engine::general_purpose::STANDARD.decode(b64).ok().and_then(|b| String::from_utf8(b).ok()).unwrap_or_else(|| b64.to_string());
            Some((k.clone(), Value::String(text)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_data_is_decoded() {
        let s = serde_json::json!({ "data": { "mongodb-root-password": "czNjcjN0", "raw": "/w==" } });
        let d = decoded(&s);
        assert_eq!(d["mongodb-root-password"], Value::string("s3cr3t"));
        assert_eq!(d["raw"], Value::string("/w=="));
        assert!(decoded(&serde_json::json!({})).is_empty());
    }
}
