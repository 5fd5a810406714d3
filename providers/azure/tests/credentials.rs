//! Credentials through azure_identity: which one the environment selects, workload identity
//! with a federated token file, the Azure CLI login, and the errors when they fail.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod identity;

use std::sync::Arc;
use std::time::Duration;

use identity::{FakeAz, FakeLogin, LOGIN, form, vars};
use kdeploy_cloud_mocks::azure::{Mock, SUB, TOKEN};
use kdeploy_provider::{ComponentRef, ErrorKind, Kind, Provider, Value};
use kdeploy_provider_azure::credential::{DEFAULT_SCOPE, Options, Source, arm_scope, from_lookup, select};
use kdeploy_provider_azure::{Arm, AzureProvider, Credential};

/// Checks that `credential` gets ARM to answer: the provider's preflight lists resource groups.
async fn arm_accepts(mock: &Mock, credential: Arc<dyn Credential>) {
    let mut arm = Arm::new(&mock.base, SUB, credential);
    arm.poll_interval = Duration::from_millis(5);
    arm.max_wait = Duration::from_millis(20);
    arm.progress = Arc::new(|_| {});
    let p = AzureProvider::new(arm);
    let aks = ComponentRef { address: "cluster.cloud".parse().unwrap(), kind: Kind::Cluster, type_name: "aks".into() };
    let desired = Value::Map([("location".to_string(), Value::string("westeurope"))].into_iter().collect());
    let pre = p.preflight(&[(aks, desired)]).await;
    assert!(pre.errors.is_empty(), "{:?}", pre.errors);
}

fn sp_vars() -> Vec<(&'static str, &'static str)> {
    vec![("AZURE_TENANT_ID", "tenant-1"), ("AZURE_CLIENT_ID", "client-1"), ("AZURE_CLIENT_SECRET", "s3cret+")]
}

// ---------------------------------------------------------------- precedence

#[test]
fn an_access_token_wins_over_everything() {
    let all = [
        ("AZURE_ACCESS_TOKEN", "tok"),
        ("AZURE_TENANT_ID", "tenant-1"),
        ("AZURE_CLIENT_ID", "client-1"),
        ("AZURE_CLIENT_SECRET", "s3cret+"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token"),
    ];
    assert_eq!(select(vars(&all)).unwrap(), Source::AccessToken);
}

#[test]
fn a_service_principal_wins_over_workload_identity_and_the_cli() {
    let mut v = sp_vars();
    v.push(("AZURE_FEDERATED_TOKEN_FILE", "/tmp/token"));
    v.push(("AZURE_ACCESS_TOKEN", "")); // empty counts as unset
    assert_eq!(select(vars(&v)).unwrap(), Source::ServicePrincipal { tenant_id: "tenant-1".into(), client_id: "client-1".into() });
}

#[test]
fn a_federated_token_file_selects_workload_identity() {
    let v = [("AZURE_TENANT_ID", "tenant-1"), ("AZURE_CLIENT_ID", "client-1"), ("AZURE_FEDERATED_TOKEN_FILE", "/tmp/token"), ("AZURE_CLIENT_SECRET", "")];
    assert_eq!(
        select(vars(&v)).unwrap(),
        Source::WorkloadIdentity { tenant_id: "tenant-1".into(), client_id: "client-1".into(), token_file: "/tmp/token".into() }
    );
}

#[test]
fn otherwise_the_azure_cli_login_is_used_for_the_subscription() {
    assert_eq!(select(vars(&[])).unwrap(), Source::AzureCli { subscription: None });
    // A tenant and client id alone (no secret, no token file) are not a credential.
    let v = [("AZURE_TENANT_ID", "tenant-1"), ("AZURE_CLIENT_ID", "client-1"), ("AZURE_SUBSCRIPTION_ID", SUB)];
    assert_eq!(select(vars(&v)).unwrap(), Source::AzureCli { subscription: Some(SUB.into()) });
}

#[test]
fn half_configured_credentials_are_errors_naming_what_is_missing() {
    let e = select(vars(&[("AZURE_CLIENT_ID", "client-1"), ("AZURE_CLIENT_SECRET", "s3cret+")])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(e.message.contains("AZURE_TENANT_ID") && !e.message.contains("s3cret"), "{}", e.message);
    let e = select(vars(&[("AZURE_TENANT_ID", "tenant-1"), ("AZURE_FEDERATED_TOKEN_FILE", "/tmp/token")])).unwrap_err();
    assert!(e.message.starts_with("AZURE_FEDERATED_TOKEN_FILE is set but AZURE_CLIENT_ID"), "{}", e.message);
}

#[tokio::test]
async fn from_lookup_builds_the_selected_credential() {
    let token = from_lookup(vars(&[("AZURE_ACCESS_TOKEN", "tok-1"), ("AZURE_TENANT_ID", "tenant-1")]), Options::default()).unwrap();
    assert_eq!(token.describe(), "a fixed access token");
    assert_eq!(token.token().await.unwrap(), "tok-1");

    let sp = from_lookup(vars(&sp_vars()), Options::default()).unwrap();
    assert!(sp.describe().starts_with("the service principal client-1 (tenant tenant-1"), "{}", sp.describe());

    let cli = from_lookup(vars(&[("AZURE_SUBSCRIPTION_ID", SUB)]), Options::default()).unwrap();
    assert!(cli.describe().contains("Azure CLI") && cli.describe().contains(SUB), "{}", cli.describe());
}

#[test]
fn configuration_errors_are_reported_when_the_credential_is_built() {
    // azure_identity only talks https to the authority host.
    let mut v = sp_vars();
    v.push(("AZURE_AUTHORITY_HOST", "http://login.example"));
    let e = from_lookup(vars(&v), Options::default()).err().unwrap();
    assert!(e.message.contains("HTTPS") && e.message.contains("AZURE_AUTHORITY_HOST"), "{}", e.message);
    assert!(!e.message.contains("s3cret"), "{}", e.message);

    // Workload identity reads its token file up front.
    let v = [("AZURE_TENANT_ID", "tenant-1"), ("AZURE_CLIENT_ID", "client-1"), ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent/kdeploy/token")];
    let e = from_lookup(vars(&v), Options::default()).err().unwrap();
    assert!(e.message.contains("/nonexistent/kdeploy/token") && e.message.contains("AZURE_FEDERATED_TOKEN_FILE"), "{}", e.message);
}

#[test]
fn the_scope_follows_the_resource_manager_endpoint() {
    assert_eq!(DEFAULT_SCOPE, "https://management.azure.com/.default");
    assert_eq!(arm_scope(None), DEFAULT_SCOPE);
    assert_eq!(arm_scope(Some("https://management.azure.com/")), DEFAULT_SCOPE);
    assert_eq!(arm_scope(Some("https://management.usgovcloudapi.net")), "https://management.core.usgovcloudapi.net/.default");
    assert_eq!(arm_scope(Some("https://management.chinacloudapi.cn/")), "https://management.core.chinacloudapi.cn/.default");
    assert_eq!(arm_scope(Some("https://management.local.azurestack.external/")), "https://management.local.azurestack.external/.default");
    // A local mock over plain http: the public scope.
    assert_eq!(arm_scope(Some("http://127.0.0.1:8080")), DEFAULT_SCOPE);
}

// ---------------------------------------------------------------- workload identity

#[tokio::test]
async fn workload_identity_exchanges_the_federated_token_file_for_an_arm_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(&file, "federated.jwt.from-the-cluster").unwrap();
    // A token endpoint that accepts only the client-assertion grant with the file's token.
    let login = FakeLogin::answering(|path, body| {
        let f = form(body);
        let ok = path == "/tenant-1/oauth2/v2.0/token"
            && f.get("grant_type").map(String::as_str) == Some("client_credentials")
            && f.get("client_id").map(String::as_str) == Some("client-1")
            && f.get("client_assertion").map(String::as_str) == Some("federated.jwt.from-the-cluster")
            && f.get("client_assertion_type").map(String::as_str) == Some("urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer")
            && f.get("scope").map(String::as_str) == Some("https%3A%2F%2Fmanagement.azure.com%2F.default")
            && !f.contains_key("client_secret");
        if ok {
            (200, serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "access_token": TOKEN}).to_string())
        } else {
            (400, serde_json::json!({"error": "invalid_client", "error_description": "AADSTS700213: No matching federated identity record found for presented assertion subject.", "error_codes": [700213]}).to_string())
        }
    });
    let file_s = file.to_string_lossy().into_owned();
    let v =
        [("AZURE_TENANT_ID", "tenant-1"), ("AZURE_CLIENT_ID", "client-1"), ("AZURE_FEDERATED_TOKEN_FILE", file_s.as_str()), ("AZURE_AUTHORITY_HOST", LOGIN)];
    let wi = from_lookup(vars(&v), login.options()).unwrap();
    assert!(wi.describe().starts_with("workload identity (client client-1, tenant tenant-1"), "{}", wi.describe());
    assert_eq!(wi.token().await.unwrap(), TOKEN);
    assert_eq!(wi.token().await.unwrap(), TOKEN);
    assert_eq!(login.requests().len(), 1, "cached");
    assert_eq!(login.requests()[0].0, "https://login.test/tenant-1/oauth2/v2.0/token");

    let mock = Mock::start().await;
    arm_accepts(&mock, wi).await;
}

#[tokio::test]
async fn a_rejected_federated_token_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "federated.jwt.wrong-subject").unwrap();
    let login = FakeLogin::answering(|_, _| {
        (400, serde_json::json!({"error": "invalid_client", "error_description": "AADSTS700213: No matching federated identity record found for presented assertion subject 'system:serviceaccount:default:kdeploy'.\r\nTrace ID: 9\r\nCorrelation ID: 9", "error_codes": [700213]}).to_string())
    });
    let file_s = file.to_string_lossy().into_owned();
    let v =
        [("AZURE_TENANT_ID", "tenant-1"), ("AZURE_CLIENT_ID", "client-1"), ("AZURE_FEDERATED_TOKEN_FILE", file_s.as_str()), ("AZURE_AUTHORITY_HOST", LOGIN)];
    let e = from_lookup(vars(&v), login.options()).unwrap().token().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(e.message.starts_with("workload identity (client client-1"), "{}", e.message);
    assert!(e.message.contains("AADSTS700213: No matching federated identity record found") && e.message.contains("(HTTP 400)"), "{}", e.message);
    assert!(e.message.contains("federated credential"), "{}", e.message);
    assert!(e.message.contains("AZURE_FEDERATED_TOKEN_FILE"), "{}", e.message);
    assert!(!e.message.contains("wrong-subject") && !e.message.contains("Trace ID"), "{}", e.message);
}

// ---------------------------------------------------------------- Azure CLI

#[tokio::test]
async fn the_azure_cli_login_supplies_the_token() {
    let az = FakeAz::new(0, &FakeAz::token_json(TOKEN), "");
    let cli = from_lookup(vars(&[("AZURE_SUBSCRIPTION_ID", SUB)]), Options { executor: Some(az.clone()), ..Options::default() }).unwrap();
    assert_eq!(cli.token().await.unwrap(), TOKEN);
    assert_eq!(cli.token().await.unwrap(), TOKEN);
    let commands = az.commands();
    assert_eq!(commands.len(), 1, "the token is cached, az runs once: {commands:?}");
    assert!(commands[0].contains("az account get-access-token -o json --scope https://management.azure.com/.default"), "{commands:?}");
    assert!(commands[0].contains(&format!("--subscription \"{SUB}\"")), "{commands:?}");

    let mock = Mock::start().await;
    arm_accepts(&mock, cli).await;
}

#[tokio::test]
async fn without_az_or_a_login_the_error_lists_every_way_to_sign_in() {
    let cases = [(127, "/bin/sh: 1: az: not found", "az not found on PATH"), (1, "ERROR: Please run 'az login' to setup account.", "Please run 'az login'")];
    for (code, stderr, reason) in cases {
        let az = FakeAz::new(code, "", stderr);
        let cli = from_lookup(vars(&[]), Options { executor: Some(az.clone()), ..Options::default() }).unwrap();
        let e = cli.token().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized, "{}", e.message);
        assert!(e.message.contains(reason), "{}", e.message);
        for way in ["az login", "AZURE_ACCESS_TOKEN", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"] {
            assert!(e.message.contains(way), "names {way}: {}", e.message);
        }
        assert_eq!(az.commands().len(), 1);
    }
}

#[tokio::test]
async fn an_az_failure_is_not_cached() {
    // E.g. an expired login: after `az login` the next call must run az again.
    let failing = FakeAz::new(1, "", "ERROR: AADSTS70043: The refresh token has expired. Please run 'az login'.");
    let cli = from_lookup(vars(&[]), Options { executor: Some(failing.clone()), ..Options::default() }).unwrap();
    assert!(cli.token().await.is_err());
    assert!(cli.token().await.is_err());
    assert_eq!(failing.commands().len(), 2);
}

// ---------------------------------------------------------------- managed identity

#[test]
fn managed_identity_is_chosen_explicitly_or_by_the_platform() {
    assert_eq!(select(vars(&[("AZURE_USE_MANAGED_IDENTITY", "true")])).unwrap(), Source::ManagedIdentity { client_id: None });
    assert_eq!(
        select(vars(&[("AZURE_USE_MANAGED_IDENTITY", "TRUE"), ("AZURE_CLIENT_ID", "uami-1")])).unwrap(),
        Source::ManagedIdentity { client_id: Some("uami-1".into()) }
    );
    // App Service / Container Apps announce their identity endpoint.
    assert_eq!(select(vars(&[("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token")])).unwrap(), Source::ManagedIdentity { client_id: None });
    assert_eq!(select(vars(&[("IDENTITY_ENDPOINT", "http://x"), ("AZURE_USE_MANAGED_IDENTITY", "false")])).unwrap(), Source::AzureCli { subscription: None });
    // A service principal still wins.
    let mut v = sp_vars();
    v.push(("AZURE_USE_MANAGED_IDENTITY", "true"));
    assert!(matches!(select(vars(&v)).unwrap(), Source::ServicePrincipal { .. }));
    let e = select(vars(&[("AZURE_USE_MANAGED_IDENTITY", "sometimes")])).unwrap_err();
    assert!(e.message.contains("AZURE_USE_MANAGED_IDENTITY") && e.message.contains("sometimes"), "{}", e.message);
}

/// The Azure Instance Metadata Service of a VM (169.254.169.254), answering token requests.
#[derive(Debug, Default)]
struct FakeImds {
    seen: std::sync::Mutex<Vec<(String, Option<String>)>>,
    refuse: bool,
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for FakeImds {
    async fn execute_request(&self, request: &azure_core::http::Request) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        use azure_core::http::headers::{HeaderName, Headers};
        let url = request.url().clone();
        let metadata = request.headers().get_optional_str(&HeaderName::from_static("metadata")).map(str::to_string);
        self.seen.lock().unwrap().push((url.to_string(), metadata.clone()));
        let mut headers = Headers::new();
        headers.insert("content-type", "application/json; charset=utf-8");
        let ok = url.host_str() == Some("169.254.169.254") && url.path() == "/metadata/identity/oauth2/token" && metadata.as_deref() == Some("true");
        let (status, body) = if !ok || self.refuse {
            (400u16, r#"{"error":"invalid_request","error_description":"Identity not found"}"#.to_string())
        } else {
            let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
            (
                200,
                format!(
                    r#"{{"access_token":"{TOKEN}","client_id":"c","expires_in":"3599","expires_on":"{expires}","ext_expires_in":"3599","not_before":"{}","resource":"https://management.azure.com/","token_type":"Bearer"}}"#,
                    expires - 3600
                ),
            )
        };
        Ok(azure_core::http::AsyncRawResponse::from_bytes(azure_core::http::StatusCode::from(status), headers, body.into_bytes()))
    }
}

#[tokio::test]
async fn a_managed_identity_gets_arm_tokens_from_the_instance_metadata_service() {
    let mock = Mock::start().await;
    let imds = Arc::new(FakeImds::default());
    let options = Options { transport: Some(azure_core::http::Transport::new(imds.clone())), executor: None };
    let c = from_lookup(vars(&[("AZURE_USE_MANAGED_IDENTITY", "true"), ("AZURE_CLIENT_ID", "uami-1")]), options).unwrap();
    assert!(c.describe().contains("uami-1"), "{}", c.describe());
    assert_eq!(c.token().await.unwrap(), TOKEN);
    arm_accepts(&mock, c).await;
    let seen = imds.seen.lock().unwrap().clone();
    let (url, metadata) = seen.last().unwrap();
    assert_eq!(metadata.as_deref(), Some("true"), "IMDS needs the Metadata header");
    assert!(url.contains("resource=https") && url.contains("management.azure.com") && url.contains("client_id=uami-1"), "{url}");

    let refusing = Arc::new(FakeImds { refuse: true, ..FakeImds::default() });
    let options = Options { transport: Some(azure_core::http::Transport::new(refusing)), executor: None };
    let c = from_lookup(vars(&[("AZURE_USE_MANAGED_IDENTITY", "true")]), options).unwrap();
    let e = c.token().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(e.message.contains("system-assigned managed identity") && e.message.contains("AZURE_USE_MANAGED_IDENTITY"), "{}", e.message);
}
