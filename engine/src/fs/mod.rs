//! All file I/O of the persistent stores goes through [`Fs`] and [`FsFile`], so that tests can
//! swap the real file system ([`StdFs`]) for a simulated one ([`sim::SimFs`]) that models what
//! survives a power cut.
//!
//! The contract the stores rely on, and the simulation enforces:
//! - `write_at` makes bytes visible to later reads at once, durable only after `sync_data`.
//! - Creating, renaming and removing a file changes the directory at once, durably only after
//!   `sync_dir` of the directory that holds it.
//! - `sync_all_files` does what `sync_data` does, for every file at once.
//! - An error from a sync means nothing about what reached the disk; the caller must not
//!   retry it (the engine poisons itself instead).

pub mod sim;
mod std_fs;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use std_fs::StdFs;

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file, read and write.
    ReadWrite,
    /// A new file, read and write; fails if it exists.
    CreateNew,
    /// As `CreateNew`, readable and writable by the owner only (mode 0600): secrets.
    CreatePrivate,
}

/// A directory tree of files.
pub trait Fs: Send + Sync {
    /// Creates `dir` and its parents.
    ///
    /// # Errors
    /// As the operating system reports.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Names of the files directly in `dir`.
    ///
    /// # Errors
    /// As the operating system reports.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Opens a file.
    ///
    /// # Errors
    /// `NotFound`, `AlreadyExists` (for `CreateNew`), and other OS errors.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>>;

    /// Renames `from` to `to`, replacing `to`.
    ///
    /// # Errors
    /// As the operating system reports.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Errors
    /// As the operating system reports.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    ///
    /// # Errors
    /// As the operating system reports.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Makes the written data of every file on the file system that holds `dir` durable, in
    /// one call (Linux `syncfs`): a group commit over many files costs one sync instead of
    /// one per file. Directory entries are synced separately ([`Fs::sync_dir`]).
    ///
    /// # Errors
    /// As the operating system reports (Linux 5.8 and later report any writeback error
    /// since the last call); never retry after an error.
    fn sync_all_files(&self, dir: &Path) -> io::Result<()>;
}

/// One open file. Reads and writes are positional, so one handle serves concurrent readers
/// and the stream's single writer.
#[expect(clippy::len_without_is_empty, reason = "a file's length is an I/O call, not a size")]
pub trait FsFile: Send + Sync {
    /// Reads into `buf` from `pos`; returns how many bytes were read (0 at the end).
    ///
    /// # Errors
    /// As the operating system reports.
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `pos`.
    ///
    /// # Errors
    /// As the operating system reports.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;

    /// Current length.
    ///
    /// # Errors
    /// As the operating system reports.
    fn len(&self) -> io::Result<u64>;

    /// Truncates or extends to `len`.
    ///
    /// # Errors
    /// As the operating system reports.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the file's data durable (`fdatasync`).
    ///
    /// # Errors
    /// As the operating system reports; never retry after an error.
    fn sync_data(&self) -> io::Result<()>;

    /// Last modification time, in Unix milliseconds.
    ///
    /// # Errors
    /// As the operating system reports.
    fn modified_ms(&self) -> io::Result<u64>;

    /// `len` bytes from `pos` straight from the page cache, without a copy, when this file
    /// system can map them (the standard one maps ranges of at least
    /// [`MAP_BYTES_MIN`]; the simulator never does, and callers then read). `None` means
    /// "read instead". Only for bytes no writer will change and the file keeps while the
    /// mapping lives: committed records of an append-only log.
    fn map(&self, _pos: u64, _len: usize) -> Option<bytes::Bytes> {
        None
    }
}

/// Smallest range worth mapping: below it a `pread` into a buffer costs less than setting
/// up and tearing down a mapping (and the TLB shootdown of the unmap).
pub const MAP_BYTES_MIN: usize = 64 * 1024;

/// Reads exactly `buf.len()` bytes at `pos`, or fails with `UnexpectedEof`.
///
/// # Errors
/// `UnexpectedEof` if the file ends first; OS errors.
pub fn read_exact_at(file: &dyn FsFile, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, pos)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended")),
            n => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
        }
    }
    Ok(())
}

/// Which kind of call failed: after a failed sync nothing is known about what reached the
/// disk, so callers poison themselves; other failures are ordinary errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    /// An open, write, rename or removal.
    Io,
    /// A `sync_data` or `sync_dir`.
    Sync,
}

/// Writes `bytes` to `dir/name` durably and atomically: a temporary file, `sync_data`, rename
/// over the name, then `sync_dir` (the syncs only if `durable`). After a crash the name holds
/// either the old or the new content.
///
/// # Errors
/// The failing call and its kind; the temporary file may be left behind (recovery removes
/// it).
pub fn write_atomic_or_which(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durable: bool,
) -> Result<(), (io::Error, Failed)> {
    write_atomic_as(fs, dir, name, bytes, durable, false)
}

fn write_atomic_as(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durable: bool,
    private: bool,
) -> Result<(), (io::Error, Failed)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    // A name of its own, so that two writers of the same file never rename each other's tmp.
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{n}{TMP_SUFFIX}"));
    let io = |e| (e, Failed::Io);
    let sync = |e| (e, Failed::Sync);
    let mode = if private { OpenMode::CreatePrivate } else { OpenMode::CreateNew };
    let file = fs.open(&tmp, mode).map_err(io)?;
    file.write_all_at(bytes, 0).map_err(io)?;
    if durable {
        file.sync_data().map_err(sync)?;
    }
    drop(file);
    fs.rename(&tmp, &dir.join(name)).map_err(io)?;
    if durable {
        fs.sync_dir(dir).map_err(sync)?;
    }
    Ok(())
}

/// [`write_atomic_or_which`] without saying which call failed.
///
/// # Errors
/// As [`write_atomic_or_which`].
pub fn write_atomic(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durable: bool,
) -> io::Result<()> {
    write_atomic_or_which(fs, dir, name, bytes, durable).map_err(|(e, _)| e)
}

/// [`write_atomic`] of a secret: the file is readable by its owner only (mode 0600).
///
/// # Errors
/// As [`write_atomic_or_which`].
pub fn write_atomic_private(fs: &dyn Fs, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_atomic_as(fs, dir, name, bytes, true, true).map_err(|(e, _)| e)
}

/// Reads a small side file whole.
///
/// # Errors
/// I/O errors, or a file over 16 MiB.
pub fn read_small(fs: &dyn Fs, path: &Path) -> io::Result<Vec<u8>> {
    let file = fs.open(path, OpenMode::Read)?;
    let len = file.len()?;
    if len > 1 << 24 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "side file too large"));
    }
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    read_exact_at(file.as_ref(), &mut buf, 0)?;
    Ok(buf)
}

/// Suffix of temporary files; recovery removes any it finds.
pub const TMP_SUFFIX: &str = ".tmp";
