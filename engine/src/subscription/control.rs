//! Where subscriptions and their keys live between restarts, in the persistent modes
//! (`file-fast`, `file-durable`, `acid`): the directory `subscriptions/` of the data
//! directory (see `engine/FORMAT.md`, "Subscriptions"). Every file goes through [`Fs`].
//!
//! - `control.redb`: one redb database; table `subscriptions` maps an id to its record
//!   ([`crate::subscription::record`]), table `meta` holds the next incarnation. Every write
//!   is one redb transaction committed durably (redb syncs before `commit` returns), in every
//!   persistent mode: a subscription change is rare next to appends, and an answer that
//!   depends on it (a claim, an ack) must not be undone by a crash.
//! - `keys.json` (mode 0600): the webhook signing key's seed, the token secret, and signing
//!   keys retired less than [`RETIRED_KEY_SECS`] ago, written atomically.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::{Value, json};

use crate::acid::layout::{open_database, redb_io};
use crate::fs::{self, Fs};
use crate::subscription::record;
use crate::subscription::state::Subscription;

/// The directory under the data directory.
pub const DIR: &str = "subscriptions";
/// The control database.
pub const DB_FILE: &str = "control.redb";
/// The keys.
pub const KEYS_FILE: &str = "keys.json";
/// How long a retired signing key stays in the JWKS: the receivers' replay window (five
/// minutes, §7.1), plus the JWKS's cache lifetime (five minutes), plus a margin.
pub const RETIRED_KEY_SECS: u64 = 15 * 60;

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("subscriptions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_INCARNATION: &str = "next_incarnation";
/// The control database is small: a few MiB of cache hold all of it.
const CACHE_BYTES: usize = 8 << 20;

/// What was stored.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// Ids whose records could not be read (left in place, logged).
    pub damaged: Vec<String>,
    /// No incarnation below this was ever given.
    pub next_incarnation: u64,
}

/// The control database.
pub struct Control {
    db: Database,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

/// `data_dir/subscriptions`.
#[must_use]
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

impl Control {
    /// Opens (or creates) the control database of `data_dir`.
    ///
    /// # Errors
    /// I/O and redb errors.
    pub fn open(fs: &Arc<dyn Fs>, data_dir: &Path) -> io::Result<Control> {
        let dir = dir(data_dir);
        fs.create_dir_all(&dir)?;
        let db = open_database(fs, &dir, DB_FILE, CACHE_BYTES)?;
        let txn = db.begin_write().map_err(redb_io)?;
        txn.open_table(RECORDS).map_err(redb_io)?;
        txn.open_table(META).map_err(redb_io)?;
        txn.commit().map_err(redb_io)?;
        Ok(Control { db })
    }

    /// Everything stored.
    ///
    /// # Errors
    /// I/O and redb errors.
    pub fn load(&self) -> io::Result<Loaded> {
        let txn = self.db.begin_read().map_err(redb_io)?;
        let records = txn.open_table(RECORDS).map_err(redb_io)?;
        let mut out = Loaded::default();
        for row in records.iter().map_err(redb_io)? {
            let (id, bytes) = row.map_err(redb_io)?;
            match record::decode(bytes.value()).filter(|s| s.id == id.value()) {
                Some(sub) => out.subscriptions.push(sub),
                None => out.damaged.push(id.value().to_owned()),
            }
        }
        let meta = txn.open_table(META).map_err(redb_io)?;
        out.next_incarnation =
            meta.get(NEXT_INCARNATION).map_err(redb_io)?.map_or(1, |v| v.value());
        Ok(out)
    }

    /// Stores `puts`, removes `deletes` and records `next_incarnation`, in one durable
    /// transaction.
    ///
    /// # Errors
    /// I/O and redb errors (nothing is stored then).
    pub fn write(
        &self,
        puts: &[(String, Vec<u8>)],
        deletes: &[String],
        next_incarnation: u64,
    ) -> io::Result<()> {
        let txn = self.db.begin_write().map_err(redb_io)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(redb_io)?;
            for (id, bytes) in puts {
                records.insert(id.as_str(), bytes.as_slice()).map_err(redb_io)?;
            }
            for id in deletes {
                records.remove(id.as_str()).map_err(redb_io)?;
            }
            let mut meta = txn.open_table(META).map_err(redb_io)?;
            meta.insert(NEXT_INCARNATION, next_incarnation).map_err(redb_io)?;
        }
        txn.commit().map_err(redb_io)
    }
}

/// The secrets of subscriptions, as `keys.json` holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKeys {
    /// The signing key's 32-byte seed (absent when a key file is configured).
    pub signing_seed: Option<Vec<u8>>,
    /// The public key (`x`) that signed last, to retire when the key changes.
    pub signing_x: String,
    /// The secret of callback and claim tokens.
    pub token_secret: Vec<u8>,
    /// Retired public keys (`x`) and until when (Unix seconds) they stay published.
    pub retired: Vec<(String, u64)>,
}

impl StoredKeys {
    /// Decodes what [`StoredKeys::encode`] wrote; `None` if it is damaged.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<StoredKeys> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        if v.get("v").and_then(Value::as_u64) != Some(1) {
            return None;
        }
        let b64 =
            |field: &str| v.get(field).and_then(Value::as_str).and_then(|s| B64.decode(s).ok());
        let signing_seed = match v.get("signing_seed") {
            None | Some(Value::Null) => None,
            Some(_) => Some(b64("signing_seed").filter(|s| s.len() == 32)?),
        };
        let token_secret = b64("token_secret").filter(|s| s.len() >= 32)?;
        let signing_x = v.get("signing_x").and_then(Value::as_str)?.to_owned();
        let retired = v
            .get("retired")
            .and_then(Value::as_array)?
            .iter()
            .map(|r| Some((r.get("x")?.as_str()?.to_owned(), r.get("until")?.as_u64()?)))
            .collect::<Option<Vec<_>>>()?;
        Some(StoredKeys { signing_seed, signing_x, token_secret, retired })
    }

    /// The keys as JSON (`keys.json`, or the `postgres` mode's `ds_sub_control.keys`).
    #[must_use]
    pub fn encode(&self) -> String {
        let retired: Vec<Value> =
            self.retired.iter().map(|(x, until)| json!({"x": x, "until": until})).collect();
        json!({
            "v": 1,
            "signing_seed": self.signing_seed.as_ref().map(|s| B64.encode(s)),
            "signing_x": self.signing_x,
            "token_secret": B64.encode(&self.token_secret),
            "retired": retired,
        })
        .to_string()
    }
}

/// Reads `data_dir/subscriptions/keys.json`; `None` if there is none.
///
/// # Errors
/// I/O errors, or a damaged file (refusing to start beats silently changing keys).
pub fn read_keys(fs: &dyn Fs, data_dir: &Path) -> io::Result<Option<StoredKeys>> {
    let path = dir(data_dir).join(KEYS_FILE);
    let bytes = match fs::read_small(fs, &path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    StoredKeys::decode(&bytes).map(Some).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{} is damaged", path.display()))
    })
}

/// Writes `data_dir/subscriptions/keys.json` atomically, readable by the owner only.
///
/// # Errors
/// I/O errors.
pub fn write_keys(fs: &dyn Fs, data_dir: &Path, keys: &StoredKeys) -> io::Result<()> {
    let dir = dir(data_dir);
    fs.create_dir_all(&dir)?;
    fs::write_atomic_private(fs, &dir, KEYS_FILE, keys.encode().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::OpenMode;
    use crate::fs::sim::SimFs;

    #[test]
    fn keys_round_trip_and_damage_is_refused() {
        let sim = SimFs::new();
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let data = Path::new("/data");
        assert_eq!(read_keys(fs.as_ref(), data).unwrap(), None);
        let keys = StoredKeys {
            signing_seed: Some(vec![7; 32]),
            signing_x: "x1".into(),
            token_secret: vec![9; 32],
            retired: vec![("x0".into(), 1_000)],
        };
        write_keys(fs.as_ref(), data, &keys).unwrap();
        assert_eq!(read_keys(fs.as_ref(), data).unwrap(), Some(keys));
        let path = dir(data).join(KEYS_FILE);
        let f = fs.open(&path, OpenMode::ReadWrite).unwrap();
        f.write_all_at(b"{", 0).unwrap();
        f.set_len(1).unwrap();
        assert_eq!(read_keys(fs.as_ref(), data).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    /// The secrets are readable by their owner only.
    #[test]
    fn the_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let data = std::env::temp_dir().join(format!("ds-keys-mode-{}", std::process::id()));
        let fs = crate::fs::StdFs::default();
        let keys = StoredKeys {
            signing_seed: Some(vec![1; 32]),
            signing_x: "x".into(),
            token_secret: vec![2; 32],
            retired: Vec::new(),
        };
        write_keys(&fs, &data, &keys).unwrap();
        write_keys(&fs, &data, &keys).unwrap();
        let mode = std::fs::metadata(dir(&data).join(KEYS_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn records_survive_reopening_and_deletes_stick() {
        let sim = SimFs::new();
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let data = Path::new("/data");
        let control = Control::open(&fs, data).unwrap();
        let loaded = control.load().unwrap();
        assert!(loaded.subscriptions.is_empty());
        assert_eq!(loaded.next_incarnation, 1);
        let sub = |id: &str| {
            let config = crate::subscription::state::Config {
                delivery: crate::subscription::state::Delivery::PullWake {
                    wake_stream: "w".into(),
                },
                pattern: None,
                streams: vec!["a".into()],
                lease_ttl_ms: 1_000,
                description: None,
            };
            Subscription::new(id.into(), 4, config, 1, &|_: &str| None, [])
        };
        let (a, b) = (sub("a"), sub("b"));
        control
            .write(&[("a".into(), record::encode(&a)), ("b".into(), record::encode(&b))], &[], 5)
            .unwrap();
        control.write(&[], &["b".into()], 6).unwrap();
        drop(control);
        let control = Control::open(&fs, data).unwrap();
        let loaded = control.load().unwrap();
        assert_eq!(loaded.subscriptions, vec![a]);
        assert_eq!(loaded.next_incarnation, 6);
        control.write(&[("x".into(), b"not a record".to_vec())], &[], 6).unwrap();
        assert_eq!(control.load().unwrap().damaged, vec!["x".to_owned()]);
    }
}
