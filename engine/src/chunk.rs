//! Where a read may cut a record that is larger than the chunk it is read into.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::offset::Offset;
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

/// A record's data, for reads.
#[derive(Clone, Debug)]
pub(crate) struct Piece {
    /// Offset-space position of the record.
    pub(crate) pos: u64,
    /// Position after it.
    pub(crate) end: u64,
    /// Its stored bytes.
    pub(crate) payload: Bytes,
    /// JSON message lengths, for JSON streams.
    pub(crate) lens: Option<Arc<[u32]>>,
}

/// Builds a chunk from whole records starting at `start`: records while they fit in `max`
/// bytes; a first record larger than that is cut by `split` (at a byte count, a character
/// boundary, or a message boundary for JSON, where the offset's `sub` counts messages); with
/// `whole`, not at all (the chunk is then empty).
pub(crate) fn assemble(
    pieces: &[Piece],
    start: Offset,
    max: usize,
    split: Split,
    whole: bool,
) -> Result<(Vec<Bytes>, Offset)> {
    let mut parts = Vec::new();
    let mut next = start;
    let mut total = 0usize;
    for (i, piece) in pieces.iter().enumerate() {
        let skip = if i == 0 { sub_to_bytes(piece, start.sub())? } else { 0 };
        let sub_base = if i == 0 { start.sub() } else { 0 };
        let rest = piece.payload.len() - skip;
        if total + rest <= max {
            parts.push(piece.payload.slice(skip..));
            total += rest;
            next = Offset::at(piece.end);
            continue;
        }
        if total > 0 || whole {
            break;
        }
        let (take, sub_taken) = match (&piece.lens, split) {
            (Some(lens), _) => {
                let mut bytes = 0usize;
                let mut count = 0usize;
                for len in &lens[sub_base as usize..] {
                    let len = *len as usize;
                    if count > 0 && bytes + len > max {
                        break;
                    }
                    bytes += len;
                    count += 1;
                }
                (bytes, count as u64)
            }
            (None, Split::Utf8) => {
                let take = utf8_cut(&piece.payload[skip..], max.max(1));
                (take, take as u64)
            }
            (None, _) => {
                let take = max.max(1);
                (take, take as u64)
            }
        };
        parts.push(piece.payload.slice(skip..skip + take));
        next = if skip + take == piece.payload.len() {
            Offset::at(piece.end)
        } else {
            let sub = u64::from(start.sub()) + sub_taken;
            Offset::with_sub(piece.pos, u32::try_from(sub).map_err(|_| Error::OffsetUnknown)?)
        };
        break;
    }
    Ok((parts, next))
}

/// Bytes of a record's payload before sub-position `sub`.
pub(crate) fn sub_to_bytes(piece: &Piece, sub: u32) -> Result<usize> {
    let sub = sub as usize;
    match &piece.lens {
        Some(lens) if sub < lens.len().max(1) => Ok(lens[..sub].iter().map(|l| *l as usize).sum()),
        None if sub < piece.payload.len().max(1) => Ok(sub),
        _ => Err(Error::OffsetUnknown),
    }
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
