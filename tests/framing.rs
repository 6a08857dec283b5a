//! HTTP/1.1 framing of the fast front end, over real sockets: what RFC 9112 makes a 400 (and
//! a closed connection), the 4xx/5xx of limits and versions, pipelining order, chunked
//! bodies, `100-continue`, HTTP/1.0, and the HTTP/2 preface. A hand-written parser is a
//! security surface: each story below is a way a request could be misread.

use std::time::Duration;

use crate::support::{Conn, Response, TestServer, assert_problem, stream};

const TEXT: (&str, &str) = ("content-type", "text/plain");

async fn text_of(server: &TestServer, name: &str) -> String {
    server.req("GET", &stream(name), &[], b"").await.text()
}

/// Sends `raw` on a fresh connection and reads every response until the server closes.
async fn exchange(server: &TestServer, raw: &[u8]) -> (Vec<Response>, bool) {
    let mut conn = server.conn().await;
    conn.send_raw(raw).await.unwrap();
    read_all(&mut conn).await
}

/// Every response the server sends, and whether it then closed the connection.
async fn read_all(conn: &mut Conn) -> (Vec<Response>, bool) {
    let mut responses = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), conn.read_response(false)).await {
            Ok(Ok(resp)) => responses.push(resp),
            Ok(Err(_)) => return (responses, true),
            Err(_) => return (responses, false),
        }
    }
}

/// One 400 answer, then the connection closes: the framing of the request could not be
/// trusted, so no byte after it may be read as a request.
async fn assert_refused_and_closed(server: &TestServer, raw: &[u8], status: u16) {
    let (responses, closed) = exchange(server, raw).await;
    assert_eq!(responses.len(), 1, "{}: {responses:?}", String::from_utf8_lossy(raw));
    assert_problem(&responses[0], status);
    assert_eq!(responses[0].header("connection"), Some("close"));
    assert!(closed, "{}", String::from_utf8_lossy(raw));
}

/// Request smuggling needs two parsers to disagree on where a body ends. Every ambiguous
/// framing is refused, and the bytes that would be a second request ("GET /smuggled") are
/// never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_lengths_are_refused_and_nothing_behind_them_is_served() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("s"), &[TEXT], b"").await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    for framing in [
        "content-length: 5\r\ntransfer-encoding: chunked",
        "transfer-encoding: chunked\r\ncontent-length: 5",
        "content-length: +5",
        "content-length: 0x5",
        "content-length: 5.0",
        "content-length: ",
        "content-length: 5\r\ncontent-length: 6",
        "content-length: 5, 6",
        "transfer-encoding: chunked, chunked",
        "transfer-encoding: identity",
    ] {
        let raw = format!(
            "POST /v1/stream/s HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\n{framing}\r\n\r\n0\r\n\r\n{smuggled}"
        );
        assert_refused_and_closed(&server, raw.as_bytes(), 400).await;
    }
    assert_eq!(text_of(&server, "s").await, "", "nothing was appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_lines_get_an_answer_not_a_silent_close() {
    let server = TestServer::start().await;
    for line in [
        "x-a : b",       // whitespace before the colon
        "x-a: b\r\n  c", // obs-fold
        "x-a: b\0c",     // NUL (hyper closed without answering)
        "x-a: b\rc",     // bare CR
        "x-a: b\x7fc",   // DEL
        "x\0a: b",       // control byte in a name
        "no colon here",
    ] {
        let raw = format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{line}\r\n\r\n");
        assert_refused_and_closed(&server, raw.as_bytes(), 400).await;
    }
}

/// RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host, with two, or
/// with an invalid one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_required_exactly_once_and_valid() {
    let server = TestServer::start().await;
    for hosts in ["", "host: a\r\nhost: a\r\n", "host: a b\r\n", "host: a/b\r\n", "host: u@a\r\n"] {
        let raw = format!("GET /healthz HTTP/1.1\r\n{hosts}\r\n");
        assert_refused_and_closed(&server, raw.as_bytes(), 400).await;
    }
    let (ok, _) = exchange(&server, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(ok[0].status, 200, "HTTP/1.0 may omit Host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_versions_have_their_own_statuses() {
    let server = TestServer::start().await;
    let long_target = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(9000));
    assert_refused_and_closed(&server, long_target.as_bytes(), 414).await;
    let big_head = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(70_000));
    assert_refused_and_closed(&server, big_head.as_bytes(), 431).await;
    let many: String = (0..200).map(|i| format!("x-{i}: y\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    assert_refused_and_closed(&server, many.as_bytes(), 431).await;
    assert_refused_and_closed(&server, b"GET / HTTP/1.2\r\nhost: x\r\n\r\n", 505).await;
    assert_refused_and_closed(&server, b"GET / HTTP/2.0\r\nhost: x\r\n\r\n", 505).await;
    assert_refused_and_closed(&server, b"GET / HTTQ/1.1\r\nhost: x\r\n\r\n", 400).await;
    assert_refused_and_closed(&server, b"PUT /x HTTP/1.1\r\nhost: x\r\nexpect: x\r\n\r\n", 417)
        .await;
}

/// A transfer coding the server does not implement is a 501: the body is never stored still
/// encoded (hyper stored `gzip, chunked` bodies as they came).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_transfer_codings_are_not_implemented() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("g"), &[TEXT], b"").await;
    let raw = b"POST /v1/stream/g HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    assert_refused_and_closed(&server, raw, 501).await;
    assert_eq!(text_of(&server, "g").await, "");
}

/// Chunked bodies with extensions and trailers are accepted; a malformed chunk size or chunk
/// data not followed by CRLF is a 400 that stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_are_decoded_strictly() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("c"), &[TEXT], b"").await;
    let head = "POST /v1/stream/c HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
    let good =
        format!("{head}5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n");
    let (ok, _) = exchange(&server, good.as_bytes()).await;
    assert_eq!(ok[0].status, 204);
    assert_eq!(text_of(&server, "c").await, "hello world");
    for body in
        ["5\r\nhelloXX0\r\n\r\n", "+5\r\nhello\r\n0\r\n\r\n", "5\nhello\r\n0\r\n\r\n", "z\r\n"]
    {
        let raw = format!("{head}{body}GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_refused_and_closed(&server, raw.as_bytes(), 400).await;
    }
    assert_eq!(text_of(&server, "c").await, "hello world");
}

/// Pipelined requests take effect in order and are answered in order; a request after an
/// append sees it. Here a PUT, three appends and a GET go out in one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_takes_effect_and_is_answered_in_order() {
    let server = TestServer::start().await;
    let mut raw = Vec::new();
    let req = crate::support::http1::encode_request;
    raw.extend(req("PUT", &stream("p"), &[TEXT], b""));
    for (seq, body) in [("0", "a"), ("1", "b"), ("2", "c")] {
        let h = [TEXT, ("producer-id", "w"), ("producer-epoch", "0"), ("producer-seq", seq)];
        raw.extend(req("POST", &stream("p"), &h, body.as_bytes()));
    }
    raw.extend(req("GET", &stream("p"), &[], b""));
    raw.extend(req("DELETE", &stream("p"), &[("connection", "close")], b""));
    let (responses, closed) = exchange(&server, &raw).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [201, 200, 200, 200, 200, 204]);
    let seqs: Vec<_> = responses[1..4].iter().map(|r| r.header("producer-seq")).collect();
    assert_eq!(seqs, [Some("0"), Some("1"), Some("2")]);
    assert_eq!(responses[4].text(), "abc");
    assert!(closed, "Connection: close is honoured after the last answer");
}

/// Every request that took effect gets its answer before the connection closes, even when
/// malformed bytes follow it in the same pipeline (hyper stored the append and dropped its
/// answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_followed_by_garbage_is_still_answered() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("g"), &[TEXT], b"").await;
    let mut raw = crate::support::http1::encode_request("POST", &stream("g"), &[TEXT], b"kept");
    raw.extend_from_slice(b"\x01\x02 garbage\r\n\r\n");
    let (responses, closed) = exchange(&server, &raw).await;
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert_eq!(responses[0].status, 204);
    assert_problem(&responses[1], 400);
    assert!(closed);
    assert_eq!(text_of(&server, "g").await, "kept");
}

/// curl sends `Expect: 100-continue` for bodies over 1 KiB and waits for the 100 before the
/// body; a request refused by its head gets its final answer instead, without the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("e"), &[TEXT], b"").await;
    let mut conn = server.conn().await;
    conn.send_raw(b"POST /v1/stream/e HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
        .await
        .unwrap();
    let interim = conn.read_response(true).await.unwrap();
    assert_eq!(interim.status, 100);
    conn.send_raw(b"body").await.unwrap();
    assert_eq!(conn.read_response(false).await.unwrap().status, 204);
    assert_eq!(text_of(&server, "e").await, "body");

    let mut conn = server.conn().await;
    conn.send_raw(b"POST /v1/stream/e HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\nproducer-id: p\r\nproducer-epoch: x\r\nproducer-seq: 0\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n")
        .await
        .unwrap();
    let refused = conn.read_response(false).await.unwrap();
    assert_problem(&refused, 400);
    assert_eq!(refused.header("connection"), Some("close"));

    // Never to an HTTP/1.0 client: the body follows the head at once.
    let (old, _) = exchange(
        &server,
        b"POST /v1/stream/e HTTP/1.0\r\ncontent-type: text/plain\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\nold",
    )
    .await;
    assert_eq!(old.iter().map(|r| r.status).collect::<Vec<_>>(), [204]);
    assert_eq!(text_of(&server, "e").await, "bodyold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_closes_unless_asked_to_keep_alive() {
    let server = TestServer::start().await;
    let (once, closed) = exchange(&server, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(once[0].status, 200);
    assert_eq!(once[0].header("connection"), Some("close"));
    assert!(closed);
    let two =
        b"GET /healthz HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n";
    let (both, closed) = exchange(&server, two).await;
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].header("connection"), Some("keep-alive"));
    assert!(closed);
}

/// RFC 9112 §3.2.2: absolute-form targets are accepted, and the target's authority is the
/// one a `Location` is built from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_targets_are_served() {
    let server = TestServer::start().await;
    let (responses, _) = exchange(
        &server,
        b"PUT http://streams.example:81/v1/stream/abs HTTP/1.1\r\nhost: other\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(responses[0].status, 201);
    assert_eq!(responses[0].header("location"), Some("http://streams.example:81/v1/stream/abs"));
    assert_eq!(server.req("HEAD", &stream("abs"), &[], b"").await.status, 200);
}

/// An HTTP/2 preface after an HTTP/1.1 request on the same connection gets a clear refusal
/// it understands (a GOAWAY with HTTP_1_1_REQUIRED), not an HTTP/1.1 answer it cannot
/// parse. (A preface that opens a connection is served as h2c: `http2::h2c_…`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_preface_after_http1_requests_is_refused_clearly() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let first = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut tcp, first).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut got)).await.unwrap().unwrap();
    assert!(got.starts_with(b"HTTP/1.1 200 OK"), "the first request is answered");
    let tail = &got[got.len() - 26..];
    assert_eq!(tail[3], 4, "a SETTINGS frame first");
    assert_eq!(tail[12], 7, "then a GOAWAY");
    assert_eq!(&tail[22..26], &[0, 0, 0, 0x0d], "HTTP_1_1_REQUIRED");
}

/// Responses carry a Date (RFC 9110 §6.6.1: an origin server with a clock MUST).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_dated() {
    let server = TestServer::start().await;
    let resp = server.req("GET", "/healthz", &[], b"").await;
    let date = resp.header("date").expect("a Date header");
    assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
}

/// A request split into many small writes, body included, is read the same as one sent
/// whole; leading empty lines before a request line are ignored (RFC 9112 §2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_byte_by_byte() {
    let server = TestServer::start().await;
    server.req("PUT", &stream("b"), &[TEXT], b"").await;
    let raw = b"\r\nPOST /v1/stream/b HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let mut conn = server.conn().await;
    for byte in raw {
        conn.send_raw(std::slice::from_ref(byte)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(conn.read_response(false).await.unwrap().status, 204);
    assert_eq!(text_of(&server, "b").await, "abc");
}

/// A request refused by its head is answered at once. Its body is read and dropped only
/// while that is cheap; a large one (which no budget would account for) is left unread,
/// and the connection closes after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_does_not_wait_for_a_large_body() {
    let server = TestServer::start().await;
    let mut conn = server.conn().await;
    conn.send_raw(b"POST /not-a-route HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n")
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(2), conn.read_response(false))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_problem(&resp, 404);
    assert_eq!(resp.header("connection"), Some("close"));
    // A small one is dropped and the connection serves on.
    let mut conn = server.conn().await;
    conn.send_raw(b"POST /not-a-route HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_problem(&conn.read_response(false).await.unwrap(), 404);
    assert_eq!(conn.read_response(false).await.unwrap().text(), "ok");
}

/// An SSE response ends when its client goes away, leaving its chunked body unterminated:
/// nothing may follow it on that connection. A request pipelined behind it is therefore
/// neither answered nor carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_after_an_sse_stream_whose_client_left() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    server.req("PUT", &stream("s"), &[TEXT], b"a").await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut raw = crate::support::http1::encode_request(
        "GET",
        &format!("{}?offset=-1&live=sse", stream("s")),
        &[],
        b"",
    );
    raw.extend(crate::support::http1::encode_request("POST", &stream("s"), &[TEXT], b"b"));
    tcp.write_all(&raw).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest);
    tokio::time::timeout(Duration::from_secs(3), read).await.expect("the server closes").unwrap();
    assert_eq!(rest.windows(12).filter(|w| w == b"HTTP/1.1 204").count(), 0);
    assert_eq!(text_of(&server, "s").await, "a", "the pipelined append did not run");
}
