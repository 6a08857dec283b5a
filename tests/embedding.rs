//! Embedding (issue 11): `examples/embed.rs` itself, serving the protocol under
//! `/api/streams` beside an application route; and the server with `DS_HTTP__BASE_PATH`, whose
//! `Location`, fork sources, 404s and subscription URLs follow the base path.

use std::sync::Arc;

use ds_engine::{Engine, EngineConfig};

use crate::support::{Conn, TestServer, assert_problem};

#[path = "../examples/embed.rs"]
#[allow(dead_code, reason = "the example's main is not run here")]
mod example;

const TEXT: (&str, &str) = ("content-type", "text/plain");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_serves_streams_under_its_prefix_beside_its_own_routes() {
    let engine = Arc::new(Engine::open(EngineConfig::default()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(example::serve(listener, engine, shutdown));
    let req = async |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut conn = Conn::connect(addr).await.unwrap();
        conn.request(method, path, headers, body).await.unwrap()
    };
    let own = req("GET", "/", &[], b"").await;
    assert_eq!((own.status, own.text().as_str()), (200, "my application\n"));
    let created = req("PUT", "/api/streams/chat", &[TEXT], b"").await;
    assert_eq!(created.status, 201);
    // The test client sends `Host: localhost`.
    assert_eq!(created.header("location"), Some("http://localhost/api/streams/chat"));
    assert_eq!(req("POST", "/api/streams/chat", &[TEXT], b"hello").await.status, 204);
    let read = req("GET", "/api/streams/chat?offset=-1", &[], b"").await;
    assert_eq!((read.status, read.text().as_str()), (200, "hello"));
    // A fork names its source under the prefix; the default prefix is not this server's.
    let fork = [TEXT, ("stream-forked-from", "/api/streams/chat")];
    assert_eq!(req("PUT", "/api/streams/chat-copy", &fork, b"").await.status, 201);
    let copy = req("GET", "/api/streams/chat-copy?offset=-1", &[], b"").await;
    assert_eq!(copy.text(), "hello");
    let elsewhere = [TEXT, ("stream-forked-from", "/v1/stream/chat")];
    let refused = req("PUT", "/api/streams/other", &elsewhere, b"").await;
    assert_problem(&refused, 400);
    assert!(refused.text().contains("/api/streams/"), "{}", refused.text());
    // The default prefix and the server's own probes belong to the application: not found.
    assert_eq!(req("GET", "/v1/stream/chat?offset=-1", &[], b"").await.status, 404);
    assert_eq!(req("GET", "/healthz", &[], b"").await.status, 404);
    // A live read ends when the application shuts down.
    let mut sse = Conn::connect(addr).await.unwrap();
    sse.send_raw(b"GET /api/streams/chat?offset=-1&live=sse HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(sse.read_head().await.unwrap().status, 200);
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), served)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_follows_its_base_path_on_both_front_ends() {
    for front_end in ["fast", "axum"] {
        let fe = front_end.to_owned();
        let server = TestServer::with(move |c| {
            c.http.base_path = "/s".into();
            c.http.front_end = fe;
            c.subscriptions.allow_local_webhooks = true;
        })
        .await;
        let created = server.req("PUT", "/s/a", &[TEXT], b"x").await;
        assert_eq!(created.status, 201, "{front_end}");
        assert_eq!(created.header("location"), Some("http://localhost/s/a"));
        assert_eq!(server.req("GET", "/s/a?offset=-1", &[], b"").await.text(), "x");
        let old = server.req("GET", "/v1/stream/a?offset=-1", &[], b"").await;
        assert_problem(&old, 404);
        assert!(old.text().contains("/s/"), "{front_end}: the 404 says where streams are");
        let fork = [TEXT, ("stream-forked-from", "/s/a")];
        assert_eq!(server.req("PUT", "/s/b", &fork, b"").await.status, 201, "{front_end}");
        // Subscriptions live under {base}/__ds, and their URLs say so.
        let config =
            r#"{"type":"webhook","pattern":"a","webhook":{"url":"http://127.0.0.1:9/hook"}}"#;
        let json = [("content-type", "application/json")];
        let sub = server.req("PUT", "/s/__ds/subscriptions/one", &json, config.as_bytes()).await;
        assert_eq!(sub.status, 201, "{front_end}: {}", sub.text());
        let jwks = "http://localhost/s/__ds/jwks.json";
        assert!(sub.text().contains(jwks), "{front_end}: {}", sub.text());
        assert_eq!(server.req("GET", "/s/__ds/jwks.json", &[], b"").await.status, 200);
        assert_eq!(server.req("GET", "/v1/stream/__ds/jwks.json", &[], b"").await.status, 404);
        // The probes stay where they are.
        assert_eq!(server.req("GET", "/healthz", &[], b"").await.status, 200);
        server.stop().await;
    }
}

/// Regression: with a public URL set, subscription URLs said `/v1/stream` whatever the base
/// path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_urls_follow_the_base_path_under_a_public_url() {
    let server = TestServer::with(|c| {
        c.http.base_path = "/s".into();
        c.http.public_url = "https://streams.example".into();
        c.subscriptions.allow_local_webhooks = true;
    })
    .await;
    let config = r#"{"type":"webhook","pattern":"a","webhook":{"url":"http://127.0.0.1:9/hook"}}"#;
    let json = [("content-type", "application/json")];
    let sub = server.req("PUT", "/s/__ds/subscriptions/one", &json, config.as_bytes()).await;
    assert_eq!(sub.status, 201, "{}", sub.text());
    assert!(sub.text().contains("https://streams.example/s/__ds/jwks.json"), "{}", sub.text());
    server.stop().await;
}

#[test]
fn a_bad_base_path_is_a_configuration_error() {
    for bad in ["v1", "/v1/", "/a b", "/healthz", "/x/../y"] {
        let env = [("DS_HTTP__BASE_PATH".to_owned(), bad.to_owned())];
        let err = ds_server::config::load(&[], env).expect_err(bad).to_string();
        assert!(err.contains("base_path"), "{bad}: {err}");
    }
}
