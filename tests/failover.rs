//! Failover of the `postgres` mode (issue 10): a primary and a synchronous streaming standby
//! (`scripts/pg.sh`), one ds-server node whose connection string lists both with
//! `target_session_attrs=read-write`, and idempotent producers appending under load. The
//! primary dies mid-load (`pg_ctl -m immediate stop`) and the standby is promoted. Checked:
//! the node serves appends again within 30 s by itself, `/readyz` comes back, every
//! acknowledged append is in the stream exactly once and in order (producers retry what they
//! never got an answer for with the same sequence number, which must be deduplicated), and
//! nothing else is.
//!
//! Run by `scripts/test.sh` as `cargo test --release --test failover` (it drives the release
//! binary). Needs PostgreSQL (scripts/pg.sh installs it); skipped with a message unless
//! `DS_TEST_POSTGRES_URL` or `DS_REQUIRE_POSTGRES` is set, failing in the latter case if
//! anything is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]
#![allow(clippy::print_stdout, reason = "harness = false: the test reports on stdout")]

#[path = "support/http1.rs"]
mod http1;
#[path = "support/server.rs"]
mod server;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http1::Conn;

const PRODUCERS: usize = 4;
const STREAM: &str = "/v1/stream/failover";

/// Runs `scripts/pg.sh ARGS`; its stdout, trimmed.
fn pg(args: &[&str]) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/pg.sh");
    assert!(out.status.success(), "scripts/pg.sh {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(url: &str, dir: &Path) -> Node {
    let mut command = server::command();
    command
        .env("DS_STORAGE__MODE", "postgres")
        .env("DS_STORAGE__POSTGRES_URL", url)
        .env("DS_STORAGE__DATA_DIR", dir)
        .env("DS_LOG", "error,ds_server=info");
    let (child, addr, lines) = server::spawn(command);
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Node { child, addr }
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<http1::Response> {
    let attempt = async {
        let mut conn = Conn::connect(addr).await.ok()?;
        conn.request(method, path, headers, body).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(15), attempt).await.ok().flatten()
}

async fn wait_ready(addr: SocketAddr, within: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        if request(addr, "GET", "/readyz", &[], b"").await.is_some_and(|r| r.status == 200) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz did not answer 200 within {within:?}");
}

/// What one producer saw.
#[derive(Debug, Default)]
struct Tally {
    /// Records acknowledged (their numbers are 0..acked).
    acked: u64,
    /// Answers 503 (and requests without an answer) it retried.
    retried: u64,
    /// Retries the server answered as duplicates (204): appends committed whose answer was
    /// lost.
    duplicates: u64,
}

/// Appends `<id:n>` for n = 0, 1, … as producer `p{id}` until `stop`, retrying each record
/// until it is acknowledged (200, or 204 for a duplicate of one committed earlier).
async fn producer(
    addr: SocketAddr,
    id: usize,
    stop: Arc<AtomicBool>,
    last_ok: Arc<AtomicU64>,
    started: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let pid = format!("p{id}");
    while !stop.load(Ordering::Relaxed) {
        let n = tally.acked;
        let body = format!("<{id}:{n}>");
        let seq = n.to_string();
        let mut first = true;
        loop {
            let headers = [
                ("content-type", "text/plain"),
                ("producer-id", pid.as_str()),
                ("producer-epoch", "0"),
                ("producer-seq", seq.as_str()),
            ];
            match request(addr, "POST", STREAM, &headers, body.as_bytes()).await {
                Some(r) if r.status == 200 || r.status == 204 => {
                    if r.status == 204 && !first {
                        tally.duplicates += 1;
                    }
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap();
                    last_ok.fetch_max(ms, Ordering::Relaxed);
                    break;
                }
                Some(r) if r.status == 503 => {}
                None => {}
                Some(r) => panic!("producer {id} record {n}: unexpected {} {}", r.status, r.text()),
            }
            first = false;
            tally.retried += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tally.acked += 1;
    }
    tally
}

async fn read_all(addr: SocketAddr) -> String {
    let mut out = String::new();
    let mut offset = "-1".to_owned();
    loop {
        let r = request(addr, "GET", &format!("{STREAM}?offset={offset}"), &[], b"").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        out.push_str(&r.text());
        let next = r.header("stream-next-offset").unwrap().to_owned();
        if r.header("stream-up-to-date").is_some() || next == offset {
            return out;
        }
        offset = next;
    }
}

fn main() {
    if std::env::var_os("DS_TEST_POSTGRES_URL").is_none()
        && std::env::var_os("DS_REQUIRE_POSTGRES").is_none()
    {
        println!("failover: skipped (set DS_TEST_POSTGRES_URL or DS_REQUIRE_POSTGRES)");
        return;
    }
    let base = std::env::temp_dir().join(format!("ds-failover-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let (primary, standby) = (base.join("primary"), base.join("standby"));
    let (primary_s, standby_s) = (primary.to_str().unwrap(), standby.to_str().unwrap());
    pg(&["start", primary_s]);
    pg(&["standby", primary_s, standby_s]);
    pg(&["sync", primary_s]);
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        pg(&["port", primary_s]),
        pg(&["port", standby_s]),
    );
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(drill(&url, &base.join("node"), primary_s, standby_s));
    }));
    let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
        .args(["stop", standby_s])
        .status();
    let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
        .args(["stop", primary_s])
        .status();
    let _ = std::fs::remove_dir_all(&base);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn drill(url: &str, dir: &Path, primary: &str, standby: &str) {
    let started = Instant::now();
    let node = start_node(url, dir);
    wait_ready(node.addr, Duration::from_secs(30)).await;
    let created =
        request(node.addr, "PUT", STREAM, &[("content-type", "text/plain")], b"").await.unwrap();
    assert_eq!(created.status, 201);

    let stop = Arc::new(AtomicBool::new(false));
    let last_ok = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|id| tokio::spawn(producer(node.addr, id, stop.clone(), last_ok.clone(), started)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The primary dies with commits in flight; the synchronous standby is promoted.
    pg(&["crash", primary]);
    // From here the primary is gone (pg_ctl waited for it to stop).
    let killed_at = started.elapsed();
    pg(&["promote", standby]);
    let promoted_at = started.elapsed();
    // Serving again: an append acknowledged after the kill.
    let killed_ms = u64::try_from(killed_at.as_millis()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_ok.load(Ordering::Relaxed) <= killed_ms {
        assert!(Instant::now() < deadline, "no append acknowledged within 30 s of the failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = Duration::from_millis(last_ok.load(Ordering::Relaxed)) - killed_at;
    let ready_again = wait_ready(node.addr, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap());
    }

    // Every acknowledged record exactly once, each producer's in order, nothing else.
    let text = read_all(node.addr).await;
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); PRODUCERS];
    for record in text.split('<').filter(|r| !r.is_empty()) {
        let (id, n) = record.trim_end_matches('>').split_once(':').unwrap();
        seen[id.parse::<usize>().unwrap()].push(n.parse().unwrap());
    }
    for (id, tally) in tallies.iter().enumerate() {
        assert_eq!(
            seen[id],
            (0..tally.acked).collect::<Vec<_>>(),
            "producer {id}: every acknowledged append once, in order"
        );
    }
    let acked: u64 = tallies.iter().map(|t| t.acked).sum();
    let retried: u64 = tallies.iter().map(|t| t.retried).sum();
    let duplicates: u64 = tallies.iter().map(|t| t.duplicates).sum();
    println!(
        "failover: primary dead at {killed_at:?}, standby promoted {:?} later; appends \
         acknowledged again {recovered:?} after the primary died, /readyz 200 \
         {ready_again:?} after that; {acked} appends acknowledged, {retried} retries, \
         {duplicates} answered as duplicates",
        promoted_at - killed_at
    );
    drop(node);
}
