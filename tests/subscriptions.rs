//! The subscription control API over HTTP (§6–7), with real webhook receivers on loopback:
//! routing and error shapes, hostile requests, and the delivery faults the conformance suite
//! never shows (a receiver that is down, slow, failing, redirecting, or answering too much;
//! a callback that arrives before the webhook's own answer).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::receiver::{http_answer, receiver, receiver_with};
use crate::support::{Response, TestServer, stream};

const JSON: (&str, &str) = ("content-type", "application/json");
const TEXT: (&str, &str) = ("content-type", "text/plain");

fn sub(id: &str) -> String {
    format!("/v1/stream/__ds/subscriptions/{id}")
}

fn body(resp: &Response) -> Value {
    serde_json::from_slice(&resp.body).unwrap_or(Value::Null)
}

fn code(resp: &Response) -> String {
    body(resp)["error"]["code"].as_str().unwrap_or_default().to_owned()
}

async fn server(webhook_timeout_ms: u64) -> TestServer {
    TestServer::with(|c| {
        c.subscriptions.allow_local_webhooks = true;
        c.subscriptions.webhook_timeout_ms = webhook_timeout_ms;
    })
    .await
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn create_webhook(server: &TestServer, id: &str, url: &str, pattern: &str) {
    let config = json!({"type": "webhook", "pattern": pattern, "lease_ttl_ms": 5000, "webhook": {"url": url}});
    let resp = server.req("PUT", &sub(id), &[JSON], config.to_string().as_bytes()).await;
    assert_eq!(resp.status, 201, "{}", resp.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_routes_answer_with_their_shapes() {
    let server = server(10_000).await;
    let jwks = server.req("GET", "/v1/stream/__ds/jwks.json", &[], b"").await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.header("content-type"), Some("application/jwk-set+json"));
    assert_eq!(jwks.header("cache-control"), Some("public, max-age=300"));
    let key = &body(&jwks)["keys"][0];
    assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    assert!(key["kid"].as_str().unwrap().starts_with("ds_"));
    for (method, path) in [
        ("POST", "/v1/stream/__ds/jwks.json"),
        ("POST", &sub("s")[..]),
        ("GET", &format!("{}/streams", sub("s"))[..]),
        ("GET", &format!("{}/claim", sub("s"))[..]),
        ("PUT", &format!("{}/streams/a", sub("s"))[..]),
    ] {
        let resp = server.req(method, path, &[], b"").await;
        assert_eq!(resp.status, 405, "{method} {path}");
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        assert!(resp.header("allow").is_some());
    }
    for path in
        ["/v1/stream/__ds/nope", &format!("{}/nope", sub("s")), "/v1/stream/__ds/subscriptions/"]
    {
        let resp = server.req("GET", path, &[], b"").await;
        assert_eq!((resp.status, code(&resp)), (404, "SUBSCRIPTION_NOT_FOUND".into()), "{path}");
    }
    let missing = server.req("GET", &sub("nobody"), &[], b"").await;
    assert_eq!((missing.status, code(&missing)), (404, "SUBSCRIPTION_NOT_FOUND".into()));
    assert_eq!(server.req("DELETE", &sub("nobody"), &[], b"").await.status, 204);
    // Links: explicit add and remove, the path percent-encoded with its slash.
    let config = json!({"type": "pull-wake", "streams": ["manual/a"], "wake_stream": "w"});
    let created = server.req("PUT", &sub("s"), &[JSON], config.to_string().as_bytes()).await;
    assert_eq!(created.status, 201);
    assert_eq!(body(&created)["created_at"].as_str().map(str::len), Some(24));
    let again = server.req("PUT", &sub("s"), &[JSON], config.to_string().as_bytes()).await;
    assert_eq!(again.status, 200, "the same configuration is confirmed");
    let other = json!({"type": "pull-wake", "streams": ["manual/b"], "wake_stream": "w"});
    let conflict = server.req("PUT", &sub("s"), &[JSON], other.to_string().as_bytes()).await;
    assert_eq!((conflict.status, code(&conflict)), (409, "SUBSCRIPTION_ALREADY_EXISTS".into()));
    let add = json!({"streams": ["manual/b"]}).to_string();
    assert_eq!(
        server.req("POST", &format!("{}/streams", sub("s")), &[JSON], add.as_bytes()).await.status,
        204
    );
    let del = server.req("DELETE", &format!("{}/streams/manual%2Fb", sub("s")), &[], b"").await;
    assert_eq!(del.status, 204);
    let view = body(&server.req("GET", &sub("s"), &[], b"").await);
    assert_eq!(
        view["streams"],
        json!([{"path": "manual/a", "link_type": "explicit", "acked_offset": "0000000000000000_0000000000000000"}])
    );
    assert!(view.get("webhook_secret").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_control_requests_get_clear_4xx() {
    let server = server(10_000).await;
    let config = json!({"type": "pull-wake", "streams": ["a"], "wake_stream": "w"}).to_string();
    assert_eq!(server.req("PUT", &sub("s"), &[JSON], config.as_bytes()).await.status, 201);
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("PUT", sub("x"), vec![JSON], b"{nope".to_vec(), 400, "INVALID_REQUEST"),
        ("PUT", sub("x"), vec![JSON], b"null".to_vec(), 400, "INVALID_REQUEST"),
        ("PUT", sub("x"), vec![JSON], b"[1]".to_vec(), 400, "INVALID_REQUEST"),
        ("PUT", sub("bad%zzid"), vec![JSON], config.clone().into_bytes(), 400, "INVALID_REQUEST"),
        ("PUT", sub(&"i".repeat(2048)), vec![JSON], config.clone().into_bytes(), 400, "INVALID_REQUEST"),
        ("PUT", sub("x"), vec![JSON], json!({"type": "webhook", "streams": ["a"], "webhook": {"url": "http://10.0.0.1/hook"}}).to_string().into_bytes(), 400, "WEBHOOK_URL_REJECTED"),
        ("PUT", sub("x"), vec![JSON], json!({"type": "webhook", "streams": ["a"], "webhook": {"url": "https://[::ffff:10.0.0.1]/hook"}}).to_string().into_bytes(), 400, "WEBHOOK_URL_REJECTED"),
        ("PUT", sub("x"), vec![JSON], json!({"type": "webhook", "streams": ["a"], "webhook": {"url": "https://167772161/hook"}}).to_string().into_bytes(), 400, "WEBHOOK_URL_REJECTED"),
        ("PUT", sub("x"), vec![JSON], json!({"type": "pull-wake", "streams": ["a"], "wake_stream": "w", "description": "d".repeat(1 << 20)}).to_string().into_bytes(), 400, "INVALID_REQUEST"),
        ("POST", format!("{}/ack", sub("s")), vec![JSON], b"{}".to_vec(), 401, "TOKEN_INVALID"),
        ("POST", format!("{}/ack", sub("s")), vec![JSON, ("authorization", "Basic abc")], b"{}".to_vec(), 401, "TOKEN_INVALID"),
        ("POST", format!("{}/ack", sub("s")), vec![JSON, ("authorization", "Bearer x.y.z")], b"{}".to_vec(), 401, "TOKEN_INVALID"),
        ("POST", format!("{}/release", sub("s")), vec![JSON, ("authorization", "Bearer x")], b"{oops".to_vec(), 400, "INVALID_REQUEST"),
        ("POST", format!("{}/callback", sub("nobody")), vec![JSON, ("authorization", "Bearer x")], b"{}".to_vec(), 404, "SUBSCRIPTION_NOT_FOUND"),
        ("POST", format!("{}/claim", sub("s")), vec![JSON], b"{}".to_vec(), 400, "INVALID_REQUEST"),
        ("POST", format!("{}/claim", sub("s")), vec![JSON], json!({"worker": "w"}).to_string().into_bytes(), 409, "NO_PENDING_WORK"),
        ("POST", format!("{}/streams", sub("s")), vec![JSON], json!({"streams": ["../x"]}).to_string().into_bytes(), 400, "INVALID_REQUEST"),
        ("POST", format!("{}/streams", sub("s")), vec![JSON], json!({"streams": "a"}).to_string().into_bytes(), 400, "INVALID_REQUEST"),
        ("DELETE", format!("{}/streams/a%2F%2Fb", sub("s")), vec![], Vec::new(), 400, "INVALID_REQUEST"),
    ];
    for (method, path, headers, payload, status, want) in cases {
        let resp = server.req(method, &path, &headers, &payload).await;
        let shown = &path[..path.len().min(80)];
        assert_eq!(
            (resp.status, code(&resp).as_str()),
            (status, want),
            "{method} {shown}: {}",
            resp.text()
        );
        assert_eq!(resp.header("content-type"), Some("application/json"), "{shown}");
    }
}

/// The receiver is down, fails, redirects, answers too much or too slowly: each is a failed
/// delivery (`status: failed`, retried later), never a crash; nothing follows the redirect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_receivers_are_failed_deliveries() {
    let server = server(300).await;
    let (target, seen_target) = receiver(|_| Some(http_answer("200 OK", "{\"done\":true}"))).await;
    let location = target.clone();
    let huge = "x".repeat(200 * 1024);
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", l.local_addr().unwrap());
        drop(l);
        url
    };
    let receivers: Vec<(&str, String)> = vec![
        ("down", down),
        ("500", receiver(|_| Some(http_answer("500 Internal Server Error", "{}"))).await.0),
        ("redirect", receiver(move |_| {
            Some(format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n").into_bytes())
        }).await.0),
        ("huge", receiver(move |_| Some(http_answer("200 OK", &huge))).await.0),
        ("slow", receiver(|_| None).await.0),
    ];
    for (i, (_, url)) in receivers.iter().enumerate() {
        create_webhook(&server, &format!("f{i}"), url, &format!("fail{i}/*")).await;
        server.req("PUT", &stream(&format!("fail{i}/s")), &[TEXT], b"data").await;
    }
    for (i, (what, _)) in receivers.iter().enumerate() {
        wait_for(&format!("{what} to count as failed"), async || {
            body(&server.req("GET", &sub(&format!("f{i}")), &[], b"").await)["status"] == "failed"
        })
        .await;
    }
    assert!(seen_target.lock().unwrap().is_empty(), "the redirect was not followed");
    // The server is still well.
    assert_eq!(server.req("GET", "/healthz", &[], b"").await.status, 200);
}

/// A worker that calls back (done) before answering the webhook: the callback counts, and
/// the webhook's own answer, arriving after, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_before_the_webhook_answer_counts() {
    let server = Arc::new(server(5_000).await);
    let callbacks: Arc<Mutex<Vec<u16>>> = Arc::default();
    let (url, seen) = {
        let (server, callbacks) = (server.clone(), callbacks.clone());
        receiver_with(move |hook| {
            let (server, callbacks) = (server.clone(), callbacks.clone());
            Box::pin(async move {
                let stream = &hook["streams"][0];
                let ack = json!({"generation": hook["generation"], "wake_id": hook["wake_id"], "done": true,
                    "acks": [{"stream": stream["path"], "offset": stream["tail_offset"]}]});
                let token = format!("Bearer {}", hook["callback_token"].as_str().unwrap());
                let url = hook["callback_url"].as_str().unwrap();
                let path = &url[url.find("/v1/").unwrap()..];
                // Call back first, then answer.
                let auth = [JSON, ("authorization", token.as_str())];
                let status = server.req("POST", path, &auth, ack.to_string().as_bytes()).await.status;
                callbacks.lock().unwrap().push(status);
                Some(http_answer("200 OK", "{\"done\":true}"))
            })
        })
        .await
    };
    create_webhook(&server, "cb", &url, "cb/*").await;
    let put = server.req("PUT", &stream("cb/s"), &[TEXT], b"data").await;
    let tail = put.header("stream-next-offset").unwrap().to_owned();
    wait_for("the callback", async || !callbacks.lock().unwrap().is_empty()).await;
    assert_eq!(callbacks.lock().unwrap()[0], 200);
    let view = body(&server.req("GET", &sub("cb"), &[], b"").await);
    assert_eq!(view["streams"][0]["acked_offset"], tail.as_str());
    assert_eq!(view["status"], "active");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.lock().unwrap().len(), 1, "no second wake: nothing is pending");
}

/// With `DS_SUBSCRIPTIONS__CLAIM_SECRET`, a claim needs a bearer HS256 JWT signed with it
/// (401 without, with a bad one, or with an expired one); `DS_HTTP__PUBLIC_URL` is the base
/// of the URLs subscriptions hand out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_secrets_and_the_public_url() {
    use ds_engine::subscription::keys::{Claims, TokenKey, Use};
    let server = TestServer::with(|c| {
        c.subscriptions.claim_secret = "s3cret".into();
        c.http.public_url = "https://streams.example.com/".into();
    })
    .await;
    let config = json!({"type": "webhook", "streams": ["a"], "webhook": {"url": "https://example.com/hook"}});
    let created = server.req("PUT", &sub("h"), &[JSON], config.to_string().as_bytes()).await;
    assert_eq!(
        body(&created)["webhook"]["signing"]["jwks_url"],
        "https://streams.example.com/v1/stream/__ds/jwks.json"
    );
    let config = json!({"type": "pull-wake", "streams": ["jobs"], "wake_stream": "w"});
    assert_eq!(
        server.req("PUT", &sub("p"), &[JSON], config.to_string().as_bytes()).await.status,
        201
    );
    server.req("PUT", &stream("jobs"), &[TEXT], b"work").await;
    let claim = format!("{}/claim", sub("p"));
    let worker = json!({"worker": "w"}).to_string();
    let mint = |secret: &str, exp_secs: u64| {
        let claims = Claims {
            subscription: "service".into(),
            incarnation: 0,
            generation: 0,
            wake_id: String::new(),
            usage: Use::Claim,
            exp_secs,
        };
        format!("Bearer {}", TokenKey::new(secret.as_bytes()).mint(&claims))
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for (auth, want) in [
        (None, "TOKEN_INVALID"),
        (Some(mint("other", now + 60)), "TOKEN_INVALID"),
        (Some(mint("s3cret", now - 60)), "TOKEN_EXPIRED"),
    ] {
        let mut headers = vec![JSON];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let resp = server.req("POST", &claim, &headers, worker.as_bytes()).await;
        assert_eq!((resp.status, code(&resp).as_str()), (401, want), "{auth:?}");
    }
    let good = mint("s3cret", now + 60);
    let resp =
        server.req("POST", &claim, &[JSON, ("authorization", &good)], worker.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
}
