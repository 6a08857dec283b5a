//! Engine-level benchmark of the persistent stores (no HTTP), next to this machine's raw sync
//! rates.
//!
//! ```sh
//! cargo bench --bench engine                 # everything
//! cargo bench --bench engine -- raw appends  # some parts: raw, appends, reads, recovery
//! ```
//!
//! - `raw`: a loop appending 4 KiB to a file and calling `fdatasync`: one writer on one file,
//!   and 64 threads on 64 files. This is the machine's floor for "acknowledged only after
//!   a sync".
//! - `appends`: `Engine::append` of 100-byte records from 1 task on 1 stream, 64 tasks on 1
//!   stream, and 64 tasks on 64 streams, in `file-durable`, `acid` (4 shards, the default, and
//!   1 shard) and `file-fast`; reported with their ratio to the raw single-writer rate and to
//!   the same mode's single-writer rate.
//! - `reads`: catch-up reads of a 64 MiB stream (64 KiB appends) in 1 MiB chunks, from the
//!   start to the tail, in `file-durable` and `acid`.
//! - `recovery`: opening a directory of 10,000 streams (10 records each) after a clean stop
//!   (every stream checkpointed), and after a crash (no checkpoints: every log read whole).
//!
//! Everything runs in a scratch directory under `target/`, on the disk the repository is on.
//! `DS_BENCH_SECS` sets each timed run's length (default 3).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark that fails may panic")]
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ds_engine::{
    AppendRequest, ContentType, CreateRequest, Engine, EngineConfig, Expiry, Limits, StorageMode,
};

fn main() {
    let secs: u64 = std::env::var("DS_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let scratch = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-engine");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let duration = Duration::from_secs(secs);
    println!(
        "ds-engine persistent-store benchmark, {secs} s per run, scratch dir {}",
        scratch.display()
    );
    let mut raw_single = None;
    if want("raw") || want("appends") {
        let single = raw_fsync(&scratch.join("raw1"), 1, duration);
        let parallel = raw_fsync(&scratch.join("raw64"), 64, duration);
        println!("{:<52} {:>10.0} syncs/s", "raw: 1 writer, 1 file, 4 KiB + fdatasync", single);
        println!(
            "{:<52} {:>10.0} syncs/s",
            "raw: 64 threads, 64 files, 4 KiB + fdatasync", parallel
        );
        raw_single = Some(single);
    }
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if want("appends") {
        let raw = raw_single.unwrap_or(1.0);
        for (mode, shards) in MODES {
            let label = label(mode, shards);
            let mut single = 1.0;
            for (writers, streams) in [(1, 1), (64, 1), (64, 64)] {
                let dir = scratch.join(format!("{label}-{writers}-{streams}"));
                let config = config(mode, shards, &dir);
                let rate = rt.block_on(appends(config, writers, streams, duration));
                if writers == 1 {
                    single = rate;
                }
                println!(
                    "{:<52} {:>10.0} appends/s  {:>5.1}x raw single-writer sync  {:>5.1}x own 1-writer",
                    format!("{label}: {writers} writers on {streams} streams, 100 B"),
                    rate,
                    rate / raw,
                    rate / single
                );
            }
        }
    }
    if want("reads") {
        for (mode, shards) in [(StorageMode::FileDurable, 0), (StorageMode::Acid, 4)] {
            let label = label(mode, shards);
            let config = config(mode, shards, &scratch.join(format!("{label}-reads")));
            let (rate, runs) = rt.block_on(reads(config, 64 << 20, 5));
            println!(
                "{:<52} {:>10.2} GB/s  (median of {runs} reads)",
                format!("{label}: read 64 MiB from the start, 1 MiB chunks"),
                rate / 1e9
            );
        }
    }
    if want("recovery") {
        let dir = scratch.join("recovery");
        let (clean, crashed, records) = rt.block_on(recovery(&dir, 10_000, 10));
        println!(
            "{:<52} {:>10.2} s",
            "recovery: 10,000 streams, clean stop (checkpoints)",
            clean.as_secs_f64()
        );
        println!(
            "{:<52} {:>10.2} s   ({records} records read)",
            "recovery: 10,000 streams, after a crash (whole logs)",
            crashed.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

fn raw_fsync(dir: &Path, threads: usize, duration: Duration) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let total = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + duration;
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (path, total) = (dir.join(format!("f{i}")), total.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::File::create(path).unwrap();
                let block = [7u8; 4096];
                let mut n = 0;
                while Instant::now() < stop {
                    f.write_all(&block).unwrap();
                    f.sync_data().unwrap();
                    n += 1;
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    total.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}

/// The modes the append benchmark runs, with the acid shard count (0: not acid).
const MODES: [(StorageMode, u32); 4] = [
    (StorageMode::FileDurable, 0),
    (StorageMode::Acid, 4),
    (StorageMode::Acid, 1),
    (StorageMode::FileFast, 0),
];

fn label(mode: StorageMode, shards: u32) -> String {
    if mode == StorageMode::Acid { format!("acid/{shards}") } else { mode.as_str().to_owned() }
}

fn config(mode: StorageMode, shards: u32, dir: &Path) -> EngineConfig {
    EngineConfig {
        mode,
        data_dir: dir.to_path_buf(),
        limits: Limits { max_stream_bytes: 1 << 40, max_memory_bytes: 1 << 40 },
        read_chunk_bytes: 1 << 20,
        acid_shard_count: shards.max(1),
        journal_bytes: ds_engine::log::journal::DEFAULT_JOURNAL_BYTES,
        ..EngineConfig::default()
    }
}

fn create(ct: &str) -> CreateRequest {
    CreateRequest {
        content_type: ContentType::new(ct),
        expiry: Expiry::Never,
        closed: false,
        body: Default::default(),
    }
}

async fn appends(config: EngineConfig, writers: usize, streams: usize, duration: Duration) -> f64 {
    let engine = Arc::new(Engine::open(config).unwrap());
    engine.ready().await.unwrap();
    for s in 0..streams {
        engine.create(&format!("s{s}"), create("application/octet-stream")).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (engine, stop, done) = (engine.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let name = format!("s{}", w % streams);
                let body = bytes::Bytes::from_static(&[b'x'; 100]);
                while !stop.load(Ordering::Relaxed) {
                    let req = AppendRequest::data("application/octet-stream", body.clone());
                    engine.append(&name, req).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    let total = done.load(Ordering::Relaxed);
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    engine.shutdown().await.unwrap();
    total as f64 / elapsed.as_secs_f64()
}

/// Bytes per second reading a stream of `size` bytes from the start to the tail: the median
/// of `runs` full reads, and `runs`.
async fn reads(config: EngineConfig, size: usize, runs: usize) -> (f64, usize) {
    let engine = Engine::open(config).unwrap();
    engine.ready().await.unwrap();
    engine.create("big", create("application/octet-stream")).await.unwrap();
    let block = bytes::Bytes::from(vec![b'r'; 64 << 10]);
    for _ in 0..size / block.len() {
        let req = AppendRequest::data("application/octet-stream", block.clone());
        engine.append("big", req).await.unwrap();
    }
    let mut rates = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let mut from = ds_engine::ReadFrom::Start;
        let mut total = 0usize;
        loop {
            let chunk = engine.read("big", from).await.unwrap();
            total += chunk.parts.iter().map(bytes::Bytes::len).sum::<usize>();
            if chunk.up_to_date {
                break;
            }
            from = ds_engine::ReadFrom::At(chunk.next);
        }
        assert_eq!(total, size);
        rates.push(total as f64 / t0.elapsed().as_secs_f64());
    }
    engine.shutdown().await.unwrap();
    rates.sort_by(f64::total_cmp);
    (rates[runs / 2], runs)
}

async fn recovery(dir: &Path, streams: usize, records: usize) -> (Duration, Duration, u64) {
    {
        let engine = Engine::open(config(StorageMode::FileFast, 0, dir)).unwrap();
        engine.ready().await.unwrap();
        for s in 0..streams {
            let name = format!("stream-{s}");
            engine.create(&name, create("text/plain")).await.unwrap();
            for r in 0..records {
                let req = AppendRequest::data("text/plain", format!("record {r} of {name}"));
                engine.append(&name, req).await.unwrap();
            }
        }
        engine.shutdown().await.unwrap();
    }
    let clean = timed_open(dir).await;
    // A crash: no checkpoint survives, every log is read from its start.
    for entry in std::fs::read_dir(dir).unwrap() {
        let path: PathBuf = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ckpt") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let crashed = timed_open(dir).await;
    (clean, crashed, (streams * records) as u64)
}

async fn timed_open(dir: &Path) -> Duration {
    let t0 = Instant::now();
    let engine = Engine::open(config(StorageMode::FileDurable, 0, dir)).unwrap();
    engine.ready().await.unwrap();
    let took = t0.elapsed();
    assert!(engine.head("stream-0").await.is_ok());
    took
}
