//! Read-only views of the acid layout, for `engine-inspect`. Each shard is opened through an
//! [`OverlayBackend`]: redb's repair after a crash and its integrity check write only to
//! memory, never to the shard file, and no lock is taken. Beside a running server a shard
//! that is being written may show a moment's state or fail to open; stop the server for a
//! reliable `verify`.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

use crate::acid::backend::OverlayBackend;
use crate::acid::layout::{self, redb_io};
pub use crate::acid::tables::StoredStream;
use crate::acid::tables::{self, DATA, META, NAMES, PRODUCERS, TAILS};
use crate::fs::{Fs, OpenMode};

/// The shards of the acid layout under `data_dir`, opened read-only; `None` when there is no
/// acid layout there.
///
/// # Errors
/// A foreign manifest, a missing or unreadable shard.
pub fn open(fs: &dyn Fs, data_dir: &Path) -> io::Result<Option<Vec<Database>>> {
    let dir = layout::acid_dir(data_dir);
    let Some(count) = layout::read_manifest(fs, &dir)? else { return Ok(None) };
    let mut shards = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let path = dir.join(layout::shard_name(index));
        let file = fs.open(&path, OpenMode::Read)?;
        let db = redb::Builder::new()
            .create_with_backend(OverlayBackend::new(file)?)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        shards.push(db);
    }
    Ok(Some(shards))
}

/// Every stream of one shard.
///
/// # Errors
/// redb errors, damaged rows.
pub fn streams(db: &Database) -> io::Result<Vec<StoredStream>> {
    let txn = db.begin_read().map_err(redb_io)?;
    tables::read_streams(&txn).map(|(s, _)| s).map_err(io::Error::other)
}

/// What `verify` found in one shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardCheck {
    /// The shard's index.
    pub index: usize,
    /// redb's integrity check: `clean`, or what it found.
    pub integrity: String,
    /// Rows that belong to no stream, streams on the wrong shard, ids past the counter.
    pub problems: Vec<String>,
    /// Whether anything here needs attention.
    pub ok: bool,
}

/// What `verify` found for one stream: rows counted (a large append spans several), then
/// `Ok` or the first problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRows {
    /// The stream.
    pub name: String,
    /// Data rows read.
    pub rows: u64,
    /// `Ok(end)` if the rows are contiguous from 0 and end where the tail row says.
    pub result: Result<u64, String>,
}

/// Runs redb's integrity check on a shard, then checks every stream's rows against its tail
/// row, and looks for rows that belong to no stream.
///
/// # Errors
/// redb errors that stop the check itself.
pub fn verify_shard(
    mut db: Database,
    index: usize,
    shards: usize,
) -> io::Result<(ShardCheck, Vec<StreamRows>)> {
    let integrity = match db.check_integrity() {
        Ok(true) => "clean".to_owned(),
        Ok(false) => "damaged pages found (repaired in memory only; the shard is untouched)".into(),
        Err(e) => format!("failed: {e}"),
    };
    let mut check = ShardCheck { index, ok: integrity == "clean", integrity, problems: Vec::new() };
    let txn = db.begin_read().map_err(redb_io)?;
    let (streams, next_id) = tables::read_streams(&txn).map_err(io::Error::other)?;
    let ids: HashMap<u64, &str> = streams.iter().map(|s| (s.id, s.name.as_str())).collect();
    for s in &streams {
        if layout::shard_of(&s.name, shards) != index {
            check.problems.push(format!("stream {} belongs on another shard", s.name));
        }
        if s.id >= next_id {
            check.problems.push(format!("stream {} has id {} past the counter", s.name, s.id));
        }
    }
    let mut orphans = BTreeSet::new();
    let meta = txn.open_table(META).map_err(redb_io)?;
    for row in meta.iter().map_err(redb_io)? {
        orphans.extend(Some(row.map_err(redb_io)?.0.value()).filter(|id| !ids.contains_key(id)));
    }
    let tails = txn.open_table(TAILS).map_err(redb_io)?;
    for row in tails.iter().map_err(redb_io)? {
        orphans.extend(Some(row.map_err(redb_io)?.0.value()).filter(|id| !ids.contains_key(id)));
    }
    let producers = txn.open_table(PRODUCERS).map_err(redb_io)?;
    for row in producers.iter().map_err(redb_io)? {
        let id = row.map_err(redb_io)?.0.value().0;
        orphans.extend(Some(id).filter(|id| !ids.contains_key(id)));
    }
    let data = txn.open_table(DATA).map_err(redb_io)?;
    let mut results = Vec::with_capacity(streams.len());
    for s in &streams {
        results.push(check_rows(&data, s));
    }
    // Data rows of unknown ids: walk the ids present in the data table by skipping ranges.
    let mut id = 0u64;
    loop {
        let Some(row) = data.range((id, 0)..).map_err(redb_io)?.next() else { break };
        let found = row.map_err(redb_io)?.0.value().0;
        if !ids.contains_key(&found) {
            orphans.insert(found);
        }
        match found.checked_add(1) {
            Some(next) => id = next,
            None => break,
        }
    }
    for id in orphans {
        check.problems.push(format!("rows of stream id {id}, which has no name"));
    }
    check.ok &= check.problems.is_empty();
    Ok((check, results))
}

fn check_rows(data: &redb::ReadOnlyTable<(u64, u64), &[u8]>, s: &StoredStream) -> StreamRows {
    let mut rows = 0u64;
    let mut appends = 0u64;
    // A fork's own rows start at its fork point.
    let mut end = s.fork.as_ref().map_or(0, |f| f.link.at);
    let json = s.meta.content_type.is_json();
    let result = (|| -> Result<u64, String> {
        for row in data.range((s.id, 0)..=(s.id, u64::MAX)).map_err(|e| e.to_string())? {
            let (key, value) = row.map_err(|e| e.to_string())?;
            let pos = key.value().1;
            if pos != end {
                return Err(format!("row at offset {pos} where {end} was expected"));
            }
            let value = value.value();
            let head = tables::decode_record(value)
                .ok_or_else(|| format!("damaged row at offset {pos}"))?;
            if head.lens.is_some() != json {
                return Err(format!("row at offset {pos} does not match the content type"));
            }
            if value.len() == head.payload_at {
                return Err(format!("empty row at offset {pos}"));
            }
            if head.continues && rows == 0 {
                return Err(format!("row at offset {pos} continues an append that is not there"));
            }
            end += (value.len() - head.payload_at) as u64;
            rows += 1;
            appends += u64::from(!head.continues);
        }
        if end != s.tail.end || appends != s.tail.records {
            return Err(format!(
                "rows end at offset {end} after {appends} appends; the tail row says {} after {}",
                s.tail.end, s.tail.records
            ));
        }
        Ok(end)
    })();
    StreamRows { name: s.name.clone(), rows, result }
}

/// One data row, as `dump` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpRow {
    /// Offset-space position of its first byte.
    pub pos: u64,
    /// It continues the append of the row before it.
    pub continues: bool,
    /// JSON messages in it.
    pub messages: Option<usize>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// The rows of `name` from the row at `from` (or the first).
///
/// # Errors
/// `NotFound` for an unknown stream, `InvalidData` if `from` is not where a row starts.
pub fn dump(shards: &[Database], name: &str, from: Option<u64>) -> io::Result<Vec<DumpRow>> {
    let db = &shards[layout::shard_of(name, shards.len())];
    let txn = db.begin_read().map_err(redb_io)?;
    let names = txn.open_table(NAMES).map_err(redb_io)?;
    let id = names.get(name).map_err(redb_io)?.map(|v| v.value()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("no stream named {name:?}"))
    })?;
    let data = txn.open_table(DATA).map_err(redb_io)?;
    let start = from.unwrap_or(0);
    let mut out = Vec::new();
    for row in data.range((id, start)..=(id, u64::MAX)).map_err(redb_io)? {
        let (key, value) = row.map_err(redb_io)?;
        let value = value.value();
        let head = tables::decode_record(value)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "damaged row"))?;
        out.push(DumpRow {
            pos: key.value().1,
            continues: head.continues,
            messages: head.lens.map(|l| l.len()),
            payload: value[head.payload_at..].to_vec(),
        });
    }
    if from.is_some() && out.first().is_none_or(|r| r.pos != start) && start != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "offset is not where an append starts",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sim::SimFs;
    use std::sync::Arc;

    #[test]
    fn a_shard_opens_read_only_with_its_streams() {
        let sim = SimFs::new();
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let data = Path::new("/data");
        let dbs = layout::open_shards(&fs, &layout::acid_dir(data), 1).unwrap();
        let db = &dbs[0];
        let txn = db.begin_write().unwrap();
        txn.open_table(NAMES).unwrap().insert("s", 1).unwrap();
        txn.commit().unwrap();
        drop(dbs);
        let before = sim.contents(&layout::acid_dir(data).join(layout::shard_name(0)));
        let shards = open(&sim, data).unwrap().unwrap();
        let txn = shards[0].begin_read().unwrap();
        assert_eq!(txn.open_table(NAMES).unwrap().get("s").unwrap().map(|v| v.value()), Some(1));
        drop(txn);
        drop(shards);
        let after = sim.contents(&layout::acid_dir(data).join(layout::shard_name(0)));
        assert_eq!(before, after, "the shard file is untouched");
    }

    /// verify finds rows that disagree with the tail row, and rows that belong to no name.
    #[test]
    fn verify_reports_inconsistent_and_orphan_rows() {
        use crate::acid::tables::{COUNTERS, NEXT_STREAM_ID, TailRow, encode_record};
        use crate::meta::Meta;
        use crate::store::{ContentType, Expiry};
        let sim = SimFs::new();
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let data = Path::new("/data");
        let dbs = layout::open_shards(&fs, &layout::acid_dir(data), 1).unwrap();
        let txn = dbs[0].begin_write().unwrap();
        {
            let meta = |name: &str| Meta {
                incarnation: 1,
                created_ms: 0,
                expiry: Expiry::Never,
                content_type: ContentType::new("text/plain"),
                name: name.into(),
                fork: None,
            };
            let tail = TailRow { end: 10, records: 2, ..TailRow::default() };
            txn.open_table(NAMES).unwrap().insert("short", 1).unwrap();
            txn.open_table(META).unwrap().insert(1, meta("short").encode().as_slice()).unwrap();
            txn.open_table(TAILS).unwrap().insert(1, tail.encode().as_slice()).unwrap();
            let mut rows = txn.open_table(DATA).unwrap();
            rows.insert((1, 0), encode_record(None, b"12345").as_slice()).unwrap();
            rows.insert((7, 0), encode_record(None, b"lost").as_slice()).unwrap();
            txn.open_table(PRODUCERS).unwrap().insert((8, "p"), (0, 0)).unwrap();
            txn.open_table(COUNTERS).unwrap().insert(NEXT_STREAM_ID, 9).unwrap();
        }
        txn.commit().unwrap();
        drop(dbs);
        let shards = open(&sim, data).unwrap().unwrap();
        let (check, streams) = verify_shard(shards.into_iter().next().unwrap(), 0, 1).unwrap();
        assert_eq!(check.integrity, "clean");
        assert!(!check.ok);
        assert_eq!(
            check.problems,
            vec![
                "rows of stream id 7, which has no name",
                "rows of stream id 8, which has no name"
            ]
        );
        let err = streams[0].result.clone().unwrap_err();
        assert!(err.contains("rows end at offset 5 after 1 appends"), "{err}");
    }
}
