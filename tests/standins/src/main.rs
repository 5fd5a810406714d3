//! `kdeploy-standin vault [--ignore-variables | --without-providers aws,azure] [--port 80]`, `kdeploy-standin s3 --data DIR
//! [--port 9000]`, `kdeploy-standin rabbitmq --data DIR [--port 15672]`; called as `mc` or
//! `rabbitmqadmin` (a symlink), it is that client.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use kdeploy_standins::{clients, http, rabbitmq, s3, vault};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn serve(port: String, handler: Arc<dyn Fn(&http::Request) -> http::Response + Send + Sync>) -> i32 {
    match std::net::TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => {
            println!("listening on :{port}");
            http::serve(l, handler);
            0
        }
        Err(e) => {
            eprintln!("cannot listen on :{port}: {e}");
            1
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let called = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()).unwrap_or_default();
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let code = match (called.as_str(), args.get(1).map(String::as_str)) {
        ("mc", _) => clients::mc(&args[1..]),
        ("rabbitmqadmin", _) => clients::rabbitmqadmin(&args[1..]),
        (_, Some("mc")) => clients::mc(&args[2..]),
        (_, Some("rabbitmqadmin")) => clients::rabbitmqadmin(&args[2..]),
        (_, Some("vault")) => {
            let port = flag(&args, "--port").unwrap_or_else(|| "80".into());
            let release = if args.iter().any(|a| a == "--ignore-variables") {
                println!("starting (this image predates the VAULT_* variables)");
                vault::Release::PredatesVariables
            } else if let Some(list) = flag(&args, "--without-providers") {
                vault::Release::WithoutProviders(list.split(',').map(str::to_string).collect())
            } else {
                vault::Release::Current
            };
            let vars: BTreeMap<String, String> = std::env::vars().collect();
            let config = vault::load_for(&vars, &release);
            match config {
                Ok(c) => {
                    println!("starting with {} providers, {} integrations, {} accounts", c.providers.len(), c.integrations.len(), c.accounts.len());
                    serve(port, Arc::new(move |req| vault::respond(&c, req)))
                }
                Err(e) => {
                    eprintln!("level=fatal msg=\"invalid declarative configuration: {e}\"");
                    1
                }
            }
        }
        (_, Some("s3")) => {
            let s = s3::S3 {
                user: env("MINIO_ROOT_USER"),
                password: env("MINIO_ROOT_PASSWORD"),
                data: PathBuf::from(flag(&args, "--data").unwrap_or_else(|| "/data".into())),
            };
            serve(flag(&args, "--port").unwrap_or_else(|| "9000".into()), Arc::new(move |req| s.respond(req)))
        }
        (_, Some("rabbitmq")) => {
            let m = rabbitmq::Management {
                user: env("RABBITMQ_DEFAULT_USER"),
                password: env("RABBITMQ_DEFAULT_PASS"),
                data: PathBuf::from(flag(&args, "--data").unwrap_or_else(|| "/var/lib/rabbitmq".into())),
            };
            serve(flag(&args, "--port").unwrap_or_else(|| "15672".into()), Arc::new(move |req| m.respond(req)))
        }
        _ => {
            eprintln!("usage: kdeploy-standin vault|s3|rabbitmq|mc|rabbitmqadmin ...");
            2
        }
    };
    std::process::exit(code);
}
