//! A MinIO stand-in: health, and bucket creation with the root credentials, recorded in the
//! data directory (`<data>/.kdeploy-buckets`, one name a line) so a test can read it back.

use std::path::PathBuf;

use crate::http::{Request, Response};

/// The headers the [`crate::clients`] `mc` sends its credentials in (real S3 signs instead).
pub const ACCESS_HEADER: &str = "x-standin-access-key";
pub const SECRET_HEADER: &str = "x-standin-secret-key";
pub const BUCKETS_FILE: &str = ".kdeploy-buckets";

pub struct S3 {
    pub user: String,
    pub password: String,
    pub data: PathBuf,
}

impl S3 {
    pub fn buckets(&self) -> Vec<String> {
        std::fs::read_to_string(self.data.join(BUCKETS_FILE)).unwrap_or_default().lines().map(str::to_string).collect()
    }

    pub fn respond(&self, req: &Request) -> Response {
        let path = req.path.split('?').next().unwrap_or_default();
        match (req.method.as_str(), path) {
            ("GET", "/minio/health/ready" | "/minio/health/live" | "/api/health") => Response::text(200, "ok"),
            ("GET", "/") => Response::text(200, &self.buckets().join("\n")),
            ("PUT", p) if p.len() > 1 && !p[1..].contains('/') => {
                if req.header(ACCESS_HEADER) != Some(self.user.as_str()) || req.header(SECRET_HEADER) != Some(self.password.as_str()) {
                    return Response::text(403, "SignatureDoesNotMatch");
                }
                let bucket = &p[1..];
                if self.buckets().iter().any(|b| b == bucket) {
                    return Response::text(409, "BucketAlreadyOwnedByYou");
                }
                let _ = std::fs::create_dir_all(self.data.join(bucket));
                let mut all = self.buckets();
                all.push(bucket.to_string());
                match std::fs::write(self.data.join(BUCKETS_FILE), all.join("\n") + "\n") {
                    Ok(()) => Response::text(200, ""),
                    Err(e) => Response::text(500, &e.to_string()),
                }
            }
            _ => Response::text(404, "NoSuchKey"),
        }
    }
}
