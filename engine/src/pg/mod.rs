//! The `postgres` storage mode: streams in tables of a PostgreSQL database that any number
//! of ds-server nodes share. The database is the state of record; a node keeps only what it
//! needs to wake its own live readers ([`Known`]).
//!
//! - Creates, deletes and expiries are one transaction each, under the stream row's lock
//!   (`SELECT … FOR UPDATE`), a fork's source locked after the fork (child before parent).
//!   A commit round locks by name, so a round and a fork's delete can cross: PostgreSQL
//!   then aborts one, which runs again (three attempts, then 503).
//! - Appends are queued to the node's committer ([`commit`]), which folds each round's
//!   queue into one transaction: it locks the rows in name order, validates every append
//!   against what it read there with the shared rules, writes the data rows, tails and
//!   producer rows, and commits; the appends are answered only then.
//! - Reads take the stream row and the data rows in one statement (one snapshot).
//!
//! FORMAT.md describes the tables; [`schema`] creates them.

pub(crate) mod commit;
pub mod inspect;
pub(crate) mod listen;
pub(crate) mod rows;
pub(crate) mod schema;
pub(crate) mod subs;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{NoTls, Row};

use crate::clock::UnixMs;
use crate::config::{EngineConfig, Limits};
use crate::error::{Error, Result};
use crate::memory::Split;
use crate::notify::{Tail, TailSignal, TailWatch};
use crate::offset::{Lineage, Offset, ReadFrom};
use crate::payload::Payload;
use crate::producer::ProducerClaim;
use crate::rules;
use crate::store::{
    AppendRequest, AppendTicket, ContentType, CreateRequest, Created, Expiry, ExpiryCheck,
    ForkLink, ForkOf, RangeRead, ReadChunk, Store, StreamInfo,
};
use crate::ttl::Expiring;

/// What requests get while the database cannot be reached (or refused a statement).
pub(crate) const DB_UNAVAILABLE: &str =
    "the database is unreachable or refused the request; retry shortly";

/// Most rows one read fetches (a chunk of many tiny appends ends early: the client reads on).
const READ_ROWS: i64 = 4096;

/// How long a request waits for a connection, or a connection for the database.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The stream columns every query reads, in [`StreamRow::from_row`]'s order; a macro, so
/// that statements are `concat!`ed at compile time rather than formatted per request.
macro_rules! cols {
    () => {
        "s.incarnation, s.content_type, s.ttl_secs, s.expires_at_ms, s.last_access_ms, \
         s.tail, s.closed, s.closed_by_id, s.closed_by_epoch, s.closed_by_seq, s.stream_seq, \
         s.fork_source, s.fork_at, s.fork_at_tag, s.fork_req_offset, s.fork_req_sub, s.refs, \
         s.soft_deleted"
    };
}
pub(crate) use cols;
/// How many columns [`cols!`] has.
const NCOLS: usize = 18;

/// A database error's message, with the server's detail when it sent one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => with_causes(e),
    }
}

/// Logs a database failure and answers 503: the request's fate is the database's, and a
/// retry (a producer's is deduplicated) finds out.
fn unavailable(e: &dyn std::fmt::Display) -> Error {
    tracing::warn!(error = %e, "PostgreSQL request failed");
    Error::Unavailable(DB_UNAVAILABLE)
}

/// What a transaction PostgreSQL aborted to break a deadlock (or a serialization conflict)
/// answers: a 503 if it leaks, but [`retrying`] runs the transaction again first.
const CONFLICT: &str = "the database aborted the transaction to break a lock conflict; retry";

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        use tokio_postgres::error::SqlState;
        let code = e.code();
        if code == Some(&SqlState::T_R_DEADLOCK_DETECTED)
            || code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        {
            tracing::debug!(error = %describe(&e), "transaction retried");
            return Error::Unavailable(CONFLICT);
        }
        unavailable(&describe(&e))
    }
}

/// Runs a transaction up to three times while PostgreSQL aborts it to break a deadlock
/// (a delete locks a fork before its source, a commit round by name: they can cross).
async fn retrying<T, F: Future<Output = Result<T>>>(mut attempt: impl FnMut() -> F) -> Result<T> {
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(Error::Unavailable(why)) if why == CONFLICT && tries < 3 => {}
            other => return other,
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Error {
        unavailable(&with_causes(&e))
    }
}

/// An error and its causes, `: `-separated (the pool's and the client's messages leave
/// out why a connection failed: refused, unknown host, authentication).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Positions, incarnations and producer numbers are below 2^63 (checked where they enter).
fn i(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// One `ds_streams` row.
#[derive(Clone, Debug)]
pub(crate) struct StreamRow {
    pub(crate) incarnation: u64,
    pub(crate) content_type: ContentType,
    pub(crate) expiry: Expiry,
    pub(crate) last_access_ms: UnixMs,
    pub(crate) tail: u64,
    pub(crate) closed: bool,
    pub(crate) closed_by: Option<(Arc<str>, ProducerClaim)>,
    pub(crate) stream_seq: Option<Bytes>,
    pub(crate) fork: Option<ForkOf>,
    pub(crate) refs: u64,
    pub(crate) soft_deleted: bool,
}

impl StreamRow {
    /// The row whose [`COLS`] start at column `at` of `row`.
    fn from_row(row: &Row, at: usize) -> StreamRow {
        let opt_u = |n: usize| row.get::<_, Option<i64>>(at + n).map(u);
        let expiry = match (opt_u(2), opt_u(3)) {
            (Some(secs), _) => Expiry::IdleTtl { secs },
            (None, Some(unix_ms)) => Expiry::At { unix_ms },
            (None, None) => Expiry::Never,
        };
        let closed_by = match (row.get::<_, Option<String>>(at + 7), opt_u(8), opt_u(9)) {
            (Some(id), Some(epoch), Some(seq)) => {
                Some((Arc::from(id.as_str()), ProducerClaim { epoch, seq }))
            }
            _ => None,
        };
        let fork = row.get::<_, Option<String>>(at + 11).map(|source| ForkOf {
            link: ForkLink {
                source: Arc::from(source.as_str()),
                at: opt_u(12).unwrap_or(0),
                at_tag: u32::try_from(opt_u(13).unwrap_or(0)).unwrap_or(0),
            },
            requested_offset: row.get::<_, Option<&str>>(at + 14).and_then(Offset::parse),
            requested_sub: opt_u(15).unwrap_or(0),
        });
        StreamRow {
            incarnation: u(row.get(at)),
            content_type: ContentType::new(row.get(at + 1)),
            expiry,
            last_access_ms: u(row.get(at + 4)),
            tail: u(row.get(at + 5)),
            closed: row.get(at + 6),
            closed_by,
            stream_seq: row.get::<_, Option<Vec<u8>>>(at + 10).map(Bytes::from),
            fork,
            refs: u(row.get(at + 16)),
            soft_deleted: row.get(at + 17),
        }
    }

    fn lineage(&self) -> Lineage {
        crate::store::lineage_of(self.incarnation, self.fork.as_ref().map(|f| &f.link))
    }

    fn base(&self) -> u64 {
        self.fork.as_ref().map_or(0, |f| f.link.at)
    }

    pub(crate) fn info(&self) -> StreamInfo {
        StreamInfo {
            incarnation: self.incarnation,
            content_type: self.content_type.clone(),
            expiry: self.expiry,
            tail: self.lineage().at(self.tail),
            closed: self.closed,
            fork: self.fork.as_ref().map(|f| f.link.clone()),
        }
    }

    /// When it expires if nothing touches it after its last access; a stream this node's
    /// live readers watch counts as touched now (§5.1: watched is not idle).
    fn deadline(&self, now: UnixMs, watched: bool) -> Option<UnixMs> {
        crate::ttl::deadline(self.expiry, if watched { now } else { self.last_access_ms })
    }

    fn writer(&self) -> rules::WriterState {
        rules::WriterState {
            closed: self.closed,
            closed_by: self.closed_by.clone(),
            producers: HashMap::new(),
            last_stream_seq: self.stream_seq.clone(),
        }
    }
}

/// A stream as this node last saw it: its tail for live readers to wait on, and for the
/// engine's synchronous views (subscriptions' tails, stream lists).
#[derive(Debug)]
pub(crate) struct Known {
    incarnation: u64,
    info: Mutex<StreamInfo>,
    signal: TailSignal,
}

impl Known {
    /// Moves the tail forward (never back) and wakes the readers if it moved.
    fn advance(&self, tail: u64, closed: bool) {
        let mut seen = self.info.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tail > seen.tail.pos() || (closed && !seen.closed) {
            if tail > seen.tail.pos() {
                seen.tail = seen.lineage().at(tail);
            }
            seen.closed |= closed;
            let next = Offset::at(seen.tail.pos());
            self.signal.publish(Tail { next, closed: seen.closed, gone: false });
        }
    }
}

/// The store's shared state: the pool, the local view, the committer's queue.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) limits: Limits,
    known: RwLock<HashMap<Arc<str>, Arc<Known>>>,
    /// What this node committed, for the other nodes' readers.
    outbox: Arc<listen::Outbox>,
    /// The listening connection is up (the database is reachable).
    pub(crate) listening: AtomicBool,
    /// The last commit round failed (cleared by the next one that commits, or the next
    /// probe the database answers).
    pub(crate) failing: AtomicBool,
    /// Streams this node saw removed, so that a late observation of their state (a commit
    /// round that ran just before the delete) never brings them back into [`Known`].
    removed: Mutex<Removed>,
    /// The engine's clock (for renewing the TTL of streams watched here).
    pub(crate) clock: Arc<dyn crate::clock::Clock>,
    /// Where every announced change goes while this node's subscriptions ask for them.
    feed: Mutex<Option<mpsc::UnboundedSender<listen::Feed>>>,
    /// Payloads of the subscriptions' channel.
    pub(crate) signals: tokio::sync::broadcast::Sender<String>,
    /// Where this node's wake events went (while it runs the subscriptions).
    pub(crate) quiet: Arc<listen::QuietRanges>,
    /// The connection settings (for connections outside the pool).
    pub(crate) config: tokio_postgres::Config,
    /// Where commit rounds are counted (the server's metrics).
    pub(crate) stats: Arc<crate::stats::CommitStats>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("pool", &self.pool).finish_non_exhaustive()
    }
}

/// A bounded memory of removed incarnations (unique across all names: they come from one
/// sequence, so the name is not needed to tell them apart).
#[derive(Debug, Default)]
struct Removed {
    order: std::collections::VecDeque<u64>,
    set: std::collections::HashSet<u64>,
}

impl Removed {
    /// How many removals are remembered.
    const CAPACITY: usize = 4096;

    fn insert(&mut self, incarnation: u64) {
        if self.set.insert(incarnation) {
            self.order.push_back(incarnation);
            if self.order.len() > Removed::CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, incarnation: u64) -> bool {
        self.set.contains(&incarnation)
    }
}

/// The `postgres` store.
#[derive(Debug)]
pub struct PgStore {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<commit::Queued>,
}

/// Why the store could not open.
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// The settings are wrong: retrying will not help.
    Config(String),
    /// The database is unreachable or refused (retrying may help).
    Db(String),
}

/// The application name connections carry, unless the connection string gives one.
const APPLICATION_NAME: &str = "ds-server";

/// The database's connection settings and a pool over them (connecting lazily).
#[derive(Clone, Debug)]
pub(crate) struct Database {
    pool: Pool,
    config: tokio_postgres::Config,
}

/// `config` for a connection outside the pool: with our default application name, it says
/// what the connection is for (`ds-server listen`, `ds-server leader` in `pg_stat_activity`).
pub(crate) fn named(mut config: tokio_postgres::Config, role: &str) -> tokio_postgres::Config {
    if config.get_application_name() == Some(APPLICATION_NAME) {
        config.application_name(format!("{APPLICATION_NAME} {role}"));
    }
    config
}

/// Parses the connection settings and makes the pool.
///
/// # Errors
/// A connection string that does not parse.
pub(crate) fn database(config: &EngineConfig) -> std::result::Result<Database, OpenFailure> {
    let mut pg: tokio_postgres::Config = config
        .postgres_url
        .parse()
        .map_err(|e| OpenFailure::Config(format!("storage.postgres_url: {e}")))?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(CONNECT_TIMEOUT);
    }
    if pg.get_application_name().is_none() {
        pg.application_name(APPLICATION_NAME);
    }
    // A node that vanishes mid-transaction must not hold rows locked (every other node's
    // appends to them would wait): the server ends such sessions, statements give up on a
    // lock after a while (503, retried by the client), and dead peers are noticed in
    // seconds, not hours. Settings the connection string gives win.
    // The server's own keepalives too: a session (and the advisory lock of the subscription
    // leader) of a host that vanished ends within about 20 s, not the kernel's 2 hours.
    let mut options = String::from(
        "-c lock_timeout=10000 -c idle_in_transaction_session_timeout=30000 \
         -c statement_timeout=60000 -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=3 \
         -c tcp_keepalives_count=3 -c tcp_user_timeout=30000",
    );
    if let Some(given) = pg.get_options() {
        options.push(' ');
        options.push_str(given);
    }
    pg.options(options);
    pg.keepalives(true);
    pg.keepalives_idle(Duration::from_secs(10));
    pg.keepalives_interval(Duration::from_secs(3));
    pg.keepalives_retries(3);
    pg.tcp_user_timeout(Duration::from_secs(30));
    let manager = Manager::from_config(
        pg.clone(),
        NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    let pool = Pool::builder(manager)
        .max_size(config.postgres_pool_size.max(2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| OpenFailure::Config(format!("storage.postgres_url: {e}")))?;
    Ok(Database { pool, config: pg })
}

/// Connects, migrates the schema, loads the names and tails of every stream (the engine
/// lists them synchronously and schedules their expiry) and starts the committer.
///
/// # Errors
/// [`OpenFailure::Db`] when the database cannot be reached or refuses.
pub(crate) async fn open(
    database: Database,
    limits: Limits,
    clock: Arc<dyn crate::clock::Clock>,
    stats: Arc<crate::stats::CommitStats>,
) -> std::result::Result<(PgStore, Vec<Expiring>), OpenFailure> {
    let now = clock.now_ms();
    let db = |e: &dyn std::fmt::Display| OpenFailure::Db(e.to_string());
    let Database { pool, config } = database;
    let mut client = pool.get().await.map_err(|e| db(&with_causes(&e)))?;
    schema::migrate(&mut client, now).await.map_err(|e| match e {
        schema::Migrate::TooNew(_) => OpenFailure::Config(e.to_string()),
        schema::Migrate::Db(_) => db(&e),
    })?;
    let rows = client
        .query(
            concat!("SELECT ", cols!(), ", s.name FROM ds_streams s WHERE NOT s.soft_deleted"),
            &[],
        )
        .await
        .map_err(|e| db(&describe(&e)))?;
    drop(client);
    let outbox = Arc::new(listen::Outbox::default());
    let shared = Arc::new(Shared {
        pool,
        limits,
        known: RwLock::default(),
        outbox: outbox.clone(),
        listening: AtomicBool::new(false),
        failing: AtomicBool::new(false),
        removed: Mutex::default(),
        clock,
        feed: Mutex::default(),
        signals: tokio::sync::broadcast::channel(256).0,
        quiet: Arc::default(),
        config: config.clone(),
        stats,
    });
    let mut expiring = Vec::new();
    for row in &rows {
        let stream = StreamRow::from_row(row, 0);
        let name: &str = row.get(NCOLS);
        if stream.expiry != Expiry::Never {
            expiring.push(Expiring {
                name: Arc::from(name),
                incarnation: stream.incarnation,
                expiry: stream.expiry,
                last_access_ms: stream.last_access_ms,
            });
        }
        shared.observe(name, &stream.info());
    }
    let (queue, inbox) = mpsc::unbounded_channel();
    tokio::spawn(commit::run(shared.clone(), inbox));
    tokio::spawn(listen::send(Arc::downgrade(&shared), outbox));
    tokio::spawn(listen::listen(Arc::downgrade(&shared), config));
    Ok((PgStore { shared, queue }, expiring))
}

impl Shared {
    fn known(&self, name: &str) -> Option<Arc<Known>> {
        let map = self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(name).cloned()
    }

    fn watched(&self, name: &str, incarnation: u64) -> bool {
        self.known(name).is_some_and(|k| k.incarnation == incarnation && k.signal.has_watchers())
    }

    /// Takes note of a stream's state as read from (or committed to) the database: its
    /// local readers wake if its tail moved. A state older than one already seen changes
    /// nothing (tails only grow; a name's incarnations only increase).
    pub(crate) fn observe(&self, name: &str, info: &StreamInfo) -> Arc<Known> {
        let fresh = || {
            Arc::new(Known {
                incarnation: info.incarnation,
                info: Mutex::new(info.clone()),
                signal: TailSignal::new(Tail {
                    next: Offset::at(info.tail.pos()),
                    closed: info.closed,
                    gone: false,
                }),
            })
        };
        if self
            .removed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(info.incarnation)
        {
            // Removed since it was read: a watch on it ends at once.
            let gone = fresh();
            gone.signal.publish_gone();
            return gone;
        }
        if let Some(known) = self.known(name)
            && known.incarnation >= info.incarnation
        {
            if known.incarnation == info.incarnation {
                known.advance(info.tail.pos(), info.closed);
            }
            return known;
        }
        let mut map = self.known.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = fresh();
        match map.get(name) {
            Some(old) if old.incarnation >= info.incarnation => old.clone(),
            _ => {
                if let Some(old) = map.insert(Arc::from(name), fresh.clone()) {
                    old.signal.publish_gone();
                }
                fresh
            }
        }
    }

    /// Applies a change another node announced (or a resync read): wakes this node's
    /// readers of the stream if it moved, stops them if it is gone or was replaced.
    pub(crate) fn advance(&self, name: &str, change: &listen::Change) {
        let Some(known) = self.known(name) else { return };
        if change.incarnation < known.incarnation {
            return;
        }
        if change.gone || change.incarnation > known.incarnation {
            self.forget(name, change.incarnation);
        } else {
            known.advance(change.tail, change.closed);
        }
    }

    /// Sends every announced change (from any node) to `to` from now on; `None` stops.
    pub(crate) fn set_feed(&self, to: Option<mpsc::UnboundedSender<listen::Feed>>) {
        *self.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = to;
    }

    fn feed(&self, event: listen::Feed) {
        let feed = self.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(to) = feed.as_ref() {
            let _ = to.send(event);
        }
    }

    /// The streams this node's live readers watch, with their incarnations.
    pub(crate) fn watched_names(&self) -> Vec<(Arc<str>, u64)> {
        let map = self.known.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|(_, k)| k.signal.has_watchers())
            .map(|(n, k)| (n.clone(), k.incarnation))
            .collect()
    }

    /// Announces a committed state to the other nodes (and this node's subscriptions).
    pub(crate) fn announce(&self, name: &Arc<str>, info: &StreamInfo) {
        self.outbox.push(name, listen::Change::of(info));
    }

    /// Forgets a stream that was deleted, expired or soft-deleted: its local readers stop.
    pub(crate) fn forget(&self, name: &str, incarnation: u64) {
        self.removed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(incarnation);
        let mut map = self.known.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(name).is_some_and(|k| k.incarnation <= incarnation)
            && let Some(old) = map.remove(name)
        {
            old.signal.publish_gone();
        }
    }

    /// Whether `row`, read now, has expired (a stream watched here has not).
    fn expired(&self, name: &str, row: &StreamRow, now: UnixMs) -> bool {
        row.deadline(now, self.watched(name, row.incarnation)).is_some_and(|d| now >= d)
    }

    /// The live stream's row as the database has it: 404 if missing or expired (an expired
    /// one is removed in the background), 410 if soft-deleted.
    async fn live_row(self: &Arc<Self>, name: &str, now: UnixMs) -> Result<StreamRow> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(concat!("SELECT ", cols!(), " FROM ds_streams s WHERE s.name = $1"))
            .await?;
        let row = client.query_opt(&stmt, &[&name]).await?.ok_or(Error::NotFound)?;
        drop(client);
        let row = StreamRow::from_row(&row, 0);
        self.check_live(name, &row, now)?;
        Ok(row)
    }

    /// 410 for a soft-deleted stream, 404 (and a removal in the background) for an expired
    /// one.
    fn check_live(self: &Arc<Self>, name: &str, row: &StreamRow, now: UnixMs) -> Result<()> {
        if row.soft_deleted {
            return Err(Error::Gone);
        }
        if self.expired(name, row, now) {
            let (shared, name, inc) = (self.clone(), name.to_owned(), row.incarnation);
            tokio::spawn(async move { shared.expire(&name, inc, now).await });
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Renews a sliding TTL in the database (whichever node made the stream).
    async fn touch(&self, name: &str, now: UnixMs) -> Result<()> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE ds_streams SET last_access_ms = $2 \
                 WHERE name = $1 AND ttl_secs IS NOT NULL AND last_access_ms < $2",
            )
            .await?;
        client.execute(&stmt, &[&name, &i(now)]).await?;
        Ok(())
    }

    async fn create(
        self: &Arc<Self>,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> Result<Created> {
        // A concurrent create of the same name on another node makes the insert fail on
        // the primary key: the next attempt finds that stream and compares with it.
        for _ in 0..3 {
            match retrying(|| self.try_create(name, req, &payload, fork, now)).await {
                Err(Error::Storage(why)) if why == UNIQUE_RACE => {}
                other => return other,
            }
        }
        Err(Error::Unavailable(DB_UNAVAILABLE))
    }

    async fn try_create(
        self: &Arc<Self>,
        name: &str,
        req: &CreateRequest,
        payload: &Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> Result<Created> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut gone = Vec::new();
        if let Some(existing) = lock_row(&tx, name).await? {
            if existing.soft_deleted {
                // Its forks still read it: the name is not free (§4.2).
                return Err(Error::ConfigMismatch);
            }
            if !self.expired(name, &existing, now) {
                let same = rules::same_stream(
                    &existing.content_type,
                    existing.expiry,
                    existing.closed,
                    existing.fork.as_ref(),
                    req,
                    fork,
                );
                if !same {
                    return Err(Error::ConfigMismatch);
                }
                // An idempotent re-create is an access (§5.1): it renews a sliding TTL.
                if matches!(existing.expiry, Expiry::IdleTtl { .. }) {
                    tx.execute(
                        "UPDATE ds_streams SET last_access_ms = greatest(last_access_ms, $2) \
                         WHERE name = $1",
                        &[&name, &i(now)],
                    )
                    .await?;
                    tx.commit().await?;
                }
                let info = existing.info();
                self.observe(name, &info);
                return Ok(Created::Existing(info));
            }
            gone = remove_locked(&tx, name, &existing).await?;
            if existing.refs > 0 {
                tx.commit().await?;
                self.forget_all(&gone);
                return Err(Error::ConfigMismatch);
            }
        }
        if let Some(f) = fork {
            let source = lock_row(&tx, &f.link.source).await?.ok_or(Error::NotFound)?;
            if self.expired(&f.link.source, &source, now) {
                return Err(Error::NotFound);
            }
            if source.soft_deleted {
                return Err(Error::SourceDeleted);
            }
            if source.tail < f.link.at || source.base() > f.link.at {
                // Deleted and created again since the engine read it.
                return Err(Error::OffsetUnknown);
            }
            tx.execute(
                "UPDATE ds_streams SET refs = refs + 1 WHERE name = $1",
                &[&&*f.link.source],
            )
            .await?;
        }
        let base = fork.map_or(0, |f| f.link.at);
        if payload.len() > self.limits.max_stream_bytes {
            return Err(Error::StreamTooLarge { limit_bytes: self.limits.max_stream_bytes });
        }
        let incarnation: i64 = tx.query_one("SELECT nextval('ds_incarnation')", &[]).await?.get(0);
        let (ttl, at) = match req.expiry {
            Expiry::Never => (None, None),
            Expiry::IdleTtl { secs } => (Some(i(secs)), None),
            Expiry::At { unix_ms } => (None, Some(i(unix_ms))),
        };
        let tail = base + payload.len();
        let req_offset = fork.and_then(|f| f.requested_offset).map(|o| o.to_string());
        let inserted = tx
            .execute(
                "INSERT INTO ds_streams (name, incarnation, content_type, ttl_secs, \
                 expires_at_ms, created_ms, last_access_ms, tail, closed, fork_source, fork_at, \
                 fork_at_tag, fork_req_offset, fork_req_sub) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &name,
                    &incarnation,
                    &req.content_type.as_str(),
                    &ttl,
                    &at,
                    &i(now),
                    &i(tail),
                    &req.closed,
                    &fork.map(|f| &*f.link.source),
                    &fork.map(|f| i(f.link.at)),
                    &fork.map(|f| i64::from(f.link.at_tag)),
                    &req_offset,
                    &fork.map(|f| i(f.requested_sub)),
                ],
            )
            .await;
        match inserted {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                return Err(Error::Storage(UNIQUE_RACE.into()));
            }
            other => {
                other?;
            }
        }
        let json = req.content_type.is_json();
        commit::insert_rows(&tx, u(incarnation), &rows::rows_of(payload, base, json)).await?;
        tx.commit().await?;
        self.forget_all(&gone);
        let row = StreamRow {
            incarnation: u(incarnation),
            content_type: req.content_type.clone(),
            expiry: req.expiry,
            last_access_ms: now,
            tail,
            closed: req.closed,
            closed_by: None,
            stream_seq: None,
            fork: fork.cloned(),
            refs: 0,
            soft_deleted: false,
        };
        let info = row.info();
        self.observe(name, &info);
        self.announce(&Arc::from(name), &info);
        Ok(Created::New(info))
    }

    /// Forgets streams a transaction removed, here and on the other nodes.
    fn forget_all(&self, gone: &[(Arc<str>, u64)]) {
        for (name, incarnation) in gone {
            self.forget(name, *incarnation);
            self.outbox.push(name, listen::Change::gone(*incarnation));
        }
    }

    async fn delete(self: &Arc<Self>, name: &str, now: UnixMs) -> Result<u64> {
        retrying(|| self.try_delete(name, now)).await
    }

    async fn try_delete(self: &Arc<Self>, name: &str, now: UnixMs) -> Result<u64> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = lock_row(&tx, name).await?.ok_or(Error::NotFound)?;
        if row.soft_deleted {
            return Err(Error::Gone);
        }
        let expired = self.expired(name, &row, now);
        let gone = remove_locked(&tx, name, &row).await?;
        tx.commit().await?;
        self.forget_all(&gone);
        if expired { Err(Error::NotFound) } else { Ok(row.incarnation) }
    }

    async fn expire(self: &Arc<Self>, name: &str, incarnation: u64, now: UnixMs) -> ExpiryCheck {
        match retrying(|| self.try_expire(name, incarnation, now)).await {
            Ok(check) => check,
            Err(_) => ExpiryCheck::Later(now.saturating_add(1000)),
        }
    }

    async fn try_expire(
        self: &Arc<Self>,
        name: &str,
        incarnation: u64,
        now: UnixMs,
    ) -> Result<ExpiryCheck> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(row) = lock_row(&tx, name).await? else { return Ok(ExpiryCheck::Missing) };
        if row.incarnation != incarnation || row.soft_deleted {
            return Ok(ExpiryCheck::Missing);
        }
        let watched = self.watched(name, incarnation);
        match row.deadline(now, watched) {
            None => Ok(ExpiryCheck::Missing),
            Some(deadline) if now < deadline => {
                if watched {
                    // Readers here keep it alive for every node.
                    tx.execute(
                        "UPDATE ds_streams SET last_access_ms = $2 WHERE name = $1",
                        &[&name, &i(now)],
                    )
                    .await?;
                    tx.commit().await?;
                }
                Ok(ExpiryCheck::Later(deadline))
            }
            Some(_) => {
                let gone = remove_locked(&tx, name, &row).await?;
                tx.commit().await?;
                self.forget_all(&gone);
                Ok(ExpiryCheck::Removed)
            }
        }
    }

    /// The stream row and, as a separate result (the caller checks the stream first), the
    /// chunk of at most `max` bytes from `from`, stopping at `end` and the tail: its start,
    /// its end and its bytes. Both come from one statement, so from one snapshot.
    async fn chunk(
        &self,
        name: &str,
        from: ReadFrom,
        end: Option<u64>,
        max: usize,
        whole: bool,
    ) -> Result<(StreamRow, Result<(u64, u64, Vec<Bytes>)>)> {
        let client = self.pool.get().await?;
        let want = !matches!(from, ReadFrom::Tail);
        let start_param = i(from_pos(from));
        let limit = i(from_pos(from).saturating_add(max as u64).saturating_add(1));
        let end_param = end.map_or(i64::MAX, i);
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                cols!(),
                ", d.pos, d.body, d.ends FROM ds_streams s \
                 LEFT JOIN LATERAL ( \
                   SELECT pos, body, ends FROM ds_data \
                   WHERE $4 AND incarnation = s.incarnation \
                     AND $2 >= coalesce(s.fork_at, 0) AND $2 < s.tail \
                     AND pos >= coalesce((SELECT max(pos) FROM ds_data \
                                          WHERE incarnation = s.incarnation AND pos <= $2), 0) \
                     AND pos < least($3, s.tail, $5) \
                   ORDER BY pos LIMIT $6) d ON true \
                 WHERE s.name = $1 ORDER BY d.pos"
            ))
            .await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&name, &start_param, &limit, &want, &end_param, &READ_ROWS];
        let rows = client.query(&stmt, &params).await?;
        drop(client);
        let first = rows.first().ok_or(Error::NotFound)?;
        let stream = StreamRow::from_row(first, 0);
        let chunk = (|| {
            let start = match from {
                ReadFrom::Start => 0,
                ReadFrom::Tail => stream.tail,
                ReadFrom::At(off) if off.sub() != 0 => return Err(Error::OffsetUnknown),
                ReadFrom::At(off) => off.pos(),
            };
            let stop = end.unwrap_or(stream.tail).min(stream.tail);
            if start < stream.base() || start >= stop {
                return Ok((start, start, Vec::new()));
            }
            let data = rows.into_iter().filter_map(|r| {
                let pos: Option<i64> = r.get(NCOLS);
                let ends: Option<Vec<u8>> = r.get(NCOLS + 2);
                pos.map(|p| (u(p), rows::column_bytes(r, NCOLS + 1), ends))
            });
            let log = rows::log_of(data);
            if log.tail() <= start {
                // Rows below the tail are committed with it: these can only have been
                // removed since, with the stream.
                return Err(Error::NotFound);
            }
            let split = Split::of(&stream.content_type);
            if split == Split::Never && !log.is_record_boundary(start) {
                return Err(Error::OffsetUnknown);
            }
            let next = log.chunk_end(start, max, split, whole).min(stop);
            Ok((start, next, log.slice(start, next)))
        })();
        Ok((stream, chunk))
    }
}

/// What `try_create` returns when another node created the name first.
const UNIQUE_RACE: &str = "created concurrently";

/// The position a read starts from (0 for the start or the tail: the statement is told).
fn from_pos(from: ReadFrom) -> u64 {
    match from {
        ReadFrom::At(off) => off.pos(),
        ReadFrom::Start | ReadFrom::Tail => 0,
    }
}

/// The stream row, locked for the transaction.
async fn lock_row(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
) -> Result<Option<StreamRow>> {
    let stmt = tx
        .prepare_cached(concat!(
            "SELECT ",
            cols!(),
            " FROM ds_streams s WHERE s.name = $1 FOR UPDATE"
        ))
        .await?;
    Ok(tx.query_opt(&stmt, &[&name]).await?.map(|r| StreamRow::from_row(&r, 0)))
}

/// Deletes (or, while forks read it, soft-deletes) the locked stream `row` named `name`, and
/// gives a removed fork's reference on its source back, removing a soft-deleted source left
/// without forks, and so on up the chain (§4.2). Returns what left this node's view.
async fn remove_locked(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    row: &StreamRow,
) -> Result<Vec<(Arc<str>, u64)>> {
    let mut gone = vec![(Arc::from(name), row.incarnation)];
    if row.refs > 0 {
        tx.execute("UPDATE ds_streams SET soft_deleted = true WHERE name = $1", &[&name]).await?;
        return Ok(gone);
    }
    remove_rows(tx, name, row.incarnation).await?;
    let mut source = row.fork.as_ref().map(|f| f.link.source.clone());
    while let Some(name) = source.take() {
        let Some(src) = lock_row(tx, &name).await? else { break };
        if src.refs <= 1 && src.soft_deleted {
            remove_rows(tx, &name, src.incarnation).await?;
            gone.push((name, src.incarnation));
            source = src.fork.as_ref().map(|f| f.link.source.clone());
        } else {
            tx.execute(
                "UPDATE ds_streams SET refs = greatest(refs - 1, 0) WHERE name = $1",
                &[&&*name],
            )
            .await?;
        }
    }
    Ok(gone)
}

async fn remove_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    incarnation: u64,
) -> Result<()> {
    let inc = i(incarnation);
    tx.execute("DELETE FROM ds_streams WHERE name = $1", &[&name]).await?;
    tx.execute("DELETE FROM ds_data WHERE incarnation = $1", &[&inc]).await?;
    tx.execute("DELETE FROM ds_producers WHERE incarnation = $1", &[&inc]).await?;
    Ok(())
}

impl PgStore {
    /// Whether the database is reachable, as far as this node can tell: its listening
    /// connection is up and its last commit round did not fail (`/readyz`).
    #[must_use]
    pub fn is_reachable(&self) -> bool {
        self.shared.listening.load(Ordering::Relaxed)
            && !self.shared.failing.load(Ordering::Relaxed)
    }
}

impl PgStore {
    /// Queues an append for the next commit round; `quiet` marks a subscription's wake
    /// event, which the other nodes hear of as such (it wakes no subscription).
    pub(crate) fn enqueue(
        &self,
        name: &str,
        req: &AppendRequest,
        payload: Result<Payload>,
        now: UnixMs,
        quiet: bool,
    ) -> Result<AppendTicket> {
        let (answer, outcome) = oneshot::channel();
        let name = Arc::from(name);
        let queued = commit::Queued { name, req: req.clone(), payload, now, quiet, answer };
        self.queue.send(queued).map_err(|_| Error::Unavailable(DB_UNAVAILABLE))?;
        Ok(AppendTicket::deciding(outcome))
    }

    /// What subscriptions need of the database (see [`subs`]).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Store for PgStore {
    fn create(
        &self,
        name: &str,
        req: &CreateRequest,
        payload: Payload,
        fork: Option<&ForkOf>,
        now: UnixMs,
    ) -> impl Future<Output = Result<Created>> + Send {
        self.shared.create(name, req, payload, fork, now)
    }

    fn append(
        &self,
        name: &str,
        req: &AppendRequest,
        payload: Result<Payload>,
        now: UnixMs,
    ) -> Result<AppendTicket> {
        self.enqueue(name, req, payload, now, false)
    }

    async fn read(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
        now: UnixMs,
    ) -> Result<ReadChunk> {
        let (row, chunk) = self.shared.chunk(name, from, None, max_bytes, false).await?;
        self.shared.check_live(name, &row, now)?;
        let (start, next, parts) = chunk?;
        if from_pos(from) > row.tail {
            return Err(Error::OffsetBeyondTail);
        }
        if matches!(row.expiry, Expiry::IdleTtl { .. }) && row.last_access_ms < now {
            // In the background: the read has its data and must not wait for a commit
            // round's row lock (nor fail if the renewal does).
            self.touch(name, now);
        }
        let info = row.info();
        self.shared.observe(name, &info);
        Ok(ReadChunk {
            info,
            start: Offset::at(start),
            next: Offset::at(next),
            parts,
            up_to_date: next == row.tail,
        })
    }

    async fn read_range(
        &self,
        name: &str,
        from: Offset,
        end: u64,
        max_bytes: usize,
        whole: bool,
    ) -> Result<RangeRead> {
        if from.sub() != 0 {
            return Err(Error::OffsetUnknown);
        }
        let (row, chunk) =
            self.shared.chunk(name, ReadFrom::At(from), Some(end), max_bytes, whole).await?;
        if from.pos() < row.base() {
            let fork = row.fork.as_ref().map(|f| f.link.clone());
            return Ok(RangeRead { parts: Vec::new(), next: from, fork, lineage: row.lineage() });
        }
        if from.pos() > end.min(row.tail) {
            return Err(Error::OffsetBeyondTail);
        }
        let (_, next, parts) = chunk?;
        Ok(RangeRead { parts, next: Offset::at(next), fork: None, lineage: row.lineage() })
    }

    fn head(&self, name: &str, _now: UnixMs) -> Result<StreamInfo> {
        let known = self.shared.known(name).ok_or(Error::NotFound)?;
        let info = known.info.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Ok(info)
    }

    async fn fetch_head(&self, name: &str, now: UnixMs) -> Result<StreamInfo> {
        let info = self.shared.live_row(name, now).await?.info();
        self.shared.observe(name, &info);
        Ok(info)
    }

    fn delete(&self, name: &str, now: UnixMs) -> impl Future<Output = Result<u64>> + Send {
        self.shared.delete(name, now)
    }

    fn subscribe(&self, name: &str, now: UnixMs) -> Result<(StreamInfo, TailWatch)> {
        let info = self.head(name, now)?;
        let known = self.shared.observe(name, &info);
        Ok((info, known.signal.subscribe()))
    }

    async fn watch(&self, name: &str, now: UnixMs) -> Result<(StreamInfo, TailWatch)> {
        let info = self.shared.live_row(name, now).await?.info();
        let known = self.shared.observe(name, &info);
        Ok((info, known.signal.subscribe()))
    }

    fn expire(
        &self,
        name: &str,
        incarnation: u64,
        now: UnixMs,
    ) -> impl Future<Output = ExpiryCheck> + Send {
        self.shared.expire(name, incarnation, now)
    }

    fn touch(&self, name: &str, now: UnixMs) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (shared, name) = (self.shared.clone(), name.to_owned());
            rt.spawn(async move {
                if let Err(e) = shared.touch(&name, now).await {
                    tracing::debug!(error = %e, "sliding TTL not renewed");
                }
            });
        }
    }

    fn names(&self, prefix: &str) -> Vec<Arc<str>> {
        crate::store::names_in([&self.shared.known], prefix)
    }
}
