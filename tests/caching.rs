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
