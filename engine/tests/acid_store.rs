//! Stories of the acid store that the crash model does not tell on its own: the shard count is
//! fixed by the manifest, concurrent appends on a shard share one commit, and deletes and
//! expiry leave no rows behind.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ds_engine::acid::layout;
use ds_engine::acid::tables::{DATA, META, NAMES, PRODUCERS, TAILS};
use ds_engine::fs::Fs;
use ds_engine::fs::sim::{SimFs, Torn};
use ds_engine::{
    AppendRequest, ContentType, CreateRequest, Engine, EngineConfig, Expiry, ManualClock, ReadFrom,
    StorageMode,
};
use redb::{ReadableDatabase, ReadableTableMetadata};

fn config(shards: u32) -> EngineConfig {
    EngineConfig {
        mode: StorageMode::Acid,
        data_dir: PathBuf::from("/data"),
        acid_shard_count: shards,
        journal_bytes: 0,
        ..EngineConfig::default()
    }
}

async fn open(shards: u32, sim: &SimFs, clock: &ManualClock) -> Engine {
    let engine =
        Engine::open_on(config(shards), Arc::new(clock.clone()), Arc::new(sim.clone())).unwrap();
    engine.ready().await.unwrap();
    engine
}

fn create(expiry: Expiry) -> CreateRequest {
    CreateRequest {
        content_type: ContentType::new("text/plain"),
        expiry,
        closed: false,
        body: "a".into(),
    }
}

/// Rows per table (names, meta, tails, producers, data) over every shard, read from the
/// files of a stopped engine.
fn rows(sim: &SimFs, shards: u32) -> [u64; 5] {
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let dbs = layout::open_shards(&fs, &layout::acid_dir(Path::new("/data")), shards).unwrap();
    let mut out = [0; 5];
    for db in dbs {
        let txn = db.begin_read().unwrap();
        out[0] += txn.open_table(NAMES).unwrap().len().unwrap();
        out[1] += txn.open_table(META).unwrap().len().unwrap();
        out[2] += txn.open_table(TAILS).unwrap().len().unwrap();
        out[3] += txn.open_table(PRODUCERS).unwrap().len().unwrap();
        out[4] += txn.open_table(DATA).unwrap().len().unwrap();
    }
    out
}

/// Streams are placed by hash, so a data directory laid out for 4 shards refuses to open
/// with 8, saying what to set.
#[tokio::test]
async fn the_shard_count_is_fixed_by_the_manifest() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = open(4, &sim, &clock).await;
    engine.create("s", create(Expiry::Never)).await.unwrap();
    drop(engine);
    let engine =
        Engine::open_on(config(8), Arc::new(clock.clone()), Arc::new(sim.clone())).unwrap();
    let why = engine.ready().await.unwrap_err();
    assert!(why.contains("laid out for 4 shards") && why.contains("set it to 4"), "{why}");
    let engine = open(4, &sim, &clock).await;
    let chunk = engine.read("s", ReadFrom::Start).await.unwrap();
    assert_eq!(chunk.parts.concat(), b"a");
}

/// Releases held syncs when a test ends, even by a panic, so the committers can stop.
struct Release(SimFs);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release_syncs();
    }
}

async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("condition never held");
}

/// Group commit: while one commit is syncing, appends to sixteen other streams of the shard
/// queue up, and all of them are made durable by the next single commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_waiting_on_a_shard_share_one_commit() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = Arc::new(open(1, &sim, &clock).await);
    for i in 0..17 {
        engine.create(&format!("s{i}"), create(Expiry::Never)).await.unwrap();
    }
    let before = sim.syncs();
    engine.append("s0", AppendRequest::data("text/plain", "x")).await.unwrap();
    let per_commit = sim.syncs() - before;
    assert!(per_commit >= 1, "a commit syncs");
    sim.hold_syncs();
    let _release = Release(sim.clone());
    let append = |name: String| {
        let engine = engine.clone();
        tokio::spawn(
            async move { engine.append(&name, AppendRequest::data("text/plain", "y")).await },
        )
    };
    let first = append("s0".into());
    until(|| sim.syncs_waiting() == 1).await;
    let before = sim.syncs();
    let rest: Vec<_> = (1..17).map(|i| append(format!("s{i}"))).collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    sim.release_syncs();
    first.await.unwrap().unwrap();
    for task in rest {
        task.await.unwrap().unwrap();
    }
    // The held commit's own syncs, then one commit for all sixteen.
    let syncs = sim.syncs() - before;
    assert!(syncs <= 2 * per_commit, "{syncs} syncs for 16 appends ({per_commit} per commit)");
    for i in 1..17 {
        let chunk = engine.read(&format!("s{i}"), ReadFrom::Start).await.unwrap();
        assert_eq!(chunk.parts.concat(), b"ay");
    }
}

/// Regression: a producer's retry that arrives while its original is being committed waits
/// for a round of its own that writes nothing (the transaction is aborted); that round was
/// counted in the commit metrics as a commit of no appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_of_only_duplicates_is_not_counted_as_a_commit() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = Arc::new(open(1, &sim, &clock).await);
    engine.create("s", create(Expiry::Never)).await.unwrap();
    let rounds = |engine: &Engine| {
        let (buckets, sum) = engine.stats().commits.appends.snapshot();
        (buckets.iter().map(|(_, n)| n).sum::<u64>(), sum)
    };
    let before = rounds(&engine);
    sim.hold_syncs();
    let _release = Release(sim.clone());
    let append = || {
        let engine = engine.clone();
        tokio::spawn(async move {
            let request = AppendRequest::data("text/plain", "once").with_producer("p", 0, 0);
            engine.append("s", request).await
        })
    };
    let original = append();
    until(|| sim.syncs_waiting() == 1).await;
    let retry = append();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    sim.release_syncs();
    original.await.unwrap().unwrap();
    retry.await.unwrap().unwrap();
    let after = rounds(&engine);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1), "one round of one append");
    let chunk = engine.read("s", ReadFrom::Start).await.unwrap();
    assert_eq!(chunk.parts.concat(), b"aonce");
}

/// A delete or an expiry removes every row of the stream in one transaction: nothing is left
/// behind after a power cut, and a stream recreated under the same name starts empty.
#[tokio::test]
async fn deletes_and_expiry_leave_no_rows() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = open(2, &sim, &clock).await;
    engine.create("gone", create(Expiry::Never)).await.unwrap();
    engine.create("ttl", create(Expiry::IdleTtl { secs: 1 })).await.unwrap();
    engine.create("kept", create(Expiry::Never)).await.unwrap();
    for name in ["gone", "ttl", "kept"] {
        let req = AppendRequest::data("text/plain", "b").with_producer("p", 0, 0);
        engine.append(name, req).await.unwrap();
    }
    engine.delete("gone").await.unwrap();
    clock.advance_ms(1_000);
    assert_eq!(engine.sweep_expired().await, 1);
    drop(engine);
    let sim = sim.power_loss(Torn::Clean);
    // One stream left: one name, meta and tail row, one producer, two appends.
    assert_eq!(rows(&sim, 2), [1, 1, 1, 1, 2]);
    let engine = open(2, &sim, &clock).await;
    assert!(engine.head("gone").await.is_err() && engine.head("ttl").await.is_err());
    engine.create("gone", create(Expiry::Never)).await.unwrap();
    let chunk = engine.read("gone", ReadFrom::Start).await.unwrap();
    assert_eq!(chunk.parts.concat(), b"a", "a recreated stream does not see the old rows");
    let retry = AppendRequest::data("text/plain", "b").with_producer("p", 0, 0);
    let done = engine.append("gone", retry).await.unwrap();
    assert_eq!(done.kind, ds_engine::AppendKind::Appended, "nor the old producer state");
}

/// Large opaque appends are stored as several rows (64 KiB page runs, not one value redb
/// would round up to twice its size); reads still cut them exactly where the memory store
/// does: the same chunks, the same next offsets, from any starting offset.
#[tokio::test]
async fn appends_split_into_rows_read_like_the_memory_store() {
    use ds_engine::acid::tables::ROW_PAYLOAD_MAX as ROW;
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let acid = open(2, &sim, &clock).await;
    let memory = Engine::open_with_clock(EngineConfig::default(), Arc::new(clock.clone())).unwrap();
    let text: String = "añ€😀".repeat(3 * ROW / 10);
    let sizes = [1, ROW - 1, ROW, ROW + 1, 3 * ROW + 5];
    for (name, ct) in [("bin", "application/octet-stream"), ("txt", "text/plain")] {
        let req = CreateRequest { body: bytes::Bytes::new(), ..create(Expiry::Never) };
        let req = CreateRequest { content_type: ContentType::new(ct), ..req };
        for engine in [&acid, &memory] {
            engine.create(name, req.clone()).await.unwrap();
            for (i, size) in sizes.iter().enumerate() {
                let body: bytes::Bytes = if ct == "text/plain" {
                    text.as_bytes()[..text.floor_char_boundary(*size)].to_vec().into()
                } else {
                    (0..*size).map(|b| (b + i) as u8).collect::<Vec<u8>>().into()
                };
                engine.append(name, AppendRequest::data(ct, body)).await.unwrap();
            }
        }
        let tail = acid.head(name).await.unwrap().tail;
        assert_eq!(tail, memory.head(name).await.unwrap().tail);
        for max in [1000, ROW, 70_000, 200_000] {
            for start in [0, 5, ROW as u64 + 7, 2 * ROW as u64 + 2] {
                let mut from = ReadFrom::At(ds_engine::Offset::at(start));
                loop {
                    let a = acid.read_at_most(name, from, max).await.unwrap();
                    let m = memory.read_at_most(name, from, max).await.unwrap();
                    assert_eq!(
                        (a.next, a.up_to_date),
                        (m.next, m.up_to_date),
                        "{name} {max} {from:?}"
                    );
                    assert_eq!(a.parts.concat(), m.parts.concat(), "{name} {max} {from:?}");
                    if a.up_to_date {
                        break;
                    }
                    from = ReadFrom::At(a.next);
                }
            }
        }
    }
    drop(acid);
    // An append of up to ROW bytes is one row; a larger one spans as many as it needs.
    let rows_of = |n: usize| n.div_ceil(ROW) as u64;
    let binary: u64 = sizes.iter().map(|n| rows_of(*n)).sum();
    let text: u64 = sizes.iter().map(|n| rows_of(text.floor_char_boundary(*n))).sum();
    assert_eq!((binary, rows(&sim, 2)[4]), (9, binary + text));
}

/// Regression: a create whose caller went away (hyper drops the handler of a client that
/// hangs up) committed its rows but never recorded the stream or its id in memory, so the
/// next create on the shard took the same id: two names on one id, each reading the other's
/// rows, and after a delete the server could not start. Creates and deletes now run to the
/// end whatever happens to their caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_or_delete_abandoned_by_its_caller_still_completes() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = Arc::new(open(1, &sim, &clock).await);
    engine.create("watched", create(Expiry::Never)).await.unwrap();
    let (_, mut watch) = engine.subscribe("watched").await.unwrap();
    sim.hold_syncs();
    let _release = Release(sim.clone());
    let big = CreateRequest { body: vec![b'a'; 200_000].into(), ..create(Expiry::Never) };
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(30),
        engine.create("first", big.clone()),
    )
    .await;
    assert!(abandoned.is_err(), "the create waits on the held sync and is given up");
    let gone = tokio::time::timeout(std::time::Duration::from_millis(30), engine.delete("watched"));
    assert!(gone.await.is_err(), "the delete is given up too");
    sim.release_syncs();
    let second = CreateRequest { body: vec![b'b'; 70_000].into(), ..create(Expiry::Never) };
    engine.create("second", second).await.unwrap();
    for (name, byte, len) in [("first", b'a', 200_000), ("second", b'b', 70_000)] {
        let chunk = engine.read(name, ReadFrom::Start).await.unwrap();
        assert_eq!(chunk.parts.concat(), vec![byte; len], "{name}");
    }
    let told = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        watch.wait_beyond(ds_engine::Offset::at(u64::MAX >> 1)),
    );
    assert!(told.await.expect("the watcher of the deleted stream is told").gone);
    drop(engine);
    drop(_release);
    assert_eq!(rows(&sim, 1)[..3], [2, 2, 2], "two streams, one id each");
    let engine = open(1, &sim, &clock).await;
    assert_eq!(engine.read("second", ReadFrom::Start).await.unwrap().parts.concat().len(), 70_000);
}

/// Live readers of an acid stream read what woke them from a cache of the latest appends
/// instead of a redb read transaction each (1,000 SSE readers would otherwise run 1,000
/// transactions per append). The cache must not change a single chunk: a watched stream
/// reads, from every offset and for several chunk sizes, exactly as the memory store does
/// with the same appends (opaque, text split at characters, JSON split at messages, large
/// appends spanning several rows).
#[tokio::test]
async fn a_watched_stream_reads_like_the_memory_store() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let acid = open(2, &sim, &clock).await;
    let memory = Engine::open(EngineConfig::default()).unwrap();
    let text: String = "añ€😀".repeat(30);
    let json: Vec<String> =
        (0..5).map(|i| format!("[{{\"n\":{i}}},\"{}\"]", "x".repeat(i * 37))).collect();
    let big: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let streams: [(&str, &str, Vec<bytes::Bytes>); 3] = [
        ("t", "text/plain", vec![text.clone().into(), "b".into(), text.into()]),
        ("j", "application/json", json.into_iter().map(bytes::Bytes::from).collect()),
        ("o", "application/octet-stream", vec![big.into(), vec![7u8; 10].into()]),
    ];
    for (name, ct, appends) in &streams {
        for engine in [&acid, &memory] {
            let req = CreateRequest {
                content_type: ContentType::new(ct),
                expiry: Expiry::Never,
                closed: false,
                body: bytes::Bytes::new(),
            };
            engine.create(name, req).await.unwrap();
        }
        let (_, watch) = acid.subscribe(name).await.unwrap();
        for body in appends {
            for engine in [&acid, &memory] {
                engine.append(name, AppendRequest::data(ct, body.clone())).await.unwrap();
            }
        }
        let tail = acid.head(name).await.unwrap().tail;
        assert_eq!(tail, memory.head(name).await.unwrap().tail);
        for max in [1usize, 7, 64, 1000, 70_000, 1 << 20] {
            let (mut from, mut from_memory) = (ReadFrom::Start, ReadFrom::Start);
            loop {
                let a = acid.read_at_most(name, from, max).await.unwrap();
                let m = memory.read_at_most(name, from_memory, max).await.unwrap();
                assert_eq!((a.start, a.next, a.up_to_date), (m.start, m.next, m.up_to_date));
                assert_eq!(
                    a.parts.concat(),
                    m.parts.concat(),
                    "{name} from {:?}, max {max}",
                    a.start
                );
                if a.up_to_date {
                    break;
                }
                // Each store's own tokens: the two streams are different incarnations.
                from = ReadFrom::At(a.next);
                from_memory = ReadFrom::At(m.next);
            }
        }
        drop(watch);
    }
}
