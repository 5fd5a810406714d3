//! Run the test server standalone: `cargo run -p kdeploy-kube-testserver --example serve -- /tmp/kcfg`
fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/kdeploy-kube-testserver".into());
    let never = std::env::var("NEVER_READY").is_ok();
    let opts = kdeploy_kube_testserver::Options { ready_after: if never { None } else { Some(std::time::Duration::from_millis(500)) }, ..Default::default() };
    let s = kdeploy_kube_testserver::TestServer::start(opts);
    let p = s.write_kubeconfig(std::path::Path::new(&dir), "kdeploy-test");
    println!("{} {}", s.url(), p.display());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
