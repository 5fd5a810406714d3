//! HTTP layer: routing, verbs, server-side apply, watch, discovery.

use crate::fields::{self, FieldSet, Path};
use crate::resources;
use crate::{Shared, State, WatchEvent, now_rfc3339};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

type RespBody = BoxBody<Bytes, Infallible>;

pub async fn serve(listener: std::net::TcpListener, state: Shared, mut shutdown: tokio::sync::oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let ctrl_state = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let mut st = ctrl_state.lock().unwrap_or_else(|e| e.into_inner());
            crate::controller::tick(&mut st);
        }
    });
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            acc = listener.accept() => {
                let Ok((stream, _)) = acc else { continue };
                let st = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.poll_recv(cx) {
            Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub(crate) enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
    /// Plain text made at request time (pod logs).
    Log(String),
    Bytes(&'static str, Vec<u8>),
    Watch(WatchReq),
}

pub(crate) struct WatchReq {
    res: usize,
    ns: Option<String>,
    sel: Selectors,
    initial: Vec<WatchEvent>,
    rx: tokio::sync::broadcast::Receiver<WatchEvent>,
    timeout: u64,
    bookmark_rv: Option<u64>,
}

fn json_resp(code: u16, v: &Value) -> Response<RespBody> {
    Response::builder()
        .status(code)
        .header("Content-Type", "application/json")
        .header("Audit-Id", crate::new_uid())
        .body(Full::new(Bytes::from(serde_json::to_vec(v).unwrap())).boxed())
        .unwrap()
}

async fn handle(state: Shared, req: Request<Incoming>) -> Result<Response<RespBody>, Infallible> {
    let method = req.method().as_str().to_string();
    let path_q = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let headers: HashMap<String, String> = req.headers().iter().map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string())).collect();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if let Some(target) = proxy_target(&state, &method, &path_q) {
        return Ok(match target {
            Ok((url, rest)) => forward(&method, &url, &rest, &headers, body.to_vec()).await,
            Err((code, v)) => json_resp(code, &v),
        });
    }
    let reply = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.requests.push((method.clone(), path_q));
        dispatch(&mut st, &method, &path, &query, &headers, &body)
    };
    Ok(match reply {
        Reply::Json(code, v) => json_resp(code, &v),
        Reply::Text(code, t) => Response::builder()
            .status(code)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(t.as_bytes())).boxed())
            .unwrap(),
        Reply::Log(t) => Response::builder().status(200).header("Content-Type", "text/plain").body(Full::new(Bytes::from(t)).boxed()).unwrap(),
        Reply::Bytes(ct, b) => Response::builder().status(200).header("Content-Type", ct).body(Full::new(Bytes::from(b)).boxed()).unwrap(),
        Reply::Watch(w) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
            tokio::spawn(run_watch(w, tx));
            Response::builder()
                .status(200)
                .header("Content-Type", "application/json")
                .header("Transfer-Encoding", "chunked")
                .body(BodyExt::boxed(ChannelBody(rx)))
                .unwrap()
        }
    })
}

/// `/api/v1/namespaces/{ns}/services/{name}[:{port}]/proxy/...`: the registered target and the
/// path to forward, or the error the real API server gives (no such service, no endpoints).
fn proxy_target(state: &Shared, method: &str, path_q: &str) -> Option<Result<(String, String), (u16, Value)>> {
    let rest = path_q.strip_prefix("/api/v1/namespaces/")?;
    let (ns, rest) = rest.split_once("/services/")?;
    let (svc_port, rest) = rest.split_once("/proxy").map(|(a, b)| (a, b.to_string())).or_else(|| rest.strip_suffix("/proxy").map(|a| (a, String::new())))?;
    if ns.contains('/') || svc_port.contains('/') {
        return None;
    }
    let (svc, port) = svc_port.split_once(':').unwrap_or((svc_port, ""));
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.requests.push((method.to_string(), path_q.to_string()));
    if !st.objects.contains_key(&(resources::SVC, ns.to_string(), svc.to_string())) {
        return Some(Err(not_found(resources::SVC, svc)));
    }
    let port = if port.is_empty() {
        st.objects[&(resources::SVC, ns.to_string(), svc.to_string())]["spec"]["ports"][0]["port"].as_i64().map(|p| p.to_string()).unwrap_or_default()
    } else {
        port.to_string()
    };
    let rest = if rest.is_empty() { "/".to_string() } else { rest };
    Some(match st.proxies.get(&(ns.to_string(), svc.to_string(), port)) {
        Some(url) => Ok((url.clone(), rest)),
        None => Err(status_err(503, "ServiceUnavailable", format!("no endpoints available for service \"{svc}\""), None)),
    })
}

/// Forwards one request to `base + path` and relays status, content type and body.
async fn forward(method: &str, base: &str, path: &str, headers: &HashMap<String, String>, body: Vec<u8>) -> Response<RespBody> {
    let (method, url, path) = (method.to_string(), base.to_string(), path.to_string());
    let skip = ["host", "connection", "content-length", "transfer-encoding", "authorization", "accept-encoding"];
    let headers: Vec<(String, String)> = headers.iter().filter(|(k, _)| !skip.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<(u16, String, Vec<u8>)> {
        use std::io::{Read, Write};
        let authority = url.strip_prefix("http://").unwrap_or(&url).to_string();
        let mut stream = std::net::TcpStream::connect(&authority)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(502);
        let ct = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_else(|| "text/plain".into());
        Ok((code, ct, raw.get(split + 4..).unwrap_or_default().to_vec()))
    })
    .await;
    match result {
        Ok(Ok((code, ct, body))) => Response::builder().status(code).header("Content-Type", ct).body(Full::new(Bytes::from(body)).boxed()).unwrap(),
        Ok(Err(e)) => {
            let (c, v) = status_err(503, "ServiceUnavailable", format!("error trying to reach service: {e}"), None);
            json_resp(c, &v)
        }
        Err(e) => {
            let (c, v) = status_err(500, "InternalError", e.to_string(), None);
            json_resp(c, &v)
        }
    }
}

async fn run_watch(mut w: WatchReq, tx: tokio::sync::mpsc::Sender<Bytes>) {
    let line = |typ: &str, obj: &Value| {
        let mut b = serde_json::to_vec(&json!({"type": typ, "object": obj})).unwrap();
        b.push(b'\n');
        Bytes::from(b)
    };
    for ev in std::mem::take(&mut w.initial) {
        if tx.send(line(ev.typ, &ev.obj)).await.is_err() {
            return;
        }
    }
    if let Some(rv) = w.bookmark_rv {
        let r = &resources::res(w.res);
        let bm = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"resourceVersion": rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
        if tx.send(line("BOOKMARK", &bm)).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(w.timeout);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            ev = w.rx.recv() => match ev {
                Ok(ev) => {
                    if ev.res != w.res || w.ns.as_ref().is_some_and(|n| *n != ev.ns) || !w.sel.matches(&ev.obj) {
                        continue;
                    }
                    if tx.send(line(ev.typ, &ev.obj)).await.is_err() { return; }
                }
                // Too slow a reader: the real server closes such a watch too (the client resumes
                // from its last resourceVersion); skipping events would lose them silently.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                Err(_) => return,
            }
        }
    }
}

pub(crate) fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------- errors

pub(crate) type ApiResult<T> = Result<T, (u16, Value)>;

pub(crate) fn status_err(code: u16, reason: &str, message: String, details: Option<Value>) -> (u16, Value) {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason});
    if let Some(d) = details {
        s["details"] = d;
    }
    s["code"] = json!(code);
    (code, s)
}

fn details(res: usize, name: &str) -> Value {
    let r = &resources::res(res);
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !r.group.is_empty() {
        d.insert("group".into(), json!(r.group));
    }
    d.insert("kind".into(), json!(r.plural));
    Value::Object(d)
}

pub(crate) fn not_found(res: usize, name: &str) -> (u16, Value) {
    status_err(404, "NotFound", format!("{} \"{}\" not found", resources::res(res).group_resource(), name), Some(details(res, name)))
}

fn already_exists(res: usize, name: &str) -> (u16, Value) {
    status_err(409, "AlreadyExists", format!("{} \"{}\" already exists", resources::res(res).group_resource(), name), Some(details(res, name)))
}

fn conflict_rv(res: usize, name: &str) -> (u16, Value) {
    status_err(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
            resources::res(res).group_resource(),
            name
        ),
        Some(details(res, name)),
    )
}

fn bad_request(msg: impl Into<String>) -> (u16, Value) {
    status_err(400, "BadRequest", msg.into(), None)
}

fn invalid(res: usize, name: &str, errs: Vec<(String, &'static str, String)>) -> (u16, Value) {
    let r = &resources::res(res);
    let msgs: Vec<String> = errs.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
    let msg = if msgs.len() == 1 {
        format!("{} \"{}\" is invalid: {}", r.group_kind(), name, msgs[0])
    } else {
        format!("{} \"{}\" is invalid: [{}]", r.group_kind(), name, msgs.join(", "))
    };
    let causes: Vec<Value> = errs.iter().map(|(f, reason, m)| json!({"reason": reason, "message": m, "field": f})).collect();
    let mut d = Map::new();
    d.insert("name".into(), json!(name));
    if !r.group.is_empty() {
        d.insert("group".into(), json!(r.group));
    }
    d.insert("kind".into(), json!(r.kind));
    d.insert("causes".into(), json!(causes));
    status_err(422, "Invalid", msg, Some(Value::Object(d)))
}

fn unknown_resource() -> (u16, Value) {
    status_err(404, "NotFound", "the server could not find the requested resource".into(), Some(json!({})))
}

fn method_not_allowed(method: &str) -> (u16, Value) {
    status_err(405, "MethodNotAllowed", format!("the server does not allow this method on the requested resource ({method})"), Some(json!({})))
}

fn forbidden(st: &State, verb: &str, res: usize, ns: Option<&str>, name: &str) -> Option<(u16, Value)> {
    let r = &resources::res(res);
    let hit = st.opts.forbidden.iter().any(|(v, p, n)| (v == verb || v == "*") && (p == r.plural || p == "*") && (n.is_none() || n.as_deref() == ns));
    if !hit {
        return None;
    }
    let subject = if name.is_empty() { r.group_resource() } else { format!("{} \"{}\"", r.group_resource(), name) };
    let scope = match ns {
        Some(n) if r.namespaced => format!("in the namespace \"{n}\""),
        _ => "at the cluster scope".to_string(),
    };
    Some(status_err(
        403,
        "Forbidden",
        format!("{subject} is forbidden: User \"kdeploy-test\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}", r.plural, r.group),
        Some(details(res, name)),
    ))
}

// ---------------------------------------------------------------- discovery

fn discovery(st: &State, segs: &[&str]) -> Option<Value> {
    let groups: Vec<(&str, &str)> = {
        let mut g: Vec<(&str, &str)> = vec![];
        for (_, r) in resources::served(&st.crds).into_iter().filter(|(_, r)| !r.group.is_empty()) {
            if !g.contains(&(r.group, r.version)) {
                g.push((r.group, r.version));
            }
        }
        g
    };
    let group_json = |g: &str, v: &str| {
        json!({"name": g, "versions": [{"groupVersion": format!("{g}/{v}"), "version": v}],
               "preferredVersion": {"groupVersion": format!("{g}/{v}"), "version": v}})
    };
    let list = |group: &str, version: &str| {
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        let mut resources = vec![];
        for (_, r) in resources::served(&st.crds).into_iter().filter(|(_, r)| r.group == group && r.version == version) {
            let mut e = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind, "verbs": r.verbs()});
            if !r.short.is_empty() {
                e["shortNames"] = json!(r.short);
            }
            if r.plural == "deployments" || r.plural == "statefulsets" || r.plural == "pods" || r.plural == "jobs" {
                e["categories"] = json!(["all"]);
            }
            if r.plural == "services" {
                e["categories"] = json!(["all"]);
            }
            resources.push(e);
            if r.status {
                resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
            }
        }
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    };
    Some(match segs {
        ["version"] => {
            json!({"major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33", "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
            "gitVersion": "v1.33.0-kdeploy-test", "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"})
        }
        ["api"] => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", st.port)}]}),
        ["apis"] => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups.iter().map(|(g, v)| group_json(g, v)).collect::<Vec<_>>()}),
        ["api", "v1"] => list("", "v1"),
        ["apis", g] => {
            let (g, v) = groups.iter().find(|(gg, _)| gg == g)?;
            let mut j = group_json(g, v);
            j["kind"] = json!("APIGroup");
            j["apiVersion"] = json!("v1");
            j
        }
        ["apis", g, v] if groups.contains(&(*g, *v)) => list(g, v),
        _ => return None,
    })
}

// ---------------------------------------------------------------- selectors

#[derive(Clone, Default)]
pub(crate) struct Selectors {
    labels: Vec<(String, String, Vec<String>)>,
    fields: Vec<(String, bool, String)>,
}

fn split_top(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

impl Selectors {
    pub(crate) fn parse(label: Option<&String>, field: Option<&String>) -> Result<Selectors, String> {
        let mut s = Selectors::default();
        for req in split_top(label.map(String::as_str).unwrap_or("")) {
            if let Some(k) = req.strip_prefix('!') {
                s.labels.push((k.trim().into(), "!".into(), vec![]));
            } else if let Some((k, v)) = req.split_once("!=") {
                s.labels.push((k.trim().into(), "!=".into(), vec![v.trim().into()]));
            } else if let Some((k, v)) = req.split_once("==") {
                s.labels.push((k.trim().into(), "=".into(), vec![v.trim().into()]));
            } else if let Some((k, v)) = req.split_once('=') {
                s.labels.push((k.trim().into(), "=".into(), vec![v.trim().into()]));
            } else if req.contains('(') {
                let (head, rest) = req.split_once('(').unwrap();
                let mut it = head.split_whitespace();
                let (Some(k), Some(op), None) = (it.next(), it.next(), it.next()) else {
                    return Err(format!("unable to parse requirement: {req}"));
                };
                if op != "in" && op != "notin" {
                    return Err(format!("unable to parse requirement: found '{op}', expected: in, notin"));
                }
                let vals = rest.trim_end_matches(')').split(',').map(|v| v.trim().to_string()).collect();
                s.labels.push((k.into(), op.into(), vals));
            } else if req.contains(' ') || req.contains('<') || req.contains('>') {
                return Err(format!("unable to parse requirement: {req}"));
            } else {
                s.labels.push((req, "exists".into(), vec![]));
            }
        }
        for req in split_top(field.map(String::as_str).unwrap_or("")) {
            if let Some((k, v)) = req.split_once("!=") {
                s.fields.push((k.trim().into(), false, v.trim().into()));
            } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
                s.fields.push((k.trim().into(), true, v.trim().into()));
            } else {
                return Err(format!("invalid selector: '{req}'; can't understand '{req}'"));
            }
        }
        Ok(s)
    }

    pub(crate) fn matches(&self, o: &Value) -> bool {
        let labels = o.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        for (k, op, vals) in &self.labels {
            let v = get(k);
            let ok = match op.as_str() {
                "=" => v == Some(vals[0].as_str()),
                "!=" => v != Some(vals[0].as_str()),
                "in" => v.is_some_and(|v| vals.iter().any(|x| x == v)),
                "notin" => v.is_none_or(|v| !vals.iter().any(|x| x == v)),
                "exists" => v.is_some(),
                "!" => v.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        for (path, eq, want) in &self.fields {
            let mut cur = Some(o);
            for part in path.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let got = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            if (got == *want) != *eq {
                return false;
            }
        }
        true
    }
}

// ---------------------------------------------------------------- helpers

pub(crate) fn spec_part(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    c
}

const IGNORED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
];

/// The part of an object whose fields are tracked for the main resource / status subresource.
fn tracked(res: usize, o: &Value, status: bool) -> Value {
    if status {
        return match o.get("status") {
            Some(s) => json!({"status": s}),
            None => json!({}),
        };
    }
    let mut c = o.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if resources::res(res).status {
            m.remove("status");
        }
        if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in IGNORED_META {
                md.remove(*f);
            }
            if md.is_empty() {
                m.remove("metadata");
            }
        }
    }
    c
}

#[derive(Clone, Debug)]
pub(crate) struct MfEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub set: FieldSet,
}

pub(crate) fn read_mf(o: &Value) -> Vec<MfEntry> {
    o.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| MfEntry {
                    manager: e["manager"].as_str().unwrap_or("").into(),
                    operation: e["operation"].as_str().unwrap_or("").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or("").into(),
                    time: e["time"].as_str().unwrap_or("").into(),
                    subresource: e["subresource"].as_str().unwrap_or("").into(),
                    set: fields::from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn write_mf(o: &mut Value, mf: &[MfEntry]) {
    let arr: Vec<Value> = mf
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version, "time": e.time,
                "fieldsType": "FieldsV1", "fieldsV1": fields::to_fields_v1(&e.set)});
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let md = o["metadata"].as_object_mut().unwrap();
    if arr.is_empty() {
        md.remove("managedFields");
    } else {
        md.insert("managedFields".into(), Value::Array(arr));
    }
}

fn is_item_elem(p: &Path) -> bool {
    p.last().is_some_and(|e| e.starts_with("k:") || e.starts_with("v:"))
}

/// Ownership bookkeeping for an Update (PUT / PATCH / POST / controller).
pub(crate) fn record_update(res: usize, old: Option<&Value>, new: &mut Value, manager: &str, subresource: &str) {
    let status = subresource == "status";
    let old_t = old.map(|o| tracked(res, o, status)).unwrap_or(json!({}));
    let new_t = tracked(res, new, status);
    let new_set = fields::field_set_of(&new_t);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| {
            let a = fields::get_at(&old_t, p);
            if is_item_elem(p) { a.is_none() } else { a != fields::get_at(&new_t, p) }
        })
        .cloned()
        .collect();
    let mut mf = old.map(read_mf).unwrap_or_default();
    // drop paths that no longer exist (only within the part this request can touch)
    for e in mf.iter_mut() {
        e.set.retain(|p| {
            let in_scope =
                if status { p.first().is_some_and(|f| f == "f:status") } else { p.first().is_none_or(|f| f != "f:status") || !resources::res(res).status };
            !in_scope || fields::get_at(&new_t, p).is_some()
        });
    }
    if !changed.is_empty() {
        for e in mf.iter_mut() {
            e.set.retain(|p| !changed.contains(p));
        }
        let api_version = resources::res(res).api_version();
        let now = now_rfc3339();
        match mf.iter_mut().find(|e| e.manager == manager && e.operation == "Update" && e.subresource == subresource) {
            Some(e) => {
                e.set.extend(changed);
                e.time = now;
            }
            None => {
                mf.push(MfEntry { manager: manager.into(), operation: "Update".into(), api_version, time: now, subresource: subresource.into(), set: changed })
            }
        }
    }
    mf.retain(|e| !e.set.is_empty());
    write_mf(new, &mf);
}

fn manager_desc(e: &MfEntry) -> String {
    let mut s = format!("{:?}", e.manager);
    if !e.subresource.is_empty() {
        s = format!("{s} with subresource {:?}", e.subresource);
    }
    if e.operation == "Update" {
        s = format!("{s} using {}", e.api_version);
    }
    s
}

// ---------------------------------------------------------------- dispatch

struct Target<'a> {
    res: usize,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<&'a str>,
}

fn route<'a>(st: &State, segs: &[&'a str]) -> Option<Target<'a>> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let find = |p: &str| resources::find_plural(&st.crds, group, version, p);
    match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let res = find(plural)?;
            if !resources::res(res).namespaced {
                return None;
            }
            let (name, sub) = match tail {
                [] => (None, None),
                [n] => (Some(n.to_string()), None),
                [n, s] => (Some(n.to_string()), Some(*s)),
                _ => return None,
            };
            Some(Target { res, ns: Some(ns.to_string()), name, sub })
        }
        [plural, tail @ ..] => {
            let res = find(plural)?;
            let (name, sub) = match tail {
                [] => (None, None),
                [n] => (Some(n.to_string()), None),
                [n, s] => (Some(n.to_string()), Some(*s)),
                _ => return None,
            };
            if resources::res(res).namespaced && name.is_some() {
                return None;
            }
            Some(Target { res, ns: None, name, sub })
        }
        _ => None,
    }
}

fn parse_body(body: &[u8]) -> ApiResult<Value> {
    if body.starts_with(b"k8s\0") {
        return crate::proto::decode(body).ok_or_else(|| {
            status_err(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml".into(),
                None,
            )
        });
    }
    if body.is_empty() {
        return Err(bad_request(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        ));
    }
    serde_json::from_slice(body).or_else(|_| serde_yaml::from_slice::<Value>(body)).map_err(|e| bad_request(format!("error decoding request body: {e}")))
}

pub(crate) fn dispatch(st: &mut State, method: &str, path: &str, q: &HashMap<String, String>, h: &HashMap<String, String>, body: &[u8]) -> Reply {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    if matches!(segs.as_slice(), ["healthz"] | ["readyz"] | ["livez"]) {
        return Reply::Text(200, "ok");
    }
    if method == "GET" && segs == ["openapi", "v2"] {
        // An OpenAPI v2 document without definitions: kubectl (<= 1.26 style client-side
        // validation) skips validation of kinds it has no schema for.
        if h.get("accept").is_some_and(|a| a.contains("protobuf")) {
            let mut b = vec![0x0a, 3];
            b.extend_from_slice(b"2.0");
            let mut info = vec![0x0a, 10];
            info.extend_from_slice(b"Kubernetes");
            info.extend_from_slice(&[0x12, 7]);
            info.extend_from_slice(b"v1.33.0");
            b.push(0x12);
            b.push(info.len() as u8);
            b.extend(info);
            return Reply::Bytes("application/com.github.proto-openapi.spec.v2.v1.0+protobuf", b);
        }
        return Reply::Json(200, json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": {}, "definitions": {}}));
    }
    if method == "GET" && segs.first() == Some(&"openapi") {
        return match openapi(st, &segs[1..]) {
            Some(v) => Reply::Json(200, v),
            None => {
                let (c, v) = unknown_resource();
                Reply::Json(c, v)
            }
        };
    }
    if method == "GET"
        && let Some(v) = discovery(st, &segs)
    {
        return Reply::Json(200, v);
    }
    let Some(t) = route(st, &segs) else {
        let (c, v) = unknown_resource();
        return Reply::Json(c, v);
    };
    match handle_resource(st, method, t, q, h, body) {
        Ok(r) => r,
        Err((c, v)) => Reply::Json(c, v),
    }
}

fn verb_of(method: &str, item: bool, watch: bool) -> &'static str {
    match (method, item) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn handle_resource(st: &mut State, method: &str, t: Target, q: &HashMap<String, String>, h: &HashMap<String, String>, body: &[u8]) -> ApiResult<Reply> {
    let res = t.res;
    let r = &resources::res(res);
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    // cluster-scoped namespaces resource: /api/v1/namespaces/{name}
    let (ns, name) = if r.namespaced { (t.ns.clone(), t.name.clone()) } else { (None, t.name.clone()) };
    let verb = verb_of(method, name.is_some(), watch);
    let ns_for_auth = if r.namespaced { ns.as_deref() } else { None };
    if let Some(e) = forbidden(st, verb, res, ns_for_auth, name.as_deref().unwrap_or("")) {
        return Err(e);
    }
    if res == resources::POD && t.sub == Some("log") && method == "GET" {
        let (ns, name) = (ns.clone().unwrap_or_default(), name.clone().unwrap_or_default());
        if !st.objects.contains_key(&(res, ns.clone(), name.clone())) {
            return Err(not_found(res, &name));
        }
        return Ok(Reply::Log(st.pod_logs.get(&(ns, name)).cloned().unwrap_or_default()));
    }
    if let Some(sub) = t.sub
        && (sub != "status" || !r.status)
        && !(res == resources::NS && sub == "finalize")
    {
        return Err(unknown_resource());
    }
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All");
    let manager = q.get("fieldManager").cloned().unwrap_or_else(|| {
        let ua = h.get("user-agent").cloned().unwrap_or_default();
        let p = ua.split('/').next().unwrap_or("").to_string();
        if p.is_empty() { "unknown".into() } else { p }
    });
    let accept = h.get("accept").cloned().unwrap_or_default();
    let subresource = t.sub.filter(|s| *s == "status").unwrap_or("");
    match (method, name) {
        ("GET", None) => {
            let sel = Selectors::parse(q.get("labelSelector"), q.get("fieldSelector")).map_err(bad_request)?;
            if watch {
                return Ok(Reply::Watch(start_watch(st, res, ns, sel, q)?));
            }
            Ok(list(st, res, ns.as_deref(), &sel, q, &accept))
        }
        ("GET", Some(name)) => {
            let key = (res, ns.clone().unwrap_or_default(), name.clone());
            let o = st.objects.get(&key).cloned().ok_or_else(|| not_found(res, &name))?;
            if accept.contains("as=Table") {
                return Ok(Reply::Json(200, table(res, &[o], &accept, st.rv)));
            }
            Ok(Reply::Json(200, o))
        }
        ("POST", None) => {
            let obj = parse_body(body)?;
            let ns = match (&ns, r.namespaced) {
                (Some(n), true) => Some(n.clone()),
                (None, true) => return Err(method_not_allowed(method)),
                _ => None,
            };
            let o = create(st, res, ns.as_deref(), obj, &manager, dry_run, None)?;
            Ok(Reply::Json(201, o))
        }
        ("PUT", Some(name)) => {
            let obj = parse_body(body)?;
            let o = replace(st, res, ns.as_deref(), &name, obj, &manager, dry_run, subresource)?;
            Ok(Reply::Json(200, o))
        }
        ("PATCH", Some(name)) => {
            let ct = h.get("content-type").cloned().unwrap_or_default();
            let ct = ct.split(';').next().unwrap_or("").trim().to_string();
            let (code, o) = patch(st, res, ns.as_deref(), &name, &ct, body, q, &manager, dry_run, subresource)?;
            Ok(Reply::Json(code, o))
        }
        ("DELETE", Some(name)) => {
            let opts: Value = if body.is_empty() { json!({}) } else { parse_body(body)? };
            let o = delete(st, res, ns.as_deref(), &name, &opts, q, dry_run)?;
            Ok(Reply::Json(200, o))
        }
        ("DELETE", None) => {
            let sel = Selectors::parse(q.get("labelSelector"), q.get("fieldSelector")).map_err(bad_request)?;
            let keys: Vec<_> =
                st.objects.iter().filter(|(k, v)| k.0 == res && ns.as_ref().is_none_or(|n| *n == k.1) && sel.matches(v)).map(|(k, _)| k.clone()).collect();
            let mut items = vec![];
            for k in keys {
                let o = if dry_run { st.objects.get(&k).cloned() } else { st.remove_cascade(k.0, &k.1, &k.2, false) };
                items.extend(o);
            }
            Ok(Reply::Json(
                200,
                json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            ))
        }
        (m, _) => Err(method_not_allowed(m)),
    }
}

fn start_watch(st: &mut State, res: usize, ns: Option<String>, sel: Selectors, q: &HashMap<String, String>) -> ApiResult<WatchReq> {
    let rx = st.tx.subscribe();
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let matches = |ev_res: usize, ev_ns: &str, o: &Value| ev_res == res && ns.as_ref().is_none_or(|n| n == ev_ns) && sel.matches(o);
    let mut initial = vec![];
    let mut bookmark_rv = None;
    if rv_param.is_empty() || rv_param == "0" || send_initial {
        for ((r, n, _), o) in st.objects.iter() {
            if matches(*r, n, o) {
                initial.push(WatchEvent { rv: st.rv, res, ns: n.clone(), typ: "ADDED", obj: o.clone() });
            }
        }
        if send_initial {
            bookmark_rv = Some(st.rv);
        }
    } else {
        let from: u64 = rv_param.parse().map_err(|_| bad_request(format!("invalid resource version: {rv_param}")))?;
        let oldest = st.history.front().map(|e| e.rv).unwrap_or(st.rv);
        if from + 1 < oldest && from < st.rv {
            initial.push(WatchEvent {
                rv: st.rv,
                res,
                ns: String::new(),
                typ: "ERROR",
                obj: status_err(410, "Expired", format!("too old resource version: {from} ({oldest})"), None).1,
            });
        } else {
            for ev in st.history.iter().filter(|e| e.rv > from && matches(e.res, &e.ns, &e.obj)) {
                initial.push(ev.clone());
            }
        }
    }
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800);
    Ok(WatchReq { res, ns, sel, initial, rx, timeout, bookmark_rv })
}

fn list(st: &State, res: usize, ns: Option<&str>, sel: &Selectors, q: &HashMap<String, String>, accept: &str) -> Reply {
    let r = &resources::res(res);
    // The store is ordered by (resource, namespace, name): one range, not a scan of every
    // object.
    let first = (res, ns.unwrap_or_default().to_string(), String::new());
    let all: Vec<&Value> =
        st.objects.range(first..).take_while(|(k, _)| k.0 == res && ns.is_none_or(|n| n == k.1)).filter(|(_, v)| sel.matches(v)).map(|(_, v)| v).collect();
    let offset: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page: Vec<&Value> = all.iter().skip(offset).take(limit).copied().collect();
    let mut md = json!({"resourceVersion": st.rv.to_string()});
    if offset + page.len() < all.len() {
        md["continue"] = json!((offset + page.len()).to_string());
        md["remainingItemCount"] = json!(all.len() - offset - page.len());
    }
    if accept.contains("as=Table") {
        let page: Vec<Value> = page.into_iter().cloned().collect();
        let mut t = table(res, &page, accept, st.rv);
        t["metadata"] = md;
        return Reply::Json(200, t);
    }
    // Written straight from the store, items without their apiVersion and kind (as a real
    // API server lists them): no copy of a LIST that is megabytes at a thousand Deployments.
    let mut out = serde_json::to_vec(&json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": md})).unwrap();
    out.pop();
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in page.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &Untyped(item)).unwrap();
    }
    out.extend_from_slice(b"]}");
    Reply::Bytes("application/json", out)
}

/// An object as a LIST item: without `apiVersion` and `kind`.
struct Untyped<'a>(&'a Value);

impl serde::Serialize for Untyped<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_object() {
            Some(m) => s.collect_map(m.iter().filter(|(k, _)| *k != "apiVersion" && *k != "kind")),
            None => self.0.serialize(s),
        }
    }
}

fn parse_ts(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let n = |a: usize, l: usize| ts.get(a..a + l)?.parse::<i64>().ok();
    let (y, m, d, hh, mm, ss) = (n(0, 4)?, n(5, 2)?, n(8, 2)?, n(11, 2)?, n(14, 2)?, n(17, 2)?);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

fn age(ts: &str) -> String {
    let Some(t) = parse_ts(ts) else { return "<unknown>".into() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let s = (now - t).max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else {
        format!("{d}d")
    }
}

/// Minimal OpenAPI v3: enough for kubectl's query-parameter verifier
/// (server-side field validation, dry-run) — no schemas.
fn openapi(st: &State, segs: &[&str]) -> Option<Value> {
    let served = resources::served(&st.crds);
    let mut gvs: Vec<(&str, &str)> = vec![];
    for (_, r) in &served {
        if !gvs.contains(&(r.group, r.version)) {
            gvs.push((r.group, r.version));
        }
    }
    let gv_path = |g: &str, v: &str| if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
    match segs {
        ["v3"] => {
            let mut paths = Map::new();
            for (g, v) in &gvs {
                let p = gv_path(g, v);
                paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0000000000000000")}));
            }
            Some(json!({"paths": paths}))
        }
        ["v3", rest @ ..] => {
            let want = rest.join("/");
            let (g, v) = gvs.iter().find(|(g, v)| gv_path(g, v) == want)?;
            let params = json!([
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "force", "in": "query", "schema": {"type": "boolean"}},
            ]);
            let mut paths = Map::new();
            for (_, r) in served.iter().filter(|(_, r)| r.group == *g && r.version == *v) {
                let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
                let base =
                    if r.namespaced { format!("/{}/namespaces/{{namespace}}/{}", gv_path(g, v), r.plural) } else { format!("/{}/{}", gv_path(g, v), r.plural) };
                let op = |id: &str| json!({"operationId": id, "parameters": params, "x-kubernetes-action": id, "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}});
                paths.insert(base.clone(), json!({"post": op("post"), "get": op("list")}));
                paths.insert(format!("{base}/{{name}}"), json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
            }
            Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": {}}}))
        }
        _ => None,
    }
}

fn table(res: usize, objs: &[Value], accept: &str, rv: u64) -> Value {
    let api = if accept.contains("as=Table;v=v1;") || accept.contains("as=Table;v=v1,") || accept.ends_with("as=Table;v=v1") || accept.contains("v=v1;as=Table")
    {
        "meta.k8s.io/v1"
    } else {
        "meta.k8s.io/v1beta1"
    };
    let kind = resources::res(res).kind;
    let mut cols = vec![json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0})];
    let extra: Vec<(&str, Box<dyn Fn(&Value) -> Value>)> = match kind {
        "Namespace" => vec![("Status", Box::new(|o: &Value| o.pointer("/status/phase").cloned().unwrap_or(json!(""))))],
        "Deployment" => vec![
            (
                "Ready",
                Box::new(|o: &Value| {
                    json!(format!(
                        "{}/{}",
                        o.pointer("/status/readyReplicas").and_then(Value::as_i64).unwrap_or(0),
                        o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)
                    ))
                }),
            ),
            ("Up-to-date", Box::new(|o: &Value| json!(o.pointer("/status/updatedReplicas").and_then(Value::as_i64).unwrap_or(0)))),
            ("Available", Box::new(|o: &Value| json!(o.pointer("/status/availableReplicas").and_then(Value::as_i64).unwrap_or(0)))),
        ],
        "Pod" => vec![(
            "Status",
            Box::new(|o: &Value| {
                let w = o.pointer("/status/containerStatuses/0/state/waiting/reason").cloned();
                w.unwrap_or_else(|| o.pointer("/status/phase").cloned().unwrap_or(json!("")))
            }),
        )],
        _ => vec![],
    };
    for (n, _) in &extra {
        cols.push(json!({"name": n, "type": "string", "format": "", "description": "", "priority": 0}));
    }
    cols.push(json!({"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            for (_, f) in &extra {
                cells.push(f(o));
            }
            cells.push(json!(age(o.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or(""))));
            let mut md = o["metadata"].clone();
            if let Some(m) = md.as_object_mut() {
                m.remove("managedFields");
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": md}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": api, "metadata": {"resourceVersion": rv.to_string()}, "columnDefinitions": cols, "rows": rows})
}

fn check_type(res: usize, o: &Value) -> ApiResult<()> {
    let r = &resources::res(res);
    let av = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let k = o.get("kind").and_then(Value::as_str).unwrap_or("");
    if (!av.is_empty() && av != r.api_version()) || (!k.is_empty() && k != r.kind) {
        return Err(bad_request(format!("the API version in the data ({av}) does not match the expected API version ({})", r.api_version())));
    }
    Ok(())
}

fn ensure_meta(res: usize, o: &mut Value, ns: Option<&str>) -> ApiResult<()> {
    let r = &resources::res(res);
    if !o.is_object() {
        return Err(bad_request("the body of the request must be an object"));
    }
    o["apiVersion"] = json!(r.api_version());
    o["kind"] = json!(r.kind);
    if !o["metadata"].is_object() {
        o["metadata"] = json!({});
    }
    if r.namespaced {
        let ns = ns.unwrap_or("default");
        match o.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
            _ => o["metadata"]["namespace"] = json!(ns),
        }
    } else if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    Ok(())
}

fn random_suffix(n: usize) -> String {
    const CH: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let u = uuid::Uuid::new_v4();
    u.as_bytes().iter().take(n).map(|b| CH[*b as usize % CH.len()] as char).collect()
}

pub(crate) fn create(st: &mut State, res: usize, ns: Option<&str>, mut obj: Value, manager: &str, dry_run: bool, apply: Option<&FieldSet>) -> ApiResult<Value> {
    let r = &resources::res(res);
    check_type(res, &obj)?;
    ensure_meta(res, &mut obj, ns)?;
    if obj.pointer("/metadata/name").and_then(Value::as_str).is_none_or(str::is_empty)
        && let Some(g) = obj.pointer("/metadata/generateName").and_then(Value::as_str)
    {
        let n = format!("{g}{}", random_suffix(5));
        obj["metadata"]["name"] = json!(n);
    }
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    if r.namespaced {
        let n = ns.unwrap_or("default");
        if !st.objects.contains_key(&(resources::NS, String::new(), n.to_string())) {
            return Err(not_found(resources::NS, n));
        }
    }
    for f in ["uid", "resourceVersion", "creationTimestamp", "managedFields", "deletionTimestamp", "selfLink"] {
        obj["metadata"].as_object_mut().unwrap().remove(f);
    }
    if r.status && res != resources::NS {
        obj.as_object_mut().unwrap().remove("status");
    }
    if res == resources::NS {
        obj.as_object_mut().unwrap().remove("status");
    }
    st.init_meta(res, &mut obj);
    resources::apply_defaults(res, &mut obj);
    if res == resources::JOB {
        resources::job_create_defaults(&mut obj);
    }
    let errs = resources::validate(res, &obj);
    if !errs.is_empty() {
        return Err(invalid(res, &name, errs));
    }
    let key = State::key_of(res, &obj);
    if st.objects.contains_key(&key) {
        return Err(already_exists(res, &name));
    }
    // allocations
    if res == resources::SVC {
        allocate_service(st, &mut obj, None)?;
    }
    if res == resources::PVC {
        if obj.pointer("/spec/storageClassName").is_none() {
            let def = st.objects.iter().find(|(k, v)| {
                k.0 == resources::SC && v.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class").and_then(Value::as_str) == Some("true")
            });
            if let Some((k, _)) = def {
                obj["spec"]["storageClassName"] = json!(k.2);
            }
        }
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
        obj["spec"]["volumeName"] = json!(format!("pvc-{uid}"));
        let storage = obj.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("1Gi"));
        let modes = obj.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"]));
        obj["status"] = json!({"phase": "Bound", "accessModes": modes, "capacity": {"storage": storage}});
    }
    match apply {
        Some(set) => {
            let mut mf = vec![MfEntry {
                manager: manager.into(),
                operation: "Apply".into(),
                api_version: r.api_version(),
                time: now_rfc3339(),
                subresource: String::new(),
                set: set.clone(),
            }];
            mf.retain(|e| !e.set.is_empty());
            write_mf(&mut obj, &mf);
        }
        None => record_update(res, None, &mut obj, manager, ""),
    }
    if dry_run {
        return Ok(obj);
    }
    Ok(st.store(res, obj))
}

fn allocate_service(st: &mut State, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" && obj.pointer("/spec/clusterIP").and_then(Value::as_str).is_none_or(str::is_empty) {
        let ip = match old.and_then(|o| o.pointer("/spec/clusterIP")) {
            Some(ip) => ip.as_str().unwrap_or("").to_string(),
            None => {
                let used: Vec<String> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| k.0 == resources::SVC)
                    .filter_map(|(_, v)| v.pointer("/spec/clusterIP").and_then(Value::as_str).map(String::from))
                    .collect();
                loop {
                    let ip = format!("10.152.183.{}", st.next_ip);
                    st.next_ip = if st.next_ip >= 254 { 2 } else { st.next_ip + 1 };
                    if !used.contains(&ip) {
                        break ip;
                    }
                }
            }
        };
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    } else if let Some(ip) = obj.pointer("/spec/clusterIP").cloned()
        && obj.pointer("/spec/clusterIPs").is_none()
    {
        obj["spec"]["clusterIPs"] = json!([ip]);
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let my_ns = obj.pointer("/metadata/namespace").cloned();
        let used: Vec<i64> = st
            .objects
            .iter()
            .filter(|(k, _)| k.0 == resources::SVC && !(Some(json!(k.1)) == my_ns && k.2 == name))
            .flat_map(|(_, v)| v.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .collect();
        let old_ports = old.and_then(|o| o.pointer("/spec/ports")).and_then(Value::as_array).cloned().unwrap_or_default();
        // This Service's own node ports with their protocol: as in Kubernetes, one node port
        // may serve one port number over TCP and UDP, but not twice over one protocol.
        let mut mine: Vec<(i64, String)> = Vec::new();
        if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
                match p.get("nodePort").and_then(Value::as_i64) {
                    Some(np) => {
                        if !(30000..=32767).contains(&np) {
                            return Err(invalid(
                                resources::SVC,
                                &name,
                                vec![(
                                    format!("spec.ports[{i}].nodePort"),
                                    "FieldValueInvalid",
                                    format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"),
                                )],
                            ));
                        }
                        if used.contains(&np) {
                            return Err(invalid(
                                resources::SVC,
                                &name,
                                vec![(
                                    format!("spec.ports[{i}].nodePort"),
                                    "FieldValueInvalid",
                                    format!("Invalid value: {np}: provided port is already allocated"),
                                )],
                            ));
                        }
                        if mine.contains(&(np, protocol.clone())) {
                            return Err(invalid(
                                resources::SVC,
                                &name,
                                vec![(format!("spec.ports[{i}].nodePort"), "FieldValueDuplicate", format!("Duplicate value: {np}"))],
                            ));
                        }
                        mine.push((np, protocol));
                    }
                    None => {
                        let prev = old_ports.iter().find(|op| op.get("port") == p.get("port")).and_then(|op| op.get("nodePort")).and_then(Value::as_i64);
                        let np = match prev {
                            Some(np) => np,
                            None => loop {
                                let c = st.next_node_port as i64;
                                st.next_node_port = if st.next_node_port >= 32767 { 30000 } else { st.next_node_port + 1 };
                                if !used.contains(&c) && !mine.iter().any(|(m, _)| *m == c) {
                                    break c;
                                }
                            },
                        };
                        mine.push((np, protocol));
                        p["nodePort"] = json!(np);
                    }
                }
            }
        }
    }
    Ok(())
}

fn finish_update(st: &mut State, res: usize, old: &Value, mut new: Value, dry_run: bool) -> ApiResult<Value> {
    let name = old.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    // immutable metadata
    for f in ["uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp"] {
        match old["metadata"].get(f) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    resources::apply_defaults(res, &mut new);
    if res == resources::SVC {
        allocate_service(st, &mut new, Some(old))?;
    }
    let errs = resources::validate(res, &new);
    if !errs.is_empty() {
        return Err(invalid(res, &name, errs));
    }
    if resources::res(res).generation && spec_part(old) != spec_part(&new) {
        let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    if *old == new || dry_run {
        return Ok(new);
    }
    Ok(st.store(res, new))
}

/// Status-only or main-resource merge of a full new object over the old one.
fn scope_new(res: usize, old: &Value, mut new: Value, subresource: &str) -> Value {
    if subresource == "status" {
        let mut o = old.clone();
        match new.get("status") {
            Some(s) => o["status"] = s.clone(),
            None => {
                o.as_object_mut().unwrap().remove("status");
            }
        }
        // metadata changes through status are ignored except managedFields handling
        return o;
    }
    if resources::res(res).status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    new
}

fn replace(st: &mut State, res: usize, ns: Option<&str>, name: &str, mut obj: Value, manager: &str, dry_run: bool, subresource: &str) -> ApiResult<Value> {
    check_type(res, &obj)?;
    ensure_meta(res, &mut obj, ns)?;
    let body_name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    if body_name != name {
        return Err(bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
    }
    let key = (res, ns.unwrap_or("").to_string(), name.to_string());
    let old = st.objects.get(&key).cloned().ok_or_else(|| not_found(res, name))?;
    if let Some(rv) = obj.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        && !rv.is_empty()
        && Some(rv) != old.pointer("/metadata/resourceVersion").and_then(Value::as_str)
    {
        return Err(conflict_rv(res, name));
    }
    let mut new = scope_new(res, &old, obj, subresource);
    if new.pointer("/metadata/managedFields").is_none() || subresource == "status" {
        new["metadata"]["managedFields"] = old["metadata"].get("managedFields").cloned().unwrap_or(Value::Null);
    }
    let mut defaulted = new.clone();
    resources::apply_defaults(res, &mut defaulted);
    record_update(res, Some(&old), &mut defaulted, manager, subresource);
    if spec_part(&old) == spec_part(&defaulted) && tracked(res, &old, false) == tracked(res, &defaulted, false) && old.get("status") == defaulted.get("status")
    {
        return Ok(old);
    }
    finish_update(st, res, &old, defaulted, dry_run)
}

#[allow(clippy::too_many_arguments)]
fn patch(
    st: &mut State,
    res: usize,
    ns: Option<&str>,
    name: &str,
    ct: &str,
    body: &[u8],
    q: &HashMap<String, String>,
    manager: &str,
    dry_run: bool,
    subresource: &str,
) -> ApiResult<(u16, Value)> {
    let key = (res, ns.unwrap_or("").to_string(), name.to_string());
    if ct == "application/apply-patch+yaml" {
        return apply(st, res, ns, name, body, q, dry_run, subresource);
    }
    let old = st.objects.get(&key).cloned().ok_or_else(|| not_found(res, name))?;
    let mut new = old.clone();
    match ct {
        "application/merge-patch+json" => {
            let p = parse_body(body)?;
            fields::merge_patch(&mut new, &p);
        }
        "application/strategic-merge-patch+json" => {
            let p = parse_body(body)?;
            fields::strategic_merge(&mut new, &p, &mut Vec::new());
        }
        "application/json-patch+json" => {
            let p = parse_body(body)?;
            fields::json_patch(&mut new, &p).map_err(|e| status_err(422, "Invalid", e, None))?;
        }
        _ => {
            return Err(status_err(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})"
                ),
                None,
            ));
        }
    }
    if let Some(rv) = new.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        && Some(rv) != old.pointer("/metadata/resourceVersion").and_then(Value::as_str)
    {
        return Err(conflict_rv(res, name));
    }
    if new.pointer("/metadata/name") != old.pointer("/metadata/name") {
        return Err(bad_request("metadata.name: Invalid value: the name of the object cannot be changed by a patch"));
    }
    let mut new = scope_new(res, &old, new, subresource);
    resources::apply_defaults(res, &mut new);
    record_update(res, Some(&old), &mut new, manager, subresource);
    if strip_mf(&old) == strip_mf(&new) {
        return Ok((200, old));
    }
    Ok((200, finish_update(st, res, &old, new, dry_run)?))
}

fn strip_mf(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    c
}

#[allow(clippy::too_many_arguments)]
fn apply(
    st: &mut State,
    res: usize,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
    q: &HashMap<String, String>,
    dry_run: bool,
    subresource: &str,
) -> ApiResult<(u16, Value)> {
    let r = &resources::res(res);
    let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()).cloned() else {
        return Err(bad_request("fieldManager is required for apply requests"));
    };
    let force = q.get("force").is_some_and(|f| f == "true");
    let mut cfg: Value = if body.is_empty() {
        return Err(bad_request("error decoding YAML: empty apply patch"));
    } else {
        serde_yaml::from_slice(body).map_err(|e| bad_request(format!("error decoding YAML: {e}")))?
    };
    if !cfg.is_object() {
        return Err(bad_request("error decoding YAML: apply patch must be an object"));
    }
    let av = cfg.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    if av != r.api_version() {
        return Err(bad_request(format!("Incorrect version specified in apply patch. Specified patch version: {av}, expected: {}", r.api_version())));
    }
    let kind = cfg.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    if kind != r.kind {
        return Err(bad_request(format!("Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}", r.kind)));
    }
    let body_name = cfg.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    if body_name != name {
        return Err(bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
    }
    if r.namespaced
        && let Some(n) = cfg.pointer("/metadata/namespace").and_then(Value::as_str)
        && Some(n) != ns
    {
        return Err(bad_request("the namespace of the provided object does not match the namespace sent on the request"));
    }
    let status = subresource == "status";
    let applied_t = tracked(res, &cfg, status);
    let applied_set = fields::field_set_of(&applied_t);
    let key = (res, ns.unwrap_or("").to_string(), name.to_string());
    let Some(old) = st.objects.get(&key).cloned() else {
        if status {
            return Err(not_found(res, name));
        }
        if r.status {
            cfg.as_object_mut().unwrap().remove("status");
        }
        let o = create(st, res, ns, cfg, &manager, dry_run, Some(&applied_set))?;
        return Ok((201, o));
    };
    if let Some(rv) = cfg.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        && Some(rv) != old.pointer("/metadata/resourceVersion").and_then(Value::as_str)
    {
        return Err(conflict_rv(res, name));
    }
    let live_t = tracked(res, &old, status);
    let mut mf = read_mf(&old);
    let is_me = |e: &MfEntry| e.manager == manager && e.operation == "Apply" && e.subresource == subresource;
    // conflicts
    let mut conflicts: Vec<(usize, Path)> = vec![];
    for p in applied_set.iter().filter(|p| !is_item_elem(p)) {
        let live_v = fields::get_at(&live_t, p);
        if live_v == fields::get_at(&applied_t, p) {
            continue;
        }
        for (i, e) in mf.iter().enumerate() {
            if !is_me(e) && e.subresource == subresource && e.set.contains(p) {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflict_error(&mf, &conflicts));
        }
        for (i, p) in &conflicts {
            mf[*i].set.remove(p);
        }
    }
    // removal of fields this manager no longer applies
    let prev: FieldSet = mf.iter().filter(|e| is_me(e)).flat_map(|e| e.set.iter().cloned()).collect();
    let others: FieldSet = mf.iter().filter(|e| !is_me(e)).flat_map(|e| e.set.iter().cloned()).collect();
    let mut new = old.clone();
    let prefix_removed: Vec<Path> = prev.iter().filter(|p| !applied_set.contains(*p) && !others.contains(*p)).cloned().collect();
    for p in &prefix_removed {
        // do not remove a parent whose children are still owned
        let has_owned_child = applied_set.iter().chain(others.iter()).any(|q| q.len() > p.len() && q.starts_with(p));
        if !has_owned_child {
            fields::remove_at(&mut new, p);
        }
    }
    let mut cfg_scoped = applied_t.clone();
    if status {
        cfg_scoped = json!({"status": applied_t.get("status").cloned().unwrap_or(json!({}))});
    }
    fields::apply_merge(&mut new, &cfg_scoped, &mut Vec::new());
    resources::apply_defaults(res, &mut new);
    // ownership: this manager owns exactly the applied set; others keep theirs
    let mut changed_mf = false;
    match mf.iter_mut().find(|e| is_me(e)) {
        Some(e) => {
            if e.set != applied_set {
                e.set = applied_set.clone();
                e.time = now_rfc3339();
                changed_mf = true;
            }
        }
        None => {
            mf.push(MfEntry {
                manager: manager.clone(),
                operation: "Apply".into(),
                api_version: r.api_version(),
                time: now_rfc3339(),
                subresource: subresource.into(),
                set: applied_set.clone(),
            });
            changed_mf = true;
        }
    }
    // drop paths that disappeared from the object for everybody
    let new_t = tracked(res, &new, status);
    for e in mf.iter_mut() {
        let before = e.set.len();
        e.set.retain(|p| {
            fields::get_at(&new_t, p).is_some()
                || (!status && p.first().is_some_and(|f| f == "f:status"))
                || (status && p.first().is_none_or(|f| f != "f:status"))
        });
        if e.set.len() != before {
            changed_mf = true;
        }
    }
    let before_len = mf.len();
    mf.retain(|e| !e.set.is_empty());
    changed_mf |= mf.len() != before_len || !conflicts.is_empty();
    if strip_mf(&old) == strip_mf(&new) && !changed_mf {
        return Ok((200, old));
    }
    write_mf(&mut new, &mf);
    Ok((200, finish_update(st, res, &old, new, dry_run)?))
}

fn conflict_error(mf: &[MfEntry], conflicts: &[(usize, Path)]) -> (u16, Value) {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(i, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", manager_desc(&mf[*i])), "field": fields::path_string(p)}))
        .collect();
    let msg = if conflicts.len() == 1 {
        let (i, p) = &conflicts[0];
        format!("Apply failed with 1 conflict: conflict with {}: {}", manager_desc(&mf[*i]), fields::path_string(p))
    } else {
        let mut order: Vec<usize> = vec![];
        for (i, _) in conflicts {
            if !order.contains(i) {
                order.push(*i);
            }
        }
        let mut lines = vec![];
        for i in order {
            lines.push(format!("conflicts with {}:", manager_desc(&mf[i])));
            for (_, p) in conflicts.iter().filter(|(j, _)| *j == i) {
                lines.push(format!("- {}", fields::path_string(p)));
            }
        }
        format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
    };
    let (code, mut v) = status_err(409, "Conflict", msg, Some(json!({"causes": causes})));
    v["code"] = json!(code);
    (code, v)
}

fn delete(st: &mut State, res: usize, ns: Option<&str>, name: &str, opts: &Value, q: &HashMap<String, String>, dry_run: bool) -> ApiResult<Value> {
    let r = &resources::res(res);
    let key = (res, ns.unwrap_or("").to_string(), name.to_string());
    let old = st.objects.get(&key).cloned().ok_or_else(|| not_found(res, name))?;
    if let Some(pre) = opts.get("preconditions") {
        let bad = |f: &str| pre.get(f).and_then(Value::as_str).is_some_and(|v| Some(v) != old["metadata"][f].as_str());
        if bad("resourceVersion") || bad("uid") {
            return Err(status_err(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    r.group_resource(),
                    name,
                    pre.get("uid").and_then(Value::as_str).unwrap_or(""),
                    old["metadata"]["uid"].as_str().unwrap_or("")
                ),
                Some(details(res, name)),
            ));
        }
    }
    let policy = opts
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| q.get("propagationPolicy").cloned())
        .or_else(|| match opts.get("orphanDependents").and_then(Value::as_bool) {
            Some(true) => Some("Orphan".into()),
            _ => None,
        })
        .unwrap_or_else(|| "Background".into());
    let mut shown = if dry_run { old.clone() } else { st.remove_cascade(res, key.1.as_str(), name, policy == "Orphan").unwrap_or(old.clone()) };
    let now = now_rfc3339();
    if res == resources::NS {
        shown["metadata"]["deletionTimestamp"] = json!(now);
        shown["status"]["phase"] = json!("Terminating");
        return Ok(shown);
    }
    if policy == "Foreground" {
        shown["metadata"]["deletionTimestamp"] = json!(now);
        shown["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        shown["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
        return Ok(shown);
    }
    if res == resources::POD {
        shown["metadata"]["deletionTimestamp"] = json!(now);
        shown["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        return Ok(shown);
    }
    let mut d = details(res, name);
    d["uid"] = old["metadata"]["uid"].clone();
    Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d}))
}
