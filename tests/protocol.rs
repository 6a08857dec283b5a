//! Protocol stories the official suite does not tell: ETags across closure, producer and
//! Stream-Seq scoping, recreated streams, CORS origin lists, health.

use crate::support::{TestServer, assert_problem, stream};

const TEXT: (&str, &str) = ("content-type", "text/plain");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_changes_when_the_stream_closes_without_new_data() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("e"), &[TEXT], b"data").await;
    let open = server.req("GET", &stream("e"), &[], b"").await;
    let etag = open.header("etag").unwrap().to_owned();
    let same = server.req("GET", &stream("e"), &[("if-none-match", &etag)], b"").await;
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty());
    assert_eq!(same.header("etag"), Some(etag.as_str()));
    server.req("POST", &stream("e"), &[("stream-closed", "true")], b"").await;
    let closed = server.req("GET", &stream("e"), &[("if-none-match", &etag)], b"").await;
    assert_eq!(closed.status, 200, "a cached copy must not hide the closure");
    assert_eq!(closed.header("stream-closed"), Some("true"));
    assert_ne!(closed.header("etag"), Some(etag.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_stream_never_matches_an_old_etag() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("r"), &[TEXT], b"same").await;
    let old = server.req("GET", &stream("r"), &[], b"").await;
    let etag = old.header("etag").unwrap().to_owned();
    assert_eq!(server.req("DELETE", &stream("r"), &[], b"").await.status, 204);
    assert_eq!(server.req("PUT", &stream("r"), &[TEXT], b"same").await.status, 201);
    let new = server.req("GET", &stream("r"), &[("if-none-match", &etag)], b"").await;
    assert_eq!(new.status, 200);
    assert_ne!(new.header("etag"), Some(etag.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_responses_carry_their_state() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("p"), &[TEXT], b"").await;
    let post = |epoch: &'static str, seq: &'static str, body: &'static [u8]| {
        let s = &server;
        async move {
            let h = [TEXT, ("producer-id", "w"), ("producer-epoch", epoch), ("producer-seq", seq)];
            s.req("POST", &stream("p"), &h, body).await
        }
    };
    let first = post("0", "0", b"a").await;
    assert_eq!((first.status, first.header("producer-seq")), (200, Some("0")));
    let gap = post("0", "5", b"b").await;
    assert_problem(&gap, 409);
    assert_eq!(gap.header("producer-expected-seq"), Some("1"));
    assert_eq!(gap.header("producer-received-seq"), Some("5"));
    let bump = post("3", "0", b"c").await;
    assert_eq!((bump.status, bump.header("producer-epoch")), (200, Some("3")));
    let zombie = post("2", "9", b"d").await;
    assert_problem(&zombie, 403);
    assert_eq!(zombie.header("producer-epoch"), Some("3"));
    let bad_start = post("4", "1", b"e").await;
    assert_problem(&bad_start, 400);
    let dup = post("3", "0", b"again").await;
    assert_eq!((dup.status, dup.header("producer-seq")), (204, Some("0")));
    assert_eq!(server.req("GET", &stream("p"), &[], b"").await.text(), "ac");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_conflict_reports_the_final_offset() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("c"), &[TEXT, ("stream-closed", "true")], b"final").await;
    let resp =
        server.req("POST", &stream("c"), &[("content-type", "application/json")], b"1").await;
    assert_problem(&resp, 409);
    assert_eq!(resp.header("stream-closed"), Some("true"));
    let head = server.req("HEAD", &stream("c"), &[], b"").await;
    assert_eq!(resp.header("stream-next-offset"), head.header("stream-next-offset"));
    // Values other than `true` are ignored, not errors (§4.1).
    let ignored = server.req("PUT", &stream("o"), &[TEXT, ("stream-closed", "yes")], b"").await;
    assert_eq!(ignored.status, 201);
    assert_eq!(ignored.header("stream-closed"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_reports_expiry_in_rfc3339() {
    let server = TestServer::start().await;
    let at = ("stream-expires-at", "2099-01-02T03:04:05.678+01:00");
    assert_eq!(server.req("PUT", &stream("x"), &[TEXT, at], b"").await.status, 201);
    let head = server.req("HEAD", &stream("x"), &[], b"").await;
    assert_eq!(head.header("stream-expires-at"), Some("2099-01-02T02:04:05.678Z"));
    assert_eq!(head.header("cache-control"), Some("no-store"));
    let same_instant = ("stream-expires-at", "2099-01-02T02:04:05.678Z");
    assert_eq!(server.req("PUT", &stream("x"), &[TEXT, same_instant], b"").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_origin_list_echoes_only_listed_origins() {
    let server = TestServer::with(|c| c.http.cors_origins = "https://app.example".into()).await;
    let ok = server.req("GET", "/healthz", &[("origin", "https://app.example")], b"").await;
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(ok.header("access-control-expose-headers").unwrap().contains("Stream-Next-Offset"));
    assert_eq!(ok.header("vary"), Some("Origin"));
    let other = server.req("GET", "/healthz", &[("origin", "https://evil.example")], b"").await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(other.header("vary"), Some("Origin"), "caches must key on Origin either way");
    let preflight = server
        .req(
            "OPTIONS",
            &stream("any"),
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "producer-id, if-none-match"),
            ],
            b"",
        )
        .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("producer-id, if-none-match")
    );
    assert!(preflight.header("access-control-allow-methods").unwrap().contains("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_cors_allows_any_origin_and_health_is_ok() {
    let server = TestServer::start().await;
    let browser = [("origin", "https://any.example")];
    let health = server.req("GET", "/healthz", &browser, b"").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    assert_eq!(health.header("access-control-allow-origin"), Some("*"));
    assert!(health.header("access-control-expose-headers").unwrap().contains("Stream-Cursor"));
    assert_eq!(health.header("cross-origin-resource-policy"), Some("cross-origin"));
}

/// CORS headers are for browsers, which always send `Origin` cross-origin: a backend's
/// request gets an answer without ~250 bytes nobody reads. A cacheable answer keeps them,
/// since a shared cache may later hand it to a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_only_where_a_browser_can_see_them() {
    let server = TestServer::with(|c| c.http.cache_control = "public".into()).await;
    server.req("PUT", &stream("c"), &[TEXT], b"data").await;
    let append = server.req("POST", &stream("c"), &[TEXT], b"more").await;
    assert_eq!(append.status, 204);
    assert_eq!(append.header("access-control-allow-origin"), None);
    assert_eq!(append.header("x-content-type-options"), Some("nosniff"), "security headers stay");
    let cached = server.req("GET", &stream("c"), &[], b"").await;
    assert!(cached.header("cache-control").unwrap().starts_with("public"));
    assert_eq!(cached.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connection_serves_many_requests() {
    let server = TestServer::start().await;
    let mut conn = server.conn().await;
    conn.request("PUT", &stream("k"), &[TEXT], b"").await.unwrap();
    for i in 0..100u32 {
        let resp =
            conn.request("POST", &stream("k"), &[TEXT], i.to_string().as_bytes()).await.unwrap();
        assert_eq!(resp.status, 204);
    }
    let all = conn.request("GET", &stream("k"), &[], b"").await.unwrap();
    let expected: String = (0..100u32).map(|i| i.to_string()).collect();
    assert_eq!(all.text(), expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_producer_on_a_closed_stream_learns_both() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("f"), &[TEXT], b"").await;
    let h = |epoch: &'static str| {
        [TEXT, ("producer-id", "w"), ("producer-epoch", epoch), ("producer-seq", "0")]
    };
    assert_eq!(server.req("POST", &stream("f"), &h("1"), b"a").await.status, 200);
    server.req("POST", &stream("f"), &[("stream-closed", "true")], b"").await;
    let zombie = server.req("POST", &stream("f"), &h("0"), b"b").await;
    assert_problem(&zombie, 403);
    assert_eq!(zombie.header("producer-epoch"), Some("1"));
    assert_eq!(zombie.header("stream-closed"), Some("true"));
    assert!(zombie.header("stream-next-offset").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_not_allowed_lists_the_allowed_ones() {
    let server = TestServer::start().await;
    let resp = server.req("PATCH", &stream("m"), &[], b"").await;
    assert_problem(&resp, 405);
    assert!(resp.header("allow").is_some_and(|a| a.contains("POST")));
}

/// Regression (RFC 9110 §8.6): `HEAD` of a stream said `Content-Length: 0` while `GET` of the
/// same URL sent 7 bytes. `HEAD` omits the length (it would need a read to know it), in both
/// front ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_never_claims_a_length_get_would_not_send() {
    for front_end in ["fast", "axum"] {
        let server = TestServer::with(|c| c.http.front_end = front_end.into()).await;
        server.req("PUT", &stream("h"), &[TEXT], b"1234567").await;
        let get = server.req("GET", &stream("h"), &[], b"").await;
        assert_eq!(get.header("content-length"), Some("7"), "{front_end}");
        let head = server.req("HEAD", &stream("h"), &[], b"").await;
        assert_eq!(head.status, 200, "{front_end}");
        let length = head.header("content-length");
        assert!(length.is_none() || length == Some("7"), "{front_end}: HEAD says {length:?}");
    }
}

/// Regression: a plain `OPTIONS` (no `Access-Control-Request-Method`: not a preflight) got a
/// 405 whose `Allow` listed OPTIONS itself. It asks what the resource supports: 204 + `Allow`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_options_lists_the_methods() {
    let server = TestServer::start().await;
    let resp = server.req("OPTIONS", &stream("anything"), &[], b"").await;
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("allow"), Some("GET, HEAD, POST, PUT, DELETE, OPTIONS"));
    let probe = server.req("OPTIONS", "/healthz", &[], b"").await;
    assert_eq!((probe.status, probe.header("allow")), (204, Some("GET, HEAD, OPTIONS")));
    let refused = server.req("PATCH", &stream("anything"), &[], b"").await;
    assert_problem(&refused, 405);
    assert_eq!(refused.header("allow"), Some("GET, HEAD, POST, PUT, DELETE, OPTIONS"));
}

/// Regression: two `Stream-Closed` lines that disagree were resolved "first wins", so
/// whether a request closed the stream depended on the order an intermediary kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disagreeing_stream_closed_lines_are_refused() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("s"), &[TEXT], b"").await;
    for pair in [["true", "false"], ["false", "true"]] {
        let h = [TEXT, ("stream-closed", pair[0]), ("stream-closed", pair[1])];
        assert_problem(&server.req("POST", &stream("s"), &h, b"x").await, 400);
        assert_problem(&server.req("PUT", &stream("s2"), &h, b"").await, 400);
    }
    let head = server.req("HEAD", &stream("s"), &[], b"").await;
    assert_eq!(head.header("stream-closed"), None, "nothing was closed");
    assert_eq!(server.req("GET", &stream("s"), &[], b"").await.text(), "");
    let same = [TEXT, ("stream-closed", "true"), ("stream-closed", "TRUE")];
    let closed = server.req("POST", &stream("s"), &same, b"").await;
    assert_eq!((closed.status, closed.header("stream-closed")), (204, Some("true")));
}

/// §5.7 (MAY): a long-poll's `timeout` query parameter shortens the wait, never lengthens
/// it past the server's own; a malformed one is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_honours_a_shorter_timeout() {
    let server = TestServer::with(|c| c.server.long_poll_timeout_ms = Some(5_000)).await;
    let tail = server.req("PUT", &stream("w"), &[TEXT], b"").await;
    let tail = tail.header("stream-next-offset").unwrap().to_owned();
    let poll =
        |timeout: &str| format!("{}?offset={tail}&live=long-poll&timeout={timeout}", stream("w"));
    let started = std::time::Instant::now();
    let resp = server.req("GET", &poll("0.2"), &[], b"").await;
    let waited = started.elapsed();
    assert_eq!(resp.status, 204);
    assert!(resp.header("stream-cursor").is_some());
    assert!(waited >= std::time::Duration::from_millis(200), "{waited:?}");
    assert!(waited < std::time::Duration::from_secs(3), "waited {waited:?}, not 0.2 s");
    let started = std::time::Instant::now();
    assert_eq!(server.req("GET", &poll("0"), &[], b"").await.status, 204);
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_problem(&server.req("GET", &poll("soon"), &[], b"").await, 400);
    assert_problem(&server.req("GET", &poll("-1"), &[], b"").await, 400);
}

/// §5.6 (MAY): catch-up reads carry `Stream-Cursor`, so a client that goes live next has one
/// to echo; a read that reaches the end of a closed stream needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_reads_carry_a_cursor() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("c"), &[TEXT], b"data").await;
    let read = server.req("GET", &stream("c"), &[], b"").await;
    let cursor: u64 = read.header("stream-cursor").unwrap().parse().unwrap();
    let echoed = format!("{}?offset=-1&cursor={cursor}", stream("c"));
    let again: u64 = server
        .req("GET", &echoed, &[], b"")
        .await
        .header("stream-cursor")
        .unwrap()
        .parse()
        .unwrap();
    assert!(again > cursor, "an echoed cursor moves forward: {cursor} -> {again}");
    server.req("POST", &stream("c"), &[("stream-closed", "true")], b"").await;
    let eof = server.req("GET", &stream("c"), &[], b"").await;
    assert_eq!(eof.header("stream-closed"), Some("true"));
    assert_eq!(eof.header("stream-cursor"), None);
}

/// Regression (issue 12): `PUT` "abc", `POST` "def", `DELETE`, `PUT` "123456789", then a read
/// at the first stream's offset answered 200 "456789": a reader resuming from a saved offset
/// read another stream from its middle. Offsets now name their incarnation: 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_a_deleted_stream_get_410() {
    let server = TestServer::start().await;
    let created = server.req("PUT", &stream("d"), &[TEXT], b"abc").await;
    let saved = created.header("stream-next-offset").unwrap().to_owned();
    server.req("POST", &stream("d"), &[TEXT], b"def").await;
    assert_eq!(server.req("DELETE", &stream("d"), &[], b"").await.status, 204);
    assert_eq!(server.req("PUT", &stream("d"), &[TEXT], b"123456789").await.status, 201);
    let at = |query: &str| format!("{}?offset={saved}{query}", stream("d"));
    for query in ["", "&live=long-poll", "&live=sse"] {
        let resp = server.req("GET", &at(query), &[], b"").await;
        assert_problem(&resp, 410);
        assert!(resp.text().contains("offset belongs to a deleted stream"), "{}", resp.text());
    }
    let fresh = server.req("GET", &stream("d"), &[], b"").await;
    assert_eq!(fresh.text(), "123456789");
    let next = fresh.header("stream-next-offset").unwrap();
    let tail = server.req("GET", &format!("{}?offset={next}", stream("d")), &[], b"").await;
    assert_eq!((tail.status, tail.text().as_str()), (200, ""));
}
