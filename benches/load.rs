//! Load benchmark: ds-server against the official Rust server (crate `durable-streams`
//! 0.1.5) in the same run, on the same machine, with a real HTTP client.
//!
//! ```sh
//! scripts/bench.sh                                  # builds, installs the peer, runs all
//! cargo bench --bench load                          # memory mode, every scenario
//! cargo bench --bench load -- append-64 sse-1000    # some scenarios
//! DS_BENCH_MODE=file-durable cargo bench --bench load   # or acid, or all
//! DS_BENCH_CLIENT=raw cargo bench --bench load      # the light raw client instead
//! DS_BENCH_SECS=5 DS_BENCH_RUNS=5 cargo bench --bench load
//! ```
//!
//! Servers (each a separate process, started fresh for every run of every scenario, runs
//! of the servers interleaved so that drift hits them alike):
//! - `ds-server` (the release binary) in `DS_BENCH_MODE` (`memory`, `file-durable`, `acid`,
//!   `postgres`: a fresh database per run in the cluster `scripts/bench.sh` starts).
//! - the official server, `target/tools/bin/durable-streams-server` (install it with
//!   `cargo install durable-streams --version 0.1.5 --locked --root target/tools`), with
//!   `--durability memory` against memory mode and `--durability wal` against the others.
//! - bare hyper: this benchmark re-run as an HTTP/1.1 server that drains each body and
//!   answers 204, with no storage: the floor a hyper-based server cannot go below.
//!
//! Scenarios:
//! - `append-1`: 100-byte appends, 1 connection, 1 stream, one request at a time.
//! - `append-64`: 100-byte appends, 64 connections, 64 streams.
//! - `append-64-shared`: 100-byte appends, 64 connections, all to one stream.
//! - `producer-pipelined`: 100-byte producer appends on 1 connection, 8 requests in flight
//!   (HTTP/1.1 pipelining; always the raw client: hyper's client does not pipeline).
//! - `json-batch`: JSON appends of 100 messages each, 1 connection.
//! - `read-64m`: catch-up reads of a 64 MiB stream from the start to the tail, 1 connection.
//! - `read-64m-h2`: the same over HTTP/1.1 and over HTTP/2 (h2c with prior knowledge,
//!   hyper's HTTP/2 client), against ds-server only: what HTTP/2's framing costs.
//! - `json-64m`: catch-up reads of a 64 MiB JSON stream of token-like messages, uncompressed
//!   and with `Accept-Encoding` zstd, br and gzip (the client decodes, as users' do);
//!   the rate counts decoded stream bytes, `wire` is the bytes sent over the bytes read.
//! - `sse-1000`: 1,000 SSE readers of one stream, a 100-byte append every 10 ms; latency
//!   from sending the append to a reader parsing it.
//! - `long-poll-1000`: 1,000 long-poll readers of one stream, same writer; deliveries/s and
//!   latency.
//! - `create-100k`: 100,000 stream creates over 64 connections, then a HEAD of each
//!   (`DS_BENCH_CREATES` changes the count).
//! - `subs-append-1`, `subs-append-64`: `append-1` and `append-64` against ds-server with
//!   1,000 pull-wake subscriptions on patterns no appended stream matches, and without any
//!   (the cost of subscriptions to appends they do not concern; no official server).
//! - `metrics-append-64`: `append-64` against ds-server with metrics turned off
//!   (`DS_METRICS__ENABLED=false`) and on (the default): what counting them costs.
//!
//! Server CPU per operation is the server's user + system time (`/proc/<pid>/stat`) over
//! the measured window divided by the operations completed. The client runs on the same two
//! cores and competes with the server for them, as it would for any server measured here.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark that fails may panic")]
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PAYLOAD_BYTES: usize = 100;
const OCTET: &str = "application/octet-stream";

fn main() {
    if std::env::var("DS_BENCH_ROLE").as_deref() == Ok("bare-hyper") {
        bare_hyper::serve();
        return;
    }
    let secs: u64 = env_or("DS_BENCH_SECS", 3);
    let runs: usize = env_or("DS_BENCH_RUNS", 3);
    let creates: usize = env_or("DS_BENCH_CREATES", 100_000);
    let raw = std::env::var("DS_BENCH_CLIENT").as_deref() == Ok("raw");
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let modes: Vec<String> = match std::env::var("DS_BENCH_MODE").as_deref() {
        Ok("all") => vec!["memory".into(), "file-durable".into(), "acid".into()],
        Ok(mode) => vec![mode.to_owned()],
        Err(_) => vec!["memory".into()],
    };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let official = official_binary();
    println!(
        "ds-server load benchmark: {runs} runs of {secs} s, {} client, machine: {}",
        if raw { "raw" } else { "hyper" },
        machine()
    );
    if official.is_none() {
        println!("(official server not installed: see the header of benches/load.rs)");
    }
    let d = Duration::from_secs(secs);
    for mode in modes {
        let mut targets = vec![Target::Ds(mode.clone())];
        if let Some(bin) = &official {
            let durability = if mode == "memory" { "memory" } else { "wal" };
            targets.push(Target::Official(bin.clone(), durability));
        }
        let with_floor = || {
            let mut t = targets.clone();
            if mode == "memory" {
                t.push(Target::BareHyper);
            }
            t
        };
        println!("\n== {mode} (official: {}) ==", targets.get(1).map_or("-", Target::label));
        println!("{:<20} {:<22} {:>14} {:>14}  runs", "scenario", "server", "median", "CPU/op");
        let client = if raw { Client::Raw } else { Client::Hyper };
        if want("append-1") {
            rates(&rt, "append-1", &with_floor(), runs, "ops/s", |t| appends(t, client, 1, 1, d));
        }
        if want("append-64") {
            rates(&rt, "append-64", &with_floor(), runs, "ops/s", |t| {
                appends(t, client, 64, 64, d)
            });
        }
        if want("append-64-shared") {
            rates(&rt, "append-64-shared", &targets, runs, "ops/s", |t| {
                appends(t, client, 64, 1, d)
            });
        }
        if want("producer-pipelined") {
            rates(&rt, "producer-pipelined", &targets, runs, "ops/s", |t| pipelined(t, d));
        }
        if want("json-batch") {
            rates(&rt, "json-batch", &targets, runs, "ops/s", |t| json_batches(t, client, d));
        }
        if want("read-64m") {
            rates(&rt, "read-64m", &targets, runs, "MB/s", |t| catch_up(t, client, d));
        }
        if want("read-64m-h2") {
            let pair = [Target::Ds(mode.clone()), Target::DsH2(mode.clone())];
            rates(&rt, "read-64m-h2", &pair, runs, "MB/s", |t| catch_up(t, client, d));
        }
        if want("json-64m") {
            let mut coded: Vec<Target> = ["identity", "zstd", "br", "gzip"]
                .into_iter()
                .map(|coding| Target::DsCoded(mode.clone(), coding))
                .collect();
            coded.extend(targets.get(1).cloned());
            rates(&rt, "json-64m", &coded, runs, "MB/s", |t| json_catch_up(t, d));
        }
        if want("sse-1000") {
            latencies(&rt, "sse-1000", &targets, runs, |t| live(t, Live::Sse, d));
        }
        if want("long-poll-1000") {
            latencies(&rt, "long-poll-1000", &targets, runs, |t| live(t, Live::LongPoll, d));
        }
        if want("subs-append-1") || want("subs-append-64") {
            let pair = [Target::DsSubs(mode.clone()), Target::Ds(mode.clone())];
            if want("subs-append-1") {
                rates(&rt, "subs-append-1", &pair, runs, "ops/s", |t| appends(t, client, 1, 1, d));
            }
            if want("subs-append-64") {
                rates(&rt, "subs-append-64", &pair, runs, "ops/s", |t| {
                    appends(t, client, 64, 64, d)
                });
            }
        }
        if want("metrics-append-64") {
            let pair = [Target::Ds(mode.clone()), Target::DsNoMetrics(mode.clone())];
            rates(&rt, "metrics-append-64", &pair, runs, "ops/s", |t| {
                appends(t, client, 64, 64, d)
            });
        }
        if want("create-100k") {
            rates(&rt, "create-100k", &targets, runs, "ops/s", |t| creates_then_heads(t, creates));
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(str::to_owned))
        .and_then(|l| l.split(':').nth(1).map(|s| s.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{cores} × {cpu}")
}

fn official_binary() -> Option<PathBuf> {
    let bin =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/durable-streams-server");
    bin.is_file().then_some(bin)
}

// ---------------------------------------------------------------------------------------
// Reporting

/// One measured run: a rate, and the server's CPU per operation in microseconds (for
/// `read-64m`, per MiB).
#[derive(Clone, Copy)]
struct Rate {
    per_sec: f64,
    cpu_us: f64,
    /// A second figure some scenarios report (`create-100k`: HEADs per second).
    second: Option<f64>,
    /// Requests that did not get the expected answer (`create-100k` only; the others
    /// stop at the first).
    failed: u64,
    /// Bytes on the wire per stream byte read (`json-64m` only).
    wire: Option<f64>,
}

#[derive(Clone, Copy)]
struct Latency {
    p50_us: u64,
    p99_us: u64,
    per_sec: f64,
    cpu_us: f64,
    missing: usize,
}

fn median<T: Copy>(v: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut sorted = v.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[sorted.len() / 2]
}

/// Runs `run` `runs` times per target, interleaving targets, and prints medians with the
/// ratio of ds-server to the official server.
fn rates(
    rt: &tokio::runtime::Runtime,
    name: &str,
    targets: &[Target],
    runs: usize,
    unit: &str,
    run: impl Fn(&Target) -> std::pin::Pin<Box<dyn Future<Output = Rate>>>,
) {
    let mut results: Vec<Vec<Rate>> = vec![Vec::new(); targets.len()];
    for _ in 0..runs {
        for (i, t) in targets.iter().enumerate() {
            results[i].push(rt.block_on(run(t)));
        }
    }
    let medians: Vec<Rate> = results.iter().map(|r| median(r, |x| x.per_sec)).collect();
    for (i, t) in targets.iter().enumerate() {
        let m = medians[i];
        let scale = if unit == "MB/s" { 1e-6 } else { 1.0 };
        let all: Vec<String> =
            results[i].iter().map(|r| format!("{:.0}", r.per_sec * scale)).collect();
        let cpu = if unit == "MB/s" {
            format!("{:.0} µs/MiB", m.cpu_us * 1_048_576.0)
        } else {
            format!("{:.1} µs", m.cpu_us)
        };
        let mut second = m.second.map(|s| format!(", then {s:.0} HEAD/s")).unwrap_or_default();
        if m.failed > 0 {
            second.push_str(&format!(", {} requests failed", m.failed));
        }
        if let Some(wire) = m.wire {
            second.push_str(&format!(", wire {:.1}% of the bytes", wire * 100.0));
        }
        println!(
            "{:<20} {:<22} {:>9.0} {unit:<5} {:>13}  {}{second}",
            if i == 0 { name } else { "" },
            t.label(),
            m.per_sec * scale,
            cpu,
            all.join(" ")
        );
    }
    if let (Some(ours), Some(theirs)) = (medians.first(), medians.get(1)) {
        let ratio = match targets.get(1) {
            Some(Target::Ds(_)) => "with / without subs",
            Some(Target::DsNoMetrics(_)) => "with / without metrics",
            Some(Target::DsH2(_)) => "HTTP/1.1 / HTTP/2",
            Some(Target::DsCoded(..)) => "identity / zstd",
            _ => "ds / official",
        };
        println!(
            "{:<20} {:<22} {:>9.2}×       {:>9.2}× CPU",
            "",
            ratio,
            ours.per_sec / theirs.per_sec,
            ours.cpu_us / theirs.cpu_us
        );
    }
}

fn latencies(
    rt: &tokio::runtime::Runtime,
    name: &str,
    targets: &[Target],
    runs: usize,
    run: impl Fn(&Target) -> std::pin::Pin<Box<dyn Future<Output = Latency>>>,
) {
    let mut results: Vec<Vec<Latency>> = vec![Vec::new(); targets.len()];
    for _ in 0..runs {
        for (i, t) in targets.iter().enumerate() {
            results[i].push(rt.block_on(run(t)));
        }
    }
    let medians: Vec<Latency> = results.iter().map(|r| median(r, |x| x.p99_us as f64)).collect();
    for (i, t) in targets.iter().enumerate() {
        let m = medians[i];
        let all: Vec<String> =
            results[i].iter().map(|r| format!("{:.1}", r.p99_us as f64 / 1000.0)).collect();
        println!(
            "{:<20} {:<22} p50 {:>5.1} ms p99 {:>5.1} ms, {:>7.0} deliveries/s, {:.1} µs CPU each, {} missing  p99 runs: {}",
            if i == 0 { name } else { "" },
            t.label(),
            m.p50_us as f64 / 1000.0,
            m.p99_us as f64 / 1000.0,
            m.per_sec,
            m.cpu_us,
            m.missing,
            all.join(" ")
        );
    }
    if let (Some(ours), Some(theirs)) = (medians.first(), medians.get(1)) {
        println!(
            "{:<20} {:<22} p99 {:.2}×, deliveries {:.2}×, CPU {:.2}×",
            "",
            "ds / official",
            ours.p99_us as f64 / theirs.p99_us.max(1) as f64,
            ours.per_sec / theirs.per_sec,
            ours.cpu_us / theirs.cpu_us
        );
    }
}

// ---------------------------------------------------------------------------------------
// Servers

#[derive(Clone)]
enum Target {
    Ds(String),
    /// ds-server with [`BENCH_SUBSCRIPTIONS`] subscriptions no benchmark stream matches.
    DsSubs(String),
    /// ds-server with `DS_METRICS__ENABLED=false` (what counting metrics costs).
    DsNoMetrics(String),
    /// ds-server read over HTTP/2 (h2c with prior knowledge).
    DsH2(String),
    /// ds-server read with this `Accept-Encoding`.
    DsCoded(String, &'static str),
    Official(PathBuf, &'static str),
    BareHyper,
}

impl Target {
    fn label(&self) -> &str {
        match self {
            Target::Ds(mode) => match mode.as_str() {
                "memory" => "ds-server memory",
                "file-durable" => "ds-server file-durable",
                "acid" => "ds-server acid",
                "postgres" => "ds-server postgres",
                _ => "ds-server",
            },
            Target::DsSubs(_) => "ds-server + 1000 subs",
            Target::DsNoMetrics(_) => "ds-server, no metrics",
            Target::DsH2(_) => "ds-server HTTP/2 (h2c)",
            Target::DsCoded(_, "identity") => "ds-server identity",
            Target::DsCoded(_, "zstd") => "ds-server zstd",
            Target::DsCoded(_, "br") => "ds-server br",
            Target::DsCoded(_, _) => "ds-server gzip",
            Target::Official(_, "memory") => "official memory",
            Target::Official(..) => "official wal",
            Target::BareHyper => "bare hyper (floor)",
        }
    }
}

/// A server started for one run, killed on drop (its data directory removed).
struct Server {
    child: Child,
    addr: SocketAddr,
    data_dir: PathBuf,
    /// Whether it speaks the protocol (bare hyper only answers 204).
    bare: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    fn start(target: &Target) -> Server {
        let data_dir =
            std::env::temp_dir().join(format!("ds-bench-{}-{}", std::process::id(), unique()));
        let port = free_port();
        let mut cmd = match target {
            Target::Ds(mode)
            | Target::DsSubs(mode)
            | Target::DsNoMetrics(mode)
            | Target::DsH2(mode)
            | Target::DsCoded(mode, _) => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_ds-server"));
                c.env("DS_STORAGE__MODE", mode)
                    .env("DS_STORAGE__DATA_DIR", &data_dir)
                    .env("DS_SERVER__HOST", "127.0.0.1")
                    .env("DS_SERVER__PORT", port.to_string())
                    .env("DS_SERVER__LONG_POLL_TIMEOUT_SECS", "5")
                    .env("DS_LIMITS__MAX_MEMORY_BYTES", (8u64 << 30).to_string())
                    .env("DS_LIMITS__MAX_STREAM_BYTES", (1u64 << 30).to_string())
                    .env("DS_LIMITS__MAX_BODY_BYTES", (16u64 << 20).to_string())
                    .env("DS_LOG", "warn");
                if mode == "postgres" {
                    c.env("DS_STORAGE__POSTGRES_URL", fresh_database());
                }
                if matches!(target, Target::DsNoMetrics(_)) {
                    c.env("DS_METRICS__ENABLED", "false");
                }
                c
            }
            Target::Official(bin, durability) => {
                let mut c = Command::new(bin);
                c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .arg("--data-dir")
                    .arg(&data_dir)
                    .args(["--durability", durability, "--long-poll-timeout-ms", "5000"]);
                c
            }
            Target::BareHyper => {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.env("DS_BENCH_ROLE", "bare-hyper").env("DS_BENCH_PORT", port.to_string());
                c
            }
        };
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start server");
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            data_dir,
            bare: matches!(target, Target::BareHyper),
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        let stderr = server.child.stderr.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let probe = if self.bare { "/healthz" } else { "/v1/stream/__bench_probe" };
        for _ in 0..500 {
            if let Ok(mut s) = std::net::TcpStream::connect(self.addr) {
                use std::io::{Read, Write};
                let req = format!("HEAD {probe} HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(req.as_bytes());
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                // 404 (no such stream) means the protocol is served; ds-server answers 503
                // while it recovers.
                if out.starts_with("HTTP/1.1 404") || out.starts_with("HTTP/1.1 204") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not become ready");
    }

    /// User + system CPU time of the server so far, in microseconds.
    fn cpu_us(&self) -> u64 {
        cpu_us_of(&self.child.id().to_string())
    }
}

/// User + system CPU time of process `pid` (or `self`) so far, in microseconds.
fn cpu_us_of(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks * 10_000 // CLK_TCK is 100 on Linux
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A new database in the cluster `scripts/bench.sh` started for the postgres mode (its
/// directory in `DS_BENCH_PGDIR`), so that every run starts empty.
fn fresh_database() -> String {
    let dir = std::env::var("DS_BENCH_PGDIR")
        .expect("DS_BENCH_PGDIR: run the postgres mode through scripts/bench.sh");
    let name = format!("bench_{}_{}", std::process::id(), unique());
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
        .args(["createdb", &dir, &name])
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/pg.sh createdb");
    assert!(out.status.success(), "createdb {name} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------
// Clients

#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// hyper's HTTP/1.1 client: what a Rust user of the server would use.
    Hyper,
    /// Prebuilt requests and a minimal response parser: the least client work possible.
    Raw,
    /// hyper's HTTP/2 client, h2c with prior knowledge.
    Hyper2,
}

/// One keep-alive connection of either client.
enum Conn {
    Hyper(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    Hyper2(hyper::client::conn::http2::SendRequest<Full<Bytes>>, SocketAddr),
    Raw(Raw),
}

/// A response: status, body, `Stream-Next-Offset` and `Content-Encoding`.
struct Answer {
    status: u16,
    body: Bytes,
    next: Option<String>,
    coding: Option<String>,
}

impl Conn {
    async fn open(addr: SocketAddr, client: Client) -> Conn {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        match client {
            Client::Raw => Conn::Raw(Raw::new(tcp)),
            Client::Hyper => {
                let (send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
                tokio::spawn(conn);
                Conn::Hyper(send)
            }
            Client::Hyper2 => {
                let builder =
                    hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
                let (send, conn) = builder.handshake(TokioIo::new(tcp)).await.unwrap();
                tokio::spawn(conn);
                Conn::Hyper2(send, addr)
            }
        }
    }

    async fn call(&mut self, req: &Req) -> Answer {
        match self {
            Conn::Hyper(send) => {
                send.ready().await.unwrap();
                let resp = send.send_request(req.hyper(req.path.clone()));
                Answer::of(resp.await.unwrap()).await
            }
            Conn::Hyper2(send, addr) => {
                send.ready().await.unwrap();
                let resp = send.send_request(req.hyper(format!("http://{addr}{}", req.path)));
                Answer::of(resp.await.unwrap()).await
            }
            Conn::Raw(raw) => {
                raw.send(&req.encoded).await;
                raw.response().await
            }
        }
    }
}

/// A request, built once and sent many times.
impl Answer {
    async fn of(resp: hyper::Response<hyper::body::Incoming>) -> Answer {
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let (next, coding) = (header("stream-next-offset"), header("content-encoding"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer { status, body, next, coding }
    }
}

struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    encoded: Vec<u8>,
}

impl Req {
    /// The request for hyper's client, to `uri`.
    fn hyper(&self, uri: String) -> hyper::Request<Full<Bytes>> {
        let mut builder =
            hyper::Request::builder().method(self.method).uri(uri).header("host", "bench");
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder.body(Full::new(self.body.clone())).unwrap()
    }

    fn new(method: &'static str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Req {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: bench\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut encoded = head.into_bytes();
        encoded.extend_from_slice(body);
        Req {
            method,
            path: path.to_owned(),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            body: Bytes::copy_from_slice(body),
            encoded,
        }
    }
}

/// The raw client: reads `Content-Length` responses with a minimal parser.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
}

impl Raw {
    fn new(stream: TcpStream) -> Raw {
        Raw { stream, buf: vec![0; 64 * 1024], filled: 0 }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn response(&mut self) -> Answer {
        loop {
            if let Some(end) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                let head = &self.buf[..end];
                let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
                let len: usize = header_value(head, b"content-length")
                    .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                let next = header_value(head, b"stream-next-offset")
                    .map(|v| String::from_utf8(v.to_vec()).unwrap());
                let total = end + 4 + len;
                while self.filled < total {
                    if self.buf.len() < total {
                        self.buf.resize(total, 0);
                    }
                    let n = self.stream.read(&mut self.buf[self.filled..]).await.unwrap();
                    assert!(n > 0, "server closed the connection");
                    self.filled += n;
                }
                let body = Bytes::copy_from_slice(&self.buf[end + 4..total]);
                self.buf.copy_within(total..self.filled, 0);
                self.filled -= total;
                return Answer { status, body, next, coding: None };
            }
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.buf[self.filled..]).await.unwrap();
            assert!(n > 0, "server closed the connection");
            self.filled += n;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn header_value<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon].eq_ignore_ascii_case(name).then(|| line[colon + 1..].trim_ascii())
    })
}

/// Subscriptions of the `subs-*` scenarios.
const BENCH_SUBSCRIPTIONS: usize = 1_000;

/// Creates [`BENCH_SUBSCRIPTIONS`] pull-wake subscriptions on patterns (`unrelated-N/*`)
/// that no benchmark stream matches.
async fn unrelated_subscriptions(conn: &mut Conn) {
    for i in 0..BENCH_SUBSCRIPTIONS {
        let body = format!(
            r#"{{"type":"pull-wake","pattern":"unrelated-{i}/*","wake_stream":"wake-{i}"}}"#
        );
        let path = format!("/v1/stream/__ds/subscriptions/bench-{i}");
        let req = Req::new("PUT", &path, &[("content-type", "application/json")], body.as_bytes());
        assert_eq!(conn.call(&req).await.status, 201);
    }
}

async fn create(conn: &mut Conn, server: &Server, name: &str, content_type: &str) {
    if server.bare {
        return;
    }
    let req =
        Req::new("PUT", &format!("/v1/stream/{name}"), &[("content-type", content_type)], b"");
    assert_eq!(conn.call(&req).await.status, 201);
}

// ---------------------------------------------------------------------------------------
// Scenarios

type Run<T> = std::pin::Pin<Box<dyn Future<Output = T>>>;

/// Counts operations over the measured window after a short warm-up, with the server's CPU.
async fn measure(
    server: &Server,
    duration: Duration,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> Rate {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ops0, cpu0, t0) = (done.load(Ordering::Relaxed), server.cpu_us(), Instant::now());
    let client0 = cpu_us_of("self");
    tokio::time::sleep(duration).await;
    let (ops1, cpu1, elapsed) = (done.load(Ordering::Relaxed), server.cpu_us(), t0.elapsed());
    if std::env::var("DS_BENCH_CLIENT_CPU").is_ok() {
        let client = (cpu_us_of("self") - client0) as f64 / (ops1 - ops0).max(1) as f64;
        println!("  (client CPU {client:.1} µs/op)");
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let ops = ops1 - ops0;
    Rate {
        per_sec: ops as f64 / elapsed.as_secs_f64(),
        cpu_us: (cpu1 - cpu0) as f64 / ops.max(1) as f64,
        second: None,
        failed: 0,
        wire: None,
    }
}

/// `connections` connections appending 100 bytes in a loop to `streams` streams.
fn appends(
    target: &Target,
    client: Client,
    connections: usize,
    streams: usize,
    duration: Duration,
) -> Run<Rate> {
    let target = target.clone();
    Box::pin(async move {
        let server = Server::start(&target);
        let addr = server.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(tokio::sync::Barrier::new(connections + 1));
        let mut setup = Conn::open(addr, client).await;
        for s in 0..streams {
            create(&mut setup, &server, &format!("s{s}"), OCTET).await;
        }
        if matches!(target, Target::DsSubs(_)) {
            unrelated_subscriptions(&mut setup).await;
        }
        let mut tasks = Vec::new();
        for i in 0..connections {
            let (stop, done, ready) = (stop.clone(), done.clone(), ready.clone());
            let path = format!("/v1/stream/s{}", i % streams);
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::open(addr, client).await;
                let req =
                    Req::new("POST", &path, &[("content-type", OCTET)], &[b'x'; PAYLOAD_BYTES]);
                ready.wait().await;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(conn.call(&req).await.status, 204);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        ready.wait().await;
        measure(&server, duration, stop, done, tasks).await
    })
}

/// Producer appends on one connection, 8 pipelined: the raw client (hyper's client sends
/// one request at a time).
fn pipelined(target: &Target, duration: Duration) -> Run<Rate> {
    const IN_FLIGHT: u64 = 8;
    let target = target.clone();
    Box::pin(async move {
        let server = Server::start(&target);
        let mut setup = Conn::open(server.addr, Client::Raw).await;
        create(&mut setup, &server, "pipelined", OCTET).await;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, done) = (stop.clone(), done.clone());
            let tcp = TcpStream::connect(server.addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut raw = Raw::new(tcp);
            tokio::spawn(async move {
                let body = [b'p'; PAYLOAD_BYTES];
                let mut seq = 0u64;
                let mut batch = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    batch.clear();
                    for _ in 0..IN_FLIGHT {
                        let s = seq.to_string();
                        let h = [
                            ("content-type", OCTET),
                            ("producer-id", "bench"),
                            ("producer-epoch", "0"),
                            ("producer-seq", s.as_str()),
                        ];
                        batch.extend_from_slice(
                            &Req::new("POST", "/v1/stream/pipelined", &h, &body).encoded,
                        );
                        seq += 1;
                    }
                    raw.send(&batch).await;
                    for _ in 0..IN_FLIGHT {
                        assert_eq!(raw.response().await.status, 200);
                    }
                    done.fetch_add(IN_FLIGHT, Ordering::Relaxed);
                }
            })
        };
        measure(&server, duration, stop, done, vec![task]).await
    })
}

/// JSON appends of 100 small messages each, one connection.
fn json_batches(target: &Target, client: Client, duration: Duration) -> Run<Rate> {
    let target = target.clone();
    Box::pin(async move {
        let server = Server::start(&target);
        let mut conn = Conn::open(server.addr, client).await;
        create(&mut conn, &server, "json", "application/json").await;
        let messages: Vec<String> = (0..100)
            .map(|i| format!("{{\"id\":{i},\"user\":\"u{i}\",\"text\":\"hello\"}}"))
            .collect();
        let body = format!("[{}]", messages.join(","));
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, done) = (stop.clone(), done.clone());
            tokio::spawn(async move {
                let req = Req::new(
                    "POST",
                    "/v1/stream/json",
                    &[("content-type", "application/json")],
                    body.as_bytes(),
                );
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(conn.call(&req).await.status, 204);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        measure(&server, duration, stop, done, vec![task]).await
    })
}

/// Reads a 64 MiB stream from the start to the tail, following `Stream-Next-Offset`.
fn catch_up(target: &Target, client: Client, duration: Duration) -> Run<Rate> {
    const STREAM_BYTES: usize = 64 << 20;
    let target = target.clone();
    let client = if matches!(target, Target::DsH2(_)) { Client::Hyper2 } else { client };
    Box::pin(async move {
        let server = Server::start(&target);
        let mut conn = Conn::open(server.addr, client).await;
        create(&mut conn, &server, "big", OCTET).await;
        let append =
            Req::new("POST", "/v1/stream/big", &[("content-type", OCTET)], &vec![b'r'; 1 << 20]);
        for _ in 0..STREAM_BYTES >> 20 {
            assert_eq!(conn.call(&append).await.status, 204);
        }
        let (cpu0, t0) = (server.cpu_us(), Instant::now());
        let mut bytes = 0usize;
        while t0.elapsed() < duration {
            let mut offset = "-1".to_owned();
            let mut read = 0;
            while read < STREAM_BYTES {
                let req = Req::new("GET", &format!("/v1/stream/big?offset={offset}"), &[], b"");
                let answer = conn.call(&req).await;
                assert_eq!(answer.status, 200);
                read += answer.body.len();
                offset = answer.next.unwrap();
            }
            assert_eq!(read, STREAM_BYTES);
            bytes += read;
        }
        let elapsed = t0.elapsed();
        Rate {
            per_sec: bytes as f64 / elapsed.as_secs_f64(),
            cpu_us: (server.cpu_us() - cpu0) as f64 / bytes as f64,
            second: None,
            failed: 0,
            wire: None,
        }
    })
}

/// `json-64m`: a 64 MiB JSON stream read from the start to the tail, again and again, with
/// the target's `Accept-Encoding` (none for the official server); the client decodes each
/// body and checks it is a JSON array.
fn json_catch_up(target: &Target, duration: Duration) -> Run<Rate> {
    const STREAM_BYTES: usize = 64 << 20;
    let target = target.clone();
    Box::pin(async move {
        let server = Server::start(&target);
        let mut conn = Conn::open(server.addr, Client::Hyper).await;
        create(&mut conn, &server, "json", "application/json").await;
        // Token-like messages, ~1 MiB per append.
        let mut batch = String::from("[");
        let mut i = 0u64;
        while batch.len() < (1 << 20) - 200 {
            if i > 0 {
                batch.push(',');
            }
            batch.push_str(&format!(
                "{{\"seq\":{i},\"role\":\"assistant\",\"token\":\"w{}\",\"logprob\":-{}.{:03}}}",
                i * 7919 % 50_000,
                i % 7,
                i * 31 % 1000
            ));
            i += 1;
        }
        batch.push(']');
        let headers = [("content-type", "application/json")];
        let append = Req::new("POST", "/v1/stream/json", &headers, batch.as_bytes());
        let mut stored = 0;
        while stored < STREAM_BYTES {
            assert_eq!(conn.call(&append).await.status, 204);
            stored += batch.len() - 2;
        }
        let accept = match &target {
            Target::DsCoded(_, coding) => *coding,
            _ => "identity",
        };
        let (cpu0, t0) = (server.cpu_us(), Instant::now());
        let (mut bytes, mut wire) = (0usize, 0usize);
        while t0.elapsed() < duration {
            let mut offset = "-1".to_owned();
            loop {
                let path = format!("/v1/stream/json?offset={offset}");
                let req = Req::new("GET", &path, &[("accept-encoding", accept)], b"");
                let answer = conn.call(&req).await;
                assert_eq!(answer.status, 200);
                wire += answer.body.len();
                let body = match answer.coding.as_deref() {
                    None => answer.body.to_vec(),
                    Some(coding) => {
                        let encoding = ds_http::compress::Encoding::from_token(coding).unwrap();
                        ds_http::compress::decompress(encoding, &answer.body).unwrap()
                    }
                };
                assert!(body.first() == Some(&b'[') && body.last() == Some(&b']'));
                if body.len() <= 2 {
                    break;
                }
                bytes += body.len();
                offset = answer.next.unwrap();
            }
        }
        let elapsed = t0.elapsed();
        Rate {
            per_sec: bytes as f64 / elapsed.as_secs_f64(),
            cpu_us: (server.cpu_us() - cpu0) as f64 / bytes as f64,
            second: None,
            failed: 0,
            wire: Some(wire as f64 / bytes as f64),
        }
    })
}

/// Creates `count` streams over 64 connections, then HEADs each. A server that cannot
/// hold them all (the official server keeps a file open per stream and answers 500 past the
/// open-file limit) has its failures counted, not hidden.
fn creates_then_heads(target: &Target, count: usize) -> Run<Rate> {
    const CONNECTIONS: usize = 64;
    let target = target.clone();
    Box::pin(async move {
        let server = Server::start(&target);
        let addr = server.addr;
        let failed = Arc::new(AtomicU64::new(0));
        let phase = |method: &'static str, expected: u16| {
            let failed = failed.clone();
            async move {
                let next = Arc::new(AtomicU64::new(0));
                let mut tasks = Vec::new();
                for _ in 0..CONNECTIONS {
                    let (next, failed) = (next.clone(), failed.clone());
                    tasks.push(tokio::spawn(async move {
                        let mut conn = Conn::open(addr, Client::Hyper).await;
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                            if i >= count {
                                break;
                            }
                            let h: &[(&str, &str)] =
                                if method == "PUT" { &[("content-type", OCTET)] } else { &[] };
                            let req = Req::new(method, &format!("/v1/stream/c/{i}"), h, b"");
                            if conn.call(&req).await.status != expected {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            }
        };
        let (cpu0, t0) = (server.cpu_us(), Instant::now());
        phase("PUT", 201).await;
        let create_secs = t0.elapsed().as_secs_f64();
        let cpu1 = server.cpu_us();
        let t1 = Instant::now();
        phase("HEAD", 200).await;
        let head_secs = t1.elapsed().as_secs_f64();
        Rate {
            per_sec: count as f64 / create_secs,
            cpu_us: (cpu1 - cpu0) as f64 / count as f64,
            second: Some(count as f64 / head_secs),
            failed: failed.load(Ordering::Relaxed),
            wire: None,
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Live {
    Sse,
    LongPoll,
}

/// 1,000 live readers (SSE or long-poll) of one stream while a writer appends 100 bytes
/// every 10 ms. Each append carries its send time; readers measure the delay to parsing it.
fn live(target: &Target, mode: Live, duration: Duration) -> Run<Latency> {
    const READERS: usize = 1000;
    let target = target.clone();
    Box::pin(async move {
        let server = Server::start(&target);
        let addr = server.addr;
        let mut writer = Conn::open(addr, Client::Hyper).await;
        create(&mut writer, &server, "fanout", "text/plain").await;
        let tail =
            writer.call(&Req::new("HEAD", "/v1/stream/fanout", &[], b"")).await.next.unwrap();
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(tokio::sync::Barrier::new(READERS + 1));
        let mut readers = Vec::new();
        // Connect in waves: 1,000 simultaneous SYNs overflow the loopback SYN queue.
        let connecting = Arc::new(tokio::sync::Semaphore::new(64));
        for _ in 0..READERS {
            let (ready, stop, tail) = (ready.clone(), stop.clone(), tail.clone());
            let permit = connecting.clone().acquire_owned().await.unwrap();
            readers.push(tokio::spawn(async move {
                match mode {
                    Live::Sse => sse_reader(addr, epoch, permit, ready, stop).await,
                    Live::LongPoll => {
                        long_poll_reader(addr, epoch, permit, ready, stop, tail).await
                    }
                }
            }));
        }
        ready.wait().await;
        // Let every reader park (long-poll readers send their first request after the
        // barrier).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut ticker = tokio::time::interval(Duration::from_millis(10));
        let mut sent = 0usize;
        let (cpu0, t0) = (server.cpu_us(), Instant::now());
        while t0.elapsed() < duration {
            ticker.tick().await;
            let ts = epoch.elapsed().as_micros();
            let mut body = format!("t={ts};").into_bytes();
            body.resize(PAYLOAD_BYTES, b'.');
            let req =
                Req::new("POST", "/v1/stream/fanout", &[("content-type", "text/plain")], &body);
            assert_eq!(writer.call(&req).await.status, 204);
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (cpu1, elapsed) = (server.cpu_us(), t0.elapsed());
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::with_capacity(sent * READERS);
        for r in readers {
            all.extend(r.await.unwrap());
        }
        drop(server);
        all.sort_unstable();
        let pick = |q: f64| all.get(((all.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0);
        Latency {
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            per_sec: all.len() as f64 / elapsed.as_secs_f64(),
            cpu_us: (cpu1 - cpu0) as f64 / all.len().max(1) as f64,
            missing: (sent * READERS).saturating_sub(all.len()),
        }
    })
}

/// The send times (`t=<micros>;`) found in `text`, as latencies at `now_us`; returns where
/// the parsed part ends.
fn stamps(text: &[u8], now_us: u64, out: &mut Vec<u64>) -> usize {
    let mut consumed = 0;
    while let Some(at) = find(&text[consumed..], b"t=") {
        let start = consumed + at + 2;
        let Some(semi) = text[start..].iter().position(|&b| b == b';') else { break };
        let sent: u64 = std::str::from_utf8(&text[start..start + semi]).unwrap().parse().unwrap();
        out.push(now_us.saturating_sub(sent));
        consumed = start + semi;
    }
    consumed
}

async fn sse_reader(
    addr: SocketAddr,
    epoch: Instant,
    connecting: tokio::sync::OwnedSemaphorePermit,
    ready: Arc<tokio::sync::Barrier>,
    stop: Arc<AtomicBool>,
) -> Vec<u64> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/v1/stream/fanout?offset=now&live=sse")
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = send.send_request(req).await.unwrap().into_body();
    let mut pending = Vec::new();
    // The first control event: this reader is live.
    while find(&pending, b"upToDate").is_none() {
        let frame = body.frame().await.unwrap().unwrap();
        pending.extend_from_slice(&frame.into_data().unwrap());
    }
    pending.clear();
    drop(connecting);
    ready.wait().await;
    let mut latencies = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        let frame = match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(_) => break,
            Err(_) => continue,
        };
        let Ok(data) = frame.into_data() else { continue };
        let now_us = epoch.elapsed().as_micros() as u64;
        pending.extend_from_slice(&data);
        let used = stamps(&pending, now_us, &mut latencies);
        pending.drain(..used);
    }
    latencies
}

async fn long_poll_reader(
    addr: SocketAddr,
    epoch: Instant,
    connecting: tokio::sync::OwnedSemaphorePermit,
    ready: Arc<tokio::sync::Barrier>,
    stop: Arc<AtomicBool>,
    mut offset: String,
) -> Vec<u64> {
    let mut conn = Conn::open(addr, Client::Hyper).await;
    drop(connecting);
    ready.wait().await;
    let mut latencies = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        let req =
            Req::new("GET", &format!("/v1/stream/fanout?offset={offset}&live=long-poll"), &[], b"");
        let answer = match tokio::time::timeout(Duration::from_secs(6), conn.call(&req)).await {
            Ok(answer) => answer,
            Err(_) => break,
        };
        let now_us = epoch.elapsed().as_micros() as u64;
        if let Some(next) = answer.next {
            offset = next;
        }
        if answer.status == 200 {
            stamps(&answer.body, now_us, &mut latencies);
        }
    }
    latencies
}

// ---------------------------------------------------------------------------------------
// The floor: hyper with no storage

mod bare_hyper {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    /// Serves on `DS_BENCH_PORT` until killed: drain the body, answer 204.
    pub fn serve() {
        let port: u16 = std::env::var("DS_BENCH_PORT").unwrap().parse().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tcp.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let mut resp = hyper::Response::new(Empty::<Bytes>::new());
                        *resp.status_mut() = hyper::StatusCode::NO_CONTENT;
                        Ok::<_, Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    }
}
