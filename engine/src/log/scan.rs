//! Reading a log forward from a record boundary: recovery (from the last checkpoint to the
//! end), `engine-inspect verify` and `dump` (from the start). The scan stops at the first
//! record that does not decode and says why: the policy of what to do with a torn tail (cut
//! it) or corruption (report it, keep the stream read-only) belongs to the caller.

use std::io;

use crate::fs::{FsFile, read_exact_at};
use crate::log::frame::{self, Decoded, Record};

/// How much of the file is read at a time.
const SCAN_WINDOW_BYTES: u64 = 1 << 20;

/// Where and why a scan stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// The last record ends exactly at the end of the file.
    Clean,
    /// From `at` to the end of the file (`bytes` of them) is a cut-short or zero-filled
    /// record: an interrupted write.
    TornTail {
        /// File position of the torn record.
        at: u64,
        /// Bytes from `at` to the end of the file.
        bytes: u64,
    },
    /// The record at `at` is damaged, and the file goes on after it.
    Corrupt {
        /// File position of the damaged record.
        at: u64,
    },
}

/// The result of a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scanned {
    /// File position after the last whole record.
    pub end: u64,
    /// Whole records read.
    pub records: u64,
    /// Why the scan stopped.
    pub stop: ScanEnd,
}

/// Reads records from file position `from` (a record boundary) to the end, calling
/// `on_record(file_position, record, frame_len)` for each whole one.
///
/// # Errors
/// Only I/O errors; damage is reported in [`Scanned::stop`].
pub fn scan(
    file: &dyn FsFile,
    from: u64,
    mut on_record: impl FnMut(u64, &Record<'_>, usize),
) -> io::Result<Scanned> {
    let file_len = file.len()?;
    let mut pos = from;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = from;
    let mut records = 0;
    loop {
        let offset = usize::try_from(pos - buf_start).unwrap_or(usize::MAX).min(buf.len());
        let remaining = file_len.saturating_sub(pos);
        match frame::decode(&buf[offset..], remaining) {
            Decoded::Record { record, frame_len } => {
                on_record(pos, &record, frame_len);
                pos += frame_len as u64;
                records += 1;
            }
            Decoded::CleanEnd => return Ok(Scanned { end: pos, records, stop: ScanEnd::Clean }),
            Decoded::TornTail => {
                // A cut-short record is torn only if nothing valid follows it: a damaged
                // length field in the middle of a log looks the same at first sight, and
                // cutting there would drop every record after it.
                let stop = if valid_record_after(file, pos + 1, file_len)? {
                    ScanEnd::Corrupt { at: pos }
                } else {
                    ScanEnd::TornTail { at: pos, bytes: remaining }
                };
                return Ok(Scanned { end: pos, records, stop });
            }
            Decoded::Corrupt => {
                return Ok(Scanned { end: pos, records, stop: ScanEnd::Corrupt { at: pos } });
            }
            Decoded::NeedMore(needed) => {
                let want = (needed as u64).max(SCAN_WINDOW_BYTES).min(remaining);
                buf.resize(usize::try_from(want).unwrap_or(usize::MAX), 0);
                read_exact_at(file, &mut buf, pos)?;
                buf_start = pos;
            }
        }
    }
}

/// Whether a whole valid record starts anywhere in `from..file_len`. Candidates are filtered
/// on the cheap header checks (kind, flags, reserved bytes, a length that fits) before a CRC
/// is computed, so random or zeroed bytes cost one pass.
fn valid_record_after(file: &dyn FsFile, from: u64, file_len: u64) -> io::Result<bool> {
    const HEAD: usize = frame::FRAME_PREFIX_LEN + frame::BODY_FIXED_LEN;
    let mut window = vec![0u8; SCAN_WINDOW_BYTES as usize];
    let mut start = from;
    while start + HEAD as u64 <= file_len {
        let len = (file_len - start).min(SCAN_WINDOW_BYTES) as usize;
        let buf = &mut window[..len];
        read_exact_at(file, buf, start)?;
        for i in 0..=len.saturating_sub(HEAD) {
            let at = start + i as u64;
            let h = &buf[i..i + HEAD];
            let body_len = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
            let plausible = matches!(h[8], 1 | 2)
                && h[9]
                    & !(frame::FLAG_PRODUCER
                        | frame::FLAG_STREAM_SEQ
                        | frame::FLAG_CLOSES
                        | frame::FLAG_MESSAGES)
                    == 0
                && h[10] == 0
                && h[11] == 0
                && body_len >= frame::BODY_FIXED_LEN as u64
                && at + frame::FRAME_PREFIX_LEN as u64 + body_len <= file_len;
            if !plausible {
                continue;
            }
            let frame_len = frame::FRAME_PREFIX_LEN as u64 + body_len;
            let mut candidate = vec![0u8; usize::try_from(frame_len).unwrap_or(usize::MAX)];
            read_exact_at(file, &mut candidate, at)?;
            if matches!(frame::decode(&candidate, frame_len), Decoded::Record { .. }) {
                return Ok(true);
            }
        }
        // Overlap so that a header straddling two windows is still seen.
        start += (len - HEAD + 1) as u64;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::path::Path;

    use super::*;
    use crate::fs::sim::SimFs;
    use crate::fs::{Fs, OpenMode};
    use crate::log::frame::{FILE_HEADER_LEN, FileHeader, Kind, encode, encode_header};

    fn record(payload: &[u8]) -> Record<'_> {
        Record {
            kind: Kind::Append,
            closes: false,
            producer: Some((Cow::Borrowed("p"), 0, 1)),
            stream_seq: None,
            message_lens: None,
            payload,
        }
    }

    fn file_with(bytes: &[u8]) -> std::sync::Arc<dyn FsFile> {
        let fs = SimFs::new();
        let f = fs.open(Path::new("/d/x.log"), OpenMode::CreateNew).unwrap();
        f.write_all_at(bytes, 0).unwrap();
        f
    }

    fn log_of(payloads: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
        let mut out = encode_header(FileHeader { incarnation: 1, base: 0 }).to_vec();
        let mut ends = Vec::new();
        for p in payloads {
            encode(&record(p), &mut out);
            ends.push(out.len() as u64);
        }
        (out, ends)
    }

    #[test]
    fn scans_to_a_clean_end() {
        let big = vec![7u8; 3 << 20];
        let (bytes, ends) = log_of(&[b"a", &big, b"c"]);
        let mut seen = Vec::new();
        let s = scan(file_with(&bytes).as_ref(), FILE_HEADER_LEN as u64, |at, r, n| {
            seen.push((at, r.payload.len(), n));
        })
        .unwrap();
        assert_eq!(s, Scanned { end: bytes.len() as u64, records: 3, stop: ScanEnd::Clean });
        assert_eq!(seen.iter().map(|(_, len, _)| *len).collect::<Vec<_>>(), vec![1, 3 << 20, 1]);
        assert_eq!(seen[1].0, ends[0]);
    }

    /// Appending garbage and reopening ten times gives the same prefix every time.
    #[test]
    fn torn_and_corrupt_tails_stop_the_scan_at_the_last_good_record() {
        let (mut bytes, ends) = log_of(&[b"first", b"second"]);
        let good_end = bytes.len() as u64;
        bytes.extend_from_slice(&bytes.clone()[FILE_HEADER_LEN..FILE_HEADER_LEN + 7]);
        for _ in 0..10 {
            let s = scan(file_with(&bytes).as_ref(), FILE_HEADER_LEN as u64, |_, _, _| {}).unwrap();
            assert_eq!(s.end, good_end);
            assert_eq!(s.stop, ScanEnd::TornTail { at: good_end, bytes: 7 });
        }
        // A damaged length in the middle, with records after it: corruption, not a tail.
        let mut bad_len = bytes[..good_end as usize].to_vec();
        bad_len[FILE_HEADER_LEN + 3] = 0x7f;
        let s = scan(file_with(&bad_len).as_ref(), FILE_HEADER_LEN as u64, |_, _, _| {}).unwrap();
        assert_eq!(s.stop, ScanEnd::Corrupt { at: FILE_HEADER_LEN as u64 });
        let mut corrupt = bytes[..good_end as usize].to_vec();
        corrupt[ends[0] as usize - 1] ^= 1;
        let s = scan(file_with(&corrupt).as_ref(), FILE_HEADER_LEN as u64, |_, _, _| {}).unwrap();
        assert_eq!(s.stop, ScanEnd::Corrupt { at: FILE_HEADER_LEN as u64 });
        assert_eq!(s.records, 0);
    }
}
