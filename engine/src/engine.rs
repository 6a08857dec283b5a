//! The [`Engine`] façade: the one entry point of the HTTP layer. It turns request bodies into
//! payloads (JSON validation and flattening), reads the clock, calls the store once per
//! operation, and keeps the expiry index in step with creations and deletions.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::acid::{self, AcidStore};
use crate::clock::{Clock, SystemClock, UnixMs};
use crate::config::{EngineConfig, StorageMode};
use crate::error::{Error, Result};
use crate::fs::{Fs, StdFs};
use crate::json::{self, JsonUse};
use crate::log::recovery::{self, Report};
use crate::log::{Durability, FileStore};
use crate::memory::MemoryStore;
use crate::notify::TailWatch;
use crate::offset::{Offset, ReadFrom, TagCheck};
use crate::payload::Payload;
use crate::pg::PgStore;
use crate::stats::EngineStats;
use crate::store::{
    AppendRequest, AppendTicket, Appended, CreateRequest, Created, Expiry, ExpiryCheck, ForkLink,
    ForkOf, ForkRequest, ReadChunk, Store, StreamInfo,
};
use crate::ttl::{self, Expiring, ExpiryIndex};

/// Longest the sweeper sleeps without looking at the clock again.
const SWEEP_IDLE_MAX: Duration = Duration::from_secs(60);

/// Why the engine could not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The data directory cannot be created or locked.
    DataDir(String),
    /// Another process holds the data directory's lock.
    Locked(String),
    /// The `postgres` mode's settings are unusable (a connection string that does not parse).
    Database(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::DataDir(why) => write!(f, "data directory: {why}"),
            OpenError::Locked(dir) => write!(
                f,
                "data directory {dir} is in use by another ds-server (its LOCK file is held); \
                 stop that server or choose another DS_STORAGE__DATA_DIR"
            ),
            OpenError::Database(why) => write!(f, "database: {why}"),
        }
    }
}

/// The lock file that keeps a second server off a data directory.
pub const LOCK_FILE: &str = "LOCK";

impl std::error::Error for OpenError {}

/// The backends, dispatched statically.
enum Backend {
    Memory(MemoryStore),
    File(FileStore),
    Acid(AcidStore),
    Postgres(PgStore),
}

/// Runs `$body` with `$store` bound to whichever backend is open.
macro_rules! with_store {
    ($backend:expr, $store:ident => $body:expr) => {
        match $backend {
            Backend::Memory($store) => $body,
            Backend::File($store) => $body,
            Backend::Acid($store) => $body,
            Backend::Postgres($store) => $body,
        }
    };
}

/// Set once the backend is open (at once in memory mode, after recovery otherwise).
#[derive(Default)]
struct Readiness {
    backend: OnceLock<Backend>,
    failed: OnceLock<String>,
    changed: Notify,
}

impl Readiness {
    fn backend(&self) -> Result<&Backend> {
        self.backend.get().ok_or(Error::Unavailable("the server is still recovering its data"))
    }
}

/// A boxed future, for the recursion of fork views.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs a create or delete as a task of its own, so that it completes even if the caller's
/// future is dropped (hyper drops a handler whose client hung up): otherwise a stream could
/// be committed to disk but unknown in memory, deleted on disk with its readers never told,
/// or created without its expiry scheduled.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work).await.map_err(|e| Error::Storage(format!("storage task failed: {e}")))?
}

/// What the engine tells subscriptions about streams (see [`crate::subscription::service`]).
/// Called after the change is as durable as the mode promises, outside every store lock.
pub(crate) trait StreamHook: Send + Sync {
    /// Whether an append to `name` may concern a subscription: cheap, asked on every append.
    fn concerns(&self, name: &str) -> bool;
    /// Data was appended to `name`: its tail moved from `start` to `tail`.
    fn appended(&self, name: &str, start: Offset, tail: Offset);
    /// `name` was deleted or expired.
    fn removed(&self, name: &str);
}

/// The hook, once subscriptions are open; weak, since they hold the engine.
#[derive(Default)]
struct HookSlot(OnceLock<std::sync::Weak<dyn StreamHook>>);

impl HookSlot {
    fn get(&self) -> Option<Arc<dyn StreamHook>> {
        self.0.get().and_then(std::sync::Weak::upgrade)
    }
}

/// The storage engine.
pub struct Engine {
    ready: Arc<Readiness>,
    hook: Arc<HookSlot>,
    fs: Arc<dyn Fs>,
    clock: Arc<dyn Clock>,
    expiry: Arc<ExpiryIndex>,
    config: EngineConfig,
    /// What the engine counts for the server's metrics.
    stats: Arc<EngineStats>,
    /// Held while the engine lives: the data directory's exclusive lock.
    _lock: Option<std::fs::File>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the engine with the system clock.
    ///
    /// # Errors
    /// [`OpenError::DataDir`] or [`OpenError::Locked`] for a persistent mode's directory.
    pub fn open(config: EngineConfig) -> Result<Engine, OpenError> {
        Engine::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens the engine with an injected clock (tests use [`crate::ManualClock`]) on the real
    /// file system.
    ///
    /// # Errors
    /// As [`Engine::open`].
    pub fn open_with_clock(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, OpenError> {
        // The postgres mode keeps everything in the database: its nodes need no directory.
        let lock = match config.mode {
            StorageMode::Memory | StorageMode::Postgres => None,
            _ => Some(lock_data_dir(&config.data_dir)?),
        };
        let mut engine = Engine::open_on(config, clock, Arc::new(StdFs::default()))?;
        engine._lock = lock;
        Ok(engine)
    }

    /// Opens the engine on any [`Fs`] (tests use [`crate::fs::sim::SimFs`]); the caller is
    /// responsible for exclusive use of the directory. In the persistent modes recovery runs
    /// on a blocking thread when a Tokio runtime is present (see [`Engine::ready`]), inline
    /// otherwise.
    ///
    /// # Errors
    /// As [`Engine::open`].
    pub fn open_on(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        fs: Arc<dyn Fs>,
    ) -> Result<Engine, OpenError> {
        let engine = Engine {
            ready: Arc::new(Readiness::default()),
            hook: Arc::new(HookSlot::default()),
            fs: fs.clone(),
            clock,
            expiry: Arc::new(ExpiryIndex::default()),
            config,
            stats: Arc::default(),
            _lock: None,
        };
        let durability = match engine.config.mode {
            StorageMode::Memory => {
                // Incarnations start from the clock, so a restarted memory server never
                // reuses an ETag a client may hold from before.
                let seed = engine.clock.now_ms().saturating_mul(1024);
                let store = MemoryStore::new(engine.config.limits, seed);
                engine.stats.opened(Duration::ZERO);
                let _ = engine.ready.backend.set(Backend::Memory(store));
                return Ok(engine);
            }
            StorageMode::Postgres => {
                engine.open_postgres()?;
                return Ok(engine);
            }
            StorageMode::FileFast => Some(Durability::ProcessCrash),
            StorageMode::FileDurable => Some(Durability::PowerLoss),
            StorageMode::Acid => None,
        };
        let recover = {
            let (ready, expiry, config) =
                (engine.ready.clone(), engine.expiry.clone(), engine.config.clone());
            let now = engine.clock.now_ms();
            let stats = engine.stats.clone();
            let started = std::time::Instant::now();
            move || {
                let opened = match durability {
                    Some(durability) => recovery::open(
                        fs,
                        &config.data_dir,
                        durability,
                        config.limits,
                        recovery::Options {
                            max_open_files: config.max_open_files,
                            journal_bytes: config.journal_bytes,
                        },
                        now,
                        stats.commits.clone(),
                    )
                    .map(|(store, expiring, report)| {
                        log_report(&config.data_dir, &report);
                        (Backend::File(store), expiring)
                    }),
                    None => acid::store::open(
                        &fs,
                        &config.data_dir,
                        config.limits,
                        config.acid_shard_count,
                        now,
                        stats.commits.clone(),
                    )
                    .map(|(store, expiring)| {
                        tracing::info!(
                            dir = %store.dir().display(),
                            shards = config.acid_shard_count,
                            streams = store.stream_count(),
                            "opened acid shards"
                        );
                        (Backend::Acid(store), expiring)
                    }),
                };
                match opened {
                    Ok((backend, expiring)) => {
                        schedule_recovered(&expiry, &expiring);
                        stats.opened(started.elapsed());
                        let _ = ready.backend.set(backend);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, dir = %config.data_dir.display(), "recovery failed");
                        let _ = ready.failed.set(e.to_string());
                    }
                }
                ready.changed.notify_waiters();
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(recover)),
            Err(_) => recover(),
        }
        Ok(engine)
    }

    /// Starts connecting to PostgreSQL in the background: the engine serves once the schema
    /// is migrated and the streams' names loaded, retrying (with a warning each time) while
    /// the database is unreachable, and fails for good only on settings that cannot work.
    fn open_postgres(&self) -> Result<(), OpenError> {
        let database = crate::pg::database(&self.config).map_err(|e| match e {
            crate::pg::OpenFailure::Config(why) | crate::pg::OpenFailure::Db(why) => {
                OpenError::Database(why)
            }
        })?;
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| OpenError::Database("the postgres mode needs a Tokio runtime".into()))?;
        let (ready, expiry, clock) = (self.ready.clone(), self.expiry.clone(), self.clock.clone());
        let limits = self.config.limits;
        let stats = self.stats.clone();
        let started = std::time::Instant::now();
        rt.spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                let commits = stats.commits.clone();
                match crate::pg::open(database.clone(), limits, clock.clone(), commits).await {
                    Ok((store, expiring)) => {
                        tracing::info!(streams = expiring.len(), "opened the PostgreSQL store");
                        schedule_recovered(&expiry, &expiring);
                        stats.opened(started.elapsed());
                        let _ = ready.backend.set(Backend::Postgres(store));
                        break;
                    }
                    Err(crate::pg::OpenFailure::Config(why)) => {
                        tracing::error!(error = %why, "cannot use the database");
                        let _ = ready.failed.set(why);
                        break;
                    }
                    Err(crate::pg::OpenFailure::Db(why)) => {
                        tracing::warn!(error = %why, retry_in_ms = delay.as_millis() as u64, "cannot reach PostgreSQL yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            ready.changed.notify_waiters();
        });
        Ok(())
    }

    /// Waits until the engine can serve: at once in memory mode, after recovery otherwise.
    ///
    /// # Errors
    /// Recovery failed (the message says why; the engine will never serve).
    pub async fn ready(&self) -> std::result::Result<(), String> {
        loop {
            let changed = self.ready.changed.notified();
            if self.ready.backend.get().is_some() {
                return Ok(());
            }
            if let Some(why) = self.ready.failed.get() {
                return Err(why.clone());
            }
            changed.await;
        }
    }

    /// Whether the engine can serve (for `/readyz`): recovered, and in the `postgres` mode
    /// with the database reachable.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        match self.ready.backend.get() {
            Some(Backend::Postgres(store)) => store.is_reachable(),
            Some(_) => true,
            None => false,
        }
    }

    fn backend(&self) -> Result<&Backend> {
        self.ready.backend()
    }

    /// What the engine counts for the server's metrics: commit rounds, time to open.
    #[must_use]
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Whether a failed write or sync stopped every write until a restart (the file and
    /// acid modes; never the others).
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        match self.ready.backend.get() {
            Some(Backend::File(store)) => store.is_poisoned(),
            Some(Backend::Acid(store)) => store.is_poisoned(),
            _ => false,
        }
    }

    /// Stops cleanly: in the persistent modes, checkpoints every stream and syncs, so the
    /// next start reads no log. Call after the last request.
    ///
    /// # Errors
    /// A storage error while doing so (the data is safe either way: recovery redoes it).
    pub async fn shutdown(&self) -> Result<()> {
        match self.ready.backend.get() {
            Some(Backend::File(store)) => store.shutdown().await,
            _ => Ok(()),
        }
    }

    /// Bytes charged to the memory limit (memory mode; `None` in the others).
    #[must_use]
    pub fn memory_used_bytes(&self) -> Option<u64> {
        match self.ready.backend.get() {
            Some(Backend::Memory(store)) => Some(store.used_bytes()),
            _ => None,
        }
    }

    /// The engine's clock: the wall clock, or the one a test injected.
    #[must_use]
    pub fn now_ms(&self) -> UnixMs {
        self.clock.now_ms()
    }

    /// The configuration the engine was opened with.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The file system the persistent stores use.
    pub(crate) fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    /// Installs the subscriptions' hook (once).
    pub(crate) fn set_hook(&self, hook: std::sync::Weak<dyn StreamHook>) {
        let _ = self.hook.0.set(hook);
    }

    /// A stream's tail, `None` if it does not exist (or is deleted and kept for its forks).
    #[must_use]
    pub fn tail(&self, name: &str) -> Option<Offset> {
        let backend = self.backend().ok()?;
        with_store!(backend, s => s.head(name, self.clock.now_ms())).ok().map(|i| i.tail)
    }

    /// Creates a stream, or confirms an identical one (§5.1).
    ///
    /// # Errors
    /// [`Error::ConfigMismatch`], [`Error::ExpiryInPast`], invalid JSON, size limits.
    pub async fn create(&self, name: &str, req: CreateRequest) -> Result<Created> {
        let payload = if req.content_type.is_json() && !req.body.is_empty() {
            json::split_messages(&req.body, JsonUse::Create)?
        } else {
            Payload::opaque(req.body.clone())
        };
        let now = self.clock.now_ms();
        if matches!(req.expiry, Expiry::At { unix_ms } if unix_ms <= now) {
            return Err(Error::ExpiryInPast);
        }
        self.create_resolved(name, req, payload, None, now).await
    }

    /// Creates a fork of another stream (§4.2), or confirms an identical one. The fork takes
    /// the source's content type unless the request names one (which must then match), and
    /// the source's TTL or expiry unless it sets its own. Its data before the fork offset is
    /// the source's, read in place; a sub-offset's few bytes or messages past the fork
    /// offset are copied into the fork as its first data.
    ///
    /// # Errors
    /// As [`Engine::create`]; [`Error::NotFound`] for a missing source,
    /// [`Error::SourceDeleted`], [`Error::ContentTypeMismatch`], [`Error::OffsetBeyondTail`],
    /// [`Error::SubOffsetOvershoot`], [`Error::Unsupported`] in modes without forks.
    pub async fn fork(
        &self,
        name: &str,
        mut req: CreateRequest,
        fork: ForkRequest,
    ) -> Result<Created> {
        let now = self.clock.now_ms();
        if matches!(req.expiry, Expiry::At { unix_ms } if unix_ms <= now) {
            return Err(Error::ExpiryInPast);
        }
        let backend = self.backend()?;
        let source = with_store!(backend, s => s.fetch_head(&fork.source, now).await)
            .map_err(|e| if e == Error::Gone { Error::SourceDeleted } else { e })?;
        if fork.content_type_given && !req.content_type.matches(&source.content_type) {
            return Err(Error::ContentTypeMismatch);
        }
        req.content_type = source.content_type.clone();
        if req.expiry == Expiry::Never {
            req.expiry = source.expiry;
        }
        let anchor = fork.offset.unwrap_or(source.tail);
        if anchor > source.tail {
            return Err(Error::OffsetBeyondTail);
        }
        if anchor.sub() != 0 {
            return Err(Error::OffsetUnknown);
        }
        // The fork point's token as the source mints it, which the fork then mints too.
        // An offset of an earlier incarnation of the source names nothing in it.
        let lineage = source.lineage();
        let at_tag = match lineage.check(anchor) {
            TagCheck::Foreign => return Err(Error::OffsetUnknown),
            TagCheck::Valid if anchor.tag() == 0 => lineage.stamp(anchor).tag(),
            // Checked (for an inherited position, by the stitched read below).
            TagCheck::Valid | TagCheck::Inherited => anchor.tag(),
        };
        let json = source.content_type.is_json();
        let source_name: Arc<str> = Arc::from(fork.source.as_str());
        let prefix = self
            .fork_prefix(backend, &source_name, anchor, source.tail, fork.sub, json)
            .await
            .map_err(|e| if e == Error::OffsetGone { Error::OffsetUnknown } else { e })?;
        let body = if json && !req.body.is_empty() {
            json::split_messages(&req.body, JsonUse::Create)?
        } else {
            Payload::opaque(req.body.clone())
        };
        let payload = prefix.then(body);
        let fork_of = ForkOf {
            link: ForkLink { source: source_name, at: anchor.pos(), at_tag },
            requested_offset: fork.offset,
            requested_sub: fork.sub,
        };
        self.create_resolved(name, req, payload, Some(fork_of), now).await
    }

    /// The data a fork copies past its fork offset: `sub` bytes, or `sub` JSON messages, of
    /// what the source shows from `anchor` (its own fork view included). Also checks that
    /// `anchor` is a position the source's store can read from (a message boundary for JSON,
    /// a record boundary in the file log).
    async fn fork_prefix(
        &self,
        backend: &Backend,
        source: &Arc<str>,
        anchor: Offset,
        tail: Offset,
        sub: u64,
        json: bool,
    ) -> Result<Payload> {
        if anchor == tail {
            return if sub == 0 { Ok(Payload::default()) } else { Err(Error::SubOffsetOvershoot) };
        }
        let mut parts = Vec::new();
        let mut have = 0u64;
        let mut at = anchor;
        // One read at least: it refuses an anchor inside a JSON message or a log record.
        while at < tail && (have < sub || parts.is_empty()) {
            let want =
                if json { self.config.read_chunk_bytes } else { to_usize(sub - have).max(1) };
            let (chunk, next) =
                self.view(backend, source.clone(), at, tail.pos(), want, false).await?;
            if next == at {
                break;
            }
            have += if json {
                json::split_messages(&json::wrap_array(chunk.clone()).concat(), JsonUse::Create)?
                    .record_count() as u64
            } else {
                chunk.iter().map(|b| b.len() as u64).sum()
            };
            parts.extend(chunk);
            at = next;
        }
        if have < sub {
            return Err(Error::SubOffsetOvershoot);
        }
        if sub == 0 {
            return Ok(Payload::default());
        }
        if json {
            let all = json::split_messages(&json::wrap_array(parts).concat(), JsonUse::Create)?;
            let end = all.record_ends()[to_usize(sub) - 1];
            let ends = all.record_ends()[..to_usize(sub)].to_vec();
            Ok(Payload::from_records(all.bytes().slice(..to_usize(end)), ends))
        } else {
            let mut bytes = parts.concat();
            bytes.truncate(to_usize(sub));
            Ok(Payload::opaque(Bytes::from(bytes)))
        }
    }

    /// The stored bytes `name` shows in `start..end` (at most `max`), its forks' inherited
    /// ranges read from their sources: whole records while they fit, the first one cut if it
    /// alone does not (or, with `whole`, nothing then). Renews no TTL. `start`'s tag is
    /// checked by the stream of the chain that owns its position, and the end comes back
    /// stamped by the one that owns it.
    fn view<'a>(
        &'a self,
        backend: &'a Backend,
        name: Arc<str>,
        start: Offset,
        end: u64,
        max: usize,
        whole: bool,
    ) -> BoxFuture<'a, Result<(Vec<Bytes>, Offset)>> {
        Box::pin(async move {
            let own = with_store!(backend, s => s.read_range(&name, start, end, max, whole).await)?;
            let lineage = own.lineage;
            let Some(link) = own.fork.filter(|l| start.pos() < l.at) else {
                if lineage.check(start) == TagCheck::Foreign {
                    return Err(Error::OffsetGone);
                }
                return Ok((own.parts, lineage.stamp(own.next)));
            };
            let at = link.at.min(end);
            let (mut parts, mut next) =
                self.view(backend, link.source.clone(), start, at, max, whole).await?;
            let taken: usize = parts.iter().map(Bytes::len).sum();
            if next == Offset::at(link.at) && link.at < end && taken < max {
                // Past the fork point only whole records join what the source gave.
                let rest = with_store!(backend, s => s.read_range(&name, next, end, max - taken, whole || taken > 0).await)?;
                parts.extend(rest.parts);
                if rest.next != next {
                    next = lineage.stamp(rest.next);
                }
            }
            Ok((parts, next))
        })
    }

    async fn create_resolved(
        &self,
        name: &str,
        req: CreateRequest,
        payload: Payload,
        fork: Option<ForkOf>,
        now: UnixMs,
    ) -> Result<Created> {
        let (ready, expiry, name) = (self.ready.clone(), self.expiry.clone(), name.to_owned());
        let hook = self.hook.clone();
        detached(async move {
            let backend = ready.backend()?;
            // Where a new stream's own data starts: a subscription that first matches it
            // through this create links it there (§6.2).
            let data_start = (!payload.is_empty())
                .then(|| fork.as_ref().map_or(Offset::ZERO, |f| Offset::at(f.link.at)));
            let created = with_store!(backend, s => s.create(&name, &req, payload, fork.as_ref(), now).await)?;
            if let (Created::New(info), Some(start)) = (&created, data_start)
                && let Some(hook) = hook.get()
                && hook.concerns(&name)
            {
                hook.appended(&name, start, info.tail);
            }
            if let Created::Existing(_) = &created {
                // An idempotent re-create is an access like any other (§5.1): it renews a
                // sliding TTL.
                with_store!(backend, s => s.touch(&name, now));
            }
            if let Created::New(info) = &created
                && let Some(at) = ttl::deadline(info.expiry, now)
            {
                expiry.schedule(at, &name, info.incarnation);
                // A delete may have run between the create and the line above, and found
                // nothing to unschedule: check, so no entry outlives its stream.
                let alive = with_store!(backend, s => s.fetch_head(&name, now).await)
                    .is_ok_and(|s| s.incarnation == info.incarnation);
                if !alive {
                    expiry.unschedule(info.incarnation);
                }
            }
            Ok(created)
        })
        .await
    }

    /// Appends, closes, or both (§5.2, §5.3); resolves once the append is as durable as the
    /// storage mode promises.
    ///
    /// # Errors
    /// Every append refusal in [`Error`].
    pub async fn append(&self, name: &str, req: AppendRequest) -> Result<Appended> {
        self.begin_append(name, req)?.durable().await
    }

    /// The first half of [`Engine::append`]: validates the append and makes it take effect
    /// (or refuses it) before returning, without waiting for durability. Later operations
    /// see it as accepted, so a front end may start the next request of a pipeline while
    /// this one's commit is pending, and one sync covers both. (In the `postgres` mode it
    /// queues the append instead; the commit round decides it, in queue order.)
    ///
    /// # Errors
    /// Every append refusal in [`Error`].
    pub fn begin_append(&self, name: &str, req: AppendRequest) -> Result<AppendTicket> {
        let mut ticket = self.begin_append_marked(name, req, false)?;
        if let Some(hook) = self.hook.get()
            && hook.concerns(name)
        {
            let name = name.to_owned();
            ticket.on_durable(Box::new(move |ack| hook.appended(&name, ack.start, ack.tail)));
        }
        Ok(ticket)
    }

    /// An append subscriptions do not hear of: their own wake events, so that a wake stream
    /// never wakes its own subscription (§6.3).
    pub(crate) async fn append_quiet(&self, name: &str, req: AppendRequest) -> Result<Appended> {
        self.begin_append_marked(name, req, true)?.durable().await
    }

    /// `quiet`: a wake event, which the `postgres` mode announces as such to the node
    /// that runs subscriptions (the other modes tell subscriptions of appends through the
    /// hook, which wake events skip).
    fn begin_append_marked(
        &self,
        name: &str,
        req: AppendRequest,
        quiet: bool,
    ) -> Result<AppendTicket> {
        let json_body = req.content_type.as_ref().is_some_and(|ct| ct.is_json());
        let payload = if json_body && !req.body.is_empty() {
            json::split_messages(&req.body, JsonUse::Append)
        } else {
            Ok(Payload::opaque(req.body.clone()))
        };
        let now = self.clock.now_ms();
        match self.backend()? {
            Backend::Postgres(s) => s.enqueue(name, &req, payload, now, quiet),
            backend => with_store!(backend, s => s.append(name, &req, payload, now)),
        }
    }

    /// The `postgres` store's shared state, once it is open (subscriptions keep their
    /// state in its database).
    pub(crate) fn postgres(&self) -> Option<Arc<crate::pg::Shared>> {
        match self.backend().ok()? {
            Backend::Postgres(s) => Some(s.shared().clone()),
            _ => None,
        }
    }

    /// Reads one chunk of at most the configured size (§5.6). Renews a sliding TTL.
    ///
    /// # Errors
    /// [`Error::NotFound`] and offset errors.
    pub async fn read(&self, name: &str, from: ReadFrom) -> Result<ReadChunk> {
        self.read_at_most(name, from, usize::MAX).await
    }

    /// Like [`Engine::read`], with a smaller chunk if `max_bytes` is below the configured one.
    ///
    /// # Errors
    /// As [`Engine::read`].
    pub async fn read_at_most(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadChunk> {
        let max = max_bytes.min(self.config.read_chunk_bytes);
        let now = self.clock.now_ms();
        let backend = self.backend()?;
        let chunk = match with_store!(backend, s => s.read(name, from, max, now).await) {
            Ok(chunk) => chunk,
            Err(e) => return Err(self.offset_error(backend, name, from, e, now).await),
        };
        let lineage = chunk.info.lineage();
        // The client's token, tag included (the store reads positions only).
        let start = match from {
            ReadFrom::At(off) => {
                if lineage.check(off) == TagCheck::Foreign {
                    return Err(Error::OffsetGone);
                }
                off
            }
            _ => lineage.stamp(chunk.start),
        };
        // A fork's inherited range: stitched from its sources, then its own data.
        match &chunk.info.fork {
            Some(link) if chunk.start.pos() < link.at => {
                let tail = chunk.info.tail;
                let (parts, next) =
                    self.view(backend, Arc::from(name), start, tail.pos(), max, false).await?;
                Ok(ReadChunk { parts, start, next, up_to_date: next == tail, ..chunk })
            }
            _ => Ok(ReadChunk { start, next: lineage.stamp(chunk.next), ..chunk }),
        }
    }

    /// A read refused for its offset: if the token was minted by an earlier incarnation of
    /// the name, say so (410) rather than how the position fails in the new stream.
    async fn offset_error(
        &self,
        backend: &Backend,
        name: &str,
        from: ReadFrom,
        e: Error,
        now: UnixMs,
    ) -> Error {
        let ReadFrom::At(off) = from else { return e };
        if !matches!(e, Error::OffsetBeyondTail | Error::OffsetUnknown) || off.tag() == 0 {
            return e;
        }
        match with_store!(backend, s => s.fetch_head(name, now).await) {
            Ok(info) if info.lineage().check(off) == TagCheck::Foreign => Error::OffsetGone,
            _ => e,
        }
    }

    /// Metadata (§5.5). Does not renew a sliding TTL.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn head(&self, name: &str) -> Result<StreamInfo> {
        with_store!(self.backend()?, s => s.fetch_head(name, self.clock.now_ms()).await)
    }

    /// Every live stream whose name starts with `prefix`, with its metadata (tail, closure),
    /// by name: what a subscription's pattern is matched against when it is created. Scans
    /// every stream the store holds (all of them are in memory), so it costs in proportion
    /// to the whole store.
    ///
    /// # Errors
    /// [`Error::Unavailable`] while recovering.
    pub fn list(&self, prefix: &str) -> Result<Vec<(Arc<str>, StreamInfo)>> {
        Ok(with_store!(self.backend()?, s => s.list(prefix, self.clock.now_ms())))
    }

    /// Closes without appending (§5.3): an append with no body and `Stream-Closed: true`.
    ///
    /// # Errors
    /// As [`Engine::append`].
    pub async fn close(&self, name: &str) -> Result<Appended> {
        self.append(name, AppendRequest { close: true, ..AppendRequest::default() }).await
    }

    /// Renews a sliding TTL because a live read (long-poll, SSE) just ended: the idle time
    /// of a stream counts from its last reader leaving, not from when that reader arrived.
    pub fn touch(&self, name: &str) {
        if let Ok(backend) = self.backend() {
            with_store!(backend, s => s.touch(name, self.clock.now_ms()));
        }
    }

    /// Deletes a stream (§5.4); its live readers are woken and see it gone.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn delete(&self, name: &str) -> Result<()> {
        let now = self.clock.now_ms();
        let (ready, expiry, name) = (self.ready.clone(), self.expiry.clone(), name.to_owned());
        let hook = self.hook.clone();
        detached(async move {
            let incarnation = with_store!(ready.backend()?, s => s.delete(&name, now).await)?;
            expiry.unschedule(incarnation);
            if let Some(hook) = hook.get() {
                hook.removed(&name);
            }
            Ok(())
        })
        .await
    }

    /// Watches a stream's tail, for long-poll and SSE.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn subscribe(&self, name: &str) -> Result<(StreamInfo, TailWatch)> {
        with_store!(self.backend()?, s => s.watch(name, self.clock.now_ms()).await)
    }

    /// Removes every stream whose expiry is due; returns how many. The sweeper task calls
    /// this; tests call it directly with a manual clock.
    pub async fn sweep_expired(&self) -> usize {
        let Ok(backend) = self.backend() else { return 0 };
        let now = self.clock.now_ms();
        let mut removed = 0;
        for (incarnation, name) in self.expiry.take_due(now) {
            let check = with_store!(backend, s => s.expire(&name, incarnation, now).await);
            match check {
                ExpiryCheck::Removed => {
                    removed += 1;
                    if let Some(hook) = self.hook.get() {
                        hook.removed(&name);
                    }
                }
                ExpiryCheck::Later(at) => self.expiry.schedule(at, &name, incarnation),
                ExpiryCheck::Missing => {}
            }
        }
        removed
    }

    /// Number of scheduled expiry checks (for tests and metrics).
    #[must_use]
    pub fn scheduled_expiries(&self) -> usize {
        self.expiry.len()
    }

    /// Runs the background sweeper until the task is dropped or aborted: it sleeps until the
    /// earliest deadline, or until a sooner one is scheduled.
    pub async fn run_sweeper(self: Arc<Self>) {
        loop {
            self.sweep_expired().await;
            let now = self.clock.now_ms();
            let sleep = self
                .expiry
                .next_due()
                .map_or(SWEEP_IDLE_MAX, |at| Duration::from_millis(at.saturating_sub(now)))
                .min(SWEEP_IDLE_MAX);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.expiry.sooner_scheduled() => {}
            }
        }
    }
}

/// Creates the data directory and takes its exclusive lock.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, OpenError> {
    use fs2::FileExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| OpenError::DataDir(format!("{}: {e}", dir.display())))?;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| OpenError::DataDir(format!("{}: {e}", path.display())))?;
    file.try_lock_exclusive().map_err(|_| OpenError::Locked(dir.display().to_string()))?;
    Ok(file)
}

fn schedule_recovered(expiry: &ExpiryIndex, expiring: &[Expiring]) {
    for e in expiring {
        if let Some(at) = ttl::deadline(e.expiry, e.last_access_ms) {
            expiry.schedule(at, &e.name, e.incarnation);
        }
    }
}

fn log_report(dir: &Path, report: &Report) {
    tracing::info!(
        dir = %dir.display(),
        streams = report.streams,
        records_scanned = report.records_scanned,
        torn_tails_cut = report.torn.len(),
        damaged = report.damaged.len(),
        skipped = report.skipped.len(),
        leftovers_removed = report.removed.len(),
        "recovered data directory"
    );
}

/// A count that indexes memory: always fits on the platforms we build for.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
