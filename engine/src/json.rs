//! JSON mode (§9.1): validation and one level of array flattening.
//!
//! A JSON stream stores each message as its JSON text followed by one `,`. A read of any run of
//! whole messages is then `[` + the stored bytes without their last `,` + `]`, with no parsing
//! and no copy of the messages themselves.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::payload::Payload;

/// The deepest nesting of arrays and objects accepted in one body. A client's `JSON.parse`
/// might not take more, and the validator's stack of open containers is one `u128`.
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

/// Validates `body` (RFC 8259, UTF-8, at most [`MAX_JSON_DEPTH`] levels) and splits it into
/// stored messages: a top-level array contributes each of its elements, anything else is
/// one message. One pass over the body, without recursion and without building values;
/// the messages are copied once, into the stored form.
///
/// # Errors
/// [`Error::InvalidJson`] for malformed or too deeply nested JSON, and
/// [`Error::EmptyJsonArray`] for `[]` on an append.
pub fn split_messages(body: &[u8], usage: JsonUse) -> Result<Payload> {
    if std::str::from_utf8(body).is_err() {
        return Err(Error::InvalidJson("body is not UTF-8".into()));
    }
    let mut p = Parser { b: body, i: 0 };
    // Where each message is in the body.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    p.ws();
    if p.peek() == Some(b'[') {
        p.i += 1;
        p.ws();
        if p.peek() == Some(b']') {
            p.i += 1;
            if usage == JsonUse::Append {
                p.ws();
                p.end()?;
                return Err(Error::EmptyJsonArray);
            }
        } else {
            spans.reserve(16);
            loop {
                let start = p.i;
                p.value(1)?;
                spans.push((start, p.i));
                p.ws();
                match p.bump() {
                    Some(b',') => p.ws(),
                    Some(b']') => break,
                    _ => return Err(p.error("expected `,` or `]` after an array element")),
                }
            }
        }
    } else {
        let start = p.i;
        p.value(0)?;
        spans.push((start, p.i));
    }
    p.ws();
    p.end()?;
    Ok(stored_form(body, &spans))
}

/// The messages at `spans` of `body`, each followed by the separator. A compact array
/// (nothing but a comma between its elements) already is that form: one copy.
fn stored_form(body: &[u8], spans: &[(usize, usize)]) -> Payload {
    let (Some(&(first, _)), Some(&(_, last))) = (spans.first(), spans.last()) else {
        return Payload::from_records(Bytes::new(), Vec::new());
    };
    let ends: Vec<u64> = spans.iter().map(|&(_, end)| (end - first + 1) as u64).collect();
    let compact = spans.windows(2).all(|w| w[1].0 == w[0].1 + 1);
    let mut out = BytesMut::with_capacity(last - first + 1);
    if compact {
        out.put_slice(&body[first..last]);
        out.put_u8(MESSAGE_SEPARATOR);
    } else {
        for &(start, end) in spans {
            out.put_slice(&body[start..end]);
            out.put_u8(MESSAGE_SEPARATOR);
        }
    }
    let ends = if compact {
        ends
    } else {
        let mut at = 0u64;
        spans
            .iter()
            .map(|&(start, end)| {
                at += (end - start + 1) as u64;
                at
            })
            .collect()
    };
    Payload::from_records(out.freeze(), ends)
}

/// A cursor over a body being validated.
struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

/// Bytes a string may hold without a closer look: not `"`, not `\`, not a control byte.
const PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = false;
        c += 1;
    }
    t[b'"' as usize] = false;
    t[b'\\' as usize] = false;
    t
};

impl Parser<'_> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    #[inline(always)]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    #[cold]
    fn error(&self, what: &str) -> Error {
        if self.i >= self.b.len() {
            Error::InvalidJson(format!("{what} (the body ends first)"))
        } else {
            Error::InvalidJson(format!("{what} at byte {}", self.i))
        }
    }

    /// Only whitespace may follow the value.
    fn end(&self) -> Result<()> {
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.error("unexpected data after the value"))
        }
    }

    /// One value, at nesting `depth` (the levels already open around it), iteratively: the
    /// open containers are bits of `objects` (1 = object) and their number `open`.
    fn value(&mut self, depth: usize) -> Result<()> {
        let mut objects: u128 = 0;
        let mut open = 0usize;
        loop {
            // A value starts here (whitespace before it is already skipped).
            match self.peek() {
                Some(b'{' | b'[') => {
                    if depth + open + 1 > MAX_JSON_DEPTH {
                        return Err(Error::InvalidJson(format!(
                            "nesting deeper than {MAX_JSON_DEPTH} levels"
                        )));
                    }
                    let object = self.bump() == Some(b'{');
                    objects = (objects << 1) | u128::from(object);
                    open += 1;
                    self.ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        objects >>= 1;
                        open -= 1;
                    } else {
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.error("expected a value")),
            }
            // After a value: close containers, or move to the next element.
            loop {
                if open == 0 {
                    return Ok(());
                }
                self.ws();
                let object = objects & 1 == 1;
                match (self.bump(), object) {
                    (Some(b','), _) => {
                        self.ws();
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        objects >>= 1;
                        open -= 1;
                    }
                    _ if object => return Err(self.error("expected `,` or `}` in an object")),
                    _ => return Err(self.error("expected `,` or `]` in an array")),
                }
            }
        }
    }

    /// `"key" :` and the whitespace after it.
    #[inline(always)]
    fn key(&mut self) -> Result<()> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string key"));
        }
        self.string()?;
        self.ws();
        if self.bump() != Some(b':') {
            return Err(self.error("expected `:` after a key"));
        }
        self.ws();
        Ok(())
    }

    #[inline(always)]
    fn string(&mut self) -> Result<()> {
        self.i += 1; // the opening quote
        loop {
            while self.b.get(self.i).is_some_and(|&c| PLAIN[usize::from(c)]) {
                self.i += 1;
            }
            match self.bump() {
                Some(b'"') => return Ok(()),
                Some(b'\\') => match self.bump() {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                    Some(b'u') => {
                        let hex = self.b.get(self.i..self.i + 4);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return Err(self.error("`\\u` needs four hex digits"));
                        }
                        self.i += 4;
                    }
                    _ => return Err(self.error("invalid escape in a string")),
                },
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    #[inline(always)]
    fn number(&mut self) -> Result<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number: digits must follow `.`"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number: digits must follow the exponent"));
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.error("expected true, false or null"))
        }
    }
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

    /// The splitter this one replaced (serde_json's `RawValue` and a separate depth scan):
    /// the reference the differential property holds to.
    fn reference(body: &[u8], usage: JsonUse) -> Result<Payload> {
        use serde_json::value::RawValue;
        let mut depth = 0usize;
        let (mut in_string, mut escaped) = (false, false);
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
                        return Err(Error::InvalidJson("deep".into()));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        let invalid = |e: serde_json::Error| Error::InvalidJson(e.to_string());
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        let mut out = BytesMut::new();
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

    /// Same verdict and same stored bytes as the reference.
    fn agree(body: &[u8]) {
        for usage in [JsonUse::Append, JsonUse::Create] {
            let ours = split_messages(body, usage);
            let theirs = reference(body, usage);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.bytes(), b.bytes(), "{:?}", String::from_utf8_lossy(body));
                    assert_eq!(a.record_ends(), b.record_ends());
                }
                (Err(Error::InvalidJson(_)), Err(Error::InvalidJson(_)))
                | (Err(Error::EmptyJsonArray), Err(Error::EmptyJsonArray)) => {}
                _ => panic!(
                    "{:?}: ours {ours:?}, reference {theirs:?}",
                    String::from_utf8_lossy(body)
                ),
            }
        }
    }

    #[test]
    fn agrees_with_serde_json_on_corner_cases() {
        for body in [
            "0",
            "-0",
            "01",
            "-",
            "1.",
            "1.5",
            ".5",
            "1e5",
            "1E+5",
            "1e-5",
            "1e",
            "+1",
            "-01",
            "1.5e3",
            "true",
            "truex",
            "tru",
            "false",
            "null",
            "nul",
            "\"\"",
            "\"\\u00e9\"",
            "\"\\ud800\"",
            "\"\\u12\"",
            "\"\\x\"",
            "\"a\tb\"",
            "\"\\/\"",
            "{}",
            "[]",
            "[ ]",
            "{\"a\":1,}",
            "{\"a\" : [1, {\"b\": null}] }",
            "{1:2}",
            "{\"a\"}",
            "[1,,2]",
            "[1 2]",
            "[,1]",
            "[\"x\"]]",
            "[[]",
            "{\"a\":1}}",
            " [1, [2, 3], {\"k\": [4]}] ",
            "\u{feff}1",
            "\"\u{e9}\"",
            "[\"\u{1F600}\"]",
            "\"\\\"\"",
            "\"unterminated",
        ] {
            agree(body.as_bytes());
        }
        for bad in [&b"\"\xff\""[..], b"[\"\xc3\"]", b"\x80", b"[1]\xff"] {
            agree(bad);
        }
        for depth in [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1] {
            agree(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).as_bytes());
            let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            agree(objects.as_bytes());
            agree(format!("[{objects}]").as_bytes());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Arbitrary bodies made of JSON's own characters (and a few others), and valid
        /// documents with one byte changed: the same verdict as serde_json's.
        #[test]
        fn agrees_with_serde_json(
            body in proptest::collection::vec(proptest::sample::select(
                b"[]{}\",:0123456789-+.eEtrufalsn \n\\/bx\xc3\xa9".to_vec()), 0..40),
        ) {
            agree(&body);
        }

        #[test]
        fn agrees_on_mutated_documents(
            doc in json_document(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
            mutate in proptest::prelude::any::<bool>(),
        ) {
            let mut body = doc.into_bytes();
            if mutate && !body.is_empty() {
                let i = at.index(body.len());
                body[i] = byte;
            }
            agree(&body);
        }
    }

    fn json_document() -> impl proptest::prelude::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| f.to_string()),
            ".{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(" , "))),
                proptest::collection::vec((".{0,4}", inner), 0..6).prop_map(|v| {
                    let fields: Vec<String> = v
                        .into_iter()
                        .map(|(k, v)| {
                            format!("{}:{v}", serde_json::to_string(&k).unwrap_or_default())
                        })
                        .collect();
                    format!("{{ {} }}", fields.join(","))
                }),
            ]
        })
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
