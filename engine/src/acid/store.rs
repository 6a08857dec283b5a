//! [`AcidStore`]: the `acid` mode. Streams live in sharded redb databases (tables in
//! [`super::tables`]); every mutation is a redb write transaction committed with immediate
//! durability before it is acknowledged.
//!
//! Write path (group commit per shard). An append validates against the stream's *accepted*
//! state under the stream's lock, queues its record in the stream's pending batch, and waits.
//! The first appender to find no commit pending queues the stream for its shard's committer
//! thread. Each round the committer takes every queued stream of its shard and writes all their
//! batches in one write transaction: the data rows, each stream's new tail row and its producer
//! rows. One commit (one sync) makes them all durable; only then are they made *visible*
//! (readers, live subscribers) and acknowledged. Shards commit independently and concurrently.
//!
//! Creates, deletes and expiry removals run their own write transaction on a blocking thread,
//! serialised per shard by the shard's `writes` lock (and by redb's single writer).
//!
//! Reads run a redb read transaction on a blocking thread: they never wait for a writer and
//! never write (a sliding TTL is renewed in memory only, as in the file modes).
//!
//! A failed commit poisons the store: every later write gets [`Error::Unavailable`] until
//! restart (redb refuses further writes after an I/O error itself; reopening recovers).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::oneshot;

use crate::acid::layout;
use crate::acid::tables::{
    self, COUNTERS, DATA, FORKS, META, NAMES, NEXT_STREAM_ID, PRODUCERS, SOFT_DELETED, TAILS,
    TailRow,
};
use crate::chunk::{Split, utf8_cut};
use crate::clock::UnixMs;
use crate::commit_queue::{CommitQueue, CommitterThreads};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::lifecycle::{self, Backend, Life, POISONED};
use crate::meta::Meta;
use crate::notify::TailWatch;
use crate::offset::{Offset, ReadFrom};
use crate::payload::Payload;
use crate::rules::{self, Effect, Plan, WriterState};
use crate::store::{
    AppendRequest, AppendTicket, Appended, CreateRequest, Created, Expiry, ExpiryCheck, ForkOf,
    RangeRead, ReadChunk, Store, StreamInfo,
};
use crate::stream_core::{Removing, StreamCore};
use crate::ttl::Expiring;

/// Most bytes of recent appends a watched stream keeps for its live readers (at least one
/// append, whatever its size).
const RECENT_BYTES_MAX: usize = 256 * 1024;

/// The acid store. Cloning shares it; the committer threads stop when the last clone drops.
#[derive(Clone)]
pub struct AcidStore {
    inner: Arc<Inner>,
    _committers: Arc<CommitterThreads>,
}

impl std::fmt::Debug for AcidStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcidStore")
            .field("dir", &self.inner.dir)
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    limits: Limits,
    shards: Box<[Shard]>,
    next_incarnation: AtomicU64,
    poisoned: AtomicBool,
    /// Where commit rounds are counted (the server's metrics).
    stats: Arc<crate::stats::CommitStats>,
}

struct Shard {
    db: Database,
    map: RwLock<HashMap<Arc<str>, Arc<AcidStream>>>,
    /// Serialises creates, deletes and expiry removals of the shard's names.
    writes: tokio::sync::Mutex<()>,
    /// The next stream id; taken under `writes`.
    next_id: AtomicU64,
    committer: CommitQueue<Arc<AcidStream>>,
}

/// One stream.
struct AcidStream {
    core: StreamCore,
    /// The compact key of its rows, unique in its shard and never reused.
    id: u64,
    state: Mutex<StreamState>,
}

impl std::ops::Deref for AcidStream {
    type Target = StreamCore;

    fn deref(&self) -> &StreamCore {
        &self.core
    }
}

/// A stream's state; see the module docs for *accepted* and *visible*.
#[derive(Default)]
struct StreamState {
    /// Removal, soft deletion and fork references (the shared lifecycle).
    life: Life,
    accepted: WriterState,
    accepted_end: u64,
    durable: WriterState,
    visible_end: u64,
    visible_records: u64,
    batch: Vec<Pending>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
    committing: bool,
    /// The latest visible appends, in order and ending at `visible_end`, kept while live
    /// readers watch the stream: each of them reads what woke it from here instead of a
    /// redb read transaction of its own.
    recent: VecDeque<Recent>,
    recent_bytes: usize,
}

/// One committed append, kept for live readers.
struct Recent {
    pos: u64,
    payload: Bytes,
    lens: Option<Arc<[u32]>>,
}

/// A stream's share of a commit round: its batch and the appends waiting on it.
type RoundWork = (Arc<AcidStream>, Vec<Pending>, Vec<oneshot::Sender<Result<()>>>);

/// An accepted append waiting for its commit.
struct Pending {
    pos: u64,
    payload: Bytes,
    lens: Option<Vec<u32>>,
    effect: Effect,
}

/// A contiguous run of stored bytes a chunk can end after: a JSON message, or the rest of
/// an append's bytes (gathered from the rows it spans, as far as the read needs them).
struct Unit {
    pos: u64,
    bytes: Vec<u8>,
}

fn lock(state: &Mutex<StreamState>) -> MutexGuard<'_, StreamState> {
    // Every check runs before any change; a panic mid-way leaves a consistent state.
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn storage(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{context}: {e}"))
}

fn fail(waiters: Vec<oneshot::Sender<Result<()>>>, error: &Error) {
    for w in waiters {
        let _ = w.send(Err(error.clone()));
    }
}

impl AcidStream {
    fn new(
        id: u64,
        meta: Meta,
        fork: Option<ForkOf>,
        st: StreamState,
        last_access: UnixMs,
    ) -> AcidStream {
        let core = StreamCore::new(meta, fork, st.visible_end, st.durable.closed, last_access);
        AcidStream { core, id, state: Mutex::new(st) }
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        lock(&self.state)
    }

    fn info(&self, st: &StreamState) -> StreamInfo {
        self.core.info(st.visible_end, st.durable.closed)
    }

    fn publish(&self, st: &StreamState) {
        self.core.publish(st.visible_end, st.durable.closed, st.life.removed);
    }
}

impl StreamState {
    /// Deleted for good: the removal is committed (while it is not, the stream still reads
    /// as it was, since a crash could still bring it back).
    fn gone(&self) -> bool {
        self.life.gone()
    }

    fn at(end: u64, records: u64, writer: WriterState) -> StreamState {
        StreamState {
            accepted: writer.clone(),
            accepted_end: end,
            durable: writer,
            visible_end: end,
            visible_records: records,
            ..StreamState::default()
        }
    }
}

/// Opens (creating on first start) the acid layout under `data_dir` and loads every stream.
///
/// # Errors
/// A foreign or mismatched layout, redb or I/O errors, a damaged row.
pub fn open(
    fs: &Arc<dyn Fs>,
    data_dir: &Path,
    limits: Limits,
    shard_count: u32,
    now: UnixMs,
    stats: Arc<crate::stats::CommitStats>,
) -> io::Result<(AcidStore, Vec<Expiring>)> {
    let dir = layout::acid_dir(data_dir);
    let dbs = layout::open_shards(fs, &dir, shard_count)?;
    let mut shards = Vec::with_capacity(dbs.len());
    let mut expiring = Vec::new();
    let mut max_incarnation = 0;
    for (index, db) in dbs.into_iter().enumerate() {
        ensure_tables(&db).map_err(layout::redb_io)?;
        let (streams, next_id) = load_shard(&db, now)
            .map_err(|e| io::Error::other(format!("acid shard {index}: {e}")))?;
        let mut map = HashMap::with_capacity(streams.len());
        for stream in streams {
            max_incarnation = max_incarnation.max(stream.incarnation());
            if stream.meta.expiry != Expiry::Never && !stream.lock().life.soft_deleted {
                expiring.push(Expiring {
                    name: stream.name.clone(),
                    incarnation: stream.incarnation(),
                    expiry: stream.meta.expiry,
                    last_access_ms: stream.last_access_ms(),
                });
            }
            map.insert(stream.name.clone(), stream);
        }
        shards.push(Shard {
            db,
            map: RwLock::new(map),
            writes: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(next_id),
            committer: CommitQueue::default(),
        });
    }
    let inner = Arc::new(Inner {
        dir,
        limits,
        shards: shards.into_boxed_slice(),
        // As in the file modes: never below a clock-derived floor, so ETags of a stream
        // recreated under the same name after a wipe do not repeat.
        next_incarnation: AtomicU64::new((max_incarnation + 1).max(now.saturating_mul(1024))),
        poisoned: AtomicBool::new(false),
        stats,
    });
    inner.link_forks()?;
    let runs: Vec<Box<dyn FnOnce() + Send>> = (0..inner.shards.len())
        .map(|index| {
            let inner = inner.clone();
            Box::new(move || {
                while let Some(round) = inner.shards[index].committer.next_round() {
                    let run = std::panic::AssertUnwindSafe(|| inner.commit_round(index, round));
                    if std::panic::catch_unwind(run).is_err() {
                        inner.poison("committing a round", &"the committer panicked");
                    }
                }
            }) as Box<dyn FnOnce() + Send>
        })
        .collect();
    let stop_inner = inner.clone();
    let stop = Box::new(move || stop_inner.shards.iter().for_each(|s| s.committer.stop()));
    let committers = Arc::new(CommitterThreads::spawn(runs, stop)?);
    Ok((AcidStore { inner, _committers: committers }, expiring))
}

/// Deletes every row of a stream in one transaction: its name (if it still names this id),
/// metadata, tail, producers, fork link, soft-delete mark and data.
fn remove_rows(db: &Database, s: &AcidStream) -> std::result::Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut names = txn.open_table(NAMES)?;
        let current = names.get(s.name.as_ref())?.map(|v| v.value());
        if current == Some(s.id) {
            names.remove(s.name.as_ref())?;
        }
        txn.open_table(META)?.remove(s.id)?;
        txn.open_table(TAILS)?.remove(s.id)?;
        txn.open_table(FORKS)?.remove(s.id)?;
        txn.open_table(SOFT_DELETED)?.remove(s.id)?;
        txn.open_table(PRODUCERS)?.retain_in((s.id, "")..(s.id + 1, ""), |_, _| false)?;
        txn.open_table(DATA)?.retain_in((s.id, 0)..=(s.id, u64::MAX), |_, _| false)?;
    }
    txn.commit()?;
    Ok(())
}

/// Creates the tables a shard lacks (all of them in a fresh shard; the fork tables in one
/// written before forks), so that read transactions can always open every table.
fn ensure_tables(db: &Database) -> std::result::Result<(), redb::Error> {
    fn missing<K: redb::Key + 'static, V: redb::Value + 'static>(
        txn: &redb::ReadTransaction,
        table: redb::TableDefinition<K, V>,
    ) -> std::result::Result<bool, redb::Error> {
        match txn.open_table(table) {
            Ok(_) => Ok(false),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }
    let read = db.begin_read()?;
    let any_missing = missing(&read, NAMES)?
        || missing(&read, META)?
        || missing(&read, TAILS)?
        || missing(&read, PRODUCERS)?
        || missing(&read, DATA)?
        || missing(&read, COUNTERS)?
        || missing(&read, FORKS)?
        || missing(&read, SOFT_DELETED)?;
    drop(read);
    if !any_missing {
        return Ok(());
    }
    let txn = db.begin_write()?;
    txn.open_table(NAMES)?;
    txn.open_table(META)?;
    txn.open_table(TAILS)?;
    txn.open_table(PRODUCERS)?;
    txn.open_table(DATA)?;
    txn.open_table(COUNTERS)?;
    txn.open_table(FORKS)?;
    txn.open_table(SOFT_DELETED)?;
    txn.commit()?;
    Ok(())
}

/// Every stream of a shard, and the shard's next stream id.
fn load_shard(
    db: &Database,
    now: UnixMs,
) -> std::result::Result<(Vec<Arc<AcidStream>>, u64), String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let (stored, next_id) = tables::read_streams(&txn)?;
    let streams = stored
        .into_iter()
        .map(|s| {
            let writer = s.tail.writer(s.producers);
            // A restart counts as an access, as in the file modes: reads never write, so the
            // last access before the stop is not on disk.
            let last_access = now.max(s.meta.created_ms);
            let mut st = StreamState::at(s.tail.end, s.tail.records, writer);
            st.life.soft_deleted = s.soft_deleted;
            Arc::new(AcidStream::new(s.id, s.meta, s.fork, st, last_access))
        })
        .collect();
    Ok((streams, next_id))
}

impl AcidStore {
    /// Whether a failed commit has stopped all writes.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Relaxed)
    }

    /// The acid directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Streams loaded or created, on every shard.
    #[must_use]
    pub fn stream_count(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|s| s.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).len())
            .sum()
    }
}

impl Inner {
    fn shard_index(&self, name: &str) -> usize {
        layout::shard_of(name, self.shards.len())
    }

    fn shard(&self, name: &str) -> &Shard {
        &self.shards[self.shard_index(name)]
    }

    fn poison(&self, context: &str, e: &dyn std::fmt::Display) {
        if !self.poisoned.swap(true, Ordering::SeqCst) {
            tracing::error!(
                error = %e,
                context,
                dir = %self.dir.display(),
                "acid commit failed: refusing all writes until restart"
            );
        }
    }

    /// At load: counts each stream's forks from the fork rows, then removes what a crash left
    /// half done: soft-deleted streams no fork reads any more (up the chain).
    fn link_forks(&self) -> io::Result<()> {
        let all: Vec<Arc<AcidStream>> = self
            .shards
            .iter()
            .flat_map(|s| {
                let map = s.map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                map.values().cloned().collect::<Vec<_>>()
            })
            .collect();
        for stream in &all {
            if let Some(f) = &stream.fork {
                match self.get(&f.link.source) {
                    Some(source) => source.lock().life.refs += 1,
                    None => tracing::error!(
                        stream = %stream.name,
                        source = %f.link.source,
                        "fork without its source: its inherited data cannot be read"
                    ),
                }
            }
        }
        let mut orphans: Vec<Arc<AcidStream>> = all
            .iter()
            .filter(|s| {
                let st = s.lock();
                st.life.soft_deleted && st.life.refs == 0
            })
            .cloned()
            .collect();
        while let Some(stream) = orphans.pop() {
            stream.lock().life.removed = true;
            let db = &self.shard(&stream.name).db;
            remove_rows(db, &stream).map_err(layout::redb_io)?;
            let shard = self.shard(&stream.name);
            shard
                .map
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&stream.name);
            tracing::info!(stream = %stream.name, "removed a deleted stream whose last fork is gone");
            if let Some(source) = stream.fork.as_ref().and_then(|f| self.get(&f.link.source)) {
                let mut st = source.lock();
                st.life.refs = st.life.refs.saturating_sub(1);
                if st.life.refs == 0 && st.life.soft_deleted && !st.life.removed {
                    drop(st);
                    orphans.push(source);
                }
            }
        }
        Ok(())
    }

    /// Deletes a stream already marked removed, in one transaction: its name, metadata, tail,
    /// producers and data. Then forgets it and wakes its readers. Call under `writes`.
    async fn remove_committed(self: Arc<Self>, stream: Arc<AcidStream>) -> Result<()> {
        let inner = self.clone();
        let task_stream = stream.clone();
        let result = tokio::task::spawn_blocking(move || {
            let removed = remove_rows(&inner.shard(&task_stream.name).db, &task_stream);
            if removed.is_ok() {
                // Committed: from here on the stream is gone for everyone.
                Removing::settle(
                    &mut task_stream.lock().life.removing,
                    &Ok(()),
                    &inner.dropped_answer(),
                );
            }
            removed
        })
        .await
        .map_err(|e| Error::Storage(format!("delete task failed: {e}")))?;
        if let Err(e) = &result {
            self.poison("deleting a stream", e);
        }
        {
            let shard = self.shard(&stream.name);
            let mut map = shard.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.get(&stream.name).is_some_and(|s| s.id == stream.id) {
                map.remove(&stream.name);
            }
        }
        let outcome = if result.is_ok() { Ok(()) } else { Err(Error::Unavailable(POISONED)) };
        let mut st = stream.lock();
        Removing::settle(&mut st.life.removing, &outcome, &self.dropped_answer());
        stream.publish(&st);
        drop(st);
        result.map_err(|e| storage("deleting a stream", e))
    }

    /// A chunk of a stream's own rows in `start..end` (a redb read transaction on a blocking
    /// thread): whole appends while they fit in `max`, else the first cut by the stream's
    /// rule, or with `whole` nothing.
    async fn read_own(
        self: &Arc<Self>,
        stream: &Arc<AcidStream>,
        start: u64,
        end: u64,
        max: usize,
        whole: bool,
    ) -> Result<(Vec<Bytes>, u64)> {
        if start == end {
            return Ok((Vec::new(), start));
        }
        let json = stream.meta.content_type.is_json();
        let (task_inner, task_stream) = (self.clone(), stream.clone());
        let units = tokio::task::spawn_blocking(move || {
            let db = &task_inner.shard(&task_stream.name).db;
            read_units(db, task_stream.id, start, end, max, json)
        })
        .await
        .map_err(|e| Error::Storage(format!("read task failed: {e}")))??;
        let split = if whole { None } else { Some(Split::for_type(&stream.meta.content_type)) };
        let units = units.into_iter().map(|u| (u.pos, Bytes::from(u.bytes))).collect();
        Ok(chunk_of(units, start, max, split))
    }

    /// One round of a shard's committer: every queued stream's batch in one transaction.
    ///
    /// A stream removed before the transaction began is skipped (its appends get 404 once the
    /// removal is committed, or its failure); one
    /// removed after is deleted by a transaction that runs after this one. A failed
    /// transaction poisons the store: nothing of the round is acknowledged, nor after it.
    fn commit_round(&self, index: usize, streams: Vec<Arc<AcidStream>>) {
        let shard = &self.shards[index];
        let mut work = Vec::with_capacity(streams.len());
        for stream in streams {
            let (batch, waiters) = {
                let mut st = stream.lock();
                (std::mem::take(&mut st.batch), std::mem::take(&mut st.waiters))
            };
            work.push((stream, batch, waiters));
        }
        let started = std::time::Instant::now();
        let outcome = if self.poisoned.load(Ordering::Relaxed) {
            Err(Error::Unavailable(POISONED))
        } else {
            self.write_round(&shard.db, &work).map_err(|e| {
                self.poison("committing appends", &e);
                Error::Unavailable(POISONED)
            })
        };
        if let Ok(skipped) = &outcome {
            // Appends written; a round of only duplicates, or of removed streams, wrote
            // nothing and is no commit.
            let appends: usize = work
                .iter()
                .enumerate()
                .filter(|(i, _)| !skipped.contains(i))
                .map(|(_, (_, batch, _))| batch.len())
                .sum();
            if appends > 0 {
                self.stats.round(appends, started.elapsed());
            }
        }
        for (i, (stream, batch, waiters)) in work.into_iter().enumerate() {
            match &outcome {
                Err(e) => fail(waiters, e),
                Ok(skipped) if skipped.contains(&i) => {
                    // Never written: 404, once the removal is durable.
                    let settled = self.dropped_answer();
                    Removing::drop_batch(&mut stream.lock().life.removing, waiters, &settled);
                }
                Ok(_) => make_visible(&stream, batch, waiters),
            }
            self.finish(index, stream);
        }
    }

    /// Writes a round's batches in one transaction and commits it; returns the indexes of the
    /// streams skipped because they were removed.
    fn write_round(
        &self,
        db: &Database,
        work: &[RoundWork],
    ) -> std::result::Result<Vec<usize>, redb::Error> {
        let txn = db.begin_write()?;
        let mut skipped = Vec::new();
        let mut wrote = false;
        {
            let mut data = txn.open_table(DATA)?;
            let mut tails = txn.open_table(TAILS)?;
            let mut producers = txn.open_table(PRODUCERS)?;
            for (i, (stream, batch, _)) in work.iter().enumerate() {
                // Checked once this transaction holds the shard's write lock: a delete that
                // committed before it is seen here.
                let (mut writer, mut end, mut records) = {
                    let st = stream.lock();
                    if st.life.removed {
                        skipped.push(i);
                        continue;
                    }
                    (st.durable.clone(), st.visible_end, st.visible_records)
                };
                if batch.is_empty() {
                    continue;
                }
                wrote = true;
                for p in batch {
                    if !p.payload.is_empty() {
                        for (at, value) in tables::encode_rows(p.lens.as_deref(), &p.payload) {
                            data.insert((stream.id, p.pos + at), value.as_slice())?;
                        }
                        end = p.pos + p.payload.len() as u64;
                        records += 1;
                    }
                    if let Some((id, claim)) = &p.effect.producer {
                        producers.insert((stream.id, id.as_ref()), (claim.epoch, claim.seq))?;
                    }
                    p.effect.replay(&mut writer);
                }
                let row = TailRow {
                    end,
                    records,
                    closed: writer.closed,
                    closed_by: writer.closed_by,
                    stream_seq: writer.last_stream_seq,
                };
                tails.insert(stream.id, row.encode().as_slice())?;
            }
        }
        if wrote {
            txn.commit()?;
        } else {
            // Only duplicates waited: what they duplicate is committed already.
            txn.abort()?;
        }
        Ok(skipped)
    }

    /// After a stream's batch is done: queue it again if more arrived, else mark it idle.
    fn finish(&self, index: usize, stream: Arc<AcidStream>) {
        let more = {
            let mut st = stream.lock();
            let more = !st.batch.is_empty() || !st.waiters.is_empty();
            st.committing = more;
            more
        };
        if more {
            self.shards[index].committer.enqueue(stream);
        }
    }
}

fn make_visible(
    stream: &AcidStream,
    batch: Vec<Pending>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
) {
    {
        let mut st = stream.lock();
        let keep_recent = stream.has_watchers();
        if !keep_recent {
            st.recent.clear();
            st.recent_bytes = 0;
        }
        for p in batch {
            p.effect.replay(&mut st.durable);
            if !p.payload.is_empty() {
                st.visible_end = p.pos + p.payload.len() as u64;
                st.visible_records += 1;
                if keep_recent {
                    st.recent_bytes += p.payload.len();
                    let lens = p.lens.map(Arc::from);
                    st.recent.push_back(Recent { pos: p.pos, payload: p.payload, lens });
                }
            }
        }
        while st.recent_bytes > RECENT_BYTES_MAX && st.recent.len() > 1 {
            if let Some(old) = st.recent.pop_front() {
                st.recent_bytes -= old.payload.len();
            }
        }
    }
    // Acknowledge before waking live readers (see the file log's `make_visible`).
    for w in waiters {
        let _ = w.send(Ok(()));
    }
    stream.publish(&stream.lock());
}

/// Reads the units of `start..end` a chunk of `max` bytes may take, in one read transaction.
fn read_units(
    db: &Database,
    id: u64,
    start: u64,
    end: u64,
    max: usize,
    json: bool,
) -> Result<Vec<Unit>> {
    let redb = |e: redb::Error| storage("reading", e);
    let txn = db.begin_read().map_err(|e| redb(e.into()))?;
    let data = txn.open_table(DATA).map_err(|e| redb(e.into()))?;
    let mut units = Vec::new();
    let mut taken = 0usize;
    let mut rows = data.range((id, 0)..=(id, start)).map_err(|e| redb(e.into()))?;
    // The append holding `start`: the last one starting at or before it.
    let Some(first) = rows.next_back() else {
        // No rows below a visible tail: deleted while this read was on its way.
        return Err(Error::NotFound);
    };
    drop(rows);
    let (key, value) = first.map_err(|e| redb(e.into()))?;
    let next = push_units(&mut units, &mut taken, key.value().1, value.value(), Some(start), json)?;
    if next <= start {
        return Err(Error::NotFound);
    }
    // Rows until the units hold more than `max` bytes: a unit that then ends within the chunk
    // is complete (an append's last row is loaded), and one that goes past it is cut.
    if taken <= max && next < end {
        for row in data.range((id, next)..(id, end)).map_err(|e| redb(e.into()))? {
            let (key, value) = row.map_err(|e| redb(e.into()))?;
            push_units(&mut units, &mut taken, key.value().1, value.value(), None, json)?;
            if taken > max {
                break;
            }
        }
    }
    Ok(units)
}

/// Splits one data row (at `pos`) into units, from `from` if given (which must be a message
/// boundary in JSON streams), or adds it to the last unit if it continues that append;
/// returns the position after the row.
fn push_units(
    units: &mut Vec<Unit>,
    taken: &mut usize,
    pos: u64,
    value: &[u8],
    from: Option<u64>,
    json: bool,
) -> Result<u64> {
    let damaged = || Error::Storage(format!("damaged data row at offset {pos}"));
    let head = tables::decode_record(value).ok_or_else(damaged)?;
    let payload = &value[head.payload_at..];
    let row_end = pos + payload.len() as u64;
    let from = from.unwrap_or(pos);
    if from >= row_end {
        return Ok(row_end);
    }
    let skip = (from - pos) as usize;
    if head.continues
        && let Some(last) = units.last_mut()
        && last.pos + last.bytes.len() as u64 == pos
    {
        last.bytes.extend_from_slice(payload);
        *taken += payload.len();
        return Ok(row_end);
    }
    match (head.lens, json) {
        (Some(lens), true) => {
            let mut off = 0usize;
            for len in lens {
                let len = len as usize;
                if off >= skip {
                    units.push(Unit {
                        pos: pos + off as u64,
                        bytes: payload[off..off + len].to_vec(),
                    });
                    *taken += len;
                } else if off + len > skip {
                    return Err(Error::OffsetUnknown);
                }
                off += len;
            }
        }
        (None, false) => {
            units.push(Unit { pos: from, bytes: payload[skip..].to_vec() });
            *taken += payload.len() - skip;
        }
        _ => return Err(damaged()),
    }
    Ok(row_end)
}

/// The chunk a read from `start` returns, as in the memory store: whole units while they fit
/// in `max` bytes; else the first unit, cut at `max` (or at a character boundary for text,
/// or whole for a JSON message); with no `split`, only whole units.
fn chunk_of(
    units: Vec<(u64, Bytes)>,
    start: u64,
    max: usize,
    split: Option<Split>,
) -> (Vec<Bytes>, u64) {
    let limit = start.saturating_add(max.max(1) as u64);
    let mut parts = Vec::new();
    let mut next = start;
    for (pos, mut bytes) in units {
        let unit_end = pos + bytes.len() as u64;
        if unit_end <= limit {
            next = unit_end;
            parts.push(bytes);
            continue;
        }
        if parts.is_empty() {
            let want = (limit - pos) as usize;
            let take = match split {
                // Only whole units: none fits.
                None => break,
                Some(Split::Never) => bytes.len(),
                Some(Split::Bytes) => want,
                Some(Split::Utf8) => utf8_cut(&bytes, want),
            };
            next = pos + take as u64;
            bytes.truncate(take);
            parts.push(bytes);
        }
        break;
    }
    (parts, next)
}

/// The units a read from `start` needs, from the recent appends, as [`read_units`] would
/// load them from redb (until they hold more than `max` bytes); `None` when `start` is not
/// in the cache, or not where a read may start (then redb answers, with its own error).
fn recent_units(
    recent: &VecDeque<Recent>,
    start: u64,
    max: usize,
    json: bool,
) -> Option<Vec<(u64, Bytes)>> {
    let first = recent.partition_point(|r| r.pos + r.payload.len() as u64 <= start);
    if recent.get(first)?.pos > start {
        return None;
    }
    let mut units = Vec::new();
    let mut taken = 0usize;
    for r in recent.iter().skip(first) {
        let skip = usize::try_from(start.saturating_sub(r.pos)).ok()?;
        match (&r.lens, json) {
            (Some(lens), true) => {
                let mut off = 0usize;
                for &len in lens.iter() {
                    let len = len as usize;
                    if off >= skip {
                        units.push((r.pos + off as u64, r.payload.slice(off..off + len)));
                        taken += len;
                    } else if off + len > skip {
                        return None;
                    }
                    off += len;
                }
            }
            (None, false) => {
                units.push((r.pos + skip as u64, r.payload.slice(skip..)));
                taken += r.payload.len() - skip;
            }
            _ => return None,
        }
        if taken > max {
            break;
        }
    }
    Some(units)
}

lifecycle::life_stream!(AcidStream, StreamState);

impl Backend for Inner {
    type Stream = AcidStream;

    fn get(&self, name: &str) -> Option<Arc<AcidStream>> {
        let map = self.shard(name).map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(name).cloned()
    }

    fn writes(&self, name: &str) -> &tokio::sync::Mutex<()> {
        &self.shard(name).writes
    }

    fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Commits a new stream (or fork) and adds it to the shard's map.
    async fn insert_new(
        self: &Arc<Self>,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> Result<Created> {
        let inner = self;
        let index = inner.shard_index(name);
        let shard = &inner.shards[index];
        inner.writable()?;
        let len = payload.len();
        if len > inner.limits.max_stream_bytes {
            return Err(Error::StreamTooLarge { limit_bytes: inner.limits.max_stream_bytes });
        }
        let meta = Meta {
            incarnation: inner.next_incarnation.fetch_add(1, Ordering::Relaxed),
            created_ms: now,
            expiry: req.expiry,
            content_type: req.content_type.clone(),
            name: name.to_owned(),
            fork: None,
        };
        // Taken for good even if this create fails: ids may have gaps, never repeats.
        let id = shard.next_id.fetch_add(1, Ordering::Relaxed);
        let records = u64::from(!payload.is_empty());
        // A fork's own data starts where it diverges from its source.
        let base = fork.map_or(0, |f| f.link.at);
        let end = base + len;
        let tail = TailRow { end, records, closed: req.closed, ..TailRow::default() };
        let fork_row = fork.map(tables::encode_fork);
        let lens = payload.message_lens(req.content_type.is_json());
        let rows = if payload.is_empty() {
            Vec::new()
        } else {
            tables::encode_rows(lens.as_deref(), payload.bytes())
        };
        let task_inner = inner.clone();
        let (task_name, meta_bytes) = (name.to_owned(), meta.encode());
        let committed = tokio::task::spawn_blocking(move || {
            let txn = task_inner.shards[index].db.begin_write()?;
            {
                txn.open_table(NAMES)?.insert(task_name.as_str(), id)?;
                txn.open_table(META)?.insert(id, meta_bytes.as_slice())?;
                txn.open_table(TAILS)?.insert(id, tail.encode().as_slice())?;
                let mut data = txn.open_table(DATA)?;
                for (at, value) in &rows {
                    data.insert((id, base + *at), value.as_slice())?;
                }
                if let Some(link) = &fork_row {
                    txn.open_table(FORKS)?.insert(id, link.as_slice())?;
                }
                let mut counters = txn.open_table(COUNTERS)?;
                let stored = counters.get(NEXT_STREAM_ID)?.map_or(1, |v| v.value());
                counters.insert(NEXT_STREAM_ID, stored.max(id + 1))?;
            }
            txn.commit()?;
            Ok::<(), redb::Error>(())
        })
        .await
        .map_err(|e| Error::Storage(format!("create task failed: {e}")))?;
        if let Err(e) = committed {
            inner.poison("creating a stream", &e);
            return Err(storage("creating a stream", e));
        }
        let writer = WriterState { closed: req.closed, ..WriterState::default() };
        let state = StreamState::at(end, records, writer);
        let stream = Arc::new(AcidStream::new(id, meta, fork.cloned(), state, now));
        let info = stream.info(&stream.lock());
        shard
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(stream.name.clone(), stream);
        Ok(Created::New(info))
    }

    async fn remove(self: Arc<Self>, stream: Arc<AcidStream>) -> Result<()> {
        self.remove_committed(stream).await
    }

    /// The `soft_deleted` row of a soft delete, committed.
    async fn mark_soft_deleted(
        self: Arc<Self>,
        stream: Arc<AcidStream>,
        now: UnixMs,
    ) -> Result<()> {
        let inner = self.clone();
        let task_stream = stream.clone();
        let marked = tokio::task::spawn_blocking(move || {
            let db = &inner.shard(&task_stream.name).db;
            let txn = db.begin_write()?;
            txn.open_table(SOFT_DELETED)?.insert(task_stream.id, now)?;
            txn.commit()?;
            Ok::<(), redb::Error>(())
        })
        .await;
        match marked {
            Err(e) => Err(Error::Storage(format!("delete task failed: {e}"))),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.poison("soft-deleting a stream", &e);
                Err(storage("soft-deleting a stream", e))
            }
        }
    }
}

impl Store for AcidStore {
    async fn create(
        &self,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> Result<Created> {
        lifecycle::create(&self.inner, name, req, payload, fork, now).await
    }

    fn append(
        &self,
        name: &str,
        req: &AppendRequest,
        payload: Result<Payload>,
        now: UnixMs,
    ) -> Result<AppendTicket> {
        let inner = &self.inner;
        inner.writable()?;
        let stream = lifecycle::live(inner, name, now)?;
        let (waiter, outcome, lead) = {
            let mut st = stream.lock();
            if st.life.removed {
                // A 404 must not rest on a delete a crash can still undo: wait for it.
                return Removing::refuse(&mut st.life.removing, Error::NotFound);
            }
            if st.life.soft_deleting {
                return Removing::refuse(&mut st.life.removing, Error::Gone);
            }
            inner.writable()?;
            let tail = stream.lineage.at(st.accepted_end);
            let outcome = (|| -> Result<Appended> {
                let plan = rules::plan_append(
                    &st.accepted,
                    &stream.meta.content_type,
                    tail,
                    req,
                    &payload,
                )?;
                Ok(match plan {
                    Plan::Duplicate { producer } => {
                        Appended::duplicate(tail, st.accepted.closed, producer)
                    }
                    Plan::Write { close } => {
                        let payload = payload.unwrap_or_default();
                        let pos = st.accepted_end;
                        // Every check before anything is queued: a refusal leaves no trace.
                        let limit = inner.limits.max_stream_bytes;
                        if pos + payload.len() > limit {
                            return Err(Error::StreamTooLarge { limit_bytes: limit });
                        }
                        let lens = payload.message_lens(stream.meta.content_type.is_json());
                        st.batch.push(Pending {
                            pos,
                            payload: payload.bytes().clone(),
                            lens,
                            effect: Effect::of_request(req, close),
                        });
                        st.accepted_end += payload.len();
                        let kind = st.accepted.apply(req, close, !payload.is_empty());
                        stream.touch(now);
                        Appended {
                            kind,
                            start: tail,
                            tail: stream.lineage.at(st.accepted_end),
                            closed: st.accepted.closed,
                            producer: req.producer.as_ref().map(|p| p.claim),
                        }
                    }
                })
            })();
            if rules::answer_now(&outcome, !st.committing && st.batch.is_empty()) {
                return outcome.map(AppendTicket::done);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push(tx);
            let lead = !st.committing;
            st.committing = true;
            (rx, outcome, lead)
        };
        if lead {
            inner.shard(name).committer.enqueue(stream.clone());
        }
        Ok(AppendTicket::pending(outcome, waiter))
    }

    async fn read(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
        now: UnixMs,
    ) -> Result<ReadChunk> {
        let inner = &self.inner;
        let stream = lifecycle::live(inner, name, now)?;
        stream.touch(now);
        let json = stream.meta.content_type.is_json();
        let (info, start, cached) = {
            let st = stream.lock();
            if st.gone() {
                return Err(Error::NotFound);
            }
            let end = st.visible_end;
            let start = match from {
                ReadFrom::Start => 0,
                ReadFrom::Tail => end,
                ReadFrom::At(o) if o.sub() != 0 => return Err(Error::OffsetUnknown),
                ReadFrom::At(o) if o.pos() > end => return Err(Error::OffsetBeyondTail),
                ReadFrom::At(o) => o.pos(),
            };
            let cached = (start < end).then(|| recent_units(&st.recent, start, max_bytes, json));
            (stream.info(&st), start, cached.flatten())
        };
        let end = info.tail.pos();
        let at = Offset::at(start);
        if let Some(units) = cached {
            let split = Some(Split::for_type(&stream.meta.content_type));
            let (parts, next) = chunk_of(units, start, max_bytes, split);
            let up_to_date = next == end;
            return Ok(ReadChunk { info, start: at, next: Offset::at(next), parts, up_to_date });
        }
        if start < stream.base() {
            // Inherited data: the engine reads it from the source.
            return Ok(ReadChunk {
                info,
                start: at,
                next: at,
                parts: Vec::new(),
                up_to_date: false,
            });
        }
        let (parts, next) = inner.read_own(&stream, start, end, max_bytes, false).await?;
        if stream.lock().gone() {
            // Its removal committed while the read ran: what it read may be missing rows.
            return Err(Error::NotFound);
        }
        Ok(ReadChunk { info, start: at, next: Offset::at(next), parts, up_to_date: next == end })
    }

    async fn read_range(
        &self,
        name: &str,
        from: Offset,
        end: u64,
        max_bytes: usize,
        whole: bool,
    ) -> Result<RangeRead> {
        let inner = &self.inner;
        let stream = inner.get(name).ok_or(Error::NotFound)?;
        let visible = {
            let st = stream.lock();
            if st.life.removed {
                return Err(Error::NotFound);
            }
            st.visible_end
        };
        if from.sub() != 0 {
            return Err(Error::OffsetUnknown);
        }
        let start = from.pos();
        if start < stream.base() {
            let fork = stream.fork.as_ref().map(|f| f.link.clone());
            return Ok(RangeRead { parts: Vec::new(), next: from, fork, lineage: stream.lineage });
        }
        let end = end.min(visible);
        if start > end {
            return Err(Error::OffsetBeyondTail);
        }
        let (parts, next) = inner.read_own(&stream, start, end, max_bytes, whole).await?;
        Ok(RangeRead { parts, next: Offset::at(next), fork: None, lineage: stream.lineage })
    }

    fn head(&self, name: &str, now: UnixMs) -> Result<StreamInfo> {
        lifecycle::head(&self.inner, name, now)
    }

    async fn delete(&self, name: &str, now: UnixMs) -> Result<u64> {
        lifecycle::delete(&self.inner, name, now).await
    }

    fn subscribe(&self, name: &str, now: UnixMs) -> Result<(StreamInfo, TailWatch)> {
        lifecycle::subscribe(&self.inner, name, now)
    }

    async fn expire(&self, name: &str, incarnation: u64, now: UnixMs) -> ExpiryCheck {
        lifecycle::expire(&self.inner, name, incarnation, now).await
    }

    fn touch(&self, name: &str, now: UnixMs) {
        lifecycle::touch(self.inner.as_ref(), name, now);
    }

    fn names(&self, prefix: &str) -> Vec<Arc<str>> {
        crate::store::names_in(self.inner.shards.iter().map(|s| &s.map), prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(parts: &[(u64, &'static [u8])]) -> Vec<(u64, Bytes)> {
        parts.iter().map(|(pos, b)| (*pos, Bytes::from_static(b))).collect()
    }

    #[test]
    fn chunks_take_whole_units_while_they_fit() {
        let (parts, next) =
            chunk_of(units(&[(0, b"ab"), (2, b"cd"), (4, b"ef")]), 0, 5, Some(Split::Bytes));
        assert_eq!((parts.len(), next), (2, 4));
    }

    #[test]
    fn a_first_unit_too_large_is_cut_by_the_split_rule() {
        let big = || units(&[(3, "aé€z".as_bytes())]);
        assert_eq!(chunk_of(big(), 3, 2, Some(Split::Bytes)).1, 5);
        // "a" + the first byte of "é": moved back to the character boundary.
        assert_eq!(chunk_of(big(), 3, 2, Some(Split::Utf8)).1, 4);
        assert_eq!(chunk_of(big(), 3, 2, Some(Split::Never)).1, 3 + "aé€z".len() as u64);
        assert_eq!(chunk_of(big(), 3, 2, None).1, 3, "whole units only: none fits");
    }

    #[test]
    fn json_rows_split_at_message_boundaries_only() {
        let row = tables::encode_record(Some(&[2, 3]), b"1,22,");
        let (mut out, mut taken) = (Vec::new(), 0);
        assert_eq!(push_units(&mut out, &mut taken, 10, &row, Some(12), true).unwrap(), 15);
        assert_eq!((out.len(), out[0].pos, taken), (1, 12, 3));
        let err = push_units(&mut Vec::new(), &mut 0, 10, &row, Some(11), true).err();
        assert_eq!(err, Some(Error::OffsetUnknown));
    }
}
