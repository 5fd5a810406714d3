//! State in a local JSON file, with an advisory lock file, atomic writes and a backup.
//!
//! Layout, for a state file `state.json`:
//!
//! - `state.json`: the state, mode 0600 since it holds sensitive values;
//! - `state.json.backup`: the previous state, replaced on every write;
//! - `state.json.lock`: the lock file. The lock itself is an OS advisory lock (`flock`) on this
//!   file, so it is released automatically when the holder dies; the file's content is the
//!   holder's [`LockInfo`] as JSON, for messages and `force-unlock`.
//! - `state.json.tmp.<uuid>` and `state.json.backup.tmp.<uuid>`: temporary files of a write in
//!   progress. A crash may leave one behind; it is never read and can be deleted.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::StateError;

/// The largest state file read (a state of 100,000 components is a few hundred MiB).
pub const STATE_LIMIT: u64 = 1 << 30;
use crate::file::{decode, encode};
use crate::lock::LockInfo;
use crate::model::State;
use crate::store::StateStore;

/// How long [`LocalStore::lock`] sleeps between attempts.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A [`StateStore`] backed by a local file.
///
/// The lock taken with [`StateStore::lock`] is released by [`StateStore::unlock`], when the
/// store is dropped, or by the operating system when the process dies.
#[derive(Debug)]
pub struct LocalStore {
    path: PathBuf,
    seen: Seen,
    held: Option<HeldLock>,
    /// Whether this session already kept the previous state as the backup: the backup is the
    /// state as it was before this run, not before its last write.
    backed_up: bool,
    /// Set by `force_write` for one write: accept another lineage.
    replace_lineage: bool,
    /// The state file as this store last wrote it (device, inode, size, modification time): a
    /// trusted write first checks that it is still that file, which costs one `stat`.
    written: Option<(u64, u64, u64, i64, i64)>,
}

fn identity(path: &Path) -> Option<(u64, u64, u64, i64, i64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// What the last `read` or `write` saw on disk.
#[derive(Debug)]
enum Seen {
    NotRead,
    Absent,
    Present { lineage: String, serial: u64 },
}

#[derive(Debug)]
struct HeldLock {
    /// Open handle carrying the advisory lock.
    file: File,
    info: LockInfo,
}

/// Outcome of one attempt to take the lock.
enum Attempt {
    Acquired(File),
    /// Held by someone else; their info when it could be read.
    Busy(Option<LockInfo>),
}

impl LocalStore {
    /// A store for the state file at `path` (usually `<stack dir>/.kdeploy/state.json`). Nothing
    /// is touched until the store is used; the parent directory is created on the first write
    /// or lock.
    pub fn new(path: impl Into<PathBuf>) -> LocalStore {
        LocalStore { path: path.into(), seen: Seen::NotRead, backed_up: false, held: None, replace_lineage: false, written: None }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backup of the previous state: `<state file>.backup`.
    pub fn backup_path(&self) -> PathBuf {
        self.sibling(".backup")
    }

    /// The lock file: `<state file>.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.sibling(".lock")
    }

    /// Lineage and serial of the state seen by the last `read` or `write`; `None` before
    /// either, or when `read` found no state.
    pub fn last_seen(&self) -> Option<(&str, u64)> {
        match &self.seen {
            Seen::Present { lineage, serial } => Some((lineage.as_str(), *serial)),
            Seen::NotRead | Seen::Absent => None,
        }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn display(&self) -> String {
        self.path.display().to_string()
    }

    fn create_dir(&self) -> Result<(), StateError> {
        let dir = self.dir();
        fs::create_dir_all(&dir).map_err(|e| StateError::io("create state directory", dir, e))
    }

    /// The raw bytes of the state file, `None` when it does not exist. Only a regular file of
    /// at most [`STATE_LIMIT`] bytes is read: a FIFO would block forever, a device never end.
    fn read_bytes(&self) -> Result<Option<Vec<u8>>, StateError> {
        let err = |e| StateError::io("read state file", &self.path, e);
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        if !meta.is_file() {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is not a regular file (a directory, FIFO or device); move it away or point the backend at the state file",
            )));
        }
        let mut bytes = Vec::new();
        File::open(&self.path).and_then(|f| f.take(STATE_LIMIT.saturating_add(1)).read_to_end(&mut bytes)).map_err(err)?;
        if bytes.len() as u64 > STATE_LIMIT {
            return Err(err(io::Error::new(io::ErrorKind::InvalidData, format!("it is larger than {} MiB, the most a state file may be", STATE_LIMIT >> 20))));
        }
        Ok(Some(bytes))
    }

    /// One attempt at the advisory lock, guarding against the unlink race: a holder removes the
    /// lock file before releasing it, so an attempt may lock a file that no longer exists at
    /// the path. Such a lock is dropped and the attempt repeated on the new file.
    fn try_acquire(&self) -> Result<Attempt, StateError> {
        let lock_path = self.lock_path();
        let io_err = |action, e| StateError::io(action, &lock_path, e);
        // The race needs another process to unlink between our open and our check; give up
        // after a few rounds rather than spin if something keeps replacing the file.
        for _ in 0..20 {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock_path).map_err(|e| io_err("open lock file", e))?;
            match file.try_lock() {
                Ok(()) => {
                    let ours = file.metadata().map_err(|e| io_err("inspect lock file", e))?;
                    match fs::metadata(&lock_path) {
                        Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                            return Ok(Attempt::Acquired(file));
                        }
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err("inspect lock file", e)),
                    }
                }
                Err(TryLockError::WouldBlock) => return Ok(Attempt::Busy(read_lock_info(&file))),
                Err(TryLockError::Error(e)) => return Err(io_err("lock", e)),
            }
        }
        Ok(Attempt::Busy(None))
    }

    /// Records `info` in the freshly locked `file`.
    fn write_lock_info(&self, file: &File, info: &LockInfo) -> Result<(), StateError> {
        let lock_path = self.lock_path();
        let mut json = serde_json::to_vec_pretty(info).map_err(|e| StateError::io("encode lock information for", &lock_path, e.into()))?;
        json.push(b'\n');
        file.set_len(0)
            .and_then(|()| {
                let mut f = file;
                f.write_all(&json)
            })
            .and_then(|()| file.sync_data())
            .map_err(|e| StateError::io("write lock file", &lock_path, e))
    }

    /// Removes the lock file if it is still ours, then releases the advisory lock.
    fn release(&self, held: HeldLock) -> Result<(), StateError> {
        let lock_path = self.lock_path();
        let ours = held.file.metadata().map_err(|e| StateError::io("inspect lock file", &lock_path, e))?;
        match fs::metadata(&lock_path) {
            // Only remove the file we locked: after a force-unlock, the file at the path may
            // belong to another holder.
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => match fs::remove_file(&lock_path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StateError::io("remove lock file", &lock_path, e)),
            },
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StateError::io("inspect lock file", &lock_path, e)),
        }
        held.file.unlock().map_err(|e| StateError::io("release lock", &lock_path, e))
    }

    /// Who holds the lock according to the OS, ignoring this store's own lock.
    fn probe_lock(&self) -> Result<Option<LockInfo>, StateError> {
        let lock_path = self.lock_path();
        let file = match File::open(&lock_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::io("open lock file", &lock_path, e)),
        };
        match file.try_lock() {
            // Nobody holds it: the file is left over from a holder that died. Dropping the
            // handle releases our probe lock at once.
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(read_lock_info(&file).unwrap_or_else(|| LockInfo::unknown(&self.display())))),
            Err(TryLockError::Error(e)) => Err(StateError::io("probe lock", &lock_path, e)),
        }
    }
}

/// The holder's info from a lock file; `None` when empty (still being written) or unreadable.
fn read_lock_info(file: &File) -> Option<LockInfo> {
    let mut text = String::new();
    let mut f = file;
    f.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Removes a temporary file when dropped, unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates `path` (which must not exist) with mode 0600, writes `bytes` and syncs it.
    fn create(path: PathBuf, bytes: &[u8]) -> Result<TempFile, StateError> {
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(|e| StateError::io("create temporary state file", &path, e))?;
        let temp = TempFile { path, armed: true };
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| StateError::io("write temporary state file", &temp.path, e))?;
        Ok(temp)
    }

    /// Atomically renames the temporary file to `dest`.
    fn persist(mut self, dest: &Path, action: &'static str) -> Result<(), StateError> {
        fs::rename(&self.path, dest).map_err(|e| StateError::io(action, dest, e))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: a leftover temporary file is harmless and never read.
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl StateStore for LocalStore {
    fn describe(&self) -> String {
        format!("local state file {}", self.path.display())
    }

    fn read(&mut self) -> Result<Option<State>, StateError> {
        match self.read_bytes()? {
            None => {
                self.seen = Seen::Absent;
                Ok(None)
            }
            Some(bytes) => {
                let state = decode(&bytes, &self.display())?;
                self.backed_up = false;
                self.seen = Seen::Present { lineage: state.lineage.clone(), serial: state.serial };
                Ok(Some(state))
            }
        }
    }

    /// Writes atomically: the new state goes to a temporary file in the same directory, which
    /// is synced; the previous state is copied to the backup (itself atomically); the temporary
    /// file is renamed over the state file and the directory is synced.
    fn write(&mut self, state: &State) -> Result<(), StateError> {
        state.validate()?;
        let location = self.display();
        let replace_lineage = std::mem::take(&mut self.replace_lineage);
        if let Seen::Present { lineage, .. } = &self.seen
            && *lineage != state.lineage
            && !replace_lineage
        {
            return Err(StateError::LineageMismatch { location, existing: lineage.clone(), ours: state.lineage.clone() });
        }
        self.create_dir()?;
        // While this store holds the lock and wrote the file last, nobody else can have written
        // it: check against what it remembers instead of re-reading (an apply writes after
        // every operation, and re-parsing a large state each time made that quadratic).
        if self.held.is_some() && self.backed_up {
            if let Seen::Present { serial, .. } = self.seen
                && serial >= state.serial
            {
                return Err(StateError::SerialNotIncreasing { location, existing: serial, attempted: state.serial });
            }
            // ... unless the lock was broken and someone wrote meanwhile: the file is not the
            // one this store wrote.
            if self.written.is_some() && identity(&self.path) != self.written {
                return Err(StateError::ReplacedWhileLocked { location });
            }
        }
        let trusted = self.held.is_some() && self.backed_up && matches!(self.seen, Seen::Present { .. });
        let previous = if trusted { None } else { self.read_bytes()? };
        if let Some(bytes) = &previous {
            let disk = decode(bytes, &location)?;
            if disk.lineage != state.lineage && !replace_lineage {
                return Err(StateError::LineageMismatch { location, existing: disk.lineage, ours: state.lineage.clone() });
            }
            if let Seen::Present { serial, .. } = self.seen
                && serial != disk.serial
                && !replace_lineage
            {
                return Err(StateError::ChangedSinceRead { location, read_serial: serial, disk_serial: disk.serial });
            }
            if disk.serial >= state.serial {
                return Err(StateError::SerialNotIncreasing { location, existing: disk.serial, attempted: state.serial });
            }
        }

        let suffix = format!(".tmp.{}", uuid::Uuid::new_v4().simple());
        let temp = TempFile::create(self.sibling(&suffix), &encode(state))?;
        if let Some(bytes) = &previous {
            let backup = self.backup_path();
            let mut backup_temp = backup.clone().into_os_string();
            backup_temp.push(&suffix);
            TempFile::create(PathBuf::from(backup_temp), bytes)?.persist(&backup, "replace state backup")?;
        }
        temp.persist(&self.path, "replace state file")?;
        self.backed_up = true;
        self.written = identity(&self.path);
        let dir = self.dir();
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| StateError::io("sync state directory", dir, e))?;
        self.seen = Seen::Present { lineage: state.lineage.clone(), serial: state.serial };
        Ok(())
    }

    fn lock(&mut self, mut info: LockInfo, timeout: Duration) -> Result<(), StateError> {
        if let Some(held) = &self.held {
            return Err(StateError::AlreadyLocked { path: self.lock_path().display().to_string(), id: held.info.id.clone() });
        }
        if info.path.is_empty() {
            info.path = self.display();
        }
        self.create_dir()?;
        // `None` when the timeout is too large to represent: wait indefinitely.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.try_acquire()? {
                Attempt::Acquired(file) => {
                    // On failure the handle is dropped, which releases the lock; the file is
                    // left behind empty, and the next locker simply reuses it.
                    self.write_lock_info(&file, &info)?;
                    self.held = Some(HeldLock { file, info });
                    return Ok(());
                }
                Attempt::Busy(holder) => {
                    let now = Instant::now();
                    let remaining = deadline.map_or(RETRY_INTERVAL, |d| d.saturating_duration_since(now));
                    if remaining.is_zero() {
                        // The holder writes its details just after taking the OS lock: give it
                        // a moment, so that the error names it.
                        let mut holder = holder;
                        for _ in 0..20 {
                            if holder.is_some() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(10));
                            holder = self.probe_lock().ok().flatten().filter(|h| h.id != "(unknown)");
                        }
                        return Err(StateError::Locked {
                            holder: Box::new(holder.unwrap_or_else(|| LockInfo::unknown(&self.display()))),
                            path: self.lock_path().display().to_string(),
                        });
                    }
                    std::thread::sleep(remaining.min(RETRY_INTERVAL));
                }
            }
        }
    }

    fn force_write(&mut self, state: &State) -> Result<(), StateError> {
        // Forget what was seen, so that the write compares with the disk only, and accept the
        // other lineage for this one write.
        self.seen = Seen::NotRead;
        self.backed_up = false;
        self.replace_lineage = true;
        let result = self.write(state);
        self.replace_lineage = false;
        result
    }

    fn unlock(&mut self) -> Result<(), StateError> {
        match self.held.take() {
            Some(held) => self.release(held),
            None => Err(StateError::NotLocked { path: self.lock_path().display().to_string() }),
        }
    }

    fn lock_info(&mut self) -> Result<Option<LockInfo>, StateError> {
        match &self.held {
            Some(held) => Ok(Some(held.info.clone())),
            None => self.probe_lock(),
        }
    }

    /// Removes the lock file when `id` matches the current holder, and only when the holder is
    /// gone (nobody holds the OS lock on it any more).
    fn force_unlock(&mut self, id: &str) -> Result<(), StateError> {
        self.break_lock(id, false)
    }

    /// Removes the lock file even while its holder runs: that run keeps its OS lock on the
    /// removed file but no longer excludes anyone, and refuses its next write.
    fn force_unlock_running(&mut self, id: &str) -> Result<(), StateError> {
        self.break_lock(id, true)
    }
}

impl LocalStore {
    fn break_lock(&mut self, id: &str, even_if_running: bool) -> Result<(), StateError> {
        let lock_path = self.lock_path();
        let holder = match self.lock_info()? {
            None => {
                return Err(StateError::NotLocked { path: lock_path.display().to_string() });
            }
            Some(holder) => holder,
        };
        if holder.id != id {
            return Err(StateError::LockIdMismatch { given: id.to_string(), holder: Box::new(holder), path: lock_path.display().to_string() });
        }
        if self.held.is_some() {
            return self.unlock();
        }
        // Whether the holder still runs: it still holds the OS lock. Ours, if we get it, is
        // released when `_probe` is dropped, after the file is removed.
        let _probe = match self.try_acquire()? {
            Attempt::Acquired(file) => Some(file),
            Attempt::Busy(_) if even_if_running => None,
            Attempt::Busy(_) => return Err(StateError::HolderRunning { holder: Box::new(holder), path: lock_path.display().to_string() }),
        };
        match fs::remove_file(&lock_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::io("remove lock file", lock_path, e)),
        }
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            // Best effort: the OS releases the advisory lock with the handle in any case.
            let _ = self.release(held);
        }
    }
}
