//! A simulated file system for power-loss tests.
//!
//! Fault model (what a power cut does here):
//! - Every file has a *live* image (what reads see) and a *durable* image. `write_all_at` and
//!   `set_len` change the live image; `sync_data` copies live to durable, `sync_all_files`
//!   does so for every file.
//! - The directory has a live and a durable table of entries. `open(CreateNew)`, `rename` and
//!   `remove` change the live table; `sync_dir(d)` makes the live entries of `d` durable.
//! - [`SimFs::power_loss`] builds the file system a restart would find: the durable table,
//!   each file at its durable image, plus (if asked) a torn tail: a prefix of the bytes
//!   written past the durable image (a disk that wrote part of a request), or zeros (a file
//!   whose new size reached the disk before its data did).
//! - [`SimFs::process_crash`] is the death of the process alone: the page cache survives, so
//!   the live images and table do.
//! - [`SimFs::fail_at_sync`] makes the n-th sync (of either kind) fail and the file system stop
//!   answering, so a test can cut the power exactly there.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Fs, FsFile, OpenMode};

/// File syncs held, syncs waiting, directory syncs held too.
type Held = (bool, usize, bool);

/// The simulated file system. Clones share the same state.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    /// While true, file syncs wait (directory syncs do not): lets a test hold a commit open.
    /// The count is how many syncs are waiting.
    held: Arc<(Mutex<Held>, std::sync::Condvar)>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    files: HashMap<u64, Data>,
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    now_ms: u64,
    syncs: u64,
    fail_at_sync: Option<u64>,
    /// After the failing sync, every operation fails too (the disk is gone), rather than
    /// only that sync.
    stop_after_failure: bool,
    failed: bool,
}

#[derive(Debug, Default, Clone)]
struct Data {
    live: Vec<u8>,
    durable: Vec<u8>,
    modified_ms: u64,
}

/// What a power cut leaves of writes that were not yet synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Torn {
    /// Nothing: files are exactly their durable images.
    Clean,
    /// Each file keeps a pseudo-random prefix of its unsynced appended bytes.
    Prefix(u64),
    /// Each file that had unsynced writes grows by a pseudo-random number of zero bytes
    /// (at most as many as were written).
    Zeros(u64),
    /// Each file keeps its synced or its current length (a size change is one metadata
    /// update), and each 4 KiB page written since the last sync holds, pseudo-randomly, its
    /// new or its old content: how write-back in any order leaves a file that is overwritten
    /// in place (a redb shard), not only appended to.
    Pages(u64),
}

/// The page size of [`Torn::Pages`].
const PAGE: usize = 4096;

/// A power cut's image of one file under [`Torn::Pages`].
fn torn_pages(durable: &[u8], live: &[u8], seed: &mut u64) -> Vec<u8> {
    let len = if next_random(seed).is_multiple_of(2) { durable.len() } else { live.len() };
    let mut out = durable.to_vec();
    out.resize(len, 0);
    for start in (0..len).step_by(PAGE) {
        let end = (start + PAGE).min(len);
        let Some(new) = live.get(start..end.min(live.len())) else { continue };
        if new != &out[start..start + new.len()] && next_random(seed) % 2 == 1 {
            out[start..start + new.len()].copy_from_slice(new);
        }
    }
    out
}

fn failed() -> io::Error {
    io::Error::other("simulated power loss: the disk no longer answers")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

/// A small deterministic generator for torn tails.
fn next_random(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

impl SimFs {
    /// An empty file system.
    #[must_use]
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes sync number `n` (counting from 0 from now on) fail, and every operation after it.
    pub fn fail_at_sync(&self, n: u64) {
        let mut s = self.lock();
        s.fail_at_sync = Some(s.syncs + n);
        s.stop_after_failure = true;
    }

    /// Makes sync number `n` fail, and only that one: the disk keeps answering, as after a
    /// transient writeback error.
    pub fn fail_one_sync(&self, n: u64) {
        let mut s = self.lock();
        s.fail_at_sync = Some(s.syncs + n);
        s.stop_after_failure = false;
    }

    /// Makes every file sync (`sync_data`, `sync_all_files`) wait until
    /// [`SimFs::release_syncs`], so that a test can act while a commit is in flight.
    pub fn hold_syncs(&self) {
        self.held.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0 = true;
    }

    /// As [`SimFs::hold_syncs`], and directory syncs too (a delete in flight).
    pub fn hold_all_syncs(&self) {
        let mut held = self.held.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.0 = true;
        held.2 = true;
    }

    /// Lets held syncs go on.
    pub fn release_syncs(&self) {
        let mut held = self.held.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.0 = false;
        held.2 = false;
        drop(held);
        self.held.1.notify_all();
    }

    /// How many syncs are waiting on [`SimFs::hold_syncs`].
    #[must_use]
    pub fn syncs_waiting(&self) -> usize {
        self.held.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1
    }

    fn wait_while_held(&self, dir: bool) {
        let mut held = self.held.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if dir && !held.2 {
            return;
        }
        held.1 += 1;
        while held.0 {
            held = self.held.1.wait(held).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        held.1 -= 1;
    }

    /// How many syncs have been issued so far.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Sets the time reported as files' modification time.
    pub fn set_now_ms(&self, now_ms: u64) {
        self.lock().now_ms = now_ms;
    }

    /// The file system a restart finds after a power cut now.
    #[must_use]
    pub fn power_loss(&self, torn: Torn) -> SimFs {
        let s = self.lock();
        let mut seed = match torn {
            Torn::Clean => 0,
            Torn::Prefix(seed) | Torn::Zeros(seed) | Torn::Pages(seed) => seed,
        };
        let mut out = State { now_ms: s.now_ms, next_id: s.next_id, ..State::default() };
        for (path, id) in &s.durable {
            let Some(data) = s.files.get(id) else { continue };
            let mut bytes = data.durable.clone();
            match torn {
                Torn::Clean => {}
                Torn::Prefix(_) => {
                    if data.live.len() > bytes.len() && data.live.starts_with(&bytes) {
                        let unsynced = (data.live.len() - bytes.len()) as u64;
                        let keep = next_random(&mut seed) % (unsynced + 1);
                        let end = bytes.len() + keep as usize;
                        bytes.extend_from_slice(&data.live[data.durable.len()..end]);
                    }
                }
                Torn::Zeros(_) => {
                    if data.live.len() > bytes.len() {
                        let unsynced = (data.live.len() - bytes.len()) as u64;
                        let n = next_random(&mut seed) % (unsynced + 1);
                        bytes.resize(bytes.len() + n as usize, 0);
                    }
                }
                Torn::Pages(_) => bytes = torn_pages(&data.durable, &data.live, &mut seed),
            }
            let image = Data { live: bytes.clone(), durable: bytes, modified_ms: data.modified_ms };
            out.files.insert(*id, image);
            out.live.insert(path.clone(), *id);
            out.durable.insert(path.clone(), *id);
        }
        SimFs { state: Arc::new(Mutex::new(out)), held: Arc::default() }
    }

    /// The file system a restart finds after the process died but the machine did not.
    #[must_use]
    pub fn process_crash(&self) -> SimFs {
        let s = self.lock();
        let mut out = State { now_ms: s.now_ms, next_id: s.next_id, ..State::default() };
        for (path, id) in &s.live {
            let Some(data) = s.files.get(id) else { continue };
            let live = data.live.clone();
            let image = Data { durable: live.clone(), live, modified_ms: data.modified_ms };
            out.files.insert(*id, image);
            out.live.insert(path.clone(), *id);
            out.durable.insert(path.clone(), *id);
        }
        SimFs { state: Arc::new(Mutex::new(out)), held: Arc::default() }
    }

    /// The live content of a file, for tests that corrupt or inspect it.
    #[must_use]
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        s.live.get(path).and_then(|id| s.files.get(id)).map(|d| d.live.clone())
    }

    /// Replaces a file's content, live and durable (for corruption tests).
    pub fn overwrite(&self, path: &Path, bytes: Vec<u8>) {
        let mut s = self.lock();
        if let Some(id) = s.live.get(path).copied()
            && let Some(d) = s.files.get_mut(&id)
        {
            d.durable.clone_from(&bytes);
            d.live = bytes;
        }
    }

    /// Total bytes in all live files.
    #[must_use]
    pub fn live_bytes(&self) -> u64 {
        let s = self.lock();
        s.live.values().filter_map(|id| s.files.get(id)).map(|d| d.live.len() as u64).sum()
    }

    fn sync_point(s: &mut State) -> io::Result<()> {
        if s.failed {
            return Err(failed());
        }
        let n = s.syncs;
        s.syncs += 1;
        if s.fail_at_sync == Some(n) {
            s.failed = s.stop_after_failure;
            return Err(failed());
        }
        Ok(())
    }
}

fn check(s: &State) -> io::Result<()> {
    if s.failed { Err(failed()) } else { Ok(()) }
}

impl Fs for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        check(&self.lock())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        check(&s)?;
        Ok(s.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let mut s = self.lock();
        check(&s)?;
        let id = match (mode, s.live.get(path).copied()) {
            (OpenMode::CreateNew | OpenMode::CreatePrivate, Some(_)) => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
            }
            (OpenMode::CreateNew | OpenMode::CreatePrivate, None) => {
                let id = s.next_id;
                s.next_id += 1;
                let modified_ms = s.now_ms;
                s.files.insert(id, Data { modified_ms, ..Data::default() });
                s.live.insert(path.to_path_buf(), id);
                id
            }
            (_, Some(id)) => id,
            (_, None) => return Err(not_found(path)),
        };
        let writable = mode != OpenMode::Read;
        Ok(Arc::new(SimFile { fs: self.clone(), id, writable }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        check(&s)?;
        let id = s.live.remove(from).ok_or_else(|| not_found(from))?;
        s.live.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        check(&s)?;
        s.live.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn sync_all_files(&self, _dir: &Path) -> io::Result<()> {
        self.wait_while_held(false);
        let mut s = self.lock();
        SimFs::sync_point(&mut s)?;
        for data in s.files.values_mut() {
            data.durable.clone_from(&data.live);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.wait_while_held(true);
        let mut s = self.lock();
        SimFs::sync_point(&mut s)?;
        s.durable.retain(|p, _| p.parent() != Some(dir));
        let entries: Vec<(PathBuf, u64)> = s
            .live
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        s.durable.extend(entries);
        Ok(())
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    id: u64,
    writable: bool,
}

impl SimFile {
    fn with<R>(&self, f: impl FnOnce(&mut Data, u64) -> io::Result<R>) -> io::Result<R> {
        let mut s = self.fs.lock();
        check(&s)?;
        let now = s.now_ms;
        let data = s.files.get_mut(&self.id).ok_or_else(failed)?;
        f(data, now)
    }

    fn writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "opened read-only"))
        }
    }
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.with(|d, _| {
            let start = usize::try_from(pos).unwrap_or(usize::MAX).min(d.live.len());
            let n = buf.len().min(d.live.len() - start);
            buf[..n].copy_from_slice(&d.live[start..start + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.writable()?;
        self.with(|d, now| {
            let start = usize::try_from(pos).map_err(|_| io::Error::other("offset too large"))?;
            if d.live.len() < start + buf.len() {
                d.live.resize(start + buf.len(), 0);
            }
            d.live[start..start + buf.len()].copy_from_slice(buf);
            d.modified_ms = now;
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|d, _| Ok(d.live.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.writable()?;
        self.with(|d, now| {
            d.live.resize(usize::try_from(len).map_err(|_| io::Error::other("too large"))?, 0);
            d.modified_ms = now;
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.wait_while_held(false);
        let mut s = self.fs.lock();
        SimFs::sync_point(&mut s)?;
        let d = s.files.get_mut(&self.id).ok_or_else(failed)?;
        d.durable.clone_from(&d.live);
        Ok(())
    }

    fn modified_ms(&self) -> io::Result<u64> {
        self.with(|d, _| Ok(d.modified_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn only_synced_data_and_entries_survive_power_loss() {
        let fs = SimFs::new();
        let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        assert!(
            fs.power_loss(Torn::Clean).list(Path::new("/d")).unwrap().is_empty(),
            "entry not synced"
        );
        fs.sync_dir(Path::new("/d")).unwrap();
        let after = fs.power_loss(Torn::Clean);
        assert_eq!(after.contents(&p("/d/a")).unwrap(), b"", "data not synced");
        f.sync_data().unwrap();
        f.write_all_at(b" world", 5).unwrap();
        assert_eq!(fs.power_loss(Torn::Clean).contents(&p("/d/a")).unwrap(), b"hello");
        assert_eq!(fs.process_crash().contents(&p("/d/a")).unwrap(), b"hello world");
        let torn = fs.power_loss(Torn::Prefix(7)).contents(&p("/d/a")).unwrap();
        assert!(b"hello world".starts_with(&torn) && torn.len() >= 5);
    }

    #[test]
    fn renames_need_a_directory_sync() {
        let fs = SimFs::new();
        let f = fs.open(&p("/d/x.tmp"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"v1", 0).unwrap();
        f.sync_data().unwrap();
        fs.rename(&p("/d/x.tmp"), &p("/d/x")).unwrap();
        assert_eq!(fs.power_loss(Torn::Clean).list(Path::new("/d")).unwrap(), Vec::<String>::new());
        fs.sync_dir(Path::new("/d")).unwrap();
        assert_eq!(fs.power_loss(Torn::Clean).contents(&p("/d/x")).unwrap(), b"v1");
        fs.remove(&p("/d/x")).unwrap();
        assert!(fs.power_loss(Torn::Clean).contents(&p("/d/x")).is_some(), "removal not synced");
    }

    #[test]
    fn a_failed_sync_stops_the_disk() {
        let fs = SimFs::new();
        let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        fs.fail_at_sync(1);
        fs.sync_dir(Path::new("/d")).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(f.write_all_at(b"y", 1).is_err());
        assert!(fs.open(&p("/d/a"), OpenMode::Read).is_err());
    }

    #[test]
    fn torn_pages_mix_old_and_new_pages_at_either_length() {
        let durable = vec![1u8; 2 * PAGE];
        let mut live = vec![2u8; 3 * PAGE];
        live[PAGE..2 * PAGE].fill(1);
        let mut seen_lengths = std::collections::HashSet::new();
        let mut seen_first = std::collections::HashSet::new();
        for seed in 0..64 {
            let out = torn_pages(&durable, &live, &mut { seed });
            assert!(out.len() == durable.len() || out.len() == live.len());
            for page in out.chunks(PAGE) {
                let first = page[0];
                assert!(page.iter().all(|b| *b == first), "a page is never torn inside");
            }
            assert_eq!(out[PAGE], 1, "an unchanged page keeps its content");
            seen_lengths.insert(out.len());
            seen_first.insert(out[0]);
        }
        assert_eq!(seen_lengths.len(), 2);
        assert_eq!(seen_first.len(), 2, "a changed page is sometimes new, sometimes old");
    }
}
