//! Functions that read files (`file`, `filebase64`, `fileexists`), relative to the directory of
//! the configuration that calls them.
#![deny(clippy::arithmetic_side_effects)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use kdeploy_provider::Value;

use super::{Call, Result, closest, quote};

fn resolve(c: &Call, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let p = Path::new(path);
    if p.is_absolute() { p.to_path_buf() } else { c.ctx.base_dir.join(p) }
}

/// Reads a file for `file()` / `filebase64()`.
fn read_file(c: &Call) -> Result<Vec<u8>> {
    let given = c.str(0)?;
    let path = resolve(c, &given);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut msg = format!("no file exists at {} (relative to {})", quote(&given), c.ctx.base_dir.display());
            if let Some(hint) = sibling_hint(&given, &path) {
                let _ = write!(msg, "; did you mean {}?", quote(&hint));
            }
            return Err(c.invalid(0, msg));
        }
        Err(e) => return Err(c.invalid(0, format!("cannot read {}: {e}", quote(&given)))),
    };
    if meta.is_dir() {
        return Err(c.invalid(0, format!("{} is a directory, not a file", quote(&given))));
    }
    crate::files::read(&path, crate::files::FUNCTION_LIMIT).map_err(|e| c.invalid(0, e.0))
}

/// A file next to the missing one whose name is a near miss, spelled the way the user wrote it.
fn sibling_hint(given: &str, path: &Path) -> Option<String> {
    let dir = path.parent()?;
    let name = path.file_name()?.to_str()?;
    let entries: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    let mut sorted = entries;
    sorted.sort();
    let best = closest(name, sorted.iter().map(String::as_str))?;
    let prefix = given.strip_suffix(name)?;
    Some(format!("{prefix}{best}"))
}

pub(super) fn f_file(c: &Call) -> Result<Value> {
    let bytes = read_file(c)?;
    String::from_utf8(bytes).map(Value::String).map_err(|_| {
        c.invalid(
            0,
            format!(
                "contents of {} are not valid UTF-8; use the filebase64 function to obtain the Base64 encoded contents",
                quote(&c.str(0).unwrap_or_default())
            ),
        )
    })
}

pub(super) fn f_filebase64(c: &Call) -> Result<Value> {
    Ok(Value::String(base64::engine::general_purpose::STANDARD.encode(read_file(c)?)))
}

pub(super) fn f_fileexists(c: &Call) -> Result<Value> {
    let given = c.str(0)?;
    let path = resolve(c, &given);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Err(c.invalid(0, format!("{} is a directory, not a file", quote(&given)))),
        Ok(_) => Ok(Value::Bool(true)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Bool(false)),
        Err(e) => Err(c.invalid(0, format!("cannot stat {}: {e}", quote(&given)))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::functions::test_support::*;

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            let dir = std::env::temp_dir().join(format!("kfuncs-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn file_reads_relative_to_base_dir() {
        let tmp = TempDir::new("file");
        std::fs::create_dir_all(tmp.0.join("conf")).unwrap();
        std::fs::write(tmp.0.join("conf/agent.yaml"), "name: agent\n").unwrap();
        std::fs::write(tmp.0.join("bin.dat"), [0xff, 0xfe]).unwrap();
        let ctx = FuncContext { base_dir: &tmp.0 };
        let call_file = |name: &str, path: &str| call(name, &[s(path)], &ctx);

        assert_eq!(call_file("file", "conf/agent.yaml"), Ok(s("name: agent\n")));
        let abs = tmp.0.join("conf/agent.yaml").display().to_string();
        assert_eq!(call_file("file", &abs), Ok(s("name: agent\n")));
        assert_eq!(call_file("fileexists", "conf/agent.yaml"), Ok(Value::Bool(true)));
        assert_eq!(call_file("fileexists", "conf/nope.yaml"), Ok(Value::Bool(false)));
        assert_eq!(call_file("filebase64", "bin.dat"), Ok(s("//4=")));
        // Must not panic on odd paths (the hint logic slices the given path).
        assert!(call_file("file", "xé/.").is_err());
        assert!(call_file("file", "nul\0byte").is_err());

        let base = tmp.0.display();
        assert_eq!(
            call_file("file", "conf/agnet.yaml"),
            Err(err_at(
                0,
                &format!("Invalid value for \"path\" parameter: no file exists at \"conf/agnet.yaml\" (relative to {base}); did you mean \"conf/agent.yaml\"?")
            ))
        );
        assert_eq!(
            call_file("file", "missing.txt"),
            Err(err_at(0, &format!("Invalid value for \"path\" parameter: no file exists at \"missing.txt\" (relative to {base}).")))
        );
        assert_eq!(call_file("file", "conf"), Err(err_at(0, "Invalid value for \"path\" parameter: \"conf\" is a directory, not a file.")));
        assert_eq!(call_file("fileexists", "conf"), Err(err_at(0, "Invalid value for \"path\" parameter: \"conf\" is a directory, not a file.")));
        assert_eq!(
            call_file("file", "bin.dat"),
            Err(err_at(
                0,
                "Invalid value for \"path\" parameter: contents of \"bin.dat\" are not valid UTF-8; use the filebase64 function to obtain the Base64 encoded contents."
            ))
        );
    }
}
