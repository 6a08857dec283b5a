//! JSON mode (§9.1): validation and one level of array flattening.
//!
//! A JSON stream stores each message as its JSON text followed by one `,`. A read of any run of
//! whole messages is then `[` + the stored bytes without their last `,` + `]`, with no parsing
//! and no copy of the messages themselves.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::payload::Payload;

/// The deepest nesting of arrays and objects accepted in one body. serde_json would accept
/// any depth for raw values; a client's `JSON.parse` might not.
pub const MAX_JSON_DEPTH: usize = 128;

/// Byte that ends every stored JSON message.
pub const MESSAGE_SEPARATOR: u8 = b',';

/// Whether a request body is an append (where `[]` is an error) or a create (where it is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonUse {
    /// `POST`: an empty array is a client bug (§9.1.3).
    Append,
    /// `PUT`: an empty array creates an empty stream.
    Create,
}

/// Validates `body` and splits it into stored messages: a top-level array contributes each of
/// its elements, anything else is one message.
///
/// # Errors
/// [`Error::InvalidJson`] for malformed or too deeply nested JSON, and
/// [`Error::EmptyJsonArray`] for `[]` on an append.
pub fn split_messages(body: &[u8], usage: JsonUse) -> Result<Payload> {
    check_depth(body)?;
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let mut out = BytesMut::with_capacity(body.len() + 1);
    let mut ends = Vec::new();
    let mut push = |raw: &RawValue| {
        out.put_slice(raw.get().as_bytes());
        out.put_u8(MESSAGE_SEPARATOR);
        ends.push(out.len() as u64);
    };
    if first == Some(&b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(invalid)?;
        if items.is_empty() && usage == JsonUse::Append {
            return Err(Error::EmptyJsonArray);
        }
        items.into_iter().for_each(&mut push);
    } else {
        let one: &RawValue = serde_json::from_slice(body).map_err(invalid)?;
        push(one);
    }
    Ok(Payload::from_records(out.freeze(), ends))
}

fn invalid(e: serde_json::Error) -> Error {
    Error::InvalidJson(e.to_string())
}

/// Rejects bodies nested deeper than [`MAX_JSON_DEPTH`], in one pass and without recursion.
fn check_depth(body: &[u8]) -> Result<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(Error::InvalidJson(format!(
                        "nesting deeper than {MAX_JSON_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Wraps stored JSON messages (each ending in `,`) as one JSON array, without copying them.
#[must_use]
pub fn wrap_array(mut parts: Vec<Bytes>) -> Vec<Bytes> {
    // Drop the separator after the last message; empty parts carry no bytes to trim.
    while parts.last().is_some_and(Bytes::is_empty) {
        parts.pop();
    }
    if let Some(last) = parts.last_mut() {
        debug_assert_eq!(last.last(), Some(&MESSAGE_SEPARATOR));
        last.truncate(last.len() - 1);
    }
    let mut out = Vec::with_capacity(parts.len() + 2);
    out.push(Bytes::from_static(b"["));
    out.extend(parts.into_iter().filter(|p| !p.is_empty()));
    out.push(Bytes::from_static(b"]"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(body: &str, usage: JsonUse) -> Result<(String, Vec<u64>)> {
        let p = split_messages(body.as_bytes(), usage)?;
        let ends = p.record_ends().to_vec();
        Ok((String::from_utf8(p.bytes().to_vec()).expect("utf8"), ends))
    }

    fn read_back(body: &str) -> String {
        let p = split_messages(body.as_bytes(), JsonUse::Create).expect("valid");
        let parts = wrap_array(vec![p.bytes().clone()]);
        String::from_utf8(parts.concat()).expect("utf8")
    }

    #[test]
    fn flattens_exactly_one_level() {
        assert_eq!(stored(r#"{"a":1}"#, JsonUse::Append).unwrap().0, r#"{"a":1},"#);
        assert_eq!(stored(r"[1, 2]", JsonUse::Append).unwrap().0, "1,2,");
        assert_eq!(stored(r"[[1,2], [3,4]]", JsonUse::Append).unwrap().0, "[1,2],[3,4],");
        assert_eq!(stored(r"[[[1,2,3]]]", JsonUse::Append).unwrap().0, "[[1,2,3]],");
        assert_eq!(stored(" \n 7 \n", JsonUse::Append).unwrap(), ("7,".into(), vec![2]));
        assert_eq!(stored(r#"["a","b,c"]"#, JsonUse::Append).unwrap().1, vec![4, 10]);
    }

    #[test]
    fn empty_array_rejected_on_append_only() {
        assert_eq!(stored("[]", JsonUse::Append), Err(Error::EmptyJsonArray));
        assert_eq!(stored(" [ ] ", JsonUse::Append), Err(Error::EmptyJsonArray));
        assert_eq!(stored("[]", JsonUse::Create).unwrap(), (String::new(), vec![]));
    }

    #[test]
    fn invalid_json_rejected() {
        for bad in ["", " ", "{", "[1,]", "{\"a\":}", "nul", "[1] [2]", "\u{0}", "'x'", "1 2"] {
            assert!(
                matches!(stored(bad, JsonUse::Append), Err(Error::InvalidJson(_))),
                "{bad:?} must be invalid"
            );
        }
        assert!(matches!(
            split_messages(&[0xff, 0xfe], JsonUse::Append),
            Err(Error::InvalidJson(_))
        ));
    }

    #[test]
    fn deep_nesting_rejected_without_recursion() {
        let deep = "[".repeat(1_000_000);
        assert!(matches!(stored(&deep, JsonUse::Append), Err(Error::InvalidJson(_))));
        let ok = format!("{}{}", "[".repeat(MAX_JSON_DEPTH), "]".repeat(MAX_JSON_DEPTH));
        assert!(stored(&ok, JsonUse::Append).is_ok());
        // Brackets inside strings do not count.
        let in_string = format!("\"{}\"", "[".repeat(1000));
        assert!(stored(&in_string, JsonUse::Append).is_ok());
    }

    #[test]
    fn reads_wrap_as_one_array() {
        assert_eq!(read_back("[]"), "[]");
        assert_eq!(read_back(r#"[{"k":"v"}, 2]"#), r#"[{"k":"v"},2]"#);
        assert_eq!(wrap_array(vec![]).concat(), b"[]");
        assert_eq!(
            wrap_array(vec![Bytes::from_static(b"1,2,"), Bytes::from_static(b"3,"), Bytes::new()])
                .concat(),
            b"[1,2,3]"
        );
    }
}
