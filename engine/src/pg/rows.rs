//! How the `postgres` mode lays a stream's bytes out in `ds_data` rows, and reads them back.
//!
//! A row holds the bytes of `pos..pos + len(body)` and, in `ends`, where records end inside
//! it (little-endian `u32`s relative to `pos`; NULL when exactly one record ends at the
//! row's end, the common case of one small append). Rows are at most [`ROW_BYTES`]: a large
//! byte-stream append is cut into several rows (the record then ends only in the last), a
//! large JSON append into rows of whole messages. A single JSON message larger than a row
//! keeps a row of its own, so that every JSON row starts on a message boundary.

use bytes::Bytes;

use crate::memory::MemLog;
use crate::payload::Payload;

/// The largest row, in bytes (but for a single larger JSON message). Below glibc's
/// threshold for serving an allocation with its own `mmap` (128 KiB): PostgreSQL allocates
/// each row it detoasts and sends, the client each row message it receives, and fresh
/// mappings cost a page fault per 4 KiB. 256 KiB rows read 64 MiB at 272 MB/s with 1.65 ms
/// of ds-server CPU per MiB, 64 KiB rows at 295 MB/s with 1.41 ms (benches/README.md).
/// Readers take rows of any size.
pub(crate) const ROW_BYTES: u64 = 64 * 1024;

/// One row to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewRow {
    /// Position of its first byte in the stream.
    pub(crate) pos: u64,
    /// Its bytes.
    pub(crate) body: Bytes,
    /// Its `ends` column.
    pub(crate) ends: Option<Vec<u8>>,
}

/// The rows of `payload` appended at `at`. `json` payloads are never cut inside a message.
pub(crate) fn rows_of(payload: &Payload, at: u64, json: bool) -> Vec<NewRow> {
    let bytes = payload.bytes();
    let mut rows = Vec::new();
    let mut row_start = 0u64;
    let mut ends: Vec<u64> = Vec::new();
    let mut flush = |from: u64, to: u64, ends: &mut Vec<u64>| {
        let len = to - from;
        let column = if ends.len() == 1 && ends[0] == to {
            None
        } else {
            Some(
                ends.iter()
                    .flat_map(|e| u32::try_from(e - from).unwrap_or(u32::MAX).to_le_bytes())
                    .collect(),
            )
        };
        ends.clear();
        rows.push(NewRow {
            pos: at + from,
            body: bytes.slice(to_usize(from)..to_usize(from + len)),
            ends: column,
        });
    };
    for &end in payload.record_ends() {
        if end - row_start > ROW_BYTES
            && let Some(&last) = ends.last()
        {
            flush(row_start, last, &mut ends);
            row_start = last;
        }
        while !json && end - row_start > ROW_BYTES {
            flush(row_start, row_start + ROW_BYTES, &mut ends);
            row_start += ROW_BYTES;
        }
        ends.push(end);
    }
    if let Some(&last) = ends.last() {
        flush(row_start, last, &mut ends);
    }
    rows
}

/// Where records end in a row of `len` bytes with `ends` column `column`, relative to its
/// start.
pub(crate) fn row_ends(len: usize, column: Option<&[u8]>) -> Vec<u64> {
    match column {
        None => vec![len as u64],
        Some(raw) => raw
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    }
}

/// A `bytea` column of a row as `Bytes`, without copying: the bytes keep the row's buffer
/// (the message as the client received it) alive. A catch-up read thus allocates each
/// row once, not twice.
pub(crate) fn column_bytes(row: tokio_postgres::Row, index: usize) -> Bytes {
    /// The column `1` of row `0`.
    struct Column(tokio_postgres::Row, usize);
    impl AsRef<[u8]> for Column {
        fn as_ref(&self) -> &[u8] {
            self.0.try_get::<_, &[u8]>(self.1).unwrap_or_default()
        }
    }
    Bytes::from_owner(Column(row, index))
}

/// Rows read back, in order and contiguous, as a log to cut chunks from.
pub(crate) fn log_of(rows: impl IntoIterator<Item = (u64, Bytes, Option<Vec<u8>>)>) -> MemLog {
    let mut log: Option<MemLog> = None;
    for (pos, body, ends) in rows {
        let log = log.get_or_insert_with(|| MemLog::starting_at(pos));
        let ends = row_ends(body.len(), ends.as_deref());
        log.push(body, ends);
    }
    log.unwrap_or_default()
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Split;

    fn joined(rows: &[NewRow]) -> Vec<u8> {
        rows.iter().flat_map(|r| r.body.to_vec()).collect()
    }

    #[test]
    fn a_small_append_is_one_row_without_an_ends_column() {
        let rows = rows_of(&Payload::opaque(Bytes::from_static(b"hello")), 7, false);
        assert_eq!(rows, vec![NewRow { pos: 7, body: Bytes::from_static(b"hello"), ends: None }]);
    }

    #[test]
    fn a_large_byte_append_is_cut_into_bounded_rows_ending_the_record_once() {
        let big = Bytes::from(vec![9u8; (ROW_BYTES * 2 + 10) as usize]);
        let rows = rows_of(&Payload::opaque(big.clone()), 100, false);
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.body.len() as u64 <= ROW_BYTES));
        assert_eq!(rows[0].pos, 100);
        assert_eq!(rows[1].pos, 100 + ROW_BYTES);
        assert_eq!(rows[0].ends, Some(Vec::new()));
        assert_eq!(rows[2].ends, None);
        assert_eq!(joined(&rows), big.to_vec());
        let log = log_of(rows.into_iter().map(|r| (r.pos, r.body, r.ends)));
        assert_eq!(
            (log.tail(), log.is_record_boundary(100 + ROW_BYTES)),
            (100 + big.len() as u64, false)
        );
        assert!(log.is_record_boundary(100 + big.len() as u64));
    }

    #[test]
    fn json_rows_hold_whole_messages() {
        let msg = vec![b'1'; (ROW_BYTES * 2 / 5) as usize];
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..6 {
            bytes.extend_from_slice(&msg);
            bytes.push(b',');
            ends.push(bytes.len() as u64);
        }
        let payload = Payload::from_records(Bytes::from(bytes.clone()), ends.clone());
        let rows = rows_of(&payload, 0, true);
        assert_eq!(rows.len(), 3, "two messages of 2/5 of a row per row");
        assert_eq!(joined(&rows), bytes);
        let log = log_of(rows.into_iter().map(|r| (r.pos, r.body, r.ends)));
        for e in &ends {
            assert!(log.is_record_boundary(*e));
        }
        assert!(!log.is_record_boundary(5));
        // A chunk of JSON never cuts a message, even when one is larger than the chunk.
        assert_eq!(log.chunk_end(0, 10, Split::Never, false), ends[0]);
    }

    #[test]
    fn one_json_message_larger_than_a_row_keeps_a_row_of_its_own() {
        let mut bytes = b"1,".to_vec();
        bytes.extend(std::iter::repeat_n(b'2', (ROW_BYTES + 5) as usize));
        bytes.push(b',');
        bytes.extend_from_slice(b"3,");
        let ends = vec![2, bytes.len() as u64 - 2, bytes.len() as u64];
        let rows = rows_of(&Payload::from_records(Bytes::from(bytes.clone()), ends), 0, true);
        assert_eq!(
            rows.iter().map(|r| r.body.len()).collect::<Vec<_>>(),
            vec![2, bytes.len() - 4, 2]
        );
        assert_eq!(joined(&rows), bytes);
    }
}
