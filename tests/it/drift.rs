//! `kdeploy drift` with the fake provider: exact reports, exit codes, ignore rules, formats and
//! the webhook.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use kdeploy_provider::Value;
use kdeploy_provider::fake::FakeWorld;

use crate::support::{TestStack, basic_stack, run};

const CAMS: &[(&str, &str)] = &[("a", "rtsp://10.0.0.1/s1"), ("b", "rtsp://10.0.0.2/s1")];

fn applied(text: &str) -> (TestStack, FakeWorld) {
    let s = TestStack::new(&[("main.hcl", text)]);
    let w = FakeWorld::new();
    let r = run(s.path(), &w, &["apply", "--auto-approve"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    (s, w)
}

#[test]
fn no_drift_right_after_apply() {
    let (s, w) = applied(&basic_stack(CAMS));
    w.clear_calls();
    let r = run(s.path(), &w, &["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "No drift: the 6 deployed components match the recorded state.\n");
    assert!(w.calls().is_empty(), "drift never changes anything");
    assert!(
        !s.path().join(".kdeploy/state.json.lock").exists()
            || std::fs::read_to_string(s.path().join(".kdeploy/state.json.lock")).unwrap_or_default().is_empty()
    );
}

#[test]
fn changes_and_deletions_are_reported_exactly() {
    let (s, w) = applied(&basic_stack(CAMS));
    let serial = s.state().serial;
    w.set_attr("agent.cam[\"a\"]", "rtsp_url", Value::string("rtsp://evil/stream"));
    w.set_attr("vault.main", "secret_key", Value::string("rotated-by-hand"));
    w.remove("agent.cam[\"b\"]");
    let r = run(s.path(), &w, &["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        "Drift detected in 3 of 6 components:\n\n  agent.cam[\"a\"] (agent kerberos): changed outside kdeploy\n      ~ rtsp_url = \"rtsp://10.0.0.1/s1\" -> \"rtsp://evil/stream\"\n  agent.cam[\"b\"] (agent kerberos): deleted outside kdeploy\n  vault.main (vault kerberos): changed outside kdeploy\n      ~ secret_key = (sensitive value) -> (sensitive value)\n\nRun `kdeploy plan` to see how apply would restore them, or `kdeploy apply --refresh-only` to accept the live values.\n"
    );
    assert!(!r.stdout.contains("rotated-by-hand"));
    assert_eq!(s.state().serial, serial, "read-only");

    let r = run(s.path(), &w, &["drift", "--json"]);
    assert_eq!(r.code, 0);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["format_version"], "1.0");
    assert_eq!(j["drifted"], true);
    assert_eq!(j["summary"], serde_json::json!({"checked": 6, "drifted": 3, "changed": 2, "deleted": 1, "unhealthy": 0}));
    let a = j["drift"].as_array().unwrap().iter().find(|e| e["address"] == "agent.cam[\"a\"]").unwrap();
    assert_eq!(
        a["attributes"][0],
        serde_json::json!({"path": "rtsp_url", "path_steps": ["rtsp_url"], "before": "rtsp://10.0.0.1/s1", "after": "rtsp://evil/stream", "sensitive": false})
    );
    let v = j["drift"].as_array().unwrap().iter().find(|e| e["address"] == "vault.main").unwrap();
    assert_eq!(v["attributes"][0]["after"], serde_json::Value::Null);
    assert_eq!(v["attributes"][0]["sensitive"], true);
    assert!(!r.stdout.contains("rotated-by-hand"));

    let r = run(s.path(), &w, &["drift", "--format", "markdown"]);
    assert!(r.stdout.starts_with("### ⚠️ Drift detected in 3 of 6 components\n"), "{}", r.stdout);
    assert!(r.stdout.contains("| `agent.cam[\"a\"]` | changed | `rtsp_url` | \"rtsp://10.0.0.1/s1\" | \"rtsp://evil/stream\" |"), "{}", r.stdout);
    assert!(r.stdout.contains("| `agent.cam[\"b\"]` | deleted | | | |"), "{}", r.stdout);

    // plan --detailed-exitcode keeps Terraform's meaning: changes to apply.
    assert_eq!(run(s.path(), &w, &["plan", "--detailed-exitcode"]).code, 2);
}

#[test]
fn ignore_rules_are_honoured() {
    let text = basic_stack(CAMS)
        .replace("  rtsp_url = each.value\n", "  rtsp_url = each.value\n  lifecycle {\n    ignore_changes = [timezone]\n  }\n")
        .replace("stack \"test\" {}", "stack \"test\" {\n  drift {\n    ignore = [\"vault.main.url\", \"database.*\"]\n  }\n}");
    let (s, w) = applied(&text);
    w.set_attr("agent.cam[\"a\"]", "timezone", Value::string("Asia/Tokyo"));
    w.set_attr("vault.main", "url", Value::string("http://moved"));
    w.set_attr("database.meta", "storage_size", Value::string("1Ti"));
    let r = run(s.path(), &w, &["drift", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "everything drifted is ignored: {}", r.stdout);
    w.set_attr("vault.main", "node_port", Value::from_i64(31000));
    let r = run(s.path(), &w, &["drift", "--detailed-exitcode", "--json"]);
    assert_eq!(r.code, 2);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["summary"]["drifted"], 1);
    assert_eq!(j["drift"][0]["attributes"].as_array().unwrap().len(), 1, "only node_port: {}", r.stdout);
    assert_eq!(j["drift"][0]["attributes"][0]["path"], "node_port");
    assert_eq!(j["ignored_rules"], serde_json::json!(["database.*", "vault.main.url"]));
}

/// A one-route HTTP server that records POST bodies and answers with `statuses` in turn.
fn webhook(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook?token=secret-token", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b2 = bodies.clone();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            b2.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
            let status = statuses.next().unwrap_or(200);
            let _ = write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

#[test]
fn webhook_gets_one_post_per_drifted_run_and_failures_do_not_hide_drift() {
    let (s, w) = applied(&basic_stack(CAMS));
    let (url, bodies) = webhook(vec![200, 200, 200]);
    // No drift: no post.
    assert_eq!(run(s.path(), &w, &["drift", "--notify", &url]).code, 0);
    assert!(bodies.lock().unwrap().is_empty());
    w.remove("agent.cam[\"a\"]");
    let r = run(s.path(), &w, &["drift", "--detailed-exitcode", "--notify", &url]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let got = bodies.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "exactly one POST");
    let j: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(j["text"], "kdeploy: drift detected in 1 of 6 components: agent.cam[\"a\"] (deleted)");
    assert_eq!(j["drift"][0]["status"], "deleted");

    // A webhook that keeps failing: retried, reported, and the exit code still says drift.
    let (bad, bad_bodies) = webhook(vec![500, 503, 502]);
    let r = run(s.path(), &w, &["drift", "--detailed-exitcode", "--notify", &bad]);
    assert_eq!(r.code, 2);
    assert_eq!(bad_bodies.lock().unwrap().len(), 3, "retried");
    assert!(r.stderr.contains("warning: could not send the drift report to the webhook"), "{}", r.stderr);
    assert!(!r.stderr.contains("secret-token"), "the URL is not printed: {}", r.stderr);
}
