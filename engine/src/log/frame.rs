//! The append-log format: a file header, then records. Every integer is little-endian.
//!
//! ```text
//! file header (40 bytes)
//!   0  8  magic        "DSLOG\r\n\x1a"
//!   8  2  version      1
//!  10  2  flags        0 (reserved)
//!  12  4  reserved     0
//!  16  8  incarnation  the stream's identity; matches the file name
//!  24  8  base         offset-space position of the first record (0; forks will differ)
//!  32  4  crc32        of bytes 0..32
//!  36  4  reserved     0
//!
//! record
//!   0  4  len          bytes of the body that follows the 8-byte prefix
//!   4  4  crc32        of bytes 0..4 and of the body
//!   8  1  kind         1 = append, 2 = close
//!   9  1  flags        PRODUCER | STREAM_SEQ | CLOSES | MESSAGES
//!  10  2  reserved     0
//!  12     fields, in this order, each present only if its flag is set:
//!           PRODUCER    id_len u16, id (UTF-8), epoch u64, seq u64
//!           STREAM_SEQ  len u16, bytes
//!           MESSAGES    count u32, count × u32 message lengths (JSON streams)
//!         payload: the rest of the body
//! ```
//!
//! A record's position in the offset space is `base + (file position - 40)`; the tail is the
//! position after the last record. [`decode`] tells a clean end, a torn tail (a record cut
//! short or zero-filled at the end of the file, as an interrupted write leaves) and
//! corruption before the end apart, and never panics on any input.

use std::borrow::Cow;

/// First bytes of every log file.
pub const FILE_MAGIC: [u8; 8] = *b"DSLOG\r\n\x1a";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + FILE_MAGIC.len();
const FILE_FLAGS_AT: usize = VERSION_AT + 2;
const FILE_RESERVED_AT: usize = FILE_FLAGS_AT + 2;
const INCARNATION_AT: usize = FILE_RESERVED_AT + 4;
const BASE_AT: usize = INCARNATION_AT + 8;
const HEADER_CRC_AT: usize = BASE_AT + 8;
/// Length of the file header.
pub const FILE_HEADER_LEN: usize = HEADER_CRC_AT + 4 + 4;
const _: () = assert!(FILE_HEADER_LEN == 40);

const LEN_AT: usize = 0;
const CRC_AT: usize = LEN_AT + 4;
/// Bytes before a record's body: length and CRC.
pub const FRAME_PREFIX_LEN: usize = CRC_AT + 4;
const KIND_AT: usize = 0;
const FLAGS_AT: usize = KIND_AT + 1;
const BODY_RESERVED_AT: usize = FLAGS_AT + 1;
/// Bytes of every record body before its optional fields.
pub const BODY_FIXED_LEN: usize = BODY_RESERVED_AT + 2;
const _: () = assert!(FRAME_PREFIX_LEN == 8 && BODY_FIXED_LEN == 4);

/// Largest record body accepted when reading: a bound on what a corrupt length can make a
/// reader allocate. Writers never produce a body this large (bodies are limited to 1 GiB).
pub const MAX_BODY_LEN: u32 = (1 << 30) + (1 << 20);

/// Record flag: producer fields present.
pub const FLAG_PRODUCER: u8 = 1;
/// Record flag: `Stream-Seq` field present.
pub const FLAG_STREAM_SEQ: u8 = 2;
/// Record flag: this append also closes the stream.
pub const FLAG_CLOSES: u8 = 4;
/// Record flag: message lengths present (JSON streams).
pub const FLAG_MESSAGES: u8 = 8;
const KNOWN_FLAGS: u8 = FLAG_PRODUCER | FLAG_STREAM_SEQ | FLAG_CLOSES | FLAG_MESSAGES;

/// What a record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Appends its payload (and closes the stream if flagged).
    Append = 1,
    /// Closes the stream without data.
    Close = 2,
}

/// A decoded record, borrowing from the buffer it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// What the record does.
    pub kind: Kind,
    /// The stream is closed after this record.
    pub closes: bool,
    /// `(Producer-Id, Producer-Epoch, Producer-Seq)` of the request, if any.
    pub producer: Option<(Cow<'a, str>, u64, u64)>,
    /// `Stream-Seq` of the request, if any.
    pub stream_seq: Option<&'a [u8]>,
    /// Lengths of the JSON messages in the payload, if this is a JSON stream.
    pub message_lens: Option<Vec<u32>>,
    /// The stored bytes.
    pub payload: &'a [u8],
}

/// The file header's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// The stream's incarnation.
    pub incarnation: u64,
    /// Offset-space position of the first record.
    pub base: u64,
}

/// The outcome of decoding at one position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record of `frame_len` bytes.
    Record {
        /// The record.
        record: Record<'a>,
        /// Its length in the file, prefix included.
        frame_len: usize,
    },
    /// The file ends exactly here.
    CleanEnd,
    /// What follows until the end of the file is a cut-short or zero-filled record.
    TornTail,
    /// A damaged record with more of the file after it.
    Corrupt,
    /// `buf` holds only part of the record: call again with at least this many bytes.
    NeedMore(usize),
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn frame_crc(len_bytes: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_bytes);
    h.update(body);
    h.finalize()
}

/// Encodes a file header.
#[must_use]
pub fn encode_header(header: FileHeader) -> [u8; FILE_HEADER_LEN] {
    let mut out = [0u8; FILE_HEADER_LEN];
    out[MAGIC_AT..VERSION_AT].copy_from_slice(&FILE_MAGIC);
    out[VERSION_AT..FILE_FLAGS_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[INCARNATION_AT..BASE_AT].copy_from_slice(&header.incarnation.to_le_bytes());
    out[BASE_AT..HEADER_CRC_AT].copy_from_slice(&header.base.to_le_bytes());
    let crc = crc32fast::hash(&out[..HEADER_CRC_AT]);
    out[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Why a file header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`FILE_HEADER_LEN`] bytes.
    Short,
    /// Not a log file.
    BadMagic,
    /// A version this code does not read.
    UnknownVersion(u16),
    /// The header's CRC does not match.
    BadChecksum,
}

/// Decodes a file header.
///
/// # Errors
/// [`HeaderError`] for anything but a valid version-1 header.
pub fn decode_header(b: &[u8]) -> Result<FileHeader, HeaderError> {
    let head = b.get(..FILE_HEADER_LEN).ok_or(HeaderError::Short)?;
    if head[MAGIC_AT..VERSION_AT] != FILE_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let crc = le_u32(head, HEADER_CRC_AT).ok_or(HeaderError::Short)?;
    if crc != crc32fast::hash(&head[..HEADER_CRC_AT]) {
        return Err(HeaderError::BadChecksum);
    }
    let version = le_u16(head, VERSION_AT).ok_or(HeaderError::Short)?;
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnknownVersion(version));
    }
    Ok(FileHeader {
        incarnation: le_u64(head, INCARNATION_AT).ok_or(HeaderError::Short)?,
        base: le_u64(head, BASE_AT).ok_or(HeaderError::Short)?,
    })
}

/// The length `encode` would produce for `record`, prefix included.
#[must_use]
pub fn frame_len(record: &Record<'_>) -> u64 {
    let mut body = BODY_FIXED_LEN as u64 + record.payload.len() as u64;
    if let Some((id, _, _)) = &record.producer {
        body += 2 + id.len() as u64 + 16;
    }
    if let Some(seq) = record.stream_seq {
        body += 2 + seq.len() as u64;
    }
    if let Some(lens) = &record.message_lens {
        body += 4 + 4 * lens.len() as u64;
    }
    FRAME_PREFIX_LEN as u64 + body
}

/// Whether `record` fits the format (a body of at most [`MAX_BODY_LEN`]); [`encode`] may only
/// be given records that do.
#[must_use]
pub fn fits(record: &Record<'_>) -> bool {
    frame_len(record) - FRAME_PREFIX_LEN as u64 <= u64::from(MAX_BODY_LEN)
        && record.producer.as_ref().is_none_or(|(id, _, _)| id.len() <= usize::from(u16::MAX))
        && record.stream_seq.is_none_or(|s| s.len() <= usize::from(u16::MAX))
}

/// Appends the encoding of `record` to `out`; returns the frame's length.
///
/// # Panics
/// If the record does not [`fits`]; callers check first, so that a refused request leaves
/// no partial frame behind.
pub fn encode(record: &Record<'_>, out: &mut Vec<u8>) -> usize {
    assert!(fits(record), "record does not fit the log format");
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_PREFIX_LEN]);
    let mut flags = 0u8;
    if record.producer.is_some() {
        flags |= FLAG_PRODUCER;
    }
    if record.stream_seq.is_some() {
        flags |= FLAG_STREAM_SEQ;
    }
    if record.closes && record.kind == Kind::Append {
        flags |= FLAG_CLOSES;
    }
    if record.message_lens.is_some() {
        flags |= FLAG_MESSAGES;
    }
    out.push(record.kind as u8);
    out.push(flags);
    out.extend_from_slice(&[0, 0]);
    if let Some((id, epoch, seq)) = &record.producer {
        out.extend_from_slice(&short_len(id.len()).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&epoch.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    if let Some(seq) = record.stream_seq {
        out.extend_from_slice(&short_len(seq.len()).to_le_bytes());
        out.extend_from_slice(seq);
    }
    if let Some(lens) = &record.message_lens {
        out.extend_from_slice(&long_len(lens.len()).to_le_bytes());
        for len in lens {
            out.extend_from_slice(&len.to_le_bytes());
        }
    }
    out.extend_from_slice(record.payload);
    let body_len = long_len(out.len() - start - FRAME_PREFIX_LEN);
    out[start + LEN_AT..start + CRC_AT].copy_from_slice(&body_len.to_le_bytes());
    let crc = frame_crc(&out[start + LEN_AT..start + CRC_AT], &out[start + FRAME_PREFIX_LEN..]);
    out[start + CRC_AT..start + FRAME_PREFIX_LEN].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

fn short_len(n: usize) -> u16 {
    assert!(n <= usize::from(u16::MAX), "field of {n} bytes does not fit the format");
    n as u16
}

fn long_len(n: usize) -> u32 {
    assert!(n <= MAX_BODY_LEN as usize, "record of {n} bytes does not fit the format");
    n as u32
}

/// Decodes the record at the start of `buf`. `remaining` is how many bytes the file holds
/// from this position to its end (`buf` may hold fewer).
#[must_use]
pub fn decode(buf: &[u8], remaining: u64) -> Decoded<'_> {
    decode_with(buf, remaining, true)
}

/// Like [`decode`], without checking the CRC of the body: for bytes this process wrote or
/// has already checked (lengths are still checked, so a bad position is still refused).
#[must_use]
pub fn decode_trusted(buf: &[u8], remaining: u64) -> Decoded<'_> {
    decode_with(buf, remaining, false)
}

fn decode_with(buf: &[u8], remaining: u64, check_crc: bool) -> Decoded<'_> {
    if remaining == 0 {
        return Decoded::CleanEnd;
    }
    if remaining < FRAME_PREFIX_LEN as u64 {
        return Decoded::TornTail;
    }
    let Some(body_len) = le_u32(buf, LEN_AT) else { return Decoded::NeedMore(FRAME_PREFIX_LEN) };
    let frame_len = FRAME_PREFIX_LEN as u64 + u64::from(body_len);
    let plausible = body_len as usize >= BODY_FIXED_LEN && body_len <= MAX_BODY_LEN;
    if !plausible || frame_len > remaining {
        return damaged(buf, remaining, frame_len);
    }
    let frame_len = frame_len as usize;
    let Some(frame) = buf.get(..frame_len) else { return Decoded::NeedMore(frame_len) };
    let stored = le_u32(frame, CRC_AT).unwrap_or(0);
    let body = &frame[FRAME_PREFIX_LEN..];
    if check_crc && stored != frame_crc(&frame[LEN_AT..CRC_AT], body) {
        return damaged(buf, remaining, frame_len as u64);
    }
    match parse_body(body) {
        Some(record) => Decoded::Record { record, frame_len },
        // A valid CRC over a body this code cannot parse: written by something else.
        None => Decoded::Corrupt,
    }
}

/// Classifies a record that failed to decode: a torn tail if it reaches the end of the file
/// or everything from here to the end (as far as `buf` shows) is zeros; otherwise corruption.
fn damaged(buf: &[u8], remaining: u64, frame_len: u64) -> Decoded<'_> {
    if frame_len >= remaining {
        return Decoded::TornTail;
    }
    if !buf.iter().all(|b| *b == 0) {
        return Decoded::Corrupt;
    }
    if buf.len() as u64 >= remaining {
        return Decoded::TornTail;
    }
    if remaining > ZERO_TAIL_MAX {
        // No interrupted write leaves this many zeros: the file was damaged.
        return Decoded::Corrupt;
    }
    // Zeros so far: look at the rest before deciding.
    Decoded::NeedMore(usize::try_from(remaining).unwrap_or(usize::MAX))
}

/// The longest zero-filled tail treated as an interrupted write (a file extended before its
/// data landed); a longer run of zeros is corruption.
pub const ZERO_TAIL_MAX: u64 = 16 << 20;

fn parse_body(body: &[u8]) -> Option<Record<'_>> {
    let (mut record, payload_at) = parse_fields(body)?;
    let payload = body.get(payload_at..)?;
    if record.kind == Kind::Close && (!payload.is_empty() || record.message_lens.is_some()) {
        return None;
    }
    if let Some(lens) = &record.message_lens {
        let total: u64 = lens.iter().map(|l| u64::from(*l)).sum();
        if total != payload.len() as u64 {
            return None;
        }
    }
    record.payload = payload;
    Some(record)
}

/// The fixed part and the optional fields of a body, and where its payload starts. `body`
/// need only reach the end of the fields. The returned record's payload is empty.
fn parse_fields(body: &[u8]) -> Option<(Record<'_>, usize)> {
    let kind = match *body.get(KIND_AT)? {
        1 => Kind::Append,
        2 => Kind::Close,
        _ => return None,
    };
    let flags = *body.get(FLAGS_AT)?;
    if flags & !KNOWN_FLAGS != 0 || le_u16(body, BODY_RESERVED_AT)? != 0 {
        return None;
    }
    let mut at = BODY_FIXED_LEN;
    let producer = if flags & FLAG_PRODUCER != 0 {
        let id_len = usize::from(le_u16(body, at)?);
        let id = std::str::from_utf8(body.get(at + 2..at + 2 + id_len)?).ok()?;
        at += 2 + id_len;
        let epoch = le_u64(body, at)?;
        let seq = le_u64(body, at + 8)?;
        at += 16;
        Some((Cow::Borrowed(id), epoch, seq))
    } else {
        None
    };
    let stream_seq = if flags & FLAG_STREAM_SEQ != 0 {
        let len = usize::from(le_u16(body, at)?);
        let seq = body.get(at + 2..at + 2 + len)?;
        at += 2 + len;
        Some(seq)
    } else {
        None
    };
    let message_lens = if flags & FLAG_MESSAGES != 0 {
        let count = le_u32(body, at)? as usize;
        at += 4;
        let raw = body.get(at..at.checked_add(count.checked_mul(4)?)?)?;
        at += raw.len();
        Some(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<u32>>(),
        )
    } else {
        None
    };
    let closes = kind == Kind::Close || flags & FLAG_CLOSES != 0;
    let record = Record { kind, closes, producer, stream_seq, message_lens, payload: &[] };
    Some((record, at))
}

/// A record's header, read without its payload (and so without checking its CRC): for
/// reading part of a record too large to read whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head<'a> {
    /// The record, with an empty payload.
    pub record: Record<'a>,
    /// Where the payload starts, from the start of the frame.
    pub payload_at: usize,
    /// Payload length.
    pub payload_len: usize,
    /// The whole frame's length.
    pub frame_len: usize,
}

/// Decodes a record's header from the start of `buf` (which must reach past its fields):
/// `None` if it is not a plausible record header, or `buf` is too short to tell.
#[must_use]
pub fn decode_head(buf: &[u8], remaining: u64) -> Option<Head<'_>> {
    let body_len = le_u32(buf, LEN_AT)?;
    let frame_len = FRAME_PREFIX_LEN as u64 + u64::from(body_len);
    if (body_len as usize) < BODY_FIXED_LEN || body_len > MAX_BODY_LEN || frame_len > remaining {
        return None;
    }
    let body = buf.get(FRAME_PREFIX_LEN..)?;
    let body = &body[..body.len().min(body_len as usize)];
    let (record, fields_end) = parse_fields(body)?;
    let payload_len = (body_len as usize).checked_sub(fields_end)?;
    if let Some(lens) = &record.message_lens {
        let total: u64 = lens.iter().map(|l| u64::from(*l)).sum();
        if total != payload_len as u64 {
            return None;
        }
    }
    Some(Head {
        record,
        payload_at: FRAME_PREFIX_LEN + fields_end,
        payload_len,
        frame_len: usize::try_from(frame_len).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(payload: &[u8]) -> Record<'_> {
        Record {
            kind: Kind::Append,
            closes: false,
            producer: Some((Cow::Borrowed("writer-1"), 3, 9)),
            stream_seq: Some(b"0007"),
            message_lens: None,
            payload,
        }
    }

    #[test]
    fn header_roundtrip_and_refusals() {
        let h = FileHeader { incarnation: 0xdead_beef, base: 77 };
        let bytes = encode_header(h);
        assert_eq!(decode_header(&bytes), Ok(h));
        assert_eq!(decode_header(&bytes[..39]), Err(HeaderError::Short));
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderError::BadMagic));
        let mut bad = bytes;
        bad[20] ^= 1;
        assert_eq!(decode_header(&bad), Err(HeaderError::BadChecksum));
    }

    #[test]
    fn record_roundtrip() {
        let mut out = Vec::new();
        let rec = sample(b"hello");
        let n = encode(&rec, &mut out);
        assert_eq!(n, out.len());
        assert_eq!(decode(&out, out.len() as u64), Decoded::Record { record: rec, frame_len: n });
        let close = Record {
            kind: Kind::Close,
            closes: true,
            producer: None,
            stream_seq: None,
            message_lens: None,
            payload: b"",
        };
        out.clear();
        encode(&close, &mut out);
        assert_eq!(out.len(), FRAME_PREFIX_LEN + BODY_FIXED_LEN);
        assert!(
            matches!(decode(&out, out.len() as u64), Decoded::Record { record, .. } if record == close)
        );
    }

    #[test]
    fn tells_clean_end_torn_tail_and_corruption_apart() {
        let mut log = Vec::new();
        encode(&sample(b"first"), &mut log);
        let first_len = log.len();
        encode(&sample(b"second"), &mut log);
        let total = log.len() as u64;
        assert_eq!(decode(&log[first_len..first_len], 0), Decoded::CleanEnd);
        // Cut short anywhere inside the second record: torn.
        for cut in first_len + 1..log.len() {
            let rest = &log[first_len..cut];
            assert_eq!(decode(rest, rest.len() as u64), Decoded::TornTail, "cut at {cut}");
        }
        // Zero-filled tail: torn.
        let zeros = vec![0u8; 100];
        assert_eq!(decode(&zeros, 100), Decoded::TornTail);
        // A flipped payload byte in the first record, with the second intact after it.
        let mut flipped = log.clone();
        flipped[first_len - 2] ^= 0x40;
        assert_eq!(decode(&flipped, total), Decoded::Corrupt);
        // The same flip in the last record: it reaches the end, so it reads as torn.
        let mut last = log.clone();
        let end = last.len() - 1;
        last[end] ^= 0x40;
        assert_eq!(decode(&last[first_len..], total - first_len as u64), Decoded::TornTail);
    }

    #[test]
    fn asks_for_more_when_the_buffer_is_short() {
        let mut log = Vec::new();
        let n = encode(&sample(b"0123456789"), &mut log);
        assert_eq!(decode(&log[..3], n as u64), Decoded::NeedMore(FRAME_PREFIX_LEN));
        assert_eq!(decode(&log[..10], n as u64), Decoded::NeedMore(n));
    }

    #[test]
    fn json_message_lengths_must_add_up() {
        let payload = b"1,22,";
        let rec = Record {
            message_lens: Some(vec![2, 3]),
            producer: None,
            stream_seq: None,
            ..sample(payload)
        };
        let mut out = Vec::new();
        encode(&rec, &mut out);
        assert!(matches!(decode(&out, out.len() as u64), Decoded::Record { .. }));
        let wrong = Record { message_lens: Some(vec![2, 2]), ..rec };
        out.clear();
        encode(&wrong, &mut out);
        assert_eq!(decode(&out, out.len() as u64), Decoded::Corrupt);
    }

    proptest! {
        /// Arbitrary bytes: never a panic, and a record is only ever returned whole.
        #[test]
        fn decoder_is_total(bytes in prop::collection::vec(any::<u8>(), 0..200), extra in 0u64..1000) {
            let remaining = bytes.len() as u64 + extra;
            if let Decoded::Record { frame_len, .. } = decode(&bytes, remaining) {
                prop_assert!(frame_len <= bytes.len());
            }
        }

        #[test]
        fn any_record_roundtrips(
            payload in prop::collection::vec(any::<u8>(), 0..300),
            id in "[a-z]{1,20}", epoch: u64, seq: u64, closes: bool,
        ) {
            let rec = Record {
                kind: Kind::Append,
                closes,
                producer: Some((Cow::Owned(id), epoch, seq)),
                stream_seq: None,
                message_lens: None,
                payload: &payload,
            };
            let mut out = Vec::new();
            let n = encode(&rec, &mut out);
            prop_assert_eq!(frame_len(&rec), n as u64);
            prop_assert_eq!(decode(&out, n as u64), Decoded::Record { record: rec, frame_len: n });
        }
    }
}
