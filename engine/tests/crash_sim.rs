//! Power-loss model tests of the file and acid stores, with the memory store as the
//! reference.
//!
//! Random operation sequences run against both engines. The tested engine sits on the simulated
//! file system (`fs::sim`), which keeps a written and a durable image of every file and
//! directory entry. At random points the test cuts the power (optionally leaving a torn
//! prefix of unsynced writes), or makes the n-th sync fail, then reopens the file engine from
//! what the disk would hold and checks:
//! - every acknowledged operation survived (`file-durable`, `acid`), none appears twice, and none is
//!   half-applied: each stream reads back exactly as in the reference;
//! - the one operation that failed mid-way (not acknowledged) is either wholly there or wholly
//!   absent;
//! - later operations behave the same in both engines (so producer state and closure survived
//!   with the data), and new offsets are larger than every offset handed out before.
//!
//! Pipelines interleave: several appends (plain, producer, closing) take effect one after
//! another without waiting for their commits, as the fast front end runs a connection's
//! pipelined requests, and a sync may fail under them. Their answers must be those of the
//! same appends run one at a time; a refusal must never rest on a change whose commit then
//! failed (it waits for that commit, and fails with it); and after the restart no refused
//! append is in the stream, every acknowledged one is, and of the failed ones a prefix.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use ds_engine::fs::sim::{SimFs, Torn};
use ds_engine::{
    AppendRequest, ContentType, CreateRequest, Created, Engine, EngineConfig, Error, Expiry,
    ForkRequest, ManualClock, Offset, ReadFrom, StorageMode,
};
use proptest::prelude::*;

const STREAMS: [&str; 3] = ["s0", "s1", "nested/s2"];

#[derive(Clone, Debug)]
enum Op {
    Create {
        stream: usize,
        json: bool,
        closed: bool,
        body: Vec<u8>,
    },
    Append {
        stream: usize,
        body: Vec<u8>,
        producer: Option<(u8, u64, u64)>,
        close: bool,
    },
    Delete {
        stream: usize,
    },
    /// Fork `source` at its tail into `stream`, taking `sub` more bytes or messages.
    Fork {
        stream: usize,
        source: usize,
        sub: u64,
    },
    PowerCut {
        torn: u8,
        seed: u64,
    },
    ProcessCrash,
    /// The `after`-th sync from now fails; with `transient` only that one, else every
    /// operation after it too (a dead disk).
    FailSync {
        after: u64,
        transient: bool,
    },
    /// Appends begun back to back on one stream, answered once all have settled. The
    /// `fail_sync.0`-th sync from now (0 to 5: any of the syncs a pipeline with a delete
    /// makes) fails under them; with `fail_sync.1` only that one (a transient error: the
    /// disk keeps working), else every operation after it (a dead disk).
    Pipeline {
        stream: usize,
        appends: Vec<PipelinedAppend>,
        fail_sync: Option<(u64, bool)>,
        /// A delete of the stream starts before the append at this index (it runs beside
        /// the appends begun after it).
        delete_at: Option<prop::sample::Index>,
    },
}

#[derive(Clone, Debug)]
struct PipelinedAppend {
    body: Vec<u8>,
    producer: Option<(u8, u64, u64)>,
    close: bool,
}

/// Refusals that depend only on the request and the stream's fixed configuration, never on
/// what earlier appends did: these may be answered at once.
fn state_independent(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidJson(_)
            | Error::EmptyJsonArray
            | Error::EmptyBody
            | Error::ContentTypeMismatch
            | Error::MissingContentType
    )
}

fn pipelined() -> impl Strategy<Value = PipelinedAppend> {
    (
        prop::collection::vec(any::<u8>(), 0..12),
        prop::option::weighted(0.6, (0u8..2, 0u64..3, 0u64..3)),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(body, producer, close)| PipelinedAppend { body, producer, close })
}

fn op() -> impl Strategy<Value = Op> {
    let stream = 0..STREAMS.len();
    let body = prop::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        2 => (stream.clone(), any::<bool>(), prop::bool::weighted(0.1), body.clone())
            .prop_map(|(stream, json, closed, body)| Op::Create { stream, json, closed, body }),
        8 => (
            stream.clone(),
            body,
            prop::option::weighted(0.5, (0u8..2, 0u64..2, 0u64..4)),
            prop::bool::weighted(0.05),
        )
            .prop_map(|(stream, body, producer, close)| Op::Append { stream, body, producer, close }),
        1 => stream.clone().prop_map(|stream| Op::Delete { stream }),
        1 => (stream.clone(), stream, 0u64..3)
            .prop_map(|(stream, source, sub)| Op::Fork { stream, source, sub }),
        1 => (0u8..4, any::<u64>()).prop_map(|(torn, seed)| Op::PowerCut { torn, seed }),
        1 => Just(Op::ProcessCrash),
        1 => (0u64..4, any::<bool>()).prop_map(|(after, transient)| Op::FailSync { after, transient }),
        3 => (
            0..STREAMS.len(),
            prop::collection::vec(pipelined(), 2..6),
            prop::option::weighted(0.5, (0u64..6, any::<bool>())),
            prop::option::weighted(0.3, any::<prop::sample::Index>()),
        )
            .prop_map(|(stream, appends, fail_sync, delete_at)| Op::Pipeline {
                stream,
                appends,
                fail_sync,
                delete_at,
            }),
    ]
}

/// What an operation returned, without offsets (the two stores lay them out differently).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Created(bool),
    Appended(ds_engine::AppendKind, bool, Option<ds_engine::ProducerClaim>),
    Deleted,
    Refused(String),
}

fn refused(e: &Error) -> Outcome {
    // Compare the kind of refusal; offsets inside it differ between stores.
    let name = format!("{e:?}");
    Outcome::Refused(name.split([' ', '{', '(']).next().unwrap_or("").to_owned())
}

fn is_failure(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_) | Error::Storage(_))
}

struct Harness {
    mode: StorageMode,
    sim: SimFs,
    file: Engine,
    reference: Engine,
    clock: ManualClock,
    json: HashMap<usize, bool>,
    /// Highest offset handed out per stream incarnation name, to check monotonicity.
    last_tail: HashMap<usize, Offset>,
    /// The sync failure armed was transient: the disk took writes after it.
    disk_survived: bool,
}

fn config(mode: StorageMode) -> EngineConfig {
    EngineConfig {
        mode,
        data_dir: PathBuf::from("/data"),
        read_chunk_bytes: 64,
        acid_shard_count: 2,
        journal_bytes: 4 << 10,
        ..EngineConfig::default()
    }
}

/// Whether an append, create or fork answered as failed (its sync failed) must be absent
/// after the restart (a failed delete may still have happened: it writes no data).
/// redb never shows a transaction whose commit failed. The file log cuts what a failed
/// commit wrote, from a list it writes before answering: that needs the disk to take one
/// more write after the failure (a transient writeback error, a full disk), so on a disk
/// that fails for good the failed appends may still come back.
fn failed_writes_vanish(mode: StorageMode, disk_survived: bool) -> bool {
    mode == StorageMode::Acid || disk_survived
}

/// Whether acknowledged writes survive power loss in this mode (else only process crashes).
fn survives_power_loss(mode: StorageMode) -> bool {
    matches!(mode, StorageMode::FileDurable | StorageMode::Acid)
}

async fn open(mode: StorageMode, sim: &SimFs, clock: &ManualClock) -> Engine {
    let engine =
        Engine::open_on(config(mode), Arc::new(clock.clone()), Arc::new(sim.clone())).unwrap();
    engine.ready().await.expect("recovery succeeds on any crash image");
    engine
}

impl Harness {
    async fn new(mode: StorageMode) -> Harness {
        let clock = ManualClock::new(1_700_000_000_000);
        let sim = SimFs::new();
        let file = open(mode, &sim, &clock).await;
        let reference =
            Engine::open_with_clock(EngineConfig::default(), Arc::new(clock.clone())).unwrap();
        Harness {
            mode,
            sim,
            file,
            reference,
            clock,
            json: HashMap::new(),
            last_tail: HashMap::new(),
            disk_survived: false,
        }
    }

    /// A fork's create request: the source's content type, nothing else.
    fn fork_create(&self, source: usize) -> CreateRequest {
        CreateRequest {
            content_type: ContentType::new(self.content_type(source)),
            expiry: Expiry::Never,
            closed: false,
            body: Bytes::new(),
        }
    }

    fn content_type(&self, stream: usize) -> &'static str {
        if self.json.get(&stream).copied().unwrap_or(false) {
            "application/json"
        } else {
            "text/plain"
        }
    }

    fn body_for(&self, stream: usize, raw: &[u8]) -> Bytes {
        if self.content_type(stream) == "application/json" {
            // A JSON array of numbers: one message per byte, flattened on append.
            let items: Vec<String> = raw.iter().map(u8::to_string).collect();
            if items.is_empty() {
                Bytes::new()
            } else {
                Bytes::from(format!("[{}]", items.join(",")))
            }
        } else {
            Bytes::copy_from_slice(raw)
        }
    }

    /// Runs one operation on both engines. Returns the file engine's failed operation if
    /// the disk failed under it (then the caller cuts the power).
    async fn apply(&mut self, op: &Op) -> Option<Op> {
        self.clock.advance_ms(1);
        let (got, want) = match op {
            Op::Create { stream, json, closed, body } => {
                if self.reference.head(STREAMS[*stream]).await.is_err() {
                    self.json.insert(*stream, *json);
                }
                let req = CreateRequest {
                    content_type: ContentType::new(self.content_type(*stream)),
                    expiry: Expiry::Never,
                    closed: *closed,
                    body: self.body_for(*stream, body),
                };
                let name = STREAMS[*stream];
                let got = self.file.create(name, req.clone()).await;
                if got.as_ref().is_err_and(is_failure) {
                    return Some(op.clone());
                }
                let want = self.reference.create(name, req).await;
                if let Ok(Created::New(info)) = &got {
                    self.last_tail.insert(*stream, info.tail);
                }
                let o = |r: &ds_engine::Result<Created>| match r {
                    Ok(c) => Outcome::Created(matches!(c, Created::New(_))),
                    Err(e) => refused(e),
                };
                (o(&got), o(&want))
            }
            Op::Append { stream, body, producer, close } => {
                let mut req =
                    AppendRequest::data(self.content_type(*stream), self.body_for(*stream, body));
                req.close = *close;
                if let Some((id, epoch, seq)) = producer {
                    req = req.with_producer(&format!("p{id}"), *epoch, *seq);
                }
                let name = STREAMS[*stream];
                let got = self.file.append(name, req.clone()).await;
                if got.as_ref().is_err_and(is_failure) {
                    return Some(op.clone());
                }
                let want = self.reference.append(name, req).await;
                if let Ok(done) = &got {
                    let last = self.last_tail.entry(*stream).or_insert(Offset::ZERO);
                    assert!(done.tail >= *last, "offsets never go backwards");
                    *last = done.tail;
                }
                let o = |r: &ds_engine::Result<ds_engine::Appended>| match r {
                    Ok(a) => Outcome::Appended(a.kind, a.closed, a.producer),
                    Err(e) => refused(e),
                };
                (o(&got), o(&want))
            }
            Op::Delete { stream } => {
                let name = STREAMS[*stream];
                let got = self.file.delete(name).await;
                if got.as_ref().is_err_and(is_failure) {
                    return Some(op.clone());
                }
                let want = self.reference.delete(name).await;
                if got.is_ok() {
                    self.last_tail.remove(stream);
                }
                let o = |r: &ds_engine::Result<()>| match r {
                    Ok(()) => Outcome::Deleted,
                    Err(e) => refused(e),
                };
                (o(&got), o(&want))
            }
            Op::Fork { stream, source, sub } => {
                let (name, from) = (STREAMS[*stream], STREAMS[*source]);
                let req = fork_request(from, *sub);
                let create = self.fork_create(*source);
                let got = self.file.fork(name, create.clone(), req.clone()).await;
                if got.as_ref().is_err_and(is_failure) {
                    return Some(op.clone());
                }
                let want = self.reference.fork(name, create, req).await;
                if let Ok(Created::New(_)) = &want {
                    self.json.insert(*stream, self.json.get(source).copied().unwrap_or(false));
                }
                let o = |r: &ds_engine::Result<Created>| match r {
                    Ok(c) => Outcome::Created(matches!(c, Created::New(_))),
                    Err(e) => refused(e),
                };
                (o(&got), o(&want))
            }
            Op::PowerCut { .. } | Op::ProcessCrash | Op::FailSync { .. } | Op::Pipeline { .. } => {
                unreachable!()
            }
        };
        assert_eq!(got, want, "file store and reference disagree on {op:?}");
        None
    }

    fn pipelined_request(&self, stream: usize, a: &PipelinedAppend) -> AppendRequest {
        let mut req =
            AppendRequest::data(self.content_type(stream), self.body_for(stream, &a.body));
        req.close = a.close;
        if let Some((id, epoch, seq)) = a.producer {
            req = req.with_producer(&format!("p{id}"), epoch, seq);
        }
        req
    }

    /// Runs a pipeline: every append begun before any is awaited, with a delete of the stream
    /// started before the append at `delete_at` (if any) and running beside the rest. Returns
    /// the operations that failed, to be found after the restart as
    /// [`Harness::restart_after_pipeline`] says.
    async fn pipeline(
        &mut self,
        stream: usize,
        appends: &[PipelinedAppend],
        delete_at: Option<usize>,
    ) -> Vec<Op> {
        self.clock.advance_ms(1);
        let name = STREAMS[stream];
        let split = delete_at.unwrap_or(appends.len());
        let (answers, deleted) = {
            let this = &*self;
            let begin = |a: &PipelinedAppend| {
                this.file.begin_append(name, this.pipelined_request(stream, a))
            };
            let mut tickets: Vec<_> = appends[..split].iter().map(begin).collect();
            let mut deleted = None;
            let mut delete = std::pin::pin!(this.file.delete(name));
            if delete_at.is_some() {
                // Let the delete start (mark the stream removed) before the next appends.
                for _ in 0..3 {
                    tokio::select! {
                        biased;
                        done = &mut delete => {
                            deleted = Some(done);
                            break;
                        }
                        () = tokio::task::yield_now() => {}
                    }
                }
            }
            tickets.extend(appends[split..].iter().map(begin));
            let mut answers = Vec::with_capacity(tickets.len());
            for ticket in tickets {
                answers.push(match ticket {
                    Ok(t) => t.durable().await,
                    Err(e) => Err(e),
                });
            }
            let deleted = match (delete_at, deleted) {
                (None, _) => None,
                (Some(_), Some(done)) => Some(done),
                (Some(_), None) => Some(delete.await),
            };
            (answers, deleted)
        };
        self.check_pipeline(stream, appends, answers, deleted.map(|d| (split, d))).await
    }

    /// Checks a pipeline's answers against the reference, run one at a time, and applies to
    /// it what took effect. An append begun before a concurrent delete may have been written
    /// before it, or dropped with it (404, once the delete is durable); one begun after it
    /// is refused as the reference refuses it.
    async fn check_pipeline(
        &mut self,
        stream: usize,
        appends: &[PipelinedAppend],
        answers: Vec<ds_engine::Result<ds_engine::Appended>>,
        delete: Option<(usize, ds_engine::Result<()>)>,
    ) -> Vec<Op> {
        let name = STREAMS[stream];
        let o = |r: &ds_engine::Result<ds_engine::Appended>| match r {
            Ok(a) => Outcome::Appended(a.kind, a.closed, a.producer),
            Err(e) => refused(e),
        };
        let delete_ok = delete.as_ref().is_some_and(|(_, d)| d.is_ok());
        let mut failed = Vec::new();
        for (i, (a, got)) in appends.iter().zip(answers).enumerate() {
            if let Some((at, deleted)) = &delete
                && *at == i
            {
                self.apply_delete(stream, deleted, &mut failed).await;
            }
            if let Err(e) = &got
                && is_failure(e)
            {
                failed.push(Op::Append {
                    stream,
                    body: a.body.clone(),
                    producer: a.producer,
                    close: a.close,
                });
                continue;
            }
            let before_delete = delete.as_ref().is_some_and(|(at, _)| i < *at);
            // After a delete that succeeded, 404 or 410 rests on that delete, durable.
            let gone =
                delete_ok && !before_delete && matches!(got, Err(Error::NotFound | Error::Gone));
            // A failed append poisons the store: nothing after it may be answered but a
            // failure (or a refusal of the request itself). A failed delete that changed
            // nothing leaves the stream as it was.
            let after_failed_append = failed.iter().any(|op| matches!(op, Op::Append { .. }));
            assert!(
                !after_failed_append || gone || got.as_ref().is_err_and(state_independent),
                "{got:?} answered after an earlier operation of the pipeline failed: it rested \
                 on a change that never became durable"
            );
            if before_delete
                && delete_ok
                && matches!(got, Err(Error::NotFound))
                && self.reference.head(name).await.is_ok()
            {
                // Dropped with the stream before it was written: gone with it anyway.
                continue;
            }
            let want = self.reference.append(name, self.pipelined_request(stream, a)).await;
            assert_eq!(o(&got), o(&want), "pipelined {a:?} answered unlike one at a time");
            if let Ok(done) = &got {
                let last = self.last_tail.entry(stream).or_insert(Offset::ZERO);
                assert!(done.tail >= *last, "offsets never go backwards");
                *last = done.tail;
            }
        }
        if let Some((at, deleted)) = &delete
            && *at == appends.len()
        {
            self.apply_delete(stream, deleted, &mut failed).await;
        }
        failed
    }

    /// Applies a pipeline's delete to the reference as its answer says.
    async fn apply_delete(
        &mut self,
        stream: usize,
        got: &ds_engine::Result<()>,
        failed: &mut Vec<Op>,
    ) {
        if got.as_ref().is_err_and(is_failure) {
            failed.push(Op::Delete { stream });
            return;
        }
        let want = self.reference.delete(STREAMS[stream]).await;
        let o = |r: &ds_engine::Result<()>| match r {
            Ok(()) => Outcome::Deleted,
            Err(e) => refused(e),
        };
        assert_eq!(o(got), o(&want), "pipelined delete answered unlike one at a time");
        if got.is_ok() {
            self.last_tail.remove(&stream);
        }
    }

    /// Restarts after a pipeline whose `failed` operations may have reached the disk: the
    /// file engine must hold the reference plus a prefix of them, each whole; where failed
    /// writes must vanish, only a failed delete may have happened.
    async fn restart_after_pipeline(&mut self, image: SimFs, failed: Vec<Op>) {
        self.sim = image;
        self.file = open(self.mode, &self.sim, &self.clock).await;
        let strict = failed_writes_vanish(self.mode, self.disk_survived);
        let maybe: Vec<&Op> =
            failed.iter().filter(|op| !strict || matches!(op, Op::Delete { .. })).collect();
        for k in 0..=maybe.len() {
            if k > 0 {
                self.apply_to_reference(maybe[k - 1]).await;
            }
            if self.matches_reference().await {
                // The rest of the failed operations did not happen: the reference must not
                // have them either for the rest of the run.
                return;
            }
        }
        panic!(
            "lost acknowledged data, or kept a refused, failed or half-written append: {}",
            self.diff().await
        );
    }

    /// Restarts the file engine from what the disk holds, then checks it against the
    /// reference; `maybe` is an operation that failed mid-way and may or may not be there.
    async fn restart(&mut self, image: SimFs, maybe: Option<Op>) {
        self.sim = image;
        self.file = open(self.mode, &self.sim, &self.clock).await;
        if self.matches_reference().await {
            return;
        }
        let Some(op) = maybe else {
            panic!("lost or changed acknowledged data: {}", self.diff().await);
        };
        assert!(
            !(matches!(op, Op::Append { .. } | Op::Create { .. } | Op::Fork { .. })
                && failed_writes_vanish(self.mode, self.disk_survived)),
            "{op:?} answered as failed came back after the restart: {}",
            self.diff().await
        );
        // The failed operation did reach the disk: it must be wholly there.
        self.apply_to_reference(&op).await;
        assert!(self.matches_reference().await, "half-applied {op:?}: {}", self.diff().await);
    }

    async fn apply_to_reference(&mut self, op: &Op) {
        match op {
            Op::Create { stream, closed, body, .. } => {
                let req = CreateRequest {
                    content_type: ContentType::new(self.content_type(*stream)),
                    expiry: Expiry::Never,
                    closed: *closed,
                    body: self.body_for(*stream, body),
                };
                let _ = self.reference.create(STREAMS[*stream], req).await;
            }
            Op::Append { stream, body, producer, close } => {
                let mut req =
                    AppendRequest::data(self.content_type(*stream), self.body_for(*stream, body));
                req.close = *close;
                if let Some((id, epoch, seq)) = producer {
                    req = req.with_producer(&format!("p{id}"), *epoch, *seq);
                }
                let _ = self.reference.append(STREAMS[*stream], req).await;
            }
            // A later stream of the name starts its offsets again.
            Op::Delete { stream } if self.reference.delete(STREAMS[*stream]).await.is_ok() => {
                self.last_tail.remove(stream);
            }
            Op::Delete { .. } => {}
            Op::Fork { stream, source, sub } => {
                let req = fork_request(STREAMS[*source], *sub);
                let create = self.fork_create(*source);
                if let Ok(Created::New(_)) =
                    self.reference.fork(STREAMS[*stream], create, req).await
                {
                    self.json.insert(*stream, self.json.get(source).copied().unwrap_or(false));
                }
            }
            _ => {}
        }
    }

    async fn snapshot(engine: &Engine) -> Vec<Option<(String, bool, Vec<u8>)>> {
        let mut out = Vec::new();
        for name in STREAMS {
            let Ok(info) = engine.head(name).await else {
                out.push(None);
                continue;
            };
            let mut data = Vec::new();
            let mut from = ReadFrom::Start;
            loop {
                let chunk = engine.read(name, from).await.unwrap();
                let (done, next) = (chunk.up_to_date, chunk.next);
                data.extend(chunk.parts.concat());
                if done {
                    break;
                }
                from = ReadFrom::At(next);
            }
            out.push(Some((info.content_type.as_str().to_owned(), info.closed, data)));
        }
        out
    }

    async fn matches_reference(&self) -> bool {
        Harness::snapshot(&self.file).await == Harness::snapshot(&self.reference).await
    }

    async fn diff(&self) -> String {
        format!(
            "\n file:      {:?}\n reference: {:?}",
            Harness::snapshot(&self.file).await,
            Harness::snapshot(&self.reference).await
        )
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// What a power cut leaves of unsynced writes. A log is only appended to, so every model
/// applies; a redb shard is overwritten in place and grown by `set_len` (a size change the
/// file system applies whole), so its unsynced pages are torn page by page, never mid-page or
/// to an odd length.
fn torn_model(mode: StorageMode, torn: u8, seed: u64) -> Torn {
    match (torn, mode) {
        (0, _) => Torn::Clean,
        (_, StorageMode::Acid) => Torn::Pages(seed),
        (1, _) => Torn::Prefix(seed),
        (2, _) => Torn::Zeros(seed),
        _ => Torn::Pages(seed),
    }
}

/// A fork at the source's tail, taking `sub` more bytes or messages (past the tail: refused).
fn fork_request(source: &str, sub: u64) -> ForkRequest {
    ForkRequest { source: source.into(), offset: None, sub, content_type_given: false }
}

async fn run(mode: StorageMode, ops: Vec<Op>) {
    let mut h = Harness::new(mode).await;
    for op in &ops {
        match op {
            Op::PowerCut { torn, seed } if survives_power_loss(mode) => {
                let image = h.sim.power_loss(torn_model(mode, *torn, *seed));
                h.restart(image, None).await;
            }
            Op::PowerCut { .. } | Op::ProcessCrash => {
                let image = h.sim.process_crash();
                h.restart(image, None).await;
            }
            Op::FailSync { after, transient } if survives_power_loss(mode) => {
                if *transient {
                    h.sim.fail_one_sync(*after);
                } else {
                    h.sim.fail_at_sync(*after);
                }
                h.disk_survived = *transient;
            }
            Op::FailSync { .. } => {}
            Op::Pipeline { stream, appends, fail_sync, delete_at } => {
                if let Some((after, transient)) = fail_sync.filter(|_| survives_power_loss(mode)) {
                    if transient {
                        h.sim.fail_one_sync(after);
                    } else {
                        h.sim.fail_at_sync(after);
                    }
                    h.disk_survived = transient;
                }
                let delete_at = delete_at.map(|i| i.index(appends.len() + 1));
                let failed = h.pipeline(*stream, appends, delete_at).await;
                if !failed.is_empty() {
                    let image = h.sim.power_loss(torn_model(mode, 1, ops.len() as u64));
                    h.restart_after_pipeline(image, failed).await;
                }
            }
            op => {
                if let Some(failed) = h.apply(op).await {
                    // The disk stopped answering under this operation: cut the power now.
                    let image = h.sim.power_loss(torn_model(mode, 1, ops.len() as u64));
                    h.restart(image, Some(failed)).await;
                }
            }
        }
    }
    let image = h.sim.power_loss(Torn::Clean);
    let image = if survives_power_loss(mode) { image } else { h.sim.process_crash() };
    h.restart(image, None).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn file_durable_survives_power_cuts(ops in prop::collection::vec(op(), 1..60)) {
        block_on(run(StorageMode::FileDurable, ops));
    }

    #[test]
    fn acid_survives_power_cuts(ops in prop::collection::vec(op(), 1..60)) {
        block_on(run(StorageMode::Acid, ops));
    }

    #[test]
    fn file_fast_survives_process_crashes(ops in prop::collection::vec(op(), 1..60)) {
        block_on(run(StorageMode::FileFast, ops));
    }
}

/// A retried producer append after a power cut is a duplicate, not a second copy: the
/// producer state lives in the log with the data it describes.
#[test]
fn producer_retry_after_power_cut_is_deduplicated() {
    for mode in [StorageMode::FileDurable, StorageMode::Acid] {
        block_on(producer_retry_after_power_cut(mode));
    }
}

async fn producer_retry_after_power_cut(mode: StorageMode) {
    {
        let mut h = Harness::new(mode).await;
        h.apply(&Op::Create { stream: 0, json: false, closed: false, body: vec![] }).await;
        let append = Op::Append {
            stream: 0,
            body: b"once".to_vec(),
            producer: Some((0, 0, 0)),
            close: false,
        };
        h.apply(&append).await;
        let image = h.sim.power_loss(Torn::Clean);
        h.restart(image, None).await;
        let retry = AppendRequest::data("text/plain", "once").with_producer("p0", 0, 0);
        let done = h.file.append("s0", retry).await.unwrap();
        assert_eq!(done.kind, ds_engine::AppendKind::Duplicate);
        let chunk = h.file.read("s0", ReadFrom::Start).await.unwrap();
        assert_eq!(chunk.parts.concat(), b"once");
    }
}

/// Regression (issue 13): a refusal computed from a change still in its commit (a close, a
/// producer's epoch bump) was answered at once; when that commit then failed, the client had
/// been told "closed" or "fenced" about a stream that, after the restart, was neither. Such
/// a refusal now waits for the commit it rests on, and fails with it.
#[test]
fn refusals_wait_for_the_commit_they_rest_on() {
    for mode in [StorageMode::FileDurable, StorageMode::Acid] {
        block_on(refusal_waits(mode, true));
        block_on(refusal_waits(mode, false));
    }
}

async fn refusal_waits(mode: StorageMode, commit_fails: bool) {
    let mut h = Harness::new(mode).await;
    h.apply(&Op::Create { stream: 0, json: false, closed: false, body: vec![] }).await;
    let bump = AppendRequest::data("text/plain", "bump").with_producer("p0", 1, 0);
    h.file.append("s0", bump).await.unwrap();
    if commit_fails {
        h.sim.fail_at_sync(0);
    }
    let close = AppendRequest { close: true, ..AppendRequest::data("text/plain", "last") };
    let closing = h.file.begin_append("s0", close).unwrap();
    let epoch = AppendRequest::data("text/plain", "epoch 2").with_producer("p0", 2, 0);
    let bumping = h.file.begin_append("s0", epoch);
    let late = h.file.begin_append("s0", AppendRequest::data("text/plain", "late"));
    let closed = closing.durable().await;
    let late = match late {
        Ok(ticket) => ticket.durable().await,
        Err(e) => Err(e),
    };
    let bumping = match bumping {
        Ok(ticket) => ticket.durable().await,
        Err(e) => Err(e),
    };
    if commit_fails {
        assert!(closed.as_ref().is_err_and(is_failure), "{mode:?}: {closed:?}");
        assert!(late.as_ref().is_err_and(is_failure), "{mode:?}: told {late:?} of a failed close");
        assert!(bumping.as_ref().is_err_and(is_failure), "{mode:?}: {bumping:?}");
        let image = h.sim.power_loss(Torn::Clean);
        h.sim = image;
        h.file = open(mode, &h.sim, &h.clock).await;
        let info = h.file.head("s0").await.unwrap();
        assert!(!info.closed, "{mode:?}: the close never became durable");
        let data = h.file.read("s0", ReadFrom::Start).await.unwrap().parts.concat();
        assert_eq!(data, b"bump", "{mode:?}: nothing refused or failed is in the stream");
    } else {
        assert!(closed.is_ok(), "{mode:?}");
        assert!(matches!(late, Err(Error::StreamClosed { .. })), "{mode:?}: {late:?}");
        assert!(matches!(bumping, Err(Error::StreamClosed { .. })), "{mode:?}: {bumping:?}");
    }
}

/// An append that finds its stream being deleted waits for the delete to be durable before
/// it is told 404; if the delete fails, so does the append (503), and after the restart the
/// stream is back without it.
#[test]
fn a_404_waits_for_the_delete_it_rests_on() {
    for mode in [StorageMode::FileDurable, StorageMode::Acid] {
        block_on(append_during_delete(mode, true));
        block_on(append_during_delete(mode, false));
    }
}

async fn append_during_delete(mode: StorageMode, delete_fails: bool) {
    let mut h = Harness::new(mode).await;
    h.apply(&Op::Create { stream: 0, json: false, closed: false, body: b"keep".to_vec() }).await;
    if delete_fails {
        h.sim.fail_at_sync(0);
    }
    let late = async {
        // Let the delete mark the stream removed and start making that durable.
        tokio::task::yield_now().await;
        match h.file.begin_append("s0", AppendRequest::data("text/plain", "late")) {
            Ok(ticket) => ticket.durable().await,
            Err(e) => Err(e),
        }
    };
    let (deleted, late) = tokio::join!(h.file.delete("s0"), late);
    if delete_fails {
        assert!(deleted.as_ref().is_err_and(is_failure), "{mode:?}: {deleted:?}");
        assert!(late.as_ref().is_err_and(is_failure), "{mode:?}: told {late:?} of a failed delete");
        let image = h.sim.power_loss(Torn::Clean);
        h.sim = image;
        h.file = open(mode, &h.sim, &h.clock).await;
        if let Ok(chunk) = h.file.read("s0", ReadFrom::Start).await {
            assert_eq!(chunk.parts.concat(), b"keep", "{mode:?}: the refused append is absent");
        }
    } else {
        assert!(deleted.is_ok(), "{mode:?}");
        assert_eq!(late.unwrap_err(), Error::NotFound, "{mode:?}");
    }
}
