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
    FailSync {
        after: u64,
    },
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
        1 => (0u64..4).prop_map(|after| Op::FailSync { after }),
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
}

fn config(mode: StorageMode) -> EngineConfig {
    EngineConfig {
        mode,
        data_dir: PathBuf::from("/data"),
        read_chunk_bytes: 64,
        acid_shard_count: 2,
        ..EngineConfig::default()
    }
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
            Op::PowerCut { .. } | Op::ProcessCrash | Op::FailSync { .. } => unreachable!(),
        };
        assert_eq!(got, want, "file store and reference disagree on {op:?}");
        None
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
            Op::Delete { stream } => {
                let _ = self.reference.delete(STREAMS[*stream]).await;
            }
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
            Op::FailSync { after } if survives_power_loss(mode) => h.sim.fail_at_sync(*after),
            Op::FailSync { .. } => {}
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
