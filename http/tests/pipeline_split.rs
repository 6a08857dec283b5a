//! However a byte stream of pipelined requests is split into reads, the fast front end reads
//! the same requests and writes the same answers. Each case sends one pipeline (creates,
//! appends with `Content-Length` or chunked bodies, reads, heads, a final close) over an
//! in-memory connection twice, to fresh memory engines: once whole, once cut at random
//! points with the server running between the pieces. The answers must match byte for byte
//! (apart from `Date` and the ETags, which carry each engine's incarnation seed).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::sync::Arc;

use ds_engine::{Engine, EngineConfig};
use ds_http::{AppState, HttpConfig};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug)]
enum Req {
    Put { stream: u8, body: Vec<u8> },
    Post { stream: u8, body: Vec<u8>, chunks: Option<Vec<usize>> },
    Get { stream: u8 },
    Head { stream: u8 },
}

fn req() -> impl Strategy<Value = Req> {
    let body = proptest::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        (0..3u8, body.clone()).prop_map(|(stream, body)| Req::Put { stream, body }),
        (0..3u8, body, proptest::option::of(proptest::collection::vec(1..8usize, 0..4)))
            .prop_map(|(stream, body, chunks)| Req::Post { stream, body, chunks }),
        (0..3u8).prop_map(|stream| Req::Get { stream }),
        (0..3u8).prop_map(|stream| Req::Head { stream }),
    ]
}

fn encode(reqs: &[Req]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in reqs {
        let (method, stream, body, chunks) = match r {
            Req::Put { stream, body } => ("PUT", stream, body.as_slice(), None),
            Req::Post { stream, body, chunks } => {
                ("POST", stream, body.as_slice(), chunks.as_ref())
            }
            Req::Get { stream } => ("GET", stream, &[][..], None),
            Req::Head { stream } => ("HEAD", stream, &[][..], None),
        };
        out.extend_from_slice(
            format!("{method} /v1/stream/s{stream} HTTP/1.1\r\nHost: t\r\n").as_bytes(),
        );
        if method == "PUT" || method == "POST" {
            out.extend_from_slice(b"Content-Type: application/octet-stream\r\n");
        }
        match chunks {
            Some(sizes) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = body;
                for &size in sizes.iter().cycle().take(if sizes.is_empty() { 0 } else { 64 }) {
                    if rest.is_empty() {
                        break;
                    }
                    let n = size.min(rest.len());
                    out.extend_from_slice(format!("{n:x};i=1\r\n").as_bytes());
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                if !rest.is_empty() {
                    out.extend_from_slice(format!("{:X}\r\n", rest.len()).as_bytes());
                    out.extend_from_slice(rest);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
            }
            None => {
                if method == "PUT" || method == "POST" {
                    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(body);
            }
        }
    }
    out.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    out
}

/// Serves `pieces` in order over a fresh connection to a fresh engine; returns every byte
/// the server wrote, with `Date` and `ETag` lines removed.
fn serve(pieces: &[&[u8]]) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let engine = Arc::new(Engine::open(EngineConfig::default()).unwrap());
        let (_shutdown, rx) = tokio::sync::watch::channel(false);
        let app = AppState::new(engine, HttpConfig::default(), rx);
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(ds_http::front::fast::conn::serve(app, server, Default::default()));
        for piece in pieces {
            client.write_all(piece).await.unwrap();
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        // Closing ends the server's lingering read at once.
        drop(client);
        task.await.unwrap();
        let answers: String = String::from_utf8_lossy(&out)
            .split_inclusive("\r\n")
            .filter(|line| !line.starts_with("date: ") && !line.starts_with("etag: "))
            .collect();
        without_offset_tags(&answers)
    })
}

/// `answers` with every offset token's tag (its last 8 hex digits) blanked: each engine's
/// incarnations, and so its tags, differ.
fn without_offset_tags(answers: &str) -> String {
    let mut out = answers.as_bytes().to_vec();
    let hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    let mut i = 0;
    while i + ds_engine::offset::TOKEN_LEN <= out.len() {
        let token = &out[i..i + ds_engine::offset::TOKEN_LEN];
        if token[16] == b'_' && token[..16].iter().all(hex) && token[17..].iter().all(hex) {
            out[i + 25..i + 33].fill(b'x');
            i += ds_engine::offset::TOKEN_LEN;
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_split_yields_the_same_answers(
        reqs in proptest::collection::vec(req(), 1..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let bytes = encode(&reqs);
        let whole = serve(&[&bytes]);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        at.dedup();
        let mut pieces = Vec::new();
        let mut from = 0;
        for to in at.into_iter().chain(std::iter::once(bytes.len())) {
            pieces.push(&bytes[from..to]);
            from = to;
        }
        let split = serve(&pieces);
        prop_assert_eq!(&whole, &split);
        // Every request was answered: one status line each, plus the final health check.
        let answers = whole.matches("HTTP/1.1 ").count();
        prop_assert_eq!(answers, reqs.len() + 1, "{}", whole);
    }
}
