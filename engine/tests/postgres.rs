//! The `postgres` mode against a real PostgreSQL: several engines (nodes) on one database,
//! reopening (a node restart), forks and their cascade, chunking of large and tiny appends,
//! expiry seen by every node, and the database refusing connections (503, then recovery).
//!
//! Each test makes a database of its own in the cluster named by `DS_TEST_POSTGRES_URL`
//! (`scripts/test.sh` starts one with `scripts/pg.sh`). Without that variable the tests
//! print that they were skipped, unless `DS_REQUIRE_POSTGRES` is set (as CI sets it): then
//! they fail.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ds_engine::{
    AppendKind, AppendRequest, Clock as _, ContentType, CreateRequest, Created, Engine,
    EngineConfig, Error, Expiry, ForkRequest, ManualClock, Offset, ReadFrom, StorageMode,
};

/// A database of its own for one test, dropped by nobody (the cluster is throwaway).
struct TestDb {
    url: String,
    admin: String,
    name: String,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{nanos}_{n}", std::process::id())
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A fresh database, or `None` (the test is skipped) when no cluster is configured.
async fn test_db() -> Option<TestDb> {
    let Ok(admin) = std::env::var("DS_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("DS_REQUIRE_POSTGRES").is_none(),
            "DS_REQUIRE_POSTGRES is set but DS_TEST_POSTGRES_URL is not"
        );
        eprintln!("skipped: set DS_TEST_POSTGRES_URL (scripts/test.sh starts a cluster)");
        return None;
    };
    let name = unique("ds_test");
    admin_client(&admin).await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(TestDb { url: format!("{base}/{name}"), admin, name })
}

fn config(db: &TestDb, chunk: usize) -> EngineConfig {
    let dir = std::env::temp_dir().join(unique("ds-pg-node"));
    EngineConfig {
        mode: StorageMode::Postgres,
        data_dir: dir,
        read_chunk_bytes: chunk,
        postgres_url: db.url.clone(),
        postgres_pool_size: 4,
        ..EngineConfig::default()
    }
}

/// A node: an engine on the test's database.
async fn node(db: &TestDb, clock: &ManualClock, chunk: usize) -> Engine {
    let engine = Engine::open_with_clock(config(db, chunk), Arc::new(clock.clone())).unwrap();
    tokio::time::timeout(Duration::from_secs(20), engine.ready()).await.unwrap().unwrap();
    // Listening too: a node's readers hear the others from then on.
    for _ in 0..200 {
        if engine.is_ready() {
            return engine;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the node never started listening");
}

fn create(ct: &str, body: &'static [u8]) -> CreateRequest {
    CreateRequest {
        content_type: ContentType::new(ct),
        expiry: Expiry::Never,
        closed: false,
        body: Bytes::from_static(body),
    }
}

/// Everything `name` holds from `from`, chunk by chunk: (chunk starts, bytes).
async fn read_all(engine: &Engine, name: &str, from: ReadFrom) -> (Vec<Offset>, Vec<u8>) {
    let mut starts = Vec::new();
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let chunk = engine.read(name, at).await.unwrap();
        starts.push(chunk.start);
        let done = chunk.up_to_date;
        at = ReadFrom::At(chunk.next);
        assert!(done || !chunk.is_empty(), "a chunk that is not the last has data");
        out.extend(chunk.parts.iter().flat_map(|b| b.to_vec()));
        if done {
            return (starts, out);
        }
    }
}

/// Waits (10 s at most) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_streams_and_one_order() {
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let (a, b) = (node(&db, &clock, 1 << 20).await, node(&db, &clock, 1 << 20).await);
    a.create("s", create("text/plain", b"0")).await.unwrap();
    // A stream made on one node is there on the other, at once.
    assert_eq!(b.head("s").await.unwrap().tail.pos(), 1);
    match b.create("s", create("text/plain", b"")).await.unwrap() {
        Created::Existing(info) => assert_eq!(info.tail.pos(), 1),
        Created::New(_) => panic!("the stream node A made is the one node B confirms"),
    }
    // Both nodes append at the same time, each as its own producer, in order.
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for (node, id) in [(a.clone(), "pa"), (b.clone(), "pb")] {
        tasks.push(tokio::spawn(async move {
            for seq in 0..150u64 {
                let req = AppendRequest::data("text/plain", format!("<{id}{seq}>"))
                    .with_producer(id, 0, seq);
                let ack = node.append("s", req).await.unwrap();
                assert_eq!(ack.kind, AppendKind::Appended);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, from_a) = read_all(&a, "s", ReadFrom::Start).await;
    let (_, from_b) = read_all(&b, "s", ReadFrom::Start).await;
    assert_eq!(from_a, from_b, "both nodes read one order");
    let text = String::from_utf8(from_a).unwrap();
    for id in ["pa", "pb"] {
        let mine: Vec<u64> = text
            .split('<')
            .filter_map(|p| p.strip_prefix(id))
            .map(|p| p.trim_end_matches('>').parse().unwrap())
            .collect();
        assert_eq!(mine, (0..150).collect::<Vec<_>>(), "{id}'s appends once each, in order");
    }
    // A retry of an acknowledged append, on the other node, is a duplicate.
    let retry = AppendRequest::data("text/plain", "<pa149>").with_producer("pa", 0, 149);
    assert_eq!(b.append("s", retry).await.unwrap().kind, AppendKind::Duplicate);
    let gap = AppendRequest::data("text/plain", "x").with_producer("pa", 0, 151);
    assert!(matches!(b.append("s", gap).await, Err(Error::SeqGap { expected: 150, .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_reader_on_one_node_wakes_for_appends_on_another() {
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let (a, b) = (node(&db, &clock, 1 << 20).await, node(&db, &clock, 1 << 20).await);
    a.create("live", create("text/plain", b"")).await.unwrap();
    let (info, mut watch) = b.subscribe("live").await.unwrap();
    let mut seen = info.tail;
    let mut latencies = Vec::new();
    for i in 0..100u32 {
        let started = std::time::Instant::now();
        a.append("live", AppendRequest::data("text/plain", format!("{i};"))).await.unwrap();
        let tail = tokio::time::timeout(Duration::from_secs(3), watch.wait_beyond(seen))
            .await
            .expect("node B's reader wakes within 3 s");
        latencies.push(started.elapsed());
        let chunk = b.read("live", ReadFrom::At(seen)).await.unwrap();
        assert_eq!(chunk.parts.concat(), format!("{i};").as_bytes(), "exactly the new append");
        assert_eq!(chunk.next.pos(), tail.next.pos());
        seen = chunk.next;
    }
    latencies.sort();
    // From the append's start on A to B's reader waking (the append's own commit included).
    eprintln!(
        "cross-node wake: p50 {:?}, p99 {:?}, max {:?}",
        latencies[50], latencies[98], latencies[99]
    );
    // Deleting on A stops B's reader.
    a.delete("live").await.unwrap();
    let tail = tokio::time::timeout(Duration::from_secs(3), watch.wait_beyond(seen)).await.unwrap();
    assert!(tail.gone);
    assert_eq!(b.head("live").await, Err(Error::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_finds_everything_and_deduplicates_retries() {
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let first = node(&db, &clock, 1 << 20).await;
    first.create("j", create("application/json", b"[1,2]")).await.unwrap();
    let req = AppendRequest::data("application/json", "[3]").with_producer("p", 1, 0);
    first.append("j", req.clone()).await.unwrap();
    let close = AppendRequest { close: true, ..AppendRequest::data("application/json", "[4]") };
    first.append("j", close.with_producer("p", 1, 1)).await.unwrap();
    let etag = first.head("j").await.unwrap();
    drop(first);
    let again = node(&db, &clock, 1 << 20).await;
    let info = again.head("j").await.unwrap();
    assert_eq!(info, etag, "same incarnation, tail and closure after a restart");
    assert!(info.closed);
    let chunk = again.read("j", ReadFrom::Start).await.unwrap();
    assert_eq!(chunk.into_body().concat(), b"[1,2,3,4]");
    // The retry of the closing append is a duplicate; anything else is refused as closed.
    let retry = AppendRequest { close: true, ..AppendRequest::data("application/json", "[4]") };
    let ack = again.append("j", retry.with_producer("p", 1, 1)).await.unwrap();
    assert_eq!(ack.kind, AppendKind::Duplicate);
    let late = again.append("j", AppendRequest::data("application/json", "[5]")).await;
    assert!(matches!(late, Err(Error::StreamClosed { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_tiny_appends_read_back_in_bounded_chunks() {
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = node(&db, &clock, 100_000).await;
    // One append of 1 MiB + 3 bytes: several rows, read back in chunks of 100 kB.
    let big: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i % 251) as u8).collect();
    engine.create("big", create("application/octet-stream", b"")).await.unwrap();
    engine
        .append("big", AppendRequest::data("application/octet-stream", big.clone()))
        .await
        .unwrap();
    let (starts, bytes) = read_all(&engine, "big", ReadFrom::Start).await;
    assert_eq!(bytes, big);
    assert!(starts.len() >= 11, "chunks of at most 100 kB");
    // A read from inside a row starts there.
    let mid = engine.read("big", ReadFrom::At(Offset::at(300_001))).await.unwrap();
    assert_eq!(mid.parts.concat(), big[300_001..400_001]);
    // 5,000 one-byte appends: more rows than one read fetches; every byte once, in order.
    engine.create("tiny", create("text/plain", b"")).await.unwrap();
    let mut expected = Vec::new();
    let mut pending = Vec::new();
    for i in 0..5000u32 {
        let byte = b'a' + (i % 26) as u8;
        expected.push(byte);
        let req = AppendRequest::data("text/plain", vec![byte]);
        pending.push(engine.begin_append("tiny", req).unwrap());
    }
    for ticket in pending {
        ticket.durable().await.unwrap();
    }
    let (_, bytes) = read_all(&engine, "tiny", ReadFrom::Start).await;
    assert_eq!(bytes, expected, "pipelined appends keep their order");
    // JSON: offsets inside a message are refused; reads end on message boundaries.
    engine.create("j", create("application/json", b"[\"abc\",\"defgh\"]")).await.unwrap();
    assert_eq!(
        engine.read("j", ReadFrom::At(Offset::at(2))).await.unwrap_err(),
        Error::OffsetUnknown
    );
    let beyond = engine.read("j", ReadFrom::At(Offset::at(999))).await.unwrap_err();
    assert_eq!(beyond, Error::OffsetBeyondTail);
    let chunk = engine.read("j", ReadFrom::At(Offset::at(6))).await.unwrap();
    assert_eq!(chunk.into_body().concat(), b"[\"defgh\"]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_soft_delete_and_cascade_across_nodes() {
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let (a, b) = (node(&db, &clock, 1 << 20).await, node(&db, &clock, 1 << 20).await);
    a.create("src", create("text/plain", b"hello ")).await.unwrap();
    let fork =
        ForkRequest { source: "src".into(), offset: None, sub: 0, content_type_given: false };
    let created = b.fork("f", create("text/plain", b""), fork).await.unwrap();
    assert!(matches!(created, Created::New(_)));
    a.append("f", AppendRequest::data("text/plain", "fork")).await.unwrap();
    a.append("src", AppendRequest::data("text/plain", "source")).await.unwrap();
    assert_eq!(read_all(&b, "f", ReadFrom::Start).await.1, b"hello fork");
    // The source, deleted while the fork reads it, is gone for direct use but serves the fork.
    a.delete("src").await.unwrap();
    assert_eq!(b.head("src").await, Err(Error::Gone));
    assert_eq!(
        b.create("src", create("text/plain", b"")).await.unwrap_err(),
        Error::ConfigMismatch
    );
    assert_eq!(read_all(&b, "f", ReadFrom::Start).await.1, b"hello fork");
    // Deleting the fork removes the soft-deleted source with it, rows and all.
    b.delete("f").await.unwrap();
    assert_eq!(a.head("src").await, Err(Error::NotFound));
    let client = admin_client(&db.url).await;
    for table in ["ds_streams", "ds_data", "ds_producers"] {
        let n: i64 =
            client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table} is empty once both streams are gone");
    }
    a.create("src", create("text/plain", b"")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_stream_is_gone_for_every_node() {
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let (a, b) = (node(&db, &clock, 1 << 20).await, node(&db, &clock, 1 << 20).await);
    let ttl = CreateRequest { expiry: Expiry::IdleTtl { secs: 10 }, ..create("text/plain", b"x") };
    a.create("t", ttl).await.unwrap();
    clock.advance_ms(6_000);
    // A read on B renews the TTL for every node (in the background: wait for it).
    b.read("t", ReadFrom::Start).await.unwrap();
    let client = admin_client(&db.url).await;
    let renewed = i64::try_from(clock.now_ms()).unwrap();
    for _ in 0..100 {
        let row = client.query_one("SELECT last_access_ms FROM ds_streams", &[]).await.unwrap();
        if row.get::<_, i64>(0) == renewed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clock.advance_ms(6_000);
    assert!(a.head("t").await.is_ok(), "renewed by B's read");
    clock.advance_ms(5_000);
    assert_eq!(b.sweep_expired().await, 0, "B did not create it: A's sweeper removes it");
    assert_eq!(a.sweep_expired().await, 1);
    assert_eq!(b.head("t").await, Err(Error::NotFound));
    let n: i64 = admin_client(&db.url)
        .await
        .query_one("SELECT count(*) FROM ds_streams", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_answers_503_and_the_node_recovers() {
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = node(&db, &clock, 1 << 20).await;
    engine.create("s", create("text/plain", b"a")).await.unwrap();
    let admin = admin_client(&db.admin).await;
    let name = &db.name;
    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await.unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[name],
        )
        .await
        .unwrap();
    // Writes and reads the node cannot confirm answer 503: never a stale answer or a 500.
    let refused = engine.append("s", AppendRequest::data("text/plain", "b")).await;
    assert!(matches!(refused, Err(Error::Unavailable(_))), "got {refused:?}");
    assert!(!engine.is_ready(), "/readyz says the node cannot serve");
    assert!(matches!(engine.read("s", ReadFrom::Start).await, Err(Error::Unavailable(_))));
    assert!(matches!(engine.head("s").await, Err(Error::Unavailable(_))));
    admin.batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await.unwrap();
    // Back: ready again without any request having to succeed first (a node taken out of
    // a load balancer for being unready would otherwise never come back).
    for _ in 0..100 {
        if engine.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(engine.is_ready(), "ready again once the database answers");
    // And the node reconnects by itself.
    let mut ok = false;
    for _ in 0..50 {
        if engine.append("s", AppendRequest::data("text/plain", "c")).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the node recovers once the database is back");
    assert_eq!(engine.read("s", ReadFrom::Start).await.unwrap().parts.concat(), b"ac");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_inspect_lists_verifies_and_finds_damage() {
    use ds_engine::pg::inspect;
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = node(&db, &clock, 1 << 20).await;
    engine.create("a", create("text/plain", b"one")).await.unwrap();
    let big = vec![b'x'; 150_000];
    engine
        .append("a", AppendRequest::data("text/plain", big).with_producer("p", 0, 0))
        .await
        .unwrap();
    engine.create("j", create("application/json", b"[1,2,3]")).await.unwrap();
    let fork = ForkRequest { source: "a".into(), offset: None, sub: 0, content_type_given: false };
    engine.fork("f", create("text/plain", b""), fork).await.unwrap();
    engine.delete("a").await.unwrap();

    let listed = inspect::list(&db.url, 1_700_000_000_000).await.unwrap();
    let states: Vec<(&str, &str, u64)> =
        listed.iter().map(|s| (s.name.as_str(), s.state, s.bytes)).collect();
    assert_eq!(states, vec![("a", "deleted", 150_003), ("f", "open", 0), ("j", "open", 6)]);
    assert_eq!(listed[0].producers, vec![("p".to_owned(), 0, 0)]);
    assert_eq!(listed[0].forks, 1);
    let clean = inspect::verify(&db.url).await.unwrap();
    assert_eq!(clean.problems, Vec::<String>::new());
    assert_eq!((clean.streams, clean.rows), (3, 5), "150 kB cut into three rows of 64 KiB at most");
    let rows = inspect::dump(&db.url, "j", None).await.unwrap();
    assert_eq!((rows.len(), rows[0].messages), (1, Some(3)));

    // Damage: a row of the middle of `a` goes, and a producer row loses its stream.
    let client = admin_client(&db.url).await;
    client
        .batch_execute(
            "DELETE FROM ds_data WHERE pos = 65539; \
             INSERT INTO ds_producers VALUES (42, 'ghost', 0, 0);",
        )
        .await
        .unwrap();
    let damaged = inspect::verify(&db.url).await.unwrap();
    assert_eq!(
        damaged.problems,
        vec![
            "a: row at 131075, expected one at 65539".to_owned(),
            "1 producer rows of no stream".to_owned()
        ]
    );
    assert!(inspect::dump(&db.url, "nope", None).await.is_err());
}

/// Review findings: a reader watching on node B did not keep a sliding TTL alive for node
/// A's sweeper, and an idempotent re-create on a node renewed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_and_re_creating_on_one_node_renew_the_ttl_for_all() {
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let (a, b) = (node(&db, &clock, 1 << 20).await, node(&db, &clock, 1 << 20).await);
    let ttl = CreateRequest { expiry: Expiry::IdleTtl { secs: 10 }, ..create("text/plain", b"x") };
    a.create("watched", ttl.clone()).await.unwrap();
    a.create("recreated", ttl.clone()).await.unwrap();
    let (_, watch) = b.subscribe("watched").await.unwrap();
    clock.advance_ms(8_000);
    assert!(matches!(b.create("recreated", ttl).await.unwrap(), Created::Existing(_)));
    // B's next tick renews what its reader watches, as of the clock's time.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    clock.advance_ms(8_000);
    assert_eq!(a.sweep_expired().await, 0, "both were renewed at 8 s");
    assert!(a.head("watched").await.is_ok());
    assert!(a.head("recreated").await.is_ok());
    drop(watch);
    clock.advance_ms(20_000);
    assert_eq!(a.sweep_expired().await, 2, "idle once nobody watches");
}

/// Regression: the node's view of a stream created empty kept the tail token of position 0
/// (tag 0) as its tag, so subscriptions' cursors (`Engine::tail`) carried untagged offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_view_of_a_tail_carries_the_streams_tag() {
    let Some(db) = test_db().await else { return };
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = node(&db, &clock, 1 << 20).await;
    engine.create("s", create("text/plain", b"")).await.unwrap();
    engine.append("s", AppendRequest::data("text/plain", "abc")).await.unwrap();
    let head = engine.head("s").await.unwrap();
    assert_ne!(head.tail.tag(), 0);
    // Offsets compare by position: compare the tokens.
    let seen = engine.tail("s").expect("known here");
    assert_eq!(seen.to_string(), head.tail.to_string());
}

mod subscriptions {
    //! Subscriptions over two nodes: one runs them (the leader), the other hands its
    //! requests over; appends on either node wake them exactly once; when the leader goes,
    //! the other node takes over from what the database holds.

    use std::sync::Mutex;

    use ds_engine::subscription::keys::Use;
    use ds_engine::subscription::service::SendFuture;
    use ds_engine::subscription::state::Delivered;
    use ds_engine::subscription::{
        Settings, SubError, Subscriptions, WebhookRequest, WebhookSender,
    };
    use serde_json::{Value, json};

    use super::*;

    /// Records the webhooks a node sends; answers `done`.
    #[derive(Default)]
    struct Sent(Mutex<Vec<Value>>);

    struct Sender(Arc<Sent>);

    impl WebhookSender for Sender {
        fn send(&self, request: WebhookRequest) -> SendFuture {
            let sent = self.0.clone();
            Box::pin(async move {
                sent.0.lock().unwrap().push(serde_json::from_slice(&request.body).unwrap());
                Delivered::Done
            })
        }
    }

    struct Node {
        engine: Arc<Engine>,
        subs: Arc<Subscriptions>,
        sent: Arc<Sent>,
        task: tokio::task::JoinHandle<Result<(), String>>,
    }

    async fn subscribed_node(db: &TestDb, clock: &ManualClock) -> Node {
        let engine = Arc::new(node(db, clock, 1 << 20).await);
        let sent = Arc::new(Sent::default());
        let settings = Settings { allow_local_webhooks: true, ..Settings::default() };
        let subs = Subscriptions::new(engine.clone(), settings, Arc::new(Sender(sent.clone())));
        let task = tokio::spawn(subs.clone().run());
        Node { engine, subs, sent, task }
    }

    fn total(nodes: &[&Node]) -> Vec<Value> {
        nodes.iter().flat_map(|n| n.sent.0.lock().unwrap().clone()).collect()
    }

    async fn wake_events(engine: &Engine) -> Vec<Value> {
        let chunk = engine.read("wakes", ReadFrom::Start).await.unwrap();
        serde_json::from_slice(&chunk.into_body().concat()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_node_runs_them_every_node_serves_them_and_a_successor_takes_over() {
        let Some(db) = test_db().await else { return };
        let clock = ManualClock::new(1_700_000_000_000);
        let a = subscribed_node(&db, &clock).await;
        until("a leads", || a.subs.leads()).await;
        let b = subscribed_node(&db, &clock).await;
        until("a follower is ready: it hands requests over", || b.subs.is_ready()).await;
        assert!(!b.subs.leads(), "one leader at a time");

        // Made through the follower, stored by the leader.
        let hook = json!({"type": "webhook", "pattern": "jobs/*", "lease_ttl_ms": 60000,
                          "webhook": {"url": "http://127.0.0.1:9/hook"}});
        let (created, view) = b.subs.put("w", &hook, "http://h/v1/stream").await.unwrap();
        assert!(created);
        assert_eq!(view["subscription_id"], "w", "{view}");
        assert!(!b.subs.put("w", &hook, "http://h/v1/stream").await.unwrap().0, "confirmed");
        let other = json!({"type": "webhook", "pattern": "x/*", "webhook": {"url": "http://127.0.0.1:9/x"}});
        assert_eq!(b.subs.put("w", &other, "http://h").await.unwrap_err(), SubError::Exists);
        assert_eq!(b.subs.get("nope").await.unwrap_err(), SubError::NotFound);
        assert_eq!(b.subs.jwks().await.unwrap(), a.subs.jwks().await.unwrap());

        // Appends on the follower wake the subscription once, delivered by the leader.
        b.engine.create("jobs/1", create("text/plain", b"")).await.unwrap();
        b.engine.append("jobs/1", AppendRequest::data("text/plain", "one")).await.unwrap();
        until("a webhook", || !total(&[&a, &b]).is_empty()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = total(&[&a, &b]);
        assert_eq!(sent.len(), 1, "exactly once: {sent:?}");
        assert!(b.sent.0.lock().unwrap().is_empty(), "only the leader delivers");
        assert_eq!(sent[0]["streams"][0]["path"], "jobs/1", "{}", sent[0]);

        // Pull-wake through the follower: the wake event lands in the wake stream, the
        // claim and the ack go through either node.
        a.engine.create("wakes", create("application/json", b"[]")).await.unwrap();
        // Would be woken by any append to the wake stream but its wake events.
        let watcher = json!({"type": "webhook", "pattern": "wakes", "lease_ttl_ms": 60000,
                             "webhook": {"url": "http://127.0.0.1:9/all"}});
        a.subs.put("all", &watcher, "http://h/v1/stream").await.unwrap();
        let pull = json!({"type": "pull-wake", "streams": ["work"], "wake_stream": "wakes",
                          "lease_ttl_ms": 60000});
        b.subs.put("p", &pull, "http://h/v1/stream").await.unwrap();
        a.engine.create("work", create("text/plain", b"")).await.unwrap();
        let tail =
            a.engine.append("work", AppendRequest::data("text/plain", "job")).await.unwrap().tail;
        let mut events = Vec::new();
        for _ in 0..500 {
            events = wake_events(&b.engine).await;
            if !events.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(events.len(), 1, "{events:?}");
        let claim = b.subs.claim("p", None, &json!({"worker": "w1"})).await.unwrap().body;
        let again = a.subs.claim("p", None, &json!({"worker": "w2"})).await.unwrap_err();
        assert!(matches!(again, SubError::AlreadyClaimed { .. }), "{again:?}");
        let token = claim["token"].as_str().unwrap();
        let ack = json!({"generation": claim["generation"], "wake_id": claim["wake_id"], "done": true,
                         "acks": [{"stream": "work", "offset": tail.to_string()}]});
        assert!(!b.subs.ack("p", Use::Claim, token, &ack).await.unwrap());
        assert_eq!(a.subs.ack("p", Use::Claim, token, &ack).await.unwrap_err(), SubError::Fenced);
        // An append acknowledged on one node is work for a claim through the other at
        // once (the leader reads the tails rather than wait for the notification).
        let tail =
            b.engine.append("work", AppendRequest::data("text/plain", "more")).await.unwrap().tail;
        let claim = a.subs.claim("p", None, &json!({"worker": "w1"})).await.unwrap().body;
        let token = claim["token"].as_str().unwrap();
        let ack = json!({"generation": claim["generation"], "wake_id": claim["wake_id"], "done": true,
                         "acks": [{"stream": "work", "offset": tail.to_string()}]});
        assert!(!b.subs.ack("p", Use::Claim, token, &ack).await.unwrap());
        // The wake events woke nothing: they are nobody's work. (The second wake has an
        // event if the append's notification made it before the claim did.)
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events = wake_events(&a.engine).await;
        assert!((1..=2).contains(&events.len()), "{events:?}");
        assert!(events.iter().all(|e| e["subscription_id"] == "p"), "{events:?}");
        let woken: Vec<Value> = total(&[&a, &b]);
        assert!(woken.iter().all(|w| w["subscription_id"] != "all"), "{woken:?}");

        // The leader goes away: the follower takes over from the database.
        let Node { task, subs, .. } = a;
        task.abort();
        let _ = task.await;
        drop(subs);
        until("b leads", || b.subs.leads()).await;
        b.engine.append("jobs/1", AppendRequest::data("text/plain", "two")).await.unwrap();
        let for_w = |n: &Node| -> Vec<Value> {
            let sent = n.sent.0.lock().unwrap();
            sent.iter().filter(|w| w["subscription_id"] == "w").cloned().collect()
        };
        until("b delivers", || !for_w(&b).is_empty()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // (The start-up pass also wakes `all`: the wake events are data past its cursor,
        // pending work as after any restart.)
        let sent = for_w(&b);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["streams"][0]["path"], "jobs/1", "{}", sent[0]);
        let view = b.subs.get("p").await.unwrap();
        assert_eq!(view["streams"][0]["acked_offset"], json!(tail.to_string()), "{view}");
        b.task.abort();
    }
}

mod subscription_failures {
    //! The subscription leader's failure paths: no leader (requests wait, then 503), and a
    //! leader that finds itself deposed (its write is refused, it steps down, and is
    //! elected again from what the database holds).

    use ds_engine::subscription::{Settings, SubError, Subscriptions};
    use serde_json::json;

    use super::*;

    struct Nobody;

    impl ds_engine::subscription::WebhookSender for Nobody {
        fn send(
            &self,
            _: ds_engine::subscription::WebhookRequest,
        ) -> ds_engine::subscription::service::SendFuture {
            Box::pin(async { ds_engine::subscription::state::Delivered::Failed })
        }
    }

    fn pull(stream: &str) -> serde_json::Value {
        json!({"type": "pull-wake", "streams": [stream], "wake_stream": "wakes", "lease_ttl_ms": 1000})
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_leader_requests_wait_then_answer_503_and_a_freed_lock_is_taken() {
        let Some(db) = test_db().await else { return };
        let clock = ManualClock::new(1_700_000_000_000);
        let engine = Arc::new(node(&db, &clock, 1 << 20).await);
        // Someone else holds the leader lock (a node that hangs without dying).
        let squatter = admin_client(&db.url).await;
        squatter
            .execute("SELECT pg_advisory_lock($1)", &[&0x6473_2d73_7562_7301_i64])
            .await
            .unwrap();
        let subs = Subscriptions::new(engine.clone(), Settings::default(), Arc::new(Nobody));
        let task = tokio::spawn(subs.clone().run());
        until("the node listens", || subs.is_ready()).await;
        let started = std::time::Instant::now();
        let answer = subs.put("p", &pull("s"), "http://h/v1/stream").await.unwrap_err();
        assert!(matches!(answer, SubError::Unavailable(_)), "{answer:?}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(9), "it waited for a leader: {waited:?}");
        assert!(!subs.leads());
        // The lock is released: the node takes over, and serves.
        drop(squatter);
        until("the node leads", || subs.leads()).await;
        assert!(subs.put("p", &pull("s"), "http://h/v1/stream").await.unwrap().0);
        task.abort();
        drop(db.admin);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deposed_leader_writes_nothing_and_is_elected_again_from_the_database() {
        let Some(db) = test_db().await else { return };
        let clock = ManualClock::new(1_700_000_000_000);
        let engine = Arc::new(node(&db, &clock, 1 << 20).await);
        let subs = Subscriptions::new(engine.clone(), Settings::default(), Arc::new(Nobody));
        let task = tokio::spawn(subs.clone().run());
        until("the node leads", || subs.leads()).await;
        assert!(subs.put("kept", &pull("s"), "http://h/v1/stream").await.unwrap().0);
        let keys_before = subs.jwks().await.unwrap();
        // Another election happened behind this node's back (and its leader replaced the
        // keys).
        let admin = admin_client(&db.url).await;
        admin
            .execute("UPDATE ds_sub_control SET epoch = epoch + 1, keys = NULL", &[])
            .await
            .unwrap();
        // Review finding: a read was answered from the deposed node's memory.
        let stale = subs.get("kept").await.unwrap_err();
        assert!(matches!(stale, SubError::Unavailable(_)), "{stale:?}");
        until("the node leads again", || subs.leads()).await;
        admin.execute("UPDATE ds_sub_control SET epoch = epoch + 1", &[]).await.unwrap();
        let refused = subs.put("lost", &pull("t"), "http://h/v1/stream").await.unwrap_err();
        assert!(matches!(refused, SubError::Unavailable(_)), "{refused:?}");
        // It steps down, campaigns again and reloads: what it stored is there, what it was
        // refused is not.
        until("the node leads again", || subs.leads()).await;
        assert_eq!(subs.get("lost").await.unwrap_err(), SubError::NotFound);
        assert_eq!(subs.get("kept").await.unwrap()["subscription_id"], "kept");
        let rows = admin.query("SELECT id FROM ds_subscriptions", &[]).await.unwrap();
        assert_eq!(rows.len(), 1);
        // Review finding: the keys were loaded once per process; a node elected again kept
        // signing with the old ones.
        assert_ne!(subs.jwks().await.unwrap(), keys_before, "the keys the database holds now");
        task.abort();
    }

    /// Sends nothing anywhere; counts what it was asked to send, and answers `accepted`
    /// (the wake stays in flight until its lease ends).
    #[derive(Default)]
    struct Counting(std::sync::Mutex<Vec<serde_json::Value>>);

    struct CountingSender(Arc<Counting>);

    impl ds_engine::subscription::WebhookSender for CountingSender {
        fn send(
            &self,
            request: ds_engine::subscription::WebhookRequest,
        ) -> ds_engine::subscription::service::SendFuture {
            let seen = self.0.clone();
            Box::pin(async move {
                seen.0.lock().unwrap().push(serde_json::from_slice(&request.body).unwrap());
                ds_engine::subscription::state::Delivered::Accepted
            })
        }
    }

    /// Review findings: an append whose notification was never sent woke nothing, ever;
    /// and a remade listening connection delivered every wake in flight again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_notification_delays_a_wake_and_a_lost_listener_repeats_none() {
        let Some(db) = test_db().await else { return };
        let clock = ManualClock::new(1_700_000_000_000);
        let engine = Arc::new(node(&db, &clock, 1 << 20).await);
        let seen = Arc::new(Counting::default());
        let settings = Settings { allow_local_webhooks: true, ..Settings::default() };
        let subs =
            Subscriptions::new(engine.clone(), settings, Arc::new(CountingSender(seen.clone())));
        let task = tokio::spawn(subs.clone().run());
        until("the node leads", || subs.leads()).await;
        let hook = json!({"type": "webhook", "streams": ["s"], "lease_ttl_ms": 600_000,
                          "webhook": {"url": "http://127.0.0.1:9/hook"}});
        subs.put("w", &hook, "http://h/v1/stream").await.unwrap();
        engine.create("wakes", create("application/json", b"[]")).await.unwrap();
        let pull = json!({"type": "pull-wake", "streams": ["s"], "wake_stream": "wakes",
                          "lease_ttl_ms": 600_000});
        subs.put("p", &pull, "http://h/v1/stream").await.unwrap();
        engine.create("s", create("text/plain", b"")).await.unwrap();
        let events = || async {
            let chunk = engine.read("wakes", ReadFrom::Start).await.unwrap();
            serde_json::from_slice::<Vec<serde_json::Value>>(&chunk.into_body().concat()).unwrap()
        };
        // An append no node announces: written straight into the tables.
        let admin = admin_client(&db.url).await;
        admin
            .batch_execute(
                "INSERT INTO ds_data (incarnation, pos, body) \
                   SELECT incarnation, 0, 'quiet' FROM ds_streams WHERE name = 's'; \
                 UPDATE ds_streams SET tail = 5 WHERE name = 's';",
            )
            .await
            .unwrap();
        let started = std::time::Instant::now();
        until("the sweep wakes it", || !seen.0.lock().unwrap().is_empty()).await;
        eprintln!("woken {:?} after the silent append", started.elapsed());
        assert_eq!(
            seen.0.lock().unwrap()[0]["streams"][0]["tail_offset"].as_str().unwrap()[..16],
            *"0000000000000005"
        );
        for _ in 0..100 {
            if !events().await.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(events().await.len(), 1, "the pull-wake subscription woke too");
        // The listening connection is cut: it is made again, and the wake in flight (its
        // webhook accepted, no callback yet) is not delivered again.
        let cut = admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = 'ds-server listen'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(cut, 1, "one listening connection");
        tokio::time::sleep(Duration::from_secs(3)).await;
        until("listening again", || engine.is_ready()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(seen.0.lock().unwrap().len(), 1, "{:?}", seen.0.lock().unwrap());
        assert_eq!(events().await.len(), 1, "the unclaimed wake is not announced again");
        task.abort();
    }
}
