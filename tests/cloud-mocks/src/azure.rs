//! A local mock of Azure Resource Manager, answering with the documented request/response
//! shapes (fixtures in fixtures/azure, modelled on the public REST API reference): resource
//! groups, managed clusters (PUT/DELETE as long-running operations with Azure-AsyncOperation),
//! storage accounts (PUT with a Location poll), blob containers, management policies,
//! listKeys and listClusterUserCredential, CloudError bodies, and injected failures.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const SUB: &str = "00000000-0000-0000-0000-00000000abcd";
pub const TOKEN: &str = "test-token";

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/azure/{name}", crate::FIXTURES)).unwrap()
}

pub fn fixture_json(name: &str) -> Json {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// A canned answer for the next `times` requests matching method and path fragment.
#[derive(Clone)]
pub struct Inject {
    pub method: &'static str,
    pub path_contains: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub times: u32,
}

enum Finish {
    /// Mark the resource Succeeded.
    Succeed {
        key: String,
    },
    /// Insert the resource (storage account creation).
    Insert {
        key: String,
        body: Json,
    },
    Remove {
        key: String,
    },
}

struct Op {
    remaining: u32,
    finish: Finish,
    fail: bool,
}

#[derive(Default)]
pub struct State {
    /// Resources by lowercased path.
    pub resources: BTreeMap<String, Json>,
    ops: HashMap<String, Op>,
    next_op: u32,
    /// `METHOD /path?query` of every request.
    pub log: Vec<String>,
    /// Bodies of PUT requests by lowercased path (the last one).
    pub put_bodies: BTreeMap<String, Json>,
    pub inject: Vec<Inject>,
    /// How many polls answer "in progress" before an operation completes.
    pub polls: u32,
    /// The next long-running operation fails (quota exceeded).
    pub fail_next_op: bool,
    /// Blob names by `account/container` (the Blob service data plane).
    pub blobs: BTreeMap<String, Vec<String>>,
}

impl State {
    pub fn count(&self, prefix: &str) -> usize {
        self.log.iter().filter(|l| l.starts_with(prefix)).count()
    }
    pub fn count_containing(&self, method: &str, fragment: &str) -> usize {
        self.log.iter().filter(|l| l.starts_with(method) && l.to_lowercase().contains(&fragment.to_lowercase())).count()
    }
}

pub struct Mock {
    pub base: String,
    pub state: Arc<Mutex<State>>,
}

impl Mock {
    pub async fn start() -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State { polls: 2, ..State::default() }));
        let (st, b) = (state.clone(), base.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let (st, b) = (st.clone(), b.clone());
                tokio::spawn(async move {
                    let Some((method, target, headers, body)) = read_request(&mut sock).await else { return };
                    let (status, hdrs, body) = handle(&st, &b, &method, &target, &headers, &body);
                    let mut out = format!(
                        "HTTP/1.1 {status} {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n",
                        reason(status),
                        body.len()
                    );
                    for (k, v) in hdrs {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&body);
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Mock { base, state }
    }

    /// Starts the mock on a thread of its own (for tests that block, e.g. running the CLI as a
    /// child process); it serves until the test process ends.
    pub fn start_in_thread() -> Mock {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let m = Mock::start().await;
                tx.send((m.base.clone(), m.state.clone())).unwrap();
                std::future::pending::<()>().await
            })
        });
        let (base, state) = rx.recv().unwrap();
        Mock { base, state }
    }

    pub fn inject(&self, i: Inject) {
        self.state.lock().unwrap().inject.push(i);
    }

    pub fn error(&self, method: &'static str, path_contains: &str, status: u16, fixture_name: &str, headers: &[(&str, &str)], times: u32) {
        self.inject(Inject {
            method,
            path_contains: path_contains.to_lowercase(),
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: fixture(fixture_name),
            times,
        });
    }

    /// Removes every resource whose path contains `fragment` (deleted out of band).
    pub fn remove(&self, fragment: &str) {
        let f = fragment.to_lowercase();
        self.state.lock().unwrap().resources.retain(|k, _| !k.contains(&f));
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        _ => "Status",
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<(String, String, HashMap<String, String>, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: HashMap<String, String> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((method, target, headers, String::from_utf8_lossy(&body).to_string()))
}

type Answer = (u16, Vec<(String, String)>, String);

fn cloud_error(status: u16, code: &str, message: &str) -> Answer {
    (status, vec![], json!({"error": {"code": code, "message": message}}).to_string())
}

fn not_found(path: &str, state: &State) -> Answer {
    // ARM answers ResourceGroupNotFound when the group itself is missing.
    let lower = path.to_lowercase();
    if let Some(i) = lower.find("/resourcegroups/") {
        let rest = &lower[i + "/resourcegroups/".len()..];
        let rg_end = rest.find('/').map(|e| i + "/resourcegroups/".len() + e);
        if let Some(end) = rg_end
            && !state.resources.contains_key(&lower[..end])
        {
            return (404, vec![], fixture("error_404_resource_group.json"));
        }
    }
    (404, vec![], fixture("error_404_resource.json"))
}

fn expected_api_version(path: &str) -> Option<&'static str> {
    let p = path.to_lowercase();
    if p.contains("/operations/") || p.contains("/operationresults/") || p.contains("/asyncoperations/") {
        None
    } else if p.contains("/providers/microsoft.containerservice/") {
        Some("2024-05-01")
    } else if p.contains("/providers/microsoft.storage/") {
        Some("2023-05-01")
    } else {
        Some("2021-04-01")
    }
}

fn handle(state: &Mutex<State>, base: &str, method: &str, target: &str, headers: &HashMap<String, String>, body: &str) -> Answer {
    let mut st = state.lock().unwrap();
    st.log.push(format!("{method} {target}"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let lower = path.to_lowercase();
    if let Some(pos) = st.inject.iter().position(|i| i.method == method && lower.contains(&i.path_contains)) {
        let i = st.inject[pos].clone();
        if i.times <= 1 {
            st.inject.remove(pos);
        } else {
            st.inject[pos].times -= 1;
        }
        return (i.status, i.headers, i.body);
    }
    // Microsoft identity platform token endpoint (client-credentials grant).
    if method == "POST" && lower.ends_with("/oauth2/v2.0/token") {
        let form: HashMap<&str, &str> = body.split('&').filter_map(|kv| kv.split_once('=')).collect();
        if form.get("grant_type") != Some(&"client_credentials") || form.get("scope") != Some(&"https%3A%2F%2Fmanagement.azure.com%2F.default") {
            return (
                400,
                vec![],
                json!({"error": "invalid_request", "error_description": "AADSTS900144: The request body must contain grant_type and scope."}).to_string(),
            );
        }
        if form.get("client_secret") != Some(&"s3cret%2B") {
            return (
                401,
                vec![],
                json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1"}).to_string(),
            );
        }
        return (200, vec![], json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": TOKEN}).to_string());
    }
    // The Blob service of the mock's storage accounts (their primaryEndpoints.blob point here).
    if let Some(rest) = lower.strip_prefix("/blobdata/") {
        return blob_service(&st, method, rest, query, headers);
    }
    if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
        return cloud_error(401, "InvalidAuthenticationToken", "The access token is invalid.");
    }
    let api = query.split('&').find_map(|kv| kv.strip_prefix("api-version="));
    if let Some(want) = expected_api_version(path)
        && api != Some(want)
    {
        return cloud_error(
            400,
            "InvalidApiVersionParameter",
            &format!("The api-version '{}' is invalid. The supported version here is '{want}'.", api.unwrap_or("")),
        );
    }
    let sub_prefix = format!("/subscriptions/{SUB}").to_lowercase();
    if !lower.starts_with(&sub_prefix) {
        return cloud_error(404, "SubscriptionNotFound", "The subscription could not be found.");
    }
    let body: Json = if body.is_empty() { Json::Null } else { serde_json::from_str(body).unwrap_or(Json::Null) };

    // Long-running operation status.
    if lower.contains("/operations/") || lower.contains("/operationresults/") || lower.contains("/asyncoperations/") {
        let id = lower.rsplit('/').next().unwrap_or_default().to_string();
        let location_style = !lower.contains("/operations/");
        let Some(op) = st.ops.get_mut(&id) else { return cloud_error(404, "NotFound", "operation not found") };
        if op.remaining > 0 {
            op.remaining -= 1;
            let retry = vec![("Retry-After".to_string(), "1".to_string())];
            if location_style {
                let loc = format!("{base}{target}");
                return (202, [retry, vec![("Location".into(), loc)]].concat(), String::new());
            }
            return (200, retry, fixture("async_in_progress.json").replace("{operationId}", &id));
        }
        let op = st.ops.remove(&id).unwrap();
        if op.fail {
            return (200, vec![], fixture("async_failed.json").replace("{operationId}", &id));
        }
        let result = match op.finish {
            Finish::Succeed { key } => {
                if let Some(r) = st.resources.get_mut(&key) {
                    r["properties"]["provisioningState"] = "Succeeded".into();
                }
                st.resources.get(&key).cloned().unwrap_or(Json::Null)
            }
            Finish::Insert { key, body } => {
                st.resources.insert(key, body.clone());
                body
            }
            Finish::Remove { key } => {
                st.resources.retain(|k, _| !k.starts_with(&key));
                Json::Null
            }
        };
        if location_style {
            return (200, vec![], if result.is_null() { String::new() } else { result.to_string() });
        }
        return (200, vec![], fixture("async_succeeded.json").replace("{operationId}", &id));
    }

    let new_op = |st: &mut State, finish: Finish| -> String {
        st.next_op += 1;
        let id = format!("op-{:04}", st.next_op);
        let fail = std::mem::take(&mut st.fail_next_op);
        let remaining = st.polls;
        st.ops.insert(id.clone(), Op { remaining, finish, fail });
        id
    };

    let segments: Vec<&str> = lower.trim_matches('/').split('/').collect();
    // /subscriptions/{s}/resourcegroups (list)
    if segments.len() == 3 && segments[2] == "resourcegroups" && method == "GET" {
        let list: Vec<Json> = st.resources.iter().filter(|(k, _)| k.matches('/').count() == 4).map(|(_, v)| v.clone()).collect();
        return (200, vec![], json!({ "value": list }).to_string());
    }
    if method == "POST" {
        if let Some(cluster) = lower.strip_suffix("/listclusterusercredential") {
            let Some(c) = st.resources.get(cluster) else { return not_found(path, &st) };
            let fqdn = c["properties"]["fqdn"].as_str().unwrap_or_default();
            let name = c["name"].as_str().unwrap_or_default();
            let rg = segments.get(3).copied().unwrap_or_default();
            let kube = fixture("kubeconfig_user.yaml").replace("{fqdn}", fqdn).replace("{cluster}", name).replace("{resourceGroup}", rg);
            let b64 = base64::engine::general_purpose::STANDARD.encode(kube);
            return (200, vec![], fixture("credential_results.json").replace("{kubeconfig-base64}", &b64));
        }
        if let Some(account) = lower.strip_suffix("/listkeys") {
            if !st.resources.contains_key(account) {
                return not_found(path, &st);
            }
            return (200, vec![], fixture("list_keys.json"));
        }
        return cloud_error(404, "NotFound", "unknown action");
    }
    // List containers: GET .../blobServices/default/containers
    if method == "GET" && lower.ends_with("/blobservices/default/containers") {
        let account = lower.trim_end_matches("/blobservices/default/containers");
        if !st.resources.contains_key(account) {
            return not_found(path, &st);
        }
        let prefix = format!("{lower}/");
        let list: Vec<Json> = st.resources.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| v.clone()).collect();
        return (200, vec![], json!({ "value": list }).to_string());
    }
    match method {
        "GET" => match st.resources.get(&lower) {
            Some(r) => (200, vec![], r.to_string()),
            None => not_found(path, &st),
        },
        "PUT" => {
            st.put_bodies.insert(lower.clone(), body.clone());
            let exists = st.resources.contains_key(&lower);
            let parent_rg = segments.get(..4).map(|s| format!("/{}", s.join("/")));
            let is_rg = segments.len() == 4 && segments[2] == "resourcegroups";
            if !is_rg && parent_rg.as_ref().is_some_and(|rg| !st.resources.contains_key(rg)) {
                return not_found(path, &st);
            }
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            if is_rg {
                let mut rg = fixture_json("resource_group.json");
                rg["id"] = format!("/subscriptions/{SUB}/resourceGroups/{name}").into();
                rg["name"] = name.into();
                rg["location"] = body["location"].clone();
                rg["tags"] = body["tags"].clone();
                st.resources.insert(lower, rg.clone());
                return (if exists { 200 } else { 201 }, vec![], rg.to_string());
            }
            if lower.contains("/managedclusters/") && segments.len() == 8 {
                if body["identity"]["type"] != "SystemAssigned"
                    || body["properties"]["agentPoolProfiles"][0]["mode"] != "System"
                    || !body["location"].is_string()
                {
                    return cloud_error(400, "InvalidParameter", "a managed cluster needs a location, an identity and a System agent pool");
                }
                if let Some(prev) = st.resources.get(&lower) {
                    if prev["location"] != body["location"] {
                        return cloud_error(400, "LocationNotAllowedForUpdate", "The location of an existing managed cluster cannot be changed.");
                    }
                    if prev["properties"]["provisioningState"] != "Succeeded" {
                        return (409, vec![], fixture("error_409.json"));
                    }
                }
                let loc = body["location"].as_str().unwrap_or_default().to_string();
                let mut c = fixture_json("managed_cluster.json");
                c["id"] = path.into();
                c["name"] = name.clone().into();
                c["location"] = loc.clone().into();
                c["tags"] = body["tags"].clone();
                let p = &mut c["properties"];
                let version = body["properties"]["kubernetesVersion"].as_str().unwrap_or("1.29.7").to_string();
                p["kubernetesVersion"] = version.clone().into();
                p["currentKubernetesVersion"] = if version.split('.').count() == 2 { format!("{version}.5") } else { version.clone() }.into();
                let prefix = body["properties"]["dnsPrefix"].as_str().unwrap_or(&name).to_string();
                p["dnsPrefix"] = prefix.clone().into();
                p["fqdn"] = format!("{prefix}-abcd1234.hcp.{loc}.azmk8s.io").into();
                p["azurePortalFQDN"] = format!("{prefix}-abcd1234.portal.hcp.{loc}.azmk8s.io").into();
                p["nodeResourceGroup"] = format!("MC_{}_{name}_{loc}", segments[3]).into();
                let mut pool = p["agentPoolProfiles"][0].clone();
                for (k, v) in body["properties"]["agentPoolProfiles"][0].as_object().unwrap() {
                    pool[k] = v.clone();
                }
                p["agentPoolProfiles"] = json!([pool]);
                p["provisioningState"] = if exists { "Updating" } else { "Creating" }.into();
                st.resources.insert(lower.clone(), c.clone());
                let id = new_op(&mut st, Finish::Succeed { key: lower });
                let op_url = format!("{base}/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations/{loc}/operations/{id}?api-version=2024-05-01");
                return (if exists { 200 } else { 201 }, vec![("Azure-AsyncOperation".into(), op_url), ("Retry-After".into(), "1".into())], c.to_string());
            }
            if lower.contains("/storageaccounts/") && segments.len() == 8 {
                let loc = body["location"].as_str().unwrap_or_default().to_string();
                let mut a = fixture_json("storage_account.json");
                a["id"] = path.into();
                a["name"] = name.clone().into();
                a["location"] = loc.clone().into();
                a["tags"] = body["tags"].clone();
                a["properties"]["primaryLocation"] = loc.clone().into();
                for svc in ["blob", "dfs", "file", "queue", "table", "web"] {
                    a["properties"]["primaryEndpoints"][svc] = format!("https://{name}.{svc}.core.windows.net/").into();
                }
                // The Blob service is served by the mock itself.
                a["properties"]["primaryEndpoints"]["blob"] = format!("{base}/blobdata/{name}/").into();
                if exists {
                    st.resources.insert(lower, a.clone());
                    return (200, vec![], a.to_string());
                }
                let id = new_op(&mut st, Finish::Insert { key: lower, body: a });
                let loc_url =
                    format!("{base}/subscriptions/{SUB}/providers/Microsoft.Storage/locations/{loc}/asyncoperations/{id}?monitor=true&api-version=2023-05-01");
                return (202, vec![("Location".into(), loc_url), ("Retry-After".into(), "1".into())], String::new());
            }
            if lower.contains("/blobservices/default/containers/") {
                let account = lower.split("/blobservices/").next().unwrap().to_string();
                if !st.resources.contains_key(&account) {
                    return not_found(path, &st);
                }
                let mut c = fixture_json("blob_container.json");
                c["id"] = path.into();
                c["name"] = name.into();
                if let Some(pa) = body["properties"]["publicAccess"].as_str() {
                    c["properties"]["publicAccess"] = pa.into();
                }
                st.resources.insert(lower, c.clone());
                return (if exists { 200 } else { 201 }, vec![], c.to_string());
            }
            if lower.ends_with("/managementpolicies/default") {
                let account = lower.split("/managementpolicies/").next().unwrap().to_string();
                if !st.resources.contains_key(&account) {
                    return not_found(path, &st);
                }
                let mut m = fixture_json("management_policy.json");
                m["id"] = path.into();
                m["properties"]["policy"] = body["properties"]["policy"].clone();
                st.resources.insert(lower, m.clone());
                return (200, vec![], m.to_string());
            }
            cloud_error(400, "InvalidResourceType", "unknown resource type")
        }
        "DELETE" => {
            if !st.resources.contains_key(&lower) {
                return (204, vec![], String::new());
            }
            if lower.contains("/managedclusters/") {
                let loc = st.resources[&lower]["location"].as_str().unwrap_or_default().to_string();
                st.resources.get_mut(&lower).unwrap()["properties"]["provisioningState"] = "Deleting".into();
                let id = new_op(&mut st, Finish::Remove { key: lower });
                let op_url = format!("{base}/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations/{loc}/operations/{id}?api-version=2024-05-01");
                let res_url =
                    format!("{base}/subscriptions/{SUB}/providers/Microsoft.ContainerService/locations/{loc}/operationresults/{id}?api-version=2024-05-01");
                return (202, vec![("Azure-AsyncOperation".into(), op_url), ("Location".into(), res_url), ("Retry-After".into(), "1".into())], String::new());
            }
            st.resources.retain(|k, _| !k.starts_with(&lower));
            (200, vec![], String::new())
        }
        _ => cloud_error(405, "MethodNotAllowed", "method not allowed"),
    }
}

/// The storage error body of the Blob service (XML).
fn storage_error(status: u16, code: &str, message: &str) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:00000000-0000-0000-0000-000000000000\nTime:2026-11-25T09:00:00.0000000Z</Message></Error>"
    );
    (status, vec![("x-ms-error-code".into(), code.into()), ("content-type".into(), "application/xml".into())], body)
}

/// List Blobs (`GET /{container}?restype=container&comp=list`), authorized with Shared Key:
/// the signature is checked against the account's key1, computed here independently of the
/// provider from the documented string to sign.
fn blob_service(st: &State, method: &str, rest: &str, query: &str, headers: &HashMap<String, String>) -> Answer {
    use hmac::Mac;
    let (account, container) = rest.split_once('/').unwrap_or((rest, ""));
    let account_known = st.resources.keys().any(|k| k.ends_with(&format!("/storageaccounts/{account}")));
    if !account_known {
        return storage_error(404, "ResourceNotFound", "The specified resource does not exist.");
    }
    let params: BTreeMap<String, String> = query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_lowercase(), v.to_string())).collect();
    if method != "GET" || params.get("restype").map(String::as_str) != Some("container") || params.get("comp").map(String::as_str) != Some("list") {
        return storage_error(400, "UnsupportedHttpVerb", "The mock serves List Blobs only.");
    }
    let (Some(date), Some(version), Some(auth)) = (headers.get("x-ms-date"), headers.get("x-ms-version"), headers.get("authorization")) else {
        return storage_error(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
        );
    };
    let keys: Json = fixture_json("list_keys.json");
    let key = base64::engine::general_purpose::STANDARD.decode(keys["keys"][0]["value"].as_str().unwrap()).unwrap();
    let mut canonical = format!("/{account}/{container}");
    for (k, v) in &params {
        canonical.push_str(&format!("\n{k}:{v}"));
    }
    let to_sign = format!("GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{canonical}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let expected = format!("SharedKey {account}:{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    if *auth != expected {
        return storage_error(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
        );
    }
    let container_known = st.resources.keys().any(|k| k.ends_with(&format!("/storageaccounts/{account}/blobservices/default/containers/{container}")));
    if !container_known {
        return storage_error(404, "ContainerNotFound", "The specified container does not exist.");
    }
    let max: usize = params.get("maxresults").and_then(|m| m.parse().ok()).unwrap_or(5000);
    let blobs: String = st
        .blobs
        .get(&format!("{account}/{container}"))
        .into_iter()
        .flatten()
        .take(max)
        .map(|b| format!("<Blob><Name>{b}</Name><Properties><Content-Length>1024</Content-Length><BlobType>BlockBlob</BlobType></Properties></Blob>"))
        .collect();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"https://{account}.blob.core.windows.net/\" ContainerName=\"{container}\"><MaxResults>{max}</MaxResults><Blobs>{blobs}</Blobs><NextMarker /></EnumerationResults>"
    );
    (200, vec![("content-type".into(), "application/xml".into())], body)
}
