//! Test doubles for azure_identity: a login host (`https://login.test`) that either forwards to a
//! local mock over plain http (azure_identity only accepts https authority hosts) or answers
//! token requests itself, and a fake `az` executor.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Output};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::http::headers::Headers;
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Request, StatusCode, Transport, Url};
use azure_identity::Executor;
use kdeploy_provider_azure::credential::Options;

/// The authority host the tests configure (`AZURE_AUTHORITY_HOST`).
pub const LOGIN: &str = "https://login.test";

type Answer = Box<dyn Fn(&str, &str) -> (u16, String) + Send + Sync>;

/// The Microsoft Entra ID login host of the tests.
pub struct FakeLogin {
    /// `(url, form body)` of every request.
    pub seen: Mutex<Vec<(String, String)>>,
    /// Answer in-process from `(path, body)`...
    answer: Option<Answer>,
    /// ...or send to this http base instead of `https://login.test`.
    forward_to: Option<String>,
    http: Arc<dyn HttpClient>,
}

impl std::fmt::Debug for FakeLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLogin").field("forward_to", &self.forward_to).finish_non_exhaustive()
    }
}

impl FakeLogin {
    /// Sends `https://login.test/...` requests to `base` (e.g. the ARM mock's token endpoint).
    pub fn forwarding_to(base: &str) -> Arc<FakeLogin> {
        Arc::new(FakeLogin { seen: Mutex::new(Vec::new()), answer: None, forward_to: Some(base.to_string()), http: azure_core::http::new_http_client(None) })
    }

    /// Answers every request with `answer(path, form body)` → (status, JSON body).
    pub fn answering(answer: impl Fn(&str, &str) -> (u16, String) + Send + Sync + 'static) -> Arc<FakeLogin> {
        Arc::new(FakeLogin { seen: Mutex::new(Vec::new()), answer: Some(Box::new(answer)), forward_to: None, http: azure_core::http::new_http_client(None) })
    }

    pub fn options(self: &Arc<Self>) -> Options {
        Options { transport: Some(Transport::new(self.clone())), executor: None }
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

fn body_text(r: &Request) -> String {
    match r.body() {
        Body::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

#[async_trait]
impl HttpClient for FakeLogin {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let url = request.url().to_string();
        let body = body_text(request);
        self.seen.lock().unwrap().push((url.clone(), body.clone()));
        let path = url.strip_prefix(LOGIN).unwrap_or_else(|| panic!("a request outside the login host: {url}")).to_string();
        if let Some(answer) = &self.answer {
            let (status, json) = answer(&path, &body);
            let mut headers = Headers::new();
            headers.insert("content-type", "application/json; charset=utf-8");
            return Ok(AsyncRawResponse::from_bytes(StatusCode::from(status), headers, json.into_bytes()));
        }
        let mut r = request.clone();
        *r.url_mut() = Url::parse(&format!("{}{path}", self.forward_to.as_deref().unwrap()))?;
        self.http.execute_request(&r).await
    }
}

/// The `key=value` pairs of a form body (values left URL-encoded).
pub fn form(body: &str) -> std::collections::BTreeMap<String, String> {
    body.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A fake `az`: records each command line and answers with a fixed exit code and output.
#[derive(Debug)]
pub struct FakeAz {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub commands: Mutex<Vec<String>>,
}

impl FakeAz {
    pub fn new(code: i32, stdout: &str, stderr: &str) -> Arc<FakeAz> {
        Arc::new(FakeAz { code, stdout: stdout.into(), stderr: stderr.into(), commands: Mutex::new(Vec::new()) })
    }

    /// What `az account get-access-token -o json` prints for `token`, valid for an hour.
    pub fn token_json(token: &str) -> String {
        let expires_on = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
        serde_json::json!({
            "accessToken": token,
            "expiresOn": "2099-01-01 00:00:00.000000",
            "expires_on": expires_on,
            "subscription": "00000000-0000-0000-0000-00000000abcd",
            "tenant": "tenant-1",
            "tokenType": "Bearer"
        })
        .to_string()
    }

    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

#[async_trait]
impl Executor for FakeAz {
    async fn run(&self, program: &OsStr, args: &[&OsStr]) -> std::io::Result<Output> {
        let mut line = program.to_string_lossy().into_owned();
        for a in args {
            line.push(' ');
            line.push_str(&a.to_string_lossy());
        }
        self.commands.lock().unwrap().push(line);
        Ok(Output { status: ExitStatus::from_raw(self.code << 8), stdout: self.stdout.clone().into_bytes(), stderr: self.stderr.clone().into_bytes() })
    }
}

/// A variable lookup over fixed pairs (an empty value counts as unset).
pub fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let m: std::collections::BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k: &str| m.get(k).cloned()
}
