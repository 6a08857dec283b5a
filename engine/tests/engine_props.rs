//! Property and story tests of the engine through its public API, with the memory store.
//! These are the model the persistent stores will later be checked against.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::sync::Arc;

use bytes::Bytes;
use ds_engine::config::MIB;
use ds_engine::memory::{PRODUCER_OVERHEAD_BYTES, RECORD_INDEX_BYTES, STREAM_OVERHEAD_BYTES};
use ds_engine::{
    AppendKind, AppendRequest, ContentType, CreateRequest, Created, Engine, EngineConfig, Error,
    Expiry, Limits, ManualClock, Offset, ReadFrom,
};
use proptest::prelude::*;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn engine_with(chunk: usize, limits: Limits) -> (Engine, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let config = EngineConfig { read_chunk_bytes: chunk, limits, ..EngineConfig::default() };
    (Engine::open_with_clock(config, Arc::new(clock.clone())).unwrap(), clock)
}

fn create(ct: &str, expiry: Expiry, body: &[u8]) -> CreateRequest {
    CreateRequest {
        content_type: ContentType::new(ct),
        expiry,
        closed: false,
        body: Bytes::copy_from_slice(body),
    }
}

fn append(ct: &str, body: &[u8]) -> AppendRequest {
    AppendRequest::data(ct, Bytes::copy_from_slice(body))
}

fn with_producer(req: AppendRequest, id: &str, epoch: u64, seq: u64) -> AppendRequest {
    req.with_producer(id, epoch, seq)
}

/// Reads everything from `from`, chunk by chunk, checking the chunk invariants on the way.
async fn read_all(engine: &Engine, name: &str, from: ReadFrom) -> (Vec<u8>, Offset) {
    let mut out = Vec::new();
    let mut from = from;
    loop {
        let chunk = engine.read(name, from).await.unwrap();
        assert!(chunk.next >= chunk.start);
        let bytes: Vec<u8> = chunk.parts.concat();
        assert_eq!(bytes.len() as u64, chunk.next.pos() - chunk.start.pos(), "body == next-start");
        out.extend_from_slice(&bytes);
        if chunk.up_to_date {
            return (out, chunk.next);
        }
        assert!(!chunk.is_empty(), "a chunk short of the tail makes progress");
        from = ReadFrom::At(chunk.next);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the record sizes and chunk size, chunked reads from any returned offset give
    /// back exactly the appended bytes, and every append's offset is larger than the last.
    #[test]
    fn byte_streams_read_back_exactly(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..3000), 1..40),
        chunk in 1usize..5000,
    ) {
        block_on(async {
            let (engine, _) = engine_with(chunk, Limits::default());
            engine.create("s", create("application/octet-stream", Expiry::Never, b"")).await.unwrap();
            let mut model = Vec::new();
            let mut offsets = vec![Offset::ZERO];
            for r in &records {
                let done = engine.append("s", append("application/octet-stream", r)).await.unwrap();
                model.extend_from_slice(r);
                assert!(done.tail > *offsets.last().unwrap(), "offsets strictly increase");
                offsets.push(done.tail);
            }
            let (all, tail) = read_all(&engine, "s", ReadFrom::Start).await;
            assert_eq!(all, model);
            assert_eq!(tail, *offsets.last().unwrap());
            for (i, off) in offsets.iter().enumerate() {
                let (rest, _) = read_all(&engine, "s", ReadFrom::At(*off)).await;
                let from: usize = records[..i].iter().map(Vec::len).sum();
                assert_eq!(rest, model[from..]);
            }
        });
    }

    /// JSON batches flatten one level, and a read of any chunk is one valid JSON array of
    /// whole messages.
    #[test]
    fn json_streams_flatten_and_wrap(
        batches in prop::collection::vec(prop::collection::vec(0u32..1000, 1..6), 1..20),
        chunk in 1usize..200,
    ) {
        block_on(async {
            let (engine, _) = engine_with(chunk, Limits::default());
            engine.create("j", create("application/json", Expiry::Never, b"[]")).await.unwrap();
            let mut model = Vec::new();
            for batch in &batches {
                let body = serde_json::to_vec(&batch.iter().map(|n| serde_json::json!({"n": n})).collect::<Vec<_>>()).unwrap();
                engine.append("j", append("application/json", &body)).await.unwrap();
                model.extend(batch.iter().copied());
            }
            let mut seen = Vec::new();
            let mut from = ReadFrom::Start;
            loop {
                let chunk = engine.read("j", from).await.unwrap();
                let up_to_date = chunk.up_to_date;
                let next = chunk.next;
                let body = chunk.into_body().concat();
                let values: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                seen.extend(values.iter().map(|v| v["n"].as_u64().unwrap() as u32));
                if up_to_date { break; }
                from = ReadFrom::At(next);
            }
            assert_eq!(seen, model);
        });
    }

    /// Random producer traffic, retries included: every accepted (producer, epoch, seq) is
    /// stored exactly once, and duplicates change nothing.
    #[test]
    fn producer_retries_never_duplicate(
        ops in prop::collection::vec((0usize..3, 0u64..3, 0u64..5), 1..80),
    ) {
        block_on(async {
            let (engine, _) = engine_with(1 << 20, Limits::default());
            engine.create("p", create("text/plain", Expiry::Never, b"")).await.unwrap();
            let mut accepted = std::collections::HashSet::new();
            let mut model = String::new();
            for (i, (producer, epoch, seq)) in ops.iter().enumerate() {
                let id = format!("p{producer}");
                let body = format!("[{id}:{epoch}:{seq}#{i}]");
                let req = with_producer(append("text/plain", body.as_bytes()), &id, *epoch, *seq);
                match engine.append("p", req).await {
                    Ok(done) if done.kind == AppendKind::Appended => {
                        assert!(accepted.insert((id, *epoch, *seq)), "accepted twice");
                        model.push_str(&body);
                    }
                    Ok(done) => assert_eq!(done.kind, AppendKind::Duplicate),
                    Err(Error::StaleEpoch { .. } | Error::EpochStartNotZero | Error::SeqGap { .. }) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            let (all, _) = read_all(&engine, "p", ReadFrom::Start).await;
            assert_eq!(String::from_utf8(all).unwrap(), model);
        });
    }
}

#[tokio::test]
async fn sliding_ttl_is_renewed_by_reads_and_writes_not_head() {
    let (engine, clock) = engine_with(1 << 20, Limits::default());
    engine.create("t", create("text/plain", Expiry::IdleTtl { secs: 2 }, b"x")).await.unwrap();
    clock.advance_ms(1500);
    engine.read("t", ReadFrom::Start).await.unwrap();
    clock.advance_ms(1500);
    engine.append("t", append("text/plain", b"y")).await.unwrap();
    clock.advance_ms(1500);
    engine.head("t").await.unwrap();
    clock.advance_ms(499);
    assert!(engine.head("t").await.is_ok(), "1999 ms after the last write");
    clock.advance_ms(1);
    assert_eq!(engine.head("t").await.unwrap_err(), Error::NotFound, "HEAD did not renew");
}

/// Regression: an idempotent `PUT` (200) did not renew a sliding TTL, although it is an
/// access like a read or a write.
#[tokio::test]
async fn an_idempotent_create_renews_a_sliding_ttl() {
    let (engine, clock) = engine_with(1 << 20, Limits::default());
    let req = || create("text/plain", Expiry::IdleTtl { secs: 2 }, b"");
    engine.create("r", req()).await.unwrap();
    for _ in 0..3 {
        clock.advance_ms(1500);
        assert!(matches!(engine.create("r", req()).await, Ok(Created::Existing(_))));
    }
    clock.advance_ms(1999);
    assert!(engine.head("r").await.is_ok(), "1999 ms after the last PUT");
    clock.advance_ms(1);
    assert_eq!(engine.head("r").await.unwrap_err(), Error::NotFound);
}

/// §5.1: "a stream with active live readers will not expire". An SSE reader that waits
/// longer than the TTL for new data keeps the stream alive; once it leaves, the idle clock
/// runs from the last time the stream was checked while watched.
#[tokio::test]
async fn live_readers_keep_a_sliding_ttl_alive() {
    let (engine, clock) = engine_with(1 << 20, Limits::default());
    engine.create("l", create("text/plain", Expiry::IdleTtl { secs: 1 }, b"")).await.unwrap();
    let (_, watch) = engine.subscribe("l").await.unwrap();
    clock.advance_ms(5000);
    assert!(engine.head("l").await.is_ok());
    assert_eq!(engine.sweep_expired().await, 0);
    drop(watch);
    clock.advance_ms(999);
    assert!(engine.head("l").await.is_ok(), "idle time counts from the last watched check");
    clock.advance_ms(1);
    assert_eq!(engine.sweep_expired().await, 1);
}

#[tokio::test]
async fn expires_at_is_not_renewed_and_frees_the_name() {
    let (engine, clock) = engine_with(1 << 20, Limits::default());
    let at = 1_700_000_000_000 + 3000;
    engine.create("e", create("text/plain", Expiry::At { unix_ms: at }, b"old")).await.unwrap();
    clock.advance_ms(2000);
    engine.read("e", ReadFrom::Start).await.unwrap();
    clock.advance_ms(1000);
    assert_eq!(engine.read("e", ReadFrom::Start).await.unwrap_err(), Error::NotFound);
    let again = engine.create("e", create("application/json", Expiry::Never, b"[1]")).await;
    assert!(matches!(again, Ok(Created::New(_))), "an expired name is free again");
}

/// What the memory store charges for a stream of one name byte holding `records` records.
fn stream_cost(data_bytes: u64, records: u64) -> u64 {
    STREAM_OVERHEAD_BYTES + 1 + data_bytes + RECORD_INDEX_BYTES * records
}

#[tokio::test]
async fn sweeper_removes_expired_streams_and_frees_memory() {
    // Room for a, b and c, or for b, c and d, but not for all four.
    let room = stream_cost(600, 1) + 2 * stream_cost(1, 1) + 100;
    let limits = Limits { max_stream_bytes: MIB, max_memory_bytes: room };
    let (engine, clock) = engine_with(1 << 20, limits);
    engine
        .create("a", create("text/plain", Expiry::IdleTtl { secs: 1 }, &[b'a'; 600]))
        .await
        .unwrap();
    engine.create("b", create("text/plain", Expiry::IdleTtl { secs: 5 }, b"b")).await.unwrap();
    engine.create("c", create("text/plain", Expiry::Never, b"c")).await.unwrap();
    assert_eq!(engine.scheduled_expiries(), 2);
    let full = engine.create("d", create("text/plain", Expiry::Never, &[b'd'; 600])).await;
    assert!(matches!(full, Err(Error::MemoryFull { .. })));
    clock.advance_ms(999);
    assert_eq!(engine.sweep_expired().await, 0);
    clock.advance_ms(1);
    assert_eq!(engine.sweep_expired().await, 1, "a expired");
    assert!(engine.create("d", create("text/plain", Expiry::Never, &[b'd'; 600])).await.is_ok());
    // b was read just before its deadline: the sweeper finds the new deadline and waits.
    clock.advance_ms(3999);
    engine.read("b", ReadFrom::Start).await.unwrap();
    clock.advance_ms(1);
    assert_eq!(engine.sweep_expired().await, 0);
    assert_eq!(engine.scheduled_expiries(), 1);
    clock.advance_ms(5000);
    assert_eq!(engine.sweep_expired().await, 1);
    assert_eq!(engine.scheduled_expiries(), 0);
    assert!(engine.head("c").await.is_ok());
}

#[tokio::test]
async fn expires_at_in_the_past_is_refused() {
    let (engine, _) = engine_with(1 << 20, Limits::default());
    let past = Expiry::At { unix_ms: 1_700_000_000_000 };
    let err = engine.create("p", create("text/plain", past, b"")).await.unwrap_err();
    assert_eq!(err, Error::ExpiryInPast);
    assert_eq!(engine.head("p").await.unwrap_err(), Error::NotFound);
}

#[tokio::test]
async fn limits_refuse_whole_appends() {
    // Room for a (10 bytes in 2 records) and b (5 bytes), and 8 bytes to spare: one more
    // byte (plus its index entry) does not fit.
    let room = stream_cost(10, 2) + stream_cost(5, 1) + 8;
    let limits = Limits { max_stream_bytes: 10, max_memory_bytes: room };
    let (engine, _) = engine_with(1 << 20, limits);
    engine.create("a", create("text/plain", Expiry::Never, b"12345")).await.unwrap();
    let err = engine.append("a", append("text/plain", b"123456")).await.unwrap_err();
    assert_eq!(err, Error::StreamTooLarge { limit_bytes: 10 });
    engine.append("a", append("text/plain", b"12345")).await.unwrap();
    engine.create("b", create("text/plain", Expiry::Never, b"12345")).await.unwrap();
    let err = engine.append("b", append("text/plain", b"1")).await.unwrap_err();
    assert_eq!(err, Error::MemoryFull { limit_bytes: room });
    let (all, _) = read_all(&engine, "b", ReadFrom::Start).await;
    assert_eq!(all, b"12345", "nothing of a refused append is stored");
    engine.delete("a").await.unwrap();
    engine.append("b", append("text/plain", b"1")).await.unwrap();
}

/// Regression: producer ids and empty streams used to cost nothing, so a client could grow
/// memory without bound by inventing them. Both are now charged to the memory limit.
#[tokio::test]
async fn producer_ids_and_empty_streams_count_against_memory() {
    let room = 3 * stream_cost(0, 0) + 2 * (PRODUCER_OVERHEAD_BYTES + 2 + 1 + RECORD_INDEX_BYTES);
    let limits = Limits { max_stream_bytes: MIB, max_memory_bytes: room };
    let (engine, _) = engine_with(1 << 20, limits);
    for name in ["a", "b", "c"] {
        engine.create(name, create("text/plain", Expiry::Never, b"")).await.unwrap();
    }
    let err = engine.create("d", create("text/plain", Expiry::Never, b"")).await.unwrap_err();
    assert!(matches!(err, Error::MemoryFull { .. }));
    for (i, id) in ["p0", "p1"].into_iter().enumerate() {
        let req = with_producer(append("text/plain", b"x"), id, 0, 0);
        assert!(engine.append("a", req).await.is_ok(), "producer {i}");
    }
    let req = with_producer(append("text/plain", b"x"), "p2", 0, 0);
    assert!(matches!(engine.append("a", req).await, Err(Error::MemoryFull { .. })));
    engine.delete("b").await.unwrap();
    let req = with_producer(append("text/plain", b"x"), "p2", 0, 0);
    assert!(engine.append("a", req).await.is_ok(), "deleting b freed room");
}

#[tokio::test]
async fn live_readers_wake_on_append_close_and_delete() {
    let (engine, _) = engine_with(1 << 20, Limits::default());
    let engine = Arc::new(engine);
    engine.create("w", create("text/plain", Expiry::Never, b"")).await.unwrap();
    let (info, mut watch) = engine.subscribe("w").await.unwrap();
    let waiter = tokio::spawn(async move { watch.wait_beyond(info.tail).await });
    tokio::task::yield_now().await;
    engine.append("w", append("text/plain", b"hi")).await.unwrap();
    let tail = waiter.await.unwrap();
    assert_eq!(tail.next, Offset::at(2));

    let (_, mut watch) = engine.subscribe("w").await.unwrap();
    engine.close("w").await.unwrap();
    assert!(watch.wait_beyond(Offset::at(2)).await.closed);

    let (_, mut watch) = engine.subscribe("w").await.unwrap();
    engine.delete("w").await.unwrap();
    assert!(watch.wait_beyond(Offset::at(2)).await.gone);
}

#[tokio::test]
async fn closed_streams_reject_appends_with_their_final_offset() {
    let (engine, _) = engine_with(1 << 20, Limits::default());
    engine.create("c", create("text/plain", Expiry::Never, b"abc")).await.unwrap();
    let close = engine.close("c").await.unwrap();
    assert_eq!((close.kind, close.closed), (AppendKind::Closed, true));
    let again = engine.close("c").await.unwrap();
    assert_eq!(again.kind, AppendKind::Duplicate);
    let err = engine.append("c", append("text/plain", b"d")).await.unwrap_err();
    assert_eq!(err, Error::StreamClosed { tail: Offset::at(3) });
    let chunk = engine.read("c", ReadFrom::Start).await.unwrap();
    assert!(chunk.reaches_eof());
}

#[tokio::test]
async fn misaligned_json_offsets_are_refused() {
    let (engine, _) = engine_with(1 << 20, Limits::default());
    engine.create("j", create("application/json", Expiry::Never, b"[1,22,333]")).await.unwrap();
    assert_eq!(
        engine.read("j", ReadFrom::At(Offset::at(1))).await.unwrap_err(),
        Error::OffsetUnknown
    );
    assert_eq!(
        engine.read("j", ReadFrom::At(Offset::at(100))).await.unwrap_err(),
        Error::OffsetBeyondTail
    );
    let chunk = engine.read("j", ReadFrom::At(Offset::at(2))).await.unwrap();
    assert_eq!(chunk.into_body().concat(), b"[22,333]");
}
