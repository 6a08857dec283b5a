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
