//! Talking to the engine: connecting (with version negotiation), error translation, image
//! pulls, containers, networks, volumes, readiness.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use futures_util::StreamExt;
use kdeploy_provider::{ErrorKind, ProviderError, Value};

use crate::spec::{ContainerSpec, LABEL_ADDRESS, LABEL_CLUSTER, LABEL_HASH, MANAGED_BY, MANAGED_BY_VALUE, OneShot, Published};

/// The oldest engine API this provider works with (Docker 19.03).
pub const MIN_API: (usize, usize) = (1, 40);
const TIMEOUT_SECS: u64 = 120;

/// Where the engine is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub host: String,
    pub tls: bool,
    pub cert_path: Option<String>,
}

impl Endpoint {
    /// From the cluster's attributes, then DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH,
    /// then the local socket.
    pub fn from_cluster(cluster: Option<&Value>) -> Endpoint {
        let m = cluster.and_then(Value::as_map);
        let get = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let host = get("host").or_else(|| std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty())).unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let cert_path = get("cert_path").or_else(|| std::env::var("DOCKER_CERT_PATH").ok().filter(|s| !s.is_empty()));
        let tls_attr = m.and_then(|m| m.get("tls_verify")).and_then(Value::as_bool);
        let tls_env = std::env::var("DOCKER_TLS_VERIFY").ok().is_some_and(|v| !v.is_empty() && v != "0");
        let tcp = !host.starts_with("unix://");
        let tls = tcp && (tls_attr.unwrap_or(tls_env) || (tls_attr.is_none() && cert_path.is_some()) || host.starts_with("https://"));
        Endpoint { host, tls, cert_path }
    }
}

/// Connects and negotiates the API version; errors name both versions when the engine is
/// too old.
pub async fn connect(ep: &Endpoint) -> Result<Docker, ProviderError> {
    let v = bollard::API_DEFAULT_VERSION;
    let docker = if let Some(path) = ep.host.strip_prefix("unix://") {
        if !std::path::Path::new(path).exists() {
            return Err(ProviderError::new(
                ErrorKind::Unreachable,
                format!("cannot reach the Docker engine at {}: the socket {path} does not exist. Is Docker installed and running? Start it with `sudo systemctl start docker`, or point kdeploy at another engine with the cluster's host attribute or DOCKER_HOST.", ep.host),
            ));
        }
        Docker::connect_with_unix(&ep.host, TIMEOUT_SECS, v)
    } else if ep.tls {
        let dir = ep.cert_path.clone().map(std::path::PathBuf::from).or_else(|| std::env::var("HOME").ok().map(|h| std::path::PathBuf::from(h).join(".docker"))).unwrap_or_default();
        let host = ep.host.replacen("https://", "tcp://", 1);
        Docker::connect_with_ssl(&host, &dir.join("key.pem"), &dir.join("cert.pem"), &dir.join("ca.pem"), TIMEOUT_SECS, v)
    } else if ep.host.starts_with("tcp://") || ep.host.starts_with("http://") {
        Docker::connect_with_http(&ep.host, TIMEOUT_SECS, v)
    } else {
        return Err(ProviderError::new(ErrorKind::Invalid, format!("unsupported Docker host {:?}: use unix:///path/to/docker.sock or tcp://host:port", ep.host)));
    }
    .map_err(|e| translate(&e, ep, "connecting"))?;
    let docker = docker.negotiate_version().await.map_err(|e| translate(&e, ep, "negotiating the API version"))?;
    let got = docker.client_version();
    if (got.major_version, got.minor_version) < MIN_API {
        return Err(ProviderError::new(
            ErrorKind::Invalid,
            format!(
                "the Docker engine at {} serves API {}.{}, but kdeploy needs at least API {}.{} (Docker 19.03; kdeploy speaks up to {}.{}). Upgrade Docker Engine on that host.",
                ep.host, got.major_version, got.minor_version, MIN_API.0, MIN_API.1, v.major_version, v.minor_version
            ),
        ));
    }
    Ok(docker)
}

pub fn api_version(docker: &Docker) -> String {
    let v = docker.client_version();
    format!("{}.{}", v.major_version, v.minor_version)
}

fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = c.source();
    }
    None
}

fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
}

/// Turns a bollard error into a ProviderError with the right kind and the fix.
pub fn translate(e: &DockerError, ep: &Endpoint, doing: &str) -> ProviderError {
    let text = chain_text(e);
    let lower = text.to_lowercase();
    let kind = io_kind(e);
    if let DockerError::DockerResponseServerError { status_code, message } = e {
        let lm = message.to_lowercase();
        if lm.contains("port is already allocated") || lm.contains("address already in use") {
            return ProviderError::new(
                ErrorKind::Conflict,
                format!(
                    "{doing}: a host port is already in use on the Docker host ({message}). Free the port (`docker ps` / `ss -ltnp` show who holds it) or choose another one (node_port)."
                ),
            );
        }
        let kind = match status_code {
            401 | 403 => ErrorKind::Unauthorized,
            404 => ErrorKind::Invalid,
            409 => ErrorKind::Conflict,
            400 => ErrorKind::Invalid,
            _ => ErrorKind::Other,
        };
        return ProviderError::new(kind, format!("{doing}: the Docker engine answered {status_code}: {message}"));
    }
    if kind == Some(std::io::ErrorKind::PermissionDenied) || lower.contains("permission denied") {
        return ProviderError::new(
            ErrorKind::Unauthorized,
            format!(
                "{doing}: permission denied on the Docker socket {}. Add your user to the docker group (`sudo usermod -aG docker $USER`, then log out and in again) or run kdeploy with sudo.",
                ep.host
            ),
        );
    }
    if matches!(kind, Some(std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound | std::io::ErrorKind::TimedOut))
        || lower.contains("connection refused")
        || lower.contains("no such file")
        || matches!(e, DockerError::SocketNotFoundError(_) | DockerError::RequestTimeoutError | DockerError::HyperLegacyError { .. })
    {
        return ProviderError::new(
            ErrorKind::Unreachable,
            format!(
                "{doing}: cannot reach the Docker engine at {} ({text}). Is the daemon running? Start it with `sudo systemctl start docker`, or check the cluster's host attribute / DOCKER_HOST.",
                ep.host
            ),
        );
    }
    ProviderError::other(format!("{doing}: Docker engine error at {}: {text}", ep.host))
}

pub fn is_not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

fn label_filter(cluster: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{MANAGED_BY}={MANAGED_BY_VALUE}")];
    if let Some(c) = cluster {
        labels.push(format!("{LABEL_CLUSTER}={c}"));
    }
    HashMap::from([("label".to_string(), labels)])
}

/// A container as the plan sees it.
#[derive(Debug, Clone)]
pub struct LiveContainer {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub labels: HashMap<String, String>,
}

/// One list call: every kdeploy container (of one cluster, or all).
pub async fn list_containers(docker: &Docker, ep: &Endpoint, cluster: Option<&str>) -> Result<Vec<LiveContainer>, ProviderError> {
    let opts = ListContainersOptionsBuilder::new().all(true).filters(&label_filter(cluster)).build();
    let list = docker.list_containers(Some(opts)).await.map_err(|e| translate(&e, ep, "listing containers"))?;
    Ok(list
        .into_iter()
        .map(|c| LiveContainer {
            id: c.id.unwrap_or_default(),
            name: c.names.unwrap_or_default().first().map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default(),
            running: c.state.map(|s| s.to_string() == "running").unwrap_or(false),
            labels: c.labels.unwrap_or_default(),
        })
        .collect())
}

/// Every container of the engine that kdeploy did not create (`kdeploy adopt`): name and image.
pub async fn list_unmanaged(docker: &Docker, ep: &Endpoint) -> Result<Vec<(String, String)>, ProviderError> {
    let opts = ListContainersOptionsBuilder::new().all(true).build();
    let list = docker.list_containers(Some(opts)).await.map_err(|e| translate(&e, ep, "listing containers"))?;
    let mut out: Vec<(String, String)> = list
        .into_iter()
        .filter(|c| !c.labels.as_ref().is_some_and(|l| l.contains_key(LABEL_ADDRESS)))
        .filter_map(|c| Some((c.names?.first()?.trim_start_matches('/').to_string(), c.image.unwrap_or_default())))
        .collect();
    out.sort();
    Ok(out)
}

/// One list call: names of kdeploy networks.
pub async fn list_networks(docker: &Docker, ep: &Endpoint, cluster: Option<&str>) -> Result<Vec<String>, ProviderError> {
    let opts = ListNetworksOptionsBuilder::new().filters(&label_filter(cluster)).build();
    let list = docker.list_networks(Some(opts)).await.map_err(|e| translate(&e, ep, "listing networks"))?;
    Ok(list.into_iter().filter_map(|n| n.name).collect())
}

/// One list call: names of kdeploy volumes.
pub async fn list_volumes(docker: &Docker, ep: &Endpoint, cluster: Option<&str>) -> Result<Vec<String>, ProviderError> {
    let opts = ListVolumesOptionsBuilder::new().filters(&label_filter(cluster)).build();
    let list = docker.list_volumes(Some(opts)).await.map_err(|e| translate(&e, ep, "listing volumes"))?;
    Ok(list.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect())
}

fn labels(cluster: &str, address: &str) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (LABEL_CLUSTER.to_string(), cluster.to_string()),
        (LABEL_ADDRESS.to_string(), address.to_string()),
    ])
}

/// Creates the network unless it exists. Engines before API 1.44 accept a second network of the
/// same name (a run killed while its create was in flight, two components creating it at once);
/// such duplicates make every later use of the name fail as "ambiguous", so they are removed
/// here, after each create and whenever the name is ambiguous.
pub async fn ensure_network(docker: &Docker, ep: &Endpoint, name: &str, cluster: &str, address: &str) -> Result<(), ProviderError> {
    match docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>).await {
        Ok(_) => return Ok(()),
        Err(e) if is_not_found(&e) => {}
        Err(e) if is_ambiguous(&e) => return remove_duplicate_networks(docker, ep, name).await,
        Err(e) => return Err(translate(&e, ep, &format!("inspecting network {name}"))),
    }
    let req = NetworkCreateRequest { name: name.to_string(), driver: Some("bridge".into()), labels: Some(labels(cluster, address)), ..Default::default() };
    match docker.create_network(req).await {
        Ok(_) | Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => remove_duplicate_networks(docker, ep, name).await,
        Err(e) => Err(translate(&e, ep, &format!("creating network {name}"))),
    }
}

/// "2 matches found based on name: network x is ambiguous" (engines before API 1.44).
fn is_ambiguous(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 400, message } if message.contains("ambiguous"))
}

/// The ids of the networks named exactly `name` (the engine's name filter matches substrings),
/// oldest first, so that every run keeps the same one.
async fn networks_named(docker: &Docker, ep: &Endpoint, name: &str) -> Result<Vec<String>, ProviderError> {
    let opts = ListNetworksOptionsBuilder::new().filters(&HashMap::from([("name".to_string(), vec![name.to_string()])])).build();
    let list = docker.list_networks(Some(opts)).await.map_err(|e| translate(&e, ep, &format!("listing networks named {name}")))?;
    let mut named: Vec<(String, String)> =
        list.into_iter().filter(|n| n.name.as_deref() == Some(name)).filter_map(|n| Some((n.created.unwrap_or_default(), n.id?))).collect();
    named.sort();
    Ok(named.into_iter().map(|(_, id)| id).collect())
}

/// Keeps the oldest network named `name` and removes the others that no container uses.
async fn remove_duplicate_networks(docker: &Docker, ep: &Endpoint, name: &str) -> Result<(), ProviderError> {
    for id in networks_named(docker, ep, name).await?.into_iter().skip(1) {
        let inspected = docker.inspect_network(&id, None::<bollard::query_parameters::InspectNetworkOptions>).await;
        let in_use = inspected.ok().and_then(|n| n.containers).is_some_and(|c| !c.is_empty());
        if !in_use {
            match docker.remove_network(&id).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(translate(&e, ep, &format!("removing duplicate network {name} ({id})"))),
            }
        }
    }
    Ok(())
}

/// Removes the network (every network of that name, if an old engine let duplicates exist).
pub async fn remove_network(docker: &Docker, ep: &Endpoint, name: &str) -> Result<(), ProviderError> {
    let ids = match docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>).await {
        Err(e) if is_ambiguous(&e) => networks_named(docker, ep, name).await?,
        _ => vec![name.to_string()],
    };
    for id in ids {
        match docker.remove_network(&id).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(DockerError::DockerResponseServerError { status_code: 403 | 409, message }) => {
                return Err(ProviderError::new(
                    ErrorKind::Conflict,
                    format!(
                        "cannot remove network {name}: {message}. Containers not managed by kdeploy are still attached; disconnect or remove them (`docker network inspect {name}`), then run destroy again."
                    ),
                ));
            }
            Err(e) => return Err(translate(&e, ep, &format!("removing network {name}"))),
        }
    }
    Ok(())
}

pub async fn ensure_volume(docker: &Docker, ep: &Endpoint, name: &str, cluster: &str, address: &str) -> Result<(), ProviderError> {
    match docker.inspect_volume(name).await {
        Ok(_) => return Ok(()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(translate(&e, ep, &format!("inspecting volume {name}"))),
    }
    let req = VolumeCreateRequest { name: Some(name.to_string()), labels: Some(labels(cluster, address)), ..Default::default() };
    docker.create_volume(req).await.map(|_| ()).map_err(|e| translate(&e, ep, &format!("creating volume {name}")))
}

pub async fn remove_volume(docker: &Docker, ep: &Endpoint, name: &str) -> Result<(), ProviderError> {
    match docker.remove_volume(name, Some(RemoveVolumeOptionsBuilder::new().force(false).build())).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(translate(&e, ep, &format!("removing volume {name}"))),
    }
}

/// Pulls `image` unless the engine already has it; per-layer progress on a TTY.
pub async fn ensure_image(docker: &Docker, ep: &Endpoint, image: &str) -> Result<(), ProviderError> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(translate(&e, ep, &format!("inspecting image {image}"))),
    }
    let tty = std::io::stderr().is_terminal();
    if tty {
        eprintln!("Pulling image {image} ...");
    }
    let opts = CreateImageOptionsBuilder::new().from_image(image).build();
    let mut stream = docker.create_image(Some(opts), None, None);
    let mut last: BTreeMap<String, (String, i64)> = BTreeMap::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(err) = info.error_detail.and_then(|d| d.message) {
                    return Err(pull_error(image, &err));
                }
                if tty && let (Some(id), Some(status)) = (info.id, info.status) {
                    let pct = info.progress_detail.and_then(|p| Some((p.current? * 100) / p.total.filter(|t| *t > 0)?)).unwrap_or(-1);
                    let entry = last.entry(id.clone()).or_insert((String::new(), -100));
                    if entry.0 != status || pct >= entry.1 + 25 || (pct == 100 && entry.1 != 100) {
                        *entry = (status.clone(), pct);
                        if pct >= 0 { eprintln!("  {image} {id}: {status} {pct}%") } else { eprintln!("  {image} {id}: {status}") }
                    }
                }
            }
            Err(DockerError::DockerResponseServerError { message, .. }) => return Err(pull_error(image, &message)),
            Err(DockerError::DockerStreamError { error }) => return Err(pull_error(image, &error)),
            Err(e) => return Err(translate(&e, ep, &format!("pulling image {image}"))),
        }
    }
    // Some engines report success without the image (e.g. a platform mismatch).
    docker.inspect_image(image).await.map(|_| ()).map_err(|_| pull_error(image, "the pull finished but the image is not present"))
}

fn pull_error(image: &str, message: &str) -> ProviderError {
    let lm = message.to_lowercase();
    if lm.contains("not found") || lm.contains("manifest unknown") || lm.contains("does not exist") || lm.contains("pull access denied") {
        ProviderError::new(
            ErrorKind::Invalid,
            format!(
                "image {image} was not found in its registry ({message}). Check the image name and tag (the `image` attribute), or `docker login` if the repository is private."
            ),
        )
    } else if lm.contains("unauthorized") || lm.contains("denied") {
        ProviderError::new(ErrorKind::Unauthorized, format!("the registry refused to serve image {image} ({message}). Run `docker login` for that registry."))
    } else {
        ProviderError::new(
            ErrorKind::Unreachable,
            format!("pulling image {image} failed: {message}. Check the engine's network access to the registry, or load the image with `docker load`."),
        )
    }
}

/// Creates the container (not started). Returns its id.
pub async fn create_container(docker: &Docker, ep: &Endpoint, spec: &ContainerSpec, cluster: &str, address: &str, hash: &str) -> Result<String, ProviderError> {
    let mut all_labels: HashMap<String, String> = spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    all_labels.extend(labels(cluster, address));
    all_labels.insert(LABEL_HASH.to_string(), hash.to_string());
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> =
        spec.ports.iter().map(|p| (p.key(), Some(vec![PortBinding { host_ip: None, host_port: Some(p.host.to_string()) }]))).collect();
    let health = spec.healthcheck.as_ref().map(|test| HealthConfig {
        test: Some(test.clone()),
        interval: Some(3_000_000_000),
        timeout: Some(10_000_000_000),
        retries: Some(5),
        start_period: Some(60_000_000_000),
        start_interval: None,
    });
    let body = ContainerCreateBody {
        hostname: Some(spec.hostname.chars().take(63).collect()),
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        exposed_ports: Some(spec.ports.iter().map(Published::key).collect()),
        healthcheck: health,
        labels: Some(all_labels),
        user: spec.user.clone(),
        host_config: Some(HostConfig {
            group_add: (!spec.group_add.is_empty()).then(|| spec.group_add.clone()),
            binds: Some(spec.volumes.iter().map(|(v, p)| format!("{v}:{p}")).collect()),
            port_bindings: Some(port_bindings),
            restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::UNLESS_STOPPED), maximum_retry_count: None }),
            network_mode: Some(spec.network.clone()),
            memory: spec.memory,
            nano_cpus: spec.nano_cpus,
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig { endpoints_config: Some(HashMap::from([(spec.network.clone(), EndpointSettings::default())])) }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::new().name(&spec.name).build();
    docker.create_container(Some(opts), body).await.map(|r| r.id).map_err(|e| translate(&e, ep, &format!("creating container {}", spec.name)))
}

/// Copies files into a created container before it starts (works with remote engines: no
/// bind mount of a local file).
pub async fn copy_files(docker: &Docker, ep: &Endpoint, id: &str, name: &str, files: &[(String, String)]) -> Result<(), ProviderError> {
    if files.is_empty() {
        return Ok(());
    }
    let mut tar = crate::tar::Tar::new();
    let mut dirs: Vec<String> = Vec::new();
    for (path, _) in files {
        let rel = path.trim_start_matches('/');
        let mut acc = String::new();
        for part in rel.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            acc = if acc.is_empty() { part.to_string() } else { format!("{acc}/{part}") };
            if !dirs.contains(&acc) {
                tar.dir(&acc);
                dirs.push(acc.clone());
            }
        }
    }
    for (path, content) in files {
        tar.file(path.trim_start_matches('/'), 0o644, content.as_bytes());
    }
    let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::new().path("/").build();
    docker
        .upload_to_container(id, Some(opts), bollard::body_full(tar.finish().into()))
        .await
        .map_err(|e| translate(&e, ep, &format!("copying files into container {name}")))
}

/// Runs a one-shot container to completion on `network`: a non-zero exit fails with its last
/// log lines. The container is removed afterwards either way.
#[allow(clippy::too_many_arguments)]
pub async fn run_once(
    docker: &Docker,
    ep: &Endpoint,
    job: &OneShot,
    network: &str,
    cluster: &str,
    address: &str,
    timeout: Duration,
    secrets: &[String],
) -> Result<(), ProviderError> {
    remove_container(docker, ep, &job.name).await?;
    let body = ContainerCreateBody {
        image: Some(job.image.clone()),
        entrypoint: Some(job.command.clone()),
        cmd: Some(Vec::new()),
        env: Some(job.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels(cluster, address)),
        host_config: Some(HostConfig { network_mode: Some(network.to_string()), ..Default::default() }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::new().name(&job.name).build();
    let id = docker.create_container(Some(opts), body).await.map(|r| r.id).map_err(|e| translate(&e, ep, &format!("creating container {}", job.name)))?;
    let result = async {
        docker
            .start_container(&id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| translate(&e, ep, &format!("starting container {}", job.name)))?;
        let mut wait = docker.wait_container(&id, None::<bollard::query_parameters::WaitContainerOptions>);
        let code = match tokio::time::timeout(timeout, wait.next()).await {
            Err(_) => {
                return Err(ProviderError::new(
                    ErrorKind::Timeout,
                    format!("{address}: {} did not finish within {}s (readiness_timeout).", job.name, timeout.as_secs()),
                ));
            }
            Ok(Some(Ok(r))) => r.status_code,
            // A non-zero exit is reported by bollard as an error carrying the code.
            Ok(Some(Err(DockerError::DockerContainerWaitError { code, .. }))) => code,
            Ok(Some(Err(e))) => return Err(translate(&e, ep, &format!("waiting for {}", job.name))),
            Ok(None) => 0,
        };
        if code != 0 {
            let logs = last_logs(docker, &id, 20, secrets).await;
            let logs = if logs.trim().is_empty() { "  (no output)".to_string() } else { logs.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n") };
            return Err(ProviderError::new(ErrorKind::Other, format!("{address}: {} exited with code {code}. Its last log lines:\n{logs}", job.name)));
        }
        Ok(())
    }
    .await;
    let _ = remove_container(docker, ep, &id).await;
    result
}

pub async fn start_container(docker: &Docker, ep: &Endpoint, id: &str, name: &str, address: &str) -> Result<(), ProviderError> {
    docker.start_container(id, None::<bollard::query_parameters::StartContainerOptions>).await.map_err(|e| {
        let mut pe = translate(&e, ep, &format!("starting container {name} for {address}"));
        if pe.kind == ErrorKind::Conflict && pe.message.contains("port") && address.starts_with("vault") {
            pe.message.push_str(" For a vault, set node_port to a free port.");
        }
        pe
    })
}

/// Removes the container (killing it) and returns once it is gone: a removal already under way
/// (started by a run that was killed) is waited for, so that a container of the same name can be
/// created next.
pub async fn remove_container(docker: &Docker, ep: &Endpoint, id_or_name: &str) -> Result<(), ProviderError> {
    match docker.remove_container(id_or_name, Some(RemoveContainerOptionsBuilder::new().force(true).v(false).build())).await {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(DockerError::DockerResponseServerError { status_code: 409, message }) if message.contains("already in progress") => {
            wait_removed(docker, ep, id_or_name).await
        }
        Err(e) => Err(translate(&e, ep, &format!("removing container {id_or_name}"))),
    }
}

/// How long a removal started by someone else may take.
const REMOVAL_WAIT: Duration = Duration::from_secs(60);

async fn wait_removed(docker: &Docker, ep: &Endpoint, id_or_name: &str) -> Result<(), ProviderError> {
    let start = Instant::now();
    while inspect(docker, ep, id_or_name).await?.is_some() {
        if start.elapsed() > REMOVAL_WAIT {
            return Err(ProviderError::new(
                ErrorKind::Timeout,
                format!(
                    "container {id_or_name} is still being removed after {}s; check `docker ps -a` and the engine's log, then run again",
                    REMOVAL_WAIT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The live container by name: (id, running, config hash label).
pub async fn inspect(docker: &Docker, ep: &Endpoint, name: &str) -> Result<Option<(String, bool, Option<String>)>, ProviderError> {
    match docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await {
        Ok(c) => {
            let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
            let hash = c.config.as_ref().and_then(|c| c.labels.as_ref()).and_then(|l| l.get(LABEL_HASH).cloned());
            Ok(Some((c.id.unwrap_or_default(), running, hash)))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(translate(&e, ep, &format!("inspecting container {name}"))),
    }
}

/// The last lines of the container's log, with secrets redacted.
pub async fn last_logs(docker: &Docker, id: &str, lines: usize, secrets: &[String]) -> String {
    let opts = LogsOptionsBuilder::new().stdout(true).stderr(true).tail(&lines.to_string()).build();
    let mut stream = docker.logs(id, Some(opts));
    let mut text = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        if text.len() > 16_000 {
            break;
        }
    }
    redact(&text, secrets)
}

pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        t = t.replace(s.as_str(), "(sensitive)");
    }
    t
}

/// Waits until the container is healthy (or running, without a health check).
pub async fn wait_ready(
    docker: &Docker,
    ep: &Endpoint,
    id: &str,
    name: &str,
    address: &str,
    timeout: Duration,
    secrets: &[String],
) -> Result<(), ProviderError> {
    let start = Instant::now();
    let mut last_state: String;
    loop {
        let c = docker
            .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(|e| translate(&e, ep, &format!("inspecting container {name}")))?;
        let state = c.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        match state.health.as_ref().and_then(|h| h.status) {
            Some(HealthStatusEnum::HEALTHY) if running => return Ok(()),
            None | Some(HealthStatusEnum::NONE) | Some(HealthStatusEnum::EMPTY) if running && start.elapsed() > Duration::from_secs(1) => return Ok(()),
            status => {
                let probe = state
                    .health
                    .as_ref()
                    .and_then(|h| h.log.as_ref())
                    .and_then(|l| l.last())
                    .and_then(|r| r.output.clone())
                    .map(|o| redact(o.trim(), secrets))
                    .filter(|o| !o.is_empty());
                last_state = match (running, status) {
                    (false, _) => {
                        format!("not running: {} (exit code {})", state.status.map(|s| s.to_string()).unwrap_or_default(), state.exit_code.unwrap_or_default())
                    }
                    (true, Some(s)) => format!("health {s}{}", probe.map(|p| format!(", last check said: {p}")).unwrap_or_default()),
                    (true, None) => "running".into(),
                };
            }
        }
        if start.elapsed() >= timeout {
            let logs = last_logs(docker, id, 20, secrets).await;
            let logs = if logs.trim().is_empty() { "  (no output)".to_string() } else { logs.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n") };
            return Err(ProviderError::new(
                ErrorKind::Timeout,
                format!(
                    "{address}: container {name} was not ready within {}s ({last_state}). Its last log lines:\n{logs}\nCheck the logs with `docker logs {name}`; raise readiness_timeout if it only needs longer.",
                    timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A container found by name for an import: its id, whether it runs, its config hash label
/// (kdeploy's own containers only) and its mounts as (source, destination): the volume name of
/// a named volume, the host path of a bind mount.
pub struct Found {
    pub id: String,
    pub running: bool,
    pub hash: Option<String>,
    pub mounts: Vec<(String, String)>,
    /// Its environment (`NAME` → value): an import keeps the passwords it was started with.
    pub env: BTreeMap<String, String>,
}

/// The container named `name` (a container started by `docker run --name`), or None.
pub async fn find_by_name(docker: &Docker, ep: &Endpoint, name: &str) -> Result<Option<Found>, ProviderError> {
    match docker.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await {
        Ok(c) => {
            let mounts = c
                .mounts
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| {
                    let source = if m.name.as_deref().is_some_and(|n| !n.is_empty()) { m.name } else { m.source };
                    Some((source?, m.destination?))
                })
                .collect();
            Ok(Some(Found {
                id: c.id.unwrap_or_default(),
                running: c.state.as_ref().and_then(|s| s.running).unwrap_or(false),
                hash: c.config.as_ref().and_then(|c| c.labels.as_ref()).and_then(|l| l.get(LABEL_HASH).cloned()),
                mounts,
                env: c
                    .config
                    .and_then(|c| c.env)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                    .collect(),
            }))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(translate(&e, ep, &format!("inspecting container {name}"))),
    }
}
