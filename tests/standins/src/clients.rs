//! The clients kdeploy's one-shot steps run, as far as those steps use them:
//! `mc alias set NAME URL USER PASSWORD`, `mc mb [--ignore-existing] NAME/BUCKET`,
//! `mc ready NAME`, and `rabbitmqadmin -H HOST -u USER -p PASSWORD declare queue name=Q ...`.
//! Each returns the exit code and prints what it did.

use std::path::PathBuf;

use crate::http::{base64, call};
use crate::s3::{ACCESS_HEADER, SECRET_HEADER};

fn aliases_file() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_dir()).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".standin-mc-aliases")
}

fn alias(name: &str) -> Option<(String, String, String)> {
    let text = std::fs::read_to_string(aliases_file()).ok()?;
    text.lines()
        .rev()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|p| p.len() == 4 && p[0] == name)
        .map(|p| (p[1].to_string(), p[2].to_string(), p[3].to_string()))
}

pub fn mc(args: &[String]) -> i32 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["alias", "set", name, url, user, password] => {
            let line = format!("{name}\t{url}\t{user}\t{password}\n");
            let mut text = std::fs::read_to_string(aliases_file()).unwrap_or_default();
            text.push_str(&line);
            match std::fs::write(aliases_file(), text) {
                Ok(()) => {
                    println!("Added `{name}` successfully.");
                    0
                }
                Err(e) => {
                    eprintln!("mc: {e}");
                    1
                }
            }
        }
        ["mb", rest @ ..] => {
            let ignore = rest.contains(&"--ignore-existing");
            let Some(target) = rest.iter().find(|x| !x.starts_with("--")) else {
                eprintln!("mc: mb needs ALIAS/BUCKET");
                return 1;
            };
            let Some((name, bucket)) = target.split_once('/') else {
                eprintln!("mc: mb needs ALIAS/BUCKET");
                return 1;
            };
            let Some((url, user, password)) = alias(name) else {
                eprintln!("mc: <ERROR> unknown alias {name}");
                return 1;
            };
            match call(&format!("{}/{bucket}", url.trim_end_matches('/')), "PUT", &[(ACCESS_HEADER, &user), (SECRET_HEADER, &password)], b"") {
                Ok((200, _)) => {
                    println!("Bucket created successfully `{target}`.");
                    0
                }
                Ok((409, _)) if ignore => 0,
                Ok((code, body)) => {
                    eprintln!("mc: <ERROR> Unable to make bucket `{target}`: {code} {body}");
                    1
                }
                Err(e) => {
                    eprintln!("mc: <ERROR> Unable to make bucket `{target}`: {e}");
                    1
                }
            }
        }
        ["ready", _] => match call("http://127.0.0.1:9000/minio/health/ready", "GET", &[], b"") {
            Ok((200, _)) => 0,
            _ => 1,
        },
        _ => {
            eprintln!("mc (stand-in): unsupported arguments {a:?}");
            2
        }
    }
}

pub fn rabbitmqadmin(args: &[String]) -> i32 {
    let mut host = "localhost".to_string();
    let mut port = "15672".to_string();
    let mut user = "guest".to_string();
    let mut password = "guest".to_string();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-H" | "--host" => host = it.next().cloned().unwrap_or_default(),
            "-P" | "--port" => port = it.next().cloned().unwrap_or_default(),
            "-u" | "--username" => user = it.next().cloned().unwrap_or_default(),
            "-p" | "--password" => password = it.next().cloned().unwrap_or_default(),
            other => rest.push(other.to_string()),
        }
    }
    let queue = match rest.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["declare", "queue", opts @ ..] => opts.iter().find_map(|o| o.strip_prefix("name=")).map(str::to_string),
        _ => None,
    };
    let Some(queue) = queue else {
        eprintln!("rabbitmqadmin (stand-in): unsupported arguments {args:?}");
        return 2;
    };
    let auth = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
    match call(
        &format!("http://{host}:{port}/api/queues/%2F/{queue}"),
        "PUT",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        br#"{"durable":true}"#,
    ) {
        Ok((code, _)) if (200..300).contains(&code) => {
            println!("queue declared");
            0
        }
        Ok((code, body)) => {
            eprintln!("*** Access refused: {code} {body}");
            1
        }
        Err(e) => {
            eprintln!("*** Could not connect: {e}");
            1
        }
    }
}
