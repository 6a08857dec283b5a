//! Live reads: long-poll and SSE wake on appends, closure and deletion, end on schedule and at
//! shutdown, and deliver every byte exactly once under concurrent writers.

use std::time::{Duration, Instant};

use crate::support::http1::encode_request;
use crate::support::{Conn, TestServer, stream};

const TEXT: (&str, &str) = ("content-type", "text/plain");

/// Opens an SSE response and returns the connection positioned at its body.
async fn open_sse(server: &TestServer, name: &str, offset: &str) -> Conn {
    let mut conn = server.conn().await;
    let path = format!("{}?offset={offset}&live=sse", stream(name));
    conn.send_raw(&encode_request("GET", &path, &[], b"")).await.unwrap();
    let head = conn.read_head().await.unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    conn
}

/// Splits SSE text into (event, data) pairs; comments are skipped.
fn events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            event.map(|e| (e, data.join("\n")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_times_out_with_204_and_a_cursor() {
    let server = TestServer::start().await;
    let created = server.req("PUT", &stream("lp"), &[TEXT], b"x").await;
    let tail = created.header("stream-next-offset").unwrap().to_owned();
    let started = Instant::now();
    let path = format!("{}?offset={tail}&live=long-poll", stream("lp"));
    let resp = server.req("GET", &path, &[], b"").await;
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("stream-up-to-date"), Some("true"));
    assert_eq!(resp.header("stream-next-offset"), Some(tail.as_str()));
    assert!(resp.header("stream-cursor").is_some_and(|c| c.parse::<u64>().is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_ends_with_404_when_the_stream_is_deleted() {
    let server = TestServer::with(|c| c.server.long_poll_timeout_ms = Some(5000)).await;
    server.req("PUT", &stream("del"), &[TEXT], b"").await;
    let path = format!("{}?offset=now&live=long-poll", stream("del"));
    let mut conn = server.conn().await;
    conn.send_raw(&encode_request("GET", &path, &[], b"")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.req("DELETE", &stream("del"), &[], b"").await;
    let resp = tokio::time::timeout(Duration::from_secs(2), conn.read_response(false))
        .await
        .expect("woken by the delete")
        .unwrap();
    assert_eq!(resp.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_ends_after_the_reconnect_interval_even_while_data_flows() {
    let server = TestServer::with(|c| c.server.sse_reconnect_interval_secs = 1).await;
    server.req("PUT", &stream("r"), &[TEXT], b"").await;
    let mut sse = open_sse(&server, "r", "-1").await;
    let started = Instant::now();
    let writer = {
        let addr = server.addr();
        tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await.unwrap();
            for i in 0..40 {
                conn.request("POST", "/v1/stream/r", &[TEXT], format!("{i},").as_bytes())
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut text = String::new();
    while let Some(chunk) = sse.next_chunk_within(Duration::from_secs(3)).await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_millis(900) && lasted < Duration::from_millis(1900),
        "{lasted:?}"
    );
    let got = events(&text);
    assert!(got.iter().any(|(e, _)| e == "data"), "data flowed before the reconnect");
    assert_eq!(got.last().map(|(e, _)| e.as_str()), Some("control"), "ends after a control event");
    writer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sse_gets_keepalive_comments_and_ends_on_delete() {
    let server = TestServer::with(|c| c.server.sse_keepalive_secs = 1).await;
    server.req("PUT", &stream("k"), &[TEXT], b"").await;
    let mut sse = open_sse(&server, "k", "now").await;
    let first = sse.next_chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"upToDate\":true"));
    let ping = sse.next_chunk_within(Duration::from_secs(3)).await.unwrap().unwrap();
    assert_eq!(&ping[..], b": keepalive\n\n");
    server.req("DELETE", &stream("k"), &[], b"").await;
    let end = tokio::time::timeout(Duration::from_secs(2), sse.next_chunk()).await.expect("ends");
    assert!(end.unwrap().is_none(), "the response ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_live_readers_and_finishes() {
    let server = TestServer::with(|c| c.server.long_poll_timeout_ms = Some(30_000)).await;
    server.req("PUT", &stream("s"), &[TEXT], b"").await;
    let mut sse = open_sse(&server, "s", "now").await;
    sse.next_chunk().await.unwrap();
    let mut lp = server.conn().await;
    let path = format!("{}?offset=now&live=long-poll", stream("s"));
    lp.send_raw(&encode_request("GET", &path, &[], b"")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown did not wait for live reads");
    let resp = lp.read_response(false).await.unwrap();
    assert_eq!(resp.status, 204);
    assert!(sse.next_chunk_within(Duration::from_secs(1)).await.unwrap().is_none());
}

/// Four writers append concurrently; long-poll and SSE readers follow from the start. Each
/// reader must assemble exactly the final content: a body running past the `Stream-Next-Offset`
/// it reports, or a wake-up that re-sends data, would show up as duplicated bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_readers_see_every_record_exactly_once() {
    let server = TestServer::with(|c| c.server.long_poll_timeout_ms = Some(2000)).await;
    server.req("PUT", &stream("x"), &[TEXT], b"").await;
    let addr = server.addr();
    let mut writers = Vec::new();
    for w in 0..4 {
        writers.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await.unwrap();
            for i in 0..100 {
                let body = format!("<{w}.{i}>");
                let resp =
                    conn.request("POST", "/v1/stream/x", &[TEXT], body.as_bytes()).await.unwrap();
                assert_eq!(resp.status, 204);
            }
        }));
    }
    let expected_len: usize =
        (0..4).map(|w| (0..100).map(|i| format!("<{w}.{i}>").len()).sum::<usize>()).sum();
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await.unwrap();
            let mut offset = "-1".to_owned();
            let mut got = Vec::new();
            while got.len() < expected_len {
                let path = format!("/v1/stream/x?offset={offset}&live=long-poll");
                let resp = conn.request("GET", &path, &[], b"").await.unwrap();
                assert!(resp.status == 200 || resp.status == 204);
                got.extend_from_slice(&resp.body);
                offset = resp.header("stream-next-offset").unwrap().to_owned();
            }
            got
        }));
    }
    let sse_reader = tokio::spawn(async move {
        let mut conn = Conn::connect(addr).await.unwrap();
        conn.send_raw(&encode_request("GET", "/v1/stream/x?offset=-1&live=sse", &[], b""))
            .await
            .unwrap();
        conn.read_head().await.unwrap();
        let mut text = String::new();
        let mut data = String::new();
        while data.len() < expected_len {
            let chunk =
                conn.next_chunk_within(Duration::from_secs(5)).await.unwrap().expect("more events");
            text.push_str(&String::from_utf8_lossy(&chunk));
            data = events(&text).into_iter().filter(|(e, _)| e == "data").map(|(_, d)| d).collect();
        }
        data.into_bytes()
    });
    for w in writers {
        w.await.unwrap();
    }
    let fin = server.req("GET", &stream("x"), &[], b"").await;
    assert_eq!(fin.body.len(), expected_len);
    for r in readers {
        assert_eq!(r.await.unwrap(), fin.body, "long-poll reader saw the stream exactly once");
    }
    assert_eq!(sse_reader.await.unwrap(), fin.body, "SSE reader saw the stream exactly once");
}

/// A stream with a reader waiting on it is in use (§5.1): its idle time starts when the
/// long-poll ends, not when it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_keeps_a_ttl_stream_alive() {
    let server = TestServer::with(|c| c.server.long_poll_timeout_ms = Some(2500)).await;
    let created = server.req("PUT", &stream("t"), &[TEXT, ("stream-ttl", "1")], b"").await;
    let tail = created.header("stream-next-offset").unwrap().to_owned();
    let path = format!("{}?offset={tail}&live=long-poll", stream("t"));
    assert_eq!(server.req("GET", &path, &[], b"").await.status, 204);
    assert_eq!(server.req("HEAD", &stream("t"), &[], b"").await.status, 200, "alive after 2.5 s");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(server.req("HEAD", &stream("t"), &[], b"").await.status, 404, "idle since");
}
