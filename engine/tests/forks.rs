//! Forks (§4.2) through the engine's public API, in memory, acid and the file log: a fork
//! reads exactly
//! like a plain stream holding the same appends (same chunks, same offsets, from any record
//! boundary, through any depth of forks), inherited data costs the fork nothing, and deletes
//! soft-delete and cascade as the protocol says.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use ds_engine::fs::sim::{SimFs, Torn};
use ds_engine::{
    AppendRequest, ContentType, CreateRequest, Created, Engine, EngineConfig, Error, Expiry,
    ForkRequest, ManualClock, Offset, ReadFrom, StorageMode,
};
use proptest::prelude::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn engine(chunk: usize) -> (Engine, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let config = EngineConfig { read_chunk_bytes: chunk, ..EngineConfig::default() };
    (Engine::open_with_clock(config, Arc::new(clock.clone())).unwrap(), clock)
}

/// A persistent engine in `mode` on `sim`.
async fn open_on(mode: StorageMode, sim: &SimFs, clock: &ManualClock) -> Engine {
    common::open(mode, sim, clock).await
}

fn plain(ct: &str, body: &'static str) -> CreateRequest {
    CreateRequest { body: Bytes::from_static(body.as_bytes()), ..create(ct) }
}

/// An engine in `mode` (memory, or a persistent one on the simulated file system).
async fn engine_in(mode: StorageMode, chunk: usize) -> Engine {
    if mode == StorageMode::Memory {
        return engine(chunk).0;
    }
    let config = EngineConfig { read_chunk_bytes: chunk, ..common::config(mode) };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let engine = Engine::open_on(config, clock, Arc::new(SimFs::new())).unwrap();
    engine.ready().await.unwrap();
    engine
}

fn create(ct: &str) -> CreateRequest {
    CreateRequest {
        content_type: ContentType::new(ct),
        expiry: Expiry::Never,
        closed: false,
        body: Bytes::new(),
    }
}

fn fork_of(source: &str, offset: Option<Offset>, sub: u64) -> ForkRequest {
    ForkRequest { source: source.into(), offset, sub, content_type_given: false }
}

fn body(json: bool, record: &[u8]) -> Bytes {
    if json {
        let items: Vec<String> = record.iter().map(u8::to_string).collect();
        Bytes::from(format!("[{}]", items.join(",")))
    } else {
        Bytes::copy_from_slice(record)
    }
}

/// Every chunk of `name` read from `from` with chunk size `max`: (start, next, bytes).
async fn chunks(
    engine: &Engine,
    name: &str,
    from: Offset,
    max: usize,
) -> Vec<(Offset, Offset, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = ReadFrom::At(from);
    loop {
        let c = engine.read_at_most(name, at, max).await.unwrap();
        out.push((c.start, c.next, c.parts.concat()));
        if c.up_to_date {
            return out;
        }
        assert!(c.next > c.start, "progress");
        at = ReadFrom::At(c.next);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A chain of forks, each at a record boundary of its source's view, reads chunk for chunk
    /// (same bytes, same offsets, from every record boundary, any chunk size) like a plain
    /// stream that received the same appends.
    #[test]
    fn forks_read_like_plain_streams(
        json in any::<bool>(),
        levels in prop::collection::vec(
            (
                prop::collection::vec(prop::collection::vec(1u8..255, 1..12), 0..5),
                any::<prop::sample::Index>(),
            ),
            1..4,
        ),
        max in 1usize..40,
        mode in prop::sample::select(vec![
            StorageMode::Memory,
            StorageMode::Acid,
            StorageMode::FileDurable,
        ]),
    ) {
        block_on(async {
            let engine = engine_in(mode, 64).await;
            let ct = if json { "application/json" } else { "application/octet-stream" };
            // The appends each level shows, with the tail after each.
            let mut view: Vec<(Vec<u8>, Offset)> = Vec::new();
            for (level, (records, cut)) in levels.iter().enumerate() {
                let this = format!("level{level}");
                if level == 0 {
                    engine.create(&this, create(ct)).await.unwrap();
                } else {
                    view.truncate(cut.index(view.len() + 1));
                    let at = view.last().map_or(Offset::ZERO, |(_, tail)| *tail);
                    let req = fork_of(&format!("level{}", level - 1), Some(at), 0);
                    engine.fork(&this, create(ct), req).await.unwrap();
                }
                for record in records {
                    let req = AppendRequest::data(ct, body(json, record));
                    let done = engine.append(&this, req).await.unwrap();
                    view.push((record.clone(), done.tail));
                }
                let plain = format!("plain{level}");
                engine.create(&plain, create(ct)).await.unwrap();
                for (record, tail) in &view {
                    let req = AppendRequest::data(ct, body(json, record));
                    prop_assert_eq!(engine.append(&plain, req).await.unwrap().tail, *tail);
                }
                let tail = engine.head(&this).await.unwrap().tail;
                prop_assert_eq!(tail, engine.head(&plain).await.unwrap().tail);
                let starts = std::iter::once(Offset::ZERO).chain(view.iter().map(|(_, t)| *t));
                // Each record end's token, as the stream of the chain that wrote it minted it.
                let minted: std::collections::HashMap<u64, String> =
                    view.iter().map(|(_, t)| (t.pos(), t.to_string())).collect();
                for from in starts {
                    // The fork takes every token its chain minted; the plain stream is
                    // another stream, so it gets the positions untagged.
                    let got = chunks(&engine, &this, from, max).await;
                    let want = chunks(&engine, &plain, from.with_tag(0), max).await;
                    prop_assert_eq!(&got, &want, "level {} from {:?} max {}", level, from, max);
                    // No offset translation (§8): a fork hands out its sources' tokens.
                    for (_, next, _) in &got {
                        if let Some(token) = minted.get(&next.pos()).filter(|_| next.sub() == 0) {
                            prop_assert_eq!(&next.to_string(), token);
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// Forks survive restarts with their links, and a crash anywhere in a cascading cleanup
/// (the fork's removal, then its soft-deleted source's, in two transactions and possibly two
/// shards) leaves either both (the source still soft-deleted, the fork reading it) or neither:
/// the next start removes a soft-deleted stream that no fork reads any more.
#[tokio::test]
async fn fork_links_and_cascades_survive_crashes() {
    for mode in [StorageMode::Acid, StorageMode::FileDurable] {
        for fail_at in 0..6 {
            cascade_cut_at_sync(mode, fail_at).await;
        }
    }
}

async fn cascade_cut_at_sync(mode: StorageMode, fail_at: u64) {
    let torn = if mode == StorageMode::Acid { Torn::Pages(fail_at) } else { Torn::Prefix(fail_at) };
    {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
        let engine = open_on(mode, &sim, &clock).await;
        engine.create("src", plain("text/plain", "a")).await.unwrap();
        engine.append("src", AppendRequest::data("text/plain", "b")).await.unwrap();
        let empty = CreateRequest { body: bytes::Bytes::new(), ..plain("text/plain", "a") };
        engine.fork("fork", empty, fork_of("src", None, 0)).await.unwrap();
        engine.append("fork", AppendRequest::data("text/plain", "c")).await.unwrap();
        engine.delete("src").await.unwrap();
        assert_eq!(engine.head("src").await.unwrap_err(), ds_engine::Error::Gone);
        // Across a clean restart: the link and the soft delete are durable.
        drop(engine);
        let engine = open_on(mode, &sim.power_loss(Torn::Clean), &clock).await;
        let sim = sim.power_loss(Torn::Clean);
        drop(engine);
        let engine = open_on(mode, &sim, &clock).await;
        assert_eq!(engine.head("src").await.unwrap_err(), ds_engine::Error::Gone);
        let chunk = engine.read("fork", ReadFrom::Start).await.unwrap();
        assert_eq!(chunk.parts.concat(), b"abc");
        sim.fail_one_sync(fail_at);
        let deleted = engine.delete("fork").await;
        drop(engine);
        let engine = open_on(mode, &sim.power_loss(torn), &clock).await;
        match engine.head("fork").await {
            Ok(_) => {
                assert!(
                    deleted.is_err(),
                    "{mode:?} sync {fail_at}: an acknowledged delete came back"
                );
                assert_eq!(engine.head("src").await.unwrap_err(), ds_engine::Error::Gone);
                let chunk = engine.read("fork", ReadFrom::Start).await.unwrap();
                assert_eq!(chunk.parts.concat(), b"abc", "{mode:?} sync {fail_at}");
            }
            Err(e) => {
                assert_eq!(e, ds_engine::Error::NotFound, "{mode:?} sync {fail_at}");
                let src = engine.head("src").await.unwrap_err();
                assert_eq!(
                    src,
                    ds_engine::Error::NotFound,
                    "{mode:?} sync {fail_at}: source cleaned up"
                );
            }
        }
    }
}

/// A fork of a large stream costs the memory account only its own data; deleting the source
/// keeps the data for the fork (410 for the source itself), and deleting the fork then frees
/// everything.
#[tokio::test]
async fn inherited_data_is_shared_and_freed_by_the_last_fork() {
    let (engine, _) = engine(1 << 20);
    engine.create("big", create("application/octet-stream")).await.unwrap();
    for _ in 0..16 {
        let req = AppendRequest::data("application/octet-stream", vec![7u8; 64 * 1024]);
        engine.append("big", req).await.unwrap();
    }
    let before = engine.memory_used_bytes().unwrap();
    let created = engine.fork("fork", create("application/octet-stream"), fork_of("big", None, 0));
    assert!(matches!(created.await.unwrap(), Created::New(_)));
    let cost = engine.memory_used_bytes().unwrap() - before;
    assert!(cost < 1024, "a fork of 1 MiB costs {cost} bytes");
    engine.delete("big").await.unwrap();
    assert_eq!(engine.head("big").await.unwrap_err(), Error::Gone);
    let chunk = engine.read("fork", ReadFrom::Start).await.unwrap();
    assert_eq!(chunk.parts.concat().len(), 1 << 20);
    engine.delete("fork").await.unwrap();
    assert_eq!(engine.head("big").await.unwrap_err(), Error::NotFound, "cascaded");
    assert_eq!(engine.memory_used_bytes().unwrap(), 0);
}

/// Forking shares, never copies: four forks of an 8 MiB stream add a few pages (acid) or a
/// few small files (file log) on disk, whatever the source's size.
#[tokio::test]
async fn a_fork_of_a_large_stream_takes_constant_space() {
    for mode in [StorageMode::Acid, StorageMode::FileDurable] {
        let (sim, clock) = (SimFs::new(), ManualClock::new(1_000));
        let engine = open_on(mode, &sim, &clock).await;
        engine.create("big", create("text/plain")).await.unwrap();
        for _ in 0..128 {
            let req = AppendRequest::data("text/plain", vec![b'x'; 64 * 1024]);
            engine.append("big", req).await.unwrap();
        }
        let before = sim.live_bytes();
        for i in 0..4 {
            let req = fork_of("big", None, 0);
            engine.fork(&format!("fork-{i}"), create("text/plain"), req).await.unwrap();
        }
        let grown = sim.live_bytes() - before;
        assert!(grown < 256 * 1024, "{mode:?}: 4 forks of 8 MiB added {grown} bytes on disk");
        let chunk = engine.read_at_most("fork-3", ReadFrom::Start, 1 << 20).await.unwrap();
        assert_eq!(chunk.parts.concat().len(), 1 << 20);
    }
}
