//! A bounded pool of open log files, so that a million streams do not need a million file
//! descriptors. Handles are shared (`pread`/`pwrite` need no seek position) and opened on
//! demand; when the pool is over its size, the least recently used eighth is closed (a handle
//! still in use elsewhere closes when its last user drops it).

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::fs::{Fs, FsFile, OpenMode};

/// An open file and when it was last handed out.
type Entry = (Arc<dyn FsFile>, u64);

/// Open log files by incarnation.
pub struct Handles {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    capacity: usize,
    open: Mutex<HashMap<u64, Entry>>,
    clock: AtomicU64,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

/// The file name of a stream's log.
#[must_use]
pub fn log_name(incarnation: u64) -> String {
    format!("{incarnation:016x}.log")
}

impl Handles {
    /// A pool of at most `capacity` open files in `dir`.
    #[must_use]
    pub fn new(fs: Arc<dyn Fs>, dir: PathBuf, capacity: usize) -> Handles {
        Handles {
            fs,
            dir,
            capacity: capacity.max(1),
            open: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        }
    }

    /// The log file of `incarnation`, opened if needed.
    ///
    /// # Errors
    /// If the file cannot be opened.
    pub fn get(&self, incarnation: u64) -> io::Result<Arc<dyn FsFile>> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((file, used)) = open.get_mut(&incarnation) {
                *used = tick;
                return Ok(file.clone());
            }
        }
        // Opened outside the pool's lock: a slow open must not stall every reader.
        let file = self.fs.open(&self.dir.join(log_name(incarnation)), OpenMode::ReadWrite)?;
        self.insert(incarnation, file.clone());
        Ok(file)
    }

    /// Keeps an open file, closing the least recently used eighth if over capacity.
    pub fn insert(&self, incarnation: u64, file: Arc<dyn FsFile>) {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.insert(incarnation, (file, tick));
        if open.len() > self.capacity {
            let mut by_age: Vec<(u64, u64)> = open.iter().map(|(inc, (_, t))| (*t, *inc)).collect();
            by_age.sort_unstable();
            let excess = open.len() - self.capacity * 7 / 8;
            for (_, inc) in by_age.iter().take(excess) {
                open.remove(inc);
            }
        }
    }

    /// Closes a deleted stream's file.
    pub fn forget(&self, incarnation: u64) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.remove(&incarnation);
    }

    /// Number of files held open by the pool.
    #[must_use]
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether no file is held open.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
