//! The real file system: `std::fs` with positional I/O (`pread`/`pwrite`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use bytes::Bytes;

use super::{Fs, FsFile, OpenMode};

/// `std::fs`. Directories are synced through one descriptor each, kept open: Linux reports a
/// writeback error once per descriptor (errseq), so a fresh descriptor per sync could miss an
/// error that another descriptor already consumed.
#[derive(Debug)]
pub struct StdFs {
    dirs: Mutex<HashMap<PathBuf, Arc<File>>>,
    syncfs_reports_errors: bool,
}

impl Default for StdFs {
    fn default() -> StdFs {
        StdFs { dirs: Mutex::new(HashMap::new()), syncfs_reports_errors: syncfs_reports_errors() }
    }
}

/// `syncfs` returns writeback errors from Linux 5.8 on; before that it always succeeds.
fn syncfs_reports_errors() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts =
        release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(major), Some(minor)) if (major, minor) >= (5, 8))
}

impl StdFs {
    fn dir(&self, dir: &Path) -> io::Result<Arc<File>> {
        let mut dirs = self.dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = dirs.get(dir) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(dir)?);
        dirs.insert(dir.to_path_buf(), f.clone());
        Ok(f)
    }
}

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Ok(name) = entry.file_name().into_string()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let mut opts = OpenOptions::new();
        match mode {
            OpenMode::Read => opts.read(true),
            OpenMode::ReadWrite => opts.read(true).write(true),
            OpenMode::CreateNew => opts.read(true).write(true).create_new(true),
            OpenMode::CreatePrivate => {
                use std::os::unix::fs::OpenOptionsExt;
                opts.read(true).write(true).create_new(true).mode(0o600)
            }
        };
        Ok(Arc::new(StdFile(opts.open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.dir(dir)?.sync_all()
    }

    fn sync_all_files(&self, dir: &Path) -> io::Result<()> {
        if !self.syncfs_reports_errors {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "syncfs does not report write errors before Linux 5.8",
            ));
        }
        rustix::fs::syncfs(&*self.dir(dir)?).map_err(io::Error::from)
    }
}

#[derive(Debug)]
struct StdFile(File);

impl FsFile for StdFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, pos) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn modified_ms(&self) -> io::Result<u64> {
        let modified = self.0.metadata()?.modified()?;
        Ok(modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
    }

    #[expect(unsafe_code, reason = "mapping a file is unsafe in Rust; see SAFETY")]
    fn map(&self, pos: u64, len: usize) -> Option<Bytes> {
        if len < super::MAP_BYTES_MIN {
            return None;
        }
        let page = rustix::param::page_size() as u64;
        let start = pos - pos % page;
        let skip = usize::try_from(pos - start).ok()?;
        // SAFETY: the caller maps only committed records of an append-only log: no writer
        // changes those bytes and the file is never truncated below them while the server
        // runs (recovery cuts torn tails before anything is served; a delete unlinks, which
        // keeps mapped pages valid). Another process writing into the data directory is
        // excluded by its lock file. So the mapped memory never changes under the slice and
        // never becomes a hole (no SIGBUS).
        let map = unsafe {
            memmap2::MmapOptions::new().offset(start).len(skip + len).populate().map(&self.0)
        }
        .ok()?;
        Some(Bytes::from_owner(map).slice(skip..skip + len))
    }
}
