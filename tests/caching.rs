//! `Cache-Control` (§10, §12.7): `no-store` everywhere by default; with
//! `DS_HTTP__CACHE_CONTROL` set, only data-bearing catch-up chunks and long-poll 200s become
//! cacheable, so a cache can never hide new data or a closure.

use crate::support::{TestServer, stream};

const TEXT: (&str, &str) = ("content-type", "text/plain");
const PUBLIC: &str = "public, max-age=60, stale-while-revalidate=300";

async fn cache_control_of(
    server: &TestServer,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let resp = server.req(method, path, &[TEXT], body).await;
    (resp.status, resp.header("cache-control").unwrap_or("<none>").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_stores_nothing() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("d"), &[TEXT], b"data").await;
    for (method, path) in [("GET", stream("d")), ("HEAD", stream("d")), ("GET", stream("missing"))]
    {
        assert_eq!(cache_control_of(&server, method, &path, b"").await.1, "no-store");
    }
    let lp = format!("{}?offset=-1&live=long-poll", stream("d"));
    assert_eq!(cache_control_of(&server, "GET", &lp, b"").await, (200, "no-store".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_policy_caches_only_stable_data() {
    let server = TestServer::with(|c| c.http.cache_control = "public".into()).await;
    let created = server.req("PUT", &stream("p"), &[TEXT], b"data").await;
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let tail = created.header("stream-next-offset").unwrap().to_owned();
    let cases = [
        ("GET", stream("p"), 200, PUBLIC),
        ("GET", format!("{}?offset=-1&live=long-poll", stream("p")), 200, PUBLIC),
        ("HEAD", stream("p"), 200, "no-store"),
        ("GET", format!("{}?offset=now", stream("p")), 200, "no-store"),
        ("GET", format!("{}?offset={tail}", stream("p")), 200, "no-store"),
        ("GET", format!("{}?offset={tail}&live=long-poll", stream("p")), 204, "no-store"),
        ("GET", format!("{}?offset=x", stream("p")), 400, "no-store"),
        ("GET", stream("missing"), 404, "no-store"),
        ("POST", stream("p"), 204, "no-store"),
    ];
    for (method, path, status, expected) in cases {
        let body: &[u8] = if method == "POST" { b"more" } else { b"" };
        let got = cache_control_of(&server, method, &path, body).await;
        assert_eq!(got, (status, expected.to_owned()), "{method} {path}");
    }
    let sse = format!("{}?offset=-1&live=sse", stream("p"));
    let mut conn = server.conn().await;
    conn.send_raw(&crate::support::http1::encode_request("GET", &sse, &[], b"")).await.unwrap();
    let head = conn.read_head().await.unwrap();
    assert_eq!(head.header("cache-control"), Some("no-cache"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_policy_uses_private() {
    let server = TestServer::with(|c| c.http.cache_control = "private".into()).await;
    server.req("PUT", &stream("v"), &[TEXT], b"data").await;
    let got = cache_control_of(&server, "GET", &stream("v"), b"").await;
    assert_eq!(got.1, "private, max-age=60, stale-while-revalidate=300");
}

/// Regression: a stream expiring in 10 s was cached for 60 s plus 300 s stale (§5.6:
/// `Cache-Control` is derived from TTL/expiry). A cached copy does not renew a sliding TTL,
/// so a cache must not keep a read past the stream's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_never_outlives_the_stream() {
    let server = TestServer::with(|c| c.http.cache_control = "public".into()).await;
    server.req("PUT", &stream("t"), &[TEXT, ("stream-ttl", "10")], b"data").await;
    let got = cache_control_of(&server, "GET", &stream("t"), b"").await;
    assert_eq!(got, (200, "public, max-age=10, stale-while-revalidate=0".into()));
    server.req("PUT", &stream("m"), &[TEXT, ("stream-ttl", "100")], b"data").await;
    let got = cache_control_of(&server, "GET", &stream("m"), b"").await;
    assert_eq!(got.1, "public, max-age=60, stale-while-revalidate=40");
    let soon = ds_http::rfc3339::format_ms(now_ms() + 30_500);
    server.req("PUT", &stream("a"), &[TEXT, ("stream-expires-at", &soon)], b"data").await;
    let got = cache_control_of(&server, "GET", &stream("a"), b"").await;
    assert!(
        got.1.starts_with("public, max-age=30, ") || got.1.starts_with("public, max-age=29, "),
        "{got:?}"
    );
    server.req("PUT", &stream("l"), &[TEXT, ("stream-ttl", "1000")], b"data").await;
    assert_eq!(cache_control_of(&server, "GET", &stream("l"), b"").await.1, PUBLIC);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap())
        .unwrap()
}
