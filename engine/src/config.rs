//! Engine configuration: the storage mode and every limit, with units last in each name.

/// Which backend holds the streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StorageMode {
    /// Everything in memory; nothing survives a restart.
    #[default]
    Memory,
    /// One append log per stream, written through the page cache: survives a process crash.
    FileFast,
    /// Like `FileFast`, but acknowledged only after `fdatasync`: survives power loss.
    FileDurable,
    /// Sharded redb files with one transaction per mutation.
    Acid,
    /// Tables in a PostgreSQL database that any number of nodes share.
    Postgres,
}

impl StorageMode {
    /// Parses the `DS_STORAGE__MODE` spelling.
    #[must_use]
    pub fn parse(value: &str) -> Option<StorageMode> {
        match value {
            "memory" => Some(StorageMode::Memory),
            "file-fast" => Some(StorageMode::FileFast),
            "file-durable" => Some(StorageMode::FileDurable),
            "acid" => Some(StorageMode::Acid),
            "postgres" => Some(StorageMode::Postgres),
            _ => None,
        }
    }

    /// The `DS_STORAGE__MODE` spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            StorageMode::Memory => "memory",
            StorageMode::FileFast => "file-fast",
            StorageMode::FileDurable => "file-durable",
            StorageMode::Acid => "acid",
            StorageMode::Postgres => "postgres",
        }
    }
}

/// Size limits. A write that would break one is refused whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest stream, in stored bytes.
    pub max_stream_bytes: u64,
    /// All streams together, in stored bytes (memory mode).
    pub max_memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_stream_bytes: 10 * MIB, max_memory_bytes: 100 * MIB }
    }
}

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// Everything the engine needs to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// The backend.
    pub mode: StorageMode,
    /// Root directory of the persistent backends.
    pub data_dir: std::path::PathBuf,
    /// Size limits.
    pub limits: Limits,
    /// Most bytes one read returns (a JSON message larger than this is returned whole).
    pub read_chunk_bytes: usize,
    /// Most log files the persistent modes keep open at once.
    pub max_open_files: usize,
    /// Shards of the acid mode (a power of two).
    pub acid_shard_count: u32,
    /// Size of the `file-durable` journal (`log::journal`); 0 runs without one.
    pub journal_bytes: u64,
    /// The `postgres` mode's database: a libpq connection string or URL (several hosts and
    /// `target_session_attrs=read-write` let a node follow a failover).
    pub postgres_url: String,
    /// Connections the `postgres` mode opens at most.
    pub postgres_pool_size: usize,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            mode: StorageMode::Memory,
            data_dir: std::path::PathBuf::from("./data/streams"),
            limits: Limits::default(),
            read_chunk_bytes: 1024 * 1024,
            max_open_files: 1024,
            acid_shard_count: 4,
            journal_bytes: crate::log::journal::DEFAULT_JOURNAL_BYTES,
            postgres_url: String::new(),
            postgres_pool_size: 16,
        }
    }
}
