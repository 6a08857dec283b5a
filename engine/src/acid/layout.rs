//! The shard layout of `${DATA_DIR}/acid`: a manifest written once, and `shard_count` redb
//! files. A stream lives on shard `seahash(name) & (shard_count - 1)`.
//!
//! ```text
//! MANIFEST          "ds-server acid layout\nversion 1\nshards N\nhash seahash\n"
//! shard-000.redb    …one per shard, shard-{index:03}.redb
//! ```
//!
//! First start: the manifest is written atomically and durably (temporary file, `fdatasync`,
//! rename, directory `fsync`) before any shard exists; then each shard is created under a
//! temporary name, initialised by redb (which syncs), renamed into place and the directory
//! synced. A power cut anywhere in there leaves either no manifest (start over) or a manifest
//! with some shards missing, which are created on the next start: no stream can have been
//! written before every shard existed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::Database;

use crate::acid::backend::FsBackend;
use crate::fs::{self, Fs, OpenMode};

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST";
/// The layout version this code writes and reads.
pub const LAYOUT_VERSION: u32 = 1;
/// redb's page cache per shard (redb's default, 1 GiB, is too much for small machines).
pub const CACHE_BYTES_PER_SHARD: usize = 64 << 20;

/// The manifest's content for `shards` shards.
#[must_use]
pub fn manifest(shards: u32) -> String {
    format!("ds-server acid layout\nversion {LAYOUT_VERSION}\nshards {shards}\nhash seahash\n")
}

/// The shard of a stream.
#[must_use]
pub fn shard_of(name: &str, shards: usize) -> usize {
    (seahash::hash(name.as_bytes()) as usize) & (shards - 1)
}

/// A shard's file name.
#[must_use]
pub fn shard_name(index: usize) -> String {
    format!("shard-{index:03}.redb")
}

/// The acid directory inside a data directory.
#[must_use]
pub fn acid_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("acid")
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads and checks the manifest; `None` if there is none.
///
/// # Errors
/// An unreadable or foreign manifest.
pub fn read_manifest(fs: &dyn Fs, dir: &Path) -> io::Result<Option<u32>> {
    let bytes = match crate::fs::read_small(fs, &dir.join(MANIFEST)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8(bytes).map_err(|_| invalid("acid MANIFEST is not text".into()))?;
    let mut lines = text.lines();
    let bad = || {
        invalid(format!(
            "{} is not a ds-server acid manifest:\n{text}",
            dir.join(MANIFEST).display()
        ))
    };
    if lines.next() != Some("ds-server acid layout") {
        return Err(bad());
    }
    let version =
        lines.next().and_then(|l| l.strip_prefix("version ")).and_then(|v| v.parse::<u32>().ok());
    if version != Some(LAYOUT_VERSION) {
        return Err(invalid(format!(
            "{} has layout version {version:?}; this server reads version {LAYOUT_VERSION}",
            dir.join(MANIFEST).display()
        )));
    }
    let shards =
        lines.next().and_then(|l| l.strip_prefix("shards ")).and_then(|v| v.parse::<u32>().ok());
    let hash = lines.next();
    match (shards, hash, lines.next()) {
        (Some(n), Some("hash seahash"), None) if n.is_power_of_two() => Ok(Some(n)),
        _ => Err(bad()),
    }
}

/// Opens (creating on first start) the shards of `dir`, checking the manifest against the
/// configured shard count.
///
/// # Errors
/// A manifest that disagrees with `shards` or is foreign, shards without a manifest, I/O or
/// redb errors.
pub fn open_shards(fs: &Arc<dyn Fs>, dir: &Path, shards: u32) -> io::Result<Vec<Database>> {
    if !shards.is_power_of_two() {
        return Err(invalid(format!("the acid shard count must be a power of two, not {shards}")));
    }
    fs.create_dir_all(dir)?;
    for name in fs.list(dir)? {
        if name.ends_with(fs::TMP_SUFFIX) {
            fs.remove(&dir.join(name))?;
        }
    }
    match read_manifest(fs.as_ref(), dir)? {
        Some(found) if found == shards => {}
        Some(found) => {
            return Err(invalid(format!(
                "{} was laid out for {found} shards, but DS_STORAGE__ACID_SHARD_COUNT is {shards}: \
                 set it to {found} (streams are placed by hash, so the count cannot change)",
                dir.display()
            )));
        }
        None => {
            if fs.list(dir)?.iter().any(|n| n.ends_with(".redb")) {
                return Err(invalid(format!(
                    "{} holds shard files but no MANIFEST: refusing to guess its layout",
                    dir.display()
                )));
            }
            fs::write_atomic(fs.as_ref(), dir, MANIFEST, manifest(shards).as_bytes(), true)?;
        }
    }
    (0..shards as usize).map(|i| open_shard(fs, dir, i)).collect()
}

fn open_shard(fs: &Arc<dyn Fs>, dir: &Path, index: usize) -> io::Result<Database> {
    open_database(fs, dir, &shard_name(index), CACHE_BYTES_PER_SHARD)
}

/// Opens the redb database `dir/name`, creating it if missing: as `name.tmp`, initialised by
/// redb (which syncs it), renamed into place, the directory synced; so a cut leaves either
/// no database or a whole empty one. Used for the acid shards and the subscriptions'
/// control database.
///
/// # Errors
/// I/O and redb errors.
pub(crate) fn open_database(
    fs: &Arc<dyn Fs>,
    dir: &Path,
    name: &str,
    cache_bytes: usize,
) -> io::Result<Database> {
    let path = dir.join(name);
    let file = match fs.open(&path, OpenMode::ReadWrite) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{name}{}", fs::TMP_SUFFIX));
            match fs.remove(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let fresh = fs.open(&tmp, OpenMode::CreateNew)?;
            drop(redb::Builder::new().create_with_backend(FsBackend(fresh)).map_err(redb_io)?);
            fs.rename(&tmp, &path)?;
            fs.sync_dir(dir)?;
            fs.open(&path, OpenMode::ReadWrite)?
        }
        Err(e) => return Err(e),
    };
    let shown = std::sync::atomic::AtomicBool::new(false);
    let database = path.display().to_string();
    redb::Builder::new()
        .set_cache_size(cache_bytes)
        .set_repair_callback(move |session| {
            if !shown.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    database,
                    progress = session.progress(),
                    "redb database was not closed cleanly: redb is checking it and rebuilding \
                     its allocator state (reads the whole file)"
                );
            }
        })
        .create_with_backend(FsBackend(file))
        .map_err(redb_io)
}

/// A redb error as an I/O error, for start-up reporting.
pub fn redb_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("redb: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sim::{SimFs, Torn};

    #[test]
    fn manifest_is_checked_and_shards_are_created_once() {
        let sim = SimFs::new();
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let dir = Path::new("/data/acid");
        assert_eq!(open_shards(&fs, dir, 4).unwrap().len(), 4);
        assert_eq!(read_manifest(fs.as_ref(), dir).unwrap(), Some(4));
        let err = open_shards(&fs, dir, 8).err().unwrap();
        assert!(err.to_string().contains("laid out for 4 shards"), "{err}");
        // A power cut right after the first start leaves a directory that opens.
        let after: Arc<dyn Fs> = Arc::new(sim.power_loss(Torn::Prefix(1)));
        assert_eq!(open_shards(&after, dir, 4).unwrap().len(), 4);
    }

    #[test]
    fn a_first_start_cut_short_opens_again() {
        for syncs in 0..12 {
            let sim = SimFs::new();
            let fs: Arc<dyn Fs> = Arc::new(sim.clone());
            sim.fail_at_sync(syncs);
            let _ = open_shards(&fs, Path::new("/data/acid"), 2);
            let after: Arc<dyn Fs> = Arc::new(sim.power_loss(Torn::Prefix(syncs)));
            let opened = open_shards(&after, Path::new("/data/acid"), 2);
            assert!(opened.is_ok(), "cut at sync {syncs}: {:?}", opened.err());
        }
    }

    #[test]
    fn routing_is_stable_and_spread() {
        let counts = (0..1000).fold([0usize; 4], |mut c, i| {
            c[shard_of(&format!("stream-{i}"), 4)] += 1;
            c
        });
        assert!(counts.iter().all(|c| *c > 150), "{counts:?}");
        assert_eq!(shard_of("a/b", 8), shard_of("a/b", 8));
    }
}
