//! The memory store: the `memory` storage mode, and the reference model that the persistent
//! stores are tested against.
//!
//! Streams live in a sharded map of `Arc<MemStream>`. Each stream has its own mutex around
//! its data and writer state, so appends to different streams never contend, and readers hold
//! the lock only long enough to clone a few reference-counted buffers.
//!
//! Data is kept as sealed, immutable blocks (shared with readers without copying) plus one
//! growing block at the tail; a block is sealed once it reaches [`SEAL_BYTES`].
//!
//! Memory is accounted against `max_memory_bytes`: each stream is charged its data, its
//! record index, a fixed overhead plus its name, and each producer it has seen, so neither
//! many empty streams nor many producer ids can grow memory past the limit.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;

use crate::clock::UnixMs;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::notify::{Tail, TailSignal, TailWatch};
use crate::offset::{Lineage, Offset, ReadFrom};
use crate::payload::Payload;
use crate::rules::{self, Plan, WriterState};
use crate::store::{
    AppendRequest, AppendTicket, Appended, ContentType, CreateRequest, Created, Expiry,
    ExpiryCheck, ForkOf, RangeRead, ReadChunk, Store, StreamInfo,
};

/// The tail block is sealed (made immutable and shareable) once it holds this many bytes.
pub const SEAL_BYTES: usize = 256 * 1024;
/// Number of map shards; a power of two.
const MAP_SHARDS: usize = 32;
/// Memory charged for a stream beyond its data and name: map entry, lock, signal, state.
pub const STREAM_OVERHEAD_BYTES: u64 = 512;
/// Memory charged per record boundary (one `u64` in the record index).
pub const RECORD_INDEX_BYTES: u64 = 8;
/// Memory charged for each producer a stream has seen, beyond the id's length.
pub const PRODUCER_OVERHEAD_BYTES: u64 = 64;

type Shard = RwLock<HashMap<Arc<str>, Arc<MemStream>>>;

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Shard]>,
    limits: Limits,
    used_bytes: AtomicU64,
    next_incarnation: AtomicU64,
}

#[derive(Debug)]
struct MemStream {
    incarnation: u64,
    content_type: ContentType,
    expiry: Expiry,
    /// For sliding TTLs: the last read or write. Atomic so reads need no write lock.
    last_access_ms: AtomicU64,
    inner: Mutex<Inner>,
    signal: TailSignal,
    /// For a fork: its source and where it diverges (its log starts there).
    fork: Option<ForkOf>,
    /// How its offsets are tagged.
    lineage: Lineage,
}

#[derive(Debug, Default)]
struct Inner {
    log: MemLog,
    writer: WriterState,
    /// Set under the lock when the stream is deleted or expired, so that nothing is
    /// appended to a stream after it left the map.
    removed: bool,
    /// Bytes charged to the store's memory account for this stream, returned on removal.
    charged: u64,
    /// Forks whose inherited data this stream serves.
    refs: u64,
    /// Deleted (or expired) while forks still refer to it: gone for direct operations, kept
    /// for them, removed when the last one goes (§4.2).
    soft_deleted: bool,
}

/// What [`MemoryStore::remove_if`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Removal {
    /// Nothing: the stream is gone, another incarnation, or the condition failed.
    None,
    /// Forks still read it: soft-deleted.
    Soft,
    /// Removed, and its reference on its own source given back.
    Hard,
}

/// How a record larger than a read's chunk may be cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// Never: JSON messages are returned whole.
    Never,
    /// Anywhere: opaque bytes.
    Bytes,
    /// Only between UTF-8 characters: text.
    Utf8,
}

impl Split {
    /// The rule for a stream of `content_type`.
    pub(crate) fn of(content_type: &ContentType) -> Split {
        if content_type.is_json() {
            Split::Never
        } else if content_type.is_text() {
            Split::Utf8
        } else {
            Split::Bytes
        }
    }
}

/// The bytes of one stream (or, for the `postgres` mode, of the rows one read fetched) and
/// their record boundaries.
#[derive(Debug, Default)]
pub(crate) struct MemLog {
    /// Position of the first byte: 0, or a fork's divergence point.
    base: u64,
    /// Sealed blocks with the position of their first byte, ascending and contiguous.
    blocks: Vec<(u64, Bytes)>,
    active_start: u64,
    active: Vec<u8>,
    /// Absolute position of the end of every record, ascending.
    record_ends: Vec<u64>,
}

impl MemLog {
    /// An empty log whose first byte will be at `base`.
    pub(crate) fn starting_at(base: u64) -> MemLog {
        MemLog { base, active_start: base, ..MemLog::default() }
    }

    /// Adds `bytes` at the tail, with the record ends (relative to their start) they hold:
    /// possibly none, for a piece of a record that goes on in the next bytes.
    pub(crate) fn push(&mut self, bytes: Bytes, ends: impl IntoIterator<Item = u64>) {
        let base = self.tail();
        self.record_ends.extend(ends.into_iter().map(|e| base + e));
        self.seal();
        let len = bytes.len() as u64;
        self.blocks.push((base, bytes));
        self.active_start = base + len;
    }

    pub(crate) fn tail(&self) -> u64 {
        self.active_start + self.active.len() as u64
    }

    fn append(&mut self, payload: Payload) {
        let base = self.tail();
        self.record_ends.extend(payload.record_ends().iter().map(|e| base + e));
        let bytes = payload.bytes();
        if bytes.len() >= SEAL_BYTES {
            self.seal();
            self.blocks.push((base, bytes.clone()));
            self.active_start = base + bytes.len() as u64;
        } else {
            self.active.extend_from_slice(bytes);
            if self.active.len() >= SEAL_BYTES {
                self.seal();
            }
        }
        debug_assert_eq!(self.tail(), base + payload.len());
    }

    fn seal(&mut self) {
        if self.active.is_empty() {
            return;
        }
        // The growing block may have up to twice its length in capacity; a sealed block
        // lives long, so give the spare capacity back (one copy per sealed block at most).
        self.active.shrink_to_fit();
        let block = Bytes::from(std::mem::take(&mut self.active));
        let start = self.active_start;
        self.active_start += block.len() as u64;
        self.blocks.push((start, block));
    }

    pub(crate) fn is_record_boundary(&self, pos: u64) -> bool {
        pos == self.base || self.record_ends.binary_search(&pos).is_ok()
    }

    /// The end of a chunk starting at `from` holding at most `max` bytes, on a record boundary
    /// where possible. A record larger than `max` is returned whole for [`Split::Never`];
    /// otherwise it is split at `max`, for [`Split::Utf8`] moved back to the start of a UTF-8
    /// sequence so that text read in chunks (SSE events) never has a character cut in two.
    /// With `whole`, a record larger than `max` is not returned at all (the chunk is empty).
    pub(crate) fn chunk_end(&self, from: u64, max: usize, split: Split, whole: bool) -> u64 {
        let tail = self.tail();
        if from >= tail {
            return from;
        }
        let first = self.record_ends.partition_point(|&e| e <= from);
        let limit = from.saturating_add(max.max(1) as u64);
        let fits = self.record_ends.partition_point(|&e| e <= limit);
        let next_end = self.record_ends.get(first).copied().unwrap_or(tail);
        if fits > first {
            return self.record_ends[fits - 1];
        }
        if whole {
            return from;
        }
        let end = limit.min(next_end);
        match split {
            Split::Never => next_end,
            Split::Bytes => end,
            Split::Utf8 if end == next_end => end,
            Split::Utf8 => {
                let is_continuation = |pos| self.byte_at(pos).is_some_and(|b| b & 0xC0 == 0x80);
                let mut back = end;
                while back > from + 1 && end - back < 3 && is_continuation(back) {
                    back -= 1;
                }
                // Not valid UTF-8 here anyway (or a tiny chunk): split where asked.
                if is_continuation(back) { end } else { back }
            }
        }
    }

    /// The stored byte at `pos` (below the tail).
    fn byte_at(&self, pos: u64) -> Option<u8> {
        if pos >= self.active_start {
            return self.active.get(to_usize(pos - self.active_start)).copied();
        }
        let i = self.blocks.partition_point(|(start, b)| start + b.len() as u64 <= pos);
        let (start, block) = self.blocks.get(i)?;
        block.get(to_usize(pos - start)).copied()
    }

    /// The stored bytes of `from..end`, sharing sealed blocks and copying from the tail block.
    pub(crate) fn slice(&self, from: u64, end: u64) -> Vec<Bytes> {
        let mut parts = Vec::new();
        let first = self.blocks.partition_point(|(start, b)| start + b.len() as u64 <= from);
        for (start, block) in &self.blocks[first..] {
            if *start >= end {
                break;
            }
            let lo = from.max(*start) - start;
            let hi = end.min(start + block.len() as u64) - start;
            parts.push(block.slice(to_usize(lo)..to_usize(hi)));
        }
        if end > self.active_start {
            let lo = to_usize(from.max(self.active_start) - self.active_start);
            let hi = to_usize(end - self.active_start);
            parts.push(Bytes::copy_from_slice(&self.active[lo..hi]));
        }
        parts
    }
}

/// Memory a payload costs: its bytes and its record index entries.
fn data_cost(payload: &Payload) -> u64 {
    payload.len() + RECORD_INDEX_BYTES * payload.record_count() as u64
}

/// Positions inside one in-memory block always fit in `usize`.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl MemStream {
    /// When the stream expires if nothing touches it after `now`. A stream with live readers
    /// watching it is in use, not idle (§5.1): every check while they watch counts as a
    /// touch, so the idle clock starts again no earlier than the last check they were seen.
    fn deadline(&self, now: UnixMs) -> Option<UnixMs> {
        match self.expiry {
            Expiry::Never => None,
            Expiry::IdleTtl { secs } => {
                if self.signal.has_watchers() {
                    self.last_access_ms.fetch_max(now, Ordering::Relaxed);
                }
                let last = self.last_access_ms.load(Ordering::Relaxed);
                Some(last.saturating_add(secs.saturating_mul(1000)))
            }
            Expiry::At { unix_ms } => Some(unix_ms),
        }
    }

    fn expired(&self, now: UnixMs) -> bool {
        self.deadline(now).is_some_and(|d| now >= d)
    }

    fn touch(&self, now: UnixMs) {
        if matches!(self.expiry, Expiry::IdleTtl { .. }) {
            self.last_access_ms.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Where a chunk of at most `max` bytes from `start` ends, stopping at `end`: checks that
    /// `start` is a message boundary in a JSON stream, and cuts an oversized record by the
    /// stream's rule (or, with `whole`, leaves it out).
    fn chunk_end(
        &self,
        log: &MemLog,
        start: u64,
        end: u64,
        max: usize,
        whole: bool,
    ) -> Result<u64> {
        let split = Split::of(&self.content_type);
        if split == Split::Never && !log.is_record_boundary(start) {
            return Err(Error::OffsetUnknown);
        }
        Ok(log.chunk_end(start, max, split, whole).min(end))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied append: the log and the
        // writer state are updated after every check has passed. So a poisoned lock is safe.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn info(&self, inner: &Inner) -> StreamInfo {
        StreamInfo {
            incarnation: self.incarnation,
            content_type: self.content_type.clone(),
            expiry: self.expiry,
            tail: self.lineage.at(inner.log.tail()),
            closed: inner.writer.closed,
            fork: self.fork.as_ref().map(|f| f.link.clone()),
        }
    }

    fn publish(&self, inner: &Inner) {
        self.signal.publish(Tail {
            next: Offset::at(inner.log.tail()),
            closed: inner.writer.closed,
            gone: inner.removed,
        });
    }
}

impl MemoryStore {
    /// An empty store. `incarnation_seed` should differ between runs (the engine uses the
    /// start time) so that ETags from a previous run never match a new stream's.
    #[must_use]
    pub fn new(limits: Limits, incarnation_seed: u64) -> MemoryStore {
        MemoryStore {
            shards: (0..MAP_SHARDS).map(|_| Shard::default()).collect(),
            limits,
            used_bytes: AtomicU64::new(0),
            next_incarnation: AtomicU64::new(incarnation_seed.max(1)),
        }
    }

    /// Bytes of stream data held, for the memory limit.
    #[must_use]
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    fn shard(&self, name: &str) -> &Shard {
        let hash = BuildHasherDefault::<seahash::SeaHasher>::default().hash_one(name.as_bytes());
        &self.shards[to_usize(hash) & (MAP_SHARDS - 1)]
    }

    fn get(&self, name: &str) -> Option<Arc<MemStream>> {
        let map = self.shard(name).read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(name).cloned()
    }

    /// The live stream by that name: not soft-deleted ([`Error::Gone`]), and removed (or
    /// soft-deleted) first if it has expired.
    fn live(&self, name: &str, now: UnixMs) -> Result<Arc<MemStream>> {
        let stream = self.get(name).ok_or(Error::NotFound)?;
        if stream.lock().soft_deleted {
            return Err(Error::Gone);
        }
        if stream.expired(now) {
            // Decided again under the locks: a write may have renewed the TTL meanwhile.
            self.remove_if(name, stream.incarnation, |s| s.expired(now));
            return Err(Error::NotFound);
        }
        Ok(stream)
    }

    /// Removes the stream if it is still the given incarnation and `condition` holds under its
    /// lock. Deciding under the lock matters for expiry: an append that renewed a sliding TTL
    /// holds the lock while it does, so it either lands before the check (and the stream
    /// stays) or after the removal (and is refused, never acknowledged and then lost).
    ///
    /// A stream that forks still read is soft-deleted instead (§4.2); a removed fork gives
    /// its reference on its source back.
    fn remove_if(
        &self,
        name: &str,
        incarnation: u64,
        condition: impl Fn(&MemStream) -> bool,
    ) -> Removal {
        let source = {
            let mut map =
                self.shard(name).write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(stream) = map.get(name).filter(|s| s.incarnation == incarnation).cloned()
            else {
                return Removal::None;
            };
            let mut inner = stream.lock();
            if inner.removed || inner.soft_deleted || !condition(&stream) {
                return Removal::None;
            }
            if inner.refs > 0 {
                inner.soft_deleted = true;
                // Its own readers stop; its forks read its data without it.
                stream.signal.publish_gone();
                return Removal::Soft;
            }
            map.remove(name);
            drop(map);
            self.retire(&stream, &mut inner);
            stream.fork.as_ref().map(|f| f.link.source.clone())
        };
        if let Some(source) = source {
            self.release(&source);
        }
        Removal::Hard
    }

    /// Takes a reference on a fork's source, so that it outlives a delete while the fork
    /// reads it.
    fn acquire(&self, source: &str, now: UnixMs) -> Result<()> {
        let stream = self.get(source).ok_or(Error::NotFound)?;
        let mut inner = stream.lock();
        if inner.removed || stream.expired(now) {
            return Err(Error::NotFound);
        }
        if inner.soft_deleted {
            return Err(Error::SourceDeleted);
        }
        inner.refs += 1;
        Ok(())
    }

    /// Gives a fork's reference on its source back: a soft-deleted source left without forks
    /// is removed, and so on up the chain (§4.2 cascading cleanup).
    fn release(&self, source: &str) {
        let mut next: Option<Arc<str>> = Some(Arc::from(source));
        while let Some(name) = next.take() {
            let mut map =
                self.shard(&name).write().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A name with forks is never removed nor re-created: this is the source.
            let Some(stream) = map.get(&*name).cloned() else { return };
            let mut inner = stream.lock();
            inner.refs = inner.refs.saturating_sub(1);
            if inner.refs == 0 && inner.soft_deleted && !inner.removed {
                map.remove(&*name);
                drop(map);
                self.retire(&stream, &mut inner);
                next = stream.fork.as_ref().map(|f| f.link.source.clone());
            }
        }
    }

    /// Marks a stream that left the map as removed, frees its bytes and wakes its readers.
    /// The caller holds the stream's lock and has taken it out of the map.
    fn retire(&self, stream: &MemStream, inner: &mut Inner) {
        debug_assert!(!inner.removed);
        inner.removed = true;
        self.used_bytes.fetch_sub(inner.charged, Ordering::Relaxed);
        inner.charged = 0;
        inner.log = MemLog::default();
        inner.writer = WriterState::default();
        stream.signal.publish_gone();
    }

    /// Checks that a stream `tail` bytes long may grow by `len` bytes.
    fn check_stream_size(&self, tail: u64, len: u64) -> Result<()> {
        if tail.saturating_add(len) > self.limits.max_stream_bytes {
            return Err(Error::StreamTooLarge { limit_bytes: self.limits.max_stream_bytes });
        }
        Ok(())
    }

    /// Takes `bytes` from the memory account, or refuses if that would pass the limit. A
    /// compare-and-swap loop, so concurrent writers near the limit never see a 413 caused
    /// only by each other's tentative charges.
    fn charge(&self, bytes: u64) -> Result<()> {
        let limit = self.limits.max_memory_bytes;
        let mut used = self.used_bytes.load(Ordering::Relaxed);
        loop {
            let after = used.saturating_add(bytes);
            if after > limit {
                return Err(Error::MemoryFull { limit_bytes: limit });
            }
            match self.used_bytes.compare_exchange_weak(
                used,
                after,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => used = actual,
            }
        }
    }
}

/// The operations, synchronous: nothing here waits for I/O.
impl MemoryStore {
    pub(crate) fn create_now(
        &self,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> Result<Created> {
        // A fork takes its reference on the source before the target's map shard is locked
        // (the two may share it), and gives it back unless the fork is new.
        if let Some(f) = fork {
            self.acquire(&f.link.source, now)?;
        }
        let created = self.create_new(name, req, payload, fork, now);
        if let Some(f) = fork
            && !matches!(created, Ok(Created::New(_)))
        {
            self.release(&f.link.source);
        }
        created
    }

    fn create_new(
        &self,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> Result<Created> {
        loop {
            let mut map =
                self.shard(name).write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(existing) = map.get(name).cloned() {
                let inner = existing.lock();
                if inner.soft_deleted {
                    // Its forks still read it: the name is not free (§4.2).
                    return Err(Error::ConfigMismatch);
                }
                if existing.expired(now) {
                    drop(inner);
                    drop(map);
                    self.remove_if(name, existing.incarnation, |s| s.expired(now));
                    continue;
                }
                let same = rules::same_stream(
                    &existing.content_type,
                    existing.expiry,
                    inner.writer.closed,
                    existing.fork.as_ref(),
                    req,
                    fork,
                );
                return if same {
                    Ok(Created::Existing(existing.info(&inner)))
                } else {
                    Err(Error::ConfigMismatch)
                };
            }
            self.check_stream_size(0, payload.len())?;
            let charged = STREAM_OVERHEAD_BYTES + name.len() as u64 + data_cost(&payload);
            self.charge(charged)?;
            let base = fork.map_or(0, |f| f.link.at);
            let mut inner = Inner { charged, log: MemLog::starting_at(base), ..Inner::default() };
            inner.log.append(payload);
            inner.writer.closed = req.closed;
            let tail = Tail { next: Offset::at(inner.log.tail()), closed: req.closed, gone: false };
            let incarnation = self.next_incarnation.fetch_add(1, Ordering::Relaxed);
            let stream = Arc::new(MemStream {
                incarnation,
                lineage: crate::store::lineage_of(incarnation, fork.map(|f| &f.link)),
                content_type: req.content_type.clone(),
                expiry: req.expiry,
                last_access_ms: AtomicU64::new(now),
                signal: TailSignal::new(tail),
                inner: Mutex::new(inner),
                fork: fork.cloned(),
            });
            let info = stream.info(&stream.lock());
            map.insert(Arc::from(name), stream);
            return Ok(Created::New(info));
        }
    }

    pub(crate) fn append_now(
        &self,
        name: &str,
        req: &AppendRequest,
        payload: Result<Payload>,
        now: UnixMs,
    ) -> Result<Appended> {
        let stream = self.live(name, now)?;
        let mut inner = stream.lock();
        if inner.removed {
            return Err(Error::NotFound);
        }
        let tail = stream.lineage.at(inner.log.tail());
        let plan = rules::plan_append(&inner.writer, &stream.content_type, tail, req, &payload)?;
        let close = match plan {
            Plan::Duplicate { producer } => {
                return Ok(Appended::duplicate(tail, inner.writer.closed, producer));
            }
            Plan::Write { close } => close,
        };
        // plan_append returned any payload error already.
        let payload = payload.unwrap_or_default();
        self.check_stream_size(inner.log.tail(), payload.len())?;
        let new_producer = req
            .producer
            .as_ref()
            .filter(|p| !inner.writer.producers.contains_key(&p.id))
            .map_or(0, |p| PRODUCER_OVERHEAD_BYTES + p.id.len() as u64);
        let cost = data_cost(&payload) + new_producer;
        self.charge(cost)?;
        inner.charged += cost;
        let wrote_data = !payload.is_empty();
        inner.log.append(payload);
        let kind = inner.writer.apply(req, close, wrote_data);
        stream.touch(now);
        stream.publish(&inner);
        Ok(Appended {
            kind,
            start: tail,
            tail: stream.lineage.at(inner.log.tail()),
            closed: inner.writer.closed,
            producer: req.producer.as_ref().map(|p| p.claim),
        })
    }

    pub(crate) fn read_now(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
        now: UnixMs,
    ) -> Result<ReadChunk> {
        let stream = self.live(name, now)?;
        stream.touch(now);
        let inner = stream.lock();
        if inner.removed {
            return Err(Error::NotFound);
        }
        let tail = inner.log.tail();
        let start = match from {
            ReadFrom::Start => 0,
            ReadFrom::Tail => tail,
            ReadFrom::At(offset) => {
                if offset.sub() != 0 {
                    return Err(Error::OffsetUnknown);
                }
                if offset.pos() > tail {
                    return Err(Error::OffsetBeyondTail);
                }
                offset.pos()
            }
        };
        let at = Offset::at(start);
        if start < inner.log.base {
            // Inherited data: the engine reads it from the source.
            return Ok(ReadChunk {
                info: stream.info(&inner),
                start: at,
                next: at,
                parts: Vec::new(),
                up_to_date: false,
            });
        }
        let end = stream.chunk_end(&inner.log, start, tail, max_bytes, false)?;
        let parts = inner.log.slice(start, end);
        Ok(ReadChunk {
            info: stream.info(&inner),
            start: at,
            next: Offset::at(end),
            parts,
            up_to_date: end == tail,
        })
    }

    pub(crate) fn read_range_now(
        &self,
        name: &str,
        from: Offset,
        end: u64,
        max_bytes: usize,
        whole: bool,
    ) -> Result<RangeRead> {
        let stream = self.get(name).ok_or(Error::NotFound)?;
        let inner = stream.lock();
        if inner.removed {
            return Err(Error::NotFound);
        }
        if from.sub() != 0 {
            return Err(Error::OffsetUnknown);
        }
        let start = from.pos();
        if start < inner.log.base {
            let fork = stream.fork.as_ref().map(|f| f.link.clone());
            return Ok(RangeRead { parts: Vec::new(), next: from, fork, lineage: stream.lineage });
        }
        let end = end.min(inner.log.tail());
        if start > end {
            return Err(Error::OffsetBeyondTail);
        }
        let stop = stream.chunk_end(&inner.log, start, end, max_bytes, whole)?;
        Ok(RangeRead {
            parts: inner.log.slice(start, stop),
            next: Offset::at(stop),
            fork: None,
            lineage: stream.lineage,
        })
    }

    pub(crate) fn head_now(&self, name: &str, now: UnixMs) -> Result<StreamInfo> {
        let stream = self.live(name, now)?;
        let inner = stream.lock();
        if inner.removed {
            return Err(Error::NotFound);
        }
        Ok(stream.info(&inner))
    }

    pub(crate) fn delete_now(&self, name: &str, now: UnixMs) -> Result<u64> {
        let stream = self.live(name, now)?;
        match self.remove_if(name, stream.incarnation, |_| true) {
            Removal::Soft | Removal::Hard => Ok(stream.incarnation),
            Removal::None if stream.lock().soft_deleted => Err(Error::Gone),
            Removal::None => Err(Error::NotFound),
        }
    }

    pub(crate) fn subscribe_now(&self, name: &str, now: UnixMs) -> Result<(StreamInfo, TailWatch)> {
        let stream = self.live(name, now)?;
        let inner = stream.lock();
        let watch = stream.signal.subscribe();
        if inner.removed {
            return Err(Error::NotFound);
        }
        Ok((stream.info(&inner), watch))
    }

    pub(crate) fn expire_now(&self, name: &str, incarnation: u64, now: UnixMs) -> ExpiryCheck {
        let stream = {
            let map = self.shard(name).read().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.get(name).filter(|s| s.incarnation == incarnation).cloned()
        };
        let Some(stream) = stream else { return ExpiryCheck::Missing };
        match stream.deadline(now) {
            None => ExpiryCheck::Missing,
            Some(deadline) if now < deadline => ExpiryCheck::Later(deadline),
            Some(_) if self.remove_if(name, incarnation, |s| s.expired(now)) != Removal::None => {
                ExpiryCheck::Removed
            }
            // Renewed in the meantime (or gone): look again later.
            Some(_) => stream.deadline(now).map_or(ExpiryCheck::Missing, ExpiryCheck::Later),
        }
    }

    pub(crate) fn touch_now(&self, name: &str, now: UnixMs) {
        let map = self.shard(name).read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(stream) = map.get(name) {
            stream.touch(now);
        }
    }
}

impl Store for MemoryStore {
    fn create(
        &self,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> impl Future<Output = Result<Created>> + Send {
        std::future::ready(self.create_now(name, req, payload, fork, now))
    }

    fn append(
        &self,
        name: &str,
        req: &AppendRequest,
        payload: Result<Payload>,
        now: UnixMs,
    ) -> Result<AppendTicket> {
        self.append_now(name, req, payload, now).map(AppendTicket::done)
    }

    fn read(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
        now: UnixMs,
    ) -> impl Future<Output = Result<ReadChunk>> + Send {
        std::future::ready(self.read_now(name, from, max_bytes, now))
    }

    fn read_range(
        &self,
        name: &str,
        from: Offset,
        end: u64,
        max_bytes: usize,
        whole: bool,
    ) -> impl Future<Output = Result<RangeRead>> + Send {
        std::future::ready(self.read_range_now(name, from, end, max_bytes, whole))
    }

    fn head(&self, name: &str, now: UnixMs) -> Result<StreamInfo> {
        self.head_now(name, now)
    }

    fn delete(&self, name: &str, now: UnixMs) -> impl Future<Output = Result<u64>> + Send {
        std::future::ready(self.delete_now(name, now))
    }

    fn subscribe(&self, name: &str, now: UnixMs) -> Result<(StreamInfo, TailWatch)> {
        self.subscribe_now(name, now)
    }

    fn expire(
        &self,
        name: &str,
        incarnation: u64,
        now: UnixMs,
    ) -> impl Future<Output = ExpiryCheck> + Send {
        std::future::ready(self.expire_now(name, incarnation, now))
    }

    fn touch(&self, name: &str, now: UnixMs) {
        self.touch_now(name, now);
    }

    fn names(&self, prefix: &str) -> Vec<Arc<str>> {
        crate::store::names_in(self.shards.iter(), prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(records: &[&[u8]]) -> MemLog {
        let mut log = MemLog::default();
        for r in records {
            log.append(Payload::opaque(Bytes::copy_from_slice(r)));
        }
        log
    }

    fn read(log: &MemLog, from: u64, max: usize, whole: bool) -> Vec<u8> {
        let end = log.chunk_end(from, max, if whole { Split::Never } else { Split::Bytes }, false);
        log.slice(from, end).concat()
    }

    #[test]
    fn chunks_end_on_record_boundaries() {
        let log = log_with(&[b"aaa", b"bb", b"cccc"]);
        assert_eq!(read(&log, 0, 100, false), b"aaabbcccc");
        assert_eq!(read(&log, 0, 5, false), b"aaabb");
        assert_eq!(read(&log, 0, 6, false), b"aaabb");
        assert_eq!(read(&log, 3, 2, false), b"bb");
        assert_eq!(read(&log, 9, 2, false), b"");
    }

    #[test]
    fn oversized_records_split_for_bytes_and_stay_whole_for_json() {
        let log = log_with(&[b"0123456789", b"ab"]);
        assert_eq!(read(&log, 0, 4, false), b"0123");
        assert_eq!(read(&log, 4, 4, false), b"4567");
        assert_eq!(read(&log, 8, 4, false), b"89ab");
        assert_eq!(read(&log, 0, 4, true), b"0123456789");
    }

    /// Regression: a text record larger than a chunk was cut at a byte count, which could
    /// split a UTF-8 character between two SSE events (each decoded on its own).
    #[test]
    fn text_chunks_never_split_a_character() {
        let text = "aé€😀b".repeat(50);
        let mut log = log_with(&[text.as_bytes()]);
        log.seal();
        let tail = log.tail();
        for max in 1..12 {
            let mut from = 0;
            let mut out = String::new();
            while from < tail {
                let end = log.chunk_end(from, max, Split::Utf8, false);
                assert!(end > from, "progress");
                let piece = log.slice(from, end).concat();
                if max >= 4 {
                    out.push_str(std::str::from_utf8(&piece).expect("whole characters"));
                }
                from = end;
            }
            if max >= 4 {
                assert_eq!(out, text);
            }
        }
    }

    #[test]
    fn sealed_blocks_and_tail_read_back_seamlessly() {
        let big = vec![7u8; SEAL_BYTES + 3];
        let small = vec![1u8; SEAL_BYTES - 1];
        let log = log_with(&[b"xy", &small, b"z", &big, b"tail"]);
        assert!(log.blocks.len() >= 2, "blocks were sealed");
        let all = read(&log, 0, usize::MAX, false);
        let mut expected = b"xy".to_vec();
        expected.extend_from_slice(&small);
        expected.push(b'z');
        expected.extend_from_slice(&big);
        expected.extend_from_slice(b"tail");
        assert_eq!(all, expected);
        for from in [0, 1, 2, 100, SEAL_BYTES as u64, SEAL_BYTES as u64 + 2] {
            let end = log.tail();
            assert_eq!(log.slice(from, end).concat(), expected[from as usize..]);
        }
    }
}
