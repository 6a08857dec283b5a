//! The journal of `file-durable`: one preallocated file that makes a commit round durable
//! with a single `fdatasync`, however many streams the round wrote.
//!
//! Without it a round over many streams syncs every log it wrote (one `syncfs`): each log
//! has a dirty page of its own, and the file system commits their metadata too. With it, the
//! round still writes each stream's records to its log (through the page cache, where readers
//! find them), and also appends one *entry* holding all of them to the journal, and syncs
//! only the journal. The journal's blocks are allocated and zero-filled ahead, so that its
//! `fdatasync` writes data blocks and no file-system metadata. Measured on this machine
//! (64 streams × 130 bytes per round): about 500 rounds/s with `syncfs`, 3,000-3,400 with the
//! journal.
//!
//! Logs become durable in themselves only when the journal is *reset*: when an entry no
//! longer fits, every log is synced (`syncfs`, or each log written since the last reset) and
//! the journal starts over under a new epoch. A restart replays the entries of the current
//! epoch into their logs (writing bytes that are usually there already), syncs those logs and
//! resets the journal, all before anything else reads a log.
//!
//! Layout (FORMAT.md, "Journal"; little-endian):
//!
//! ```text
//! header (32 bytes)
//!   0  8  magic        "DSJNL\r\n\x1a"
//!   8  2  version      1
//!  10  2  flags        0 (reserved)
//!  12  4  reserved     0
//!  16  8  epoch        changes at every reset and start
//!  24  4  crc32        of bytes 0..24
//!  28  4  reserved     0
//!
//! entry (from byte 32, one after another)
//!   0  4  len          bytes of the whole entry, this prefix included
//!   4  4  crc32        of bytes 8..len
//!   8  8  epoch        the header's epoch when written
//!  16  8  seq          0 for the epoch's first entry, then 1, 2, ...
//!  24  4  pieces       number of pieces
//!  28  4  reserved     0
//!  32     pieces, each: incarnation u64, log file position u64, len u32, reserved u32,
//!         then len bytes to write at that position of that stream's log
//! ```
//!
//! Replay takes entries in order while each is whole, checksummed, of the header's epoch,
//! next in sequence and with zero reserved fields: a torn entry (its round was never acknowledged), a stale one from an
//! earlier epoch, or the zero fill all end it.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::fs::{Fs, FsFile, OpenMode};
use crate::log::handles::log_name;

/// The journal's file name in the data directory.
pub const JOURNAL_NAME: &str = "JOURNAL";
/// Default size of the journal (`DS_STORAGE__JOURNAL_BYTES`).
pub const DEFAULT_JOURNAL_BYTES: u64 = 64 << 20;
/// Smallest journal this code runs with (smaller settings are raised to it).
pub const MIN_JOURNAL_BYTES: u64 = 4096;
/// The file starts this large (or at its full size, if smaller) and doubles as entries reach
/// its end, zero-filled each time, up to its full size.
const INITIAL_FILE_BYTES: u64 = 1 << 20;
/// A round with more bytes than this syncs its logs directly: journaling it would write it
/// twice, for a sync that costs no less.
pub const DIRECT_ROUND_BYTES: u64 = 1 << 20;

/// First bytes of the journal.
pub const MAGIC: [u8; 8] = *b"DSJNL\r\n\x1a";
const VERSION: u16 = 1;
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + MAGIC.len();
const FLAGS_AT: usize = VERSION_AT + 2;
const HEADER_RESERVED_AT: usize = FLAGS_AT + 2;
const HEADER_EPOCH_AT: usize = HEADER_RESERVED_AT + 4;
const HEADER_CRC_AT: usize = HEADER_EPOCH_AT + 8;
/// Length of the journal header.
pub const HEADER_LEN: usize = HEADER_CRC_AT + 4 + 4;
const _: () = assert!(HEADER_LEN == 32);

const LEN_AT: usize = 0;
const CRC_AT: usize = LEN_AT + 4;
const EPOCH_AT: usize = CRC_AT + 4;
const SEQ_AT: usize = EPOCH_AT + 8;
const PIECES_AT: usize = SEQ_AT + 8;
/// Bytes of an entry before its pieces.
pub const ENTRY_HEAD_LEN: usize = PIECES_AT + 4 + 4;
const _: () = assert!(ENTRY_HEAD_LEN == 32);
/// Bytes of a piece before its data.
pub const PIECE_HEAD_LEN: usize = 8 + 8 + 4 + 4;

/// Bytes written to one log by one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The stream's incarnation (its log is `{incarnation:016x}.log`).
    pub incarnation: u64,
    /// File position in the log.
    pub pos: u64,
    /// The bytes there.
    pub bytes: &'a [u8],
}

/// The header's bytes for `epoch`.
#[must_use]
pub fn encode_header(epoch: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[MAGIC_AT..VERSION_AT].copy_from_slice(&MAGIC);
    h[VERSION_AT..FLAGS_AT].copy_from_slice(&VERSION.to_le_bytes());
    h[HEADER_EPOCH_AT..HEADER_CRC_AT].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32fast::hash(&h[..HEADER_CRC_AT]);
    h[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The epoch of a header; `None` if the bytes are not a whole, valid header.
#[must_use]
pub fn decode_header(bytes: &[u8]) -> Option<u64> {
    let h = bytes.get(..HEADER_LEN)?;
    let crc = u32::from_le_bytes(h[HEADER_CRC_AT..HEADER_CRC_AT + 4].try_into().ok()?);
    if h[MAGIC_AT..VERSION_AT] != MAGIC
        || u16::from_le_bytes([h[VERSION_AT], h[VERSION_AT + 1]]) != VERSION
        || crc != crc32fast::hash(&h[..HEADER_CRC_AT])
    {
        return None;
    }
    Some(u64::from_le_bytes(h[HEADER_EPOCH_AT..HEADER_CRC_AT].try_into().ok()?))
}

/// Appends an entry to `out`.
pub fn encode_entry<'a>(
    epoch: u64,
    seq: u64,
    pieces: impl IntoIterator<Item = Piece<'a>>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.resize(start + ENTRY_HEAD_LEN, 0);
    let mut count: u32 = 0;
    for p in pieces {
        out.extend_from_slice(&p.incarnation.to_le_bytes());
        out.extend_from_slice(&p.pos.to_le_bytes());
        out.extend_from_slice(&u32::try_from(p.bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(p.bytes);
        count += 1;
    }
    let len = u32::try_from(out.len() - start).unwrap_or(u32::MAX);
    let e = &mut out[start..];
    e[LEN_AT..CRC_AT].copy_from_slice(&len.to_le_bytes());
    e[EPOCH_AT..SEQ_AT].copy_from_slice(&epoch.to_le_bytes());
    e[SEQ_AT..PIECES_AT].copy_from_slice(&seq.to_le_bytes());
    e[PIECES_AT..PIECES_AT + 4].copy_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&e[EPOCH_AT..]);
    e[CRC_AT..EPOCH_AT].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes an entry of pieces of these lengths takes.
#[must_use]
pub fn entry_len(piece_lens: impl IntoIterator<Item = usize>) -> u64 {
    piece_lens.into_iter().map(|n| (PIECE_HEAD_LEN + n) as u64).sum::<u64>() + ENTRY_HEAD_LEN as u64
}

/// Why a scan of the journal stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanStop {
    /// At zero fill or the end of the file: nothing was ever written after the last entry.
    Clean,
    /// At bytes that are not the next entry of the epoch: a torn write, or an older epoch's
    /// entries.
    NotNext,
}

/// The entries of the current epoch.
#[derive(Debug, Default)]
pub struct Scan<'a> {
    /// The header's epoch; `None` if the header is damaged (then there are no entries).
    pub epoch: Option<u64>,
    /// Every entry's pieces, in order.
    pub entries: Vec<Vec<Piece<'a>>>,
    /// End of the last entry.
    pub end: usize,
    /// Why the scan ended.
    pub stop: Option<ScanStop>,
}

/// Reads a journal's bytes: never panics, on any input.
#[must_use]
pub fn scan(file: &[u8]) -> Scan<'_> {
    let Some(epoch) = decode_header(file) else { return Scan::default() };
    let mut out = Scan { epoch: Some(epoch), end: HEADER_LEN, ..Scan::default() };
    let mut at = HEADER_LEN;
    let mut seq = 0u64;
    let stop = loop {
        let rest = &file[at..];
        if rest.iter().take(ENTRY_HEAD_LEN).all(|&b| b == 0) {
            break ScanStop::Clean;
        }
        let Some(head) = rest.get(..ENTRY_HEAD_LEN) else { break ScanStop::NotNext };
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at =
            |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let len = u32_at(head, LEN_AT) as usize;
        let Some(entry) = (len >= ENTRY_HEAD_LEN).then(|| file.get(at..at + len)).flatten() else {
            break ScanStop::NotNext;
        };
        if u32_at(entry, CRC_AT) != crc32fast::hash(&entry[EPOCH_AT..])
            || u64_at(entry, EPOCH_AT) != epoch
            || u64_at(entry, SEQ_AT) != seq
        {
            break ScanStop::NotNext;
        }
        let count = u32_at(entry, PIECES_AT);
        let mut pieces = Vec::new();
        let mut p = ENTRY_HEAD_LEN;
        // Reserved fields are written as zero: anything else was not written by this code.
        let mut whole = u32_at(entry, PIECES_AT + 4) == 0;
        for _ in 0..count {
            let Some(ph) = entry.get(p..p + PIECE_HEAD_LEN).filter(|ph| u32_at(ph, 20) == 0) else {
                whole = false;
                break;
            };
            let n = u32_at(ph, 16) as usize;
            let Some(bytes) = entry.get(p + PIECE_HEAD_LEN..p + PIECE_HEAD_LEN + n) else {
                whole = false;
                break;
            };
            pieces.push(Piece { incarnation: u64_at(ph, 0), pos: u64_at(ph, 8), bytes });
            p += PIECE_HEAD_LEN + n;
        }
        if !whole || p != len {
            // Checksummed but not well formed: not written by this code.
            break ScanStop::NotNext;
        }
        out.entries.push(pieces);
        at += len;
        seq += 1;
        out.end = at;
    };
    out.stop = Some(stop);
    out
}

/// What replaying a journal did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The epoch replayed (the next one must differ); `None` without a valid header.
    pub epoch: Option<u64>,
    /// Entries replayed.
    pub entries: u64,
    /// Bytes written back to logs.
    pub bytes: u64,
    /// Whether a journal file was there at all.
    pub present: bool,
}

/// The whole journal of `dir`; `None` if there is none.
fn read(fs: &dyn Fs, dir: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match fs.open(&dir.join(JOURNAL_NAME), OpenMode::Read) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "journal larger than memory"))?;
    let mut bytes = vec![0u8; len];
    crate::fs::read_exact_at(file.as_ref(), &mut bytes, 0)?;
    Ok(Some(bytes))
}

/// Writes every entry of the journal's current epoch back into its log and syncs those logs.
/// Logs that no longer exist (their stream was deleted) are skipped. Runs at start, before
/// anything reads a log; writing bytes that are already there changes nothing.
///
/// # Errors
/// An I/O error reading the journal or writing or syncing a log.
pub fn replay(fs: &dyn Fs, dir: &Path) -> io::Result<Replayed> {
    let Some(bytes) = read(fs, dir)? else { return Ok(Replayed::default()) };
    let found = scan(&bytes);
    let mut out = Replayed { epoch: found.epoch, present: true, ..Replayed::default() };
    if found.epoch.is_none() {
        tracing::warn!("the journal's header is damaged (a reset cut short): nothing to replay");
    }
    let mut logs: HashMap<u64, Option<Arc<dyn FsFile>>> = HashMap::new();
    for entry in &found.entries {
        for piece in entry {
            let log = match logs.get(&piece.incarnation) {
                Some(log) => log.clone(),
                None => {
                    let opened = match fs
                        .open(&dir.join(log_name(piece.incarnation)), OpenMode::ReadWrite)
                    {
                        Ok(f) => Some(f),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(e),
                    };
                    logs.insert(piece.incarnation, opened.clone());
                    opened
                }
            };
            if let Some(log) = log {
                log.write_all_at(piece.bytes, piece.pos)?;
                out.bytes += piece.bytes.len() as u64;
            }
        }
        out.entries += 1;
    }
    for log in logs.values().flatten() {
        log.sync_data()?;
    }
    if out.entries > 0 {
        tracing::info!(entries = out.entries, bytes = out.bytes, "replayed the journal");
    }
    Ok(out)
}

/// A piece's log position and bytes.
type OwnedPiece = (u64, Box<[u8]>);

/// A read-only view of a data directory as the next start will see it once the journal is
/// replayed: each log reads with the journal's pieces written over it. For
/// `engine-inspect`, which must not write (the server may be running).
pub struct Overlay<'a> {
    fs: &'a dyn Fs,
    /// Log file name to the pieces written over it, in journal order.
    pieces: HashMap<String, Arc<[OwnedPiece]>>,
    /// Entries of the journal's current epoch.
    pub entries: u64,
}

impl<'a> Overlay<'a> {
    /// Reads the journal of `dir`, if any.
    ///
    /// # Errors
    /// An I/O error reading the journal.
    pub fn new(fs: &'a dyn Fs, dir: &Path) -> io::Result<Overlay<'a>> {
        let mut out = Overlay { fs, pieces: HashMap::new(), entries: 0 };
        let Some(bytes) = read(fs, dir)? else { return Ok(out) };
        let found = scan(&bytes);
        let mut by_log: HashMap<String, Vec<OwnedPiece>> = HashMap::new();
        for piece in found.entries.iter().flatten() {
            by_log
                .entry(log_name(piece.incarnation))
                .or_default()
                .push((piece.pos, piece.bytes.into()));
        }
        out.entries = found.entries.len() as u64;
        out.pieces = by_log.into_iter().map(|(k, v)| (k, Arc::from(v))).collect();
        Ok(out)
    }
}

fn read_only() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "a journal overlay is read-only")
}

impl Fs for Overlay<'_> {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.fs.list(dir)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        if mode != OpenMode::Read {
            return Err(read_only());
        }
        let file = self.fs.open(path, mode)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        Ok(match self.pieces.get(name) {
            Some(pieces) => Arc::new(OverlayFile { file, pieces: pieces.clone() }),
            None => file,
        })
    }

    fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn remove(&self, _path: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_all_files(&self, _dir: &Path) -> io::Result<()> {
        Err(read_only())
    }
}

/// A log with journal pieces over it.
struct OverlayFile {
    file: Arc<dyn FsFile>,
    pieces: Arc<[OwnedPiece]>,
}

impl FsFile for OverlayFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let len = self.len()?;
        if pos >= len {
            return Ok(0);
        }
        let n = usize::try_from(len - pos).unwrap_or(usize::MAX).min(buf.len());
        let buf = &mut buf[..n];
        // The file's own bytes, then zeros past its end, then the pieces in journal order.
        let mut filled = 0;
        while filled < n {
            let got = self.file.read_at(&mut buf[filled..], pos + filled as u64)?;
            if got == 0 {
                break;
            }
            filled += got;
        }
        buf[filled..].fill(0);
        let end = pos + n as u64;
        for (at, bytes) in self.pieces.iter() {
            let (from, to) = ((*at).max(pos), (at + bytes.len() as u64).min(end));
            if from < to {
                let src = &bytes[(from - at) as usize..(to - at) as usize];
                buf[(from - pos) as usize..(to - pos) as usize].copy_from_slice(src);
            }
        }
        Ok(n)
    }

    fn write_all_at(&self, _buf: &[u8], _pos: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn len(&self) -> io::Result<u64> {
        let own = self.file.len()?;
        Ok(self.pieces.iter().map(|(at, b)| at + b.len() as u64).fold(own, u64::max))
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_data(&self) -> io::Result<()> {
        Err(read_only())
    }

    fn modified_ms(&self) -> io::Result<u64> {
        self.file.modified_ms()
    }
}

/// The open journal of a running store. Only the committer thread writes it.
pub struct Journal {
    file: Arc<dyn FsFile>,
    capacity: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

struct State {
    epoch: u64,
    seq: u64,
    /// Where the next entry goes.
    at: u64,
    /// Bytes allocated and zero-filled so far.
    file_len: u64,
    /// Logs written since the last reset (their incarnations): what a reset must sync when
    /// `syncfs` cannot be trusted.
    dirty: BTreeSet<u64>,
    buf: Vec<u8>,
}

impl Journal {
    /// Opens the journal for writing, creating it if needed, under an epoch after `replayed`
    /// (what [`replay`] found), and makes that durable: from here on the replayed entries are
    /// gone, so their logs must be synced first ([`replay`] does).
    ///
    /// # Errors
    /// An I/O error.
    pub fn start(
        fs: &dyn Fs,
        dir: &Path,
        capacity: u64,
        replayed: &Replayed,
    ) -> io::Result<Journal> {
        let capacity = capacity.max(MIN_JOURNAL_BYTES);
        let path = dir.join(JOURNAL_NAME);
        let (file, created) = match fs.open(&path, OpenMode::ReadWrite) {
            Ok(f) => (f, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (fs.open(&path, OpenMode::CreateNew)?, true)
            }
            Err(e) => return Err(e),
        };
        let mut file_len = file.len()?;
        let epoch = match replayed.epoch {
            Some(e) => e.wrapping_add(1),
            None => {
                // No epoch to follow (new, or its header torn): old entries could carry any
                // epoch, so none may remain.
                file.set_len(0)?;
                file_len = 0;
                1
            }
        };
        if file_len > capacity {
            file.set_len(capacity)?;
            file_len = capacity;
        }
        let want = INITIAL_FILE_BYTES.min(capacity).max(HEADER_LEN as u64);
        if file_len < want {
            zero_fill(file.as_ref(), file_len, want)?;
            file_len = want;
        }
        file.write_all_at(&encode_header(epoch), 0)?;
        file.sync_data()?;
        if created {
            fs.sync_dir(dir)?;
        }
        Ok(Journal {
            file,
            capacity,
            state: Mutex::new(State {
                epoch,
                seq: 0,
                at: HEADER_LEN as u64,
                file_len,
                dirty: BTreeSet::new(),
                buf: Vec::new(),
            }),
        })
    }

    /// Whether a round of `bytes` (its entry length) goes through the journal.
    #[must_use]
    pub fn takes(&self, entry_bytes: u64) -> bool {
        entry_bytes <= DIRECT_ROUND_BYTES.min((self.capacity - HEADER_LEN as u64) / 2)
    }

    /// Makes a round's pieces (already written to their logs) durable: one entry, one
    /// `fdatasync`. When the entry does not fit, first `sync_logs` makes every log written
    /// since the last reset durable (given their incarnations), and the journal starts over.
    ///
    /// # Errors
    /// An I/O error; the journal is then unusable (the store poisons itself).
    pub fn commit<'a>(
        &self,
        pieces: &[Piece<'a>],
        sync_logs: impl FnOnce(&BTreeSet<u64>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let st = &mut *st;
        let len = entry_len(pieces.iter().map(|p| p.bytes.len()));
        if st.at + len > self.capacity {
            self.reset_locked(st, sync_logs)?;
        }
        if st.at + len > st.file_len {
            let grown = (st.file_len * 2).max(st.at + len).min(self.capacity);
            zero_fill(self.file.as_ref(), st.file_len, grown)?;
            st.file_len = grown;
        }
        st.buf.clear();
        encode_entry(st.epoch, st.seq, pieces.iter().cloned(), &mut st.buf);
        self.file.write_all_at(&st.buf, st.at)?;
        self.file.sync_data()?;
        st.at += len;
        st.seq += 1;
        st.dirty.extend(pieces.iter().map(|p| p.incarnation));
        if st.buf.capacity() > 4 * DIRECT_ROUND_BYTES as usize {
            st.buf = Vec::new();
        }
        Ok(())
    }
}

impl Journal {
    /// Makes every log written since the last reset durable (`sync_logs`, given their
    /// incarnations) and starts the journal over, empty: what a clean stop does, so that the
    /// next start replays nothing.
    ///
    /// # Errors
    /// An I/O error.
    pub fn reset(
        &self,
        sync_logs: impl FnOnce(&BTreeSet<u64>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.reset_locked(&mut st, sync_logs)
    }

    fn reset_locked(
        &self,
        st: &mut State,
        sync_logs: impl FnOnce(&BTreeSet<u64>) -> io::Result<()>,
    ) -> io::Result<()> {
        sync_logs(&st.dirty)?;
        st.dirty.clear();
        st.epoch = st.epoch.wrapping_add(1);
        st.seq = 0;
        st.at = HEADER_LEN as u64;
        self.file.write_all_at(&encode_header(st.epoch), 0)?;
        // Entries of the new epoch are written only once its header is durable, so a replay
        // never mixes the two.
        self.file.sync_data()
    }
}

/// Writes zeros over `from..to`, so that later writes there allocate nothing.
fn zero_fill(file: &dyn FsFile, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sim::SimFs;

    fn entry(epoch: u64, seq: u64, pieces: &[Piece<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_entry(epoch, seq, pieces.iter().cloned(), &mut out);
        out
    }

    fn piece(incarnation: u64, pos: u64, bytes: &[u8]) -> Piece<'_> {
        Piece { incarnation, pos, bytes }
    }

    #[test]
    fn entries_of_the_epoch_scan_back_in_order() {
        let mut file = encode_header(7).to_vec();
        let a = [piece(1, 40, b"abc"), piece(2, 90, b"")];
        let b = [piece(1, 43, b"defg")];
        file.extend(entry(7, 0, &a));
        file.extend(entry(7, 1, &b));
        let end = file.len();
        file.extend([0u8; 100]);
        let s = scan(&file);
        assert_eq!(s.epoch, Some(7));
        assert_eq!(s.entries, vec![a.to_vec(), b.to_vec()]);
        assert_eq!((s.end, s.stop), (end, Some(ScanStop::Clean)));
        assert_eq!(entry_len([3, 0]), entry(7, 0, &a).len() as u64);
    }

    /// `e` with byte `at` set and its checksum made right again.
    fn resealed(mut e: Vec<u8>, at: usize) -> Vec<u8> {
        e[at] = 0x61;
        let crc = crc32fast::hash(&e[EPOCH_AT..]);
        e[CRC_AT..EPOCH_AT].copy_from_slice(&crc.to_le_bytes());
        e
    }

    #[test]
    fn a_torn_stale_or_out_of_sequence_entry_ends_the_scan() {
        let head = encode_header(3).to_vec();
        let first = entry(3, 0, &[piece(1, 40, b"first")]);
        for (what, tail) in [
            ("torn", entry(3, 1, &[piece(1, 45, b"second")])[..20].to_vec()),
            ("older epoch", entry(2, 1, &[piece(1, 45, b"second")])),
            ("skipped seq", entry(3, 2, &[piece(1, 45, b"second")])),
            ("bad crc", {
                let mut e = entry(3, 1, &[piece(1, 45, b"second")]);
                *e.last_mut().unwrap() ^= 1;
                e
            }),
            // Found by the journal_scan fuzzer: a reserved byte set under a right checksum
            // read as an entry that re-encodes to other bytes.
            ("entry reserved", resealed(entry(3, 1, &[piece(1, 45, b"second")]), PIECES_AT + 7)),
            (
                "piece reserved",
                resealed(entry(3, 1, &[piece(1, 45, b"second")]), ENTRY_HEAD_LEN + 23),
            ),
        ] {
            let mut file = head.clone();
            file.extend(&first);
            file.extend(tail);
            let s = scan(&file);
            assert_eq!(s.entries.len(), 1, "{what}");
            assert_eq!(s.stop, Some(ScanStop::NotNext), "{what}");
        }
        let mut damaged = head.clone();
        damaged[17] ^= 1;
        damaged.extend(first);
        assert_eq!(scan(&damaged).epoch, None, "a damaged header holds no entries");
        assert!(scan(&damaged).entries.is_empty());
    }

    #[test]
    fn any_bytes_scan_without_panic() {
        let mut file = encode_header(1).to_vec();
        file.extend(entry(1, 0, &[piece(9, 40, b"xyz")]));
        for cut in 0..file.len() {
            let _ = scan(&file[..cut]);
            let mut flipped = file.clone();
            flipped[cut] ^= 0x80;
            let _ = scan(&flipped);
        }
    }

    #[test]
    fn commits_reset_when_full_and_replay_restores_the_logs() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let log = fs.open(&dir.join(log_name(5)), OpenMode::CreateNew).unwrap();
        log.write_all_at(&[1u8; 40], 0).unwrap();
        log.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        let journal = Journal::start(&fs, dir, 4096, &Replayed::default()).unwrap();
        let mut pos = 40;
        let mut resets = 0;
        let record = [7u8; 300];
        for _ in 0..40 {
            log.write_all_at(&record, pos).unwrap();
            journal
                .commit(&[piece(5, pos, &record)], |dirty| {
                    assert_eq!(dirty.iter().copied().collect::<Vec<_>>(), vec![5]);
                    resets += 1;
                    log.sync_data()
                })
                .unwrap();
            pos += record.len() as u64;
        }
        assert!(resets >= 2, "a 4 KiB journal resets several times over 12 KB");
        // Power loss: the log's unsynced tail is gone; the journal brings it back.
        let fs = fs.power_loss(crate::fs::sim::Torn::Clean);
        let replayed = replay(&fs, dir).unwrap();
        assert!(replayed.entries > 0);
        let log = fs.open(&dir.join(log_name(5)), OpenMode::Read).unwrap();
        assert_eq!(log.len().unwrap(), pos);
        let mut back = vec![0u8; (pos - 40) as usize];
        crate::fs::read_exact_at(log.as_ref(), &mut back, 40).unwrap();
        assert!(back.iter().all(|&b| b == 7));
        // The next start begins a new epoch: the replayed entries are not read again.
        let again = Journal::start(&fs, dir, 4096, &replayed).unwrap();
        drop(again);
        let second = replay(&fs, dir).unwrap();
        assert_eq!((second.entries, second.epoch), (0, replayed.epoch.map(|e| e + 1)));
    }

    #[test]
    fn entries_of_deleted_streams_are_skipped() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let journal = Journal::start(&fs, dir, 1 << 16, &Replayed::default()).unwrap();
        journal.commit(&[piece(77, 40, b"gone")], |_| Ok(())).unwrap();
        let fs = fs.power_loss(crate::fs::sim::Torn::Clean);
        let replayed = replay(&fs, dir).unwrap();
        assert_eq!((replayed.entries, replayed.bytes), (1, 0));
        assert!(fs.list(dir).unwrap().iter().all(|n| !n.ends_with(".log")), "no log created");
    }
}
