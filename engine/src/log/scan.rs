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
                let stop = ScanEnd::TornTail { at: pos, bytes: remaining };
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
        let mut corrupt = bytes[..good_end as usize].to_vec();
        corrupt[ends[0] as usize - 1] ^= 1;
        let s = scan(file_with(&corrupt).as_ref(), FILE_HEADER_LEN as u64, |_, _, _| {}).unwrap();
        assert_eq!(s.stop, ScanEnd::Corrupt { at: FILE_HEADER_LEN as u64 });
        assert_eq!(s.records, 0);
    }
}
