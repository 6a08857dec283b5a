//! Opening a data directory: rebuild every stream from its metadata, its checkpoint and the
//! log after it, cut torn tails, report damage, and clear what interrupted operations left.
//!
//! Policy:
//! - A torn tail (an interrupted write at the end of a log) is cut back to the last whole
//!   record, and the cut is logged. Nothing acknowledged in `file-durable` is ever in it:
//!   acknowledgements come after the sync.
//! - Corruption before the end of a log is logged as an error; the stream is served up to the
//!   damaged record and refuses writes. Nothing is deleted.
//! - A metadata file that does not decode is logged, and its stream is not loaded; nothing
//!   is deleted.
//! - Temporary files, and logs or checkpoints without metadata (a create or delete cut
//!   short), are removed.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::clock::UnixMs;
use crate::config::Limits;
use crate::fs::{self, Fs, FsFile, OpenMode, read_small};
use crate::log::frame::{self, FILE_HEADER_LEN};
use crate::log::handles::log_name;
use crate::log::journal::{self, Journal};
use crate::log::meta::{Checkpoint, Cut};
use crate::log::scan::{self, ScanEnd};
use crate::log::store::{
    CUT_NAME, Durability, FileStore, FileStream, Recovered, StreamState, ckpt_name, effect_of,
    meta_name,
};
use crate::meta::Meta;
use crate::rules::WriterState;
use crate::store::Expiry;
use crate::ttl::Expiring;

/// Name of the file that marks a directory as a ds-server file-log data directory.
pub const LAYOUT_FILE: &str = "LAYOUT";
/// Its content for the first format, without a journal: still read, and upgraded in place.
pub const LAYOUT_V1: &[u8] = b"ds-server file-log 1\n";
/// Its content for this format: version 1 plus the journal (`JOURNAL`), which an older
/// server would not replay.
pub const LAYOUT_V2: &[u8] = b"ds-server file-log 2\n";

/// How a file-log directory is opened, beside its mode and limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Most log files kept open at once.
    pub max_open_files: usize,
    /// Size of the `file-durable` journal; 0 runs without one (each round syncs its logs).
    pub journal_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options { max_open_files: 1024, journal_bytes: journal::DEFAULT_JOURNAL_BYTES }
    }
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Streams loaded.
    pub streams: usize,
    /// Records read from logs (after checkpoints).
    pub records_scanned: u64,
    /// Torn tails cut: stream, file position, bytes cut.
    pub torn: Vec<(String, u64, u64)>,
    /// Streams loaded read-only, with why.
    pub damaged: Vec<(String, String)>,
    /// Files that could not be loaded at all, with why.
    pub skipped: Vec<(String, String)>,
    /// Leftover files removed.
    pub removed: Vec<String>,
    /// Journal entries replayed into logs.
    pub journal_entries: u64,
}

/// Opens (creating if needed) the data directory `dir`.
///
/// # Errors
/// An I/O error on the directory itself, or a directory that belongs to something else.
pub fn open(
    fs: Arc<dyn Fs>,
    dir: &Path,
    durability: Durability,
    limits: Limits,
    options: Options,
    now: UnixMs,
    stats: Arc<crate::stats::CommitStats>,
) -> io::Result<(FileStore, Vec<Expiring>, Report)> {
    fs.create_dir_all(dir)?;
    check_layout(fs.as_ref(), dir)?;
    let mut report = Report::default();
    // The journal first: until it is replayed, logs may lack acknowledged records. Then it
    // starts over (or goes), before the cut list is applied and removed: the writes of a
    // failed commit may be in the journal too, and must not be replayed after their cut.
    let replayed = journal::replay(fs.as_ref(), dir)?;
    report.journal_entries = replayed.entries;
    let journal = if durability.syncs() && options.journal_bytes > 0 {
        Some(Journal::start(fs.as_ref(), dir, options.journal_bytes, &replayed)?)
    } else {
        if replayed.present {
            fs.remove(&dir.join(journal::JOURNAL_NAME))?;
            fs.sync_dir(dir)?;
        }
        None
    };
    apply_cut(fs.as_ref(), dir, &mut report)?;
    let mut metas = Vec::new();
    let mut files: HashMap<u64, Vec<String>> = HashMap::new();
    for name in fs.list(dir)? {
        if name.ends_with(fs::TMP_SUFFIX) {
            fs.remove(&dir.join(&name))?;
            report.removed.push(name);
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else { continue };
        let Ok(incarnation) = u64::from_str_radix(stem, 16) else { continue };
        match ext {
            "meta" => metas.push((incarnation, name)),
            "log" | "ckpt" | "gone" => files.entry(incarnation).or_default().push(name),
            _ => {}
        }
    }
    metas.sort_unstable();
    let mut streams: Vec<Arc<FileStream>> = Vec::new();
    let mut expiring = Vec::new();
    let mut known: HashSet<u64> = HashSet::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut max_incarnation = 0;
    for (incarnation, file_name) in metas {
        known.insert(incarnation);
        max_incarnation = max_incarnation.max(incarnation);
        let meta = match read_meta(fs.as_ref(), dir, incarnation) {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                tracing::error!(file = %file_name, "metadata file is damaged; stream not loaded");
                report.skipped.push((file_name, "damaged metadata".into()));
                continue;
            }
            Err(e) => {
                report.skipped.push((file_name, format!("unreadable metadata: {e}")));
                continue;
            }
        };
        let stream = match recover_stream(fs.as_ref(), dir, &meta, durability, now, &mut report) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::error!(stream = %meta.name, error = %e, "stream log cannot be opened; not loaded");
                report.skipped.push((meta.name.clone(), e.to_string()));
                continue;
            }
        };
        if let Some(previous) = by_name.get(&meta.name) {
            // Only a damaged directory holds two streams of one name: keep the newer.
            tracing::error!(stream = %meta.name, "two streams with one name; loading the newer");
            report.skipped.push((meta.name.clone(), "older duplicate".into()));
            streams[*previous] = stream.clone();
        } else {
            by_name.insert(meta.name.clone(), streams.len());
            streams.push(stream.clone());
        }
        if meta.expiry != Expiry::Never {
            expiring.push(Expiring {
                name: stream.name.clone(),
                incarnation,
                expiry: meta.expiry,
                last_access_ms: stream.last_access_ms(),
            });
        }
    }
    let gone: HashSet<u64> = files
        .iter()
        .filter(|(inc, names)| names.contains(&crate::log::store::gone_name(**inc)))
        .map(|(inc, _)| *inc)
        .collect();
    for (incarnation, names) in files {
        max_incarnation = max_incarnation.max(incarnation);
        if known.contains(&incarnation) {
            continue;
        }
        for name in names {
            fs.remove(&dir.join(&name))?;
            tracing::info!(file = %name, "removed a file left by an interrupted create or delete");
            report.removed.push(name);
        }
    }
    let mut streams = streams;
    link_forks(fs.as_ref(), dir, &mut streams, &gone, &mut report)?;
    // A soft-deleted stream no longer expires; a removed one is gone.
    expiring.retain(|e| {
        streams.iter().any(|s| s.incarnation() == e.incarnation && !s.lock().life.soft_deleted)
    });
    if !report.removed.is_empty() || !report.torn.is_empty() {
        fs.sync_dir(dir)?;
    }
    report.streams = streams.len();
    let next = (max_incarnation + 1).max(now.saturating_mul(1024));
    let recovered = Recovered { streams, next_incarnation: next, journal };
    let store = FileStore::from_parts(
        fs,
        dir.to_path_buf(),
        durability,
        limits,
        options.max_open_files,
        recovered,
        stats,
    )?;
    Ok((store, expiring, report))
}

/// Marks the streams with a `.gone` file soft-deleted, counts each stream's forks from their
/// metadata, and removes what a crash left half done: soft-deleted streams that no fork
/// reads any more (up the chain), metadata first.
fn link_forks(
    fs: &dyn Fs,
    dir: &Path,
    streams: &mut Vec<Arc<FileStream>>,
    gone: &HashSet<u64>,
    report: &mut Report,
) -> io::Result<()> {
    let by_name: HashMap<Arc<str>, Arc<FileStream>> =
        streams.iter().map(|s| (s.name.clone(), s.clone())).collect();
    for stream in streams.iter() {
        if gone.contains(&stream.incarnation()) {
            stream.lock().life.soft_deleted = true;
        }
        if let Some(f) = &stream.fork {
            match by_name.get(&f.link.source) {
                Some(source) => source.lock().life.refs += 1,
                None => {
                    tracing::error!(stream = %stream.name, source = %f.link.source,
                        "fork without its source: its inherited data cannot be read");
                    report.damaged.push((stream.name.to_string(), "fork source missing".into()));
                }
            }
        }
    }
    let mut orphans: Vec<Arc<FileStream>> = streams
        .iter()
        .filter(|s| {
            let st = s.lock();
            st.life.soft_deleted && st.life.refs == 0
        })
        .cloned()
        .collect();
    let mut removed = std::collections::HashSet::new();
    while let Some(stream) = orphans.pop() {
        let inc = stream.incarnation();
        fs.remove(&dir.join(meta_name(inc)))?;
        fs.sync_dir(dir)?;
        for name in
            [crate::log::handles::log_name(inc), ckpt_name(inc), crate::log::store::gone_name(inc)]
        {
            match fs.remove(&dir.join(&name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        tracing::info!(stream = %stream.name, "removed a deleted stream whose last fork is gone");
        report.removed.push(meta_name(inc));
        removed.insert(inc);
        if let Some(source) = stream.fork.as_ref().and_then(|f| by_name.get(&f.link.source)) {
            let mut st = source.lock();
            st.life.refs = st.life.refs.saturating_sub(1);
            if st.life.refs == 0 && st.life.soft_deleted {
                drop(st);
                orphans.push(source.clone());
            }
        }
    }
    streams.retain(|s| !removed.contains(&s.incarnation()));
    Ok(())
}

fn check_layout(fs: &dyn Fs, dir: &Path) -> io::Result<()> {
    match read_small(fs, &dir.join(LAYOUT_FILE)) {
        Ok(found) if found == LAYOUT_V2 => Ok(()),
        // Version 1 is version 2 without a journal: marked as 2 before a journal exists.
        Ok(found) if found == LAYOUT_V1 => fs::write_atomic(fs, dir, LAYOUT_FILE, LAYOUT_V2, true),
        Ok(found) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds {:?}, not a ds-server file-log directory of this version",
                dir.join(LAYOUT_FILE).display(),
                String::from_utf8_lossy(&found)
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Only an empty directory is adopted: recovery removes files it does not
            // recognise as its own, so a mistyped DS_STORAGE__DATA_DIR must not be taken over.
            let others: Vec<String> =
                fs.list(dir)?.into_iter().filter(|n| n != crate::engine::LOCK_FILE).collect();
            if let Some(first) = others.first() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} has no {LAYOUT_FILE} file but holds other files ({first}, ...): \
                         not a ds-server data directory; point DS_STORAGE__DATA_DIR at an \
                         empty or ds-server directory",
                        dir.display()
                    ),
                ));
            }
            fs::write_atomic(fs, dir, LAYOUT_FILE, LAYOUT_V2, true)
        }
        Err(e) => Err(e),
    }
}

/// Applies the cut list a failed commit left (`CUT`, see FORMAT.md): each log it names is
/// shortened to its length before that commit, and made durable so; then the list goes.
/// A crash midway repeats it at the next start (cutting twice cuts nothing more).
///
/// # Errors
/// An I/O error, or a damaged list (written atomically, so never torn: damage at rest).
fn apply_cut(fs: &dyn Fs, dir: &Path, report: &mut Report) -> io::Result<()> {
    let path = dir.join(CUT_NAME);
    let bytes = match read_small(fs, &path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    let cut = Cut::decode(&bytes).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "the cut list (CUT) is damaged")
    })?;
    let mut dropped = false;
    for &(incarnation, len) in &cut.entries {
        if len == 0 {
            // A create that failed: the stream must not exist (its log is then a leftover).
            match fs.remove(&dir.join(meta_name(incarnation))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                Ok(()) => {
                    tracing::warn!(incarnation, "removed a stream whose create failed");
                    dropped = true;
                }
                Err(_) => {}
            }
            continue;
        }
        let name = log_name(incarnation);
        let log = match fs.open(&dir.join(&name), OpenMode::ReadWrite) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => other?,
        };
        let had = log.len()?;
        if had > len {
            log.set_len(len)?;
            log.sync_data()?;
            tracing::warn!(file = %name, bytes = had - len, "cut the writes of a failed commit");
            report.torn.push((name, len, had - len));
        }
    }
    if dropped {
        // Durable before the list goes.
        fs.sync_dir(dir)?;
    }
    fs.remove(&path)?;
    fs.sync_dir(dir)?;
    Ok(())
}

/// A stream's log as read from disk, before anything is changed.
pub struct LogView {
    /// The log file.
    pub log: Arc<dyn FsFile>,
    /// Offset-space position of the first record.
    pub base: u64,
    /// The log's length.
    pub file_len: u64,
    /// The checkpoint used, if any was valid.
    pub checkpoint: Option<Checkpoint>,
    /// What the scan after the checkpoint found.
    pub scanned: scan::Scanned,
    /// Writer state at the end of the scan.
    pub writer: WriterState,
    /// Records up to the end of the scan.
    pub records: u64,
    /// Where the scan started (the checkpoint's position, or the base).
    pub scanned_from: u64,
    /// Last read or write the disk knows of.
    pub last_access_ms: UnixMs,
}

impl LogView {
    /// Offset-space position after the last whole record.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.scanned.end - FILE_HEADER_LEN as u64 + self.base
    }
}

/// Reads a stream's log: header, checkpoint (unless `whole` asks to read from the start), and
/// the records after it. Changes nothing.
///
/// # Errors
/// I/O errors, a missing log, a bad header or one of another stream.
pub fn load_log(
    fs: &dyn Fs,
    dir: &Path,
    meta: &Meta,
    mode: OpenMode,
    whole: bool,
) -> io::Result<LogView> {
    let log = fs.open(&dir.join(log_name(meta.incarnation)), mode)?;
    let mut head = [0u8; FILE_HEADER_LEN];
    fs::read_exact_at(log.as_ref(), &mut head, 0)?;
    let header = frame::decode_header(&head)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("log header: {e:?}")))?;
    if header.incarnation != meta.incarnation {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "log belongs to another stream"));
    }
    let base = header.base;
    let file_len = log.len()?;
    let checkpoint = read_checkpoint(fs, dir, meta.incarnation)
        .filter(|c| c.position >= base)
        .filter(|c| c.position - base + FILE_HEADER_LEN as u64 <= file_len);
    let use_ckpt = if whole { None } else { checkpoint.as_ref() };
    let (mut scanned, mut writer, mut records, mut scanned_from) =
        replay(log.as_ref(), base, use_ckpt)?;
    if use_ckpt.is_some() && scanned.records == 0 && matches!(scanned.stop, ScanEnd::Corrupt { .. })
    {
        // The checkpoint points at no record boundary: read the whole log instead.
        (scanned, writer, records, scanned_from) = replay(log.as_ref(), base, None)?;
    }
    let modified = log.modified_ms().unwrap_or(0);
    let last_access_ms =
        checkpoint.as_ref().map_or(0, |c| c.last_access_ms).max(modified).max(meta.created_ms);
    Ok(LogView {
        log,
        base,
        file_len,
        checkpoint,
        scanned,
        writer,
        records,
        scanned_from,
        last_access_ms,
    })
}

/// A stream's checkpoint, if it exists and decodes.
#[must_use]
pub fn read_checkpoint(fs: &dyn Fs, dir: &Path, incarnation: u64) -> Option<Checkpoint> {
    read_small(fs, &dir.join(ckpt_name(incarnation)))
        .ok()
        .and_then(|b| Checkpoint::decode(&b))
        .filter(|c| c.incarnation == incarnation)
}

/// A stream's metadata file, decoded; `None` if damaged.
///
/// # Errors
/// I/O errors.
pub fn read_meta(fs: &dyn Fs, dir: &Path, incarnation: u64) -> io::Result<Option<Meta>> {
    let bytes = read_small(fs, &dir.join(meta_name(incarnation)))?;
    Ok(Meta::decode(&bytes).filter(|m| m.incarnation == incarnation))
}

fn recover_stream(
    fs: &dyn Fs,
    dir: &Path,
    meta: &Meta,
    durability: Durability,
    now: UnixMs,
    report: &mut Report,
) -> io::Result<Arc<FileStream>> {
    let view = load_log(fs, dir, meta, OpenMode::ReadWrite, false)?;
    report.records_scanned += view.scanned.records;
    let mut damaged = None;
    match view.scanned.stop {
        ScanEnd::Clean => {}
        ScanEnd::TornTail { at, bytes } => {
            view.log.set_len(at)?;
            if durability == Durability::PowerLoss {
                view.log.sync_data()?;
            }
            tracing::warn!(
                stream = %meta.name, file_position = at, bytes,
                "cut a torn tail (an interrupted write) from the log"
            );
            report.torn.push((meta.name.clone(), at, bytes));
        }
        ScanEnd::Corrupt { at } => {
            let why =
                format!("corrupt record at file position {at} of {}", log_name(meta.incarnation));
            tracing::error!(
                stream = %meta.name, file_position = at,
                "log is corrupt before its end: serving the records before it, refusing writes"
            );
            report.damaged.push((meta.name.clone(), why.clone()));
            damaged = Some(why);
        }
    }
    let end = view.end();
    let mut state = StreamState::recovered(end, view.writer, view.records, view.scanned_from);
    if let Some(why) = damaged {
        state.mark_damaged(&why);
    }
    // Reads renew a sliding TTL in memory only; a crash loses those renewals. Count the
    // restart as an access rather than expire a stream that was being read.
    let last_access = match meta.expiry {
        Expiry::IdleTtl { .. } => view.last_access_ms.max(now),
        _ => view.last_access_ms,
    };
    Ok(Arc::new(FileStream::new(meta.clone(), view.base, state, last_access)))
}

/// Rebuilds the writer state from a checkpoint (if any) and the records after it.
fn replay(
    log: &dyn FsFile,
    base: u64,
    checkpoint: Option<&Checkpoint>,
) -> io::Result<(scan::Scanned, WriterState, u64, u64)> {
    let (mut writer, mut records, from) = match checkpoint {
        Some(c) => (c.writer.clone(), c.record_count, c.position),
        None => (WriterState::default(), 0, base),
    };
    let ckpt_position = from;
    let scanned = scan::scan(log, from - base + FILE_HEADER_LEN as u64, |_, record, _| {
        effect_of(record).replay(&mut writer);
        records += 1;
    })?;
    Ok((scanned, writer, records, ckpt_position))
}
