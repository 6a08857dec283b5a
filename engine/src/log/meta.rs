//! Small side files of a stream: its metadata (written once, at create) and its checkpoint
//! (a snapshot of the writer state at a log position, rewritten as the log grows).
//!
//! Both share one envelope; every integer is little-endian:
//!
//! ```text
//!   0  8  magic     "DSMETA\r\n" or "DSCKPT\r\n"
//!   8  2  version   1
//!  10  2  reserved  0
//!  12  4  body_len
//!  16  …  body
//!   …  4  crc32 of everything before it
//!
//! meta body                              checkpoint body
//!   incarnation   u64                      incarnation     u64
//!   created_ms    u64                      position        u64  (offset space, record boundary)
//!   expiry_kind   u8  0 none, 1 ttl, 2 at  last_access_ms  u64
//!   expiry_value  u64 seconds / Unix ms    record_count    u64
//!   content_type  u16 len + bytes          closed          u8
//!   name          u16 len + bytes          closed_by       u8 present, then id, epoch, seq
//!   (forks only:)                          stream_seq      u8 present, then u16 len + bytes
//!   fork          u8  1                    producer_count  u32, then per producer:
//!   source        u16 len + bytes                          id (u16 len + bytes), epoch u64,
//!   at            u64 fork point                           last_seq u64
//!   requested     u8 0, or 1 + pos u64 + sub u32
//!   sub           u64
//! ```

use std::sync::Arc;

use bytes::Bytes;

use crate::clock::UnixMs;
use crate::offset::Offset;
use crate::producer::{ProducerClaim, ProducerState};
use crate::rules::WriterState;
use crate::store::{ContentType, Expiry, ForkLink, ForkOf};

/// Magic of metadata files.
pub const META_MAGIC: [u8; 8] = *b"DSMETA\r\n";
/// Magic of checkpoint files.
pub const CKPT_MAGIC: [u8; 8] = *b"DSCKPT\r\n";
/// Magic of the cut list.
pub const CUT_MAGIC: [u8; 8] = *b"DSCUT\r\n\0";
/// Version of the side files.
pub const SIDE_VERSION: u16 = 1;
const ENVELOPE_HEAD_LEN: usize = 16;

/// A stream's metadata, as written at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The stream's identity; also its file names.
    pub incarnation: u64,
    /// Creation time.
    pub created_ms: UnixMs,
    /// TTL or absolute expiry.
    pub expiry: Expiry,
    /// Content type as given at creation.
    pub content_type: ContentType,
    /// The stream's name (the URL path after `/v1/stream/`).
    pub name: String,
    /// For a fork (file log only; acid keeps it in a table of its own): its link.
    pub fork: Option<ForkOf>,
}

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

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
        self.0.extend_from_slice(&b[..b.len().min(usize::from(u16::MAX))]);
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
    fn done(&self) -> bool {
        self.at == self.b.len()
    }
}

fn seal(magic: [u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_HEAD_LEN + body.len() + 4);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&SIDE_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn open(magic: [u8; 8], file: &[u8]) -> Option<&[u8]> {
    let mut r = Reader { b: file, at: 0 };
    if r.take(8)? != magic || r.u16()? != SIDE_VERSION || r.u16()? != 0 {
        return None;
    }
    let len = r.u32()? as usize;
    let body = r.take(len)?;
    let crc_at = r.at;
    let crc = r.u32()?;
    if !r.done() || crc != crc32fast::hash(&file[..crc_at]) {
        return None;
    }
    Some(body)
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

impl Meta {
    /// The file's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        w.u64(self.incarnation);
        w.u64(self.created_ms);
        let (kind, value) = match self.expiry {
            Expiry::Never => (0, 0),
            Expiry::IdleTtl { secs } => (1, secs),
            Expiry::At { unix_ms } => (2, unix_ms),
        };
        w.u8(kind);
        w.u64(value);
        w.bytes(self.content_type.as_str().as_bytes());
        w.bytes(self.name.as_bytes());
        if let Some(fork) = &self.fork {
            w.u8(1);
            w.bytes(fork.link.source.as_bytes());
            w.u64(fork.link.at);
            match fork.requested_offset {
                Some(o) => {
                    w.u8(1);
                    w.u64(o.pos());
                    w.u32(o.sub());
                }
                None => w.u8(0),
            }
            w.u64(fork.requested_sub);
            w.u32(fork.link.at_tag);
        }
        seal(META_MAGIC, &w.0)
    }

    /// Parses a metadata file; `None` if it is damaged or not one.
    #[must_use]
    pub fn decode(file: &[u8]) -> Option<Meta> {
        let mut r = Reader { b: open(META_MAGIC, file)?, at: 0 };
        let incarnation = r.u64()?;
        let created_ms = r.u64()?;
        let expiry = match (r.u8()?, r.u64()?) {
            (0, _) => Expiry::Never,
            (1, secs) => Expiry::IdleTtl { secs },
            (2, unix_ms) => Expiry::At { unix_ms },
            _ => return None,
        };
        let content_type = ContentType::new(r.str()?);
        let name = r.str()?.to_owned();
        // The fork section is optional: metadata of plain streams (and all written before
        // forks) ends with the name.
        let fork = if r.done() {
            None
        } else {
            if r.u8()? != 1 {
                return None;
            }
            let source: Arc<str> = Arc::from(r.str()?);
            let at = r.u64()?;
            let requested_offset = match r.u8()? {
                0 => None,
                1 => Some(Offset::with_sub(r.u64()?, r.u32()?)),
                _ => return None,
            };
            let requested_sub = r.u64()?;
            // Written since offsets carry tags; older forks have none (0: not checked).
            let at_tag = if r.done() { 0 } else { r.u32()? };
            let link = ForkLink { source, at, at_tag };
            Some(ForkOf { link, requested_offset, requested_sub })
        };
        r.done().then_some(Meta { incarnation, created_ms, expiry, content_type, name, fork })
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

    #[test]
    fn meta_roundtrips_and_rejects_damage() {
        let meta = Meta {
            incarnation: 42,
            created_ms: 1_700_000_000_000,
            expiry: Expiry::IdleTtl { secs: 60 },
            content_type: ContentType::new("application/json; charset=utf-8"),
            name: "chats/42/tokens".into(),
            fork: None,
        };
        let bytes = meta.encode();
        assert_eq!(Meta::decode(&bytes), Some(meta.clone()));
        let fork = Meta {
            fork: Some(ForkOf {
                link: ForkLink { source: Arc::from("chats/41"), at: 77, at_tag: 0xdead_beef },
                requested_offset: Some(Offset::at(70)),
                requested_sub: 7,
            }),
            ..meta
        };
        assert_eq!(Meta::decode(&fork.encode()), Some(fork.clone()));
        // Metadata of a fork written before offsets carried tags ends without one.
        let full = fork.encode();
        let body = open(META_MAGIC, &full).unwrap();
        let legacy = Meta::decode(&seal(META_MAGIC, &body[..body.len() - 4])).unwrap();
        assert_eq!(legacy.fork.unwrap().link.at_tag, 0);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert_eq!(Meta::decode(&bad), None, "flip at {i}");
        }
        assert_eq!(Meta::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Checkpoint::decode(&bytes), None, "wrong magic");
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
