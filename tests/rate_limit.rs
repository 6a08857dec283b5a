//! Rate limiting (§12.5): `DS_LIMITS__RATE_LIMIT_PER_SEC` requests a second per client
//! address, bursts of `DS_LIMITS__RATE_LIMIT_BURST`; a client over it gets 429 problem+json
//! with `Retry-After`. Probes are never limited; a live read costs one request however long
//! it stays open.

use std::time::{Duration, Instant};

use crate::support::{TestServer, assert_problem, stream};

const TEXT: (&str, &str) = ("content-type", "text/plain");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    for front_end in ["fast", "axum"] {
        let server = TestServer::with(|c| {
            c.http.front_end = front_end.into();
            c.limits.rate_limit_per_sec = 2;
            c.limits.rate_limit_burst = 4;
        })
        .await;
        // The readiness polls of `TestServer::with` did not count: probes are exempt.
        let started = Instant::now();
        assert_eq!(server.req("PUT", &stream("r"), &[TEXT], b"").await.status, 201);
        for _ in 0..3 {
            assert_eq!(server.req("POST", &stream("r"), &[TEXT], b"x").await.status, 204);
        }
        let refused = server.req("POST", &stream("r"), &[TEXT], b"y").await;
        if started.elapsed() < Duration::from_millis(400) {
            assert_problem(&refused, 429);
            let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
            assert_eq!(retry, 1, "{front_end}: half a second rounds up to one");
        }
        for _ in 0..20 {
            assert_eq!(server.req("GET", "/healthz", &[], b"").await.status, 200, "{front_end}");
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let read = server.req("GET", &stream("r"), &[], b"").await;
        assert_eq!(read.status, 200, "{front_end}: tokens come back");
        assert_eq!(read.text().len(), if refused.status == 429 { 3 } else { 4 });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_live_read_costs_one_request() {
    let server = TestServer::with(|c| {
        c.server.long_poll_timeout_ms = Some(1500);
        c.limits.rate_limit_per_sec = 1;
        c.limits.rate_limit_burst = 2;
    })
    .await;
    let created = server.req("PUT", &stream("l"), &[TEXT], b"").await;
    let tail = created.header("stream-next-offset").unwrap().to_owned();
    let poll = format!("{}?offset={tail}&live=long-poll", stream("l"));
    let waiting = {
        let mut conn = server.conn().await;
        tokio::spawn(async move { conn.request("GET", &poll, &[], b"").await.unwrap().status })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Both tokens were taken (the PUT, the poll); one came back while the poll waited, and
    // the open poll took none of it.
    assert_eq!(server.req("POST", &stream("l"), &[TEXT], b"z").await.status, 204);
    assert_eq!(waiting.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_limit_by_default() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("n"), &[TEXT], b"").await;
    for _ in 0..200 {
        assert_eq!(server.req("POST", &stream("n"), &[TEXT], b"x").await.status, 204);
    }
}
