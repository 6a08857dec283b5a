//! Every redb table of an acid shard, and the byte layout of its values. Integers inside
//! values are little-endian; redb encodes keys itself (tuples of `u64` and `&str`).
//!
//! ```text
//! names      &str (stream name)      -> u64 stream id (per shard, never reused)
//! meta       u64 stream id           -> metadata, written once at create: the `Meta`
//!                                       envelope of the file log (engine/src/log/meta.rs)
//! tails      u64 stream id           -> tail state, rewritten by every commit that touches
//!                                       the stream (small: no producers, no data)
//! producers  (u64 id, &str producer) -> (u64 epoch, u64 last accepted seq)
//! data       (u64 id, u64 position)  -> one accepted append (or, for a large opaque one,
//!                                       one part of it), keyed by the offset-space
//!                                       position of its first byte
//! counters   &str                    -> u64 ("next_stream_id")
//! forks      u64 stream id           -> a fork's link (written once, at create):
//!                                       source name (u32 length + UTF-8), at u64,
//!                                       requested offset (0, or 1 + pos u64 + sub u32),
//!                                       requested sub-offset u64
//! soft_deleted u64 stream id         -> u64 Unix ms of the delete that found forks
//!
//! tail value
//!   0  8  end          offset-space position after the last record
//!   8  8  records      number of records
//!  16  1  closed       0 or 1
//!  17  1  closed_by    0, or 1 then: id (u32 length + UTF-8), epoch u64, seq u64
//!      1  stream_seq   0, or 1 then: u32 length + bytes
//!
//! data value
//!   0  1  flags        bit 0: JSON message lengths follow; bit 1: continues the append of
//!                      the row before it (large opaque appends, see ROW_PAYLOAD_MAX)
//!      4  count        (if bit 0) then count × u32: each message's stored length
//!         payload      the stored bytes (JSON: messages each followed by `,`)
//! ```
//!
//! A record's position advances the offset space by its payload length, so offsets are
//! stored-byte positions as in the memory store (`sub` addresses bytes or messages inside a
//! record, as in the file log). A fork (issue 5) can read its source's rows, on any shard,
//! as `(source id, position)`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadTransaction, ReadableTable, TableDefinition};

use crate::meta::Meta;
use crate::offset::Offset;
use crate::producer::{ProducerClaim, ProducerState};
use crate::rules::WriterState;
use crate::store::{ForkLink, ForkOf};

/// Stream name to stream id.
pub const NAMES: TableDefinition<&str, u64> = TableDefinition::new("names");
/// Stream id to metadata.
pub const META: TableDefinition<u64, &[u8]> = TableDefinition::new("meta");
/// Stream id to tail state.
pub const TAILS: TableDefinition<u64, &[u8]> = TableDefinition::new("tails");
/// `(stream id, producer id)` to `(epoch, last seq)`.
pub const PRODUCERS: TableDefinition<(u64, &str), (u64, u64)> = TableDefinition::new("producers");
/// `(stream id, position)` to a record.
pub const DATA: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("data");
/// Counters.
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// A fork's id to its link (written once, at create).
pub const FORKS: TableDefinition<u64, &[u8]> = TableDefinition::new("forks");
/// Ids of streams deleted while forks still read them, to the time of the delete.
pub const SOFT_DELETED: TableDefinition<u64, u64> = TableDefinition::new("soft_deleted");
/// The counter of stream ids.
pub const NEXT_STREAM_ID: &str = "next_stream_id";

/// A stream's tail state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailRow {
    /// Position after the last record.
    pub end: u64,
    /// Records.
    pub records: u64,
    /// Closed.
    pub closed: bool,
    /// The producer request that closed it.
    pub closed_by: Option<(Arc<str>, ProducerClaim)>,
    /// Last `Stream-Seq`.
    pub stream_seq: Option<Bytes>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Header values: far below 4 GiB.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

impl TailRow {
    /// The value bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.extend_from_slice(&self.end.to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        out.push(u8::from(self.closed));
        match &self.closed_by {
            Some((id, claim)) => {
                out.push(1);
                put_bytes(&mut out, id.as_bytes());
                out.extend_from_slice(&claim.epoch.to_le_bytes());
                out.extend_from_slice(&claim.seq.to_le_bytes());
            }
            None => out.push(0),
        }
        match &self.stream_seq {
            Some(seq) => {
                out.push(1);
                put_bytes(&mut out, seq);
            }
            None => out.push(0),
        }
        out
    }

    /// Parses a tail value.
    #[must_use]
    pub fn decode(b: &[u8]) -> Option<TailRow> {
        let mut r = Reader(b);
        let end = r.u64()?;
        let records = r.u64()?;
        let closed = r.u8()? == 1;
        let closed_by = if r.u8()? == 1 {
            let id: Arc<str> = Arc::from(std::str::from_utf8(r.bytes()?).ok()?);
            Some((id, ProducerClaim { epoch: r.u64()?, seq: r.u64()? }))
        } else {
            None
        };
        let stream_seq = if r.u8()? == 1 { Some(Bytes::copy_from_slice(r.bytes()?)) } else { None };
        r.0.is_empty().then_some(TailRow { end, records, closed, closed_by, stream_seq })
    }

    /// The writer state it describes, with `producers` from the producers table.
    #[must_use]
    pub fn writer(
        &self,
        producers: std::collections::HashMap<Arc<str>, crate::producer::ProducerState>,
    ) -> WriterState {
        WriterState {
            closed: self.closed,
            closed_by: self.closed_by.clone(),
            producers,
            last_stream_seq: self.stream_seq.clone(),
        }
    }
}

/// A stream as its rows describe it (everything but its data).
#[derive(Clone, Debug)]
pub struct StoredStream {
    /// Its name.
    pub name: String,
    /// Its id in the shard.
    pub id: u64,
    /// Its metadata row.
    pub meta: Meta,
    /// Its tail row.
    pub tail: TailRow,
    /// Its producer rows.
    pub producers: HashMap<Arc<str>, ProducerState>,
    /// For a fork: its link row.
    pub fork: Option<ForkOf>,
    /// Deleted while forks still read it.
    pub soft_deleted: bool,
}

/// A fork row's value.
#[must_use]
pub fn encode_fork(fork: &ForkOf) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + fork.link.source.len());
    put_bytes(&mut out, fork.link.source.as_bytes());
    out.extend_from_slice(&fork.link.at.to_le_bytes());
    match fork.requested_offset {
        Some(o) => {
            out.push(1);
            out.extend_from_slice(&o.pos().to_le_bytes());
            out.extend_from_slice(&o.sub().to_le_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&fork.requested_sub.to_le_bytes());
    out.extend_from_slice(&fork.link.at_tag.to_le_bytes());
    out
}

/// Parses a fork row's value.
#[must_use]
pub fn decode_fork(b: &[u8]) -> Option<ForkOf> {
    let mut r = Reader(b);
    let source: Arc<str> = Arc::from(std::str::from_utf8(r.bytes()?).ok()?);
    let at = r.u64()?;
    let requested_offset = match r.u8()? {
        0 => None,
        1 => Some(Offset::with_sub(r.u64()?, r.u32()?)),
        _ => return None,
    };
    let requested_sub = r.u64()?;
    // Written since offsets carry tags; older rows have none (0: not checked).
    let at_tag = if r.0.is_empty() { 0 } else { r.u32()? };
    r.0.is_empty().then_some(ForkOf {
        link: ForkLink { source, at, at_tag },
        requested_offset,
        requested_sub,
    })
}

/// Every stream of a shard, in name order, and the shard's next stream id.
///
/// # Errors
/// redb errors, or a stream whose metadata or tail row is missing or damaged.
pub fn read_streams(txn: &ReadTransaction) -> Result<(Vec<StoredStream>, u64), String> {
    let redb = |e: redb::Error| e.to_string();
    let names = txn.open_table(NAMES).map_err(|e| redb(e.into()))?;
    let metas = txn.open_table(META).map_err(|e| redb(e.into()))?;
    let tails = txn.open_table(TAILS).map_err(|e| redb(e.into()))?;
    let producers = txn.open_table(PRODUCERS).map_err(|e| redb(e.into()))?;
    let counters = txn.open_table(COUNTERS).map_err(|e| redb(e.into()))?;
    // Shards written before forks have no fork tables (the server adds them at open;
    // engine-inspect reads such shards as they are).
    let forks = optional(txn.open_table(FORKS)).map_err(redb)?;
    let soft_deleted = optional(txn.open_table(SOFT_DELETED)).map_err(redb)?;
    let next_id =
        counters.get(NEXT_STREAM_ID).map_err(|e| redb(e.into()))?.map_or(1, |v| v.value());
    let mut out = Vec::new();
    for row in names.iter().map_err(|e| redb(e.into()))? {
        let (name, id) = row.map_err(|e| redb(e.into()))?;
        let (name, id) = (name.value().to_owned(), id.value());
        let meta = metas
            .get(id)
            .map_err(|e| redb(e.into()))?
            .and_then(|v| Meta::decode(v.value()))
            .ok_or_else(|| format!("stream {name}: missing or damaged metadata row"))?;
        let tail = tails
            .get(id)
            .map_err(|e| redb(e.into()))?
            .and_then(|v| TailRow::decode(v.value()))
            .ok_or_else(|| format!("stream {name}: missing or damaged tail row"))?;
        let mut states = HashMap::new();
        for row in producers.range((id, "")..(id + 1, "")).map_err(|e| redb(e.into()))? {
            let (key, value) = row.map_err(|e| redb(e.into()))?;
            let (epoch, last_seq) = value.value();
            states.insert(Arc::from(key.value().1), ProducerState { epoch, last_seq });
        }
        let fork = match &forks {
            Some(forks) => match forks.get(id).map_err(|e| redb(e.into()))? {
                Some(v) => Some(
                    decode_fork(v.value())
                        .ok_or_else(|| format!("stream {name}: damaged fork row"))?,
                ),
                None => None,
            },
            None => None,
        };
        let deleted = match &soft_deleted {
            Some(t) => t.get(id).map_err(|e| redb(e.into()))?.is_some(),
            None => false,
        };
        out.push(StoredStream {
            name,
            id,
            meta,
            tail,
            producers: states,
            fork,
            soft_deleted: deleted,
        });
    }
    Ok((out, next_id))
}

/// A table that may not exist yet: `None` then.
fn optional<T>(opened: Result<T, redb::TableError>) -> Result<Option<T>, redb::Error> {
    match opened {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

const FLAG_MESSAGES: u8 = 1;
const FLAG_CONTINUES: u8 = 2;

/// Most payload bytes in one data row. An append of opaque bytes larger than this is stored
/// as several rows, the first an ordinary row and the others marked as continuing it, so
/// that each row fits one 64 KiB run of pages (redb rounds a value's pages up to a power of
/// two: a 1 MiB append in one row would take 2 MiB) and a read of part of a large append
/// reads only the rows it needs. JSON appends stay one row (reads cut them between messages).
pub const ROW_PAYLOAD_MAX: usize = 64 * 1024 - 256;

/// A data value: optional JSON message lengths, then the payload.
#[must_use]
pub fn encode_record(lens: Option<&[u32]>, payload: &[u8]) -> Vec<u8> {
    encode_row(lens, false, payload)
}

fn encode_row(lens: Option<&[u32]>, continues: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len() + lens.map_or(0, |l| 4 + 4 * l.len()));
    match lens {
        Some(lens) => {
            out.push(FLAG_MESSAGES);
            out.extend_from_slice(&u32::try_from(lens.len()).unwrap_or(u32::MAX).to_le_bytes());
            for len in lens {
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        None => out.push(if continues { FLAG_CONTINUES } else { 0 }),
    }
    out.extend_from_slice(payload);
    out
}

/// The data rows of one append: `(bytes into the append, value)` each, in order.
#[must_use]
pub fn encode_rows(lens: Option<&[u32]>, payload: &[u8]) -> Vec<(u64, Vec<u8>)> {
    if lens.is_some() || payload.len() <= ROW_PAYLOAD_MAX {
        return vec![(0, encode_record(lens, payload))];
    }
    payload
        .chunks(ROW_PAYLOAD_MAX)
        .enumerate()
        .map(|(i, part)| ((i * ROW_PAYLOAD_MAX) as u64, encode_row(None, i > 0, part)))
        .collect()
}

/// A decoded data value's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowHead {
    /// JSON message lengths (JSON rows).
    pub lens: Option<Vec<u32>>,
    /// The row continues the append of the row before it.
    pub continues: bool,
    /// Where the payload starts in the value.
    pub payload_at: usize,
}

/// Parses a data value's header; `None` if it is malformed (unknown flags, lengths that do
/// not add up to the payload, a JSON row marked as continuing another).
#[must_use]
pub fn decode_record(b: &[u8]) -> Option<RowHead> {
    let mut r = Reader(b);
    let flags = r.u8()?;
    if flags & !(FLAG_MESSAGES | FLAG_CONTINUES) != 0 || flags == FLAG_MESSAGES | FLAG_CONTINUES {
        return None;
    }
    let lens = if flags & FLAG_MESSAGES != 0 {
        let count = r.u32()? as usize;
        let raw = r.take(count.checked_mul(4)?)?;
        Some(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<u32>>(),
        )
    } else {
        None
    };
    let payload_at = b.len() - r.0.len();
    if let Some(lens) = &lens {
        let total: u64 = lens.iter().map(|l| u64::from(*l)).sum();
        if total != r.0.len() as u64 {
            return None;
        }
    }
    Some(RowHead { lens, continues: flags & FLAG_CONTINUES != 0, payload_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_rows_roundtrip() {
        let rows = [
            TailRow::default(),
            TailRow {
                end: 99,
                records: 3,
                closed: true,
                closed_by: Some((Arc::from("p"), ProducerClaim { epoch: 1, seq: 2 })),
                stream_seq: Some(Bytes::from_static(b"0009")),
            },
        ];
        for row in rows {
            assert_eq!(TailRow::decode(&row.encode()), Some(row));
        }
        assert_eq!(TailRow::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn fork_rows_roundtrip_with_and_without_a_tag() {
        let fork = ForkOf {
            link: ForkLink { source: Arc::from("a/b"), at: 77, at_tag: 0x1234_5678 },
            requested_offset: Some(Offset::at(77)),
            requested_sub: 2,
        };
        let row = encode_fork(&fork);
        assert_eq!(decode_fork(&row), Some(fork));
        // Rows written before offsets carried tags end without one.
        let legacy = decode_fork(&row[..row.len() - 4]).unwrap();
        assert_eq!(legacy.link.at_tag, 0);
        assert_eq!(decode_fork(&row[..row.len() - 2]), None);
    }

    #[test]
    fn records_roundtrip() {
        let v = encode_record(Some(&[2, 3]), b"1,22,");
        let head = RowHead { lens: Some(vec![2, 3]), continues: false, payload_at: 13 };
        assert_eq!(decode_record(&v), Some(head));
        let v = encode_record(None, b"raw");
        assert_eq!(
            decode_record(&v),
            Some(RowHead { lens: None, continues: false, payload_at: 1 })
        );
        assert_eq!(decode_record(&encode_record(Some(&[9]), b"1,")), None, "lengths must add up");
        assert_eq!(decode_record(&[3, 0, 0, 0, 0]), None, "a JSON row never continues");
        assert_eq!(decode_record(&[4]), None, "unknown flag");
    }

    #[test]
    fn large_opaque_appends_are_split_into_rows() {
        let payload: Vec<u8> = (0..2 * ROW_PAYLOAD_MAX + 10).map(|i| i as u8).collect();
        let rows = encode_rows(None, &payload);
        assert_eq!(rows.len(), 3);
        let mut joined = Vec::new();
        for (i, (at, value)) in rows.iter().enumerate() {
            let head = decode_record(value).unwrap();
            assert_eq!((head.continues, *at), (i > 0, joined.len() as u64));
            joined.extend_from_slice(&value[head.payload_at..]);
        }
        assert_eq!(joined, payload);
        assert_eq!(encode_rows(Some(&[3]), b"12,").len(), 1, "JSON appends stay whole");
        let big_json = vec![b'1'; ROW_PAYLOAD_MAX * 2];
        assert_eq!(encode_rows(Some(&[big_json.len() as u32]), &big_json).len(), 1);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// A damaged value never panics a decoder: it decodes to `None` or to something
            /// whose parts fit in it.
            #[test]
            fn decoders_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                let _ = TailRow::decode(&bytes);
                if let Some(head) = decode_record(&bytes) {
                    prop_assert!(head.payload_at <= bytes.len());
                }
            }

            #[test]
            fn tail_rows_roundtrip_any(
                end in any::<u64>(),
                records in any::<u64>(),
                closed in any::<bool>(),
                closer in prop::option::of(("[a-z]{0,8}", any::<u64>(), any::<u64>())),
                seq in prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            ) {
                let row = TailRow {
                    end,
                    records,
                    closed,
                    closed_by: closer.map(|(id, epoch, seq)| {
                        (Arc::from(id.as_str()), ProducerClaim { epoch, seq })
                    }),
                    stream_seq: seq.map(Bytes::from),
                };
                prop_assert_eq!(TailRow::decode(&row.encode()), Some(row));
            }
        }
    }
}
