//! Read-only views of a data directory, for `engine-inspect`: the file-log streams in it and
//! the acid shards under its `acid/`. Nothing here writes, takes the directory's lock or cuts
//! a torn tail, so it is safe while the server runs (it then sees a moment's state) and after
//! a crash (it shows what recovery will find: logs are read with the `file-durable`
//! journal's entries over them, as the next start writes them back). Acid shards are opened through a
//! copy-on-write backend ([`crate::acid::inspect`]).

use std::io;
use std::path::Path;

use crate::acid::inspect::{self as acid, ShardCheck};
use crate::clock::UnixMs;
use crate::fs::{Fs, OpenMode};
use crate::log::frame::{FILE_HEADER_LEN, Kind};
use crate::log::journal::Overlay;
use crate::log::recovery::{self, LogView};
use crate::log::scan::{self, ScanEnd};
use crate::log::store::effect_of;
use crate::meta::Meta;
use crate::offset::Offset;
use crate::rules::WriterState;
use crate::store::Expiry;

/// One stream, as `engine-inspect list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    /// Stream name.
    pub name: String,
    /// Storage layout: `file-log` (the same for `file-fast` and `file-durable`) or `acid`.
    pub mode: &'static str,
    /// The acid shard holding it.
    pub shard: Option<usize>,
    /// Incarnation (file names).
    pub incarnation: u64,
    /// Content type.
    pub content_type: String,
    /// Expiry.
    pub expiry: Expiry,
    /// Creation time.
    pub created_ms: UnixMs,
    /// Offset-space bytes up to the last whole record (file log: framing included; acid:
    /// stored bytes).
    pub bytes: u64,
    /// Whole records.
    pub records: u64,
    /// `open`, `closed`, `expired`, or `deleted` (soft-deleted: kept for its forks).
    pub state: &'static str,
    /// `(id, epoch, last seq)` of each producer.
    pub producers: Vec<(String, u64, u64)>,
    /// A torn tail or corruption found at the end of the readable log.
    pub problem: Option<String>,
    /// For a fork: its source's name and the offset it diverges at.
    pub forked_from: Option<(String, Offset)>,
    /// Forks that read this stream's data.
    pub forks: u64,
}

/// What `engine-inspect verify` found for one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamCheck {
    /// Stream name (or the file name when the metadata is unreadable).
    pub name: String,
    /// Whole records with a valid CRC.
    pub records: u64,
    /// `clean`, or what stopped the scan.
    pub log: String,
    /// `none`, `consistent`, or what is wrong with the checkpoint.
    pub checkpoint: String,
    /// Whether anything here needs attention.
    pub ok: bool,
}

/// The result of `engine-inspect verify`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// One entry per metadata file.
    pub streams: Vec<StreamCheck>,
    /// Files left by an interrupted create or delete (recovery removes them).
    pub leftovers: Vec<String>,
    /// The acid shards' checks.
    pub shards: Vec<ShardCheck>,
    /// Entries of the `file-durable` journal that the next start writes back into their
    /// logs (the streams above are checked as they will read then).
    pub journal_entries: u64,
}

impl VerifyReport {
    /// No torn tail, corruption or inconsistency anywhere.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.streams.iter().all(|s| s.ok) && self.shards.iter().all(|s| s.ok)
    }
}

/// One record, as `engine-inspect dump` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpRecord {
    /// The record's offset token.
    pub offset: String,
    /// Its position in the log file (none in acid mode).
    pub file_position: Option<u64>,
    /// `append` or `close`; in acid, `more` for a row that continues a large append.
    pub kind: &'static str,
    /// The stream is closed after it.
    pub closes: bool,
    /// `(id, epoch, seq)` of the producer request.
    pub producer: Option<(String, u64, u64)>,
    /// `Stream-Seq`, lossily as text.
    pub stream_seq: Option<String>,
    /// JSON messages in it.
    pub messages: Option<usize>,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// The first bytes of the payload, lossily as text.
    pub preview: String,
}

/// Every stream of the acid layout under `dir` (none without one), with its shard.
fn acid_streams(fs: &dyn Fs, dir: &Path) -> io::Result<Vec<(usize, acid::StoredStream)>> {
    let mut out = Vec::new();
    for (index, db) in acid::open(fs, dir)?.unwrap_or_default().iter().enumerate() {
        out.extend(acid::streams(db)?.into_iter().map(|s| (index, s)));
    }
    Ok(out)
}

/// The first bytes of a payload, lossily as text, control characters as dots.
pub(crate) fn preview(payload: &[u8]) -> String {
    String::from_utf8_lossy(&payload[..payload.len().min(64)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect()
}

fn dump_row(row: acid::DumpRow) -> DumpRecord {
    DumpRecord {
        offset: Offset::at(row.pos).to_string(),
        file_position: None,
        kind: if row.continues { "more" } else { "append" },
        closes: false,
        producer: None,
        stream_seq: None,
        messages: row.messages,
        payload_bytes: row.payload.len(),
        preview: preview(&row.payload),
    }
}

/// Each metadata file's incarnation and content (`Ok(None)` if damaged).
type Metas = Vec<(u64, io::Result<Option<Meta>>)>;

/// The directory's metadata files, and the log and checkpoint files that have none.
fn metas(fs: &dyn Fs, dir: &Path) -> io::Result<(Metas, Vec<String>)> {
    let mut metas = Vec::new();
    let mut others: Vec<(u64, String)> = Vec::new();
    for name in fs.list(dir)? {
        let Some((stem, ext)) = name.split_once('.') else { continue };
        let Ok(inc) = u64::from_str_radix(stem, 16) else { continue };
        match ext {
            "meta" => metas.push(inc),
            "log" | "ckpt" => others.push((inc, name)),
            _ => {}
        }
    }
    metas.sort_unstable();
    let leftovers = others
        .into_iter()
        .filter(|(inc, _)| metas.binary_search(inc).is_err())
        .map(|(_, name)| name)
        .collect();
    let decoded = metas.into_iter().map(|inc| (inc, recovery::read_meta(fs, dir, inc))).collect();
    Ok((decoded, leftovers))
}

fn problem_of(view: &LogView) -> Option<String> {
    match view.scanned.stop {
        ScanEnd::Clean => None,
        ScanEnd::TornTail { at, bytes } => {
            Some(format!("torn tail: {bytes} bytes at file position {at}"))
        }
        ScanEnd::Corrupt { at } => Some(format!("corrupt record at file position {at}")),
    }
}

/// Every stream in the directory.
///
/// # Errors
/// If the directory cannot be listed.
pub fn list(fs: &dyn Fs, dir: &Path, now: UnixMs) -> io::Result<Vec<StreamSummary>> {
    let overlay = Overlay::new(fs, dir)?;
    let (metas, _) = metas(&overlay, dir)?;
    let mut forks: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (_, meta) in &metas {
        if let Ok(Some(Meta { fork: Some(f), .. })) = meta {
            *forks.entry(f.link.source.to_string()).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for (inc, meta) in metas {
        let Ok(Some(meta)) = meta else { continue };
        let Ok(view) = recovery::load_log(&overlay, dir, &meta, OpenMode::Read, false) else {
            continue;
        };
        let expired = match meta.expiry {
            Expiry::Never => false,
            Expiry::IdleTtl { secs } => view.last_access_ms.saturating_add(secs * 1000) <= now,
            Expiry::At { unix_ms } => unix_ms <= now,
        };
        let gone = fs.open(&dir.join(crate::log::store::gone_name(inc)), OpenMode::Read).is_ok();
        let state = if gone {
            "deleted"
        } else if expired {
            "expired"
        } else if view.writer.closed {
            "closed"
        } else {
            "open"
        };
        let mut producers: Vec<(String, u64, u64)> = view
            .writer
            .producers
            .iter()
            .map(|(id, p)| (id.to_string(), p.epoch, p.last_seq))
            .collect();
        producers.sort();
        out.push(StreamSummary {
            name: meta.name.clone(),
            mode: "file-log",
            shard: None,
            forked_from: meta.fork.as_ref().map(|f| {
                (f.link.source.to_string(), Offset::at(f.link.at).with_tag(f.link.at_tag))
            }),
            forks: forks.get(&meta.name).copied().unwrap_or(0),
            incarnation: inc,
            content_type: meta.content_type.as_str().to_owned(),
            expiry: meta.expiry,
            created_ms: meta.created_ms,
            bytes: view.end() - view.base,
            records: view.records,
            state,
            problem: problem_of(&view),
            producers,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let stored = acid_streams(fs, dir)?;
    let mut forks: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (_, s) in &stored {
        if let Some(f) = &s.fork {
            *forks.entry(f.link.source.to_string()).or_default() += 1;
        }
    }
    {
        for (index, s) in stored {
            let expired = matches!(s.meta.expiry, Expiry::At { unix_ms } if unix_ms <= now);
            let state = if s.soft_deleted {
                "deleted"
            } else if expired {
                "expired"
            } else if s.tail.closed {
                "closed"
            } else {
                "open"
            };
            let mut producers: Vec<(String, u64, u64)> =
                s.producers.iter().map(|(id, p)| (id.to_string(), p.epoch, p.last_seq)).collect();
            producers.sort();
            out.push(StreamSummary {
                forks: forks.get(&s.name).copied().unwrap_or(0),
                forked_from: s.fork.map(|f| {
                    (f.link.source.to_string(), Offset::at(f.link.at).with_tag(f.link.at_tag))
                }),
                name: s.name,
                mode: "acid",
                shard: Some(index),
                incarnation: s.meta.incarnation,
                content_type: s.meta.content_type.as_str().to_owned(),
                expiry: s.meta.expiry,
                created_ms: s.meta.created_ms,
                bytes: s.tail.end,
                records: s.tail.records,
                state,
                producers,
                problem: None,
            });
        }
    }
    Ok(out)
}

/// Checks every record's CRC from the start of every log, and every checkpoint against the
/// state the log gives at its position.
///
/// # Errors
/// If the directory cannot be listed.
pub fn verify(fs: &dyn Fs, dir: &Path) -> io::Result<VerifyReport> {
    let overlay = Overlay::new(fs, dir)?;
    let (metas, mut leftovers) = metas(&overlay, dir)?;
    // A failed commit's cut list: the next start shortens these logs before serving.
    if let Ok(bytes) = crate::fs::read_small(fs, &dir.join(crate::log::store::CUT_NAME)) {
        match crate::log::meta::Cut::decode(&bytes) {
            Some(cut) => leftovers.extend(cut.entries.iter().map(|(inc, len)| {
                format!("cut list: the next start shortens {inc:016x}.log to {len} bytes")
            })),
            None => leftovers.push("cut list CUT is damaged: the server will not start".into()),
        }
    }
    let mut report =
        VerifyReport { leftovers, journal_entries: overlay.entries, ..VerifyReport::default() };
    let file_names: std::collections::HashSet<String> = metas
        .iter()
        .filter_map(|(_, m)| m.as_ref().ok().and_then(Option::as_ref).map(|m| m.name.clone()))
        .collect();
    for (inc, meta) in metas {
        let meta = match meta {
            Ok(Some(meta)) => meta,
            Ok(None) | Err(_) => {
                report.streams.push(StreamCheck {
                    name: crate::log::store::meta_name(inc),
                    records: 0,
                    log: "metadata file is damaged or unreadable".into(),
                    checkpoint: "-".into(),
                    ok: false,
                });
                continue;
            }
        };
        let mut check = check_stream(&overlay, dir, &meta);
        if let Some(f) = &meta.fork
            && !file_names.contains(f.link.source.as_ref())
        {
            check.ok = false;
            check.log = format!("fork of {}, which does not exist", f.link.source);
        }
        report.streams.push(check);
    }
    let stored = acid_streams(fs, dir)?;
    let names: std::collections::HashSet<&str> =
        stored.iter().map(|(_, s)| s.name.as_str()).collect();
    let mut fork_problems: std::collections::HashMap<String, String> =
        std::collections::HashMap::new();
    for (_, s) in &stored {
        if let Some(f) = &s.fork
            && !names.contains(f.link.source.as_ref())
        {
            fork_problems
                .insert(s.name.clone(), format!("fork of {}, which does not exist", f.link.source));
        }
        let read = stored
            .iter()
            .any(|(_, other)| other.fork.as_ref().is_some_and(|f| *f.link.source == *s.name));
        if s.soft_deleted && !read {
            report.leftovers.push(format!(
                "acid stream {} is deleted and no fork reads it (the next start removes it)",
                s.name
            ));
        }
    }
    let shards = acid::open(fs, dir)?.unwrap_or_default();
    let count = shards.len();
    for (index, db) in shards.into_iter().enumerate() {
        let (check, streams) = acid::verify_shard(db, index, count)?;
        report.shards.push(check);
        for s in streams {
            let (log, ok) = match (s.result, fork_problems.remove(&s.name)) {
                (_, Some(why)) | (Err(why), None) => (why, false),
                (Ok(end), None) => (format!("rows contiguous to offset {}", Offset::at(end)), true),
            };
            report.streams.push(StreamCheck {
                name: s.name,
                records: s.rows,
                log,
                checkpoint: format!("acid shard {index}"),
                ok,
            });
        }
    }
    Ok(report)
}

fn check_stream(fs: &dyn Fs, dir: &Path, meta: &Meta) -> StreamCheck {
    let failed = |why: String| StreamCheck {
        name: meta.name.clone(),
        records: 0,
        log: why,
        checkpoint: "-".into(),
        ok: false,
    };
    let log =
        match fs.open(&dir.join(crate::log::handles::log_name(meta.incarnation)), OpenMode::Read) {
            Ok(log) => log,
            Err(e) => return failed(format!("log unreadable: {e}")),
        };
    let mut head = [0u8; FILE_HEADER_LEN];
    let header = crate::fs::read_exact_at(log.as_ref(), &mut head, 0)
        .map_err(|e| e.to_string())
        .and_then(|()| crate::log::frame::decode_header(&head).map_err(|e| format!("{e:?}")));
    let header = match header {
        Ok(h) if h.incarnation == meta.incarnation => h,
        Ok(_) => return failed("log header names another stream".into()),
        Err(e) => return failed(format!("log header: {e}")),
    };
    let ckpt = recovery::read_checkpoint(fs, dir, meta.incarnation);
    let mut writer = WriterState::default();
    let mut records = 0u64;
    let mut at_ckpt: Option<(WriterState, u64)> = None;
    let ckpt_pos = ckpt.as_ref().map(|c| c.position);
    let to_pos = |file_pos: u64| file_pos - FILE_HEADER_LEN as u64 + header.base;
    let scanned = scan::scan(log.as_ref(), FILE_HEADER_LEN as u64, |file_pos, record, _| {
        if ckpt_pos == Some(to_pos(file_pos)) {
            at_ckpt = Some((writer.clone(), records));
        }
        effect_of(record).replay(&mut writer);
        records += 1;
    });
    let scanned = match scanned {
        Ok(s) => s,
        Err(e) => return failed(format!("log unreadable: {e}")),
    };
    if ckpt_pos == Some(to_pos(scanned.end)) {
        at_ckpt = Some((writer.clone(), records));
    }
    let (log_state, mut ok) = match scanned.stop {
        ScanEnd::Clean => ("clean".to_owned(), true),
        ScanEnd::TornTail { at, bytes } => {
            (format!("torn tail: {bytes} bytes at file position {at}"), false)
        }
        ScanEnd::Corrupt { at } => (format!("corrupt record at file position {at}"), false),
    };
    let checkpoint = match (&ckpt, at_ckpt) {
        (None, _) => "none".to_owned(),
        (Some(c), Some((state, count))) if state == c.writer && count == c.record_count => {
            format!("consistent at offset {}", Offset::at(c.position))
        }
        (Some(c), Some(_)) => {
            ok = false;
            format!("state at offset {} differs from the log", Offset::at(c.position))
        }
        (Some(c), None) => {
            ok = false;
            format!("offset {} is not a record boundary of the log", Offset::at(c.position))
        }
    };
    StreamCheck {
        name: meta.name.clone(),
        records: scanned.records,
        log: log_state,
        checkpoint,
        ok,
    }
}

/// The records of one stream, from `from` (a record boundary) or the start.
///
/// # Errors
/// `NotFound` for an unknown stream; I/O errors; `InvalidData` if `from` is not a record
/// boundary.
pub fn dump(
    fs: &dyn Fs,
    dir: &Path,
    stream: &str,
    from: Option<Offset>,
) -> io::Result<Vec<DumpRecord>> {
    if let Some(shards) = acid::open(fs, dir)? {
        match acid::dump(&shards, stream, from.map(Offset::pos)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            rows => return Ok(rows?.into_iter().map(dump_row).collect()),
        }
    }
    let overlay = Overlay::new(fs, dir)?;
    let fs: &dyn Fs = &overlay;
    let (metas, _) = metas(fs, dir)?;
    let meta = metas
        .into_iter()
        .filter_map(|(_, m)| m.ok().flatten())
        .filter(|m| m.name == stream)
        .max_by_key(|m| m.incarnation)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no stream named {stream:?}"))
        })?;
    let log =
        fs.open(&dir.join(crate::log::handles::log_name(meta.incarnation)), OpenMode::Read)?;
    let mut head = [0u8; FILE_HEADER_LEN];
    crate::fs::read_exact_at(log.as_ref(), &mut head, 0)?;
    let header = crate::log::frame::decode_header(&head)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("log header: {e:?}")))?;
    let start = from.map_or(header.base, Offset::pos);
    if start < header.base {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "offset before the stream's start"));
    }
    let mut out = Vec::new();
    let scanned = scan::scan(
        log.as_ref(),
        start - header.base + FILE_HEADER_LEN as u64,
        |file_pos, r, _| {
            out.push(DumpRecord {
                offset: Offset::at(file_pos - FILE_HEADER_LEN as u64 + header.base).to_string(),
                file_position: Some(file_pos),
                kind: if r.kind == Kind::Close { "close" } else { "append" },
                closes: r.closes,
                producer: r.producer.as_ref().map(|(id, e, s)| (id.to_string(), *e, *s)),
                stream_seq: r.stream_seq.map(|s| String::from_utf8_lossy(s).into_owned()),
                messages: r.message_lens.as_ref().map(Vec::len),
                payload_bytes: r.payload.len(),
                preview: preview(r.payload),
            });
        },
    )?;
    if out.is_empty() && matches!(scanned.stop, ScanEnd::Corrupt { .. }) && from.is_some() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "offset is not a record boundary"));
    }
    Ok(out)
}
