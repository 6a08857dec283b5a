//! Load benchmark: drives the release `ds-server` binary over loopback and prints medians.
//!
//! ```sh
//! cargo bench --bench load                       # every scenario
//! cargo bench --bench load -- append-64 sse      # some of them
//! DS_BENCH_SECS=5 DS_BENCH_RUNS=5 cargo bench --bench load
//! ```
//!
//! Scenarios (each run `DS_BENCH_RUNS` times, default 3; the median run is reported):
//! - `append-1`: 100-byte appends, one connection, one stream, one request at a time.
//! - `append-64`: 100-byte appends, 64 connections, 64 streams.
//! - `append-64-shared`: 100-byte appends, 64 connections, all to one stream.
//! - `producer-pipelined`: 100-byte producer appends, one connection, 64 requests in flight
//!   (HTTP/1.1 pipelining), each with the next `Producer-Seq`.
//! - `read-64m`: catch-up reads of a 64 MiB stream, chunk by chunk, on one connection.
//! - `sse`: 1,000 SSE readers of one stream while a writer appends every 10 ms; the latency
//!   from the append being sent to each reader parsing it, p50 and p99.
//!
//! `DS_BENCH_MODE` picks the storage mode (`memory` by default; `file-fast`, `file-durable`
//! use a fresh directory under the system temp dir).
//!
//! Server CPU per operation comes from `/proc/<pid>/stat` (user + system time) over the run.
//! The load generator runs on the same machine and competes for the same cores.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark that fails may panic")]
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PAYLOAD_BYTES: usize = 100;

fn main() {
    let secs: u64 = env_or("DS_BENCH_SECS", 3);
    let runs: usize = env_or("DS_BENCH_RUNS", 3);
    let wanted: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mode = std::env::var("DS_BENCH_MODE").unwrap_or_else(|_| "memory".into());
    println!(
        "ds-server load benchmark: {mode} mode, {runs} runs of {secs} s, machine: {}",
        machine()
    );
    let duration = Duration::from_secs(secs);
    if want("append-1") {
        report_rate("append-1 (1 conn, 100 B)", runs, || rt.block_on(appends(1, duration)));
    }
    if want("append-64") {
        report_rate("append-64 (64 conns/streams, 100 B)", runs, || {
            rt.block_on(appends(64, duration))
        });
    }
    if want("append-64-shared") {
        report_rate("append-64-shared (64 conns, 1 stream, 100 B)", runs, || {
            rt.block_on(shared_appends(64, duration))
        });
    }
    if want("producer-pipelined") {
        report_rate("producer-pipelined (1 conn, 64 in flight)", runs, || {
            rt.block_on(pipelined_producer(duration))
        });
    }
    if want("read-64m") {
        let results: Vec<Rate> = (0..runs).map(|_| rt.block_on(catch_up_reads(duration))).collect();
        let median = median_by(results, |r| r.per_sec);
        println!(
            "{:<44} {:>10.2} GB/s   server {:>6.1} µs CPU per MiB",
            "read-64m (catch-up, 1 conn)",
            median.per_sec / 1e9,
            median.server_cpu_us_per_op * 1_048_576.0
        );
    }
    if want("sse") {
        let results: Vec<Latency> = (0..runs).map(|_| rt.block_on(sse_fanout(duration))).collect();
        let median = median_by(results, |l| l.p99_us as f64);
        println!(
            "{:<44} p50 {:>6.2} ms   p99 {:>6.2} ms   ({} deliveries, {} missing)",
            "sse (1000 readers, append every 10 ms)",
            median.p50_us as f64 / 1000.0,
            median.p99_us as f64 / 1000.0,
            median.delivered,
            median.missing
        );
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

struct Rate {
    per_sec: f64,
    server_cpu_us_per_op: f64,
}

struct Latency {
    p50_us: u64,
    p99_us: u64,
    delivered: usize,
    missing: usize,
}

fn median_by<T>(mut v: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let mid = v.len() / 2;
    v.swap_remove(mid)
}

fn report_rate(name: &str, runs: usize, mut run: impl FnMut() -> Rate) {
    let results: Vec<Rate> = (0..runs).map(|_| run()).collect();
    let all: Vec<String> = results.iter().map(|r| format!("{:.0}", r.per_sec)).collect();
    let median = median_by(results, |r| r.per_sec);
    println!(
        "{name:<44} {:>10.0} ops/s   server {:>5.1} µs CPU/op   (runs: {})",
        median.per_sec,
        median.server_cpu_us_per_op,
        all.join(", ")
    );
}

/// A release server started for one scenario, killed on drop (its data directory removed).
struct Server {
    child: Child,
    addr: SocketAddr,
    data_dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Server {
        let mode = std::env::var("DS_BENCH_MODE").unwrap_or_else(|_| "memory".into());
        let data_dir =
            std::env::temp_dir().join(format!("ds-bench-{}-{}", std::process::id(), unique()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ds-server"))
            .env("DS_STORAGE__MODE", &mode)
            .env("DS_STORAGE__DATA_DIR", &data_dir)
            .env("DS_SERVER__HOST", "127.0.0.1")
            .env("DS_SERVER__PORT", "0")
            .env("DS_LIMITS__MAX_MEMORY_BYTES", (8u64 << 30).to_string())
            .env("DS_LIMITS__MAX_STREAM_BYTES", (1u64 << 30).to_string())
            .env("DS_LIMITS__MAX_BODY_BYTES", (16u64 << 20).to_string())
            .env("DS_LOG", "warn,ds_server=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the release server (cargo bench builds it)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("server printed its address").unwrap();
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let server = Server { child, addr, data_dir };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        for _ in 0..500 {
            if let Ok(mut s) = std::net::TcpStream::connect(self.addr) {
                use std::io::{Read, Write};
                let _ =
                    s.write_all(b"GET /readyz HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not become ready");
    }

    /// User + system CPU time of the server so far, in microseconds.
    fn cpu_us(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks * 10_000 // CLK_TCK is 100 on Linux
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A connection with the least client work per request: prebuilt requests, and a response
/// parser that only finds the status, the body length and at most one header.
struct Fast {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
}

impl Fast {
    async fn connect(addr: SocketAddr) -> Fast {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Fast { stream, buf: vec![0; 64 * 1024], filled: 0 }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one `Content-Length` response; returns its status, body length and the value of
    /// `header` if asked.
    async fn response(&mut self, header: Option<&[u8]>) -> (u16, usize, Option<Vec<u8>>) {
        loop {
            if let Some(end) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                let head = &self.buf[..end];
                let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
                let len = header_value(head, b"content-length")
                    .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                let wanted = header.and_then(|h| header_value(head, h)).map(<[u8]>::to_vec);
                let total = end + 4 + len;
                while self.filled < total {
                    if self.buf.len() < total {
                        self.buf.resize(total, 0);
                    }
                    let n = self.stream.read(&mut self.buf[self.filled..]).await.unwrap();
                    assert!(n > 0, "server closed the connection");
                    self.filled += n;
                }
                self.buf.copy_within(total..self.filled, 0);
                self.filled -= total;
                return (status, len, wanted);
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

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: bench\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

async fn create(conn: &mut Fast, name: &str, content_type: &str) {
    conn.send(&request(
        "PUT",
        &format!("/v1/stream/{name}"),
        &[("content-type", content_type)],
        b"",
    ))
    .await;
    assert_eq!(conn.response(None).await.0, 201);
}

async fn appends(connections: usize, duration: Duration) -> Rate {
    let server = Server::start();
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let ready = Arc::new(tokio::sync::Barrier::new(connections + 1));
    for i in 0..connections {
        let (stop, done, ready) = (stop.clone(), done.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Fast::connect(addr).await;
            let name = format!("bench-{i}");
            create(&mut conn, &name, "application/octet-stream").await;
            let req = request(
                "POST",
                &format!("/v1/stream/{name}"),
                &[("content-type", "application/octet-stream")],
                &[b'x'; PAYLOAD_BYTES],
            );
            ready.wait().await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                conn.send(&req).await;
                assert_eq!(conn.response(None).await.0, 204);
                n += 1;
            }
            done.fetch_add(n, Ordering::Relaxed);
        }));
    }
    ready.wait().await;
    measure(&server, duration, stop, done, tasks).await
}

async fn shared_appends(connections: usize, duration: Duration) -> Rate {
    let server = Server::start();
    let addr = server.addr;
    let mut setup = Fast::connect(addr).await;
    create(&mut setup, "shared", "application/octet-stream").await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(tokio::sync::Barrier::new(connections + 1));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (stop, done, ready) = (stop.clone(), done.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Fast::connect(addr).await;
            let req = request(
                "POST",
                "/v1/stream/shared",
                &[("content-type", "application/octet-stream")],
                &[b'x'; PAYLOAD_BYTES],
            );
            ready.wait().await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                conn.send(&req).await;
                assert_eq!(conn.response(None).await.0, 204);
                n += 1;
            }
            done.fetch_add(n, Ordering::Relaxed);
        }));
    }
    ready.wait().await;
    measure(&server, duration, stop, done, tasks).await
}

async fn pipelined_producer(duration: Duration) -> Rate {
    const IN_FLIGHT: u64 = 64;
    let server = Server::start();
    let mut conn = Fast::connect(server.addr).await;
    create(&mut conn, "pipelined", "application/octet-stream").await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let task = {
        let (stop, done) = (stop.clone(), done.clone());
        tokio::spawn(async move {
            let body = [b'p'; PAYLOAD_BYTES];
            let mut seq = 0u64;
            let mut batch = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                batch.clear();
                for _ in 0..IN_FLIGHT {
                    let s = seq.to_string();
                    batch.extend_from_slice(&request(
                        "POST",
                        "/v1/stream/pipelined",
                        &[
                            ("content-type", "application/octet-stream"),
                            ("producer-id", "bench"),
                            ("producer-epoch", "0"),
                            ("producer-seq", &s),
                        ],
                        &body,
                    ));
                    seq += 1;
                }
                conn.send(&batch).await;
                for _ in 0..IN_FLIGHT {
                    assert_eq!(conn.response(None).await.0, 200);
                }
                done.fetch_add(IN_FLIGHT, Ordering::Relaxed);
            }
        })
    };
    measure(&server, duration, stop, done, vec![task]).await
}

async fn measure(
    server: &Server,
    duration: Duration,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> Rate {
    // A short warm-up, then the measured window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ops0, cpu0, t0) = (done.load(Ordering::Relaxed), server.cpu_us(), Instant::now());
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let (cpu1, elapsed) = (server.cpu_us(), t0.elapsed());
    for t in tasks {
        t.await.unwrap();
    }
    // Operations finish up to one request after `stop`; that one is within noise.
    let ops = done.load(Ordering::Relaxed) - ops0;
    Rate {
        per_sec: ops as f64 / elapsed.as_secs_f64(),
        server_cpu_us_per_op: (cpu1 - cpu0) as f64 / ops.max(1) as f64,
    }
}

async fn catch_up_reads(duration: Duration) -> Rate {
    const STREAM_BYTES: usize = 64 << 20;
    let server = Server::start();
    let mut conn = Fast::connect(server.addr).await;
    create(&mut conn, "big", "application/octet-stream").await;
    let mib = vec![b'r'; 1 << 20];
    let append =
        request("POST", "/v1/stream/big", &[("content-type", "application/octet-stream")], &mib);
    for _ in 0..STREAM_BYTES >> 20 {
        conn.send(&append).await;
        assert_eq!(conn.response(None).await.0, 204);
    }
    let (cpu0, t0) = (server.cpu_us(), Instant::now());
    let mut bytes = 0usize;
    while t0.elapsed() < duration {
        let mut offset = "-1".to_owned();
        let mut read = 0;
        while read < STREAM_BYTES {
            conn.send(&request("GET", &format!("/v1/stream/big?offset={offset}"), &[], b"")).await;
            let (status, len, next) = conn.response(Some(b"stream-next-offset")).await;
            assert_eq!(status, 200);
            read += len;
            offset = String::from_utf8(next.unwrap()).unwrap();
        }
        assert_eq!(read, STREAM_BYTES);
        bytes += read;
    }
    let elapsed = t0.elapsed();
    Rate {
        per_sec: bytes as f64 / elapsed.as_secs_f64(),
        server_cpu_us_per_op: (server.cpu_us() - cpu0) as f64 / bytes as f64,
    }
}

async fn sse_fanout(duration: Duration) -> Latency {
    const READERS: usize = 1000;
    let server = Server::start();
    let addr = server.addr;
    let mut conn = Fast::connect(addr).await;
    create(&mut conn, "fanout", "text/plain").await;
    let epoch = Instant::now();
    let ready = Arc::new(tokio::sync::Barrier::new(READERS + 1));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let ready = ready.clone();
        readers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(&request("GET", "/v1/stream/fanout?offset=now&live=sse", &[], b"")[..])
                .await
                .unwrap();
            let mut buf = vec![0u8; 16 * 1024];
            let mut filled = 0;
            // Wait for the first control event, so every reader is live before writing.
            while find(&buf[..filled], b"upToDate").is_none() {
                filled += s.read(&mut buf[filled..]).await.unwrap();
            }
            filled = 0;
            ready.wait().await;
            let mut latencies = Vec::with_capacity(1024);
            loop {
                let read =
                    tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf[filled..]));
                let n = match read.await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                let now_us = epoch.elapsed().as_micros() as u64;
                filled += n;
                // Each append is `t=<micros>;` padded with dots; a reader that fell behind
                // gets several in one data event. Nothing else in the stream contains `t=`.
                let mut consumed = 0;
                while let Some(at) = find(&buf[consumed..filled], b"t=") {
                    let start = consumed + at + 2;
                    let Some(semi) = buf[start..filled].iter().position(|&b| b == b';') else {
                        break;
                    };
                    let sent: u64 =
                        std::str::from_utf8(&buf[start..start + semi]).unwrap().parse().unwrap();
                    latencies.push(now_us.saturating_sub(sent));
                    consumed = start + semi;
                }
                buf.copy_within(consumed..filled, 0);
                filled -= consumed;
            }
            latencies
        }));
    }
    ready.wait().await;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0usize;
    let t0 = Instant::now();
    while t0.elapsed() < duration {
        ticker.tick().await;
        let ts = epoch.elapsed().as_micros();
        let mut body = format!("t={ts};").into_bytes();
        body.resize(PAYLOAD_BYTES, b'.');
        conn.send(&request("POST", "/v1/stream/fanout", &[("content-type", "text/plain")], &body))
            .await;
        assert_eq!(conn.response(None).await.0, 204);
        sent += 1;
    }
    // Readers stop after 500 ms without data.
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
        delivered: all.len(),
        missing: (sent * READERS).saturating_sub(all.len()),
    }
}
