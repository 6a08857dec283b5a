//! Compressed reads (issue 11, `DS_HTTP__COMPRESSION`): every `Accept-Encoding` gets a
//! body that decodes to exactly the uncompressed one, with the same ETag and offsets and
//! `Vary: Accept-Encoding`; long-polls too, on both front ends; SSE, small bodies and
//! compressed content types are sent as they are; curl (a real client) decodes what it is
//! sent; compression can be turned off.

use std::process::Command;
use std::time::Duration;

use ds_http::compress::{Encoding, decompress};

use crate::support::{Response, TestServer, stream};

const JSON: (&str, &str) = ("content-type", "application/json");

/// A JSON stream of `messages` token-like messages.
async fn json_stream(server: &TestServer, name: &str, messages: usize) -> Vec<u8> {
    assert_eq!(server.req("PUT", &stream(name), &[JSON], b"").await.status, 201);
    let batch: Vec<String> = (0..messages)
        .map(|i| format!("{{\"i\":{i},\"role\":\"assistant\",\"token\":\"word{}\"}}", i % 97))
        .collect();
    let body = format!("[{}]", batch.join(","));
    assert_eq!(server.req("POST", &stream(name), &[JSON], body.as_bytes()).await.status, 204);
    let plain = server.req("GET", &format!("{}?offset=-1", stream(name)), &[], b"").await;
    assert_eq!(plain.status, 200);
    plain.body.to_vec()
}

fn decoded(resp: &Response) -> Vec<u8> {
    match resp.header("content-encoding") {
        None => resp.body.to_vec(),
        Some(coding) => {
            let encoding = Encoding::from_token(coding)
                .unwrap_or_else(|| panic!("unexpected coding {coding}"));
            decompress(encoding, &resp.body).expect("a valid body in its coding")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accept_encoding_decodes_to_the_same_bytes_on_both_front_ends() {
    for front_end in ["fast", "axum"] {
        let fe = front_end.to_owned();
        let server = TestServer::with(move |c| c.http.front_end = fe).await;
        let plain = json_stream(&server, "tokens", 2_000).await;
        let url = format!("{}?offset=-1", stream("tokens"));
        let identity = server.req("GET", &url, &[], b"").await;
        let etag = identity.header("etag").unwrap().to_owned();
        let next = identity.header("stream-next-offset").unwrap().to_owned();
        assert_eq!(identity.header("vary"), Some("Accept-Encoding"), "{front_end}");
        for (accept, coding) in [
            ("zstd", Some("zstd")),
            ("br", Some("br")),
            ("gzip", Some("gzip")),
            ("x-gzip", Some("gzip")),
            ("gzip, deflate, br, zstd", Some("zstd")),
            ("gzip, deflate, br", Some("br")),
            ("br;q=0.2, gzip;q=0.8", Some("gzip")),
            ("*", Some("zstd")),
            ("identity", None),
            ("deflate", None),
            ("gzip;q=0", None),
            ("", None),
        ] {
            let resp = server.req("GET", &url, &[("accept-encoding", accept)], b"").await;
            assert_eq!(resp.status, 200, "{front_end} {accept}");
            assert_eq!(resp.header("content-encoding"), coding, "{front_end} {accept:?}");
            assert_eq!(decoded(&resp), plain, "{front_end} {accept:?}: the same bytes");
            assert_eq!(resp.header("etag"), Some(etag.as_str()), "{front_end} {accept:?}");
            assert_eq!(resp.header("stream-next-offset"), Some(next.as_str()));
            assert_eq!(resp.header("vary"), Some("Accept-Encoding"), "{front_end} {accept:?}");
            if coding.is_some() {
                assert!(
                    resp.body.len() * 4 < plain.len(),
                    "{accept}: {} of {}",
                    resp.body.len(),
                    plain.len()
                );
                let length: usize = resp.header("content-length").unwrap().parse().unwrap();
                assert_eq!(length, resp.body.len(), "Content-Length is the coded length");
            }
        }
        // A revalidation with the ETag gets its 304 whatever the coding.
        let again = [("accept-encoding", "gzip"), ("if-none-match", etag.as_str())];
        let not_modified = server.req("GET", &url, &again, b"").await;
        assert_eq!(not_modified.status, 304);
        assert_eq!(not_modified.header("vary"), Some("Accept-Encoding"));
        server.stop().await;
    }
}

/// A long-poll that wakes with data is compressed as a catch-up read is; SSE, small bodies
/// and compressed content types are sent as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_compress_and_sse_small_and_compressed_types_do_not() {
    let server = TestServer::with(|c| c.server.long_poll_timeout_ms = Some(5_000)).await;
    let plain = json_stream(&server, "lp", 10).await;
    let tail = server.req("HEAD", &stream("lp"), &[], b"").await;
    let offset = tail.header("stream-next-offset").unwrap().to_owned();
    let mut waiting = server.conn().await;
    let url = format!("{}?offset={offset}&live=long-poll", stream("lp"));
    waiting
        .send_raw(
            format!("GET {url} HTTP/1.1\r\nhost: x\r\naccept-encoding: br\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let more: Vec<String> =
        (0..200).map(|i| format!("{{\"late\":{i},\"pad\":\"abcdefgh\"}}")).collect();
    let more = format!("[{}]", more.join(","));
    assert_eq!(server.req("POST", &stream("lp"), &[JSON], more.as_bytes()).await.status, 204);
    let woke = waiting.read_response(false).await.unwrap();
    assert_eq!((woke.status, woke.header("content-encoding")), (200, Some("br")));
    assert_eq!(woke.header("vary"), Some("Accept-Encoding"));
    let expected: Vec<serde_json::Value> = serde_json::from_str(&more).unwrap();
    let got: Vec<serde_json::Value> = serde_json::from_slice(&decoded(&woke)).unwrap();
    assert_eq!(got, expected);

    // Small: under 1 KiB goes as it is.
    assert!(plain.len() < 1024);
    let small_plain = json_stream(&server, "small", 10).await;
    assert_eq!(small_plain, plain);
    let small = server
        .req("GET", &format!("{}?offset=-1", stream("small")), &[("accept-encoding", "gzip")], b"")
        .await;
    assert!(small.header("content-encoding").is_none());
    // SSE: never compressed.
    let mut sse = server.conn().await;
    sse.send_raw(format!("GET {}?offset=-1&live=sse HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip, br, zstd\r\n\r\n", stream("lp")).as_bytes())
        .await
        .unwrap();
    let head = sse.read_head().await.unwrap();
    assert_eq!(head.status, 200);
    assert!(head.header("content-encoding").is_none(), "SSE is sent as it is");
    // A compressed content type: sent as it is.
    let png = [("content-type", "image/png")];
    assert_eq!(server.req("PUT", &stream("img"), &png, &vec![7u8; 8192]).await.status, 201);
    let img = server
        .req("GET", &format!("{}?offset=-1", stream("img")), &[("accept-encoding", "gzip")], b"")
        .await;
    assert!(img.header("content-encoding").is_none());
    assert_eq!(img.body.len(), 8192);
    server.stop().await;
}

/// curl, a real client, asks for what it can decode and gets the stream's bytes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_decodes_what_it_is_sent() {
    let server = TestServer::start().await;
    let plain = json_stream(&server, "curl", 500).await;
    let url = format!("http://127.0.0.1:{}{}?offset=-1", server.addr().port(), stream("curl"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--compressed", "-D", "/dev/stderr", &url])
            .output()
            .expect("curl")
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(head.contains("content-encoding:"), "curl was sent a coded body: {head}");
    assert_eq!(out.stdout, plain);
    server.stop().await;
}

/// `HEAD` carries the `Vary` a `GET` would (RFC 9110 §9.3.2); differing `Accept-Encoding`
/// lines, which would have to be read as one list, get identity rather than a guess from
/// the first line.
#[tokio::test]
async fn head_varies_too_and_split_accept_encoding_gets_identity() {
    let server = TestServer::start().await;
    let plain = json_stream(&server, "split", 2_000).await;
    let head = server.req("HEAD", &stream("split"), &[], b"").await;
    assert_eq!(head.header("vary"), Some("Accept-Encoding"));
    let url = format!("{}?offset=-1", stream("split"));
    let split = [("accept-encoding", "gzip"), ("accept-encoding", "*;q=0")];
    let resp = server.req("GET", &url, &split, b"").await;
    assert!(resp.header("content-encoding").is_none(), "no guess from the first line");
    assert_eq!(resp.body.to_vec(), plain);
    let same = [("accept-encoding", "gzip"), ("accept-encoding", "gzip")];
    let resp = server.req("GET", &url, &same, b"").await;
    assert_eq!(resp.header("content-encoding"), Some("gzip"), "repeated, not differing");
    server.stop().await;
}

#[tokio::test]
async fn compression_can_be_turned_off() {
    let server = TestServer::with(|c| c.http.compression = false).await;
    let plain = json_stream(&server, "off", 2_000).await;
    let resp = server
        .req(
            "GET",
            &format!("{}?offset=-1", stream("off")),
            &[("accept-encoding", "gzip, br, zstd")],
            b"",
        )
        .await;
    assert!(resp.header("content-encoding").is_none());
    assert!(resp.header("vary").is_none());
    assert_eq!(resp.body.to_vec(), plain);
    let head = server.req("HEAD", &stream("off"), &[], b"").await;
    assert!(head.header("vary").is_none());
    server.stop().await;
}
