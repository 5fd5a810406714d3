//! The binary end to end: a MinIO and a RabbitMQ stand-in on loopback, driven by the `mc` and
//! `rabbitmqadmin` stand-ins as kdeploy's one-shot steps drive them. (It also makes
//! `cargo test --workspace` build the binary the Docker test image is made from.)

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mc_creates_a_bucket_and_rabbitmqadmin_declares_a_queue() {
    let bin = env!("CARGO_BIN_EXE_kdeploy-standin");
    let dir = std::env::temp_dir().join(format!("standin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s3_port = free_port();
    let _s3 = Kill(
        Command::new(bin)
            .args(["s3", "--data", dir.to_str().unwrap(), "--port", &s3_port.to_string()])
            .env("MINIO_ROOT_USER", "root")
            .env("MINIO_ROOT_PASSWORD", "secret-pw")
            .spawn()
            .unwrap(),
    );
    let mq_port = free_port();
    let _mq = Kill(
        Command::new(bin)
            .args(["rabbitmq", "--data", dir.to_str().unwrap(), "--port", &mq_port.to_string()])
            .env("RABBITMQ_DEFAULT_USER", "u")
            .env("RABBITMQ_DEFAULT_PASS", "p")
            .spawn()
            .unwrap(),
    );
    wait_port(s3_port);
    wait_port(mq_port);
    let run = |args: &[&str]| Command::new(bin).args(args).env("HOME", &dir).status().unwrap().code();
    assert_eq!(run(&["mc", "alias", "set", "local", &format!("http://127.0.0.1:{s3_port}"), "root", "secret-pw"]), Some(0));
    assert_eq!(run(&["mc", "mb", "--ignore-existing", "local/recordings"]), Some(0));
    assert_eq!(run(&["mc", "mb", "--ignore-existing", "local/recordings"]), Some(0), "idempotent");
    assert_eq!(run(&["mc", "mb", "local/recordings"]), Some(1), "exists, without --ignore-existing");
    assert_eq!(std::fs::read_to_string(dir.join(".kdeploy-buckets")).unwrap(), "recordings\n");
    assert_eq!(run(&["mc", "alias", "set", "bad", &format!("http://127.0.0.1:{s3_port}"), "root", "wrong"]), Some(0));
    assert_eq!(run(&["mc", "mb", "bad/other"]), Some(1), "wrong credentials are refused");
    assert_eq!(
        run(&["rabbitmqadmin", "-H", "127.0.0.1", "-P", &mq_port.to_string(), "-u", "u", "-p", "p", "declare", "queue", "name=events", "durable=true"]),
        Some(0)
    );
    assert_eq!(run(&["rabbitmqadmin", "-H", "127.0.0.1", "-P", &mq_port.to_string(), "-u", "u", "-p", "bad", "declare", "queue", "name=x"]), Some(1));
    assert_eq!(std::fs::read_to_string(dir.join(".kdeploy-queues")).unwrap(), "events\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_vault_with_invalid_definitions_exits_with_its_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_kdeploy-standin")).args(["vault", "--port", "0"]).env("VAULT_ACCOUNTS", "[{\"account\":1}]").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid declarative configuration"), "{}", String::from_utf8_lossy(&out.stderr));
}
