//! The versioned JSON file format.
//!
//! Every state file carries a `version`. [`decode`] reads any version up to
//! [`STATE_VERSION`], upgrading older documents one step at a time through [`UPGRADES`] before
//! deserializing them; [`encode`] always writes the current version.
//!
//! To change the format: bump [`STATE_VERSION`], append an upgrade function from the previous
//! version to [`UPGRADES`], and add a fixture test of the old format.

use serde_json::{Map, Value};

use crate::error::StateError;
use crate::model::{STATE_VERSION, State};

/// An upgrade of a JSON document from format version `n` to `n + 1`. It receives the document at
/// version `n` and returns it at version `n + 1` (including the updated `version` field), or a
/// description of what is wrong with the input.
pub type Upgrade = fn(Value) -> Result<Value, String>;

/// Upgrade steps; `UPGRADES[n]` turns version `n` into version `n + 1`.
pub const UPGRADES: &[Upgrade] = &[upgrade_v0_to_v1, upgrade_v1_to_v2];

const _: () = assert!(UPGRADES.len() == STATE_VERSION as usize, "one upgrade per version step");

/// The `version` of a state document; every other field is skipped.
#[derive(serde::Deserialize)]
struct Probe {
    version: Option<Value>,
}

/// Decodes a state file. `source` names where the bytes came from, for error messages.
///
/// Older format versions are upgraded; a newer one is refused with
/// [`StateError::NewerVersion`]. Syntax and shape errors carry the line and column.
pub fn decode(bytes: &[u8], source: &str) -> Result<State, StateError> {
    let decode_err = |line: usize, column: usize, message: String| StateError::Decode { source_name: source.to_string(), line, column, message };
    // Only the version first (the rest of the document is skipped, not built): the current
    // format is then deserialized straight from the bytes, and a JSON value of the whole
    // document is built only to upgrade it or to explain a shape error.
    let parse_doc = || serde_json::from_slice::<Value>(bytes).map_err(|e| decode_err(e.line(), e.column(), strip_position(&e)));
    let version = match serde_json::from_slice::<Probe>(bytes) {
        Ok(Probe { version: Some(v) }) => v.as_u64().ok_or_else(|| decode_err(0, 0, format!("`version` must be a non-negative integer, found {v}")))?,
        Ok(Probe { version: None }) => return Err(decode_err(0, 0, "the `version` field is missing".to_string())),
        // A syntax error (with its position), not an object, or a repeated `version`.
        Err(e) => {
            let message = if parse_doc()?.is_object() { strip_position(&e) } else { "expected a JSON object".to_string() };
            return Err(decode_err(e.line(), e.column(), message));
        }
    };
    if version > u64::from(STATE_VERSION) {
        return Err(StateError::NewerVersion { source_name: source.to_string(), found: version, supported: STATE_VERSION });
    }

    let mut state: State = if version == u64::from(STATE_VERSION) {
        // Deserialize from the bytes, not a `Value`, so shape errors carry a position; name
        // the field and the type it must have when one has the wrong type.
        match serde_json::from_slice(bytes) {
            Ok(state) => state,
            Err(e) => {
                let message = check_shape(&parse_doc()?).err().unwrap_or_else(|| strip_position(&e));
                return Err(decode_err(e.line(), e.column(), message));
            }
        }
    } else {
        let mut doc = parse_doc()?;
        for (step, upgrade) in UPGRADES.iter().enumerate().skip(version as usize) {
            doc = upgrade(doc).map_err(|m| decode_err(0, 0, format!("upgrading from format version {step} to {}: {m}", step.saturating_add(1))))?;
        }
        serde_json::from_value(doc.clone()).map_err(|e| {
            let message = check_shape(&doc).err().unwrap_or_else(|| e.to_string());
            decode_err(0, 0, format!("after upgrading from format version {version}: {message}"))
        })?
    };

    state.sort_resources();
    if let Some(pair) = state.resources.windows(2).find(|p| p[0].address == p[1].address) {
        return Err(decode_err(0, 0, format!("resource `{}` appears more than once", pair[0].address)));
    }
    // What a writer refuses (an empty address, unknown values) is refused here already, as a
    // problem of this file rather than a bug of the run that would write it next.
    if let Err(StateError::InvalidState { reason }) = state.validate() {
        return Err(decode_err(0, 0, reason));
    }
    Ok(state)
}

/// Encodes a state as pretty-printed JSON with a trailing newline, always at
/// [`STATE_VERSION`]. The output is deterministic: resources are sorted by address and object
/// keys inside attributes and outputs are sorted.
pub fn encode(state: &State) -> Vec<u8> {
    let mut normalized = state.clone();
    normalized.version = STATE_VERSION;
    normalized.sort_resources();
    // Serializing cannot fail: all map keys are strings and serde_json values hold no
    // non-finite numbers.
    let mut out = serde_json::to_vec_pretty(&normalized).expect("state always serializes to JSON");
    out.push(b'\n');
    out
}

/// serde_json appends " at line L column C" to its messages; the position is reported
/// separately.
fn strip_position(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// Version 0, the early development format: `resources` was an object keyed by address (values
/// without `address`), and there was neither `pending` nor `create_before_destroy`.
fn upgrade_v0_to_v1(doc: Value) -> Result<Value, String> {
    let Value::Object(mut root) = doc else {
        return Err("expected a JSON object".to_string());
    };
    let resources = match root.remove("resources") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(format!("`resources` must be an object keyed by address, found {}", kind(&other)));
        }
    };
    let mut list = Vec::with_capacity(resources.len());
    for (address, value) in resources {
        let Value::Object(mut fields) = value else {
            return Err(format!("resource `{address}` must be an object, found {}", kind(&value)));
        };
        fields.insert("address".to_string(), Value::String(address));
        fields.entry("create_before_destroy").or_insert(Value::Bool(false));
        list.push(Value::Object(fields));
    }
    root.insert("resources".to_string(), Value::Array(list));
    root.entry("pending").or_insert_with(|| Value::Array(Vec::new()));
    root.insert("version".to_string(), Value::from(1));
    Ok(Value::Object(root))
}

/// Version 2 added `target` to pending operations (what is needed to find the object of an
/// interrupted create); version 1 documents are valid version 2 documents without it.
fn upgrade_v1_to_v2(doc: Value) -> Result<Value, String> {
    let Value::Object(mut root) = doc else {
        return Err("expected a JSON object".to_string());
    };
    root.insert("version".to_string(), Value::from(2));
    Ok(Value::Object(root))
}

/// The fields of a state document and the JSON type each must have: a wrong type is reported
/// with the field's path and what it should be, before serde's positional message.
fn check_shape(doc: &Value) -> Result<(), String> {
    let expect = |path: &str, v: &Value, want: &str, ok: bool| -> Result<(), String> {
        if ok { Ok(()) } else { Err(format!("the field `{path}` must be {want}, found {}", kind(v))) }
    };
    let Value::Object(root) = doc else { return Err(format!("the state must be a JSON object, found {}", kind(doc))) };
    for (field, want) in [
        ("serial", "a non-negative integer"),
        ("lineage", "a string"),
        ("kdeploy_version", "a string"),
        ("resources", "a list"),
        ("outputs", "an object"),
        ("pending", "a list"),
    ] {
        let Some(v) = root.get(field) else { continue };
        let ok = match field {
            "serial" => v.is_u64(),
            "lineage" | "kdeploy_version" => v.is_string(),
            "resources" | "pending" => v.is_array(),
            _ => v.is_object(),
        };
        expect(field, v, want, ok)?;
    }
    for (i, r) in root.get("resources").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = |f: &str| format!("resources[{i}].{f}");
        let Value::Object(r) = r else { return Err(format!("the field `resources[{i}]` must be an object, found {}", kind(r))) };
        for (field, want) in [
            ("address", "a string"),
            ("kind", "a string"),
            ("type", "a string"),
            ("provider", "a string"),
            ("attributes", "an object"),
            ("dependencies", "a list of addresses"),
            ("sensitive_paths", "a list of paths"),
        ] {
            let Some(v) = r.get(field) else { continue };
            let ok = match field {
                "attributes" => v.is_object(),
                "dependencies" | "sensitive_paths" => v.is_array(),
                _ => v.is_string(),
            };
            expect(&at(field), v, want, ok)?;
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OutputState, PendingKind, ResourceState};
    use kdeploy_provider::AttrPath;
    use serde_json::json;

    fn sample() -> State {
        let mut s = State::new("0.1.0");
        s.serial = 7;
        s.outputs.insert("endpoint".into(), OutputState { value: json!("http://x"), sensitive: false });
        s.outputs.insert("key".into(), OutputState { value: json!({"b": 1, "a": [2]}), sensitive: true });
        s.upsert(ResourceState {
            address: "vault.main".parse().unwrap(),
            kind: kdeploy_provider::Kind::Vault,
            type_name: "minio".into(),
            provider: "docker".into(),
            attributes: json!({"root_password": "s3cret", "env": {"A": "1"}, "ports": [9000]}),
            sensitive_paths: vec![AttrPath::attr("root_password"), AttrPath::attr("env").child_key("A")],
            dependencies: vec![],
            fingerprint: Some("sha256:abc".into()),
            create_before_destroy: true,
        });
        s.upsert(ResourceState {
            address: "agent.cam[\"front\"]".parse().unwrap(),
            kind: kdeploy_provider::Kind::Agent,
            type_name: "docker".into(),
            provider: "docker".into(),
            attributes: json!({"name": "front"}),
            sensitive_paths: vec![],
            dependencies: vec!["vault.main".parse().unwrap()],
            fingerprint: None,
            create_before_destroy: false,
        });
        s.begin_pending(&"vault.main".parse().unwrap(), PendingKind::Update, None);
        s
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let bytes = encode(&s);
        assert!(bytes.ends_with(b"}\n"));
        let back = decode(&bytes, "test").unwrap();
        assert_eq!(back, s);
        assert_eq!(encode(&back), bytes);
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["resources"][1]["type"], "minio");
        assert_eq!(doc["resources"][1]["sensitive_paths"], json!([["root_password"], ["env", "A"]]));
        assert_eq!(doc["pending"][0]["operation"], "update");
    }

    #[test]
    fn encoding_is_deterministic_regardless_of_key_order() {
        let mut a = sample();
        let mut b = sample();
        b.lineage = a.lineage.clone();
        b.pending = a.pending.clone();
        a.resources[1].attributes = json!({"x": 1, "y": {"p": 1, "q": 2}});
        b.resources[1].attributes = json!({"y": {"q": 2, "p": 1}, "x": 1});
        assert_eq!(encode(&a), encode(&b));
        let text = String::from_utf8(encode(&a)).unwrap();
        assert!(text.find("\"p\"").unwrap() < text.find("\"q\"").unwrap());
    }

    #[test]
    fn upgrades_v0() {
        let v0 = r#"{
          "version": 0,
          "serial": 4,
          "lineage": "5f1c2d1e-8a53-4d55-a5b9-0c6b8c2f3a10",
          "kdeploy_version": "0.0.3",
          "outputs": {"url": {"value": "http://cam", "sensitive": false}},
          "resources": {
            "vault.main": {
              "kind": "vault", "type": "minio", "provider": "docker",
              "attributes": {"root_password": "pw"},
              "sensitive_paths": [["root_password"]],
              "dependencies": [],
              "fingerprint": "abc"
            },
            "agent.cam[\"front\"]": {
              "kind": "agent", "type": "docker", "provider": "docker",
              "attributes": {"name": "front"},
              "sensitive_paths": [],
              "dependencies": ["vault.main"],
              "fingerprint": null
            }
          }
        }"#;
        let s = decode(v0.as_bytes(), "old.json").unwrap();
        assert_eq!(s.version, STATE_VERSION);
        assert_eq!(s.serial, 4);
        assert_eq!(s.lineage, "5f1c2d1e-8a53-4d55-a5b9-0c6b8c2f3a10");
        assert_eq!(s.resources.len(), 2);
        assert_eq!(s.resources[0].address.to_string(), "agent.cam[\"front\"]");
        assert_eq!(s.resources[0].dependencies, ["vault.main".parse::<kdeploy_provider::addr::Address>().unwrap()]);
        let vault = s.resource(&"vault.main".parse().unwrap()).unwrap();
        assert_eq!(vault.type_name, "minio");
        assert_eq!(vault.sensitive_paths, [AttrPath::attr("root_password")]);
        assert_eq!(vault.fingerprint.as_deref(), Some("abc"));
        assert!(!vault.create_before_destroy);
        assert!(s.pending.is_empty());
        assert_eq!(s.outputs["url"].value, json!("http://cam"));
        // Re-encoding writes the current format.
        let doc: Value = serde_json::from_slice(&encode(&s)).unwrap();
        assert_eq!(doc["version"], json!(STATE_VERSION));
        assert!(doc["resources"].is_array());
    }

    #[test]
    fn bad_v0_names_the_step() {
        let err = decode(br#"{"version": 0, "serial": 1, "lineage": "l", "kdeploy_version": "0", "resources": [1]}"#, "old.json").unwrap_err().to_string();
        assert!(err.contains("old.json"), "{err}");
        assert!(err.contains("upgrading from format version 0 to 1"), "{err}");
    }

    #[test]
    fn newer_version_refused() {
        let err = decode(br#"{"version": 99, "whatever": true}"#, "/x/state.json").unwrap_err();
        assert!(matches!(err, StateError::NewerVersion { found: 99, .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "state at /x/state.json was written by a newer kdeploy (format version 99, this \
                 build reads up to {STATE_VERSION}); upgrade kdeploy"
            )
        );
    }

    #[test]
    fn invalid_json_names_source_and_position() {
        let err = decode(b"{\n  \"version\": 1,\n  \"serial\": oops\n}", "/x/state.json").unwrap_err();
        match &err {
            StateError::Decode { source_name, line, column, .. } => {
                assert_eq!(source_name, "/x/state.json");
                assert_eq!(*line, 3);
                assert!(*column > 0);
            }
            other => panic!("expected Decode, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("/x/state.json at line 3, column"), "{msg}");

        // Shape errors in the current format carry a position too, and name the field and
        // the type it must have.
        let doc = format!("{{\"version\": {STATE_VERSION},\n\"serial\": \"7\"}}");
        let err = decode(doc.as_bytes(), "s").unwrap_err();
        assert!(matches!(err, StateError::Decode { line: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("the field `serial` must be a non-negative integer, found a string"), "{err}");
        // An older format is named as such.
        let err = decode(b"{\"version\": 1, \"serial\": 1, \"lineage\": \"l\", \"kdeploy_version\": \"0\", \"resources\": [{\"address\": 5}]}", "s")
            .unwrap_err()
            .to_string();
        assert!(err.contains("after upgrading from format version 1: the field `resources[0].address` must be a string, found a number"), "{err}");

        let err = decode(b"{\"serial\": 1}", "s").unwrap_err().to_string();
        assert!(err.contains("`version` field is missing"), "{err}");
        let err = decode(b"[]", "s").unwrap_err().to_string();
        assert!(err.contains("expected a JSON object"), "{err}");
    }

    #[test]
    fn duplicate_addresses_refused() {
        let mut s = sample();
        let dup = s.resources[0].clone();
        s.resources.push(dup);
        let err = decode(&encode(&s), "s").unwrap_err().to_string();
        assert!(err.contains("appears more than once"), "{err}");
    }
}
