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

/// A minimal ustar archive writer.
pub struct Tar(Vec<u8>);

impl Tar {
    pub fn new() -> Tar {
        Tar(Vec::new())
    }
    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        let mut h = [0u8; 512];
        let put = |h: &mut [u8; 512], off: usize, len: usize, s: &[u8]| h[off..off + s.len().min(len)].copy_from_slice(&s[..s.len().min(len)]);
        put(&mut h, 0, 100, name.as_bytes());
        put(&mut h, 100, 8, format!("{mode:07o}\0").as_bytes());
        put(&mut h, 108, 8, b"0000000\0");
        put(&mut h, 116, 8, b"0000000\0");
        put(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
        put(&mut h, 136, 12, format!("{:011o}\0", 1_700_000_000u64).as_bytes());
        h[148..156].copy_from_slice(b"        ");
        h[156] = kind;
        put(&mut h, 157, 100, link.as_bytes());
        put(&mut h, 257, 6, b"ustar\0");
        put(&mut h, 263, 2, b"00");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
    }
    pub fn dir(&mut self, name: &str) {
        self.header(&format!("{}/", name.trim_end_matches('/')), 0o755, 0, b'5', "");
    }
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.header(name, mode, data.len(), b'0', "");
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }
    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

impl Default for Tar {
    fn default() -> Self {
        Tar::new()
    }
}

/// The root filesystem of the test image: /bin/busybox (Debian's busybox-static), /bin/sh,
/// and /www with the pages httpd serves as health endpoints (/, /api/health, /health).
pub fn busybox_rootfs() -> Result<Vec<u8>, String> {
    let bin = std::fs::read(BUSYBOX).map_err(|e| format!("{BUSYBOX} is needed to build the test image ({e}); install it with `apt-get install -y busybox-static`"))?;
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
        let mut containers: Vec<(String, bool)> = engine::list_containers(&d, &ep, Some(cluster)).await.map_err(|e| e.message)?.into_iter().map(|c| (c.name, c.running)).collect();
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
