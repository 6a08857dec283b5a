//! A stream's metadata, as the persistent stores keep it (the file log in `{inc}.meta`
//! files, acid in its `meta` table), and the sealed envelope of the file log's side files
//! (metadata, checkpoint, cut list; see [`crate::log::meta`]).
//!
//! The envelope; every integer is little-endian:
//!
//! ```text
//!   0  8  magic     "DSMETA\r\n", "DSCKPT\r\n" or "DSCUT\r\n\0"
//!   8  2  version   1
//!  10  2  reserved  0
//!  12  4  body_len
//!  16  …  body
//!   …  4  crc32 of everything before it
//!
//! meta body
//!   incarnation   u64
//!   created_ms    u64
//!   expiry_kind   u8  0 none, 1 ttl, 2 at
//!   expiry_value  u64 seconds / Unix ms
//!   content_type  u16 len + bytes
//!   name          u16 len + bytes
//!   (forks only:)
//!   fork          u8  1
//!   source        u16 len + bytes
//!   at            u64 fork point
//!   requested     u8 0, or 1 + pos u64 + sub u32
//!   sub           u64
//!   at_tag        u32 (absent in metadata written before offsets carried tags)
//! ```

use std::sync::Arc;

use crate::clock::UnixMs;
use crate::offset::Offset;
use crate::store::{ContentType, Expiry, ForkLink, ForkOf};

/// Magic of metadata.
pub const META_MAGIC: [u8; 8] = *b"DSMETA\r\n";
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

/// Builds a side file's body.
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u16(u16::try_from(b.len()).unwrap_or(u16::MAX));
        self.0.extend_from_slice(&b[..b.len().min(usize::from(u16::MAX))]);
    }
}

/// Reads a side file's body.
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
    pub(crate) fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
    pub(crate) fn done(&self) -> bool {
        self.at == self.b.len()
    }
}

/// `body` in the envelope, under `magic`.
pub(crate) fn seal(magic: [u8; 8], body: &[u8]) -> Vec<u8> {
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

/// The body of an envelope under `magic`; `None` if damaged or another kind.
pub(crate) fn open(magic: [u8; 8], file: &[u8]) -> Option<&[u8]> {
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
    }
}
