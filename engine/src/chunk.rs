//! Where a read may cut a record that is larger than the chunk it is read into.

use crate::store::ContentType;

/// How a record larger than a read's chunk may be cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Never: JSON messages are returned whole.
    Never,
    /// Anywhere: opaque bytes.
    Bytes,
    /// Only between UTF-8 characters: text, so that text read in chunks (SSE events, each
    /// decoded on its own) never has a character cut in two.
    Utf8,
}

impl Split {
    /// The rule for a stream's content type.
    #[must_use]
    pub fn for_type(content_type: &ContentType) -> Split {
        if content_type.is_json() {
            Split::Never
        } else if content_type.is_text() {
            Split::Utf8
        } else {
            Split::Bytes
        }
    }
}

/// How many bytes of `bytes` to take to take at most `want`: `want` itself, moved back to the
/// start of a UTF-8 sequence if it falls inside one (never to 0 when `want` > 0; bytes that
/// are not UTF-8 are cut where asked).
#[must_use]
pub fn utf8_cut(bytes: &[u8], want: usize) -> usize {
    let want = want.min(bytes.len());
    let is_continuation = |i: usize| bytes.get(i).is_some_and(|b| b & 0xC0 == 0x80);
    let mut cut = want;
    while cut > 1 && want - cut < 3 && is_continuation(cut) {
        cut -= 1;
    }
    if is_continuation(cut) { want } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_between_characters() {
        let s = "aé€😀".as_bytes();
        assert_eq!(utf8_cut(s, 2), 1, "inside é");
        assert_eq!(utf8_cut(s, 3), 3);
        assert_eq!(utf8_cut(s, 5), 3, "inside €");
        assert_eq!(utf8_cut(s, 8), 6, "inside 😀");
        assert_eq!(utf8_cut(s, 100), s.len());
        assert_eq!(utf8_cut(&[0x80, 0x80, 0x80, 0x80, 0x80], 4), 4, "not UTF-8: as asked");
    }
}
