//! Hostile and buggy clients: every malformed request gets a short problem+json 4xx, nothing
//! is created or appended, and the server keeps serving.

use std::time::Duration;

use crate::support::{TestServer, assert_problem, stream};

const TEXT: (&str, &str) = ("content-type", "text/plain");

async fn read_text(server: &TestServer, name: &str) -> String {
    let resp = server.req("GET", &stream(name), &[], b"").await;
    assert_eq!(resp.status, 200);
    resp.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    for ttl in ["", "-1", "+5", "05", "1.5", "1e3", "18446744073709551615", "99999999999999999999"]
    {
        let resp = server.req("PUT", &stream("ttl"), &[TEXT, ("stream-ttl", ttl)], b"").await;
        assert_problem(&resp, 400);
    }
    assert_eq!(server.req("HEAD", &stream("ttl"), &[], b"").await.status, 404);

    server.req("PUT", &stream("p"), &[TEXT], b"base").await;
    let too_big = [
        "9007199254740992",
        "18446744073709551615",
        "18446744073709551616",
        "-0",
        "+0",
        "00",
        "",
        "1.0",
        "0x1",
    ];
    for bad in too_big {
        for (epoch, seq) in [(bad, "0"), ("0", bad)] {
            let headers =
                [TEXT, ("producer-id", "w"), ("producer-epoch", epoch), ("producer-seq", seq)];
            assert_problem(&server.req("POST", &stream("p"), &headers, b"X").await, 400);
        }
    }
    let max = "9007199254740991";
    let headers = [TEXT, ("producer-id", "w"), ("producer-epoch", max), ("producer-seq", "0")];
    assert_eq!(server.req("POST", &stream("p"), &headers, b"!").await.status, 200);
    assert_eq!(read_text(&server, "p").await, "base!", "refused appends left no trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_stream_names_are_refused_before_anything_is_created() {
    let server = TestServer::start().await;
    let long = format!("/v1/stream/{}", "n".repeat(1025));
    for path in [
        "/v1/stream/a%00b",
        "/v1/stream/a%0d%0ab",
        "/v1/stream/a%1Fb",
        "/v1/stream/%zz",
        "/v1/stream/a%2",
        "/v1/stream/a/../b",
        "/v1/stream/..",
        "/v1/stream/a/./b",
        "/v1/stream/a//b",
        "/v1/stream/%2E%2E",
        "/v1/stream/%C3%28",
        long.as_str(),
    ] {
        let resp = server.req("PUT", path, &[TEXT], b"x").await;
        assert_problem(&resp, 400);
    }
    // `__ds` is the subscription control API: no stream can be made under it.
    for path in ["/v1/stream/__ds", "/v1/stream/__ds/x", "/v1/stream/__ds/subscriptions/"] {
        let reserved = server.req("PUT", path, &[TEXT], b"x").await;
        assert_eq!(reserved.status, 404, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&reserved.body).unwrap();
        assert_eq!(body["error"]["code"], "SUBSCRIPTION_NOT_FOUND", "{path}");
    }
    // Nothing was created under a decoded form of those names either.
    for name in ["a", "b", "a/b", "n"] {
        assert_eq!(server.req("HEAD", &stream(name), &[], b"").await.status, 404, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_length_over_the_limit_is_refused_before_the_body_is_sent() {
    let server = TestServer::with(|c| c.limits.max_body_bytes = 1000).await;
    server.req("PUT", &stream("big"), &[TEXT], b"").await;
    let mut conn = server.conn().await;
    conn.send_raw(b"POST /v1/stream/big HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 1001\r\n\r\n")
        .await
        .unwrap();
    // No body byte was sent: the answer must come anyway.
    let resp = tokio::time::timeout(Duration::from_secs(2), conn.read_response(false))
        .await
        .expect("refused without waiting for the body")
        .unwrap();
    assert_problem(&resp, 413);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(read_text(&server, "big").await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_is_cut_off_at_the_limit() {
    let server = TestServer::with(|c| c.limits.max_body_bytes = 4096).await;
    server.req("PUT", &stream("c"), &[TEXT], b"").await;
    let mut conn = server.conn().await;
    conn.send_raw(b"POST /v1/stream/c HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // Four 1 KiB chunks reach the limit exactly; one more byte crosses it. The body is never
    // finished (no last chunk): the answer must come while it is still streaming in.
    let chunk = format!("400\r\n{}\r\n", "a".repeat(1024));
    for _ in 0..4 {
        conn.send_raw(chunk.as_bytes()).await.unwrap();
    }
    conn.send_raw(b"1\r\nb\r\n").await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(2), conn.read_response(false))
        .await
        .ok()
        .and_then(Result::ok);
    let resp = answered.expect("a 413 arrives while the body is still streaming");
    assert_problem(&resp, 413);
    assert_eq!(read_text(&server, "c").await, "", "nothing of the oversized body was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_and_invalid_json_is_a_400() {
    let server = TestServer::start().await;
    let json = ("content-type", "application/json");
    server.req("PUT", &stream("j"), &[json], b"[]").await;
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    for body in [deep.as_bytes(), b"{", b"[1,]", b"[]", b"\xff", b"{\"a\":1} {\"b\":2}"] {
        assert_problem(&server.req("POST", &stream("j"), &[json], body).await, 400);
    }
    assert_problem(&server.req("PUT", &stream("j2"), &[json], deep.as_bytes()).await, 400);
    assert_eq!(server.req("HEAD", &stream("j2"), &[], b"").await.status, 404);
    assert_eq!(read_text(&server, "j").await, "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_time_out() {
    let server = TestServer::with(|c| {
        c.server.header_read_timeout_secs = 1;
        c.server.body_read_timeout_secs = 1;
    })
    .await;
    let mut slow_headers = server.conn().await;
    slow_headers.send_raw(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    assert!(slow_headers.closed_within(Duration::from_secs(4)).await, "header timeout closes");

    server.req("PUT", &stream("slow"), &[TEXT], b"").await;
    let mut slow_body = server.conn().await;
    slow_body
        .send_raw(b"POST /v1/stream/slow HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(4), slow_body.read_response(false))
        .await
        .expect("body timeout answers")
        .unwrap();
    assert_problem(&resp, 408);
    assert_eq!(read_text(&server, "slow").await, "");
    assert_eq!(server.req("GET", "/healthz", &[], b"").await.text(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_413_and_store_nothing() {
    use ds_engine::memory::{RECORD_INDEX_BYTES, STREAM_OVERHEAD_BYTES};
    let cost =
        |data: u64, records: u64| STREAM_OVERHEAD_BYTES + 1 + data + records * RECORD_INDEX_BYTES;
    // Room for stream a (100 bytes in 2 appends) and b (50 bytes), with less to spare than
    // one more byte costs.
    let room = cost(100, 2) + cost(50, 1) + 4;
    let server = TestServer::with(|c| {
        c.limits.max_stream_bytes = 100;
        c.limits.max_memory_bytes = room;
    })
    .await;
    server.req("PUT", &stream("a"), &[TEXT], &[b'a'; 90]).await;
    assert_problem(&server.req("POST", &stream("a"), &[TEXT], &[b'a'; 11]).await, 413);
    assert_eq!(server.req("POST", &stream("a"), &[TEXT], &[b'a'; 10]).await.status, 204);
    server.req("PUT", &stream("b"), &[TEXT], &[b'b'; 50]).await;
    assert_problem(&server.req("POST", &stream("b"), &[TEXT], b"b").await, 413);
    assert_problem(&server.req("PUT", &stream("c"), &[TEXT], &[b'c'; 101]).await, 413);
    assert_eq!(server.req("HEAD", &stream("c"), &[], b"").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reads_and_methods() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("r"), &[TEXT], b"abc").await;
    for query in [
        "?offset=",
        "?offset=x",
        "?offset=-1&offset=-1",
        "?offset=0000000000000000_0000000g",
        "?offset=0000000000000063_0000000000000000",
        "?live=sse",
        "?live=long-poll",
        "?offset=-1&live=maybe",
        "?offset=%",
        // One byte into the first record: not a position a text stream's reads stop at.
        "?offset=0000000000000000_0000000100000000",
    ] {
        let resp = server.req("GET", &format!("{}{query}", stream("r")), &[], b"").await;
        assert_problem(&resp, 400);
    }
    assert_problem(&server.req("PATCH", &stream("r"), &[TEXT], b"x").await, 405);
    assert_problem(&server.req("GET", "/nope", &[], b"").await, 404);
    assert_problem(&server.req("POST", &stream("r"), &[("content-type", "json")], b"x").await, 400);
    let dup = [("stream-ttl", "1"), ("stream-ttl", "2")];
    assert_problem(&server.req("PUT", &stream("d"), &dup, b"").await, 400);
}

/// Fork headers are checked before anything is created: a malformed source path, offset or
/// sub-offset, or a fork offset without a source, is a 400 and leaves no stream behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_fork_headers_create_nothing() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("src"), &[TEXT], b"data").await;
    let from = ("stream-forked-from", "/v1/stream/src");
    let bad: [&[(&str, &str)]; 10] = [
        &[("stream-forked-from", "src")],
        &[("stream-forked-from", "/v1/stream/")],
        &[("stream-forked-from", "/v1/stream/a/../b")],
        &[from, ("stream-fork-offset", "-1")],
        &[from, ("stream-fork-offset", "now")],
        &[from, ("stream-fork-offset", "0000000000000000_00000000")],
        &[from, ("stream-fork-sub-offset", "+1")],
        &[from, ("stream-fork-sub-offset", "01")],
        &[("stream-fork-offset", "0000000000000000_0000000000000000")],
        &[("stream-fork-sub-offset", "0")],
    ];
    for headers in bad {
        let resp = server.req("PUT", &stream("f"), headers, b"").await;
        assert_problem(&resp, 400);
        assert_eq!(server.req("HEAD", &stream("f"), &[], b"").await.status, 404, "{headers:?}");
    }
    let twice = [from, from];
    assert_problem(&server.req("PUT", &stream("f"), &twice, b"").await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_could_never_be_seen_are_not_created() {
    let server = TestServer::start().await;
    let zero_ttl = server.req("PUT", &stream("z"), &[TEXT, ("stream-ttl", "0")], b"").await;
    assert_problem(&zero_ttl, 400);
    let past = [TEXT, ("stream-expires-at", "2001-01-01T00:00:00Z")];
    assert_problem(&server.req("PUT", &stream("z"), &past, b"").await, 400);
    assert_eq!(server.req("HEAD", &stream("z"), &[], b"").await.status, 404);
}

/// A client that stops reading must not hold its connection forever: with one connection
/// allowed, the next client is served only once the stalled response is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped() {
    let server = TestServer::with(|c| {
        c.server.write_timeout_secs = 1;
        c.server.max_connections = 1;
        c.limits.max_stream_bytes = 64 << 20;
        c.limits.max_body_bytes = 16 << 20;
        c.limits.read_chunk_bytes = 64 << 20;
    })
    .await;
    let mut setup = server.conn().await;
    setup.request("PUT", &stream("big"), &[TEXT], b"").await.unwrap();
    let block = vec![b'z'; 16 << 20];
    for _ in 0..4 {
        assert_eq!(
            setup.request("POST", &stream("big"), &[TEXT], &block).await.unwrap().status,
            204
        );
    }
    drop(setup);
    let mut stalled = server.conn().await;
    let get = crate::support::http1::encode_request("GET", &stream("big"), &[], b"");
    stalled.send_raw(&get).await.unwrap();
    // 64 MiB is more than the socket buffers hold: the server's writes stall.
    let started = std::time::Instant::now();
    let health =
        tokio::time::timeout(Duration::from_secs(10), server.req("GET", "/healthz", &[], b""))
            .await
            .expect("the stalled connection was dropped and its slot reused");
    assert_eq!(health.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
}

/// Bodies in flight share one budget: a second upload waits for room instead of adding to
/// memory, and proceeds as soon as the first one is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_share_one_budget() {
    let server = TestServer::with(|c| {
        c.limits.max_body_bytes = 1000;
        c.limits.max_pending_body_bytes = 1000;
    })
    .await;
    server.req("PUT", &stream("b"), &[TEXT], b"").await;
    let mut first = server.conn().await;
    first
        .send_raw(b"POST /v1/stream/b HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = server.addr();
    let second = tokio::spawn(async move {
        let mut conn = crate::support::Conn::connect(addr).await.unwrap();
        conn.request("POST", "/v1/stream/b", &[TEXT], b"second").await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second body waits while the first holds the budget");
    first.send_raw(&[b'1'; 1000]).await.unwrap();
    assert_eq!(first.read_response(false).await.unwrap().status, 204);
    let second = tokio::time::timeout(Duration::from_secs(2), second).await.unwrap().unwrap();
    assert_eq!(second.status, 204);
    assert!(read_text(&server, "b").await.ends_with("second"));
}

/// §5.2: a close-only request must not be refused because of its Content-Type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_only_ignores_a_malformed_content_type() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("c"), &[TEXT], b"x").await;
    let headers = [("content-type", "nonsense"), ("stream-closed", "true")];
    let resp = server.req("POST", &stream("c"), &headers, b"").await;
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("stream-closed"), Some("true"));
    let with_body = server.req("POST", &stream("c"), &[("content-type", "nonsense")], b"x").await;
    assert_problem(&with_body, 400);
}
