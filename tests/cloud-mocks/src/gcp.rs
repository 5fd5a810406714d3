//! A local mock of the GKE, GCS and IAM REST APIs (std TcpListener, one thread per
//! connection), answering with the fixtures in fixtures/gcp and keeping state in memory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{Value as Json, json};

pub const TOKEN: &str = "test-token";
/// The OIDC token a CI job presents for workload identity federation (served at `/oidc-token`
/// to requests carrying `Bearer` [`OIDC_REQUEST_TOKEN`], as GitHub Actions does).
pub const SUBJECT_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.ci-job.signature";
pub const OIDC_REQUEST_TOKEN: &str = "gh-request-token";
/// The federated token the Security Token Service issues for [`SUBJECT_TOKEN`].
pub const FEDERATED_TOKEN: &str = "federated-token";
/// The audience STS accepts.
pub const AUDIENCE: &str = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/github";

fn form(body: &Json) -> BTreeMap<String, String> {
    let decode = |v: &str| {
        let v = v.replace('+', " ");
        let mut out = Vec::new();
        let b = v.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16)
            {
                out.push(x);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.as_str().unwrap_or_default().split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

pub fn fixture(name: &str) -> Json {
    let path = format!("{}/gcp/{name}", crate::FIXTURES);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// A canned answer for the next `times` requests matching method and path substring.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: &'static str,
    pub status: u16,
    pub retry_after: Option<u64>,
    pub fixture: &'static str,
    pub times: usize,
}

#[derive(Default)]
pub struct State {
    pub clusters: BTreeMap<String, Json>,
    /// name → (operation, polls left before DONE, error to report when done)
    pub operations: BTreeMap<String, (Json, u32)>,
    pub buckets: BTreeMap<String, Json>,
    /// Object names by bucket (recordings written by Vault).
    pub objects: BTreeMap<String, Vec<String>>,
    pub policies: BTreeMap<String, Json>,
    pub hmac: BTreeMap<String, Json>,
    pub service_accounts: BTreeMap<String, Json>,
    pub faults: Vec<Fault>,
    /// Every request as "METHOD path?query" with its JSON body.
    pub log: Vec<(String, Json)>,
    /// The next operation finishes with this google.rpc error.
    pub fail_next_operation: Option<Json>,
    op_seq: u32,
    /// The token endpoint answers 400 invalid_grant (a revoked or deleted key).
    pub reject_token_requests: bool,
}

impl State {
    pub fn count(&self, prefix: &str) -> usize {
        self.log.iter().filter(|(l, _)| l.starts_with(prefix)).count()
    }
    pub fn bodies(&self, prefix: &str) -> Vec<Json> {
        self.log.iter().filter(|(l, _)| l.starts_with(prefix)).map(|(_, b)| b.clone()).collect()
    }
}

pub struct Mock {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

impl Mock {
    pub fn start() -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                thread::spawn(move || serve(conn, st));
            }
        });
        Mock { url, state }
    }

    pub fn fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push(f);
    }

    pub fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

struct Resp {
    status: u16,
    body: Json,
    headers: Vec<(String, String)>,
}

fn ok(body: Json) -> Resp {
    Resp { status: 200, body, headers: vec![] }
}

fn err(status: u16, fixture_name: &str) -> Resp {
    Resp { status, body: fixture(fixture_name), headers: vec![] }
}

fn serve(conn: TcpStream, st: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        // JSON bodies parsed; form bodies (OAuth, STS) kept as a string.
        let body: Json = if body.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&body).into_owned()))
        };
        let resp = {
            let mut s = st.lock().unwrap();
            handle(&mut s, &method, &target, headers.get("authorization").map(String::as_str), body)
        };
        let text = if resp.body.is_null() { String::new() } else { resp.body.to_string() };
        let mut out = format!("HTTP/1.1 {} X\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: {}\r\n", resp.status, text.len());
        for (k, v) in &resp.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&text);
        let mut w = &conn;
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

fn new_op(s: &mut State, location: &str, op_type: &str, polls: u32) -> Json {
    s.op_seq += 1;
    let mut op = fixture("operation.json");
    let name = format!("operation-{}-{op_type}", s.op_seq);
    op["name"] = json!(name);
    op["operationType"] = json!(op_type);
    op["location"] = json!(location);
    op["zone"] = json!(location);
    op["status"] = json!(if polls == 0 { "DONE" } else { "RUNNING" });
    if let Some(e) = s.fail_next_operation.take() {
        op["__error"] = e;
    }
    s.operations.insert(name, (op.clone(), polls));
    op
}

fn handle(s: &mut State, method: &str, target: &str, auth: Option<&str>, body: Json) -> Resp {
    s.log.push((format!("{method} {target}"), body.clone()));
    // OAuth token endpoint (service account JWT bearer grant, form-encoded body).
    if method == "POST" && target == "/token" {
        return if s.reject_token_requests {
            Resp { status: 400, body: json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}), headers: vec![] }
        } else {
            ok(json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}))
        };
    }
    // GitHub-Actions-style OIDC token endpoint (credential_source.url).
    if method == "GET" && target.starts_with("/oidc-token") {
        if auth != Some(&format!("Bearer {OIDC_REQUEST_TOKEN}")) {
            return Resp { status: 401, body: json!({"message": "Bad credentials"}), headers: vec![] };
        }
        return ok(json!({"count": 1, "value": SUBJECT_TOKEN}));
    }
    // Security Token Service token exchange (workload identity federation).
    if method == "POST" && target == "/v1/token" {
        let f = form(&body);
        let well_formed = f.get("grant_type").map(String::as_str) == Some("urn:ietf:params:oauth:grant-type:token-exchange")
            && f.get("requested_token_type").map(String::as_str) == Some("urn:ietf:params:oauth:token-type:access_token")
            && f.get("subject_token_type").map(String::as_str) == Some("urn:ietf:params:oauth:token-type:jwt")
            && f.get("scope").map(String::as_str) == Some("https://www.googleapis.com/auth/cloud-platform");
        if !well_formed {
            return Resp {
                status: 400,
                body: json!({"error": "invalid_request", "error_description": format!("malformed token exchange: {f:?}")}),
                headers: vec![],
            };
        }
        if f.get("audience").map(String::as_str) != Some(AUDIENCE) || f.get("subject_token").map(String::as_str) != Some(SUBJECT_TOKEN) {
            return err(400, "sts_error.json");
        }
        let mut t = fixture("sts_token.json");
        t["access_token"] = json!(FEDERATED_TOKEN);
        return ok(t);
    }
    // IAM Credentials: service account impersonation with the federated token.
    if method == "POST" && target.starts_with("/v1/projects/-/serviceAccounts/") && target.ends_with(":generateAccessToken") {
        if auth != Some(&format!("Bearer {FEDERATED_TOKEN}")) {
            return err(401, "error_401.json");
        }
        if body["scope"] != json!(["https://www.googleapis.com/auth/cloud-platform"]) {
            return Resp { status: 400, body: json!({"error": {"code": 400, "message": "scope is required", "status": "INVALID_ARGUMENT"}}), headers: vec![] };
        }
        let mut t = fixture("generate_access_token.json");
        t["accessToken"] = json!(TOKEN);
        return ok(t);
    }
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return err(401, "error_401.json");
    }
    if let Some(i) = s.faults.iter().position(|f| f.method == method && target.contains(f.path_contains) && f.times > 0) {
        let f = &mut s.faults[i];
        f.times -= 1;
        let mut r = err(f.status, f.fixture);
        if let Some(ra) = f.retry_after {
            r.headers.push(("Retry-After".into(), ra.to_string()));
        }
        return r;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, seg.as_slice()) {
        // ---- GKE: projects/{p}/locations/{l}/...
        ("GET", ["v1", "projects", _, "locations", _, "operations", name]) => {
            let Some((op, polls)) = s.operations.get_mut(*name) else {
                return err(404, "error_404_gke.json");
            };
            if *polls > 0 {
                *polls -= 1;
            }
            if *polls == 0 {
                op["status"] = json!("DONE");
                if let Some(e) = op.get("__error").cloned() {
                    op["error"] = e;
                }
            }
            let mut out = op.clone();
            out.as_object_mut().unwrap().remove("__error");
            ok(out)
        }
        ("POST", ["v1", "projects", p, "locations", l, "clusters"]) => {
            let want = &body["cluster"];
            let key = format!("{p}/{l}/{}", want["name"].as_str().unwrap());
            if s.clusters.contains_key(&key) {
                return err(409, "error_409.json");
            }
            let mut c = fixture("cluster.json");
            c["name"] = want["name"].clone();
            c["location"] = json!(l);
            c["zone"] = json!(l);
            c["locations"] = json!([l]);
            if let Some(v) = want["initialClusterVersion"].as_str() {
                c["currentMasterVersion"] = json!(format!("{v}.5-gke.1233000"));
            }
            let mut pools = vec![];
            let mut total = 0;
            for wp in want["nodePools"].as_array().unwrap() {
                let mut np = fixture("node_pool.json");
                np["name"] = wp["name"].clone();
                np["config"]["machineType"] = wp["config"]["machineType"].clone();
                np["initialNodeCount"] = wp["initialNodeCount"].clone();
                np["autoscaling"] = wp["autoscaling"].clone();
                np["locations"] = json!([l]);
                total += wp["initialNodeCount"].as_i64().unwrap();
                pools.push(np);
            }
            c["nodePools"] = json!(pools);
            c["currentNodeCount"] = json!(total);
            c["status"] = json!("PROVISIONING");
            s.clusters.insert(key, c);
            ok(new_op(s, l, "CREATE_CLUSTER", 2))
        }
        ("GET", ["v1", "projects", p, "locations", l, "clusters", name]) => match s.clusters.get_mut(&format!("{p}/{l}/{name}")) {
            Some(c) => {
                c["status"] = json!("RUNNING");
                ok(c.clone())
            }
            None => err(404, "error_404_gke.json"),
        },
        ("PUT", ["v1", "projects", p, "locations", l, "clusters", name]) => {
            let Some(c) = s.clusters.get_mut(&format!("{p}/{l}/{name}")) else {
                return err(404, "error_404_gke.json");
            };
            if let Some(v) = body["update"]["desiredMasterVersion"].as_str() {
                c["currentMasterVersion"] = json!(format!("{v}.1-gke.100"));
            }
            ok(new_op(s, l, "UPGRADE_MASTER", 1))
        }
        ("DELETE", ["v1", "projects", p, "locations", l, "clusters", name]) => {
            if s.clusters.remove(&format!("{p}/{l}/{name}")).is_none() {
                return err(404, "error_404_gke.json");
            }
            ok(new_op(s, l, "DELETE_CLUSTER", 1))
        }
        (_, ["v1", "projects", p, "locations", l, "clusters", name, "nodePools", action]) => {
            let Some(c) = s.clusters.get_mut(&format!("{p}/{l}/{name}")) else {
                return err(404, "error_404_gke.json");
            };
            let (pool, verb) = action.split_once(':').unwrap_or((action, ""));
            let idx = c["nodePools"].as_array().unwrap().iter().position(|np| np["name"] == pool);
            let Some(idx) = idx else {
                return err(404, "error_404_gke.json");
            };
            let op_type = match (method, verb) {
                ("POST", "setSize") => {
                    c["currentNodeCount"] = body["nodeCount"].clone();
                    "SET_NODE_POOL_SIZE"
                }
                ("POST", "setAutoscaling") => {
                    c["nodePools"][idx]["autoscaling"] = body["autoscaling"].clone();
                    "UPDATE_CLUSTER"
                }
                ("PUT", "") => {
                    c["nodePools"][idx]["version"] = body["nodeVersion"].clone();
                    "UPGRADE_NODES"
                }
                ("GET", "") => return ok(c["nodePools"][idx].clone()),
                _ => {
                    return Resp { status: 400, body: json!({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}), headers: vec![] };
                }
            };
            ok(new_op(s, l, op_type, 1))
        }
        // ---- GCS
        ("POST", ["storage", "v1", "b"]) => {
            let name = body["name"].as_str().unwrap().to_string();
            if s.buckets.contains_key(&name) {
                return err(409, "error_409.json");
            }
            assert!(query.starts_with("project="), "{query}");
            let mut b = fixture("bucket.json");
            b["name"] = json!(name);
            b["id"] = json!(name);
            b["location"] = json!(body["location"].as_str().unwrap().to_ascii_uppercase());
            if body["lifecycle"]["rule"].as_array().is_some_and(|r| !r.is_empty()) {
                b["lifecycle"] = body["lifecycle"].clone();
            }
            s.buckets.insert(name.clone(), b.clone());
            let mut pol = fixture("bucket_iam.json");
            pol["resourceId"] = json!(format!("projects/_/buckets/{name}"));
            s.policies.insert(name, pol);
            ok(b)
        }
        ("GET", ["storage", "v1", "b", name]) => s.buckets.get(*name).cloned().map(ok).unwrap_or_else(|| err(404, "error_404_gcs.json")),
        ("PATCH", ["storage", "v1", "b", name]) => {
            let Some(b) = s.buckets.get_mut(*name) else {
                return err(404, "error_404_gcs.json");
            };
            if body["lifecycle"]["rule"].as_array().is_some_and(|r| !r.is_empty()) {
                b["lifecycle"] = body["lifecycle"].clone();
            } else {
                b.as_object_mut().unwrap().remove("lifecycle");
            }
            ok(b.clone())
        }
        ("GET", ["storage", "v1", "b", name, "o"]) => {
            if !s.buckets.contains_key(*name) {
                return err(404, "error_404_gcs.json");
            }
            let max: usize = query.split('&').find_map(|kv| kv.strip_prefix("maxResults=")).and_then(|m| m.parse().ok()).unwrap_or(1000);
            let items: Vec<Json> = s.objects.get(*name).into_iter().flatten().take(max).map(|o| json!({"name": o, "generation": "1732520400000000"})).collect();
            if items.is_empty() { ok(json!({"kind": "storage#objects"})) } else { ok(json!({"kind": "storage#objects", "items": items})) }
        }
        ("DELETE", ["storage", "v1", "b", name, "o", object]) => {
            let object = object.replace("%2F", "/");
            let list = s.objects.entry(name.to_string()).or_default();
            let before = list.len();
            list.retain(|o| *o != object);
            if list.len() == before {
                return err(404, "error_404_gcs.json");
            }
            Resp { status: 204, body: Json::Null, headers: vec![] }
        }
        ("DELETE", ["storage", "v1", "b", name]) => {
            if s.objects.get(*name).is_some_and(|o| !o.is_empty()) {
                return err(409, "error_409_bucket_not_empty.json");
            }
            if s.buckets.remove(*name).is_none() {
                return err(404, "error_404_gcs.json");
            }
            Resp { status: 204, body: Json::Null, headers: vec![] }
        }
        ("GET", ["storage", "v1", "b", name, "iam"]) => s.policies.get(*name).cloned().map(ok).unwrap_or_else(|| err(404, "error_404_gcs.json")),
        ("PUT", ["storage", "v1", "b", name, "iam"]) => {
            s.policies.insert(name.to_string(), body.clone());
            ok(body)
        }
        ("POST", ["storage", "v1", "projects", p, "hmacKeys"]) => {
            let email = query.strip_prefix("serviceAccountEmail=").unwrap().replace("%40", "@");
            let mut k = fixture("hmac_key.json");
            let id = format!("GOOG1KEY{}", s.hmac.len() + 1);
            k["metadata"]["accessId"] = json!(id);
            k["metadata"]["id"] = json!(format!("{p}/{id}"));
            k["metadata"]["projectId"] = json!(p);
            k["metadata"]["serviceAccountEmail"] = json!(email);
            s.hmac.insert(id, k["metadata"].clone());
            ok(k)
        }
        ("GET", ["storage", "v1", "projects", _, "hmacKeys", id]) => s.hmac.get(*id).cloned().map(ok).unwrap_or_else(|| err(404, "error_404_gcs.json")),
        ("PUT", ["storage", "v1", "projects", _, "hmacKeys", id]) => {
            let Some(k) = s.hmac.get_mut(*id) else {
                return err(404, "error_404_gcs.json");
            };
            k["state"] = body["state"].clone();
            ok(k.clone())
        }
        ("DELETE", ["storage", "v1", "projects", _, "hmacKeys", id]) => match s.hmac.get(*id) {
            None => err(404, "error_404_gcs.json"),
            Some(k) if k["state"] == "ACTIVE" => Resp {
                status: 400,
                body: json!({"error": {"code": 400, "message": "Cannot delete keys in 'ACTIVE' state.", "errors": [{"reason": "invalid"}]}}),
                headers: vec![],
            },
            Some(_) => {
                s.hmac.remove(*id);
                Resp { status: 204, body: Json::Null, headers: vec![] }
            }
        },
        // ---- IAM
        ("POST", ["v1", "projects", p, "serviceAccounts"]) => {
            let email = format!("{}@{p}.iam.gserviceaccount.com", body["accountId"].as_str().unwrap());
            if s.service_accounts.contains_key(&email) {
                return Resp {
                    status: 409,
                    body: json!({"error": {"code": 409, "message": format!("Service account {} already exists within project projects/{p}.", body["accountId"].as_str().unwrap()), "status": "ALREADY_EXISTS"}}),
                    headers: vec![],
                };
            }
            let mut sa = fixture("service_account.json");
            sa["email"] = json!(email);
            sa["name"] = json!(format!("projects/{p}/serviceAccounts/{email}"));
            s.service_accounts.insert(email, sa.clone());
            ok(sa)
        }
        ("DELETE", ["v1", "projects", _, "serviceAccounts", email]) => {
            let email = email.replace("%40", "@");
            if s.service_accounts.remove(&email).is_none() {
                return err(404, "error_404_gke.json");
            }
            ok(json!({}))
        }
        _ => Resp {
            status: 404,
            body: json!({"error": {"code": 404, "message": format!("mock: no route for {method} {target}"), "status": "NOT_FOUND"}}),
            headers: vec![],
        },
    }
}
