//! Stories of the persistent stores that the crash model does not tell on its own: a failed
//! sync stops all writes, deletes and expiry are durable, a second engine cannot share a data
//! directory, and a tiny open-file pool still serves many streams. Stories that hold for the
//! acid store too run in both; acid-only ones are in `acid_store.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ds_engine::fs::Fs;
use ds_engine::fs::sim::{SimFs, Torn};
use ds_engine::{
    AppendRequest, Appended, ContentType, CreateRequest, Engine, EngineConfig, Error, Expiry,
    ManualClock, OpenError, ReadFrom, StorageMode,
};

/// The modes whose acknowledged writes survive power loss.
const DURABLE: [StorageMode; 2] = [StorageMode::FileDurable, StorageMode::Acid];

fn config(mode: StorageMode) -> EngineConfig {
    EngineConfig { mode, data_dir: PathBuf::from("/data"), ..EngineConfig::default() }
}

async fn open(mode: StorageMode, sim: &SimFs, clock: &ManualClock) -> Engine {
    let engine =
        Engine::open_on(config(mode), Arc::new(clock.clone()), Arc::new(sim.clone())).unwrap();
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

async fn text(engine: &Engine, name: &str) -> String {
    let chunk = engine.read(name, ReadFrom::Start).await.unwrap();
    String::from_utf8(chunk.parts.concat()).unwrap()
}

/// An fsync that fails is never retried: the store refuses every later write (503) and keeps
/// serving reads; after a restart, recovery keeps what was durable and writes work again.
#[tokio::test]
async fn a_failed_sync_stops_writes_until_restart() {
    for mode in DURABLE {
        a_failed_sync_stops_writes(mode).await;
    }
}

async fn a_failed_sync_stops_writes(mode: StorageMode) {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = open(mode, &sim, &clock).await;
    engine.create("s", create(Expiry::Never)).await.unwrap();
    engine.append("s", AppendRequest::data("text/plain", "b")).await.unwrap();
    sim.fail_one_sync(0);
    let err = engine.append("s", AppendRequest::data("text/plain", "c")).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    let again = engine.append("s", AppendRequest::data("text/plain", "d")).await.unwrap_err();
    assert!(matches!(again, Error::Unavailable(_)), "poisoned: {again:?}");
    assert_eq!(text(&engine, "s").await, "ab", "reads go on; the failed append is not visible");
    drop(engine);
    let sim =
        sim.power_loss(if mode == StorageMode::Acid { Torn::Pages(3) } else { Torn::Prefix(3) });
    let engine = open(mode, &sim, &clock).await;
    assert_eq!(text(&engine, "s").await, "ab");
    engine.append("s", AppendRequest::data("text/plain", "e")).await.unwrap();
    assert_eq!(text(&engine, "s").await, "abe");
}

/// Regression (issue 13): an append answered 503 because the sync under it failed came back
/// after a restart, its bytes having reached the disk anyway (here: the process dies with
/// them in the page cache). The failed commit's writes are now cut at the next start, from a
/// list written before the 503.
#[tokio::test]
async fn a_failed_append_never_comes_back() {
    for mode in DURABLE {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
        let engine = open(mode, &sim, &clock).await;
        engine.create("s", create(Expiry::Never)).await.unwrap();
        engine.append("s", AppendRequest::data("text/plain", "b")).await.unwrap();
        sim.fail_one_sync(0);
        let err = engine.append("s", AppendRequest::data("text/plain", "c")).await.unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{mode:?}: {err:?}");
        drop(engine);
        let sim = sim.process_crash();
        let engine = open(mode, &sim, &clock).await;
        assert_eq!(text(&engine, "s").await, "ab", "{mode:?}: the failed append is gone");
        let files = sim.list(Path::new("/data")).unwrap();
        assert!(!files.iter().any(|f| f == "CUT"), "{mode:?}: the cut list is used up: {files:?}");
        engine.append("s", AppendRequest::data("text/plain", "d")).await.unwrap();
        assert_eq!(text(&engine, "s").await, "abd", "{mode:?}");
    }
}

/// A create answered as failed because its last sync (the directory's, after the metadata's
/// rename) failed must not exist after a restart, although the rename may well have reached
/// the disk (here: the process dies with it in the page cache).
#[tokio::test]
async fn a_failed_create_never_comes_back() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = open(StorageMode::FileDurable, &sim, &clock).await;
    // Syncs of a create: the log, the metadata's temporary file, the directory.
    sim.fail_one_sync(2);
    let err = engine.create("s", create(Expiry::Never)).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_) | Error::Storage(_)), "{err:?}");
    drop(engine);
    let sim = sim.process_crash();
    let engine = open(StorageMode::FileDurable, &sim, &clock).await;
    assert_eq!(engine.head("s").await.unwrap_err(), Error::NotFound, "the failed create is gone");
    let files = sim.list(Path::new("/data")).unwrap();
    assert!(
        !files.iter().any(|f| f.ends_with(".meta") || f.ends_with(".log") || f == "CUT"),
        "nothing of it is left: {files:?}"
    );
    engine.create("s", create(Expiry::Never)).await.unwrap();
    assert_eq!(text(&engine, "s").await, "a");
}

/// A 204 to DELETE means the stream is gone for good, power cut or not; expired streams are
/// removed from disk by the sweeper.
#[tokio::test]
async fn deletes_and_expiry_are_durable() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = open(StorageMode::FileDurable, &sim, &clock).await;
    engine.create("gone", create(Expiry::Never)).await.unwrap();
    engine.create("ttl", create(Expiry::IdleTtl { secs: 1 })).await.unwrap();
    engine.create("kept", create(Expiry::Never)).await.unwrap();
    engine.delete("gone").await.unwrap();
    clock.advance_ms(1_000);
    assert_eq!(engine.sweep_expired().await, 1);
    assert_eq!(
        sim.list(Path::new("/data")).unwrap().iter().filter(|n| n.ends_with(".meta")).count(),
        1
    );
    drop(engine);
    let sim = sim.power_loss(Torn::Clean);
    let engine = open(StorageMode::FileDurable, &sim, &clock).await;
    assert_eq!(engine.head("gone").await.unwrap_err(), Error::NotFound);
    assert_eq!(engine.head("ttl").await.unwrap_err(), Error::NotFound);
    assert_eq!(text(&engine, "kept").await, "a");
    assert_eq!(
        sim.list(Path::new("/data")).unwrap().iter().filter(|n| n.ends_with(".log")).count(),
        1
    );
}

/// Regression guard for the open-file pool: with room for two open files, fifty streams
/// written round-robin still read back whole.
#[tokio::test]
async fn a_small_file_pool_serves_many_streams() {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let config = EngineConfig { max_open_files: 2, ..config(StorageMode::FileFast) };
    let engine = Engine::open_on(config, Arc::new(clock.clone()), Arc::new(sim.clone())).unwrap();
    engine.ready().await.unwrap();
    for i in 0..50 {
        engine.create(&format!("s{i}"), create(Expiry::Never)).await.unwrap();
    }
    for round in 0..3 {
        for i in 0..50 {
            engine
                .append(&format!("s{i}"), AppendRequest::data("text/plain", format!("{round}")))
                .await
                .unwrap();
        }
    }
    for i in 0..50 {
        assert_eq!(text(&engine, &format!("s{i}")).await, "a012");
    }
}

/// A second server on the same directory refuses to start, naming the problem.
#[tokio::test]
async fn a_data_directory_serves_one_engine_at_a_time() {
    let dir = std::env::temp_dir().join(format!("ds-lock-test-{}", std::process::id()));
    let config = EngineConfig {
        mode: StorageMode::FileFast,
        data_dir: dir.clone(),
        ..EngineConfig::default()
    };
    let first = Engine::open(config.clone()).unwrap();
    first.ready().await.unwrap();
    let second = Engine::open(config.clone()).unwrap_err();
    assert!(matches!(second, OpenError::Locked(_)), "{second:?}");
    assert!(second.to_string().contains("in use by another ds-server"));
    drop(first);
    let third = Engine::open(config).unwrap();
    third.ready().await.unwrap();
    drop(third);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A directory that belongs to something else is refused instead of written into.
#[tokio::test]
async fn a_foreign_layout_is_refused() {
    let sim = SimFs::new();
    let f = sim.open(Path::new("/data/LAYOUT"), ds_engine::fs::OpenMode::CreateNew).unwrap();
    f.write_all_at(b"something else 9\n", 0).unwrap();
    let engine = Engine::open_on(
        config(StorageMode::FileFast),
        Arc::new(ManualClock::new(1)),
        Arc::new(sim),
    )
    .unwrap();
    let why = engine.ready().await.unwrap_err();
    assert!(why.contains("not a ds-server file-log directory"), "{why}");
    let err = engine.head("x").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)));
}

/// Releases held syncs when a test ends, even by a panic, so the committer can stop.
struct Release(SimFs);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release_syncs();
    }
}

/// Waits until `f` holds, a few milliseconds at a time (for another thread's progress).
async fn until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("condition never held");
}

/// Regression: an append waiting for its commit while its stream was deleted made the
/// committer fail to reopen the unlinked log, which poisoned the whole store: one client
/// could stop all writes by appending and deleting at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_racing_a_delete_does_not_stop_other_streams() {
    for mode in DURABLE {
        append_racing_a_delete(mode).await;
    }
}

/// Holds a commit round of "busy" open, lets an append to "doomed" be accepted behind it,
/// runs `before_delete`, deletes "doomed" and releases the syncs. Returns the engine and the
/// outcomes of the held append, the delete and the doomed append.
async fn delete_behind_a_held_commit(
    mode: StorageMode,
    before_delete: impl FnOnce(&SimFs),
) -> (Arc<Engine>, Result<Appended, Error>, Result<(), Error>, Result<Appended, Error>) {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = Arc::new(open(mode, &sim, &clock).await);
    engine.create("busy", create(Expiry::Never)).await.unwrap();
    engine.create("doomed", create(Expiry::Never)).await.unwrap();
    sim.hold_syncs();
    let _release = Release(sim.clone());
    let first = {
        let engine = engine.clone();
        tokio::spawn(
            async move { engine.append("busy", AppendRequest::data("text/plain", "1")).await },
        )
    };
    until(|| sim.syncs_waiting() == 1).await;
    // The committer is now inside the held sync: this append is accepted and waits for the
    // next round, which will find its stream removed.
    let doomed = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine.append("doomed", AppendRequest::data("text/plain", "x")).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    before_delete(&sim);
    // In acid mode the delete's transaction waits for the held commit, so it runs as a task.
    let delete = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.delete("doomed").await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    sim.release_syncs();
    let deleted = delete.await.unwrap();
    let first = first.await.unwrap();
    let dropped = doomed.await.unwrap();
    (engine, first, deleted, dropped)
}

async fn append_racing_a_delete(mode: StorageMode) {
    let (engine, first, deleted, lost) = delete_behind_a_held_commit(mode, |_| {}).await;
    deleted.unwrap();
    first.unwrap();
    assert!(matches!(lost, Err(Error::NotFound) | Ok(_)), "{lost:?}");
    engine
        .append("busy", AppendRequest::data("text/plain", "2"))
        .await
        .expect("store still takes writes");
    assert_eq!(text(&engine, "busy").await, "a12");
}

/// Regression (issue 13): an append accepted just before a delete, whose batch the committer
/// then found removed, was answered 404 at once, before the delete was durable. When the
/// delete's own sync then failed, the client had been told the stream was gone, and after
/// the restart it was there. Now that 404 waits for the delete, and fails with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_dropped_by_a_failing_delete_is_not_told_404() {
    for mode in DURABLE {
        append_dropped_by_failing_delete(mode).await;
    }
}

async fn append_dropped_by_failing_delete(mode: StorageMode) {
    // The delete's own sync fails (the file log's directory sync; in acid one of the commits
    // after the held round).
    let fail = |sim: &SimFs| sim.fail_one_sync(if mode == StorageMode::Acid { 1 } else { 0 });
    let (_engine, _, deleted, dropped) = delete_behind_a_held_commit(mode, fail).await;
    if deleted.is_err() {
        // Written before the delete (acid may commit it first), or failed: never "gone".
        assert!(
            matches!(dropped, Err(Error::Unavailable(_)) | Ok(_)),
            "{mode:?}: told {dropped:?} although the delete failed"
        );
    } else {
        assert!(matches!(dropped, Err(Error::NotFound) | Ok(_)), "{mode:?}: {dropped:?}");
    }
    if mode == StorageMode::FileDurable {
        // The directory sync is the first sync after the failure is armed: deterministic.
        // (In acid the order of the held round, the dropped batch and the delete's
        // transaction varies, and so does which commit fails.)
        assert!(deleted.is_err(), "the test meant the delete to fail");
    }
}

/// Regression (issue 13): while a delete was still being made durable, reads, HEAD and live
/// reads already answered 404; had the delete then failed, the stream would have come back
/// after a restart. Until the delete is durable the stream now reads as it was; after it,
/// 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reads_as_it_was_until_its_delete_is_durable() {
    for mode in DURABLE {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
        let engine = Arc::new(open(mode, &sim, &clock).await);
        engine.create("d", create(Expiry::Never)).await.unwrap();
        sim.hold_all_syncs();
        let _release = Release(sim.clone());
        let delete = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.delete("d").await })
        };
        until(|| sim.syncs_waiting() == 1).await;
        assert!(engine.head("d").await.is_ok(), "{mode:?}: HEAD during the delete");
        assert_eq!(text(&engine, "d").await, "a", "{mode:?}: read during the delete");
        assert!(engine.subscribe("d").await.is_ok(), "{mode:?}: live read during the delete");
        sim.release_syncs();
        delete.await.unwrap().unwrap();
        assert_eq!(engine.head("d").await.unwrap_err(), Error::NotFound, "{mode:?}");
        let read = engine.read("d", ReadFrom::Start).await.unwrap_err();
        assert_eq!(read, Error::NotFound, "{mode:?}");
    }
}

/// A fork of a stream whose delete is in flight is refused (404) only once that delete is
/// durable: until then the delete could still fail and the source come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_of_a_stream_being_deleted_waits_for_the_delete() {
    for mode in DURABLE {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
        let engine = Arc::new(open(mode, &sim, &clock).await);
        engine.create("src", create(Expiry::Never)).await.unwrap();
        sim.hold_all_syncs();
        let _release = Release(sim.clone());
        let delete = {
            let engine = engine.clone();
            tokio::spawn(async move { engine.delete("src").await })
        };
        until(|| sim.syncs_waiting() == 1).await;
        let fork = {
            let engine = engine.clone();
            let req = ds_engine::ForkRequest {
                source: "src".into(),
                offset: None,
                sub: 0,
                content_type_given: false,
            };
            tokio::spawn(async move { engine.fork("f", create(Expiry::Never), req).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert!(!fork.is_finished(), "{mode:?}: answered before the delete was durable");
        sim.release_syncs();
        delete.await.unwrap().unwrap();
        assert_eq!(fork.await.unwrap().unwrap_err(), Error::NotFound, "{mode:?}");
        assert_eq!(engine.head("f").await.unwrap_err(), Error::NotFound, "{mode:?}");
    }
}

/// Regression: a producer's retry arriving while the original append's sync was failing
/// was answered "duplicate, 204" although the original never became durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_an_append_whose_sync_failed_is_not_acknowledged() {
    for mode in DURABLE {
        duplicate_of_a_failed_append(mode).await;
    }
}

async fn duplicate_of_a_failed_append(mode: StorageMode) {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = Arc::new(open(mode, &sim, &clock).await);
    engine.create("p", create(Expiry::Never)).await.unwrap();
    sim.fail_one_sync(0);
    sim.hold_syncs();
    let _release = Release(sim.clone());
    let request = AppendRequest::data("text/plain", "once").with_producer("w", 0, 0);
    let original = {
        let (engine, req) = (engine.clone(), request.clone());
        tokio::spawn(async move { engine.append("p", req).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let retry = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.append("p", request).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    sim.release_syncs();
    assert!(matches!(original.await.unwrap(), Err(Error::Unavailable(_))));
    let retried = retry.await.unwrap();
    assert!(matches!(retried, Err(Error::Unavailable(_))), "must not be acknowledged: {retried:?}");
}

/// Regression: a record larger than the read window was read whole for every chunk taken
/// from it (160 reads of 10 MiB to send one 10 MiB record as 64 KiB SSE events). Now each
/// chunk reads only its part; bytes, text (whole characters) and JSON (whole messages) read
/// back exactly, in bounded chunks.
#[tokio::test]
async fn a_large_record_is_read_in_parts() {
    for mode in [StorageMode::FileFast, StorageMode::Acid] {
        large_record_read_in_parts(mode).await;
    }
}

async fn large_record_read_in_parts(mode: StorageMode) {
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = open(mode, &sim, &clock).await;
    let text: String = "añ€😀".repeat(40_000);
    let binary: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    let json = format!(
        "[{}]",
        (0..2_000)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)))
            .collect::<Vec<_>>()
            .join(",")
    );
    for (name, ct, body) in [
        ("text", "text/plain", bytes::Bytes::from(text.clone())),
        ("binary", "application/octet-stream", bytes::Bytes::from(binary.clone())),
        ("json", "application/json", bytes::Bytes::from(json.clone())),
    ] {
        let req = CreateRequest {
            content_type: ContentType::new(ct),
            expiry: Expiry::Never,
            closed: false,
            body: bytes::Bytes::new(),
        };
        engine.create(name, req).await.unwrap();
        engine.append(name, AppendRequest::data(ct, body)).await.unwrap();
    }
    let max = 16 * 1024;
    for name in ["text", "binary", "json"] {
        let mut from = ReadFrom::Start;
        let mut all = Vec::new();
        let mut chunks = 0;
        loop {
            let chunk = engine.read_at_most(name, from, max).await.unwrap();
            let (done, next) = (chunk.up_to_date, chunk.next);
            let body = chunk.into_body().concat();
            match name {
                "text" => {
                    assert!(body.len() <= max);
                    all.extend_from_slice(
                        std::str::from_utf8(&body).expect("whole characters").as_bytes(),
                    );
                }
                "binary" => {
                    assert!(body.len() <= max);
                    all.extend_from_slice(&body);
                }
                _ => {
                    let values: Vec<serde_json::Value> =
                        serde_json::from_slice(&body).expect("a JSON array");
                    assert!(!values.is_empty() && body.len() <= max + 300);
                    all.extend(values.iter().map(|v| v["n"].as_u64().unwrap() as u8));
                }
            }
            chunks += 1;
            if done {
                break;
            }
            from = ReadFrom::At(next);
        }
        assert!(chunks > 20, "{name}: read in parts ({chunks} chunks)");
        match name {
            "text" => assert_eq!(all, text.as_bytes()),
            "binary" => assert_eq!(all, binary),
            _ => assert_eq!(all, (0..2_000).map(|i| i as u8).collect::<Vec<_>>()),
        }
    }
}

/// File-log reads of large windows come straight from the page cache (mapped, no copy), and
/// every record is CRC-checked the first time this process serves it (or was written by it).
/// A payload byte damaged on disk while the server was down is therefore refused by the
/// first read that reaches it after a restart (a clean shutdown checkpoints, so recovery
/// reads no log), while the records before it still read back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_reads_still_catch_a_record_damaged_at_rest() {
    let dir = std::env::temp_dir().join(format!("ds-map-test-{}", std::process::id()));
    let config = EngineConfig {
        mode: StorageMode::FileDurable,
        data_dir: dir.clone(),
        ..EngineConfig::default()
    };
    let records: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i; 64 * 1024]).collect();
    let read_all = |engine: Arc<Engine>| async move {
        let mut from = ReadFrom::Start;
        let mut all = Vec::new();
        loop {
            let chunk = engine.read("m", from).await?;
            let (done, next) = (chunk.up_to_date, chunk.next);
            all.extend_from_slice(&chunk.into_body().concat());
            if done {
                return Ok::<_, Error>(all);
            }
            from = ReadFrom::At(next);
        }
    };
    let engine = Arc::new(Engine::open(config.clone()).unwrap());
    engine.ready().await.unwrap();
    let octet = "application/octet-stream";
    let req = CreateRequest {
        content_type: ContentType::new(octet),
        expiry: Expiry::Never,
        closed: false,
        body: bytes::Bytes::new(),
    };
    engine.create("m", req).await.unwrap();
    for r in &records {
        engine.append("m", AppendRequest::data(octet, r.clone())).await.unwrap();
    }
    assert_eq!(read_all(engine.clone()).await.unwrap(), records.concat());
    engine.shutdown().await.unwrap();
    drop(engine);

    // Flip one byte in the middle of the 21st record's payload.
    let log = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    let run = vec![20u8; 64 * 1024];
    let at = bytes.windows(run.len()).position(|w| w == run.as_slice()).unwrap();
    bytes[at + 1000] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();

    let engine = Arc::new(Engine::open(config).unwrap());
    engine.ready().await.unwrap();
    let err = read_all(engine.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
    let first = engine.read("m", ReadFrom::Start).await.unwrap().into_body().concat();
    assert!(!first.is_empty() && records.concat().starts_with(&first));
    drop(engine);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `file-durable` acknowledges a round once its journal entry is synced; the logs themselves
/// are synced only when the journal is full and starts over. A power cut after many such
/// resets (a 4 KiB journal, 12 streams, 600 appends, some too large for the journal and synced
/// directly) loses nothing acknowledged, whether the journal was mid-epoch or just reset.
#[tokio::test]
async fn journal_resets_keep_every_acknowledged_append() {
    let clock = ManualClock::new(1_000);
    for cut_after in [1, 37, 250, 600] {
        let sim = SimFs::new();
        let config = EngineConfig { journal_bytes: 4096, ..config(StorageMode::FileDurable) };
        let engine =
            Engine::open_on(config.clone(), Arc::new(clock.clone()), Arc::new(sim.clone()))
                .unwrap();
        engine.ready().await.unwrap();
        let names: Vec<String> = (0..12).map(|i| format!("j/{i}")).collect();
        let mut expected = vec![String::from("a"); names.len()];
        for name in &names {
            engine.create(name, create(Expiry::Never)).await.unwrap();
        }
        for i in 0..cut_after {
            let s = i % names.len();
            // Every 50th append is larger than half the journal: synced directly.
            let len = if i % 50 == 49 { 3000 } else { 1 + i * 7 % 300 };
            let body: String =
                std::iter::repeat_n(char::from(b'b' + (i % 20) as u8), len).collect();
            engine
                .append(&names[s], AppendRequest::data("text/plain", body.clone()))
                .await
                .unwrap();
            expected[s].push_str(&body);
        }
        drop(engine);
        let sim = sim.power_loss(Torn::Prefix(cut_after as u64));
        let engine =
            Engine::open_on(config, Arc::new(clock.clone()), Arc::new(sim.clone())).unwrap();
        engine.ready().await.unwrap();
        for (name, want) in names.iter().zip(&expected) {
            let mut got = String::new();
            let mut from = ReadFrom::Start;
            loop {
                let chunk = engine.read(name, from).await.unwrap();
                got.push_str(std::str::from_utf8(&chunk.parts.concat()).unwrap());
                if chunk.up_to_date {
                    break;
                }
                from = ReadFrom::At(chunk.next);
            }
            assert_eq!(&got, want, "{name} after {cut_after} appends");
        }
    }
}

/// A version-1 directory (no journal) is marked version 2 before a journal is created in it,
/// so that an older server refuses it instead of ignoring the journal; and a server started
/// without a journal still replays the one it finds, then removes it.
#[tokio::test]
async fn layout_2_marks_the_journal_and_a_journal_is_replayed_even_when_turned_off() {
    use ds_engine::log::journal::JOURNAL_NAME;
    use ds_engine::log::recovery::{LAYOUT_FILE, LAYOUT_V1, LAYOUT_V2};
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let dir = Path::new("/data");
    sim.create_dir_all(dir).unwrap();
    let layout = sim.open(&dir.join(LAYOUT_FILE), ds_engine::fs::OpenMode::CreateNew).unwrap();
    layout.write_all_at(LAYOUT_V1, 0).unwrap();
    layout.sync_data().unwrap();
    sim.sync_dir(dir).unwrap();
    let engine = open(StorageMode::FileDurable, &sim, &clock).await;
    assert_eq!(sim.contents(&dir.join(LAYOUT_FILE)).unwrap(), LAYOUT_V2);
    assert!(sim.contents(&dir.join(JOURNAL_NAME)).is_some());
    engine.create("s", create(Expiry::Never)).await.unwrap();
    engine.append("s", AppendRequest::data("text/plain", "b")).await.unwrap();
    drop(engine);
    let sim = sim.power_loss(Torn::Clean);
    let off = EngineConfig { journal_bytes: 0, ..config(StorageMode::FileDurable) };
    let engine = Engine::open_on(off, Arc::new(clock.clone()), Arc::new(sim.clone())).unwrap();
    engine.ready().await.unwrap();
    assert_eq!(text(&engine, "s").await, "ab", "the journal's append was replayed");
    assert!(sim.contents(&dir.join(JOURNAL_NAME)).is_none(), "and the journal removed");
    engine.append("s", AppendRequest::data("text/plain", "c")).await.unwrap();
    drop(engine);
    let sim = sim.power_loss(Torn::Clean);
    let engine = open(StorageMode::FileDurable, &sim, &clock).await;
    assert_eq!(text(&engine, "s").await, "abc", "synced without a journal too");
}

/// `engine-inspect` after a power cut shows what the next start will serve: in
/// `file-durable` the last acknowledged appends may be only in the journal, their logs short
/// on disk, and inspect reads the logs with the journal's entries over them (a torn tail
/// would otherwise be reported where nothing is lost).
#[tokio::test]
async fn inspect_reads_logs_through_the_journal() {
    use ds_engine::inspect;
    let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
    let engine = open(StorageMode::FileDurable, &sim, &clock).await;
    engine.create("s", create(Expiry::Never)).await.unwrap();
    for body in ["b", "c", "d"] {
        engine.append("s", AppendRequest::data("text/plain", body)).await.unwrap();
    }
    drop(engine);
    let sim = sim.power_loss(Torn::Clean);
    let dir = Path::new("/data");
    let report = inspect::verify(&sim, dir).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.journal_entries, 3);
    assert_eq!(report.streams[0].records, 4, "{report:?}");
    let records = inspect::dump(&sim, dir, "s", None).unwrap();
    let previews: Vec<&str> = records.iter().map(|r| r.preview.as_str()).collect();
    assert_eq!(previews, ["a", "b", "c", "d"]);
    assert_eq!(inspect::list(&sim, dir, 1_000).unwrap()[0].records, 4);
    assert!(sim.contents(&dir.join("JOURNAL")).is_some(), "inspect wrote nothing");
    let engine = open(StorageMode::FileDurable, &sim, &clock).await;
    assert_eq!(text(&engine, "s").await, "abcd");
}
