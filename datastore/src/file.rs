//! Embedded file datastore: a directory shared by several daemons on one host.
//!
//! Layout of `<dir>`:
//!
//! - `<kind>/<name>.json`: one file per record (the [`Record`] as JSON), replaced atomically
//!   (write a hidden temp file, `fsync`, `rename(2)`, `fsync` the directory), so a reader
//!   sees either the old or the new record, never a partial one. Hidden files (temp files)
//!   are ignored by lists.
//! - `.lock`: every read-modify-write holds an exclusive `flock(2)` on it, reads hold a
//!   shared one. `flock` locks belong to the open file description, so separate processes,
//!   separate instances in one process and separate threads all exclude each other: the
//!   version check and the write are one atomic step across processes.
//! - `.revision`: the global revision counter, bumped under the lock; the version of a
//!   record is the revision of its last change.
//! - `.events`: append-only JSON lines (`revision, kind, name, type, value`), appended under
//!   the lock. Watchers in any process tail it (polling its inode and size, every
//!   [`FileOptions::poll_interval`]). When it holds more than twice
//!   [`FileOptions::event_log_capacity`] events it is atomically rewritten with the last
//!   `event_log_capacity`; a watch wanting older events gets [`DatastoreError::Expired`].
//!
//! Write order under the lock is `.revision`, then the record, then the event: a crash in
//! between leaves at worst an unused revision number or a change that watchers miss but a
//! relist shows; it never reuses a revision.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    check_resumable, validate_name, Datastore, DatastoreError, Event, EventType, Listing, Record,
    Result, Revision, Watch, WatchFrom, DEFAULT_EVENT_LOG_CAPACITY,
};

const LOCK_FILE: &str = ".lock";
const REVISION_FILE: &str = ".revision";
const EVENTS_FILE: &str = ".events";

/// Tuning of a [`FileDatastore`].
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Events kept after compaction (the log grows to twice this before compacting).
    pub event_log_capacity: usize,
    /// How often watchers look for new events.
    pub poll_interval: Duration,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            event_log_capacity: DEFAULT_EVENT_LOG_CAPACITY,
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// One line of `.events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LogEntry {
    revision: Revision,
    kind: String,
    name: String,
    #[serde(rename = "type")]
    event_type: EventType,
    value: serde_json::Value,
}

impl LogEntry {
    fn into_event(self) -> Event {
        Event {
            event_type: self.event_type,
            record: Record {
                kind: self.kind,
                name: self.name,
                version: self.revision,
                value: self.value,
            },
        }
    }
}

/// A datastore in a directory. Holds no state besides its options: everything lives on
/// disk, so several instances (in one or several processes) share the same directory.
#[derive(Debug, Clone)]
pub struct FileDatastore {
    dir: PathBuf,
    options: FileOptions,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DatastoreError + '_ {
    move |source| DatastoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` atomically: readers see the old or the new content, never a mix, and
/// after a crash the file is one or the other (`rename(2)` is atomic within a filesystem).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{file_name}.tmp.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = File::create(&temp).map_err(io_err(&temp))?;
        file.write_all(bytes).map_err(io_err(&temp))?;
        file.sync_all().map_err(io_err(&temp))?;
        fs::rename(&temp, path).map_err(io_err(path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Makes a rename or unlink durable: the directory entry lives in the directory's data.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn parse_entries(path: &Path, bytes: &[u8]) -> Result<Vec<LogEntry>> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line).map_err(|e| DatastoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("bad event line: {e}"),
            })
        })
        .collect()
}

/// The complete lines of `bytes` (a writer may be mid-append on the last one).
fn complete_prefix(bytes: &[u8]) -> &[u8] {
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => &bytes[..=i],
        None => &[],
    }
}

impl FileDatastore {
    /// Opens (creating if needed) the datastore in `dir` with default options.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(dir, FileOptions::default())
    }

    pub fn open_with(dir: impl Into<PathBuf>, options: FileOptions) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(Self {
            dir,
            options: FileOptions {
                event_log_capacity: options.event_log_capacity.max(1),
                ..options
            },
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the file holding a record (for diagnostics and tests).
    pub fn record_path(&self, kind: &str, name: &str) -> PathBuf {
        self.dir.join(kind).join(format!("{name}.json"))
    }

    fn lock(&self, arg: FlockArg) -> Result<Flock<File>> {
        let path = self.dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => return Ok(lock),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(DatastoreError::Lock { path, errno }),
            }
        }
    }

    fn read_revision(&self) -> Result<Revision> {
        let path = self.dir.join(REVISION_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|e| DatastoreError::Corrupt {
                path,
                reason: format!("bad revision {:?}: {e}", text.trim()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(DatastoreError::Io { path, source: e }),
        }
    }

    fn read_record(&self, kind: &str, name: &str) -> Result<Option<Record>> {
        let path = self.record_path(kind, name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DatastoreError::Io { path, source: e }),
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|e| DatastoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if record.kind != kind || record.name != name {
            return Err(DatastoreError::Corrupt {
                path,
                reason: format!(
                    "holds {} {:?}, expected {kind} {name:?}",
                    record.kind, record.name
                ),
            });
        }
        Ok(Some(record))
    }

    /// Applies one change; the caller holds the exclusive lock and has checked versions.
    fn commit(
        &self,
        event_type: EventType,
        kind: &str,
        name: &str,
        value: serde_json::Value,
    ) -> Result<Revision> {
        let revision = self.read_revision()? + 1;
        write_atomic(
            &self.dir.join(REVISION_FILE),
            format!("{revision}\n").as_bytes(),
        )?;
        let path = self.record_path(kind, name);
        let record = Record {
            kind: kind.to_string(),
            name: name.to_string(),
            version: revision,
            value,
        };
        if event_type == EventType::Deleted {
            fs::remove_file(&path).map_err(io_err(&path))?;
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
        } else {
            let kind_dir = self.dir.join(kind);
            fs::create_dir_all(&kind_dir).map_err(io_err(&kind_dir))?;
            let bytes = serde_json::to_vec(&record).map_err(|source| DatastoreError::Encode {
                kind: kind.to_string(),
                name: name.to_string(),
                source,
            })?;
            write_atomic(&path, &bytes)?;
        }
        let entry = LogEntry {
            revision,
            kind: record.kind,
            name: record.name,
            event_type,
            value: record.value,
        };
        self.append_event(&entry)?;
        tracing::debug!(revision, kind, name, ?event_type, "datastore change");
        Ok(revision)
    }

    fn append_event(&self, entry: &LogEntry) -> Result<()> {
        let path = self.dir.join(EVENTS_FILE);
        let mut line = serde_json::to_vec(entry).map_err(|source| DatastoreError::Encode {
            kind: entry.kind.clone(),
            name: entry.name.clone(),
            source,
        })?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(&line).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))?;
        drop(file);
        // Revisions in the log are consecutive except after a crash (gaps only), so the
        // first line bounds the number of retained events from above.
        let first = self.first_logged_revision()?.unwrap_or(entry.revision);
        let capacity = self.options.event_log_capacity as u64;
        if entry.revision.saturating_sub(first) + 1 > 2 * capacity {
            self.compact_events(entry.revision + 1 - capacity)?;
        }
        Ok(())
    }

    fn first_logged_revision(&self) -> Result<Option<Revision>> {
        let path = self.dir.join(EVENTS_FILE);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DatastoreError::Io { path, source: e }),
        };
        let mut line = String::new();
        BufReader::new(file)
            .read_line(&mut line)
            .map_err(io_err(&path))?;
        if line.trim().is_empty() {
            return Ok(None);
        }
        let entry: LogEntry =
            serde_json::from_str(line.trim()).map_err(|e| DatastoreError::Corrupt {
                path,
                reason: format!("bad event line: {e}"),
            })?;
        Ok(Some(entry.revision))
    }

    /// Keeps the events from revision `keep_from` on (caller holds the exclusive lock).
    fn compact_events(&self, keep_from: Revision) -> Result<()> {
        let path = self.dir.join(EVENTS_FILE);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let mut kept = Vec::with_capacity(bytes.len() / 2);
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let entry: LogEntry =
                serde_json::from_slice(line).map_err(|e| DatastoreError::Corrupt {
                    path: path.clone(),
                    reason: format!("bad event line: {e}"),
                })?;
            if entry.revision >= keep_from {
                kept.extend_from_slice(line);
                kept.push(b'\n');
            }
        }
        write_atomic(&path, &kept)?;
        tracing::debug!(keep_from, "compacted datastore event log");
        Ok(())
    }

    fn check_write(&self, kind: &str, name: &str) -> Result<()> {
        validate_name("kind", kind)?;
        validate_name("name", name)
    }
}

impl Datastore for FileDatastore {
    fn list(&self, kind: &str) -> Result<Listing> {
        validate_name("kind", kind)?;
        let _lock = self.lock(FlockArg::LockShared)?;
        let revision = self.read_revision()?;
        let kind_dir = self.dir.join(kind);
        let entries = match fs::read_dir(&kind_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Listing {
                    revision,
                    records: Vec::new(),
                })
            }
            Err(e) => {
                return Err(DatastoreError::Io {
                    path: kind_dir,
                    source: e,
                })
            }
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&kind_dir))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            // Hidden files are temp files of atomic writes (or foreign); never records.
            if file_name.starts_with('.') {
                continue;
            }
            let Some(name) = file_name.strip_suffix(".json") else {
                continue;
            };
            if let Some(record) = self.read_record(kind, name)? {
                records.push(record);
            }
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Listing { revision, records })
    }

    fn get(&self, kind: &str, name: &str) -> Result<Record> {
        self.check_write(kind, name)?;
        let _lock = self.lock(FlockArg::LockShared)?;
        self.read_record(kind, name)?
            .ok_or_else(|| DatastoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            })
    }

    fn create(&self, kind: &str, name: &str, value: serde_json::Value) -> Result<Revision> {
        self.check_write(kind, name)?;
        let _lock = self.lock(FlockArg::LockExclusive)?;
        if self.read_record(kind, name)?.is_some() {
            return Err(DatastoreError::AlreadyExists {
                kind: kind.to_string(),
                name: name.to_string(),
            });
        }
        self.commit(EventType::Added, kind, name, value)
    }

    fn update(
        &self,
        kind: &str,
        name: &str,
        value: serde_json::Value,
        expected: Revision,
    ) -> Result<Revision> {
        self.check_write(kind, name)?;
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let stored = self
            .read_record(kind, name)?
            .ok_or_else(|| DatastoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            })?;
        if stored.version != expected {
            return Err(DatastoreError::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                expected,
                actual: stored.version,
            });
        }
        self.commit(EventType::Modified, kind, name, value)
    }

    fn delete(&self, kind: &str, name: &str, expected: Option<Revision>) -> Result<Revision> {
        self.check_write(kind, name)?;
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let stored = self
            .read_record(kind, name)?
            .ok_or_else(|| DatastoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            })?;
        if let Some(expected) = expected {
            if stored.version != expected {
                return Err(DatastoreError::Conflict {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    expected,
                    actual: stored.version,
                });
            }
        }
        self.commit(EventType::Deleted, kind, name, stored.value)
    }

    fn watch(&self, kind: Option<&str>, from: WatchFrom) -> Result<Watch> {
        if let Some(kind) = kind {
            validate_name("kind", kind)?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tail = EventTail {
            path: self.dir.join(EVENTS_FILE),
            kind: kind.map(str::to_string),
            last: 0,
            file: None,
            offset: 0,
        };
        {
            // Under the shared lock the log is complete and consistent with `.revision`.
            let _lock = self.lock(FlockArg::LockShared)?;
            match from {
                WatchFrom::Now => {
                    // Positions the tail at the end of the log; nothing is newer than
                    // `.revision` (it is written before the event), so nothing is sent.
                    tail.last = self.read_revision()?;
                    tail.poll()?;
                }
                WatchFrom::Revision(revision) => {
                    tail.last = revision;
                    for event in tail.poll()? {
                        // The receiver is held here, so sending cannot fail.
                        let _ = tx.send(Ok(event));
                    }
                }
            }
        }
        let poll_interval = self.options.poll_interval;
        std::thread::Builder::new()
            .name("datastore-watch".into())
            .spawn(move || loop {
                std::thread::sleep(poll_interval);
                if tx.is_closed() {
                    return;
                }
                match tail.poll() {
                    Ok(events) => {
                        for event in events {
                            if tx.send(Ok(event)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "datastore watch stopped");
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            })
            .map_err(io_err(&self.dir))?;
        Ok(Watch::new(rx))
    }
}

/// A reader of `.events` that remembers how far it got: the last delivered revision, and
/// the open log file with the byte offset read so far, so each poll reads only new lines
/// unless compaction replaced the file. Keeping the old file open also keeps its inode
/// allocated, so a replacement can never reuse the inode number and be mistaken for it.
struct EventTail {
    path: PathBuf,
    kind: Option<String>,
    last: Revision,
    file: Option<(File, u64)>,
    offset: u64,
}

impl EventTail {
    /// New events since the last poll, or `Expired` if compaction dropped some of them.
    fn poll(&mut self) -> Result<Vec<Event>> {
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(DatastoreError::Io {
                    path: self.path.clone(),
                    source: e,
                })
            }
        };
        let same_file = self
            .file
            .as_ref()
            .is_some_and(|(_, ino)| *ino == meta.ino())
            && meta.len() >= self.offset;
        if same_file && meta.len() == self.offset {
            return Ok(Vec::new());
        }
        if !same_file {
            let file = match File::open(&self.path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => {
                    return Err(DatastoreError::Io {
                        path: self.path.clone(),
                        source: e,
                    })
                }
            };
            // The inode of what we actually opened (compaction may have renamed meanwhile).
            let inode = file.metadata().map_err(io_err(&self.path))?.ino();
            self.file = Some((file, inode));
            self.offset = 0;
        }
        let start = self.offset;
        let Some((file, _)) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        file.seek(SeekFrom::Start(start))
            .map_err(io_err(&self.path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&self.path))?;
        let complete = complete_prefix(&bytes);
        let entries = parse_entries(&self.path, complete)?;
        if start == 0 {
            check_resumable(self.last, entries.first().map(|e| e.revision))?;
        }
        self.offset = start + complete.len() as u64;
        let mut events = Vec::new();
        for entry in entries {
            if entry.revision <= self.last {
                continue;
            }
            self.last = entry.revision;
            if self.kind.as_deref().is_none_or(|k| k == entry.kind) {
                events.push(entry.into_event());
            }
        }
        Ok(events)
    }
}
