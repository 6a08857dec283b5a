//! [`Subscriptions`]: the subscription service a server runs beside its engine (§6–7). It
//! holds the [`Registry`] behind one lock, keeps it in the control database
//! ([`crate::subscription::control`]) in the persistent modes, hears of appends, deletions
//! and expiries through the engine's hook, and runs one scheduler task for leases, webhook
//! deliveries and retries, and pull-wake events. HTTP knows none of this: `ds-http` parses
//! a request, calls one method here, and renders what it returns.
//!
//! # Durability
//! Every change marks its subscription dirty; [`Subscriptions::flush`] writes every dirty
//! record in one durable transaction (records are encoded after the write lock is taken, so
//! a later write never holds an older record than an earlier one). A request whose answer
//! depends on a change (create, delete, links, claim, ack, callback, release) flushes before
//! answering. Changes made by the append hook and by timers are flushed by the scheduler,
//! and it flushes before it sends a webhook or writes a wake event: nothing reaches a
//! worker that a crash could take back. What a crash can lose is at most a wake not yet
//! announced, which the start-up pass makes again (at-least-once).
//!
//! # Start
//! Once the engine has recovered: the keys are read (or made and stored), the records
//! loaded, links reconciled with the streams that exist (a deleted stream's glob link
//! goes; a matching stream without a link, which a crash between an append and its flush
//! leaves, is linked at its own start), timers re-armed from the stored deadlines, webhook
//! wakes in flight delivered again (at their retry time, if one is scheduled), pull-wake
//! events of unclaimed wakes written again, and idle subscriptions with pending work woken.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};

use crate::engine::{Engine, StreamHook};
use crate::offset::Offset;
use crate::pg::listen::Feed;
use crate::pg::subs::{self, SubsDb};
use crate::store::AppendRequest;
use crate::subscription::cluster::{self, Call, Cluster, Event};
use crate::subscription::config::{self, ConfigError};
use crate::subscription::control::{self, Control, RETIRED_KEY_SECS, StoredKeys};
use crate::subscription::glob;
use crate::subscription::keys::{
    self, Claims, SigningKey, TOKEN_TTL_SECS, TokenError, TokenKey, Use,
};
use crate::subscription::record;
use crate::subscription::registry::{Put, PutError, Registry};
use crate::subscription::state::{
    Delivered, Delivery, Fence, MAX_ACKS, Refusal, Subscription, Tails, Woke, retry_delay_ms,
};
use crate::subscription::view;

/// Most webhook deliveries in flight at once, server-wide.
pub const MAX_DELIVERIES: usize = 64;
/// Longest worker name a claim accepts, in bytes.
pub const MAX_WORKER_BYTES: usize = 256;
/// Largest integer a JSON number carries exactly (2^53): a larger `generation` is refused.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// How often the subscription leader (`postgres` mode) reads the tails of the streams its
/// subscriptions concern, in case a notification went missing.
const SWEEP: Duration = Duration::from_secs(5);
/// Longest the scheduler sleeps without looking at the clock.
const IDLE_TICK: Duration = Duration::from_secs(60);

/// Settings (`DS_SUBSCRIPTIONS__*`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Accept webhooks to loopback (`localhost`, `*.localhost`, `127.0.0.x`, `[::1]`, http
    /// or https) and deliver to them (`ALLOW_LOCAL_WEBHOOKS`, default false).
    pub allow_local_webhooks: bool,
    /// With a secret, a claim needs `Authorization: Bearer` and an HS256 JWT signed with it
    /// (`CLAIM_SECRET`).
    pub claim_secret: Option<String>,
    /// A PEM (PKCS#8) Ed25519 private key to sign webhooks with (`SIGNING_KEY_FILE`);
    /// otherwise one is made, and stored in the persistent modes.
    pub signing_key_file: Option<PathBuf>,
    /// Connect and whole-exchange timeout of a webhook delivery (`WEBHOOK_TIMEOUT_MS`).
    pub webhook_timeout: Duration,
    /// The stream root's public URL (`DS_HTTP__PUBLIC_URL` and the root path), if set: the
    /// base of callback and JWKS URLs instead of the one a subscription was created under.
    pub public_base: Option<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            allow_local_webhooks: false,
            claim_secret: None,
            signing_key_file: None,
            webhook_timeout: Duration::from_secs(10),
            public_base: None,
        }
    }
}

/// One webhook to send.
#[derive(Clone, Debug)]
pub struct WebhookRequest {
    /// The receiver (validated when the subscription was made; the sender checks the
    /// addresses it resolves to).
    pub url: String,
    /// The `Webhook-Signature` header.
    pub signature: String,
    /// The JSON body.
    pub body: Bytes,
    /// Connect and whole-exchange timeout.
    pub timeout: Duration,
    /// Whether loopback addresses may be connected to.
    pub allow_local: bool,
}

/// A future a [`WebhookSender`] returns.
pub type SendFuture = std::pin::Pin<Box<dyn Future<Output = Delivered> + Send>>;

/// Sends webhooks: the HTTP client lives outside the engine (ds-http has one with rustls).
pub trait WebhookSender: Send + Sync {
    /// POSTs the request: [`Delivered::Done`] for a 2xx whose body is `{"done":true}`,
    /// [`Delivered::Accepted`] for another 2xx, [`Delivered::Failed`] for anything else.
    fn send(&self, request: WebhookRequest) -> SendFuture;
}

/// Why a subscription request is refused: each is one `{"error":{"code"}}` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubError {
    /// 400 `INVALID_REQUEST`.
    Invalid(String),
    /// 400 `WEBHOOK_URL_REJECTED`.
    UrlRejected(String),
    /// 404 `SUBSCRIPTION_NOT_FOUND`.
    NotFound,
    /// 401 `TOKEN_INVALID`.
    TokenInvalid(&'static str),
    /// 401 `TOKEN_EXPIRED`.
    TokenExpired,
    /// 409 `SUBSCRIPTION_ALREADY_EXISTS`.
    Exists,
    /// 409 `FENCED`.
    Fenced,
    /// 409 `ALREADY_CLAIMED`.
    AlreadyClaimed {
        /// The worker holding the lease.
        holder: String,
        /// The current generation.
        generation: u64,
    },
    /// 409 `NO_PENDING_WORK`.
    NoPendingWork,
    /// 409 `INVALID_OFFSET`.
    InvalidOffset(String),
    /// 503: still starting, or the control database failed.
    Unavailable(String),
}

impl From<ConfigError> for SubError {
    fn from(e: ConfigError) -> SubError {
        match e {
            ConfigError::Invalid(why) => SubError::Invalid(why),
            ConfigError::UrlRejected(why) => SubError::UrlRejected(why.to_owned()),
        }
    }
}

impl From<Refusal> for SubError {
    fn from(r: Refusal) -> SubError {
        match r {
            Refusal::Fenced => SubError::Fenced,
            Refusal::AlreadyClaimed { holder, generation } => {
                SubError::AlreadyClaimed { holder, generation }
            }
            Refusal::NoPendingWork => SubError::NoPendingWork,
            Refusal::InvalidOffset(why) => SubError::InvalidOffset(why.to_owned()),
            Refusal::Invalid(why) => SubError::Invalid(why.to_owned()),
        }
    }
}

impl From<TokenError> for SubError {
    fn from(e: TokenError) -> SubError {
        match e {
            TokenError::Invalid => SubError::TokenInvalid("token is not valid for this request"),
            TokenError::Expired => SubError::TokenExpired,
        }
    }
}

/// A claim's answer.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The JSON body.
    pub body: Value,
}

/// The signing and token keys.
struct Keys {
    signing: SigningKey,
    /// Retired public keys (`x`) and until when they are published.
    retired: Vec<(String, u64)>,
    tokens: TokenKey,
    claims: Option<TokenKey>,
}

/// A delivery (webhook POST or wake event) wanted for a wake.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Due {
    incarnation: u64,
    generation: u64,
    wake_id: String,
    at_ms: u64,
}

/// Per subscription, in memory only: the delivery wanted and whether one is running.
#[derive(Debug, Default)]
struct Run {
    due: Option<Due>,
    /// The incarnation whose delivery is running, if one is (a delivery of a deleted
    /// subscription must not count for one re-created under its id).
    in_flight: Option<u64>,
    /// Failed wake-event writes in a row (pull-wake; webhooks keep theirs in the record).
    event_failures: u32,
}

#[derive(Default)]
struct State {
    registry: Registry,
    /// Ids changed since the last flush (present: write the record; gone: delete it).
    dirty: BTreeSet<String>,
    runs: HashMap<String, Run>,
    /// (time, id): look at `id` then. Entries may be stale; looking costs little.
    timers: BTreeSet<(u64, String)>,
    loaded: bool,
    /// The `postgres` mode: the epoch this state was loaded under (0: not loaded here).
    term: u64,
    /// Deliveries and the followers' calls running for this state (ended with it).
    tasks: tokio::task::JoinSet<()>,
}

/// The subscription service.
pub struct Subscriptions {
    engine: Arc<Engine>,
    settings: Settings,
    sender: Arc<dyn WebhookSender>,
    state: Mutex<State>,
    /// Set when loaded (again at each election in the `postgres` mode).
    keys: std::sync::RwLock<Option<Arc<Keys>>>,
    control: std::sync::OnceLock<Option<Arc<Control>>>,
    /// Held across a flush's encode and write.
    persist: tokio::sync::Mutex<()>,
    /// Set when the control database failed: nothing more is promised, every request 503s.
    failed: std::sync::OnceLock<String>,
    kick: Notify,
    deliveries: Arc<Semaphore>,
    /// The `postgres` mode: state in the database, run by one node at a time.
    cluster: Option<Arc<Cluster>>,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn fresh_wake_id() -> String {
    keys::wake_id().unwrap_or_else(|_| {
        // The system's random source failed (it does not, in practice): still unique.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("w_{:024x}", (t << 20) ^ u128::from(n))
    })
}

fn jitter() -> u64 {
    keys::random::<8>().map_or(0, u64::from_le_bytes)
}

impl Subscriptions {
    /// The service over `engine`. Nothing is served until [`Subscriptions::run`] has
    /// loaded the stored subscriptions (requests get 503 until then).
    #[must_use]
    pub fn new(
        engine: Arc<Engine>,
        settings: Settings,
        sender: Arc<dyn WebhookSender>,
    ) -> Arc<Subscriptions> {
        let postgres = engine.config().mode == crate::StorageMode::Postgres;
        let subs = Arc::new(Subscriptions {
            engine,
            settings,
            sender,
            state: Mutex::new(State::default()),
            keys: std::sync::RwLock::default(),
            control: std::sync::OnceLock::new(),
            persist: tokio::sync::Mutex::new(()),
            failed: std::sync::OnceLock::new(),
            kick: Notify::new(),
            deliveries: Arc::new(Semaphore::new(MAX_DELIVERIES)),
            cluster: postgres.then(Arc::default),
        });
        if !postgres {
            // The postgres mode hears of every node's appends from the database instead.
            let weak = Arc::downgrade(&subs);
            subs.engine.set_hook(weak);
        }
        subs
    }

    /// The streams' tails as these subscriptions see them.
    fn tails(&self) -> &dyn Tails {
        match &self.cluster {
            Some(cluster) => &cluster.book,
            None => self.engine.as_ref(),
        }
    }

    /// The live streams whose names start with `prefix`: name, own start, tail.
    fn streams(&self, prefix: &str) -> Result<Vec<(String, Offset, Offset)>, SubError> {
        if let Some(cluster) = &self.cluster {
            return Ok(cluster.book.list(prefix));
        }
        let listed = self.engine.list(prefix).map_err(|e| SubError::Unavailable(e.to_string()))?;
        Ok(listed
            .into_iter()
            .map(|(name, info)| {
                let start = info.fork.as_ref().map_or(Offset::ZERO, |f| Offset::at(f.at));
                (name.to_string(), start, info.tail)
            })
            .collect())
    }

    /// On a node that does not run the subscriptions (the `postgres` mode's followers):
    /// the leader's answer to `call`. `None`: answer here.
    async fn forward(&self, call: impl FnOnce() -> Call) -> Option<Result<Value, SubError>> {
        let cluster = self.cluster.as_ref()?;
        if cluster.leading().is_some() {
            return None;
        }
        let Some(db) = cluster.db.get() else {
            return Some(Err(SubError::Unavailable("the database is not open yet".into())));
        };
        let answer = db.call(&call().encode()).await.map_err(SubError::Unavailable);
        Some(answer.and_then(|text| cluster::decode_answer(&text)))
    }

    /// The leader runs a call a follower handed it.
    async fn execute(&self, call: Call) -> Result<Value, SubError> {
        match call {
            Call::Put { id, body, base } => self
                .put(&id, &body, &base)
                .await
                .map(|(created, body)| serde_json::json!({"created": created, "body": body})),
            Call::Get { id } => self.get(&id).await,
            Call::Delete { id } => self.delete(&id).await.map(|()| Value::Null),
            Call::AddStreams { id, body } => {
                self.add_streams(&id, &body).await.map(|()| Value::Null)
            }
            Call::RemoveStream { id, path } => {
                self.remove_stream(&id, &path).await.map(|()| Value::Null)
            }
            Call::Ack { id, usage, token, body } => {
                self.ack(&id, usage, &token, &body).await.map(Value::Bool)
            }
            Call::Release { id, token, body } => {
                self.release(&id, &token, &body).await.map(|()| Value::Null)
            }
            Call::Claim { id, authorization, body } => {
                self.claim(&id, authorization.as_deref(), &body).await.map(|c| c.body)
            }
            Call::Jwks => self.jwks().await,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        self.engine.now_ms()
    }

    /// Loads what is stored (once the engine has recovered), then runs the scheduler until
    /// the task is aborted.
    ///
    /// # Errors
    /// The keys or the control database cannot be read: the message says why.
    pub async fn run(self: Arc<Self>) -> Result<(), String> {
        self.engine.ready().await?;
        if let Some(cluster) = self.cluster.clone() {
            let shared =
                self.engine.postgres().ok_or("subscriptions: the store is not postgres")?;
            let _ = cluster.db.set(SubsDb::new(shared));
            self.lead_when_elected(&cluster).await;
            return Ok(());
        }
        self.load().await?;
        self.schedule().await;
        Ok(())
    }

    /// The `postgres` mode: campaigns for the leader lock; once elected, loads the
    /// subscriptions from the database and runs them (scheduler, the streams' changes,
    /// the followers' calls) until the lock may be lost or a write finds this node
    /// deposed; then forgets them and campaigns again.
    async fn lead_when_elected(self: &Arc<Self>, cluster: &Arc<Cluster>) {
        let Some(db) = cluster.db.get() else { return };
        let mut session = None;
        loop {
            let leadership = match db.campaign(&mut session).await {
                Ok(Some(leadership)) => leadership,
                Ok(None) => {
                    tokio::time::sleep(subs::CAMPAIGN).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "subscriptions: campaign failed");
                    tokio::time::sleep(subs::CAMPAIGN).await;
                    continue;
                }
            };
            tracing::info!(epoch = leadership.epoch, "this node now runs the subscriptions");
            let (feed, changes) = tokio::sync::mpsc::unbounded_channel();
            db.set_feed(Some(feed));
            cluster.epoch.store(leadership.epoch, std::sync::atomic::Ordering::Release);
            let deposed = cluster.deposed.notified();
            let led = async {
                self.load().await?;
                tokio::select! {
                    () = self.schedule() => {}
                    () = self.follow_streams(cluster, changes) => {}
                    () = self.serve_calls(db) => {}
                    () = leadership.lost() => {
                        tracing::warn!("subscriptions: the leader's connection failed");
                    }
                    () = deposed => {}
                }
                Ok::<(), String>(())
            };
            let mut pause = subs::CAMPAIGN;
            if let Err(e) = led.await {
                // Let another node try first (this one may be the problem, say a bad key
                // file), rather than take the lock every second and fail.
                tracing::warn!(error = %e, "subscriptions: could not take over");
                pause *= 5;
            }
            db.set_feed(None);
            self.forget_all(cluster);
            drop(leadership);
            tracing::info!("this node no longer runs the subscriptions");
            tokio::time::sleep(pause).await;
        }
    }

    /// Stops leading: from now on requests go to the database for a leader to answer, and
    /// nothing this node held in memory is seen again.
    fn forget_all(&self, cluster: &Cluster) {
        let mut st = self.lock();
        cluster.epoch.store(0, std::sync::atomic::Ordering::Release);
        // Its deliveries and calls end with it (the join set aborts them when dropped).
        let old = std::mem::take(&mut *st);
        drop(st);
        drop(old);
        cluster.book.clear();
    }

    /// The leader: turns every node's stream changes into the hook's calls.
    async fn follow_streams(
        self: &Arc<Self>,
        cluster: &Cluster,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<Feed>,
    ) {
        let mut sweeps = tokio::time::interval(SWEEP);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweeps.tick().await;
        loop {
            tokio::select! {
                feed = changes.recv() => match feed {
                    Some(Feed::Change(name, change)) => self.changed_stream(cluster, &name, &change),
                    // Changes may have been missed while nobody listened.
                    Some(Feed::Resynced) => self.sweep().await,
                    None => return,
                },
                _ = sweeps.tick() => self.sweep().await,
            }
        }
    }

    /// The leader: a stream changed (any node announced it, or a catch-up read it).
    fn changed_stream(
        &self,
        cluster: &Cluster,
        name: &Arc<str>,
        change: &crate::pg::listen::Change,
    ) {
        let Some(db) = cluster.db.get() else { return };
        match cluster.book.apply(name, change, db.quiet()) {
            Event::None => {}
            Event::Removed => self.removed(name),
            Event::Appended { start, tail } => {
                if self.concerns(name) {
                    self.appended(name, start, tail);
                }
            }
            Event::Replaced { start, tail } => {
                self.removed(name);
                if start != tail && self.concerns(name) {
                    self.appended(name, start, tail);
                }
            }
        }
    }

    /// The leader, before a request whose answer depends on the streams' tails (create,
    /// links, claim): reads the state of `paths` and of the streams under `prefix` from
    /// the database, so that every append acknowledged before the request counts, even
    /// if its notification has not arrived yet. Elsewhere, nothing.
    async fn catch_up(&self, paths: &[String], prefixes: &[&str]) -> Result<(), SubError> {
        let Some(cluster) = &self.cluster else { return Ok(()) };
        let Some(db) = cluster.db.get() else { return Ok(()) };
        // What the book holds before the read: only these can be found gone by it (a stream
        // made after the read's snapshot and heard of meanwhile is not missing from it).
        let mut before = cluster.book.incarnations(paths, prefixes);
        let names: Vec<&str> = paths.iter().map(String::as_str).collect();
        let now = db.streams_now(&names, prefixes).await.map_err(SubError::Unavailable)?;
        for state in &now {
            before.remove(&*state.name);
            self.changed_stream(cluster, &state.name, &state.change);
        }
        for (name, incarnation) in before {
            // Known here, gone from the database: deleted, its removal not heard of yet.
            let gone = crate::pg::listen::Change::gone(incarnation);
            self.changed_stream(cluster, &Arc::from(name.as_str()), &gone);
        }
        Ok(())
    }

    /// The leader, every [`SWEEP`] and when its listening connection was made again: reads
    /// the state of every stream a subscription links or may match, so that a notification
    /// that was never sent (or not heard) delays a wake, never loses it.
    async fn sweep(&self) {
        let (paths, prefixes) = {
            let st = self.lock();
            let mut paths = BTreeSet::new();
            let mut prefixes = BTreeSet::new();
            for sub in st.registry.iter() {
                paths.extend(sub.links.iter().map(|l| l.path.clone()));
                paths.extend(sub.config.streams.iter().cloned());
                if let Some(p) = &sub.config.pattern {
                    prefixes.insert(p.name_prefix());
                }
            }
            (paths.into_iter().collect::<Vec<_>>(), prefixes)
        };
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        if let Err(e) = self.catch_up(&paths, &prefixes).await {
            tracing::warn!(error = ?e, "subscriptions: sweep of the streams' tails failed");
        }
        self.kick.notify_one();
    }

    /// The leader: runs the calls followers hand it, each in a task of its own (which ends
    /// with this term's state).
    async fn serve_calls(self: &Arc<Self>, db: &SubsDb) {
        let mut signals = db.signals();
        loop {
            let term = self.lock().term;
            match db.take_calls(term).await {
                Ok(calls) => {
                    let mut st = self.lock();
                    if st.term != term {
                        // Stepped down meanwhile: the next leader takes them again.
                        return;
                    }
                    for (id, text) in calls {
                        let (this, db) = (self.clone(), db.clone());
                        st.tasks.spawn(async move {
                            let answer = match Call::decode(&text) {
                                Some(call) => this.execute(call).await,
                                None => Err(SubError::Invalid("the call did not decode".into())),
                            };
                            if let Err(e) = db.answer(id, &cluster::encode_answer(&answer)).await {
                                tracing::warn!(error = %e, "subscriptions: answer not stored");
                            }
                        });
                    }
                }
                Err(e) => tracing::debug!(error = %e, "subscriptions: calls not read"),
            }
            db.calls_waiting(&mut signals).await;
        }
    }

    /// The scheduler: runs what is due, then sleeps until the next deadline or a kick.
    async fn schedule(self: &Arc<Self>) {
        loop {
            let kicked = self.kick.notified();
            let next = self.run_due().await;
            let now = self.now();
            let sleep = next.map_or(IDLE_TICK, |at| Duration::from_millis(at.saturating_sub(now)));
            tokio::select! {
                () = tokio::time::sleep(sleep.min(IDLE_TICK)) => {}
                () = kicked => {}
            }
        }
    }

    /// Loads the keys and the stored subscriptions, and reconciles them with the streams.
    ///
    /// # Errors
    /// As [`Subscriptions::run`].
    pub async fn load(&self) -> Result<(), String> {
        let (keys, control, loaded) = match &self.cluster {
            Some(cluster) => self.load_from_database(cluster).await?,
            None => self.load_from_files().await?,
        };
        let claims = self.settings.claim_secret.as_ref().map(|s| TokenKey::new(s.as_bytes()));
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new(Keys { claims, ..keys }));
        let _ = self.control.set(control);
        for id in &loaded.damaged {
            tracing::error!(subscription = %id, "stored subscription record is damaged; not loaded");
        }
        let count = loaded.subscriptions.len();
        {
            let mut st = self.lock();
            st.registry = Registry::new(loaded.next_incarnation.saturating_sub(1));
            for sub in loaded.subscriptions {
                st.registry.restore(sub);
            }
            self.reconcile(&mut st);
            st.loaded = true;
            st.term = self.cluster.as_ref().and_then(|c| c.leading()).unwrap_or(0);
        }
        tracing::info!(subscriptions = count, "subscriptions loaded");
        self.flush().await.map_err(|e| format!("subscriptions: {e:?}"))?;
        self.kick.notify_one();
        Ok(())
    }

    /// The `postgres` mode's leader: keys, records and the streams' state from the database.
    async fn load_from_database(
        &self,
        cluster: &Cluster,
    ) -> Result<(Keys, Option<Arc<Control>>, control::Loaded), String> {
        let db = cluster.db.get().ok_or("subscriptions: the database is not open")?;
        let epoch = cluster.leading().ok_or("subscriptions: not the leader")?;
        let (loaded, stored) = db.load().await.map_err(|e| format!("subscriptions: {e}"))?;
        let key_file = self.settings.signing_key_file.as_deref();
        let (keys, next) = settle_keys(stored.as_ref(), key_file, self.now() / 1000)?;
        if stored.as_ref() != Some(&next) {
            db.write_keys(epoch, &next)
                .await
                .map_err(|e| format!("subscriptions: keys not stored: {e}"))?;
        }
        let streams =
            db.streams_now(&[], &[""]).await.map_err(|e| format!("subscriptions: {e}"))?;
        cluster.book.reset(streams.into_iter().map(|s| (s.name, s.change)));
        Ok((keys, None, loaded))
    }

    /// The other modes: keys and records from the data directory.
    async fn load_from_files(
        &self,
    ) -> Result<(Keys, Option<Arc<Control>>, control::Loaded), String> {
        let persistent = self.engine.config().mode != crate::StorageMode::Memory;
        let (fs, data_dir) = (self.engine.fs().clone(), self.engine.config().data_dir.clone());
        let key_file = self.settings.signing_key_file.clone();
        let now_secs = self.now() / 1000;
        let opened = tokio::task::spawn_blocking(move || {
            let keys =
                load_keys(fs.as_ref(), &data_dir, persistent, key_file.as_deref(), now_secs)?;
            if !persistent {
                return Ok((keys, None, control::Loaded::default()));
            }
            let control = Control::open(&fs, &data_dir).map_err(|e| {
                format!("subscriptions: {}: {e}", control::dir(&data_dir).display())
            })?;
            let loaded = control.load().map_err(|e| format!("subscriptions: {e}"))?;
            Ok::<_, String>((keys, Some(Arc::new(control)), loaded))
        })
        .await
        .map_err(|e| format!("subscriptions: start-up task failed: {e}"))??;
        Ok(opened)
    }

    /// The start-up pass (see the module docs).
    fn reconcile(&self, st: &mut State) {
        let now = self.now();
        // Matching streams without a link: each stream asks only the subscriptions its
        // path may concern (the registry's prefix index), not every pattern every stream.
        for (name, start, _) in self.streams("").unwrap_or_default() {
            if name.starts_with("__ds/") {
                continue;
            }
            for id in st.registry.candidates(&name) {
                let linked = st.registry.update(&id, |s| {
                    let unlinked = s.config.pattern.as_ref().is_some_and(|p| p.matches(&name))
                        && !s.links.iter().any(|l| *l.path == *name);
                    if unlinked {
                        s.appended(&name, start, self.tails(), now, fresh_wake_id);
                    }
                    unlinked
                });
                if linked == Some(true) {
                    st.dirty.insert(id);
                }
            }
        }
        let ids: Vec<String> = st.registry.iter().map(|s| s.id.clone()).collect();
        for id in ids {
            let State { registry, dirty, .. } = &mut *st;
            let changed = registry.update(&id, |s| {
                let before = s.clone();
                let gone: Vec<String> = s
                    .links
                    .iter()
                    .filter(|l| self.tails().tail(&l.path).is_none())
                    .map(|l| l.path.clone())
                    .collect();
                for path in gone {
                    s.stream_removed(&path);
                }
                s.wake_if_idle(self.tails(), now, fresh_wake_id);
                *s != before
            });
            if changed == Some(true) {
                dirty.insert(id.clone());
            }
            // Whatever is in flight is announced again.
            let due = st.registry.get(&id).and_then(|s| {
                let wake = s.wake.as_ref()?;
                let at = match s.config.delivery {
                    Delivery::Webhook { .. } => s.retry.next_attempt_at_ms.unwrap_or(now),
                    Delivery::PullWake { .. } if wake.holder.is_none() => now,
                    Delivery::PullWake { .. } => return None,
                };
                Some(Due {
                    incarnation: s.incarnation,
                    generation: s.generation,
                    wake_id: wake.id.clone(),
                    at_ms: at,
                })
            });
            st.runs.entry(id.clone()).or_default().due = due;
            arm(st, &id);
        }
    }

    fn ready(&self) -> Result<Arc<Keys>, SubError> {
        if let Some(why) = self.failed.get() {
            return Err(SubError::Unavailable(why.clone()));
        }
        let loaded = self.lock().loaded;
        match self.keys() {
            Some(keys) if loaded => Ok(keys),
            _ => Err(SubError::Unavailable("subscriptions are still loading".into())),
        }
    }

    fn keys(&self) -> Option<Arc<Keys>> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Answers a request: on a follower, the leader's answer to `call` (mapped by
    /// `from_leader`); elsewhere, `here`'s. In the `postgres` mode an answer made here
    /// counts only if this node led, in one term, from before it started until after it
    /// ended, as the database confirms (a change is also stored under that term's fence);
    /// otherwise it may come from memory a step-down discarded, and the answer is 503.
    async fn serve<T>(
        &self,
        call: impl FnOnce() -> Call,
        from_leader: impl FnOnce(Value) -> T,
        here: impl Future<Output = Result<T, SubError>>,
    ) -> Result<T, SubError> {
        if let Some(answer) = self.forward(call).await {
            return answer.map(from_leader);
        }
        let Some(cluster) = &self.cluster else { return here.await };
        let term = self.lock().term;
        let answer = here.await;
        let still = term != 0 && self.lock().term == term;
        let Some(db) = cluster.db.get().filter(|_| still) else {
            return Err(SubError::Unavailable("this node stopped running subscriptions".into()));
        };
        match db.confirm(term).await {
            Ok(()) => answer,
            Err(e) => Err(self.step_down(cluster, &e)),
        }
    }

    /// A write or a check found this node deposed (or the database failing): it stops
    /// leading at once.
    fn step_down(&self, cluster: &Cluster, why: &subs::Write) -> SubError {
        tracing::warn!(error = %why, "subscriptions: stepping down");
        self.forget_all(cluster);
        cluster.deposed.notify_waiters();
        SubError::Unavailable(format!("subscriptions: {why}"))
    }

    /// Writes every dirty record in one durable transaction.
    ///
    /// # Errors
    /// [`SubError::Unavailable`] if the control database failed (now or before).
    pub async fn flush(&self) -> Result<(), SubError> {
        let _guard = self.persist.lock().await;
        if let Some(why) = self.failed.get() {
            return Err(SubError::Unavailable(why.clone()));
        }
        let (puts, deletes, next, term) = {
            let mut st = self.lock();
            let ids = std::mem::take(&mut st.dirty);
            let mut puts = Vec::new();
            let mut deletes = Vec::new();
            for id in ids {
                match st.registry.get(&id) {
                    Some(sub) => puts.push((id, record::encode(sub))),
                    None => deletes.push(id),
                }
            }
            (puts, deletes, st.registry.next_incarnation(), st.term)
        };
        if puts.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        if let Some(cluster) = &self.cluster {
            // Written under the term the changes were made in: what a step-down discarded
            // (the state of term 0, or of an earlier term) is never written.
            let Some(db) = cluster.db.get().filter(|_| term != 0) else {
                return Err(SubError::Unavailable("this node no longer runs subscriptions".into()));
            };
            // What was not stored is forgotten with everything else in memory, at once (no
            // request may see it): the next leader (maybe this node again) starts from
            // what the database holds.
            return db
                .write(term, &puts, &deletes, next)
                .await
                .map_err(|e| self.step_down(cluster, &e));
        }
        let Some(Some(control)) = self.control.get().cloned() else { return Ok(()) };
        let written = tokio::task::spawn_blocking(move || control.write(&puts, &deletes, next))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        written.map_err(|e| {
            let why = format!("the subscriptions' control database failed: {e}");
            tracing::error!(error = %e, "subscription changes could not be stored; refusing further subscription requests");
            let _ = self.failed.set(why.clone());
            SubError::Unavailable(why)
        })
    }

    /// The JWKS (§6.5): the active key, and retired keys still in the replay window.
    ///
    /// # Errors
    /// 503 while loading.
    pub async fn jwks(&self) -> Result<Value, SubError> {
        self.serve(|| Call::Jwks, |answer| answer, self.jwks_here()).await
    }

    async fn jwks_here(&self) -> Result<Value, SubError> {
        let keys = self.ready()?;
        let now = self.now() / 1000;
        let mut list = vec![keys.signing.jwk()];
        for (x, until) in &keys.retired {
            if *until > now {
                list.push(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x,
                    "kid": keys::thumbprint_kid(x), "use": "sig", "alg": "EdDSA"}));
            }
        }
        Ok(serde_json::json!({ "keys": list }))
    }

    fn base<'a>(&'a self, sub: &'a Subscription) -> &'a str {
        self.settings.public_base.as_deref().unwrap_or(&sub.base_url)
    }

    /// `PUT …/subscriptions/{id}` (§6.2): `Ok(true, body)` when created, `Ok(false, body)`
    /// when the same configuration was already there. `base` is the stream root's URL as
    /// the client reached it.
    ///
    /// # Errors
    /// 400 for a bad id or configuration, 409 for another configuration under the id.
    pub async fn put(&self, id: &str, body: &Value, base: &str) -> Result<(bool, Value), SubError> {
        let call = || Call::Put { id: id.into(), body: body.clone(), base: base.into() };
        self.serve(
            call,
            |answer: Value| {
                let created = answer.get("created").and_then(Value::as_bool).unwrap_or(false);
                (created, answer.get("body").cloned().unwrap_or(Value::Null))
            },
            self.put_here(id, body, base),
        )
        .await
    }

    async fn put_here(
        &self,
        id: &str,
        body: &Value,
        base: &str,
    ) -> Result<(bool, Value), SubError> {
        let keys = self.ready()?;
        config::check_id(id)?;
        let config = config::parse(body, self.settings.allow_local_webhooks)?;
        let prefix = config.pattern.as_ref().map(glob::Pattern::name_prefix);
        self.catch_up(&config.streams, &prefix.as_deref().into_iter().collect::<Vec<_>>()).await?;
        let created = {
            let mut st = self.lock();
            // Listed under the lock: an append that reports after this sees the
            // subscription, one that reported before is in the tails read here.
            let existing: Vec<(String, Offset)> = match &prefix {
                Some(p) => self
                    .streams(p)?
                    .into_iter()
                    .filter(|(name, _, _)| !name.starts_with("__ds/"))
                    .map(|(name, _, tail)| (name, tail))
                    .collect(),
                None => Vec::new(),
            };
            let now = self.now();
            match st.registry.put(id, config, now, self.tails(), existing) {
                Ok(Put::Confirmed) => false,
                Ok(Put::Created) => {
                    st.registry.update(id, |s| s.base_url = base.to_owned());
                    st.dirty.insert(id.to_owned());
                    true
                }
                Err(PutError::Conflict) => return Err(SubError::Exists),
                Err(PutError::Full) => {
                    return Err(SubError::Invalid(format!(
                        "the server holds its limit of {} subscriptions",
                        crate::subscription::registry::MAX_SUBSCRIPTIONS
                    )));
                }
            }
        };
        // Also when confirming: the create being confirmed may still be on its way to disk.
        self.flush().await?;
        let st = self.lock();
        let sub = st.registry.get(id).ok_or(SubError::NotFound)?;
        Ok((created, view::describe(sub, self.base(sub), keys.signing.kid())))
    }

    /// `GET …/subscriptions/{id}`: what is stored (a change still on its way to disk is
    /// flushed first, so a cursor shown never goes back after a crash).
    ///
    /// # Errors
    /// 404.
    pub async fn get(&self, id: &str) -> Result<Value, SubError> {
        self.serve(|| Call::Get { id: id.into() }, |answer| answer, self.get_here(id)).await
    }

    async fn get_here(&self, id: &str) -> Result<Value, SubError> {
        let keys = self.ready()?;
        let dirty = self.lock().dirty.contains(id);
        if dirty {
            self.flush().await?;
        }
        let st = self.lock();
        let sub = st.registry.get(id).ok_or(SubError::NotFound)?;
        Ok(view::describe(sub, self.base(sub), keys.signing.kid()))
    }

    /// `DELETE …/subscriptions/{id}`: idempotent. Requests of its wakes fail from now on,
    /// and a subscription re-created under the id accepts none of its tokens.
    ///
    /// # Errors
    /// 503 only.
    pub async fn delete(&self, id: &str) -> Result<(), SubError> {
        self.serve(|| Call::Delete { id: id.into() }, drop, self.delete_here(id)).await
    }

    async fn delete_here(&self, id: &str) -> Result<(), SubError> {
        self.ready()?;
        {
            let mut st = self.lock();
            if st.registry.delete(id) {
                st.runs.remove(id);
                st.dirty.insert(id.to_owned());
            }
        }
        self.flush().await
    }

    /// `POST …/subscriptions/{id}/streams` (§6.4): explicit links at each stream's tail.
    ///
    /// # Errors
    /// 400 for a bad body, 404.
    pub async fn add_streams(&self, id: &str, body: &Value) -> Result<(), SubError> {
        let call = || Call::AddStreams { id: id.into(), body: body.clone() };
        self.serve(call, drop, self.add_streams_here(id, body)).await
    }

    async fn add_streams_here(&self, id: &str, body: &Value) -> Result<(), SubError> {
        self.ready()?;
        let paths = match body.get("streams") {
            Some(v) => config::stream_list(v, "streams")?,
            None => {
                return Err(SubError::Invalid("streams must be an array of stream paths".into()));
            }
        };
        self.catch_up(&paths, &[]).await?;
        {
            let mut st = self.lock();
            st.registry.add_streams(id, &paths, self.tails()).ok_or(SubError::NotFound)??;
            st.dirty.insert(id.to_owned());
        }
        self.flush().await
    }

    /// `DELETE …/subscriptions/{id}/streams/{path}` (§6.4): drops the explicit link (a glob
    /// link of the stream stays).
    ///
    /// # Errors
    /// 400 for a bad path, 404.
    pub async fn remove_stream(&self, id: &str, path: &str) -> Result<(), SubError> {
        let call = || Call::RemoveStream { id: id.into(), path: path.into() };
        self.serve(call, drop, self.remove_stream_here(id, path)).await
    }

    async fn remove_stream_here(&self, id: &str, path: &str) -> Result<(), SubError> {
        self.ready()?;
        let path = glob::normalize(path)
            .map_err(|e| SubError::Invalid(format!("stream path {e}")))?
            .to_owned();
        {
            let mut st = self.lock();
            if !st.registry.remove_stream(id, &path) {
                return Err(SubError::NotFound);
            }
            st.dirty.insert(id.to_owned());
        }
        self.flush().await
    }

    /// `POST …/callback` (webhook, [`Use::Callback`]) or `POST …/ack` (pull-wake,
    /// [`Use::Claim`]) (§7.1, §7.2): applies the acks, extends the lease, and with `done`
    /// ends the wake. Returns `next_wake`.
    ///
    /// # Errors
    /// 400, 401, 404, 409 as §7.3 orders them.
    pub async fn ack(
        &self,
        id: &str,
        usage: Use,
        token: &str,
        body: &Value,
    ) -> Result<bool, SubError> {
        let call = || Call::Ack { id: id.into(), usage, token: token.into(), body: body.clone() };
        self.serve(
            call,
            |next| next.as_bool().unwrap_or(false),
            self.ack_here(id, usage, token, body),
        )
        .await
    }

    async fn ack_here(
        &self,
        id: &str,
        usage: Use,
        token: &str,
        body: &Value,
    ) -> Result<bool, SubError> {
        let keys = self.ready()?;
        if let Ok(parsed) = parse_ack(body) {
            // An ack up to an append acknowledged before it is within the tail.
            let paths: Vec<String> = parsed.acks.into_iter().map(|(path, _)| path).collect();
            self.catch_up(&paths, &[]).await?;
        }
        let next = {
            let mut st = self.lock();
            let claims = self.check_token(&st, &keys, id, usage, token)?;
            let parsed = parse_ack(body)?;
            self.check_fence_then_expiry(&st, id, &claims, parsed.generation, &parsed.wake_id)?;
            let now = self.now();
            let acked = st
                .registry
                .update(id, |s| s.ack(&parsed.acks, parsed.done, self.tails(), now, fresh_wake_id))
                .ok_or(SubError::NotFound)??;
            let next = acked.next.is_some();
            changed(&mut st, id, acked.next.as_ref(), now);
            next
        };
        self.flush().await?;
        self.kick.notify_one();
        Ok(next)
    }

    /// `POST …/release` (§7.2): ends the claimed wake without acks; pending work makes the
    /// next one.
    ///
    /// # Errors
    /// As [`Subscriptions::ack`].
    pub async fn release(&self, id: &str, token: &str, body: &Value) -> Result<(), SubError> {
        let call = || Call::Release { id: id.into(), token: token.into(), body: body.clone() };
        self.serve(call, drop, self.release_here(id, token, body)).await
    }

    async fn release_here(&self, id: &str, token: &str, body: &Value) -> Result<(), SubError> {
        let keys = self.ready()?;
        {
            let mut st = self.lock();
            let claims = self.check_token(&st, &keys, id, Use::Claim, token)?;
            let (generation, wake_id) = parse_fence(body)?;
            self.check_fence_then_expiry(&st, id, &claims, generation, &wake_id)?;
            let now = self.now();
            let next = st
                .registry
                .update(id, |s| s.release(self.tails(), now, fresh_wake_id))
                .ok_or(SubError::NotFound)?;
            changed(&mut st, id, next.as_ref(), now);
        }
        self.flush().await?;
        self.kick.notify_one();
        Ok(())
    }

    /// Checks the subscription and its type, then the token (§7.3 order).
    fn check_token(
        &self,
        st: &State,
        keys: &Keys,
        id: &str,
        usage: Use,
        token: &str,
    ) -> Result<Claims, SubError> {
        let sub = st.registry.get(id).ok_or(SubError::NotFound)?;
        match (&sub.config.delivery, usage) {
            (Delivery::Webhook { .. }, Use::Callback) | (Delivery::PullWake { .. }, Use::Claim) => {
            }
            (Delivery::Webhook { .. }, Use::Claim) => {
                return Err(SubError::Invalid("subscription is not pull-wake".into()));
            }
            (Delivery::PullWake { .. }, Use::Callback) => {
                return Err(SubError::Invalid("subscription is not a webhook subscription".into()));
            }
        }
        Ok(keys.tokens.verify_signed(token, id, usage)?)
    }

    /// Fences a request (§7.3), then checks its token's expiry: a stale request is 409
    /// `FENCED` even when its token has expired too.
    fn check_fence_then_expiry(
        &self,
        st: &State,
        id: &str,
        claims: &Claims,
        generation: u64,
        wake_id: &str,
    ) -> Result<(), SubError> {
        let fence = Fence {
            token_incarnation: claims.incarnation,
            token_generation: claims.generation,
            token_wake_id: &claims.wake_id,
            generation: Some(generation),
            wake_id: Some(wake_id),
        };
        st.registry.get(id).ok_or(SubError::NotFound)?.check_fence(&fence)?;
        if self.now() / 1000 > claims.exp_secs {
            return Err(SubError::TokenExpired);
        }
        Ok(())
    }

    /// `POST …/claim` (§7.2): the pull-wake wake in flight (made now if work is pending and
    /// none is) goes to `worker` under a lease. `authorization` is the bearer token, needed
    /// only when a claim secret is configured.
    ///
    /// # Errors
    /// 400, 401, 404, 409 `ALREADY_CLAIMED` or `NO_PENDING_WORK`.
    pub async fn claim(
        &self,
        id: &str,
        authorization: Option<&str>,
        body: &Value,
    ) -> Result<Claimed, SubError> {
        let call = || Call::Claim {
            id: id.into(),
            authorization: authorization.map(str::to_owned),
            body: body.clone(),
        };
        self.serve(call, |body| Claimed { body }, self.claim_here(id, authorization, body)).await
    }

    async fn claim_here(
        &self,
        id: &str,
        authorization: Option<&str>,
        body: &Value,
    ) -> Result<Claimed, SubError> {
        let keys = self.ready()?;
        if let Some(secret) = &keys.claims {
            let token = authorization
                .ok_or(SubError::TokenInvalid("claims need an Authorization: Bearer token"))?;
            let payload = secret.verified_payload(token)?;
            if let Some(exp) = payload.get("exp") {
                let exp = exp.as_u64().ok_or(SubError::TokenInvalid("exp must be a number"))?;
                if self.now() / 1000 > exp {
                    return Err(SubError::TokenExpired);
                }
            }
        }
        let worker = match body.get("worker") {
            Some(Value::String(w)) if !w.is_empty() && w.len() <= MAX_WORKER_BYTES => w.clone(),
            _ => {
                return Err(SubError::Invalid(format!(
                    "worker must be a non-empty string of at most {MAX_WORKER_BYTES} bytes"
                )));
            }
        };
        // Every append acknowledged before the claim is work it may take.
        let (paths, prefix) = {
            let st = self.lock();
            let sub = st.registry.get(id).ok_or(SubError::NotFound)?;
            let paths: Vec<String> = sub.links.iter().map(|l| l.path.clone()).collect();
            (paths, sub.config.pattern.as_ref().map(glob::Pattern::name_prefix))
        };
        self.catch_up(&paths, &prefix.as_deref().into_iter().collect::<Vec<_>>()).await?;
        let answer = {
            let mut st = self.lock();
            let sub = st.registry.get(id).ok_or(SubError::NotFound)?;
            if !matches!(sub.config.delivery, Delivery::PullWake { .. }) {
                return Err(SubError::Invalid("subscription is not pull-wake".into()));
            }
            let now = self.now();
            let claimed = st
                .registry
                .update(id, |s| s.claim(&worker, self.tails(), now, fresh_wake_id))
                .ok_or(SubError::NotFound)?;
            if claimed == Err(Refusal::NoPendingWork) {
                // It may have ended a stale wake (its work went away): stored later.
                st.dirty.insert(id.to_owned());
                drop(st);
                self.kick.notify_one();
                return Err(SubError::NoPendingWork);
            }
            changed(&mut st, id, claimed?.as_ref(), now);
            let sub = st.registry.get(id).ok_or(SubError::NotFound)?;
            let wake = sub.wake.as_ref().ok_or(SubError::NoPendingWork)?;
            let token = keys.tokens.mint(&Claims {
                subscription: sub.id.clone(),
                incarnation: sub.incarnation,
                generation: sub.generation,
                wake_id: wake.id.clone(),
                usage: Use::Claim,
                exp_secs: now / 1000 + TOKEN_TTL_SECS,
            });
            serde_json::json!({
                "wake_id": wake.id,
                "generation": sub.generation,
                "token": token,
                "streams": view::streams_now(sub, self.tails()),
                "lease_ttl_ms": sub.config.lease_ttl_ms,
            })
        };
        self.flush().await?;
        self.kick.notify_one();
        Ok(Claimed { body: answer })
    }

    /// Does what is due at the engine's clock: lease expiries, then (after flushing what
    /// they changed) webhook deliveries and wake events. Returns when to call again. The
    /// scheduler calls this; tests call it with a manual clock.
    pub async fn run_due(self: &Arc<Self>) -> Option<u64> {
        if self.failed.get().is_some() || !self.lock().loaded {
            return None;
        }
        let now = self.now();
        let starts = {
            let mut st = self.lock();
            let mut due = Vec::new();
            while let Some((at, _)) = st.timers.first() {
                if *at > now {
                    break;
                }
                if let Some((_, id)) = st.timers.pop_first() {
                    due.push(id);
                }
            }
            due.sort_unstable();
            due.dedup();
            let mut starts = Vec::new();
            for id in due {
                self.expire_lease(&mut st, &id, now);
                if let Some(run) = st.runs.get_mut(&id)
                    && run.in_flight.is_none()
                    && run.due.as_ref().is_some_and(|d| d.at_ms <= now)
                    && let Some(d) = run.due.take()
                {
                    run.in_flight = Some(d.incarnation);
                    starts.push((id.clone(), d));
                }
                arm(&mut st, &id);
            }
            starts
        };
        let term = self.lock().term;
        if self.flush().await.is_err() {
            return None;
        }
        if let Some(cluster) = &self.cluster
            && !starts.is_empty()
        {
            // Nothing goes out from a node that no longer leads (it may not know yet).
            let confirmed = match cluster.db.get() {
                Some(db) if term != 0 => db.confirm(term).await,
                _ => Err(subs::Write::Deposed),
            };
            if let Err(e) = confirmed {
                self.step_down(cluster, &e);
                return None;
            }
        }
        let mut st = self.lock();
        while st.tasks.try_join_next().is_some() {}
        if st.term == term {
            for (id, due) in starts {
                let this = self.clone();
                st.tasks.spawn(async move { this.deliver(id, due).await });
            }
        }
        st.timers.first().map(|(at, _)| *at)
    }

    fn expire_lease(&self, st: &mut State, id: &str, now: u64) {
        let expired = st
            .registry
            .get(id)
            .and_then(|s| s.wake.as_ref())
            .filter(|w| w.lease_deadline_ms.is_some_and(|d| d <= now))
            .map(|w| w.id.clone());
        let Some(wake) = expired else { return };
        let woke =
            st.registry.update(id, |s| s.lease_expired(&wake, self.tails(), now, fresh_wake_id));
        st.dirty.insert(id.to_owned());
        tracing::debug!(subscription = %id, wake = %wake, "lease expired");
        if let Some(run) = st.runs.get_mut(id) {
            run.due = None;
        }
        if let Some(Some(woke)) = woke {
            want(st, id, &woke, now);
        }
    }

    /// Delivers `due` (a webhook, or a wake event) once; records the outcome.
    async fn deliver(self: Arc<Self>, id: String, due: Due) {
        let is_webhook = {
            let st = self.lock();
            st.registry.get(&id).map(|s| matches!(s.config.delivery, Delivery::Webhook { .. }))
        };
        match is_webhook {
            Some(true) => self.send_webhook(&id, &due).await,
            Some(false) => self.write_event(&id, &due).await,
            None => {}
        }
        let mut st = self.lock();
        if let Some(run) = st.runs.get_mut(&id)
            && run.in_flight == Some(due.incarnation)
        {
            run.in_flight = None;
        }
        arm(&mut st, &id);
        drop(st);
        self.kick.notify_one();
    }

    fn current<'a>(st: &'a State, id: &str, due: &Due) -> Option<&'a Subscription> {
        st.registry.get(id).filter(|s| {
            s.incarnation == due.incarnation
                && s.generation == due.generation
                && s.wake.as_ref().is_some_and(|w| w.id == due.wake_id)
        })
    }

    async fn send_webhook(&self, id: &str, due: &Due) {
        let Ok(_permit) = self.deliveries.clone().acquire_owned().await else { return };
        let Some(keys) = self.keys() else { return };
        let request = {
            let st = self.lock();
            let Some(sub) = Self::current(&st, id, due) else { return };
            let Delivery::Webhook { url } = &sub.config.delivery else { return };
            let now = self.now();
            let token = keys.tokens.mint(&Claims {
                subscription: sub.id.clone(),
                incarnation: sub.incarnation,
                generation: sub.generation,
                wake_id: due.wake_id.clone(),
                usage: Use::Callback,
                exp_secs: now / 1000 + TOKEN_TTL_SECS,
            });
            let Some(body) = view::webhook_body(sub, self.base(sub), &token) else {
                return;
            };
            let body = Bytes::from(body.to_string());
            WebhookRequest {
                url: url.clone(),
                signature: keys.signing.signature_header(now / 1000, &body),
                body,
                timeout: self.settings.webhook_timeout,
                allow_local: self.settings.allow_local_webhooks,
            }
        };
        let sent = std::time::Instant::now();
        let outcome = self.sender.send(request).await;
        self.engine.stats().webhooks.delivery(outcome, sent.elapsed());
        let now = self.now();
        let mut st = self.lock();
        if Self::current(&st, id, due).is_none() {
            tracing::debug!(subscription = %id, ?outcome, "late webhook outcome for an older wake; ignored");
            return;
        }
        if outcome == Delivered::Failed {
            tracing::warn!(subscription = %id, generation = due.generation, "webhook delivery failed; retrying later");
        }
        let woke = st.registry.update(id, |s| {
            s.delivered(
                (due.generation, &due.wake_id),
                outcome,
                self.tails(),
                now,
                jitter(),
                fresh_wake_id,
            )
        });
        st.dirty.insert(id.to_owned());
        if let Some(Some(woke)) = woke {
            want(&mut st, id, &woke, now);
        }
    }

    async fn write_event(&self, id: &str, due: &Due) {
        let event = {
            let st = self.lock();
            let Some(sub) = Self::current(&st, id, due) else { return };
            let Delivery::PullWake { wake_stream } = &sub.config.delivery else { return };
            let Some(event) = view::wake_event(sub, self.now()) else { return };
            (wake_stream.clone(), Bytes::from(event.to_string()))
        };
        let (stream, body) = event;
        let written = match self.engine.head(&stream).await {
            Ok(info) => {
                let req = AppendRequest {
                    content_type: Some(info.content_type),
                    body,
                    ..AppendRequest::default()
                };
                self.engine.append_quiet(&stream, req).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        let now = self.now();
        let mut st = self.lock();
        let still = Self::current(&st, id, due)
            .is_some_and(|s| s.wake.as_ref().is_some_and(|w| w.holder.is_none()));
        let Some(run) = st.runs.get_mut(id) else { return };
        match written {
            Ok(()) => run.event_failures = 0,
            Err(e) => {
                run.event_failures = run.event_failures.saturating_add(1);
                let delay = retry_delay_ms(run.event_failures, jitter());
                tracing::warn!(subscription = %id, wake_stream = %stream, error = %e, retry_in_ms = delay,
                    "wake event could not be written; the wake stays claimable, retrying");
                if still && run.due.is_none() {
                    run.due = Some(Due { at_ms: now + delay, ..due.clone() });
                }
            }
        }
    }

    /// Whether the stored subscriptions are loaded and requests are served (for
    /// `/readyz`): false while starting, and after the control database failed.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        match &self.cluster {
            // A follower serves by handing requests to the leader through the database.
            Some(cluster) if cluster.leading().is_none() => {
                self.failed.get().is_none() && cluster.db.get().is_some_and(SubsDb::listening)
            }
            _ => self.ready().is_ok(),
        }
    }

    /// Whether this node runs the subscriptions: always in the single-node modes; in the
    /// `postgres` mode, while it is the elected leader and has loaded them.
    #[must_use]
    pub fn leads(&self) -> bool {
        let leading = self.cluster.as_ref().is_none_or(|c| c.leading().is_some());
        leading && self.lock().loaded
    }

    /// Deliveries (webhooks and wake events) running now.
    #[must_use]
    pub fn deliveries_in_flight(&self) -> usize {
        self.lock().runs.values().filter(|r| r.in_flight.is_some()).count()
    }

    /// A copy of subscription `id` as it stands (for tests and inspection).
    #[must_use]
    pub fn inspect(&self, id: &str) -> Option<Subscription> {
        self.lock().registry.get(id).cloned()
    }
}

/// A request changed subscription `id`: store it at the next flush, deliver the wake it
/// made (if any), and look at it again at its next deadline.
fn changed(st: &mut State, id: &str, woke: Option<&Woke>, now: u64) {
    st.dirty.insert(id.to_owned());
    if let Some(woke) = woke {
        want(st, id, woke, now);
    }
    arm(st, id);
}

/// Sets the delivery a new wake (or a webhook retry) wants.
fn want(st: &mut State, id: &str, woke: &Woke, now: u64) {
    let Some(sub) = st.registry.get(id) else { return };
    let due = Due {
        incarnation: sub.incarnation,
        generation: woke.generation,
        wake_id: woke.wake_id.clone(),
        at_ms: woke.deliver_at_ms.unwrap_or(now),
    };
    let run = st.runs.entry(id.to_owned()).or_default();
    run.due = Some(due);
    run.event_failures = 0;
}

/// Schedules a look at `id` at its next deadline: its lease's end, or its delivery's time.
fn arm(st: &mut State, id: &str) {
    let Some(sub) = st.registry.get(id) else {
        st.runs.remove(id);
        return;
    };
    let lease = sub.wake.as_ref().and_then(|w| w.lease_deadline_ms);
    let current = sub.wake.as_ref().map(|w| w.id.clone());
    let mut next = lease;
    if let Some(run) = st.runs.get_mut(id) {
        if run.due.as_ref().is_some_and(|d| Some(&d.wake_id) != current.as_ref()) {
            run.due = None;
        }
        if run.in_flight.is_none()
            && let Some(d) = &run.due
        {
            next = Some(next.map_or(d.at_ms, |n| n.min(d.at_ms)));
        }
    }
    if let Some(at) = next {
        st.timers.insert((at, id.to_owned()));
    }
}

/// The fencing fields of a callback, ack or release body.
fn parse_fence(body: &Value) -> Result<(u64, String), SubError> {
    let generation = match body.get("generation") {
        Some(Value::Number(n)) => {
            n.as_u64().filter(|g| *g <= MAX_SAFE_INTEGER).ok_or_else(|| {
                SubError::Invalid("generation must be a non-negative integer below 2^53".into())
            })?
        }
        _ => return Err(SubError::Invalid("generation must be an integer".into())),
    };
    let wake_id = match body.get("wake_id") {
        Some(Value::String(w)) => w.clone(),
        _ => return Err(SubError::Invalid("wake_id must be a string".into())),
    };
    Ok((generation, wake_id))
}

struct ParsedAck {
    generation: u64,
    wake_id: String,
    acks: Vec<(String, Offset)>,
    done: bool,
}

/// A callback or ack body: `{generation, wake_id, acks?: [{stream|path, offset}], done?}`.
fn parse_ack(body: &Value) -> Result<ParsedAck, SubError> {
    if !body.is_object() {
        return Err(SubError::Invalid("the body must be a JSON object".into()));
    }
    let (generation, wake_id) = parse_fence(body)?;
    let done = match body.get("done") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(SubError::Invalid("done must be a boolean".into())),
    };
    let items = match body.get("acks") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(SubError::Invalid("acks must be an array".into())),
    };
    if items.len() > MAX_ACKS {
        return Err(SubError::Invalid(format!("at most {MAX_ACKS} acks per request")));
    }
    let mut acks = Vec::with_capacity(items.len());
    for item in items {
        let path = item.get("stream").or_else(|| item.get("path"));
        let Some(Value::String(path)) = path else {
            return Err(SubError::Invalid("each ack needs a stream path".into()));
        };
        let path = glob::normalize(path)
            .map_err(|e| SubError::InvalidOffset(format!("ack stream path {e}")))?;
        let offset = match item.get("offset") {
            Some(Value::String(o)) if o == "-1" || o == "now" => {
                return Err(SubError::InvalidOffset(format!(
                    "ack offset must be a stream offset, not {o}"
                )));
            }
            Some(Value::String(o)) => Offset::parse(o)
                .ok_or_else(|| SubError::Invalid(format!("ack offset {o:?} is not an offset")))?,
            _ => return Err(SubError::Invalid("each ack needs an offset string".into())),
        };
        acks.push((path.to_owned(), offset));
    }
    Ok(ParsedAck { generation, wake_id, acks, done })
}

/// Reads or makes the keys (see [`control`]).
fn load_keys(
    fs: &dyn crate::fs::Fs,
    data_dir: &std::path::Path,
    persistent: bool,
    key_file: Option<&std::path::Path>,
    now_secs: u64,
) -> Result<Keys, String> {
    let stored = if persistent {
        control::read_keys(fs, data_dir).map_err(|e| format!("subscriptions: {e}"))?
    } else {
        None
    };
    let (keys, next) = settle_keys(stored.as_ref(), key_file, now_secs)?;
    if persistent && stored.as_ref() != Some(&next) {
        control::write_keys(fs, data_dir, &next)
            .map_err(|e| format!("subscriptions: keys: {e}"))?;
    }
    Ok(keys)
}

/// The keys to use given the stored ones (made if there are none; the signing key from
/// `key_file` if given, with a replaced one kept in the JWKS for the replay window), and
/// what to store.
fn settle_keys(
    stored: Option<&StoredKeys>,
    key_file: Option<&std::path::Path>,
    now_secs: u64,
) -> Result<(Keys, StoredKeys), String> {
    let (signing, seed) = match key_file {
        Some(path) => (read_key_file(path)?, None),
        None => match stored.and_then(|k| k.signing_seed.clone()) {
            Some(seed) => (
                SigningKey::from_seed(&seed)
                    .map_err(|e| format!("subscriptions: stored signing key: {e}"))?,
                Some(seed),
            ),
            None => {
                let (key, seed) = SigningKey::generate()
                    .map_err(|_| "subscriptions: the system's random source failed".to_owned())?;
                (key, Some(seed.to_vec()))
            }
        },
    };
    let x = signing.jwk()["x"].as_str().unwrap_or_default().to_owned();
    let token_secret = match stored {
        Some(k) => k.token_secret.clone(),
        None => keys::random::<32>()
            .map_err(|_| "subscriptions: the system's random source failed".to_owned())?
            .to_vec(),
    };
    let mut retired: Vec<(String, u64)> = stored
        .map(|k| k.retired.iter().filter(|(_, until)| *until > now_secs).cloned().collect())
        .unwrap_or_default();
    if let Some(k) = stored
        && k.signing_x != x
        && !k.signing_x.is_empty()
    {
        tracing::info!(kid = %keys::thumbprint_kid(&k.signing_x), "webhook signing key changed; the old one stays in the JWKS for the replay window");
        retired.push((k.signing_x.clone(), now_secs + RETIRED_KEY_SECS));
    }
    retired.retain(|(old, _)| *old != x);
    let next = StoredKeys {
        signing_seed: seed,
        signing_x: x,
        token_secret: token_secret.clone(),
        retired: retired.clone(),
    };
    Ok((Keys { signing, retired, tokens: TokenKey::new(&token_secret), claims: None }, next))
}

/// An Ed25519 private key from a PEM (PKCS#8) file, as `openssl genpkey -algorithm ed25519`
/// writes it.
fn read_key_file(path: &std::path::Path) -> Result<SigningKey, String> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("DS_SUBSCRIPTIONS__SIGNING_KEY_FILE {}: {e}", path.display()))?;
    let bad = || {
        format!(
            "DS_SUBSCRIPTIONS__SIGNING_KEY_FILE {}: not a PEM Ed25519 private key (-----BEGIN PRIVATE KEY-----)",
            path.display()
        )
    };
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| *l != "-----END PRIVATE KEY-----")
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| bad())?;
    SigningKey::from_pkcs8(&der).map_err(|_| bad())
}

/// Subscriptions read the streams' tails from the engine.
impl Tails for Engine {
    fn tail(&self, path: &str) -> Option<Offset> {
        Engine::tail(self, path)
    }
}

impl StreamHook for Subscriptions {
    fn concerns(&self, name: &str) -> bool {
        self.lock().registry.concerns(name)
    }

    fn appended(&self, name: &str, start: Offset, _tail: Offset) {
        let now = self.now();
        let mut st = self.lock();
        if !st.loaded {
            return;
        }
        let changed = st.registry.appended(name, start, self.tails(), now, fresh_wake_id);
        if changed.is_empty() {
            return;
        }
        for (id, woke) in changed {
            st.dirty.insert(id.clone());
            if let Some(woke) = woke {
                // The scheduler flushes, then delivers.
                want(&mut st, &id, &woke, now);
                arm(&mut st, &id);
            }
        }
        drop(st);
        self.kick.notify_one();
    }

    fn removed(&self, name: &str) {
        let mut st = self.lock();
        if !st.loaded {
            return;
        }
        let ids = st.registry.stream_removed(name);
        if ids.is_empty() {
            return;
        }
        st.dirty.extend(ids);
        drop(st);
        self.kick.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::sim::SimFs;
    use base64::Engine as _;

    fn pem_file(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
        let rng = ring::rand::SystemRandom::new();
        let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        let kid = SigningKey::from_pkcs8(der.as_ref()).unwrap().kid().to_owned();
        (path, kid)
    }

    /// Keys are made once and kept; a configured key file signs instead, and the key it
    /// replaces stays published for the replay window, then goes.
    #[test]
    fn keys_persist_and_a_replaced_key_stays_published_for_the_replay_window() {
        let sim = SimFs::new();
        let data = std::path::Path::new("/data");
        let first = load_keys(&sim, data, true, None, 1_000).unwrap();
        let again = load_keys(&sim, data, true, None, 2_000).unwrap();
        assert_eq!(first.signing.kid(), again.signing.kid(), "the stored key signs again");
        let tokens = Claims {
            subscription: "s".into(),
            incarnation: 1,
            generation: 1,
            wake_id: "w".into(),
            usage: Use::Claim,
            exp_secs: 5_000,
        };
        let token = first.tokens.mint(&tokens);
        assert!(again.tokens.verify(&token, "s", Use::Claim, 2_000).is_ok(), "token secret kept");
        let tmp = std::env::temp_dir().join(format!("ds-keys-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let (file, kid) = pem_file(&tmp, "signing.pem");
        let configured = load_keys(&sim, data, true, Some(&file), 3_000).unwrap();
        assert_eq!(configured.signing.kid(), kid);
        let old_x = first.signing.jwk()["x"].as_str().unwrap().to_owned();
        assert_eq!(configured.retired, vec![(old_x.clone(), 3_000 + RETIRED_KEY_SECS)]);
        let later = load_keys(&sim, data, true, Some(&file), 3_000 + RETIRED_KEY_SECS + 1).unwrap();
        assert!(later.retired.is_empty(), "gone after the replay window");
        std::fs::write(&file, "not a key").unwrap();
        let bad = load_keys(&sim, data, true, Some(&file), 4_000).err().unwrap();
        assert!(bad.contains("SIGNING_KEY_FILE"), "{bad}");
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
