//! The append-only audit log file.
//!
//! Appends are ordered by one mutex and each record is one `write(2)` on a
//! file opened `O_APPEND`, so a write error (disk full, read-only) is known
//! before the admission is answered and the admission can be denied; the
//! sequence number is only consumed by a record that was written. A
//! background thread makes the records durable with group-commit
//! `fdatasync` (every `sync_interval`, or sooner once `sync_every` records
//! wait) and then signs checkpoints of the durable head. A process crash
//! loses nothing that was acknowledged; a power loss can lose at most the
//! records of the last `sync_interval`, and no checkpoint ever covers them.
//!
//! On open (and after a failed write) the chain resumes from the last
//! complete record: a torn tail is detected, saved next to the log as
//! `<file>.torn-<micros>`, cut off, and a `logRecovered` record says so.
//! Size-based rotation renames `audit.jsonl` to `audit-<first seq>.jsonl`
//! (zero-padded) and the chain continues in a new `audit.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::chain::{self, GENESIS, Head};
use super::checkpoint::{self, CheckpointFile, Signer};
use super::notify::Notifier;
use super::record::{Entry, EventKind, Outcome, format_rfc3339_micros, hex, now_micros};
use super::{AuditError, AuditMetrics};

/// Checkpoint settings.
#[derive(Clone, Debug)]
pub struct CheckpointOptions {
    /// The side file (`<stem>.checkpoints.jsonl` next to the log by default).
    pub path: PathBuf,
    /// PKCS#8 Ed25519 key; generated when absent.
    pub key: PathBuf,
    pub every_records: u64,
    pub every: Duration,
}

/// How to open the log. Build with [`Options::new`].
pub struct Options {
    pub path: PathBuf,
    /// This replica's name, in every record.
    pub replica: String,
    /// The cluster this log's spoke serves (`serve --cluster`), in every
    /// record when set; `None` writes records without a `cluster` member.
    pub cluster: Option<String>,
    /// Rotate when the file would grow past this many bytes (0: never).
    pub rotate_bytes: u64,
    /// Group-commit period.
    pub sync_interval: Duration,
    /// Sync sooner once this many records wait.
    pub sync_every: u64,
    pub checkpoints: Option<CheckpointOptions>,
    /// Also write every record to stdout (for log shippers).
    pub stdout: bool,
    pub metrics: AuditMetrics,
    pub notifier: Option<Notifier>,
}

impl Options {
    pub fn new(path: impl Into<PathBuf>) -> Options {
        Options {
            path: path.into(),
            replica: default_replica(),
            cluster: None,
            rotate_bytes: 128 * 1024 * 1024,
            sync_interval: Duration::from_millis(10),
            sync_every: 512,
            checkpoints: None,
            stdout: false,
            metrics: AuditMetrics::default(),
            notifier: None,
        }
    }

    /// Signed checkpoints with `key`, every 1,000 records or 10 s, into the
    /// side file next to the log.
    pub fn with_checkpoints(mut self, key: impl Into<PathBuf>) -> Options {
        self.checkpoints = Some(CheckpointOptions {
            path: checkpoints_path(&self.path),
            key: key.into(),
            every_records: 1000,
            every: Duration::from_secs(10),
        });
        self
    }
}

/// `POD_NAME`, `HOSTNAME`, `/etc/hostname`, or `gitgate`.
pub fn default_replica() -> String {
    for var in ["GITGATE_REPLICA", "POD_NAME", "HOSTNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.trim().is_empty()
        {
            return v.trim().to_owned();
        }
    }
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gitgate".to_owned())
}

fn stem_ext(log: &Path) -> (String, String) {
    let stem = log.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "audit".into());
    let ext = log.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "jsonl".into());
    (stem, ext)
}

fn dir_of(log: &Path) -> PathBuf {
    match log.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `<dir>/<stem>.checkpoints.jsonl`.
pub fn checkpoints_path(log: &Path) -> PathBuf {
    let (stem, _) = stem_ext(log);
    dir_of(log).join(format!("{stem}.checkpoints.jsonl"))
}

/// `<dir>/<stem>-<first seq, 20 digits>.<ext>`.
pub fn rotated_path(log: &Path, first_seq: u64) -> PathBuf {
    let (stem, ext) = stem_ext(log);
    dir_of(log).join(format!("{stem}-{first_seq:020}.{ext}"))
}

/// Rotated files of `log`, oldest first.
pub fn rotated_files(log: &Path) -> Vec<PathBuf> {
    let (stem, ext) = stem_ext(log);
    let prefix = format!("{stem}-");
    let suffix = format!(".{ext}");
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir_of(log))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let digits = name.strip_prefix(&prefix)?.strip_suffix(&suffix)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((digits.parse().ok()?, e.path()))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// Every file of a log's chain, oldest first: rotated files, then the log.
pub fn chain_files(log: &Path) -> Vec<PathBuf> {
    let mut files = rotated_files(log);
    if log.is_file() {
        files.push(log.to_owned());
    }
    files
}

/// The last valid record in the file and where it ends, or `None` when no
/// complete line checks out. `Err` when the file has complete lines but
/// none of them is a record.
fn scan_tail(file: &File, len: u64, path: &Path) -> Result<Option<(Head, u64)>, AuditError> {
    let io = |source| AuditError::Io { op: "read the tail of", path: path.to_owned(), source };
    let mut window = len.min(64 * 1024);
    let mut saw_line = false;
    loop {
        let start = len - window;
        let mut buf = vec![0u8; usize::try_from(window).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, start).map_err(io)?;
        let ends: Vec<usize> = buf.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i).collect();
        for (k, &end) in ends.iter().enumerate().rev() {
            let line_start = match k.checked_sub(1).and_then(|j| ends.get(j)) {
                Some(&prev_end) => prev_end + 1,
                None if start == 0 => 0,
                None => break, // the line began before the window
            };
            saw_line = true;
            if let Some(line) = buf.get(line_start..end)
                && let Ok(opened) = chain::open_line(line)
            {
                return Ok(Some((Head { seq: opened.seq, hash: opened.hash }, start + end as u64 + 1)));
            }
        }
        if start == 0 {
            if saw_line {
                return Err(AuditError::Unusable {
                    path: path.to_owned(),
                    reason: "it has no valid record; move it aside to start a new chain".into(),
                });
            }
            return Ok(None);
        }
        window = len.min(window.saturating_mul(4));
    }
}

/// A torn tail that was cut off.
struct Torn {
    after: Option<u64>,
    bytes: u64,
    sha256: String,
    saved: Option<PathBuf>,
}

/// An opened log file and the chain head found in it.
struct OpenFile {
    file: File,
    regular: bool,
    /// The head in this file, or (for an empty file) in the newest rotated one.
    head: Option<Head>,
    len: u64,
    first_seq: Option<u64>,
    torn: Option<Torn>,
}

fn open_file(path: &Path) -> Result<OpenFile, AuditError> {
    let io = |op, source| AuditError::Io { op, path: path.to_owned(), source };
    let dir = dir_of(path);
    std::fs::create_dir_all(&dir).map_err(|source| AuditError::Io {
        op: "create the audit directory",
        path: dir.clone(),
        source,
    })?;
    let existed = path.exists();
    let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(|e| io("open", e))?;
    if !existed {
        sync_dir(&dir);
    }
    let meta = file.metadata().map_err(|e| io("inspect", e))?;
    let regular = meta.is_file();
    let mut len = if regular { meta.len() } else { 0 };
    let mut torn = None;
    let mut head = None;
    if len > 0 {
        let found = scan_tail(&file, len, path)?;
        let good = found.as_ref().map_or(0, |(_, end)| *end);
        if good < len {
            torn = Some(cut_tail(&file, path, good, len, found.as_ref().map(|(h, _)| h.seq))?);
            len = good;
        }
        head = found.map(|(h, _)| h);
    }
    let first_seq = if len > 0 { chain::first_seq(path) } else { None };
    if head.is_none() {
        head = last_rotated_head(path)?;
    }
    Ok(OpenFile { file, regular, head, len, first_seq, torn })
}

/// Saves the bytes after `good` next to the log, then cuts them off.
fn cut_tail(file: &File, path: &Path, good: u64, len: u64, after: Option<u64>) -> Result<Torn, AuditError> {
    let mut bytes = vec![0u8; usize::try_from(len - good).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut bytes, good).map_err(|source| AuditError::Io {
        op: "read the torn tail of",
        path: path.to_owned(),
        source,
    })?;
    let sha256 = hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    let aside = PathBuf::from(format!("{}.torn-{}", path.display(), now_micros()));
    let saved = match std::fs::write(&aside, &bytes) {
        Ok(()) => Some(aside),
        Err(e) => {
            tracing::error!(path = %aside.display(), error = %e, "failed to save the torn tail of the audit log; its sha256 is kept in the log");
            None
        }
    };
    file.set_len(good).map_err(|source| AuditError::Io {
        op: "cut the torn tail of",
        path: path.to_owned(),
        source,
    })?;
    file.sync_all().map_err(|source| AuditError::Io { op: "sync", path: path.to_owned(), source })?;
    tracing::warn!(path = %path.display(), bytes = bytes.len(), after = ?after, "audit log had a torn tail; it was set aside and the chain resumes from the last complete record");
    Ok(Torn { after, bytes: bytes.len() as u64, sha256, saved })
}

fn last_rotated_head(path: &Path) -> Result<Option<Head>, AuditError> {
    let Some(newest) = rotated_files(path).pop() else { return Ok(None) };
    let file = File::open(&newest).map_err(|source| AuditError::Io { op: "open", path: newest.clone(), source })?;
    let len = file.metadata().map_err(|source| AuditError::Io { op: "inspect", path: newest.clone(), source })?.len();
    Ok(scan_tail(&file, len, &newest)?.map(|(h, _)| h))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

struct Writer {
    /// `None` after the file was rotated away and the new one could not be
    /// opened; the next append reopens.
    file: Option<Arc<File>>,
    regular: bool,
    /// A write failed and could not be undone: reopen (and recover) first.
    reopen: bool,
    next_seq: u64,
    prev: String,
    file_len: u64,
    file_first_seq: u64,
    buf: Vec<u8>,
    pending: u64,
    durable: Option<Head>,
    /// A failed fsync: nothing written since is known durable, so the log
    /// refuses appends until it is reopened by a restart.
    failed: Option<String>,
    closed: bool,
}

impl Writer {
    fn head(&self) -> Option<Head> {
        (self.next_seq > 1).then(|| Head { seq: self.next_seq - 1, hash: self.prev.clone() })
    }
}

struct Checkpointer {
    signer: Signer,
    file: CheckpointFile,
    every_records: u64,
    every: Duration,
    last_seq: u64,
    last_at: Instant,
}

impl Checkpointer {
    /// Loads (or generates) the signing key and reads the side file: the
    /// checkpointer, and the last sequence number a valid checkpoint
    /// covers (0 without one).
    fn resume(c: &CheckpointOptions) -> Result<(Checkpointer, u64), AuditError> {
        let (signer, generated) = Signer::load_or_generate(&c.key)?;
        if generated {
            tracing::info!(key = %c.key.display(), public_key = signer.public_key(), "generated the audit checkpoint key");
        }
        let (cps, bad) = checkpoint::read(&c.path)?;
        for (line, e) in bad {
            tracing::warn!(path = %c.path.display(), line, error = %e, "unreadable audit checkpoint line");
        }
        let last = cps.iter().filter(|cp| cp.verify(None).is_ok()).map(|cp| cp.seq).max().unwrap_or(0);
        let cp = Checkpointer {
            signer,
            file: CheckpointFile::new(c.path.clone()),
            every_records: c.every_records.max(1),
            every: c.every,
            last_seq: last,
            last_at: Instant::now(),
        };
        Ok((cp, last))
    }
}

/// Where a signed checkpoint also goes (besides the side file); called on
/// the sync thread, so it must not block (hand the checkpoint to a task).
pub type CheckpointSink = Box<dyn Fn(&checkpoint::Checkpoint) + Send + Sync>;

struct Shared {
    sink: Mutex<Option<CheckpointSink>>,
    path: PathBuf,
    replica: String,
    cluster: Option<String>,
    rotate_bytes: u64,
    sync_interval: Duration,
    sync_every: u64,
    stdout: bool,
    metrics: AuditMetrics,
    notifier: Option<Notifier>,
    writer: Mutex<Writer>,
    wake: Condvar,
    checkpointer: Option<Mutex<Checkpointer>>,
}

/// The audit log. Share it in an `Arc`; [`AuditLog::append`] is safe to
/// call from many threads and keeps one gap-free chain.
pub struct AuditLog {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AuditLog {
    /// Opens (or creates) the log, resumes its chain, and starts the
    /// group-commit thread.
    pub fn open(opts: Options) -> Result<AuditLog, AuditError> {
        let opened = open_file(&opts.path)?;
        let head = opened.head.clone();
        let next_seq = head.as_ref().map_or(1, |h| h.seq + 1);
        let writer = Writer {
            file: Some(Arc::new(opened.file)),
            regular: opened.regular,
            reopen: false,
            next_seq,
            prev: head.as_ref().map_or_else(|| GENESIS.to_owned(), |h| h.hash.clone()),
            file_len: opened.len,
            file_first_seq: opened.first_seq.unwrap_or(next_seq),
            buf: Vec::with_capacity(4096),
            pending: 0,
            durable: head.clone(),
            failed: None,
            closed: false,
        };
        let mut checkpointer = None;
        let mut lost_tail = None;
        if let Some(c) = &opts.checkpoints {
            let (cp, last) = Checkpointer::resume(c)?;
            if last > head.as_ref().map_or(0, |h| h.seq) {
                lost_tail = Some(last);
            }
            checkpointer = Some(Mutex::new(cp));
        }
        let shared = Arc::new(Shared {
            sink: Mutex::new(None),
            path: opts.path,
            replica: opts.replica,
            cluster: opts.cluster,
            rotate_bytes: opts.rotate_bytes,
            sync_interval: opts.sync_interval,
            sync_every: opts.sync_every.max(1),
            stdout: opts.stdout,
            metrics: opts.metrics,
            notifier: opts.notifier,
            writer: Mutex::new(writer),
            wake: Condvar::new(),
            checkpointer,
        });
        let log = AuditLog { shared: shared.clone(), syncer: Mutex::new(None) };
        if let Some(t) = opened.torn {
            shared.metrics.recoveries.inc();
            log.append(&recovered_torn(&t))?;
        }
        if let Some(cp_seq) = lost_tail {
            log.record_lost_tail(head.as_ref().map_or(0, |h| h.seq), cp_seq)?;
        }
        let handle =
            std::thread::Builder::new().name("audit-sync".into()).spawn(move || syncer(&shared)).map_err(|source| {
                AuditError::Io { op: "start the sync thread for", path: log.path().to_owned(), source }
            })?;
        *lock(&log.syncer) = Some(handle);
        Ok(log)
    }

    /// Records that the log ends at `have`, before the last signed
    /// checkpoint (`cp_seq`): the records between are missing.
    fn record_lost_tail(&self, have: u64, cp_seq: u64) -> Result<(), AuditError> {
        self.shared.metrics.recoveries.inc();
        tracing::error!(
            log_ends_at = have,
            checkpoint = cp_seq,
            "the audit log ends before its last signed checkpoint: records are missing"
        );
        let mut e = Entry::new(EventKind::LogRecovered, Outcome::Failed);
        e.reasons.push(format!(
            "the log ended at record {have} but a signed checkpoint covers records up to {cp_seq}: records {}..={cp_seq} are missing",
            have + 1
        ));
        self.append(&e).map(drop)
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn replica(&self) -> &str {
        &self.shared.replica
    }

    /// The cluster named in every record, if the log was opened with one.
    pub fn cluster(&self) -> Option<&str> {
        self.shared.cluster.as_deref()
    }

    /// The log's metrics.
    pub fn metrics(&self) -> &AuditMetrics {
        &self.shared.metrics
    }

    /// Also hands every signed checkpoint to `sink` (e.g. the cluster's
    /// ConfigMap writer); replaces an earlier sink.
    pub fn set_checkpoint_sink(&self, sink: CheckpointSink) {
        *lock(&self.shared.sink) = Some(sink);
    }

    /// The last record appended.
    pub fn head(&self) -> Option<Head> {
        lock(&self.shared.writer).head()
    }

    /// The last record known durable (fsynced).
    pub fn durable(&self) -> Option<Head> {
        lock(&self.shared.writer).durable.clone()
    }

    /// Appends one record. `Ok` means it was written to the file (durable
    /// within `sync_interval`); `Err` means it was not, and no sequence
    /// number was used.
    pub fn append(&self, entry: &Entry) -> Result<Head, AuditError> {
        let head = {
            let mut w = lock(&self.shared.writer);
            let result = self.append_locked(&mut w, entry);
            if result.is_err() {
                self.shared.metrics.write_failures.inc();
            }
            result?
        };
        self.shared.metrics.records.inc();
        if let Some(n) = &self.shared.notifier {
            n.notify(entry, head.seq);
        }
        Ok(head)
    }

    fn append_locked(&self, w: &mut Writer, entry: &Entry) -> Result<Head, AuditError> {
        if w.closed {
            return Err(AuditError::Closed);
        }
        if let Some(reason) = &w.failed {
            return Err(AuditError::Unusable { path: self.shared.path.clone(), reason: reason.clone() });
        }
        if w.reopen || w.file.is_none() {
            self.reopen_locked(w)?;
        }
        let time = format_rfc3339_micros(now_micros());
        let mut buf = std::mem::take(&mut w.buf);
        let sealed = chain::seal(
            &mut buf,
            w.next_seq,
            &time,
            &self.shared.replica,
            self.shared.cluster.as_deref(),
            &w.prev,
            entry,
        );
        let result = sealed.map_err(|source| AuditError::Encode { source }).and_then(|hash| {
            self.write_locked(w, &buf)?;
            Ok(hash)
        });
        let out = result.map(|hash| {
            let head = Head { seq: w.next_seq, hash: hash.clone() };
            w.next_seq += 1;
            w.prev = hash;
            w.pending += 1;
            if w.pending >= self.shared.sync_every {
                self.shared.wake.notify_one();
            }
            if self.shared.stdout {
                let _ = std::io::stdout().lock().write_all(&buf);
            }
            head
        });
        w.buf = buf;
        out
    }

    /// Rotates if needed, then writes one sealed line; undoes a partial write.
    fn write_locked(&self, w: &mut Writer, line: &[u8]) -> Result<(), AuditError> {
        let path = &self.shared.path;
        if w.regular
            && self.shared.rotate_bytes > 0
            && w.file_len > 0
            && w.file_len + line.len() as u64 > self.shared.rotate_bytes
        {
            self.rotate_locked(w)?;
        }
        let Some(file) = w.file.clone() else {
            return Err(AuditError::Unusable { path: path.clone(), reason: "the log file is not open".into() });
        };
        if let Err(source) = (&*file).write_all(line) {
            // A partial line must not stay: cut back to the last record, or
            // reopen (and recover) before the next append.
            if !(w.regular && file.set_len(w.file_len).is_ok()) {
                w.reopen = true;
            }
            tracing::error!(path = %path.display(), error = %source, seq = w.next_seq, "failed to write an audit record");
            return Err(AuditError::Io { op: "append to", path: path.clone(), source });
        }
        w.file_len += line.len() as u64;
        Ok(())
    }

    fn rotate_locked(&self, w: &mut Writer) -> Result<(), AuditError> {
        let path = &self.shared.path;
        let io = |op, source| AuditError::Io { op, path: path.clone(), source };
        if let Some(f) = &w.file {
            f.sync_data().map_err(|e| io("sync before rotating", e))?;
        }
        let target = rotated_path(path, w.file_first_seq);
        if target.exists() {
            return Err(AuditError::Unusable {
                path: path.clone(),
                reason: format!("cannot rotate: {} already exists", target.display()),
            });
        }
        std::fs::rename(path, &target).map_err(|e| io("rotate", e))?;
        // From here the old file is complete under its new name.
        w.file = None;
        w.durable = w.head();
        let file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(|e| io("open", e))?;
        sync_dir(&dir_of(path));
        w.file = Some(Arc::new(file));
        w.file_len = 0;
        w.file_first_seq = w.next_seq;
        tracing::info!(rotated = %target.display(), next_seq = w.next_seq, "rotated the audit log");
        Ok(())
    }

    /// Reopens the file after a failed write, resuming from what is on disk.
    fn reopen_locked(&self, w: &mut Writer) -> Result<(), AuditError> {
        if let Some(old) = w.file.take() {
            let _ = old.sync_data();
        }
        let opened = open_file(&self.shared.path)?;
        let expected = w.head();
        w.file = Some(Arc::new(opened.file));
        w.regular = opened.regular;
        w.reopen = false;
        w.file_len = opened.len;
        if opened.head != expected {
            let found = opened.head.as_ref().map_or(0, |h| h.seq);
            tracing::warn!(expected = ?expected.as_ref().map(|h| h.seq), found, "the audit log changed on disk while it was reopened; the chain continues from the file");
            w.next_seq = found + 1;
            w.prev = opened.head.as_ref().map_or_else(|| GENESIS.to_owned(), |h| h.hash.clone());
            w.durable = opened.head.clone();
        }
        w.file_first_seq = opened.first_seq.unwrap_or(w.next_seq);
        if let Some(t) = opened.torn {
            self.shared.metrics.recoveries.inc();
            self.append_locked(w, &recovered_torn(&t))?;
        }
        if opened.head != expected {
            let mut e = Entry::new(EventKind::LogRecovered, Outcome::Failed);
            e.reasons.push(format!(
                "the log file was reopened after a write failure and its last record is {} where {} was expected",
                opened.head.as_ref().map_or(0, |h| h.seq),
                expected.as_ref().map_or(0, |h| h.seq)
            ));
            self.append_locked(w, &e)?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable and writes a checkpoint.
    pub fn flush(&self) -> Result<(), AuditError> {
        sync_once(&self.shared)?;
        checkpoint_if_due(&self.shared, true);
        Ok(())
    }

    /// Flushes and stops the sync thread; later appends fail.
    pub fn close(&self) -> Result<(), AuditError> {
        let result = self.flush();
        lock(&self.shared.writer).closed = true;
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.syncer).take() {
            let _ = h.join();
        }
        result
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %crate::error_chain(&e), "failed to close the audit log");
        }
    }
}

fn recovered_torn(t: &Torn) -> Entry {
    let mut e = Entry::new(EventKind::LogRecovered, Outcome::Done);
    let saved =
        t.saved.as_ref().map_or_else(|| "could not be saved".to_owned(), |p| format!("saved to {}", p.display()));
    e.reasons.push(format!(
        "a torn tail of {} bytes after record {} (sha256 {}) was set aside ({saved})",
        t.bytes,
        t.after.unwrap_or(0),
        t.sha256
    ));
    e
}

/// One group commit: fsync what was written, then advance the durable head.
fn sync_once(shared: &Shared) -> Result<(), AuditError> {
    let (file, head) = {
        let mut w = lock(&shared.writer);
        if w.pending == 0 {
            return Ok(());
        }
        w.pending = 0;
        (w.file.clone(), w.head())
    };
    if let Some(f) = file
        && let Err(source) = f.sync_data()
    {
        // Not retried: after a failed fsync the kernel may have dropped the
        // dirty pages, so nothing since the last durable record is known safe.
        shared.metrics.sync_failures.inc();
        let mut w = lock(&shared.writer);
        w.failed = Some(format!("fsync failed: {source}"));
        tracing::error!(path = %shared.path.display(), error = %source, "failed to sync the audit log; it refuses further records");
        return Err(AuditError::Io { op: "sync", path: shared.path.clone(), source });
    }
    let mut w = lock(&shared.writer);
    if head.as_ref().map(|h| h.seq) > w.durable.as_ref().map(|h| h.seq) {
        w.durable = head;
    }
    Ok(())
}

fn checkpoint_if_due(shared: &Shared, force: bool) {
    let Some(cp) = &shared.checkpointer else { return };
    let Some(durable) = lock(&shared.writer).durable.clone() else { return };
    let mut cp = lock(cp);
    if durable.seq <= cp.last_seq {
        return;
    }
    if !(force || durable.seq - cp.last_seq >= cp.every_records || cp.last_at.elapsed() >= cp.every) {
        return;
    }
    let signed = cp.signer.sign(&durable, &format_rfc3339_micros(now_micros()), &shared.replica);
    if let Some(sink) = lock(&shared.sink).as_ref() {
        sink(&signed);
    }
    match cp.file.append(&signed) {
        Ok(()) => {
            cp.last_seq = durable.seq;
            cp.last_at = Instant::now();
            shared.metrics.checkpoints.inc();
        }
        Err(e) => tracing::error!(error = %crate::error_chain(&e), "failed to write an audit checkpoint"),
    }
}

fn syncer(shared: &Shared) {
    loop {
        let closed = {
            let w = lock(&shared.writer);
            let (w, _) = shared
                .wake
                .wait_timeout_while(w, shared.sync_interval, |w| !w.closed && w.pending < shared.sync_every)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            w.closed
        };
        if closed {
            return;
        }
        // Errors are logged and put on metrics inside; the log refuses appends.
        let _ = sync_once(shared);
        checkpoint_if_due(shared, false);
    }
}
