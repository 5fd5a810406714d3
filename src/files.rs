//! Reading files the user names (stack files, variable files, `file()`, plan and state files):
//! only regular files, only up to a size limit, so that a FIFO, a directory, `/dev/zero` or a
//! runaway file is a clear error instead of a hang or an allocation abort.
#![deny(clippy::arithmetic_side_effects)]

use std::io::Read;
use std::path::Path;

/// Stack and variable files.
pub const SOURCE_LIMIT: u64 = 16 << 20;
/// Files read by the `file`/`filebase64` functions.
pub const FUNCTION_LIMIT: u64 = 16 << 20;
/// Saved plans and state files given on the command line.
pub const PLAN_LIMIT: u64 = 1 << 30;

/// Why a file could not be read; the message names the file and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError(pub String);

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b => format!("{b} bytes"),
    }
}

/// The bytes of a regular file of at most `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if std::fs::symlink_metadata(path).is_ok() => FileError(format!("{shown} is a symbolic link whose target does not exist")),
        _ => FileError(format!("cannot read {shown}: {}", describe_io(&e))),
    })?;
    if !meta.is_file() {
        return Err(FileError(format!("{shown} is {}, not a regular file", kind_of(&meta))));
    }
    if meta.len() > limit {
        return Err(FileError(format!("{shown} is {}, more than the {} kdeploy reads from such a file", human(meta.len()), human(limit))));
    }
    let file = std::fs::File::open(path).map_err(|e| FileError(format!("cannot read {shown}: {}", describe_io(&e))))?;
    let mut bytes = Vec::new();
    // The size can grow between the check and the read: never read more than the limit.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| FileError(format!("cannot read {shown}: {}", describe_io(&e))))?;
    if bytes.len() as u64 > limit {
        return Err(FileError(format!("{shown} grew beyond the {} kdeploy reads from such a file", human(limit))));
    }
    Ok(bytes)
}

/// The text of a regular file of at most `limit` bytes; invalid UTF-8 is reported with its line
/// and column.
pub fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    let bytes = read(path, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..valid];
        let line = before.iter().filter(|b| **b == b'\n').count().saturating_add(1);
        let line_start = before.iter().rposition(|b| *b == b'\n').map_or(0, |i| i.saturating_add(1));
        let column = valid.saturating_sub(line_start).saturating_add(1);
        FileError(format!("{}:{line}:{column}: the file is not valid UTF-8 (byte {valid}); save it as UTF-8", path.display()))
    })
}

fn describe_io(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(40) => "a symbolic link loop (too many levels of symbolic links)".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.hcl");
        std::fs::write(&p, "x = 1\n").unwrap();
        assert_eq!(read_text(&p, 100).unwrap(), "x = 1\n");
        assert!(read(&p, 3).unwrap_err().0.contains("more than the 3 bytes"));
        assert!(read(dir.path(), 100).unwrap_err().0.contains("is a directory, not a regular file"));
        assert!(read(Path::new("/dev/zero"), 100).unwrap_err().0.contains("is a character device"));
        let fifo = dir.path().join("f.hcl");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(read(&fifo, 100).unwrap_err().0.contains("is a FIFO"), "no hang on a FIFO");
        let dangling = dir.path().join("d.hcl");
        std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).unwrap();
        assert!(read(&dangling, 100).unwrap_err().0.contains("symbolic link whose target does not exist"));
        let l1 = dir.path().join("l1.hcl");
        let l2 = dir.path().join("l2.hcl");
        std::os::unix::fs::symlink(&l2, &l1).unwrap();
        std::os::unix::fs::symlink(&l1, &l2).unwrap();
        assert!(read(&l1, 100).unwrap_err().0.contains("symbolic link loop"));
        let bad = dir.path().join("bad.hcl");
        std::fs::write(&bad, b"x = 1\ny = \"\xff\"\n").unwrap();
        assert!(read_text(&bad, 100).unwrap_err().0.ends_with("bad.hcl:2:6: the file is not valid UTF-8 (byte 11); save it as UTF-8"));
    }
}
