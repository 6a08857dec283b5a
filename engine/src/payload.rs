//! [`Payload`]: bytes about to be appended, with the record boundaries inside them.

use bytes::Bytes;

/// Data ready to append: the stored bytes and where each record ends, relative to the start.
///
/// A byte-stream append is one record; a JSON append is one record per flattened message.
/// Reads of JSON streams never split a record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payload {
    bytes: Bytes,
    record_ends: Vec<u64>,
}

impl Payload {
    /// One opaque record (a byte-stream append). Empty bytes make an empty payload.
    #[must_use]
    pub fn opaque(bytes: Bytes) -> Payload {
        let record_ends = if bytes.is_empty() { Vec::new() } else { vec![bytes.len() as u64] };
        Payload { bytes, record_ends }
    }

    /// Records laid end to end; `record_ends` ascend and the last equals `bytes.len()`.
    #[must_use]
    pub fn from_records(bytes: Bytes, record_ends: Vec<u64>) -> Payload {
        debug_assert!(record_ends.windows(2).all(|w| w[0] < w[1]));
        debug_assert_eq!(record_ends.last().copied().unwrap_or(0), bytes.len() as u64);
        Payload { bytes, record_ends }
    }

    /// The stored bytes.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Where each record ends, relative to the start of the payload.
    #[must_use]
    pub fn record_ends(&self) -> &[u64] {
        &self.record_ends
    }

    /// Stored length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether there is nothing to append.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// This payload's records followed by `next`'s.
    #[must_use]
    pub fn then(self, next: Payload) -> Payload {
        if self.is_empty() {
            return next;
        }
        if next.is_empty() {
            return self;
        }
        let shift = self.len();
        let mut bytes = Vec::with_capacity(self.bytes.len() + next.bytes.len());
        bytes.extend_from_slice(&self.bytes);
        bytes.extend_from_slice(&next.bytes);
        let mut record_ends = self.record_ends;
        record_ends.extend(next.record_ends.iter().map(|e| e + shift));
        Payload { bytes: Bytes::from(bytes), record_ends }
    }

    /// Number of records (messages for JSON streams).
    #[must_use]
    pub fn record_count(&self) -> usize {
        self.record_ends.len()
    }

    /// The message lengths a JSON record of this payload carries, so that reads can cut
    /// between messages (both persistent stores store them); `None` for other content.
    pub(crate) fn message_lens(&self, json: bool) -> Option<Vec<u32>> {
        if !json || self.is_empty() {
            return None;
        }
        let mut prev = 0u64;
        Some(
            self.record_ends()
                .iter()
                .map(|end| {
                    let len = end - prev;
                    prev = *end;
                    u32::try_from(len).unwrap_or(u32::MAX)
                })
                .collect(),
        )
    }
}
