//! Properties the fuzz targets check on arbitrary bytes (`fuzz/fuzz_targets/http_head.rs`,
//! `chunked_body.rs`); `http/tests/fuzz_corpus.rs` replays the corpus through them, so every
//! find stays fixed without a fuzzer. Each panics when a property fails.

use super::chunked::Decoder;
use super::head::{self, Framing, Scan};
use crate::response::Status;

/// The request head parser on arbitrary bytes: it never panics; the end of a head is found
/// the same whether the bytes come at once or one by one; a parsed head has a framing that
/// cannot be misread, and every refusal is a 4xx or 5xx that closes the connection.
pub fn request_head(data: &[u8]) {
    let skip = head::leading_empty_lines(data);
    assert!(skip <= data.len());
    let data = &data[skip..];
    let whole = head::find_end(data, &mut 0).map_err(|e| e.status());
    let mut scanned = 0;
    let mut stepwise = Ok(Scan::Partial);
    for len in 0..=data.len() {
        stepwise = head::find_end(&data[..len], &mut scanned).map_err(|e| e.status());
        if !matches!(stepwise, Ok(Scan::Partial)) {
            break;
        }
    }
    assert_eq!(whole, stepwise, "the end of a head depends on how it arrives");
    let Ok(Scan::Complete(end)) = whole else { return };
    assert!(end <= data.len() && end <= head::HEAD_BYTES_MAX);
    match head::parse(&data[..end]) {
        Ok(h) => {
            let path = h.request.path;
            assert!(path.starts_with('/') || path == "*", "{path:?}");
            assert!(path.bytes().all(|b| b.is_ascii_graphic()));
            assert!(h.request.query.is_none_or(|q| !q.contains('#')));
            if h.http10 {
                assert_ne!(h.framing, Framing::Chunked, "HTTP/1.0 has no chunked bodies");
            }
        }
        Err(e) => {
            let code = e.status().code();
            assert!((400..600).contains(&code), "{code}");
            let resp = e.into_response();
            assert!(resp.close, "a refused head closes the connection");
            assert!(resp.status != Status::OK);
        }
    }
}

/// The chunked decoder on arbitrary bytes, split at points the input chooses: the same data,
/// the same length used, the same end and the same verdict however the bytes are split; and
/// a body encoded with arbitrary chunk sizes decodes back to itself.
pub fn chunked_body(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else { return };
    let whole = decode(rest, &[]);
    let cuts: Vec<usize> = rest
        .iter()
        .take(8)
        .scan(0usize, |at, &b| {
            *at += usize::from(b % 16) + usize::from(cut % 3);
            Some(*at)
        })
        .filter(|&at| at <= rest.len())
        .collect();
    assert_eq!(whole, decode(rest, &cuts), "the verdict depends on how the body arrives");
    if let Ok((_, used, done)) = &whole {
        assert!(*used <= rest.len());
        if !done {
            assert_eq!(*used, rest.len(), "an unfinished body uses every byte given");
        }
    }
    // Round trip: the input as a payload, in chunks of sizes the input picks.
    let mut encoded = Vec::new();
    let mut chunks = rest.chunks(usize::from(cut).max(1));
    for chunk in chunks.by_ref() {
        encoded.extend_from_slice(format!("{:x};e=1\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\nt: v\r\n\r\nNEXT");
    let (payload, used, done) = decode(&encoded, &[]).expect("a well-formed body decodes");
    assert!(done);
    assert_eq!(payload, rest);
    assert_eq!(&encoded[used..], b"NEXT");
}

type Decoded = Result<(Vec<u8>, usize, bool), u16>;

/// Decodes `input` fed in pieces ending at `cuts`, then the rest.
fn decode(input: &[u8], cuts: &[usize]) -> Decoded {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    let mut used = 0;
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&input.len())) {
        if to < from || decoder.is_done() {
            continue;
        }
        // Bytes the decoder did not use are offered again with the next piece, as a
        // connection's buffer keeps them.
        let piece = &input[used..to];
        let n =
            decoder.decode(piece, |d| out.extend_from_slice(d)).map_err(|e| e.status().code())?;
        used += n;
        from = to;
    }
    Ok((out, used, decoder.is_done()))
}
