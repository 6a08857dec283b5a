//! redb's storage backend over [`crate::fs::FsFile`], so that acid shards do their I/O through
//! the same trait as everything else, and power-loss tests can run redb on the simulated file
//! system. No byte-range locks: the data directory's `LOCK` keeps other servers out.

use std::io;
use std::sync::Arc;

use crate::fs::{FsFile, read_exact_at};

/// A redb backend on one file.
pub struct FsBackend(pub Arc<dyn FsFile>);

impl std::fmt::Debug for FsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FsBackend")
    }
}

impl redb::StorageBackend for FsBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        read_exact_at(self.0.as_ref(), out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
}

/// Page size of the [`OverlayBackend`]'s copy-on-write map.
const OVERLAY_PAGE: u64 = 4096;

/// A redb backend that reads a file but never writes it: writes (redb's repair after a
/// crash, the integrity check's commit) land in an in-memory overlay of 4 KiB pages, so that
/// `engine-inspect` can open a shard read-only in every state the server may leave it in.
pub struct OverlayBackend {
    file: Arc<dyn FsFile>,
    state: std::sync::Mutex<Overlay>,
}

struct Overlay {
    /// The length redb sees.
    len: u64,
    /// The file's length when opened: bytes past it read as zeros unless written.
    file_len: u64,
    pages: std::collections::HashMap<u64, Box<[u8]>>,
}

impl std::fmt::Debug for OverlayBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OverlayBackend")
    }
}

impl OverlayBackend {
    /// An overlay on `file`.
    ///
    /// # Errors
    /// If the file's length cannot be read.
    pub fn new(file: Arc<dyn FsFile>) -> io::Result<OverlayBackend> {
        let len = file.len()?;
        let overlay = Overlay { len, file_len: len, pages: std::collections::HashMap::new() };
        Ok(OverlayBackend { file, state: std::sync::Mutex::new(overlay) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The file's bytes of page `index` (zeros past its end).
    fn base_page(&self, index: u64, file_len: u64) -> io::Result<Box<[u8]>> {
        let mut page = vec![0u8; OVERLAY_PAGE as usize].into_boxed_slice();
        let start = index * OVERLAY_PAGE;
        if start < file_len {
            let n = (file_len - start).min(OVERLAY_PAGE) as usize;
            read_exact_at(self.file.as_ref(), &mut page[..n], start)?;
        }
        Ok(page)
    }
}

impl redb::StorageBackend for OverlayBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.lock();
        if offset + out.len() as u64 > state.len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"));
        }
        let mut done = 0usize;
        while done < out.len() {
            let at = offset + done as u64;
            let (index, within) = (at / OVERLAY_PAGE, (at % OVERLAY_PAGE) as usize);
            let n = (OVERLAY_PAGE as usize - within).min(out.len() - done);
            let dst = &mut out[done..done + n];
            match state.pages.get(&index) {
                Some(page) => dst.copy_from_slice(&page[within..within + n]),
                None if at >= state.file_len => dst.fill(0),
                None => {
                    let from_file = ((state.file_len - at) as usize).min(n);
                    read_exact_at(self.file.as_ref(), &mut dst[..from_file], at)?;
                    dst[from_file..].fill(0);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        if len < state.len {
            // Bytes past a shrink read as zeros if the file grows again.
            let keep = len.div_ceil(OVERLAY_PAGE);
            state.pages.retain(|index, _| *index < keep);
            if let Some(page) = state.pages.get_mut(&(len / OVERLAY_PAGE)) {
                page[(len % OVERLAY_PAGE) as usize..].fill(0);
            }
            if len < state.file_len {
                let last = len / OVERLAY_PAGE;
                if !len.is_multiple_of(OVERLAY_PAGE) && !state.pages.contains_key(&last) {
                    let mut page = self.base_page(last, state.file_len)?;
                    page[(len % OVERLAY_PAGE) as usize..].fill(0);
                    state.pages.insert(last, page);
                }
                state.file_len = len;
            }
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, within) = (at / OVERLAY_PAGE, (at % OVERLAY_PAGE) as usize);
            let n = (OVERLAY_PAGE as usize - within).min(data.len() - done);
            if !state.pages.contains_key(&index) {
                let page = self.base_page(index, state.file_len)?;
                state.pages.insert(index, page);
            }
            if let Some(page) = state.pages.get_mut(&index) {
                page[within..within + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        state.len = state.len.max(offset + data.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sim::SimFs;
    use crate::fs::{Fs, OpenMode};
    use redb::StorageBackend;
    use std::path::Path;

    #[test]
    fn the_overlay_reads_the_file_and_keeps_writes_to_itself() {
        let sim = SimFs::new();
        let path = Path::new("/d/f");
        let file = sim.open(path, OpenMode::CreateNew).unwrap();
        file.write_all_at(&vec![1u8; 5000], 0).unwrap();
        let overlay = OverlayBackend::new(file.clone()).unwrap();
        overlay.write(4090, &[2u8; 20]).unwrap();
        overlay.set_len(9000).unwrap();
        let mut buf = vec![0u8; 9000];
        overlay.read(0, &mut buf).unwrap();
        assert!(buf[..4090].iter().all(|b| *b == 1));
        assert!(buf[4090..4110].iter().all(|b| *b == 2));
        assert!(buf[4110..5000].iter().all(|b| *b == 1));
        assert!(buf[5000..].iter().all(|b| *b == 0));
        overlay.set_len(100).unwrap();
        overlay.set_len(200).unwrap();
        let mut buf = vec![9u8; 200];
        overlay.read(0, &mut buf).unwrap();
        assert!(buf[..100].iter().all(|b| *b == 1) && buf[100..].iter().all(|b| *b == 0));
        assert_eq!(sim.contents(path).unwrap(), vec![1u8; 5000], "the file is untouched");
    }
}
