//! Kill the real server mid-stream, restart it, and check that every acknowledged append is
//! there exactly once, in order (sled's crash tests, with SIGKILL instead of `exit(9)`).
//!
//! For `file-fast`, `file-durable` and `acid`: start the server binary on a fresh data directory; run
//! writers on binary and JSON streams, half of them idempotent producers; SIGKILL the server
//! at a random moment while they write; restart it on the same directory; retry each
//! producer's last acknowledged request (which must be a duplicate, 204) and its
//! unacknowledged one (a duplicate or a first success, never a second copy); read every
//! stream back and check each writer's records. Several rounds. Each round
//! also forks a stream that is then deleted at once (soft delete), writes to the fork, and
//! checks after every restart that the fork still reads its source's record exactly once and
//! the source answers 410; at the end, deleting the forks removes their sources (404).
//! Each round also closes a stream while two writers append to it: from the close on, their
//! appends are refused (409), and no refused record may ever be found in the stream after a
//! restart (issue 13: a refusal is as durable as an acknowledgement).
//!
//! Each round also runs a pull-wake worker of a subscription (issue 9): it appends a job,
//! claims, and acks the job's offset with `done`, in a loop; after every restart the
//! subscription's cursor must be at or past the last ack the server acknowledged. And a
//! webhook subscription whose receiver (in this process) answers every wake `{"done":true}`
//! while a writer appends: a poller reads its cursor (a read shows only what is stored),
//! and after every restart the cursor must be at or past the last one read.
//!
//! Run by `scripts/test.sh` as `cargo test --release --test crash_kill`, so it drives the
//! release binary. Bounded: `DS_CRASH_ROUNDS` rounds (default 4) of at most ~1 s of writes.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
#![allow(clippy::print_stdout, reason = "harness = false: the test reports on stdout")]

#[path = "support/http1.rs"]
mod http1;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use http1::Conn;

const STREAMS: usize = 6;

/// What a writer appends: its stream, identity, and whether it is an idempotent producer.
#[derive(Clone, Debug)]
struct Writer {
    stream: usize,
    id: usize,
    producer: bool,
    /// Records acknowledged so far (their numbers are 0..acked).
    acked: u64,
    /// A request sent but not answered when the server died.
    in_flight: Option<u64>,
    /// Writes to a stream that gets closed under it: a 409 ends its writing, and the
    /// refused record must never appear.
    refusable: bool,
    /// Appends refused so far.
    refused: u64,
}

fn json(stream: usize) -> bool {
    stream % 2 == 1
}

fn content_type(stream: usize) -> &'static str {
    if json(stream) { "application/json" } else { "text/plain" }
}

fn record(stream: usize, writer: usize, n: u64) -> String {
    if json(stream) { format!("{{\"w\":{writer},\"n\":{n}}}") } else { format!("<{writer}:{n}>") }
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

/// The database of the `postgres` rounds: a fresh one in the cluster of
/// `DS_TEST_POSTGRES_URL` (scripts/test.sh starts a throwaway cluster and sets it), so that
/// a second run against the same cluster starts from nothing too.
static POSTGRES_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn start(mode: &str, dir: &Path) -> Server {
    let mut command = server::command();
    if mode == "postgres" {
        command.env("DS_STORAGE__POSTGRES_URL", POSTGRES_URL.get().expect("a database"));
    }
    command
        .env("DS_STORAGE__MODE", mode)
        .env("DS_STORAGE__DATA_DIR", dir)
        .env("DS_LOG", "warn,ds_server=info")
        .env("DS_SUBSCRIPTIONS__ALLOW_LOCAL_WEBHOOKS", "true");
    let (child, addr, lines) = server::spawn(command);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            // After a SIGKILL every acid shard needs redb's repair: expected, not news.
            let expected = line.contains("was not closed cleanly");
            if (line.contains("WARN") || line.contains("ERROR")) && !expected {
                println!("    server: {line}");
            }
        }
    });
    Server { child, addr }
}

async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = Conn::connect(addr).await {
            if let Ok(r) = c.request("GET", "/readyz", &[], b"").await {
                if r.status == 200 {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn path(stream: usize) -> String {
    format!("/v1/stream/crash-{stream}")
}

/// Appends record `n` of `w`; `Ok(true)` if acknowledged.
async fn append(conn: &mut Conn, w: &Writer, n: u64) -> std::io::Result<u16> {
    let body = record(w.stream, w.id, n);
    let seq = n.to_string();
    let id = format!("writer-{}", w.id);
    let mut headers = vec![("content-type", content_type(w.stream))];
    if w.producer {
        headers.extend([
            ("producer-id", id.as_str()),
            ("producer-epoch", "0"),
            ("producer-seq", seq.as_str()),
        ]);
    }
    Ok(conn.request("POST", &path(w.stream), &headers, body.as_bytes()).await?.status)
}

/// Writes until the connection fails (the server is killed) or `stop` passes.
async fn write(addr: SocketAddr, mut w: Writer, stop: Instant) -> Writer {
    let Ok(mut conn) = Conn::connect(addr).await else { return w };
    while Instant::now() < stop {
        let n = w.acked;
        w.in_flight = Some(n);
        match append(&mut conn, &w, n).await {
            Ok(409) if w.refusable => {
                // Closed under it: record `n` was refused, and so must stay absent (the
                // checks after every restart expect exactly 0..acked).
                w.refused += 1;
                w.in_flight = None;
                break;
            }
            Ok(status) => {
                assert!(status == 200 || status == 204, "append got {status}");
                w.acked += 1;
                w.in_flight = None;
            }
            Err(_) => break,
        }
    }
    w
}

/// The records of one writer in a stream, in order.
fn records_of(stream: usize, body: &[u8], writer: usize) -> Vec<u64> {
    if json(stream) {
        let values: Vec<serde_json::Value> =
            serde_json::from_slice(body).expect("stream is a JSON array");
        values.iter().filter(|v| v["w"] == writer).map(|v| v["n"].as_u64().unwrap()).collect()
    } else {
        let text = String::from_utf8(body.to_vec()).unwrap();
        let prefix = format!("<{writer}:");
        text.split('>')
            .filter(|r| !r.is_empty())
            .inspect(|r| assert!(r.starts_with('<'), "torn or foreign data in {text:?}"))
            .filter(|r| r.starts_with(&prefix))
            .map(|r| r[prefix.len()..].parse().unwrap())
            .collect()
    }
}

async fn read_all(addr: SocketAddr, stream: usize) -> Vec<u8> {
    let mut conn = Conn::connect(addr).await.unwrap();
    let mut offset = "-1".to_owned();
    let mut parts: Vec<serde_json::Value> = Vec::new();
    let mut bytes = Vec::new();
    loop {
        let resp = conn
            .request("GET", &format!("{}?offset={offset}", path(stream)), &[], b"")
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        if json(stream) {
            let values: Vec<serde_json::Value> = serde_json::from_slice(&resp.body).unwrap();
            parts.extend(values);
        } else {
            bytes.extend_from_slice(&resp.body);
        }
        offset = resp.header("stream-next-offset").unwrap().to_owned();
        if resp.header("stream-up-to-date").is_some() {
            break;
        }
    }
    if json(stream) { serde_json::to_vec(&parts).unwrap() } else { bytes }
}

async fn round_trip(mode: &str, dir: &Path, rounds: u32) {
    let mut writers: Vec<Writer> = (0..STREAMS * 2)
        .map(|i| Writer {
            stream: i % STREAMS,
            id: i,
            producer: i >= STREAMS,
            acked: 0,
            in_flight: None,
            refusable: false,
            refused: 0,
        })
        .collect();
    let mut seed = u64::from(std::process::id()) | 1;
    let mut last_ack: Option<String> = None;
    let mut last_seen: Option<String> = None;
    let receiver = done_receiver().await;
    for round in 0..rounds {
        let mut server = start(mode, dir);
        wait_ready(server.addr).await;
        let addr = server.addr;
        let mut conn = Conn::connect(addr).await.unwrap();
        for stream in 0..STREAMS {
            let r = conn
                .request("PUT", &path(stream), &[("content-type", content_type(stream))], b"")
                .await
                .unwrap();
            assert!(r.status == 200 || r.status == 201, "create got {}", r.status);
        }
        // Check what the previous round left, and settle producers' in-flight requests.
        verify(addr, &mut writers).await;
        subscription(&mut conn).await;
        verify_cursor(addr, last_ack.as_deref()).await;
        webhook_subscription(&mut conn, &receiver).await;
        verify_webhook_cursor(addr, last_seen.as_deref()).await;
        if forks(mode) {
            // A fork of a stream deleted at once (soft-deleted: the fork reads it), written
            // to through the round like the others.
            let stream = STREAMS + round as usize;
            writers.push(fork_writer(&mut conn, stream, round).await);
        }
        // A stream closed mid-round under two writers.
        let closing = CLOSING_BASE + round as usize;
        let ct = ("content-type", content_type(closing));
        assert_eq!(conn.request("PUT", &path(closing), &[ct], b"").await.unwrap().status, 201);
        for id in [closing, closing + 50] {
            let w = Writer {
                stream: closing,
                id,
                producer: false,
                acked: 0,
                in_flight: None,
                refusable: true,
                refused: 0,
            };
            writers.push(w);
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run_for = Duration::from_millis(200 + seed % 800);
        let close_after = Duration::from_millis(seed % (run_for.as_millis() as u64));
        let stop = Instant::now() + Duration::from_secs(5);
        let tasks: Vec<_> =
            writers.iter().cloned().map(|w| tokio::spawn(write(addr, w, stop))).collect();
        let worker = tokio::spawn(ack_worker(addr, stop));
        let hooked = tokio::spawn(webhook_load(addr, stop));
        let closer = tokio::spawn(async move {
            tokio::time::sleep(close_after).await;
            let mut conn = Conn::connect(addr).await.ok()?;
            let close = [("content-type", content_type(closing)), ("stream-closed", "true")];
            conn.request("POST", &path(closing), &close, b"").await.ok().map(|r| r.status)
        });
        tokio::time::sleep(run_for).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let mut written = 0;
        let mut refused = 0;
        for (i, t) in tasks.into_iter().enumerate() {
            let w = t.await.unwrap();
            written += w.acked - writers[i].acked;
            refused += w.refused - writers[i].refused;
            writers[i] = w;
        }
        let closed = closer.await.unwrap();
        let (acks, last) = worker.await.unwrap();
        if last.is_some() {
            last_ack = last;
        }
        let seen = hooked.await.unwrap();
        if seen.is_some() {
            last_seen = seen;
        }
        println!(
            "  {mode} round {round}: killed after {run_for:?}, {written} appends acknowledged, \
             {refused} refused (close answered {closed:?}), {acks} subscription acks, \
             webhook cursor seen at {last_seen:?}"
        );
    }
    let server = start(mode, dir);
    wait_ready(server.addr).await;
    verify(server.addr, &mut writers).await;
    verify_cursor(server.addr, last_ack.as_deref()).await;
    verify_webhook_cursor(server.addr, last_seen.as_deref()).await;
    if forks(mode) {
        // Deleting each fork removes its soft-deleted source too (cascade).
        let mut conn = Conn::connect(server.addr).await.unwrap();
        for round in 0..rounds {
            let fork = path(STREAMS + round as usize);
            assert_eq!(conn.request("DELETE", &fork, &[], b"").await.unwrap().status, 204);
            let src = source_path(round);
            assert_eq!(conn.request("HEAD", &src, &[], b"").await.unwrap().status, 404);
        }
    }
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Every acknowledged record is present once, in order; an unacknowledged one at most once,
/// and for producers exactly once after its retry.
async fn verify(addr: SocketAddr, writers: &mut [Writer]) {
    let mut conn = Conn::connect(addr).await.unwrap();
    for w in writers.iter().filter(|w| w.producer && w.acked > 0) {
        // The last acknowledged request again, as a client that missed the answer would:
        // a duplicate (204), never a second copy (checked with the contents below).
        let status = append(&mut conn, w, w.acked - 1).await.unwrap();
        assert_eq!(status, 204, "retry of writer {}'s last acknowledged append", w.id);
    }
    for w in writers.iter_mut() {
        if let (true, Some(n)) = (w.producer && !w.refusable, w.in_flight) {
            // The same (epoch, seq) again: 200 if it was lost, 204 if it was kept.
            let status = append(&mut conn, w, n).await.unwrap();
            assert!(status == 200 || status == 204, "retry of writer {} got {status}", w.id);
            w.acked += 1;
            w.in_flight = None;
        }
    }
    let mut streams: Vec<usize> = writers.iter().map(|w| w.stream).collect();
    streams.dedup();
    for stream in streams {
        let body = read_all(addr, stream).await;
        if (STREAMS..CLOSING_BASE).contains(&stream) {
            // A fork: its source's one record, inherited, exactly once.
            let inherited = records_of(stream, &body, SOURCE_WRITER);
            assert_eq!(inherited, vec![(stream - STREAMS) as u64], "inherited by {}", path(stream));
            let mut conn = Conn::connect(addr).await.unwrap();
            let src = source_path((stream - STREAMS) as u32);
            assert_eq!(conn.request("HEAD", &src, &[], b"").await.unwrap().status, 410);
        }
        for w in writers.iter_mut().filter(|w| w.stream == stream) {
            let got = records_of(stream, &body, w.id);
            let expected: Vec<u64> = (0..w.acked).collect();
            match w.in_flight {
                Some(n) if got.len() as u64 == w.acked + 1 => {
                    assert_eq!(
                        got[..w.acked as usize],
                        expected[..],
                        "writer {} in {}",
                        w.id,
                        path(stream)
                    );
                    assert_eq!(got[w.acked as usize], n);
                    // It made it after all: count it, so that the next number follows it.
                    w.acked += 1;
                }
                _ => assert_eq!(got, expected, "writer {} in {}", w.id, path(stream)),
            }
            w.in_flight = None;
        }
    }
}

/// The writer id of a fork source's one record.
const SOURCE_WRITER: usize = 999;

/// Whether this mode has forks (all the persistent ones).
fn forks(mode: &str) -> bool {
    mode != "memory"
}

fn source_path(round: u32) -> String {
    format!("/v1/stream/crash-src-{round}")
}

/// Creates round `round`'s source (one record), forks it as `stream`, deletes the source
/// (soft: the fork reads it), and returns the fork's writer.
async fn fork_writer(conn: &mut Conn, stream: usize, round: u32) -> Writer {
    let ct = ("content-type", content_type(stream));
    let src = source_path(round);
    let first = record(stream, SOURCE_WRITER, u64::from(round));
    assert_eq!(conn.request("PUT", &src, &[ct], first.as_bytes()).await.unwrap().status, 201);
    let fork = [ct, ("stream-forked-from", src.as_str())];
    assert_eq!(conn.request("PUT", &path(stream), &fork, b"").await.unwrap().status, 201);
    assert_eq!(conn.request("DELETE", &src, &[], b"").await.unwrap().status, 204);
    Writer {
        stream,
        id: 100 + stream,
        producer: round % 2 == 0,
        acked: 0,
        in_flight: None,
        refusable: false,
        refused: 0,
    }
}

const SUBSCRIPTION: &str = "/v1/stream/__ds/subscriptions/crash-sub";
const JOBS: &str = "/v1/stream/crash-jobs";

/// Creates (or confirms) the jobs stream, the wake stream and the pull-wake subscription.
async fn subscription(conn: &mut Conn) {
    let text = ("content-type", "text/plain");
    let json = ("content-type", "application/json");
    let r = conn.request("PUT", JOBS, &[text], b"").await.unwrap();
    assert!(r.status == 200 || r.status == 201, "jobs stream: {}", r.status);
    let r = conn.request("PUT", "/v1/stream/crash-wake", &[json], b"[]").await.unwrap();
    assert!(r.status == 200 || r.status == 201, "wake stream: {}", r.status);
    let config = br#"{"type":"pull-wake","streams":["crash-jobs"],"wake_stream":"crash-wake","lease_ttl_ms":1000}"#;
    let r = conn.request("PUT", SUBSCRIPTION, &[json], config).await.unwrap();
    assert!(r.status == 200 || r.status == 201, "subscription: {} {}", r.status, r.text());
}

/// The cursor of the jobs stream is at or past `last_ack` (tokens order as `pos_sub`; the
/// tag, the last 8 digits, is not part of the position).
async fn verify_cursor(addr: SocketAddr, last_ack: Option<&str>) {
    let mut conn = Conn::connect(addr).await.unwrap();
    let r = conn.request("GET", SUBSCRIPTION, &[], b"").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let view: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let link = view["streams"].as_array().unwrap().iter().find(|l| l["path"] == "crash-jobs");
    let cursor = link.expect("the jobs stream is linked")["acked_offset"].as_str().unwrap();
    if let Some(acked) = last_ack {
        assert!(
            cursor[..25] >= acked[..25],
            "cursor {cursor} is behind the acknowledged ack {acked}"
        );
    }
}

/// A pull-wake worker: append a job, claim, ack it with `done`, until the server dies or
/// `stop` passes. Returns how many acks were acknowledged and the last one's offset.
async fn ack_worker(addr: SocketAddr, stop: Instant) -> (u64, Option<String>) {
    let (mut acks, mut last) = (0, None);
    let Ok(mut conn) = Conn::connect(addr).await else { return (acks, last) };
    let json = ("content-type", "application/json");
    while Instant::now() < stop {
        let Ok(r) = conn.request("POST", JOBS, &[("content-type", "text/plain")], b"job").await
        else {
            break;
        };
        assert_eq!(r.status, 204, "job append");
        let claim = format!("{SUBSCRIPTION}/claim");
        let Ok(r) = conn.request("POST", &claim, &[json], br#"{"worker":"w"}"#).await else {
            break;
        };
        if r.status == 409 {
            // The lease of a claim from before the kill: it ends within a second.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(r.status, 200, "claim: {}", r.text());
        let c: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let tail = c["streams"][0]["tail_offset"].as_str().unwrap().to_owned();
        let ack = serde_json::json!({"generation": c["generation"], "wake_id": c["wake_id"],
            "done": true, "acks": [{"stream": "crash-jobs", "offset": tail}]});
        let auth = format!("Bearer {}", c["token"].as_str().unwrap());
        let headers = [json, ("authorization", auth.as_str())];
        let Ok(r) = conn
            .request("POST", &format!("{SUBSCRIPTION}/ack"), &headers, ack.to_string().as_bytes())
            .await
        else {
            break;
        };
        assert_eq!(r.status, 200, "ack: {}", r.text());
        acks += 1;
        last = Some(tail);
    }
    (acks, last)
}

const HOOKED_SUB: &str = "/v1/stream/__ds/subscriptions/crash-hook";
const HOOKED: &str = "/v1/stream/crash-hooked";

/// A webhook receiver in this process, answering every delivery `{"done":true}`; its URL.
async fn done_receiver() -> String {
    receiver::receiver(|_| Some(receiver::http_answer("200 OK", r#"{"done":true}"#))).await.0
}

/// Creates (or confirms) the hooked stream and its webhook subscription.
async fn webhook_subscription(conn: &mut Conn, receiver: &str) {
    let r = conn.request("PUT", HOOKED, &[("content-type", "text/plain")], b"").await.unwrap();
    assert!(r.status == 200 || r.status == 201, "hooked stream: {}", r.status);
    let config = serde_json::json!({"type": "webhook", "streams": ["crash-hooked"],
        "lease_ttl_ms": 1000, "webhook": {"url": receiver}});
    let json = ("content-type", "application/json");
    let r = conn.request("PUT", HOOKED_SUB, &[json], config.to_string().as_bytes()).await.unwrap();
    assert!(r.status == 200 || r.status == 201, "webhook subscription: {} {}", r.status, r.text());
}

/// The webhook subscription's cursor (`None` before any ack).
async fn webhook_cursor(conn: &mut Conn) -> std::io::Result<Option<String>> {
    let r = conn.request("GET", HOOKED_SUB, &[], b"").await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let view: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let cursor = view["streams"][0]["acked_offset"].as_str().unwrap().to_owned();
    Ok((cursor[..25] != *"0000000000000000_00000000").then_some(cursor))
}

/// The webhook cursor after a restart is at or past the last one a read showed.
async fn verify_webhook_cursor(addr: SocketAddr, last_seen: Option<&str>) {
    let mut conn = Conn::connect(addr).await.unwrap();
    let now = webhook_cursor(&mut conn).await.unwrap();
    if let Some(seen) = last_seen {
        let now = now.unwrap_or_default();
        assert!(
            now.len() >= 25 && now[..25] >= seen[..25],
            "webhook cursor {now} is behind {seen}, which a read showed before the kill"
        );
    }
}

/// Appends to the hooked stream while reading the webhook subscription's cursor, until the
/// server dies or `stop` passes; returns the last cursor a read showed.
async fn webhook_load(addr: SocketAddr, stop: Instant) -> Option<String> {
    let mut last = None;
    let (Ok(mut writer), Ok(mut reader)) = (Conn::connect(addr).await, Conn::connect(addr).await)
    else {
        return last;
    };
    while Instant::now() < stop {
        let append = writer.request("POST", HOOKED, &[("content-type", "text/plain")], b"x");
        let Ok(r) = append.await else { break };
        assert_eq!(r.status, 204, "hooked append");
        match webhook_cursor(&mut reader).await {
            Ok(Some(cursor)) => last = Some(cursor),
            Ok(None) => {}
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    last
}

/// Streams closed under their writers: one per round from here.
const CLOSING_BASE: usize = 200;

/// Creates a database of its own in the cluster `admin` names; its URL.
async fn fresh_database(admin: &str) -> String {
    let (client, connection) =
        tokio_postgres::connect(admin, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(connection);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!("crash_kill_{}_{nanos}", std::process::id());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create a database");
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

fn main() {
    let rounds = std::env::var("DS_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(4);
    let base = std::env::temp_dir().join(format!("ds-crash-kill-{}", std::process::id()));
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = Instant::now();
    let mut modes = vec!["file-fast", "file-durable", "acid"];
    match std::env::var("DS_TEST_POSTGRES_URL") {
        Ok(url) => {
            let _ = POSTGRES_URL.set(rt.block_on(fresh_database(&url)));
            modes.push("postgres");
        }
        Err(_) if std::env::var_os("DS_REQUIRE_POSTGRES").is_some() => {
            panic!("DS_REQUIRE_POSTGRES is set but DS_TEST_POSTGRES_URL is not")
        }
        Err(_) => println!("crash_kill: postgres skipped (set DS_TEST_POSTGRES_URL)"),
    }
    for mode in modes {
        let dir: PathBuf = base.join(mode);
        std::fs::create_dir_all(&dir).unwrap();
        println!("crash_kill: {mode}, {rounds} rounds");
        rt.block_on(round_trip(mode, &dir, rounds));
    }
    let _ = std::fs::remove_dir_all(&base);
    println!("crash_kill: ok in {:?}", started.elapsed());
}
