//! RabbitMQ's management API, as far as declaring a queue goes: queues declared with the default
//! user's credentials are recorded in `<data>/.kdeploy-queues`, one name a line.

use std::path::PathBuf;

use crate::http::{Request, Response, base64};

pub const QUEUES_FILE: &str = ".kdeploy-queues";

pub struct Management {
    pub user: String,
    pub password: String,
    pub data: PathBuf,
}

impl Management {
    pub fn queues(&self) -> Vec<String> {
        std::fs::read_to_string(self.data.join(QUEUES_FILE)).unwrap_or_default().lines().map(str::to_string).collect()
    }

    pub fn respond(&self, req: &Request) -> Response {
        let path = req.path.split('?').next().unwrap_or_default();
        if path == "/api/health" || path == "/api/overview" {
            return Response::json(200, "{}");
        }
        let expected = format!("Basic {}", base64(format!("{}:{}", self.user, self.password).as_bytes()));
        if req.header("authorization") != Some(expected.as_str()) {
            return Response::json(401, r#"{"error":"not_authorised"}"#);
        }
        match (req.method.as_str(), path.strip_prefix("/api/queues/%2F/")) {
            ("PUT", Some(name)) if !name.is_empty() => {
                let mut all = self.queues();
                if !all.iter().any(|q| q == name) {
                    all.push(name.to_string());
                }
                let _ = std::fs::create_dir_all(&self.data);
                match std::fs::write(self.data.join(QUEUES_FILE), all.join("\n") + "\n") {
                    Ok(()) => Response::json(201, ""),
                    Err(e) => Response::json(500, &format!("{{\"error\":{:?}}}", e.to_string())),
                }
            }
            ("GET", _) if path == "/api/queues" => Response::json(200, &serde_json::to_string(&self.queues()).unwrap_or_default()),
            _ => Response::json(404, r#"{"error":"not_found"}"#),
        }
    }
}
