//! `GET /metrics` (issue 11): the exposition is parsed by the Prometheus project's own
//! parser (Python `prometheus_client`, OpenMetrics; `scripts/test.sh` installs it), and the
//! series move with traffic: requests by operation and status class, latency, append
//! outcomes and bytes, read bytes, live readers, streams, memory, the process.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{TestServer, stream};

/// Every sample of `text`: name → (labels, value), from the reference parser.
type Samples = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;

fn parse(text: &str) -> Samples {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs prometheus_client for it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the reference parser refused the exposition (pip install prometheus_client?): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the sample `name` whose labels include `labels` (0 if there is none).
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .get(name)
        .into_iter()
        .flatten()
        .find(|(l, _)| labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map_or(0.0, |(_, v)| *v)
}

async fn scrape(server: &TestServer) -> Samples {
    let resp = server.req("GET", "/metrics", &[], b"").await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    parse(&resp.text())
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic_with_no_client_chosen_label() {
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    assert_eq!(value(&before, "ds_ready", &[]), 1.0);
    assert!(value(&before, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&before, "process_open_fds", &[]) >= 3.0);
    assert!(before.contains_key("process_cpu_seconds_total"));
    assert!(value(&before, "ds_memory_limit_bytes", &[]) > 0.0);

    let s = stream("metered-stream-name");
    let text = [("content-type", "text/plain")];
    assert_eq!(server.req("PUT", &s, &text, b"").await.status, 201);
    assert_eq!(server.req("POST", &s, &text, b"hello").await.status, 204);
    let producer = [
        ("content-type", "text/plain"),
        ("producer-id", "p1"),
        ("producer-epoch", "0"),
        ("producer-seq", "0"),
    ];
    assert_eq!(server.req("POST", &s, &producer, b"abc").await.status, 200);
    assert_eq!(server.req("POST", &s, &producer, b"abc").await.status, 204, "a retry");
    assert_eq!(server.req("POST", &stream("missing"), &text, b"x").await.status, 404);
    let read = server.req("GET", &format!("{s}?offset=-1"), &[], b"").await;
    assert_eq!(read.text(), "helloabc");
    // A live SSE reader is counted while it is connected.
    let mut sse = server.conn().await;
    let head =
        crate::support::http1::encode_request("GET", &format!("{s}?offset=-1&live=sse"), &[], b"");
    sse.send_raw(&head).await.unwrap();
    assert_eq!(sse.read_head().await.unwrap().status, 200);
    assert!(sse.next_chunk().await.unwrap().is_some(), "the first event");

    let after = scrape(&server).await;
    let requests = |op: &str, class: &str| {
        value(&after, "ds_http_requests_total", &[("operation", op), ("status", class)])
            - value(&before, "ds_http_requests_total", &[("operation", op), ("status", class)])
    };
    assert_eq!(requests("create", "2xx"), 1.0);
    assert_eq!(requests("append", "2xx"), 3.0);
    assert_eq!(requests("append", "4xx"), 1.0);
    assert_eq!(requests("read", "2xx"), 1.0);
    assert_eq!(requests("metrics", "2xx"), 1.0, "the first scrape");
    let appends = |outcome: &str| value(&after, "ds_appends_total", &[("outcome", outcome)]);
    assert_eq!((appends("appended"), appends("duplicate"), appends("refused")), (2.0, 1.0, 1.0));
    assert_eq!(value(&after, "ds_appended_bytes_total", &[]), 8.0, "hello + abc");
    assert_eq!(value(&after, "ds_read_bytes_total", &[]), 16.0, "one catch-up, one SSE event");
    assert_eq!(value(&after, "ds_live_readers", &[("kind", "sse")]), 1.0);
    assert_eq!(value(&after, "ds_streams", &[]), 1.0);
    assert!(value(&after, "ds_memory_used_bytes", &[]) >= 8.0);
    let appends_timed =
        value(&after, "ds_http_request_duration_seconds_count", &[("operation", "append")]);
    assert_eq!(appends_timed, 4.0, "every append answered is timed");
    // Cardinality: nothing a client chose is a label value.
    for (name, samples) in &after {
        for (labels, _) in samples {
            for v in labels.values() {
                assert!(!v.contains("metered") && !v.contains("p1"), "{name} has {labels:?}");
            }
        }
    }

    drop(sse);
    for _ in 0..100 {
        if value(&scrape(&server).await, "ds_live_readers", &[("kind", "sse")]) == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a closed SSE reader is still counted");
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let server = TestServer::with(|c| c.metrics.enabled = false).await;
    assert_eq!(server.req("GET", "/metrics", &[], b"").await.status, 404);
}

#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let server = TestServer::with(|c| c.metrics.listen = "127.0.0.1:0".into()).await;
    let at = server.metrics_addr().expect("a metrics listener");
    assert_eq!(server.req("GET", "/metrics", &[], b"").await.status, 404, "not on the main port");
    let mut conn = crate::support::Conn::connect(at).await.unwrap();
    let metrics = conn.request("GET", "/metrics", &[], b"").await.unwrap();
    assert_eq!(metrics.status, 200);
    let samples = parse(&metrics.text());
    let refused = [("operation", "metrics"), ("status", "4xx")];
    assert_eq!(value(&samples, "ds_http_requests_total", &refused), 1.0, "the main port's 404");
    let elsewhere = conn.request("GET", &stream("x"), &[], b"").await.unwrap();
    assert_eq!(elsewhere.status, 404, "the metrics listener serves nothing else");
}

/// The engine's series in each persistent mode: commit rounds counted (appends per round,
/// time to durable), the store not poisoned, the time it took to open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_rounds_and_opening_are_measured_in_the_persistent_modes() {
    for mode in ["file-fast", "file-durable", "acid"] {
        let dir = std::env::temp_dir().join(format!(
            "ds-metrics-{mode}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let (m, d) = (mode.to_owned(), dir.clone());
        let server = TestServer::with(move |c| {
            c.storage.mode = m;
            c.storage.data_dir = d;
            c.storage.acid_shard_count = 1;
        })
        .await;
        let s = stream("committed");
        let text = [("content-type", "text/plain")];
        assert_eq!(server.req("PUT", &s, &text, b"").await.status, 201);
        for _ in 0..3 {
            assert_eq!(server.req("POST", &s, &text, b"abc").await.status, 204);
        }
        let samples = scrape(&server).await;
        let labels = [("mode", mode)];
        let rounds = value(&samples, "ds_commit_appends_count", &labels);
        assert!((1.0..=3.0).contains(&rounds), "{mode}: {rounds} rounds for 3 appends");
        assert_eq!(value(&samples, "ds_commit_appends_sum", &labels), 3.0, "{mode}");
        assert_eq!(value(&samples, "ds_commit_duration_seconds_count", &labels), rounds, "{mode}");
        assert!(value(&samples, "ds_commit_duration_seconds_sum", &labels) > 0.0, "{mode}");
        assert_eq!(value(&samples, "ds_store_poisoned", &[]), 0.0, "{mode}");
        assert!(value(&samples, "ds_open_duration_seconds", &[]) > 0.0, "{mode}");
        server.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Webhook deliveries are counted by outcome and timed: a receiver that answers done, one
/// that accepts (the worker would call back), one that fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_are_counted_by_outcome() {
    use crate::support::receiver::{http_answer, receiver};
    let server = TestServer::with(|c| {
        c.subscriptions.allow_local_webhooks = true;
        c.subscriptions.webhook_timeout_ms = 2_000;
    })
    .await;
    let receivers = [
        ("done", receiver(|_| Some(http_answer("200 OK", "{\"done\":true}"))).await.0),
        ("accepted", receiver(|_| Some(http_answer("202 Accepted", "{}"))).await.0),
        ("failed", receiver(|_| Some(http_answer("500 Internal Server Error", "{}"))).await.0),
    ];
    let json = [("content-type", "application/json")];
    for (outcome, url) in &receivers {
        let config = serde_json::json!({
            "type": "webhook", "pattern": format!("{outcome}/*"), "lease_ttl_ms": 5000,
            "webhook": {"url": url},
        });
        let path = format!("/v1/stream/__ds/subscriptions/{outcome}");
        let resp = server.req("PUT", &path, &json, config.to_string().as_bytes()).await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        let s = stream(&format!("{outcome}/s"));
        assert_eq!(
            server.req("PUT", &s, &[("content-type", "text/plain")], b"x").await.status,
            201
        );
    }
    let mut samples = scrape(&server).await;
    for _ in 0..200 {
        if receivers
            .iter()
            .all(|(o, _)| value(&samples, "ds_webhook_deliveries_total", &[("outcome", o)]) >= 1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        samples = scrape(&server).await;
    }
    for (outcome, _) in &receivers {
        let n = value(&samples, "ds_webhook_deliveries_total", &[("outcome", outcome)]);
        assert!(n >= 1.0, "{outcome}: {n} deliveries counted");
    }
    let total: f64 = receivers
        .iter()
        .map(|(o, _)| value(&samples, "ds_webhook_deliveries_total", &[("outcome", o)]))
        .sum();
    let timed = value(&samples, "ds_webhook_delivery_duration_seconds_count", &[]);
    assert_eq!(timed, total, "every delivery is timed");
    assert!(value(&samples, "ds_webhook_delivery_duration_seconds_sum", &[]) > 0.0);
    server.stop().await;
}
