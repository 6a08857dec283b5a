//! Response compression of catch-up and long-poll reads (`DS_HTTP__COMPRESSION`): zstd, br
//! or gzip, as the request's `Accept-Encoding` allows (RFC 9110 §12.5.3), for bodies of at
//! least [`MIN_BYTES`] whose content type is not compressed already.
//!
//! What stays the same: the stream's bytes (a client that decodes gets exactly the
//! uncompressed body), offsets, cursors and ETags (an ETag names the stream's data at a
//! range, whatever the coding on the wire). What changes: `Content-Encoding` and
//! `Content-Length`; and every read answer carries `Vary: Accept-Encoding`, so that a cache
//! keeps one copy per coding. SSE is never compressed: each event must reach the client
//! when it happens, and a compressor flushed per event saves little on small events while
//! holding its window per connection.

use bytes::Bytes;
use std::io::Write;

use crate::response::{Body, Response, Status, Value};

/// Bodies smaller than this are sent as they are.
pub const MIN_BYTES: usize = 1024;
/// Bodies at least this large are compressed on a blocking thread, not the runtime's.
const BLOCKING_BYTES: usize = 64 * 1024;
/// zstd's level: its default (7.5% of the bytes at 1.4 ms/MiB on `json-64m`; 1 is no
/// smaller and barely cheaper, 6 costs four times as much for nothing).
const ZSTD_LEVEL: i32 = 3;
/// Brotli's quality: on token-like JSON (`json-64m`), 2 makes smaller output than 4 at half
/// the CPU (6.9% of the bytes at 3.8 ms/MiB, against 7.7% at 7.3 ms/MiB).
const BROTLI_QUALITY: u32 = 2;
/// Brotli's window (log2 bytes).
const BROTLI_WINDOW: u32 = 22;
/// gzip's level: 1 sends 16.8% of the bytes at 1.9 ms/MiB, where 5 sends 14.8% at 8.3.
const GZIP_LEVEL: u32 = 1;

/// A content coding this server produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Zstandard (RFC 8878).
    Zstd,
    /// Brotli (RFC 7932).
    Br,
    /// gzip (RFC 1952).
    Gzip,
}

impl Encoding {
    /// Preferred first when the client weighs several the same.
    const PREFERENCE: [Encoding; 3] = [Encoding::Zstd, Encoding::Br, Encoding::Gzip];

    /// The coding's name in `Content-Encoding`.
    #[must_use]
    pub const fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The coding a `Content-Encoding` of ours names (`None` for any other value).
    #[must_use]
    pub fn from_token(token: &str) -> Option<Encoding> {
        Encoding::PREFERENCE.into_iter().find(|e| e.token() == token)
    }

    fn matches(self, token: &str) -> bool {
        token.eq_ignore_ascii_case(self.token())
            || (self == Encoding::Gzip && token.eq_ignore_ascii_case("x-gzip"))
    }

    /// `data` compressed with this coding.
    ///
    /// # Panics
    /// Never: writing into memory cannot fail.
    #[must_use]
    pub fn compress(self, parts: &[Bytes]) -> Vec<u8> {
        let total: usize = parts.iter().map(Bytes::len).sum();
        let out = Vec::with_capacity(total / 4 + 64);
        let written = match self {
            Encoding::Zstd => {
                zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).and_then(|mut z| {
                    // The size up front lets zstd pick its window and write it in the frame.
                    z.set_pledged_src_size(Some(total as u64))?;
                    parts.iter().try_for_each(|p| z.write_all(p))?;
                    z.finish()
                })
            }
            Encoding::Br => {
                let mut w =
                    brotli::CompressorWriter::new(out, 64 * 1024, BROTLI_QUALITY, BROTLI_WINDOW);
                parts
                    .iter()
                    .try_for_each(|p| w.write_all(p))
                    .and_then(|()| w.flush())
                    .map(|()| w.into_inner())
            }
            Encoding::Gzip => {
                let mut g =
                    flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
                parts.iter().try_for_each(|p| g.write_all(p)).and_then(|()| g.finish())
            }
        };
        #[allow(clippy::expect_used, reason = "writes into a Vec do not fail")]
        written.expect("compressing into memory")
    }
}

/// The coding to answer with, from `Accept-Encoding`: the acceptable one (`q` above 0,
/// named or matched by `*`) of highest weight, zstd before br before gzip at equal weight;
/// `None` without the header, for identity only, or when nothing we make is acceptable.
/// Malformed members are skipped.
#[must_use]
pub fn negotiate(accept_encoding: Option<&[u8]>) -> Option<Encoding> {
    let value = std::str::from_utf8(accept_encoding?).ok()?;
    // Weights in thousandths, per coding in PREFERENCE order; then `*`'s.
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut any: Option<u16> = None;
    for member in value.split(',') {
        let mut pieces = member.split(';');
        let token = pieces.next().unwrap_or_default().trim();
        if token.is_empty() {
            continue;
        }
        let mut weight = Some(1000);
        for param in pieces {
            let (key, val) = param.split_once('=').unwrap_or((param, ""));
            if key.trim().eq_ignore_ascii_case("q") {
                weight = qvalue(val.trim());
            }
        }
        let Some(weight) = weight else { continue };
        if token == "*" {
            any = Some(weight);
        } else if let Some(i) = Encoding::PREFERENCE.iter().position(|e| e.matches(token)) {
            named[i] = Some(weight);
        }
    }
    let mut best: Option<(u16, Encoding)> = None;
    for (i, encoding) in Encoding::PREFERENCE.into_iter().enumerate() {
        let weight = named[i].or(any).unwrap_or(0);
        if weight > 0 && best.is_none_or(|(w, _)| weight > w) {
            best = Some((weight, encoding));
        }
    }
    best.map(|(_, e)| e)
}

/// A `qvalue` (RFC 9110 §12.4.2): `0`, `1`, `0.xyz`, `1.000`, in thousandths.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether a body of `content_type` is worth compressing: not images, audio, video, fonts
/// in compressed formats, or archives and compressed files.
#[must_use]
pub fn compressible(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
    match kind {
        "image" => sub == "svg+xml" || sub == "bmp",
        "audio" | "video" => false,
        "font" => !matches!(sub, "woff" | "woff2"),
        _ => !matches!(
            sub,
            "zip"
                | "gzip"
                | "x-gzip"
                | "zstd"
                | "x-bzip2"
                | "x-xz"
                | "x-7z-compressed"
                | "x-rar-compressed"
                | "vnd.rar"
                | "x-brotli"
                | "br"
        ),
    }
}

/// Compresses a read answer in place with `encoding` when it is worth it (a 200 of at least
/// [`MIN_BYTES`], a content type not compressed already, and the result at least an eighth
/// smaller), and marks every read answer `Vary: Accept-Encoding`.
pub async fn apply(resp: &mut Response, encoding: Option<Encoding>) {
    resp.headers.append("vary", Value::Static("Accept-Encoding"));
    let Some(encoding) = encoding else { return };
    if resp.status != Status::OK {
        return;
    }
    let parts: Vec<Bytes> = match &resp.body {
        Body::Full(bytes) => vec![bytes.clone()],
        Body::Parts(parts) => parts.clone(),
        Body::Empty | Body::Sse(_) => return,
    };
    let total: usize = parts.iter().map(Bytes::len).sum();
    if total < MIN_BYTES {
        return;
    }
    let content_type = resp.headers.get("content-type").map(Value::to_bytes).unwrap_or_default();
    if !compressible(&String::from_utf8_lossy(&content_type)) {
        return;
    }
    let compressed = if total >= BLOCKING_BYTES {
        match tokio::task::spawn_blocking(move || encoding.compress(&parts)).await {
            Ok(c) => c,
            Err(_) => return,
        }
    } else {
        encoding.compress(&parts)
    };
    if compressed.len() > total - total / 8 {
        return;
    }
    resp.body = Body::Full(Bytes::from(compressed));
    resp.headers.set("content-encoding", Value::Static(encoding.token()));
}

/// Decompresses `data` (tests and benchmarks check round trips with it).
///
/// # Errors
/// If `data` is not valid in `encoding`.
pub fn decompress(encoding: Encoding, data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    match encoding {
        Encoding::Zstd => {
            zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?;
        }
        Encoding::Br => {
            brotli::Decompressor::new(data, 64 * 1024).read_to_end(&mut out)?;
        }
        Encoding::Gzip => {
            flate2::read::GzDecoder::new(data).read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_weights_then_our_preference() {
        let pick = |v: &str| negotiate(Some(v.as_bytes()));
        assert_eq!(negotiate(None), None, "no header: identity");
        assert_eq!(pick(""), None, "empty: identity only");
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("gzip, deflate, br, zstd"), Some(Encoding::Zstd));
        assert_eq!(pick("gzip, deflate, br"), Some(Encoding::Br));
        assert_eq!(pick("gzip"), Some(Encoding::Gzip));
        assert_eq!(pick("X-GZIP"), Some(Encoding::Gzip));
        assert_eq!(pick("br;q=0.5, gzip;q=0.9"), Some(Encoding::Gzip));
        assert_eq!(pick("zstd;q=0, br;q=0.1"), Some(Encoding::Br));
        assert_eq!(pick("*"), Some(Encoding::Zstd));
        assert_eq!(pick("*;q=0.5, zstd;q=0, br;q=0"), Some(Encoding::Gzip));
        assert_eq!(pick("*;q=0"), None);
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(pick("deflate, compress"), None);
        assert_eq!(pick(" gzip ; q=1.000 "), Some(Encoding::Gzip));
    }

    #[test]
    fn malformed_members_are_skipped() {
        let pick = |v: &str| negotiate(Some(v.as_bytes()));
        assert_eq!(pick("zstd;q=2, gzip"), Some(Encoding::Gzip), "q above 1");
        assert_eq!(pick("zstd;q=0.1234, gzip;q=0.5"), Some(Encoding::Gzip), "four decimals");
        assert_eq!(pick("zstd;q=abc"), None);
        assert_eq!(pick("zstd;q=-1"), None);
        assert_eq!(pick(",,;;, gzip"), Some(Encoding::Gzip));
        assert_eq!(negotiate(Some(b"gz\xffip")), None, "not UTF-8");
    }

    #[test]
    fn qvalues_are_read_in_thousandths() {
        for (s, q) in [
            ("0", Some(0)),
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("0.005", Some(5)),
            ("1.0", Some(1000)),
            ("1.001", None),
            ("0.", Some(0)),
            ("", None),
            (".5", None),
        ] {
            assert_eq!(qvalue(s), q, "{s:?}");
        }
    }

    #[test]
    fn compressed_formats_are_left_alone() {
        for ct in [
            "image/png",
            "video/mp4",
            "audio/ogg",
            "application/zip",
            "application/gzip",
            "application/zstd",
            "font/woff2",
            "IMAGE/JPEG; q=1",
        ] {
            assert!(!compressible(ct), "{ct}");
        }
        for ct in [
            "application/json",
            "text/plain; charset=utf-8",
            "application/octet-stream",
            "image/svg+xml",
            "application/x-ndjson",
        ] {
            assert!(compressible(ct), "{ct}");
        }
    }

    #[test]
    fn every_coding_round_trips_over_parts() {
        let parts: Vec<Bytes> = (0..50)
            .map(|i| Bytes::from(format!("{{\"n\":{i},\"text\":\"token {i}\"}},").repeat(20)))
            .collect();
        let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        for encoding in Encoding::PREFERENCE {
            let packed = encoding.compress(&parts);
            assert!(
                packed.len() < whole.len() / 4,
                "{encoding:?}: {} of {}",
                packed.len(),
                whole.len()
            );
            assert_eq!(decompress(encoding, &packed).unwrap(), whole, "{encoding:?}");
        }
    }

    /// `n` bytes of xorshift noise: nothing to compress.
    fn noise(n: usize) -> Bytes {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect::<Vec<u8>>();
        Bytes::from(bytes)
    }

    #[tokio::test]
    async fn only_worthwhile_answers_are_compressed_and_all_vary() {
        let json = Bytes::from("[".to_owned() + &"{\"a\":1},".repeat(400) + "{}]");
        let answer = |body: Body, ct: &'static str| {
            let mut r = Response::empty(Status::OK);
            r.headers.set("content-type", Value::Static(ct));
            r.body = body;
            r
        };
        let mut big = answer(Body::Full(json.clone()), "application/json");
        apply(&mut big, Some(Encoding::Gzip)).await;
        assert_eq!(
            big.headers.get("content-encoding").map(Value::to_bytes),
            Some(b"gzip".to_vec())
        );
        assert_eq!(big.headers.get("vary").map(Value::to_bytes), Some(b"Accept-Encoding".to_vec()));
        let Body::Full(packed) = &big.body else { panic!("one buffer") };
        assert_eq!(decompress(Encoding::Gzip, packed).unwrap(), json.to_vec());

        for (mut resp, why) in [
            (answer(Body::Full(Bytes::from_static(b"[1,2,3]")), "application/json"), "small"),
            (answer(Body::Full(json.clone()), "image/png"), "compressed type"),
            (answer(Body::Full(noise(4096)), "application/octet-stream"), "incompressible"),
        ] {
            apply(&mut resp, Some(Encoding::Zstd)).await;
            assert!(resp.headers.get("content-encoding").is_none(), "{why}");
            assert!(resp.headers.get("vary").is_some(), "{why}");
        }
        let mut not_modified = answer(Body::Empty, "application/json");
        not_modified.status = Status::NOT_MODIFIED;
        apply(&mut not_modified, Some(Encoding::Br)).await;
        assert!(not_modified.headers.get("content-encoding").is_none());
        let mut identity = answer(Body::Full(json), "application/json");
        apply(&mut identity, None).await;
        assert!(identity.headers.get("content-encoding").is_none());
        assert!(identity.headers.get("vary").is_some(), "identity answers vary too");
    }
}
