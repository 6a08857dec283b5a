//! The [`Engine`] façade: the one entry point of the HTTP layer. It turns request bodies into
//! payloads (JSON validation and flattening), reads the clock, calls the store once per
//! operation, and keeps the expiry index in step with creations.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{EngineConfig, StorageMode};
use crate::error::Result;
use crate::json::{self, JsonUse};
use crate::memory::MemoryStore;
use crate::notify::TailWatch;
use crate::offset::ReadFrom;
use crate::payload::Payload;
use crate::store::{
    AppendRequest, Appended, CreateRequest, Created, Expiry, ReadChunk, Store, StreamInfo,
};
use crate::ttl::{self, ExpiryIndex};

/// Longest the sweeper sleeps without looking at the clock again.
const SWEEP_IDLE_MAX: Duration = Duration::from_secs(60);

/// Why the engine could not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The storage mode is not available in this build.
    ModeUnavailable(StorageMode),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::ModeUnavailable(mode) => {
                write!(f, "storage mode `{}` is not available yet; use `memory`", mode.as_str())
            }
        }
    }
}

impl std::error::Error for OpenError {}

/// The storage engine.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    expiry: ExpiryIndex,
    config: EngineConfig,
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
    /// [`OpenError::ModeUnavailable`] for a storage mode this build cannot serve.
    pub fn open(config: EngineConfig) -> Result<Engine, OpenError> {
        Engine::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens the engine with an injected clock (tests use [`crate::ManualClock`]).
    ///
    /// # Errors
    /// As [`Engine::open`].
    pub fn open_with_clock(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, OpenError> {
        let store: Arc<dyn Store> = match config.mode {
            StorageMode::Memory => {
                // Incarnations start from the clock, so a restarted memory server never
                // reuses an ETag a client may hold from before.
                Arc::new(MemoryStore::new(config.limits, clock.now_ms().saturating_mul(1024)))
            }
            other => return Err(OpenError::ModeUnavailable(other)),
        };
        Ok(Engine { store, clock, expiry: ExpiryIndex::default(), config })
    }

    /// The configuration the engine was opened with.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Creates a stream, or confirms an identical one (§5.1).
    ///
    /// # Errors
    /// [`crate::Error::ConfigMismatch`], [`crate::Error::ExpiryInPast`], invalid JSON, size
    /// limits.
    pub async fn create(&self, name: &str, req: CreateRequest) -> Result<Created> {
        let payload = if req.content_type.is_json() && !req.body.is_empty() {
            json::split_messages(&req.body, JsonUse::Create)?
        } else {
            Payload::opaque(req.body.clone())
        };
        let now = self.clock.now_ms();
        if matches!(req.expiry, Expiry::At { unix_ms } if unix_ms <= now) {
            return Err(crate::Error::ExpiryInPast);
        }
        let created = self.store.create(name, &req, payload, now)?;
        if let Created::New(info) = &created {
            if let Some(at) = ttl::deadline(info.expiry, now) {
                self.expiry.schedule(at, name, info.incarnation);
                // A delete may have run between the create and the line above, and found
                // nothing to unschedule: check, so no entry outlives its stream.
                let alive =
                    self.store.head(name, now).is_ok_and(|s| s.incarnation == info.incarnation);
                if !alive {
                    self.expiry.unschedule(info.incarnation);
                }
            }
        }
        Ok(created)
    }

    /// Appends, closes, or both (§5.2, §5.3).
    ///
    /// # Errors
    /// Every append refusal in [`crate::Error`].
    pub async fn append(&self, name: &str, req: AppendRequest) -> Result<Appended> {
        let json_body = req.content_type.as_ref().is_some_and(|ct| ct.is_json());
        let payload = if json_body && !req.body.is_empty() {
            json::split_messages(&req.body, JsonUse::Append)
        } else {
            Ok(Payload::opaque(req.body.clone()))
        };
        self.store.append(name, &req, payload, self.clock.now_ms())
    }

    /// Reads one chunk of at most the configured size (§5.6). Renews a sliding TTL.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] and offset errors.
    pub async fn read(&self, name: &str, from: ReadFrom) -> Result<ReadChunk> {
        self.store.read(name, from, self.config.read_chunk_bytes, self.clock.now_ms())
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
        self.store.read(name, from, max, self.clock.now_ms())
    }

    /// Metadata (§5.5). Does not renew a sliding TTL.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`].
    pub async fn head(&self, name: &str) -> Result<StreamInfo> {
        self.store.head(name, self.clock.now_ms())
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
        self.store.touch(name, self.clock.now_ms());
    }

    /// Deletes a stream (§5.4); its live readers are woken and see it gone.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`].
    pub async fn delete(&self, name: &str) -> Result<()> {
        let incarnation = self.store.delete(name, self.clock.now_ms())?;
        self.expiry.unschedule(incarnation);
        Ok(())
    }

    /// Watches a stream's tail, for long-poll and SSE.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`].
    pub async fn subscribe(&self, name: &str) -> Result<(StreamInfo, TailWatch)> {
        self.store.subscribe(name, self.clock.now_ms())
    }

    /// Removes every stream whose expiry is due; returns how many. The sweeper task calls
    /// this; tests call it directly with a manual clock.
    pub fn sweep_expired(&self) -> usize {
        self.expiry.sweep(self.store.as_ref(), self.clock.now_ms())
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
            self.sweep_expired();
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
