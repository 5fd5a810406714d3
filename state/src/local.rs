//! State in a local JSON file, with an advisory lock file, atomic writes and a backup.
//!
//! Layout, for a state file `state.json`:
//!
//! - `state.json`: the state, mode 0600 since it holds sensitive values;
//! - `state.json.backup`: the previous state, replaced on every write;
//! - `state.json.lock`: the lock file. The lock itself is an OS advisory lock (`flock`) on this
//!   file, so it is released automatically when the holder dies; the file's content is the
//!   holder's [`LockInfo`] as JSON, for messages and `force-unlock`.
//! - `state.json.journal`: the operations of an apply in progress (see [`crate::journal`]),
//!   appended while this store holds the lock. JSON Lines, mode 0600: the first line is a header
//!   naming the state file the journal follows, `{"kdeploy_journal":1,"lineage":"...",
//!   "base_serial":12,"base_sha256":"<hex SHA-256 of the state file>"}`; each further line is one
//!   group of records made durable together (one `fdatasync`), `{"serial":13,"records":[...]}`.
//!   The file is created whole (header and first group) by a rename, so it never exists without
//!   its header. A reader replays it over a state file whose lineage, serial and SHA-256 match
//!   the header and ignores it otherwise (it was folded already: a crash came between writing
//!   the new state file and removing the journal). A last line cut short by a crash is ignored
//!   (nothing acted on it: the operations it would have begun had not started); damage before
//!   a complete line is an error naming the file. Every whole write removes the journal; the
//!   end of an apply folds it that way, and so does the next read under the lock after a crash.
//! - `state.json.tmp.<uuid>`, `state.json.backup.tmp.<uuid>` and `state.json.journal.tmp.<uuid>`:
//!   temporary files of a write in progress. A crash may leave one behind; it is never read and
//!   can be deleted.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::StateError;
use crate::file::{decode, encode};
use crate::journal::{FileHeader, JOURNAL_VERSION, Record, encode_group, follows, parse_file, replay, sha256_hex};
use crate::lock::LockInfo;
use crate::model::State;
use crate::store::{Append, StateStore};

/// The largest state file read (a state of 100,000 components is a few hundred MiB).
pub const STATE_LIMIT: u64 = 1 << 30;

/// How long [`LocalStore::lock`] sleeps between attempts.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A journal longer than the state file and than this is folded into a new state file: the
/// bytes written stay proportional to the work, and a replay never reads much more than the
/// state itself.
const FOLD_AT_LEAST: u64 = 1 << 20;

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
    /// The SHA-256 and size of the state file as this store last wrote it (what a journal over
    /// it names).
    written_digest: Option<(String, u64)>,
    journal: Journal,
    warnings: Vec<String>,
}

/// This store's journal.
#[derive(Debug, Default)]
enum Journal {
    /// None: appends are refused until a checkpoint.
    #[default]
    Off,
    /// Checkpointed under the lock: the first append creates the journal over this state file.
    Ready(Base),
    Open(OpenJournal),
    /// An append failed: nothing more is appended until the next checkpoint.
    Broken,
}

/// The state file a journal follows.
#[derive(Debug)]
struct Base {
    lineage: String,
    serial: u64,
    sha256: String,
    len: u64,
}

#[derive(Debug)]
struct OpenJournal {
    file: File,
    /// Device and inode: the journal at the path must still be this one.
    identity: (u64, u64),
    len: u64,
    lineage: String,
    last_serial: u64,
    /// The size of the state file it follows.
    state_len: u64,
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
        LocalStore {
            path: path.into(),
            seen: Seen::NotRead,
            backed_up: false,
            held: None,
            replace_lineage: false,
            written: None,
            written_digest: None,
            journal: Journal::Off,
            warnings: Vec::new(),
        }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backup of the previous state: `<state file>.backup`.
    pub fn backup_path(&self) -> PathBuf {
        self.sibling(".backup")
    }

    /// The journal of an apply in progress: `<state file>.journal`.
    pub fn journal_path(&self) -> PathBuf {
        self.sibling(".journal")
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

    /// The raw bytes of the state file, `None` when it does not exist.
    fn read_bytes(&self) -> Result<Option<Vec<u8>>, StateError> {
        read_limited(&self.path, "read state file")
    }
}

/// The bytes of the file at `path`, `None` when it does not exist. Only a regular file of at
/// most [`STATE_LIMIT`] bytes is read: a FIFO would block forever, a device never end.
fn read_limited(path: &Path, action: &'static str) -> Result<Option<Vec<u8>>, StateError> {
    let err = |e| StateError::io(action, path, e);
    let meta = match fs::metadata(path) {
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
    File::open(path).and_then(|f| f.take(STATE_LIMIT.saturating_add(1)).read_to_end(&mut bytes)).map_err(err)?;
    if bytes.len() as u64 > STATE_LIMIT {
        return Err(err(io::Error::new(io::ErrorKind::InvalidData, format!("it is larger than {} MiB, the most a state file may be", STATE_LIMIT >> 20))));
    }
    Ok(Some(bytes))
}

impl LocalStore {
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
        TempFile::create_open(path, bytes).map(|(temp, _)| temp)
    }

    /// [`TempFile::create`], keeping the file open for appending.
    fn create_open(path: PathBuf, bytes: &[u8]) -> Result<(TempFile, File), StateError> {
        let mut file =
            OpenOptions::new().append(true).create_new(true).mode(0o600).open(&path).map_err(|e| StateError::io("create temporary state file", &path, e))?;
        let temp = TempFile { path, armed: true };
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| StateError::io("write temporary state file", &temp.path, e))?;
        Ok((temp, file))
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

    /// Reads the state file and replays the journal over it when there is one. Under the lock,
    /// a replayed journal is folded into a new state file at once (best effort: a failure is a
    /// warning, and the journal stays).
    fn read(&mut self) -> Result<Option<State>, StateError> {
        let Some(disk) = self.load()? else {
            self.seen = Seen::Absent;
            return Ok(None);
        };
        self.backed_up = false;
        self.seen = Seen::Present { lineage: disk.state.lineage.clone(), serial: disk.state.serial };
        if disk.replayed > 0
            && self.held.is_some()
            && let Err(e) = self.write_whole(&disk.state, true)
        {
            self.warnings.push(format!(
                "the journal {} of an apply that did not finish could not be folded into the state file, and stays: {e}",
                self.journal_path().display()
            ));
        }
        Ok(Some(disk.state))
    }

    /// Writes atomically: the new state goes to a temporary file in the same directory, which
    /// is synced; the previous state is copied to the backup (itself atomically); the temporary
    /// file is renamed over the state file and the directory is synced. A journal goes away.
    fn write(&mut self, state: &State) -> Result<(), StateError> {
        self.write_whole(state, false)
    }

    /// A whole write; under the lock, later changes are appended to a journal over it. When the
    /// journal this store appended to ends with `state`'s serial, this write folds it.
    fn checkpoint(&mut self, state: &State) -> Result<bool, StateError> {
        let fold = matches!(&self.journal, Journal::Open(j) if j.last_serial == state.serial);
        self.write_whole(state, fold)?;
        if self.held.is_none() {
            return Ok(false);
        }
        let (sha256, len) = self.written_digest.clone().unwrap_or_default();
        self.journal = Journal::Ready(Base { lineage: state.lineage.clone(), serial: state.serial, sha256, len });
        Ok(true)
    }

    /// Appends one line to the journal and `fdatasync`s it (the first append creates the file,
    /// whole, by a rename). Refused without the lock, and when the state file is no longer the
    /// one this store wrote (the lock was broken and someone wrote since).
    fn append(&mut self, serial: u64, records: &[Record]) -> Result<Append, StateError> {
        if !matches!(self.journal, Journal::Ready(_) | Journal::Open(_)) {
            return Err(self.no_journal());
        }
        if self.held.is_none() {
            return Err(StateError::NotLocked { path: self.lock_path().display().to_string() });
        }
        if self.written.is_none() || identity(&self.path) != self.written {
            return Err(StateError::ReplacedWhileLocked { location: self.display() });
        }
        let appended = match std::mem::replace(&mut self.journal, Journal::Broken) {
            Journal::Ready(base) => {
                follows(base.serial, serial).and_then(|()| encode_group(serial, records)).and_then(|line| self.create_journal(&base, serial, &line))
            }
            Journal::Open(j) => follows(j.last_serial, serial).and_then(|()| encode_group(serial, records)).and_then(|line| self.append_line(j, serial, &line)),
            Journal::Off | Journal::Broken => Err(self.no_journal()),
        };
        // On error the journal stays Broken: nothing is appended after a failed append.
        let journal = appended?;
        self.seen = Seen::Present { lineage: journal.lineage.clone(), serial };
        let fold = journal.len > journal.state_len.max(FOLD_AT_LEAST);
        self.journal = Journal::Open(journal);
        Ok(Append::Recorded { fold })
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
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

/// The state on disk, with the journal replayed over it.
struct Disk {
    /// The state file's bytes (what the backup keeps).
    bytes: Vec<u8>,
    state: State,
    /// How many journal groups were replayed.
    replayed: usize,
}

fn file_identity(file: &File, path: &Path) -> Result<(u64, u64), StateError> {
    file.metadata().map(|m| (m.dev(), m.ino())).map_err(|e| StateError::io("inspect state journal", path, e))
}

impl LocalStore {
    /// The state file and the journal replayed over it; `None` without a state file (a journal
    /// alone follows nothing and is ignored).
    fn load(&self) -> Result<Option<Disk>, StateError> {
        let Some(bytes) = self.read_bytes()? else { return Ok(None) };
        let mut state = decode(&bytes, &self.display())?;
        let replayed = self.replay_journal(&bytes, &mut state)?;
        Ok(Some(Disk { bytes, state, replayed }))
    }

    /// Replays the journal over `state` (decoded from `bytes`) when it follows exactly that
    /// state file; returns how many groups it replayed.
    fn replay_journal(&self, bytes: &[u8], state: &mut State) -> Result<usize, StateError> {
        let path = self.journal_path();
        let Some(journal) = read_limited(&path, "read state journal")? else { return Ok(0) };
        let location = path.display().to_string();
        let Some(parsed) = parse_file(&journal, &location)? else { return Ok(0) };
        let h = &parsed.header;
        if h.lineage != state.lineage || h.base_serial != state.serial || h.base_sha256 != sha256_hex(bytes) {
            // Folded already, or left over from another state: the state file supersedes it.
            return Ok(0);
        }
        replay(state, parsed.groups).map_err(|message| StateError::Journal { location, message })
    }

    /// The one whole write. `fold`: `state` has the serial of the state on disk with its journal
    /// (it is that state, folded); otherwise its serial must be higher.
    fn write_whole(&mut self, state: &State, fold: bool) -> Result<(), StateError> {
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
        let too_low = |stored: u64| stored > state.serial || (stored == state.serial && !fold);
        // While this store holds the lock and wrote the file last, nobody else can have written
        // it: check against what it remembers instead of re-reading (re-parsing a large state
        // for every write made apply quadratic).
        let trusted = self.held.is_some() && self.backed_up && matches!(self.seen, Seen::Present { .. });
        if trusted {
            if let Seen::Present { serial, .. } = self.seen
                && too_low(serial)
            {
                return Err(StateError::SerialNotIncreasing { location, existing: serial, attempted: state.serial });
            }
            // ... unless the lock was broken and someone wrote meanwhile: the file is not the
            // one this store wrote.
            if self.written.is_some() && identity(&self.path) != self.written {
                return Err(StateError::ReplacedWhileLocked { location });
            }
        }
        let previous = if trusted { None } else { self.load()? };
        if let Some(disk) = &previous {
            if disk.state.lineage != state.lineage && !replace_lineage {
                return Err(StateError::LineageMismatch { location, existing: disk.state.lineage.clone(), ours: state.lineage.clone() });
            }
            if let Seen::Present { serial, .. } = self.seen
                && serial != disk.state.serial
                && !replace_lineage
            {
                return Err(StateError::ChangedSinceRead { location, read_serial: serial, disk_serial: disk.state.serial });
            }
            if too_low(disk.state.serial) {
                return Err(StateError::SerialNotIncreasing { location, existing: disk.state.serial, attempted: state.serial });
            }
        }
        self.replace_file(state, previous.as_ref().map(|d| d.bytes.as_slice()))
    }

    /// Puts `state` in place of the state file (the previous bytes, when given, become the
    /// backup) and removes the journal, which the new state file supersedes.
    fn replace_file(&mut self, state: &State, previous: Option<&[u8]>) -> Result<(), StateError> {
        let bytes = encode(state);
        let suffix = format!(".tmp.{}", uuid::Uuid::new_v4().simple());
        let temp = TempFile::create(self.sibling(&suffix), &bytes)?;
        if let Some(previous) = previous {
            let backup = self.backup_path();
            let mut backup_temp = backup.clone().into_os_string();
            backup_temp.push(&suffix);
            TempFile::create(PathBuf::from(backup_temp), previous)?.persist(&backup, "replace state backup")?;
        }
        temp.persist(&self.path, "replace state file")?;
        self.backed_up = true;
        self.written = identity(&self.path);
        self.written_digest = Some((sha256_hex(&bytes), bytes.len() as u64));
        let dir = self.dir();
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| StateError::io("sync state directory", dir, e))?;
        self.seen = Seen::Present { lineage: state.lineage.clone(), serial: state.serial };
        // Only now: until the new state file is durable, the journal is what records the
        // operations. A journal that stays (a crash here) follows the old file and is ignored.
        self.journal = Journal::Off;
        let path = self.journal_path();
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.warnings.push(format!("could not remove the state journal {} that the state file supersedes: {e}", path.display())),
        }
        Ok(())
    }

    fn no_journal(&self) -> StateError {
        StateError::Backend {
            backend: self.describe(),
            message: "no journal is open (the last append failed, or nothing was checkpointed); this is a bug in kdeploy, please report it".into(),
        }
    }

    /// Creates the journal over `base` with its first group: header and group are written to a
    /// temporary file, synced, and renamed into place, so the journal never exists without its
    /// header.
    fn create_journal(&self, base: &Base, serial: u64, line: &[u8]) -> Result<OpenJournal, StateError> {
        let header = FileHeader { kdeploy_journal: JOURNAL_VERSION, lineage: base.lineage.clone(), base_serial: base.serial, base_sha256: base.sha256.clone() };
        let mut bytes = header.line()?;
        bytes.extend_from_slice(line);
        let path = self.journal_path();
        let (temp, file) = TempFile::create_open(self.sibling(&format!(".journal.tmp.{}", uuid::Uuid::new_v4().simple())), &bytes)?;
        #[cfg(feature = "test-hooks")]
        let n = hooks::appending(None, line);
        temp.persist(&path, "create state journal")?;
        let dir = self.dir();
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| StateError::io("sync state directory", dir, e))?;
        let identity = file_identity(&file, &path)?;
        #[cfg(feature = "test-hooks")]
        hooks::appended(n);
        Ok(OpenJournal { file, identity, len: bytes.len() as u64, lineage: base.lineage.clone(), last_serial: serial, state_len: base.len })
    }

    /// Appends `line` to the open journal and syncs it. A failed write is cut off again, so that
    /// the journal never has damage before a later line.
    fn append_line(&self, mut j: OpenJournal, serial: u64, line: &[u8]) -> Result<OpenJournal, StateError> {
        let path = self.journal_path();
        match fs::metadata(&path) {
            Ok(m) if (m.dev(), m.ino()) == j.identity => {}
            _ => return Err(StateError::ReplacedWhileLocked { location: path.display().to_string() }),
        }
        #[cfg(feature = "test-hooks")]
        let n = hooks::appending(Some(&j.file), line);
        if let Err(e) = j.file.write_all(line).and_then(|()| j.file.sync_data()) {
            let _ = j.file.set_len(j.len);
            return Err(StateError::io("append to state journal", path, e));
        }
        #[cfg(feature = "test-hooks")]
        hooks::appended(n);
        j.len = j.len.saturating_add(line.len() as u64);
        j.last_serial = serial;
        Ok(j)
    }

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

/// Test builds only (feature `test-hooks`): the process dies at a chosen journal append, as
/// under `kill -9` at that exact moment. `KDEPLOY_TEST_JOURNAL_CRASH=<n>:torn` writes the first
/// half of the n-th group of this process and dies (at n = 1, before the journal file is
/// renamed into place); `<n>:synced` dies once the n-th group is durable, before anything
/// acts on it.
#[cfg(feature = "test-hooks")]
mod hooks {
    use std::fs::File;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static APPENDS: AtomicUsize = AtomicUsize::new(0);

    fn target() -> Option<(usize, String)> {
        let v = std::env::var("KDEPLOY_TEST_JOURNAL_CRASH").ok()?;
        let (n, stage) = v.split_once(':')?;
        Some((n.parse().ok()?, stage.to_string()))
    }

    /// Counts an append about to write `line` to `file` (`None`: the journal being created);
    /// returns its number.
    pub(super) fn appending(file: Option<&File>, line: &[u8]) -> usize {
        let n = APPENDS.fetch_add(1, Ordering::SeqCst).saturating_add(1);
        if target().is_some_and(|(at, stage)| at == n && stage == "torn") {
            if let Some(mut f) = file {
                let half = line.get(..line.len().checked_div(2).unwrap_or_default()).unwrap_or_default();
                let _ = f.write_all(half).and_then(|()| f.sync_data());
            }
            std::process::abort();
        }
        n
    }

    /// The append numbered `n` is durable.
    pub(super) fn appended(n: usize) {
        if target().is_some_and(|(at, stage)| at == n && stage == "synced") {
            std::process::abort();
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
