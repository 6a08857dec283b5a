//! The file log's side files besides the metadata ([`crate::meta`]): the checkpoint (a
//! snapshot of the writer state at a log position, rewritten as the log grows) and the cut
//! list. Both use the metadata's envelope ([`crate::meta::seal`]); every integer is
//! little-endian:
//!
//! ```text
//! checkpoint body                          cut list body
//!   incarnation     u64                      count  u32, then per entry:
//!   position        u64  (record boundary)   incarnation u64, file length u64
//!   last_access_ms  u64
//!   record_count    u64
//!   closed          u8
//!   closed_by       u8 present, then id, epoch, seq
//!   stream_seq      u8 present, then u16 len + bytes
//!   producer_count  u32, then per producer:
//!                   id (u16 len + bytes), epoch u64, last_seq u64
//! ```

use std::sync::Arc;

use bytes::Bytes;

use crate::clock::UnixMs;
use crate::meta::{Reader, Writer, open, seal};
use crate::producer::{ProducerClaim, ProducerState};
use crate::rules::WriterState;

/// Magic of checkpoint files.
pub const CKPT_MAGIC: [u8; 8] = *b"DSCKPT\r\n";
/// Magic of the cut list.
pub const CUT_MAGIC: [u8; 8] = *b"DSCUT\r\n\0";

/// The writer state at a log position, so that recovery only reads the log after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The stream's identity.
    pub incarnation: u64,
    /// Offset-space position the state is valid at: a record boundary.
    pub position: u64,
    /// Last read or write, for sliding TTLs.
    pub last_access_ms: UnixMs,
    /// Records before `position`.
    pub record_count: u64,
    /// Closure, producers and `Stream-Seq` at `position`.
    pub writer: WriterState,
}

/// The cut list (`CUT`): logs to shorten at the next start, because a commit that wrote
/// their ends failed and its requests were answered as failed. Each entry is a log's
/// incarnation and the file length it had before that commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// `(incarnation, file length)` pairs.
    pub entries: Vec<(u64, u64)>,
}

impl Cut {
    /// The file's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.u32(u32::try_from(self.entries.len()).unwrap_or(u32::MAX));
        for &(incarnation, len) in &self.entries {
            w.u64(incarnation);
            w.u64(len);
        }
        seal(CUT_MAGIC, &w.0)
    }

    /// Parses a cut list; `None` if it is damaged or not one.
    #[must_use]
    pub fn decode(file: &[u8]) -> Option<Cut> {
        let mut r = Reader { b: open(CUT_MAGIC, file)?, at: 0 };
        let n = r.u32()?;
        let entries = (0..n).map(|_| Some((r.u64()?, r.u64()?))).collect::<Option<Vec<_>>>()?;
        r.done().then_some(Cut { entries })
    }
}

impl Checkpoint {
    /// The file's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.u64(self.incarnation);
        w.u64(self.position);
        w.u64(self.last_access_ms);
        w.u64(self.record_count);
        let s = &self.writer;
        w.u8(u8::from(s.closed));
        match &s.closed_by {
            Some((id, claim)) => {
                w.u8(1);
                w.bytes(id.as_bytes());
                w.u64(claim.epoch);
                w.u64(claim.seq);
            }
            None => w.u8(0),
        }
        match &s.last_stream_seq {
            Some(seq) => {
                w.u8(1);
                w.bytes(seq);
            }
            None => w.u8(0),
        }
        let mut producers: Vec<_> = s.producers.iter().collect();
        producers.sort_by(|a, b| a.0.cmp(b.0));
        w.u32(u32::try_from(producers.len()).unwrap_or(u32::MAX));
        for (id, p) in producers {
            w.bytes(id.as_bytes());
            w.u64(p.epoch);
            w.u64(p.last_seq);
        }
        seal(CKPT_MAGIC, &w.0)
    }

    /// Parses a checkpoint file; `None` if it is damaged or not one.
    #[must_use]
    pub fn decode(file: &[u8]) -> Option<Checkpoint> {
        let mut r = Reader { b: open(CKPT_MAGIC, file)?, at: 0 };
        let incarnation = r.u64()?;
        let position = r.u64()?;
        let last_access_ms = r.u64()?;
        let record_count = r.u64()?;
        let mut writer = WriterState { closed: r.u8()? == 1, ..WriterState::default() };
        if r.u8()? == 1 {
            let id: Arc<str> = Arc::from(r.str()?);
            writer.closed_by = Some((id, ProducerClaim { epoch: r.u64()?, seq: r.u64()? }));
        }
        if r.u8()? == 1 {
            writer.last_stream_seq = Some(Bytes::copy_from_slice(r.bytes()?));
        }
        for _ in 0..r.u32()? {
            let id: Arc<str> = Arc::from(r.str()?);
            let state = ProducerState { epoch: r.u64()?, last_seq: r.u64()? };
            writer.producers.insert(id, state);
        }
        r.done().then_some(Checkpoint {
            incarnation,
            position,
            last_access_ms,
            record_count,
            writer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Meta;
    use crate::store::{ContentType, Expiry};

    #[test]
    fn side_files_refuse_each_other() {
        let meta = Meta {
            incarnation: 1,
            created_ms: 2,
            expiry: Expiry::Never,
            content_type: ContentType::new("text/plain"),
            name: "a".into(),
            fork: None,
        };
        assert_eq!(Checkpoint::decode(&meta.encode()), None, "wrong magic");
    }

    #[test]
    fn cut_list_roundtrips() {
        let cut = Cut { entries: vec![(7, 40), (u64::MAX, 1 << 40)] };
        let bytes = cut.encode();
        assert_eq!(Cut::decode(&bytes), Some(cut));
        assert_eq!(Cut::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Meta::decode(&bytes), None, "wrong magic");
    }

    #[test]
    fn checkpoint_roundtrips() {
        let mut writer = WriterState { closed: true, ..WriterState::default() };
        writer.closed_by = Some((Arc::from("p"), ProducerClaim { epoch: 1, seq: 2 }));
        writer.last_stream_seq = Some(Bytes::from_static(b"0009"));
        writer.producers.insert(Arc::from("p"), ProducerState { epoch: 1, last_seq: 2 });
        writer.producers.insert(Arc::from("q"), ProducerState { epoch: 0, last_seq: 7 });
        let ckpt = Checkpoint {
            incarnation: 9,
            position: 4096,
            last_access_ms: 5,
            record_count: 12,
            writer,
        };
        assert_eq!(Checkpoint::decode(&ckpt.encode()), Some(ckpt));
    }
}
