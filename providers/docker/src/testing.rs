//! Helpers for tests against a real engine (used by kdeploy's integration tests): a small
//! image built without a registry (a busybox root filesystem imported with the engine's
//! image-import API), and inspection/out-of-band changes of kdeploy's objects. Synchronous, each
//! call runs on its own small runtime.

use std::future::Future;

use bollard::query_parameters::{CreateImageOptionsBuilder, StopContainerOptionsBuilder};
use futures_util::StreamExt;

use crate::engine::{self, Endpoint};

/// The locally built test image.
pub const TEST_IMAGE: &str = "kdeploy-test-busybox:1";
const BUSYBOX: &str = "/bin/busybox";

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

async fn local() -> Result<(bollard::Docker, Endpoint), String> {
    let ep = Endpoint::from_cluster(None);
    let d = engine::connect(&ep).await.map_err(|e| e.message)?;
    d.ping().await.map_err(|e| engine::translate(&e, &ep, "ping").message)?;
    Ok((d, ep))
}

/// Ok when the local engine (DOCKER_HOST or the default socket) answers.
pub fn engine_available() -> Result<(), String> {
    block_on(async { local().await.map(|_| ()) })
}

pub use crate::tar::Tar;

/// The root filesystem of the test image: /bin/busybox (Debian's busybox-static), /bin/sh,
/// and /www with the pages httpd serves as health endpoints (/, /api/health, /health).
pub fn busybox_rootfs() -> Result<Vec<u8>, String> {
    let bin = std::fs::read(BUSYBOX)
        .map_err(|e| format!("{BUSYBOX} is needed to build the test image ({e}); install it with `apt-get install -y busybox-static`"))?;
    let mut t = Tar::new();
    for d in ["bin", "tmp", "www", "www/api", "data"] {
        t.dir(d);
    }
    t.file("bin/busybox", 0o755, &bin);
    for l in ["sh", "wget", "httpd", "sleep"] {
        t.symlink(&format!("bin/{l}"), "busybox");
    }
    t.file("www/index.html", 0o644, b"ok\n");
    t.file("www/health", 0o644, b"ok\n");
    t.file("www/api/health", 0o644, b"ok\n");
    Ok(t.finish())
}

/// Imports the test image once (no registry needed).
pub fn ensure_test_image() -> Result<(), String> {
    block_on(async {
        let (d, ep) = local().await?;
        if d.inspect_image(TEST_IMAGE).await.is_ok() {
            return Ok(());
        }
        let rootfs = busybox_rootfs()?;
        let (repo, tag) = TEST_IMAGE.split_once(':').unwrap_or((TEST_IMAGE, "latest"));
        let opts = CreateImageOptionsBuilder::new().from_src("-").repo(repo).tag(tag).build();
        let mut s = d.create_image(Some(opts), Some(bollard::body_full(bytes::Bytes::from(rootfs))), None);
        while let Some(item) = s.next().await {
            let info = item.map_err(|e| engine::translate(&e, &ep, "importing the test image").message)?;
            if let Some(m) = info.error_detail.and_then(|e| e.message) {
                return Err(m);
            }
        }
        d.inspect_image(TEST_IMAGE).await.map(|_| ()).map_err(|e| format!("the imported image is missing: {e}"))
    })
}

/// Where the stand-in binary (`tests/standins`, built by `cargo test --workspace`) is: next to
/// the test executable's directory, or `KDEPLOY_STANDIN_BIN`.
pub fn standin_binary() -> Result<std::path::PathBuf, String> {
    if let Some(p) = std::env::var_os("KDEPLOY_STANDIN_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let candidates: Vec<std::path::PathBuf> = exe.ancestors().skip(1).take(3).map(|d| d.join("kdeploy-standin")).collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "the stand-in binary was not found (looked at {}); build it with `cargo build -p kdeploy-standins` (cargo test --workspace builds it)",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// The shared libraries a dynamically linked binary needs (by `ldd`), as (path, content).
fn shared_libraries(binary: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let out = std::process::Command::new("ldd").arg(binary).output().map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let bytes = std::fs::read(p).map_err(|e| format!("{p}: {e}"))?;
            libs.push((p.trim_start_matches('/').to_string(), bytes));
        }
    }
    Ok(libs)
}

/// An image with busybox and the stand-ins (Vault, MinIO, RabbitMQ's management API, and the
/// `mc`/`rabbitmqadmin` clients), imported once per stand-in build; returns its name. The
/// stand-in is dynamically linked: its libraries go into the image too.
pub fn ensure_standin_image() -> Result<String, String> {
    use sha2::Digest as _;
    let bin_path = standin_binary()?;
    let bin = std::fs::read(&bin_path).map_err(|e| format!("{}: {e}", bin_path.display()))?;
    let tag: String = sha2::Sha256::digest(&bin).iter().take(6).map(|b| format!("{b:02x}")).collect();
    let image = format!("kdeploy-test-standin:{tag}");
    block_on(async {
        let (d, ep) = local().await?;
        if d.inspect_image(&image).await.is_ok() {
            return Ok(image.clone());
        }
        let busybox = std::fs::read(BUSYBOX)
            .map_err(|e| format!("{BUSYBOX} is needed to build the test image ({e}); install it with `apt-get install -y busybox-static`"))?;
        let mut t = Tar::new();
        let mut dirs: Vec<String> = Vec::new();
        let mut dir = |t: &mut Tar, path: &str| {
            let mut acc = String::new();
            for part in path.split('/').filter(|p| !p.is_empty()) {
                acc = if acc.is_empty() { part.to_string() } else { format!("{acc}/{part}") };
                if !dirs.contains(&acc) {
                    t.dir(&acc);
                    dirs.push(acc.clone());
                }
            }
        };
        for d0 in ["bin", "usr/bin", "tmp", "www/api", "data", "var/lib/rabbitmq", "home/agent/data/config", "root"] {
            dir(&mut t, d0);
        }
        t.file("bin/busybox", 0o755, &busybox);
        for l in ["sh", "wget", "httpd", "sleep", "nc", "cat", "mkdir", "cp", "chgrp", "chmod", "chown", "ls"] {
            t.symlink(&format!("bin/{l}"), "busybox");
        }
        t.file("usr/bin/kdeploy-standin", 0o755, &bin);
        for l in ["mc", "rabbitmqadmin"] {
            t.symlink(&format!("usr/bin/{l}"), "kdeploy-standin");
        }
        for (path, bytes) in shared_libraries(&bin_path)? {
            if let Some((parent, _)) = path.rsplit_once('/') {
                dir(&mut t, parent);
            }
            t.file(&path, 0o755, &bytes);
        }
        t.file("www/index.html", 0o644, b"ok\n");
        t.file("www/api/health", 0o644, b"ok\n");
        t.file("home/agent/data/config.template.json", 0o644, b"{}\n");
        let (repo, tag) = image.split_once(':').unwrap_or((&image, "latest"));
        let opts = CreateImageOptionsBuilder::new().from_src("-").repo(repo).tag(tag).build();
        let mut s = d.create_image(Some(opts), Some(bollard::body_full(bytes::Bytes::from(t.finish()))), None);
        while let Some(item) = s.next().await {
            let info = item.map_err(|e| engine::translate(&e, &ep, "importing the stand-in image").message)?;
            if let Some(m) = info.error_detail.and_then(|e| e.message) {
                return Err(m);
            }
        }
        d.inspect_image(&image).await.map(|_| image.clone()).map_err(|e| format!("the imported image is missing: {e}"))
    })
}

/// The content of a file in a container (`docker cp`), None when it does not exist.
pub fn read_file(container: &str, path: &str) -> Option<String> {
    block_on(async {
        let (d, _) = local().await.ok()?;
        let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::new().path(path).build();
        let mut stream = d.download_from_container(container, Some(opts));
        let mut tar = Vec::new();
        while let Some(chunk) = stream.next().await {
            tar.extend_from_slice(&chunk.ok()?);
        }
        // The first entry of the archive: a 512-byte header, then the content.
        let size = usize::from_str_radix(std::str::from_utf8(tar.get(124..135)?).ok()?.trim_matches(char::from(0)).trim(), 8).ok()?;
        Some(String::from_utf8_lossy(tar.get(512..512 + size)?).into_owned())
    })
}

/// The last lines a container logged.
pub fn logs(container: &str) -> String {
    block_on(async {
        let Ok((d, _)) = local().await else { return String::new() };
        engine::last_logs(&d, container, 50, &[]).await
    })
}

/// kdeploy's objects of one cluster: containers (name, running), network names, volume names.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub containers: Vec<(String, bool)>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

impl Objects {
    pub fn container(&self, name: &str) -> Option<bool> {
        self.containers.iter().find(|(n, _)| n == name).map(|(_, r)| *r)
    }
}

pub fn objects(cluster: &str) -> Result<Objects, String> {
    block_on(async {
        let (d, ep) = local().await?;
        let mut containers: Vec<(String, bool)> =
            engine::list_containers(&d, &ep, Some(cluster)).await.map_err(|e| e.message)?.into_iter().map(|c| (c.name, c.running)).collect();
        containers.sort();
        let mut networks = engine::list_networks(&d, &ep, Some(cluster)).await.map_err(|e| e.message)?;
        networks.sort();
        let mut volumes = engine::list_volumes(&d, &ep, Some(cluster)).await.map_err(|e| e.message)?;
        volumes.sort();
        Ok(Objects { containers, networks, volumes })
    })
}

/// The id of a container by name.
pub fn container_id(name: &str) -> Option<String> {
    block_on(async {
        let (d, ep) = local().await.ok()?;
        engine::inspect(&d, &ep, name).await.ok().flatten().map(|(id, _, _)| id)
    })
}

/// Health status of a container ("healthy", "starting", ...).
pub fn health(name: &str) -> Option<String> {
    block_on(async {
        let (d, _) = local().await.ok()?;
        let c = d.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await.ok()?;
        c.state?.health?.status.map(|s| s.to_string())
    })
}

/// The container's environment, KEY=VALUE.
pub fn env(name: &str) -> Vec<String> {
    block_on(async {
        let Ok((d, _)) = local().await else { return Vec::new() };
        d.inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>).await.ok().and_then(|c| c.config?.env).unwrap_or_default()
    })
}

/// Out of band: the container's published ports from its host config, as `3478/udp` → host
/// ports (`docker inspect`'s `HostConfig.PortBindings`).
pub fn port_bindings(name: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    block_on(async {
        let Ok((d, _)) = local().await else { return Default::default() };
        let bindings = d
            .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.host_config?.port_bindings)
            .unwrap_or_default();
        bindings.into_iter().map(|(k, v)| (k, v.unwrap_or_default().into_iter().filter_map(|b| b.host_port).collect())).collect()
    })
}

/// Out of band: `docker stop`.
pub fn stop(name: &str) -> Result<(), String> {
    block_on(async {
        let (d, _) = local().await?;
        d.stop_container(name, Some(StopContainerOptionsBuilder::new().t(1).build())).await.map_err(|e| e.to_string())
    })
}

/// Out of band: `docker rm -f`.
pub fn remove(name: &str) -> Result<(), String> {
    block_on(async {
        let (d, ep) = local().await?;
        engine::remove_container(&d, &ep, name).await.map_err(|e| e.message)
    })
}

/// Removes every container, network and volume labelled with the cluster name.
pub fn cleanup(cluster: &str) {
    let _ = block_on(async {
        let (d, ep) = local().await?;
        for c in engine::list_containers(&d, &ep, Some(cluster)).await.map_err(|e| e.message)? {
            let _ = engine::remove_container(&d, &ep, &c.id).await;
        }
        for n in engine::list_networks(&d, &ep, Some(cluster)).await.map_err(|e| e.message)? {
            let _ = engine::remove_network(&d, &ep, &n).await;
        }
        for v in engine::list_volumes(&d, &ep, Some(cluster)).await.map_err(|e| e.message)? {
            let _ = engine::remove_volume(&d, &ep, &v).await;
        }
        Ok::<(), String>(())
    });
}

/// Out of band: creates another network named `name` with kdeploy's labels for `cluster`, as an
/// engine before API 1.44 allows (a run killed while its create was in flight left one). False
/// when the engine refuses a second network of that name.
pub fn create_duplicate_network(name: &str, cluster: &str) -> Result<bool, String> {
    block_on(async {
        let (d, _) = local().await?;
        let labels = std::collections::HashMap::from([
            (crate::spec::MANAGED_BY.to_string(), crate::spec::MANAGED_BY_VALUE.to_string()),
            (crate::spec::LABEL_CLUSTER.to_string(), cluster.to_string()),
            (crate::spec::LABEL_ADDRESS.to_string(), format!("cluster.{cluster}")),
        ]);
        let req = bollard::models::NetworkCreateRequest { name: name.to_string(), driver: Some("bridge".into()), labels: Some(labels), ..Default::default() };
        match d.create_network(req).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    })
}
