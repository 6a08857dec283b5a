//! The `chunked` transfer coding of request bodies (RFC 9112 §7.1), decoded incrementally:
//! bytes go in as they arrive, split anywhere, and the decoder says how many it used and
//! whether the body ended. Strict where laxness lets a body be read as a request: a chunk
//! size is hex digits (no sign, no `0x`, no whitespace before them, no overflow), every line
//! ends with CRLF (never a bare LF), and chunk data must be followed by CRLF. Extensions
//! and trailer fields are accepted and ignored, within bounds.

use crate::error::ApiError;
use crate::name::hex;

/// Longest chunk-size line (digits and extensions) accepted.
pub const SIZE_LINE_BYTES_MAX: usize = 4 * 1024;
/// Most bytes of trailer fields accepted.
pub const TRAILER_BYTES_MAX: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size { digits: usize, value: u64 },
    /// After the digits: whitespace and extensions up to CR.
    Extensions { value: u64 },
    /// Expecting the LF of the size line.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer { colon: bool },
    /// Expecting the LF of a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// An incremental decoder of one chunked body.
#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
    /// Bytes of the current size line, or of all trailer lines.
    line_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder { state: State::Size { digits: 0, value: 0 }, line_bytes: 0 }
    }
}

fn error(what: &str) -> ApiError {
    ApiError::bad_framing(format!("malformed chunked body: {what}"))
}

impl Decoder {
    /// Whether the whole body has been decoded.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, passing chunk data to `data`; returns how many bytes of
    /// `input` were used. Stops at the end of the body: bytes after it are not used.
    ///
    /// # Errors
    /// A 400 (closing the connection) for any framing error.
    pub fn decode(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, ApiError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            if let State::Data { remaining } = self.state {
                let n = usize::try_from(remaining).unwrap_or(usize::MAX).min(input.len() - i);
                data(&input[i..i + n]);
                i += n;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 { State::DataCr } else { State::Data { remaining } };
                continue;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<(), ApiError> {
        self.state = match self.state {
            State::Size { digits, value } => {
                self.line_bytes += 1;
                if let Some(d) = hex(b) {
                    let value = value
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(u64::from(d)))
                        .ok_or_else(|| error("chunk size overflows"))?;
                    State::Size { digits: digits + 1, value }
                } else if digits == 0 {
                    return Err(error("chunk size must start with a hex digit"));
                } else if b == b'\r' {
                    State::SizeLf { value }
                } else if matches!(b, b';' | b' ' | b'\t') {
                    State::Extensions { value }
                } else {
                    return Err(error("chunk size must be hex digits"));
                }
            }
            State::Extensions { value } => {
                self.line_bytes += 1;
                match b {
                    b'\r' => State::SizeLf { value },
                    b'\t' | b' '..=b'~' | 0x80..=0xff => State::Extensions { value },
                    _ => return Err(error("control byte in a chunk extension")),
                }
            }
            State::SizeLf { value } => {
                if b != b'\n' {
                    return Err(error("chunk size line must end with CRLF"));
                }
                if self.line_bytes > SIZE_LINE_BYTES_MAX {
                    return Err(error("chunk size line is too long"));
                }
                self.line_bytes = 0;
                if value == 0 { State::TrailerStart } else { State::Data { remaining: value } }
            }
            State::Data { .. } => unreachable_data(),
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size { digits: 0, value: 0 },
            State::DataCr | State::DataLf => {
                return Err(error("chunk data must be followed by CRLF"));
            }
            State::TrailerStart => {
                self.line_bytes += 1;
                match b {
                    b'\r' => State::EndLf,
                    b' ' | b'\t' => return Err(error("obs-fold in a trailer")),
                    b':' => return Err(error("trailer field without a name")),
                    _ if is_tchar(b) => State::Trailer { colon: false },
                    _ => return Err(error("malformed trailer field name")),
                }
            }
            State::Trailer { colon } => {
                self.line_bytes += 1;
                match b {
                    b'\r' if colon => State::TrailerLf,
                    b'\r' => return Err(error("trailer field without a colon")),
                    b':' => State::Trailer { colon: true },
                    _ if !colon && is_tchar(b) => State::Trailer { colon },
                    b'\t' | b' '..=b'~' | 0x80..=0xff if colon => State::Trailer { colon },
                    _ => return Err(error("malformed trailer field")),
                }
            }
            State::TrailerLf | State::EndLf if b != b'\n' => {
                return Err(error("trailer lines must end with CRLF"));
            }
            State::TrailerLf => State::TrailerStart,
            State::EndLf => State::Done,
            State::Done => State::Done,
        };
        if self.line_bytes > SIZE_LINE_BYTES_MAX + TRAILER_BYTES_MAX {
            return Err(error("chunk line or trailer is too long"));
        }
        Ok(())
    }
}

/// `decode` handles data in bulk and never steps through it byte by byte.
fn unreachable_data() -> State {
    debug_assert!(false, "chunk data is consumed in bulk");
    State::DataCr
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` whole: the data, and how many bytes the body took.
    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ApiError> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let used = d.decode(input, |chunk| out.extend_from_slice(chunk))?;
        Ok((out, used, d.is_done()))
    }

    #[test]
    fn chunks_extensions_and_trailers() {
        let body = b"5\r\nhello\r\n6;name=\"v\" ; x\r\n, worl\r\nA\r\nd and more\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        let (data, used, done) = decode_all(body).unwrap();
        assert_eq!(data, b"hello, world and more");
        assert!(done);
        assert_eq!(&body[used..], b"NEXT", "bytes after the body are left for the next request");
        let (data, _, done) = decode_all(b"000A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!((data.len(), done), (10, true));
        let (_, _, done) = decode_all(b"5\r\nhel").unwrap();
        assert!(!done);
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\r\n",
            b"g\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
            b"5;a\0b\r\nhello\r\n",
            b"0\r\n x: y\r\n\r\n",
            b"0\r\nx y\r\n\r\n",
            b"0\r\nnocolon\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nx: y\n\r\n",
            b"0\r\n\n",
        ] {
            let e = decode_all(bad).expect_err(&String::from_utf8_lossy(bad));
            assert_eq!(e.status().code(), 400);
        }
        let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(SIZE_LINE_BYTES_MAX));
        assert!(decode_all(long_ext.as_bytes()).is_err());
        let big =
            format!("0\r\nx: {}\r\n\r\n", "v".repeat(TRAILER_BYTES_MAX + SIZE_LINE_BYTES_MAX));
        assert!(decode_all(big.as_bytes()).is_err());
    }

    #[test]
    fn the_largest_size_is_accepted_without_overflow() {
        let (_, used, done) = decode_all(b"ffffffffffffffff\r\nab").unwrap();
        assert_eq!((used, done), (20, false));
    }
}
