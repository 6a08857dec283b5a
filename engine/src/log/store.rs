//! [`FileStore`]: the `file-fast` and `file-durable` modes. One append log per stream, plus its
//! metadata and checkpoint side files, all in the data directory (layout in `FORMAT.md`).
//!
//! Write path (group commit). An append validates against the stream's *accepted* state
//! under the stream's lock, encodes its record into the stream's pending batch, and waits.
//! The first appender to find no commit pending queues the stream for the committer thread.
//! Each round the committer takes every queued stream's batch, writes each with one `pwrite`
//! and then, in `file-durable`, makes them all durable with one sync: `fdatasync` when one
//! stream is in the round, `syncfs` (one call for the whole file system) when several are.
//! Only then are the records made *visible* (readers, live subscribers) and their appends
//! acknowledged. Appends arriving meanwhile form the next batches and share the next sync,
//! within a stream and across streams. Appenders never wait on another stream's lock.
//!
//! A failed write or sync (of a log, a checkpoint or the directory) poisons the store: every
//! later write gets [`Error::Unavailable`] until restart (recovery then cuts whatever was
//! torn). A sync is never retried, since after a failed `fsync` the kernel may have dropped
//! the dirty pages. A failure to open a file only fails the requests that needed it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::chunk::{Piece, Split, assemble, sub_to_bytes, utf8_cut};
use crate::clock::UnixMs;
use crate::commit_queue::{CommitQueue, CommitterThreads};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::fs::{self, Failed, Fs, FsFile, OpenMode};
use crate::lifecycle::{self, Backend, Life, POISONED};
use crate::log::frame::{self, Decoded, FILE_HEADER_LEN, FileHeader, Kind, Record};
use crate::log::handles::{Handles, log_name};
use crate::log::journal::{self, Journal};
use crate::log::meta::Checkpoint;
use crate::meta::Meta;
use crate::notify::TailWatch;
use crate::offset::{Offset, ReadFrom};
use crate::payload::Payload;
use crate::producer::ProducerClaim;
use crate::rules::{self, Effect, Plan, WriterState};
use crate::stats::CommitStats;
use crate::store::{
    AppendRequest, AppendTicket, Appended, CreateRequest, Created, ExpiryCheck, ForkOf, RangeRead,
    ReadChunk, Store, StreamInfo,
};
use crate::stream_core::{Removing, StreamCore};

/// What an acknowledged write survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `file-fast`: written to the page cache before the acknowledgement; survives the death
    /// of the process, not of the machine.
    ProcessCrash,
    /// `file-durable`: covered by an `fdatasync` before the acknowledgement; survives power
    /// loss.
    PowerLoss,
}

impl Durability {
    pub(crate) fn syncs(self) -> bool {
        self == Durability::PowerLoss
    }
}

/// A checkpoint is written once the log has grown this much since the last one, so that
/// recovery never reads more than this much of any log.
pub const CHECKPOINT_EVERY_BYTES: u64 = 4 << 20;
/// Most recently committed records kept in memory per stream while live readers watch it.
const RECENT_BYTES_MAX: usize = 256 * 1024;
/// Extra bytes read past a chunk's size, so that the frames around it decode in one read.
const READ_SLACK_BYTES: u64 = 64 * 1024;
const MAP_SHARDS: usize = 64;

/// File name of a stream's metadata.
#[must_use]
pub fn meta_name(incarnation: u64) -> String {
    format!("{incarnation:016x}.meta")
}

/// File name of a stream's soft-delete mark: present while the stream is deleted but forks
/// still read it.
#[must_use]
pub fn gone_name(incarnation: u64) -> String {
    format!("{incarnation:016x}.gone")
}

/// File name of the cut list (`meta::Cut`), present only after a failed commit.
pub const CUT_NAME: &str = "CUT";

/// File name of a stream's checkpoint.
#[must_use]
pub fn ckpt_name(incarnation: u64) -> String {
    format!("{incarnation:016x}.ckpt")
}

/// The file store. Cloning shares it; the committer thread stops when the last clone drops.
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
    _committer: Arc<CommitterThreads>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.inner.dir)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) dir: PathBuf,
    pub(crate) durability: Durability,
    limits: Limits,
    shards: Box<[Shard]>,
    pub(crate) handles: Handles,
    next_incarnation: AtomicU64,
    poisoned: AtomicBool,
    committer: CommitQueue<Arc<FileStream>>,
    /// Everything this process has put in the cut list (`CUT` holds all of it).
    cuts: Mutex<Vec<(u64, u64)>>,
    /// `file-durable` with a journal: what makes commit rounds durable.
    journal: Option<Journal>,
    /// Where commit rounds are counted (the server's metrics).
    stats: Arc<CommitStats>,
}

/// What recovery hands to the store it opens.
pub(crate) struct Recovered {
    pub(crate) streams: Vec<Arc<FileStream>>,
    pub(crate) next_incarnation: u64,
    pub(crate) journal: Option<Journal>,
}

#[derive(Default)]
struct Shard {
    map: RwLock<HashMap<Arc<str>, Arc<FileStream>>>,
    /// Serialises creates, deletes and expiry removals of the shard's names.
    writes: tokio::sync::Mutex<()>,
}

/// One stream.
pub(crate) struct FileStream {
    core: StreamCore,
    /// Offset-space position of the first record.
    pub(crate) base: u64,
    state: Mutex<StreamState>,
}

impl std::ops::Deref for FileStream {
    type Target = StreamCore;

    fn deref(&self) -> &StreamCore {
        &self.core
    }
}

/// A stream's state; see the module docs for *accepted* and *visible*.
#[derive(Default)]
pub(crate) struct StreamState {
    /// Removal, soft deletion and fork references (the shared lifecycle).
    pub(crate) life: Life,
    /// Mid-file corruption found at recovery: serve what is before it, refuse writes.
    damaged: Option<Arc<str>>,
    accepted: WriterState,
    accepted_end: u64,
    pub(crate) visible_end: u64,
    pub(crate) durable: WriterState,
    pub(crate) visible_records: u64,
    ckpt_position: u64,
    /// The last access recorded in the stream's last checkpoint.
    ckpt_last_access: UnixMs,
    batch: Batch,
    committing: bool,
    recent: VecDeque<Piece>,
    recent_bytes: usize,
    /// Records before this position have had their CRC checked by this process, or were
    /// written by it: reads serve them without checking again (below the stream's base it
    /// means nothing is checked yet).
    verified_end: u64,
}

impl StreamState {
    /// Deleted for good: the removal is durable.
    fn gone(&self) -> bool {
        self.life.gone()
    }
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    records: Vec<BatchRecord>,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

struct BatchRecord {
    pos: u64,
    end: u64,
    payload: Range<usize>,
    lens: Option<Arc<[u32]>>,
    effect: Effect,
}

/// What a log record changes in the writer state.
pub(crate) fn effect_of(record: &Record<'_>) -> Effect {
    Effect {
        producer: record.producer.as_ref().map(|(id, epoch, seq)| {
            (Arc::from(id.as_ref()), ProducerClaim { epoch: *epoch, seq: *seq })
        }),
        stream_seq: record.stream_seq.map(Bytes::copy_from_slice),
        closes: record.closes,
    }
}

/// Answers every waiter of a batch with `error`.
fn fail(batch: Batch, error: &Error) {
    for w in batch.waiters {
        let _ = w.send(Err(error.clone()));
    }
}

fn io_error(context: &str, e: &io::Error) -> Error {
    Error::Storage(format!("{context}: {e}"))
}

fn lock(state: &Mutex<StreamState>) -> MutexGuard<'_, StreamState> {
    // Every check runs before any change, and changes only add; a panic mid-way leaves a
    // consistent state, so a poisoned lock is safe to take.
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FileStream {
    pub(crate) fn new(
        meta: Meta,
        base: u64,
        state: StreamState,
        last_access_ms: UnixMs,
    ) -> FileStream {
        let fork = meta.fork.clone();
        let core =
            StreamCore::new(meta, fork, state.visible_end, state.durable.closed, last_access_ms);
        FileStream { core, base, state: Mutex::new(state) }
    }

    /// File position of an offset-space position.
    fn file_pos(&self, pos: u64) -> u64 {
        pos - self.base + FILE_HEADER_LEN as u64
    }

    fn info(&self, st: &StreamState) -> StreamInfo {
        self.core.info(st.visible_end, st.durable.closed)
    }

    fn publish(&self, st: &StreamState) {
        self.core.publish(st.visible_end, st.durable.closed, st.life.removed);
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StreamState> {
        lock(&self.state)
    }
}

impl StreamState {
    /// A stream whose log ends at `end`, with `writer` as its state there.
    pub(crate) fn recovered(
        end: u64,
        writer: WriterState,
        records: u64,
        ckpt_position: u64,
    ) -> StreamState {
        StreamState {
            accepted: writer.clone(),
            accepted_end: end,
            visible_end: end,
            durable: writer,
            visible_records: records,
            ckpt_position,
            ..StreamState::default()
        }
    }

    pub(crate) fn mark_damaged(&mut self, why: &str) {
        self.damaged = Some(Arc::from(why));
    }
}

impl FileStore {
    pub(crate) fn from_parts(
        fs: Arc<dyn Fs>,
        dir: PathBuf,
        durability: Durability,
        limits: Limits,
        max_open_files: usize,
        recovered: Recovered,
        stats: Arc<CommitStats>,
    ) -> io::Result<FileStore> {
        let Recovered { streams, next_incarnation, journal } = recovered;
        let inner = Inner {
            journal,
            handles: Handles::new(fs.clone(), dir.clone(), max_open_files),
            fs,
            dir,
            durability,
            limits,
            shards: (0..MAP_SHARDS).map(|_| Shard::default()).collect(),
            next_incarnation: AtomicU64::new(next_incarnation),
            poisoned: AtomicBool::new(false),
            committer: CommitQueue::default(),
            cuts: Mutex::new(Vec::new()),
            stats,
        };
        for stream in streams {
            let shard = inner.shard(&stream.name);
            let mut map = shard.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.insert(stream.name.clone(), stream);
        }
        let inner = Arc::new(inner);
        let thread_inner = inner.clone();
        let run: Box<dyn FnOnce() + Send> = Box::new(move || {
            while let Some(round) = thread_inner.committer.next_round() {
                let run = std::panic::AssertUnwindSafe(|| thread_inner.commit_round(round));
                if std::panic::catch_unwind(run).is_err() {
                    // The round's appends see their answer dropped (500); stop the rest.
                    let e = io::Error::other("the committer panicked");
                    thread_inner.poison("committing a round", &e);
                }
            }
        });
        let stop_inner = inner.clone();
        let committer = Arc::new(CommitterThreads::spawn(
            vec![run],
            Box::new(move || stop_inner.committer.stop()),
        )?);
        Ok(FileStore { inner, _committer: committer })
    }

    /// Whether a failed write or sync has stopped all writes.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Relaxed)
    }

    /// The data directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Writes a checkpoint of every stream that changed since its last one (position or last
    /// access), and in `file-fast` syncs every log, so that a clean restart reads no log and
    /// loses nothing even to a power cut right after. Waits for running commits first.
    ///
    /// # Errors
    /// The first I/O error; the rest is still attempted.
    pub async fn shutdown(&self) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.checkpoint_all())
            .await
            .map_err(|e| Error::Storage(format!("shutdown task failed: {e}")))?
    }
}

impl Inner {
    fn shard(&self, name: &str) -> &Shard {
        let hash = seahash::hash(name.as_bytes());
        &self.shards[(hash as usize) & (MAP_SHARDS - 1)]
    }

    fn all(&self) -> Vec<Arc<FileStream>> {
        self.shards
            .iter()
            .flat_map(|s| {
                let map = s.map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                map.values().cloned().collect::<Vec<_>>()
            })
            .collect()
    }

    fn poison(&self, context: &str, e: &io::Error) {
        if !self.poisoned.swap(true, Ordering::SeqCst) {
            tracing::error!(
                error = %e,
                context,
                dir = %self.dir.display(),
                "storage write failed: refusing all writes until restart (a failed sync is \
                 never retried; recovery will cut what was not written whole)"
            );
        }
    }

    /// Deletes a stream already marked removed: metadata first (the stream no longer exists
    /// once that removal is durable), then the log, checkpoint and soft-delete mark. Then
    /// forgets it.
    async fn remove_files(self: Arc<Self>, stream: Arc<FileStream>) -> Result<()> {
        let inner = self.clone();
        let inc = stream.incarnation();
        let task_stream = stream.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), (io::Error, Failed)> {
            inner.fs.remove(&inner.dir.join(meta_name(inc))).map_err(|e| (e, Failed::Io))?;
            // Durable before the 204, in both modes: a deleted stream must not come back.
            inner.fs.sync_dir(&inner.dir).map_err(|e| (e, Failed::Sync))?;
            // From here on the stream is gone for everyone, before its files go.
            Removing::settle(&mut task_stream.lock().life.removing, &Ok(()), &inner.dropped_answer());
            for name in [log_name(inc), ckpt_name(inc), gone_name(inc)] {
                match inner.fs.remove(&inner.dir.join(&name)) {
                    // The delete is durable: a file left behind is a leftover that the next
                    // start removes.
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        tracing::warn!(file = %name, error = %e, "could not remove a deleted stream's file");
                    }
                    _ => {}
                }
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err((io::Error::other(format!("delete task failed: {e}")), Failed::Io)));
        match &result {
            Err((e, Failed::Io)) => {
                // The metadata is still there: nothing was deleted. The stream stays, and
                // what waited for the delete gets its failure.
                let error = io_error("deleting stream files", e);
                let mut st = stream.lock();
                st.life.removed = false;
                Removing::settle(
                    &mut st.life.removing,
                    &Err(error.clone()),
                    &self.dropped_answer(),
                );
                return Err(error);
            }
            Err((e, Failed::Sync)) => {
                self.poison("syncing the data directory after a delete", e);
            }
            Ok(()) => {}
        }
        {
            let shard = self.shard(&stream.name);
            let mut map = shard.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.get(&stream.name).is_some_and(|s| s.incarnation() == inc) {
                map.remove(&stream.name);
            }
        }
        self.handles.forget(inc);
        let outcome = if result.is_ok() { Ok(()) } else { Err(Error::Unavailable(POISONED)) };
        let mut st = stream.lock();
        Removing::settle(&mut st.life.removing, &outcome, &self.dropped_answer());
        stream.publish(&st);
        drop(st);
        result.map_err(|(e, _)| io_error("deleting stream files", &e))
    }

    fn check_size(&self, stream: &FileStream, end_after: u64) -> Result<()> {
        if end_after - stream.base > self.limits.max_stream_bytes {
            return Err(Error::StreamTooLarge { limit_bytes: self.limits.max_stream_bytes });
        }
        Ok(())
    }

    /// One round of the committer thread: write every stream's pending batch, make them all
    /// durable with one sync, then make them visible and acknowledge them.
    ///
    /// A stream deleted meanwhile is skipped (its appends get 404 once the delete is durable,
    /// or its failure). A stream whose log cannot
    /// be opened (out of descriptors, say) fails its appends and rolls its accepted state
    /// back, without touching other streams. A failed `pwrite` or sync poisons the store:
    /// nothing of the round is acknowledged, and nothing after it.
    fn commit_round(&self, streams: Vec<Arc<FileStream>>) {
        let mut work: Vec<(Arc<FileStream>, Batch)> = Vec::with_capacity(streams.len());
        for stream in streams {
            let (batch, removed) = {
                let mut st = stream.lock();
                let batch = std::mem::take(&mut st.batch);
                if st.life.removed {
                    // Never written: 404, once the removal is durable.
                    let settled = self.dropped_answer();
                    Removing::drop_batch(&mut st.life.removing, batch.waiters, &settled);
                    (Batch::default(), true)
                } else {
                    (batch, false)
                }
            };
            if removed {
                self.finish(stream);
            } else {
                work.push((stream, batch));
            }
        }
        let mut failure: Option<io::Error> = None;
        let mut written: Vec<Arc<dyn FsFile>> = Vec::new();
        let poisoned = self.poisoned.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        let appends: usize = work.iter().map(|(_, b)| b.records.len()).sum();
        let mut kept = Vec::with_capacity(work.len());
        for (stream, batch) in work {
            if poisoned || failure.is_some() {
                kept.push((stream, batch));
                continue;
            }
            if batch.records.is_empty() {
                kept.push((stream, batch));
                continue;
            }
            let file = match self.handles.get(stream.incarnation()) {
                Ok(file) => file,
                Err(e) => {
                    tracing::error!(stream = %stream.name, error = %e, "cannot open stream log");
                    self.abort_stream(&stream, batch, &io_error("opening the stream log", &e));
                    self.finish(stream);
                    continue;
                }
            };
            let start = batch.records.first().map_or(0, |r| r.pos);
            match file.write_all_at(&batch.bytes, stream.file_pos(start)) {
                Ok(()) => written.push(file),
                Err(e) => failure = Some(e),
            }
            kept.push((stream, batch));
        }
        if failure.is_none()
            && !poisoned
            && self.durability.syncs()
            && !written.is_empty()
            && let Err(e) = self.make_durable(&written, &kept)
        {
            failure = Some(e);
        }
        let wrote = !written.is_empty();
        drop(written);
        if failure.is_none() && !poisoned && wrote {
            self.stats.round(appends, started.elapsed());
        }
        if let Some(e) = &failure {
            self.poison("appending to stream logs", e);
            // The round's requests are answered as failed: their bytes, which may still
            // reach the disk, must not come back after a restart. Recovery cuts each log
            // the round wrote to its length before the round; the list is on disk before
            // any of them is answered.
            let entries = kept
                .iter()
                .filter_map(|(s, b)| {
                    b.records.first().map(|r| (s.incarnation(), s.file_pos(r.pos)))
                })
                .collect();
            self.write_cut(&crate::log::meta::Cut { entries });
        }
        let stopped = failure.is_some() || poisoned;
        for (stream, batch) in kept {
            if stopped {
                // Duplicates waiting on data that never became durable fail with it.
                fail(batch, &Error::Unavailable(POISONED));
            } else {
                self.make_visible(&stream, batch);
            }
            self.finish(stream);
        }
    }

    /// Makes a round's writes (to the logs `written`, the batches in `kept`) durable: one
    /// journal entry and one `fdatasync` of the journal; or, without a journal or for a round
    /// too large for it, the logs' own sync: `fdatasync` of the one log written, `syncfs` for
    /// several.
    fn make_durable(
        &self,
        written: &[Arc<dyn FsFile>],
        kept: &[(Arc<FileStream>, Batch)],
    ) -> io::Result<()> {
        if let Some(journal) = &self.journal {
            let pieces: Vec<journal::Piece<'_>> = kept
                .iter()
                .filter_map(|(s, b)| {
                    let first = b.records.first()?;
                    let pos = s.file_pos(first.pos);
                    Some(journal::Piece { incarnation: s.incarnation(), pos, bytes: &b.bytes })
                })
                .collect();
            if journal.takes(journal::entry_len(pieces.iter().map(|p| p.bytes.len()))) {
                return journal.commit(&pieces, |dirty| self.sync_logs(dirty.iter().copied()));
            }
        }
        match written {
            [one] => one.sync_data(),
            _ => self.sync_logs(kept.iter().map(|(s, _)| s.incarnation())),
        }
    }

    /// Makes every log of the data directory durable: one `syncfs`, or, where `syncfs` cannot
    /// be trusted, an `fdatasync` of each of `incarnations` (the logs written since they last
    /// were; deleted ones are skipped).
    fn sync_logs(&self, incarnations: impl IntoIterator<Item = u64>) -> io::Result<()> {
        self.sync_all_or(|| {
            incarnations.into_iter().try_for_each(|inc| match self.handles.get(inc) {
                Ok(file) => file.sync_data(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            })
        })
    }

    /// One `syncfs` of the data directory's file system, or `each` (an `fdatasync` per file
    /// that needs it) where `syncfs` cannot be trusted.
    fn sync_all_or(&self, each: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        match self.fs.sync_all_files(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => each(),
            other => other,
        }
    }

    /// Writes the cut list after a failed commit, with the mode's durability. If even that
    /// fails, nothing better can be done: the failed requests may come back after a restart.
    fn write_cut(&self, cut: &crate::log::meta::Cut) {
        if cut.entries.is_empty() {
            return;
        }
        // The file holds every cut of this process, not only this one.
        let mut all = self.cuts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.extend_from_slice(&cut.entries);
        let cut = crate::log::meta::Cut { entries: all.clone() };
        let syncs = self.durability.syncs();
        if let Err(e) =
            fs::write_atomic(self.fs.as_ref(), &self.dir, CUT_NAME, &cut.encode(), syncs)
        {
            tracing::error!(error = %e, "could not record the failed commit's cut list; its requests may reappear after a restart");
        }
    }

    /// After a stream's batch is done: queue it again if more arrived, else mark it idle.
    fn finish(&self, stream: Arc<FileStream>) {
        let more = {
            let mut st = stream.lock();
            let more = !st.batch.records.is_empty() || !st.batch.waiters.is_empty();
            st.committing = more;
            more
        };
        if more {
            self.committer.enqueue(stream);
        }
    }

    /// Fails a stream's batch and everything accepted after it, and rolls the accepted state
    /// back to what is durable: later records were positioned after the failed ones.
    fn abort_stream(&self, stream: &FileStream, batch: Batch, error: &Error) {
        let pending = {
            let mut st = stream.lock();
            st.accepted = st.durable.clone();
            st.accepted_end = st.visible_end;
            std::mem::take(&mut st.batch)
        };
        fail(batch, error);
        fail(pending, error);
    }

    fn make_visible(&self, stream: &FileStream, batch: Batch) {
        let bytes = Bytes::from(batch.bytes);
        let checkpoint = {
            let mut st = stream.lock();
            let keep_recent = stream.has_watchers();
            if !keep_recent {
                st.recent.clear();
                st.recent_bytes = 0;
            }
            for r in &batch.records {
                r.effect.replay(&mut st.durable);
                if st.verified_end.max(stream.base) == st.visible_end {
                    // Written by this process from a buffer it checksummed itself.
                    st.verified_end = r.end;
                }
                st.visible_end = r.end;
                st.visible_records += 1;
                if keep_recent {
                    // A slice of a batch of many records would keep the whole batch alive:
                    // copy it out then (records are small when batches hold many).
                    let payload = if batch.records.len() == 1 {
                        bytes.slice(r.payload.clone())
                    } else {
                        Bytes::copy_from_slice(&bytes[r.payload.clone()])
                    };
                    let piece = Piece { pos: r.pos, end: r.end, payload, lens: r.lens.clone() };
                    st.recent_bytes += piece.payload.len();
                    st.recent.push_back(piece);
                }
            }
            while st.recent_bytes > RECENT_BYTES_MAX && st.recent.len() > 1 {
                if let Some(old) = st.recent.pop_front() {
                    st.recent_bytes -= old.payload.len();
                }
            }
            let due =
                !st.life.removed && st.visible_end - st.ckpt_position >= CHECKPOINT_EVERY_BYTES;
            due.then(|| {
                st.ckpt_position = st.visible_end;
                st.ckpt_last_access = stream.last_access_ms();
                checkpoint_of(stream, &st)
            })
        };
        // Acknowledge before waking live readers: the writers' tasks are then queued ahead of
        // a thousand readers' (a writer waits for its answer; a reader only for news). The
        // visible state is already updated, so a writer reads its own append at once.
        for w in batch.waiters {
            let _ = w.send(Ok(()));
        }
        stream.publish(&stream.lock());
        if let Some(ckpt) = checkpoint {
            self.checkpoint_or_poison(&stream.name, &ckpt);
        }
    }

    /// Writes a checkpoint. Losing one only makes recovery read more log, but a failed sync
    /// poisons the store like any other.
    fn checkpoint_or_poison(&self, stream: &str, ckpt: &Checkpoint) {
        let name = ckpt_name(ckpt.incarnation);
        let syncs = self.durability.syncs();
        if !syncs {
            // file-fast syncs nothing else: make the log durable first, so that no checkpoint
            // can outlive (on disk) the records it summarises.
            if let Err(e) = self.handles.get(ckpt.incarnation).and_then(|f| f.sync_data()) {
                tracing::warn!(stream, error = %e, "could not sync a log for its checkpoint");
                return;
            }
        }
        match fs::write_atomic_or_which(self.fs.as_ref(), &self.dir, &name, &ckpt.encode(), syncs) {
            Ok(()) => {}
            Err((e, Failed::Sync)) => self.poison("syncing a checkpoint", &e),
            Err((e, Failed::Io)) => {
                tracing::warn!(stream, error = %e, "could not write checkpoint");
            }
        }
    }

    /// The clean-stop sequence: wait for running commits; make every log durable (one
    /// `syncfs`; `file-durable` logs already are, and with a journal that one `syncfs` lets
    /// the journal start over empty); write a checkpoint for each stream whose
    /// position or last access moved since its last one; make those durable with one more
    /// `syncfs` and the directory sync. Two syncs in all, however many streams.
    fn checkpoint_all(&self) -> Result<()> {
        let streams = self.all();
        for stream in &streams {
            // Let a running commit finish; shutdown comes after the last request.
            for _ in 0..1000 {
                if !stream.lock().committing {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        if self.poisoned.load(Ordering::Relaxed) {
            return Err(Error::Unavailable(POISONED));
        }
        let sync_all = |files: &[Arc<dyn FsFile>]| -> io::Result<()> {
            self.sync_all_or(|| files.iter().try_for_each(|f| f.sync_data()))
        };
        let logs: Vec<Arc<dyn FsFile>> = if self.durability.syncs() {
            Vec::new()
        } else {
            streams.iter().filter_map(|s| self.handles.get(s.incarnation()).ok()).collect()
        };
        if let Some(journal) = &self.journal {
            // The logs durable in themselves, so that the next start replays nothing.
            journal
                .reset(|dirty| self.sync_logs(dirty.iter().copied()))
                .map_err(|e| io_error("resetting the journal", &e))?;
        } else {
            sync_all(&logs).map_err(|e| io_error("syncing the logs", &e))?;
        }
        let mut written = Vec::new();
        for stream in &streams {
            let ckpt = {
                let st = stream.lock();
                let moved = st.visible_end != st.ckpt_position
                    || stream.last_access_ms() != st.ckpt_last_access;
                if st.life.removed || st.damaged.is_some() || !moved {
                    continue;
                }
                checkpoint_of(stream, &st)
            };
            let name = ckpt_name(ckpt.incarnation);
            fs::write_atomic(self.fs.as_ref(), &self.dir, &name, &ckpt.encode(), false)
                .map_err(|e| io_error(&format!("checkpoint of {}", stream.name), &e))?;
            written.push(
                self.fs
                    .open(&self.dir.join(&name), OpenMode::Read)
                    .map_err(|e| io_error("checkpoint", &e))?,
            );
        }
        sync_all(&written).map_err(|e| io_error("syncing checkpoints", &e))?;
        self.fs.sync_dir(&self.dir).map_err(|e| io_error("syncing the data directory", &e))
    }

    /// Reads from the file for a chunk starting at `start`, ending at most at `end`: whole
    /// records (each CRC-checked) until they hold `max` bytes of payload, or, when the first
    /// record alone is larger than the read window, only the part of it the chunk takes (a
    /// record too large to read whole for every chunk; its CRC is not checked then). Runs on a
    /// blocking thread.
    fn read_from_file(
        &self,
        stream: &FileStream,
        start: Offset,
        end: u64,
        max: usize,
        split: Split,
    ) -> Result<FileRead> {
        let file = match self.handles.get(stream.incarnation()) {
            Ok(file) => file,
            // Deleted while this read was on its way.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NotFound),
            Err(e) => return Err(io_error("opening log", &e)),
        };
        let read = |len: u64, at: u64| -> Result<Bytes> {
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
            fs::read_exact_at(file.as_ref(), &mut buf, at)
                .map_err(|e| io_error("reading log", &e))?;
            Ok(Bytes::from(buf))
        };
        let end_file = stream.file_pos(end);
        let at = stream.file_pos(start.pos());
        let window = (end_file - at).min(max as u64 + READ_SLACK_BYTES);
        // Mapped from the page cache when large enough: the payloads sent are then the
        // cached pages themselves, with no copy into a buffer of ours.
        let buf = match usize::try_from(window).ok().and_then(|len| file.map(at, len)) {
            Some(mapped) => mapped,
            None => read(window, at)?,
        };
        let verified = stream.lock().verified_end.max(stream.base);
        let mut pieces = Vec::new();
        let mut taken = 0usize;
        let mut off = 0usize;
        let done = |pieces: Vec<Piece>| {
            // A run of records from a checked position is checked to its end now.
            if let Some(last) = pieces.last()
                && start.pos() <= verified
            {
                let mut st = stream.lock();
                st.verified_end = st.verified_end.max(last.end);
            }
            Ok(FileRead::Pieces(pieces))
        };
        loop {
            let remaining = end_file - at - off as u64;
            let record_at = start_of(stream, at + off as u64);
            let decoded = if record_at < verified {
                frame::decode_trusted(&buf[off..], remaining)
            } else {
                frame::decode(&buf[off..], remaining)
            };
            match decoded {
                Decoded::Record { record, frame_len } => {
                    let payload_at = record.payload.as_ptr() as usize - buf.as_ptr() as usize;
                    let pos = start_of(stream, at + off as u64);
                    let piece = Piece {
                        pos,
                        end: pos + frame_len as u64,
                        payload: buf.slice(payload_at..payload_at + record.payload.len()),
                        lens: record.message_lens.map(Arc::from),
                    };
                    // A chunk starting inside its first record takes only the rest of it.
                    let skip =
                        if pieces.is_empty() { sub_to_bytes(&piece, start.sub())? } else { 0 };
                    taken += piece.payload.len() - skip;
                    pieces.push(piece);
                    off += frame_len;
                    if taken >= max {
                        return done(pieces);
                    }
                }
                Decoded::CleanEnd | Decoded::NeedMore(_) if !pieces.is_empty() => {
                    return done(pieces);
                }
                Decoded::CleanEnd => return done(pieces),
                Decoded::NeedMore(_) => {
                    return self.read_part(stream, start, &buf, remaining, max, split, &read);
                }
                Decoded::TornTail | Decoded::Corrupt
                    if pieces.is_empty() && start.pos() != stream.base =>
                {
                    // Not a record boundary (a made-up offset), or damage right there.
                    return Err(Error::OffsetUnknown);
                }
                Decoded::TornTail | Decoded::Corrupt => {
                    let pos = start_of(stream, at + off as u64);
                    let why = format!("damaged record at offset {pos}, found by a read");
                    stream.lock().mark_damaged(&why);
                    return Err(Error::Storage(format!("stream {}: {why}", stream.name)));
                }
            }
        }
    }

    /// The part of a record larger than the read window that a chunk from `start` takes:
    /// its header is decoded from `buf` (the window), then only that byte range is read.
    #[expect(clippy::too_many_arguments, reason = "one read, split in two for clarity")]
    fn read_part(
        &self,
        stream: &FileStream,
        start: Offset,
        buf: &[u8],
        remaining: u64,
        max: usize,
        split: Split,
        read: &dyn Fn(u64, u64) -> Result<Bytes>,
    ) -> Result<FileRead> {
        let not_a_record = || {
            if start.pos() == stream.base {
                Error::Storage(format!("stream {}: damaged first record", stream.name))
            } else {
                Error::OffsetUnknown
            }
        };
        let head = frame::decode_head(buf, remaining).ok_or_else(not_a_record)?;
        let sub = start.sub() as usize;
        let (skip, take, units) = match (&head.record.message_lens, split) {
            (Some(lens), _) => {
                if sub >= lens.len() {
                    return Err(Error::OffsetUnknown);
                }
                let skip: usize = lens[..sub].iter().map(|l| *l as usize).sum();
                let (mut take, mut count) = (0usize, 0usize);
                for len in &lens[sub..] {
                    if count > 0 && take + *len as usize > max {
                        break;
                    }
                    take += *len as usize;
                    count += 1;
                }
                (skip, take, count)
            }
            (None, _) if sub >= head.payload_len.max(1) => return Err(Error::OffsetUnknown),
            (None, _) => {
                let take = (head.payload_len - sub).min(max.max(1));
                (sub, take, take)
            }
        };
        let file_at = stream.file_pos(start.pos()) + (head.payload_at + skip) as u64;
        let text_cut = split == Split::Utf8 && head.record.message_lens.is_none();
        // For text, read the byte after the cut too: it tells whether the cut splits a character.
        let peek = if text_cut { (head.payload_len - skip - take).min(1) } else { 0 };
        let mut part = read((take + peek) as u64, file_at)?;
        let units = if text_cut {
            let cut = utf8_cut(&part, take);
            part.truncate(cut);
            cut
        } else {
            units
        };
        let next = if skip + part.len() == head.payload_len {
            Offset::at(start.pos() + head.frame_len as u64)
        } else {
            let sub = u32::try_from(sub + units).map_err(|_| Error::OffsetUnknown)?;
            Offset::with_sub(start.pos(), sub)
        };
        Ok(FileRead::Part(part, next))
    }
}

/// What a read from the file found.
enum FileRead {
    /// Whole records, to assemble into a chunk.
    Pieces(Vec<Piece>),
    /// The part of one large record a chunk takes, and where the next chunk starts.
    Part(Bytes, Offset),
}

/// Offset-space position of a file position.
fn start_of(stream: &FileStream, file_pos: u64) -> u64 {
    file_pos - FILE_HEADER_LEN as u64 + stream.base
}

fn checkpoint_of(stream: &FileStream, st: &StreamState) -> Checkpoint {
    Checkpoint {
        incarnation: stream.incarnation(),
        position: st.visible_end,
        last_access_ms: stream.last_access_ms(),
        record_count: st.visible_records,
        writer: st.durable.clone(),
    }
}

lifecycle::life_stream!(FileStream, StreamState);

impl Backend for Inner {
    type Stream = FileStream;

    fn get(&self, name: &str) -> Option<Arc<FileStream>> {
        let map = self.shard(name).map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(name).cloned()
    }

    fn writes(&self, name: &str) -> &tokio::sync::Mutex<()> {
        &self.shard(name).writes
    }

    fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Writes a new stream's (or fork's) log and metadata and adds it to the map.
    async fn insert_new(
        self: &Arc<Self>,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> Result<Created> {
        let inner = self;
        inner.writable()?;
        let incarnation = inner.next_incarnation.fetch_add(1, Ordering::Relaxed);
        let meta = Meta {
            incarnation,
            created_ms: now,
            expiry: req.expiry,
            content_type: req.content_type.clone(),
            name: name.to_owned(),
            fork: fork.cloned(),
        };
        // A fork's log starts at its fork point: it shares its source's offset space.
        let base = fork.map_or(0, |f| f.link.at);
        let mut bytes = frame::encode_header(FileHeader { incarnation, base }).to_vec();
        let limit = inner.limits.max_stream_bytes;
        let mut writer = WriterState::default();
        let mut records = 0;
        if !payload.is_empty() || req.closed {
            let record = Record {
                kind: if payload.is_empty() { Kind::Close } else { Kind::Append },
                closes: req.closed,
                producer: None,
                stream_seq: None,
                message_lens: payload.message_lens(req.content_type.is_json()),
                payload: payload.bytes(),
            };
            if frame::frame_len(&record) > limit || !frame::fits(&record) {
                return Err(Error::StreamTooLarge { limit_bytes: limit });
            }
            frame::encode(&record, &mut bytes);
            records = 1;
            writer.closed = req.closed;
        }
        let own = (bytes.len() - FILE_HEADER_LEN) as u64;
        let end = base + own;
        if own > inner.limits.max_stream_bytes {
            return Err(Error::StreamTooLarge { limit_bytes: inner.limits.max_stream_bytes });
        }
        let task_inner = inner.clone();
        let meta_bytes = meta.encode();
        let created =
            tokio::task::spawn_blocking(move || -> Result<Arc<dyn FsFile>, (io::Error, Failed)> {
                let i = &task_inner;
                let log = i.dir.join(log_name(incarnation));
                let io = |e| (e, Failed::Io);
                let file = i.fs.open(&log, OpenMode::CreateNew).map_err(io)?;
                let written = file.write_all_at(&bytes, 0).map_err(io).and_then(|()| {
                    if i.durability.syncs() {
                        file.sync_data().map_err(|e| (e, Failed::Sync))
                    } else {
                        Ok(())
                    }
                });
                let written = written.and_then(|()| {
                    let syncs = i.durability.syncs();
                    fs::write_atomic_or_which(
                        i.fs.as_ref(),
                        &i.dir,
                        &meta_name(incarnation),
                        &meta_bytes,
                        syncs,
                    )
                });
                if written.is_err() {
                    // Without its metadata the log is a leftover; recovery would remove it too.
                    let _ = i.fs.remove(&log);
                }
                written.map(|()| file)
            })
            .await
            .map_err(|e| Error::Storage(format!("create task failed: {e}")))?;
        let file = created.map_err(|(e, failed)| {
            if failed == Failed::Sync {
                inner.poison("creating a stream", &e);
                // Its metadata may have been renamed into place and still reach the disk:
                // the create is answered as failed, so the next start removes the stream.
                inner.write_cut(&crate::log::meta::Cut { entries: vec![(incarnation, 0)] });
            }
            io_error("creating stream files", &e)
        })?;
        inner.handles.insert(incarnation, file);
        let state = StreamState::recovered(end, writer, records, base);
        let stream = Arc::new(FileStream::new(meta, base, state, now));
        let info = stream.info(&stream.lock());
        let shard = inner.shard(name);
        shard
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(stream.name.clone(), stream);
        Ok(Created::New(info))
    }

    async fn remove(self: Arc<Self>, stream: Arc<FileStream>) -> Result<()> {
        self.remove_files(stream).await
    }

    /// The durable `.gone` file of a soft delete (durable before the 204, in both modes, as
    /// a delete is).
    async fn mark_soft_deleted(
        self: Arc<Self>,
        stream: Arc<FileStream>,
        _now: UnixMs,
    ) -> Result<()> {
        let inner = self.clone();
        let inc = stream.incarnation();
        let marked = tokio::task::spawn_blocking(move || {
            fs::write_atomic_or_which(inner.fs.as_ref(), &inner.dir, &gone_name(inc), b"", true)
        })
        .await;
        match marked {
            Err(e) => Err(Error::Storage(format!("delete task failed: {e}"))),
            Ok(Ok(())) => Ok(()),
            Ok(Err((e, failed))) => {
                if failed == Failed::Sync {
                    self.poison("soft-deleting a stream", &e);
                }
                Err(io_error("soft-deleting a stream", &e))
            }
        }
    }
}

impl Store for FileStore {
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
                return Removing::refuse(&mut st.life.removing, Error::NotFound);
            }
            if st.life.soft_deleting {
                return Removing::refuse(&mut st.life.removing, Error::Gone);
            }
            if let Some(why) = &st.damaged {
                return Err(Error::Storage(format!(
                    "stream {name} is damaged ({why}); it is read-only"
                )));
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
                        let json = stream.meta.content_type.is_json();
                        let record = Record {
                            kind: if payload.is_empty() { Kind::Close } else { Kind::Append },
                            closes: close,
                            producer: req.producer.as_ref().map(|p| {
                                (
                                    std::borrow::Cow::Borrowed(p.id.as_ref()),
                                    p.claim.epoch,
                                    p.claim.seq,
                                )
                            }),
                            stream_seq: req.stream_seq.as_deref(),
                            message_lens: payload.message_lens(json),
                            payload: payload.bytes(),
                        };
                        // Every check before the first byte is written: a refusal leaves no trace.
                        let pos = st.accepted_end;
                        inner.check_size(&stream, pos + frame::frame_len(&record))?;
                        if !frame::fits(&record) {
                            return Err(Error::StreamTooLarge {
                                limit_bytes: u64::from(frame::MAX_BODY_LEN),
                            });
                        }
                        let before = st.batch.bytes.len();
                        let frame_len = frame::encode(&record, &mut st.batch.bytes) as u64;
                        let payload_len = payload.bytes().len();
                        let payload_range =
                            before + frame_len as usize - payload_len..before + frame_len as usize;
                        let effect = effect_of(&record);
                        st.batch.records.push(BatchRecord {
                            pos,
                            end: pos + frame_len,
                            payload: payload_range,
                            lens: record.message_lens.map(Arc::from),
                            effect,
                        });
                        st.accepted_end += frame_len;
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
            let settled =
                !st.committing && st.batch.records.is_empty() && st.visible_end == st.accepted_end;
            if rules::answer_now(&outcome, settled) {
                return outcome.map(AppendTicket::done);
            }
            let (tx, rx) = oneshot::channel();
            st.batch.waiters.push(tx);
            let lead = !st.committing;
            st.committing = true;
            (rx, outcome, lead)
        };
        if lead {
            inner.committer.enqueue(stream.clone());
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
        let split = Split::for_type(&stream.meta.content_type);
        let (info, start, cached) = {
            let st = stream.lock();
            if st.gone() {
                return Err(Error::NotFound);
            }
            let end = st.visible_end;
            let start = match from {
                // A fork's data before its base is its source's, read by the engine.
                ReadFrom::Start if stream.fork.is_some() => Offset::ZERO,
                ReadFrom::Start => Offset::at(stream.base),
                ReadFrom::Tail => Offset::at(end),
                ReadFrom::At(o) if o.pos() < stream.base && stream.fork.is_none() => {
                    return Err(Error::OffsetUnknown);
                }
                ReadFrom::At(o) if o.pos() > end || (o.pos() == end && o.sub() > 0) => {
                    return Err(Error::OffsetBeyondTail);
                }
                ReadFrom::At(o) => o,
            };
            // The recent records are in offset order: find the start by binary search, and
            // clone only as many as the chunk can take.
            let first = st.recent.partition_point(|p| p.pos < start.pos());
            let cached: Option<Vec<Piece>> =
                st.recent.get(first).filter(|p| p.pos == start.pos()).map(|_| {
                    let mut taken = 0usize;
                    st.recent
                        .iter()
                        .skip(first)
                        .take_while(|p| {
                            let more = taken < max_bytes;
                            taken += p.payload.len();
                            more
                        })
                        .cloned()
                        .collect()
                });
            (stream.info(&st), start, cached)
        };
        let end = info.tail.pos();
        if start.pos() < stream.base {
            // Inherited data: the engine reads it from the source.
            return Ok(ReadChunk {
                info,
                start,
                next: start,
                parts: Vec::new(),
                up_to_date: false,
            });
        }
        if start.pos() == end {
            return Ok(ReadChunk { info, start, next: start, parts: Vec::new(), up_to_date: true });
        }
        let pieces = match cached {
            Some(pieces) => pieces,
            None => {
                let (task_inner, task_stream) = (inner.clone(), stream.clone());
                let read = tokio::task::spawn_blocking(move || {
                    task_inner.read_from_file(&task_stream, start, end, max_bytes, split)
                })
                .await
                .map_err(|e| Error::Storage(format!("read task failed: {e}")))?;
                // A delete that became durable meanwhile may have removed the file.
                let read =
                    read.map_err(|e| if stream.lock().gone() { Error::NotFound } else { e })?;
                match read {
                    FileRead::Pieces(pieces) => pieces,
                    FileRead::Part(part, next) => {
                        let parts = if part.is_empty() { Vec::new() } else { vec![part] };
                        let up_to_date = next == Offset::at(end);
                        return Ok(ReadChunk { info, start, next, parts, up_to_date });
                    }
                }
            }
        };
        let (parts, next) = assemble(&pieces, start, max_bytes, split, false)?;
        Ok(ReadChunk { info, start, next, parts, up_to_date: next == Offset::at(end) })
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
        if from.pos() < stream.base {
            let fork = stream.fork.as_ref().map(|f| f.link.clone());
            return Ok(RangeRead { parts: Vec::new(), next: from, fork, lineage: stream.lineage });
        }
        let end = end.min(visible);
        if from.pos() > end || (from.pos() == end && from.sub() > 0) {
            return Err(Error::OffsetBeyondTail);
        }
        if from.pos() == end {
            return Ok(RangeRead {
                parts: Vec::new(),
                next: from,
                fork: None,
                lineage: stream.lineage,
            });
        }
        let split = Split::for_type(&stream.meta.content_type);
        let (task_inner, task_stream) = (inner.clone(), stream.clone());
        let read = tokio::task::spawn_blocking(move || {
            task_inner.read_from_file(&task_stream, from, end, max_bytes, split)
        })
        .await
        .map_err(|e| Error::Storage(format!("read task failed: {e}")))??;
        let (parts, next) = match read {
            FileRead::Pieces(pieces) => assemble(&pieces, from, max_bytes, split, whole)?,
            FileRead::Part(..) if whole => (Vec::new(), from),
            FileRead::Part(part, next) => (vec![part], next),
        };
        Ok(RangeRead { parts, next, fork: None, lineage: stream.lineage })
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
        if let Some(stream) = self.inner.get(name) {
            stream.touch(now);
            // A live read just ended: once nobody watches, the recent records are not needed.
            if !stream.has_watchers() {
                let mut st = stream.lock();
                st.recent.clear();
                st.recent_bytes = 0;
            }
        }
    }

    fn names(&self, prefix: &str) -> Vec<Arc<str>> {
        crate::store::names_in(self.inner.shards.iter().map(|s| &s.map), prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sim::SimFs;
    use crate::log::recovery;
    use crate::store::{AppendRequest, ContentType, Expiry};

    impl FileStore {
        fn recent_bytes(&self, name: &str) -> usize {
            self.inner.get(name).map_or(0, |s| s.lock().recent_bytes)
        }
    }

    /// Pins what the shared lifecycle almost lost (the file store's own `touch`): the recent
    /// records kept for live readers go once the last of them leaves.
    #[tokio::test]
    async fn the_recent_records_go_when_the_last_live_reader_leaves() {
        let fs: Arc<dyn Fs> = Arc::new(SimFs::new());
        let options = recovery::Options { max_open_files: 16, journal_bytes: 0 };
        let (store, _, _) = recovery::open(
            fs,
            Path::new("/d"),
            Durability::ProcessCrash,
            Limits::default(),
            options,
            0,
            Arc::default(),
        )
        .unwrap();
        let create = CreateRequest {
            content_type: ContentType::new("text/plain"),
            expiry: Expiry::Never,
            closed: false,
            body: Bytes::new(),
        };
        store.create("s", &create, Payload::default(), None, 0).await.unwrap();
        let (_, watch) = store.subscribe("s", 0).unwrap();
        let append = AppendRequest::data("text/plain", "abc");
        let payload = Ok(Payload::opaque(Bytes::from_static(b"abc")));
        store.append("s", &append, payload, 0).unwrap().durable().await.unwrap();
        assert!(store.recent_bytes("s") > 0, "kept while a reader watches");
        store.touch("s", 1);
        assert!(store.recent_bytes("s") > 0, "still watched");
        drop(watch);
        store.touch("s", 2);
        assert_eq!(store.recent_bytes("s"), 0, "dropped with the last reader");
        store.shutdown().await.unwrap();
    }
}
