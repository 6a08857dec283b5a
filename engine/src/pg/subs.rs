//! Subscriptions in the `postgres` mode, on the database's side: their records, keys and
//! incarnation counter live in the database; one node at a time, the *leader*, runs them
//! (it holds a session advisory lock); every other node hands its subscription requests
//! to the leader through the database and waits for the answer. The service itself
//! ([`crate::subscription::service`]) decides what each does; this module only stores,
//! elects and carries.
//!
//! - **Election.** Each node tries [`LEADER_LOCK`] every [`CAMPAIGN`] on a connection of
//!   its own. The node that takes it bumps `ds_sub_control.epoch` and leads until that
//!   connection fails. The lock goes with the session: at once for a killed process, and
//!   for a host that vanished when the server's keepalives give up on it (the connections
//!   ask for 10 s + 3 × 3 s).
//! - **Fencing.** Every write of the leader checks the epoch it was elected with, in the
//!   same transaction, and every answer it gives and delivery it starts is confirmed
//!   against it ([`SubsDb::confirm`]): a node that lost the lock without noticing yet
//!   cannot overwrite what its successor wrote, nor answer from what it held ([`Write::Deposed`]).
//! - **Calls.** A follower inserts its request into `ds_sub_calls` and notifies
//!   `ds_subs` with `call`; the leader takes it (once per term: `taken` holds the epoch),
//!   runs it and writes the answer (once), then notifies `answer:<id>`. Both sides also
//!   poll, so a lost notification only delays; a call older than [`CALL_TIMEOUT`] (by the
//!   database's clock) is not started, its caller having given up.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;

use super::{Shared, describe, i, u, with_causes};
use crate::subscription::control::{Loaded, StoredKeys};
use crate::subscription::record;

/// The advisory lock the subscription leader holds (`ds-subs` in ASCII, shortened).
pub(crate) const LEADER_LOCK: i64 = 0x6473_2d73_7562_7301;
/// How often a node that does not lead tries to, and a leader probes its connection.
pub(crate) const CAMPAIGN: Duration = Duration::from_secs(1);
/// How often a waiting follower looks for its answer, and the leader for calls, without
/// a notification.
const POLL: Duration = Duration::from_millis(200);
/// How long a follower waits for the leader's answer; the leader does not start a call
/// older than this (its caller has given up).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a write did not happen.
#[derive(Debug)]
pub(crate) enum Write {
    /// Another node was elected since: this one no longer leads.
    Deposed,
    /// The database failed.
    Db(String),
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Deposed => f.write_str("another node runs the subscriptions now"),
            Write::Db(why) => f.write_str(why),
        }
    }
}

/// A stream as the subscription leader tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamState {
    pub(crate) name: Arc<str>,
    pub(crate) change: super::listen::Change,
}

/// Waits until `wanted` arrives on the subscriptions' channel, some notifications were
/// missed (look now), or `at_most` passed.
async fn signal(
    signals: &mut tokio::sync::broadcast::Receiver<String>,
    wanted: &str,
    at_most: Duration,
) {
    use tokio::sync::broadcast::error::RecvError;
    let _ = tokio::time::timeout(at_most, async {
        loop {
            match signals.recv().await {
                Ok(s) if s == wanted => return,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return,
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    })
    .await;
}

/// A row of `name, incarnation, tail, closed, fork_at, fork_at_tag`.
fn state_of(r: &tokio_postgres::Row) -> StreamState {
    StreamState {
        name: Arc::from(r.get::<_, &str>(0)),
        change: super::listen::Change {
            incarnation: u(r.get(1)),
            tail: u(r.get(2)),
            closed: r.get(3),
            gone: false,
            start: u(r.get(4)),
            start_tag: u32::try_from(r.get::<_, i64>(5)).unwrap_or(0),
        },
    }
}

/// The database side of subscriptions.
#[derive(Clone)]
pub(crate) struct SubsDb {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SubsDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubsDb")
    }
}

/// A connection of its own (outside the pool), for the leader lock.
pub(crate) struct Session {
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Leadership, while it lasts: dropping it releases the lock (the connection closes).
pub(crate) struct Leadership {
    /// The epoch this node was elected with.
    pub(crate) epoch: u64,
    session: Session,
}

impl Leadership {
    /// Resolves when the lock may be lost: its connection failed or stopped answering.
    pub(crate) async fn lost(&self) {
        loop {
            tokio::time::sleep(CAMPAIGN).await;
            let probe = self.session.client.simple_query("SELECT 1");
            let alive =
                tokio::time::timeout(Duration::from_secs(5), probe).await.is_ok_and(|r| r.is_ok());
            if !alive {
                return;
            }
        }
    }
}

impl SubsDb {
    pub(crate) fn new(shared: Arc<Shared>) -> SubsDb {
        SubsDb { shared }
    }

    /// Where this node's wake events went.
    pub(crate) fn quiet(&self) -> &super::listen::QuietRanges {
        &self.shared.quiet
    }

    /// Whether this node listens (the database is reachable).
    pub(crate) fn listening(&self) -> bool {
        self.shared.listening.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every announced change of every stream goes to `to` from now on (`None`: stop).
    pub(crate) fn set_feed(
        &self,
        to: Option<tokio::sync::mpsc::UnboundedSender<super::listen::Feed>>,
    ) {
        self.shared.quiet.record_from_now(to.is_some());
        self.shared.set_feed(to);
    }

    /// Whether this node still leads at `epoch`, as the database says.
    ///
    /// # Errors
    /// [`Write::Deposed`] if not, [`Write::Db`] if the database failed.
    pub(crate) async fn confirm(&self, epoch: u64) -> Result<(), Write> {
        let client = self.shared.pool.get().await.map_err(|e| Write::Db(with_causes(&e)))?;
        let row = client
            .query_one("SELECT epoch FROM ds_sub_control WHERE id = 1", &[])
            .await
            .map_err(|e| Write::Db(describe(&e)))?;
        if u(row.get(0)) == epoch { Ok(()) } else { Err(Write::Deposed) }
    }

    /// Tries to take the leader lock once, on `session` (made if there is none, kept for
    /// the next try if another node holds the lock); `Ok(None)` if another node holds it.
    ///
    /// # Errors
    /// The database is unreachable or refused (the session is dropped).
    pub(crate) async fn campaign(
        &self,
        session: &mut Option<Session>,
    ) -> Result<Option<Leadership>, String> {
        let mine = match session.take() {
            Some(s) if !s.client.is_closed() => s,
            _ => {
                let (client, connection) = super::named(self.shared.config.clone(), "leader")
                    .connect(NoTls)
                    .await
                    .map_err(|e| with_causes(&e))?;
                let driver = tokio::spawn(async move {
                    let _ = connection.await;
                });
                Session { client, driver }
            }
        };
        let held = async {
            let row =
                mine.client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK]).await?;
            if !row.get::<_, bool>(0) {
                return Ok(None);
            }
            let row = mine
                .client
                .query_one(
                    "UPDATE ds_sub_control SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
                    &[],
                )
                .await?;
            Ok::<_, tokio_postgres::Error>(Some(u(row.get(0))))
        };
        match held.await {
            Ok(Some(epoch)) => Ok(Some(Leadership { epoch, session: mine })),
            Ok(None) => {
                *session = Some(mine);
                Ok(None)
            }
            Err(e) => Err(describe(&e)),
        }
    }

    /// The stored subscriptions, the incarnation counter and the keys.
    ///
    /// # Errors
    /// The database failed, or the stored keys are damaged.
    pub(crate) async fn load(&self) -> Result<(Loaded, Option<StoredKeys>), String> {
        let client = self.shared.pool.get().await.map_err(|e| with_causes(&e))?;
        let rows = client
            .query("SELECT id, record FROM ds_subscriptions", &[])
            .await
            .map_err(|e| describe(&e))?;
        let mut loaded = Loaded::default();
        for row in rows {
            let id: String = row.get(0);
            match record::decode(row.get(1)).filter(|s| s.id == id) {
                Some(sub) => loaded.subscriptions.push(sub),
                None => loaded.damaged.push(id),
            }
        }
        let control = client
            .query_one("SELECT next_incarnation, keys FROM ds_sub_control WHERE id = 1", &[])
            .await
            .map_err(|e| describe(&e))?;
        loaded.next_incarnation = u(control.get(0));
        let keys = match control.get::<_, Option<&str>>(1) {
            None => None,
            Some(text) => Some(
                StoredKeys::decode(text.as_bytes())
                    .ok_or("the stored subscription keys (ds_sub_control.keys) are damaged")?,
            ),
        };
        Ok((loaded, keys))
    }

    /// Stores the keys, if this node still leads at `epoch`.
    ///
    /// # Errors
    /// [`Write`].
    pub(crate) async fn write_keys(&self, epoch: u64, keys: &StoredKeys) -> Result<(), Write> {
        let client = self.shared.pool.get().await.map_err(|e| Write::Db(with_causes(&e)))?;
        let n = client
            .execute(
                "UPDATE ds_sub_control SET keys = $1 WHERE id = 1 AND epoch = $2",
                &[&keys.encode(), &i(epoch)],
            )
            .await
            .map_err(|e| Write::Db(describe(&e)))?;
        if n == 1 { Ok(()) } else { Err(Write::Deposed) }
    }

    /// Stores changed records and removes deleted ones in one transaction, if this node
    /// still leads at `epoch`.
    ///
    /// # Errors
    /// [`Write`].
    pub(crate) async fn write(
        &self,
        epoch: u64,
        puts: &[(String, Vec<u8>)],
        deletes: &[String],
        next_incarnation: u64,
    ) -> Result<(), Write> {
        let db = |e: tokio_postgres::Error| Write::Db(describe(&e));
        let mut client = self.shared.pool.get().await.map_err(|e| Write::Db(with_causes(&e)))?;
        let tx = client.transaction().await.map_err(db)?;
        let fenced = tx
            .execute(
                "UPDATE ds_sub_control SET next_incarnation = greatest(next_incarnation, $1) \
                 WHERE id = 1 AND epoch = $2",
                &[&i(next_incarnation), &i(epoch)],
            )
            .await
            .map_err(db)?;
        if fenced != 1 {
            return Err(Write::Deposed);
        }
        if !puts.is_empty() {
            let ids: Vec<&str> = puts.iter().map(|(id, _)| id.as_str()).collect();
            let records: Vec<&[u8]> = puts.iter().map(|(_, r)| r.as_slice()).collect();
            tx.execute(
                "INSERT INTO ds_subscriptions (id, record) \
                 SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                &[&ids, &records],
            )
            .await
            .map_err(db)?;
        }
        if !deletes.is_empty() {
            tx.execute("DELETE FROM ds_subscriptions WHERE id = ANY($1)", &[&deletes])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// The state of the live streams named in `names` or starting with one of `prefixes`,
    /// as the database has it now (a request that must see every acknowledged append reads
    /// this rather than wait for the notifications).
    ///
    /// # Errors
    /// The database failed.
    pub(crate) async fn streams_now(
        &self,
        names: &[&str],
        prefixes: &[&str],
    ) -> Result<Vec<StreamState>, String> {
        if names.is_empty() && prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.shared.pool.get().await.map_err(|e| with_causes(&e))?;
        let patterns: Vec<String> = prefixes
            .iter()
            .map(|p| {
                let escaped = p.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                format!("{escaped}%")
            })
            .collect();
        let rows = client
            .query(
                "SELECT name, incarnation, tail, closed, coalesce(fork_at, 0), \
                 coalesce(fork_at_tag, 0) FROM ds_streams \
                 WHERE NOT soft_deleted AND (name = ANY($1) OR name LIKE ANY($2))",
                &[&names, &patterns],
            )
            .await
            .map_err(|e| describe(&e))?;
        Ok(rows.iter().map(state_of).collect())
    }

    /// Hands `call` to the leader and waits for its answer (holding a connection only
    /// while it asks).
    ///
    /// # Errors
    /// The database failed, or no leader answered within [`CALL_TIMEOUT`].
    pub(crate) async fn call(&self, call: &str) -> Result<String, String> {
        let mut signals = self.shared.signals.subscribe();
        let id: i64 = {
            let client = self.shared.pool.get().await.map_err(|e| with_causes(&e))?;
            let row = client
                .query_one("INSERT INTO ds_sub_calls (call) VALUES ($1) RETURNING id", &[&call])
                .await
                .map_err(|e| describe(&e))?;
            client
                .execute("SELECT pg_notify($1, 'call')", &[&super::listen::SUBS_CHANNEL])
                .await
                .map_err(|e| describe(&e))?;
            row.get(0)
        };
        let mine = format!("answer:{id}");
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        loop {
            let answer = async {
                let client = self.shared.pool.get().await.map_err(|e| with_causes(&e))?;
                client
                    .query_opt(
                        "DELETE FROM ds_sub_calls WHERE id = $1 AND answer IS NOT NULL \
                         RETURNING answer",
                        &[&id],
                    )
                    .await
                    .map_err(|e| describe(&e))
            };
            // A failed look is tried again at the next poll, until the deadline.
            if let Ok(Some(row)) = answer.await {
                return Ok(row.get(0));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                if let Ok(client) = self.shared.pool.get().await {
                    let _ = client.execute("DELETE FROM ds_sub_calls WHERE id = $1", &[&id]).await;
                }
                return Err("no subscription leader answered in time".into());
            }
            signal(&mut signals, &mine, POLL.min(deadline - now)).await;
        }
    }

    /// The leader's side: takes the calls no term of `epoch` took yet and whose callers
    /// still wait (oldest first), after removing old ones. A call taken by an earlier leader
    /// that never answered is taken again.
    ///
    /// # Errors
    /// The database failed.
    pub(crate) async fn take_calls(&self, epoch: u64) -> Result<Vec<(i64, String)>, String> {
        let client = self.shared.pool.get().await.map_err(|e| with_causes(&e))?;
        client
            .execute("DELETE FROM ds_sub_calls WHERE made < now() - interval '60 seconds'", &[])
            .await
            .map_err(|e| describe(&e))?;
        let timeout = i64::try_from(CALL_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
        let mut rows = client
            .query(
                "UPDATE ds_sub_calls SET taken = $1 \
                 WHERE answer IS NULL AND taken IS DISTINCT FROM $1 \
                   AND made > now() - make_interval(secs => $2::bigint / 1000.0) \
                 RETURNING id, call",
                &[&i(epoch), &timeout],
            )
            .await
            .map_err(|e| describe(&e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect::<Vec<(i64, String)>>();
        rows.sort_unstable_by_key(|(id, _)| *id);
        Ok(rows)
    }

    /// The leader's side: stores the answer to call `id` (unless one is there) and tells its
    /// caller.
    ///
    /// # Errors
    /// The database failed.
    pub(crate) async fn answer(&self, id: i64, answer: &str) -> Result<(), String> {
        let client = self.shared.pool.get().await.map_err(|e| with_causes(&e))?;
        client
            .execute(
                "UPDATE ds_sub_calls SET answer = $2 WHERE id = $1 AND answer IS NULL",
                &[&id, &answer],
            )
            .await
            .map_err(|e| describe(&e))?;
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&super::listen::SUBS_CHANNEL, &format!("answer:{id}")],
            )
            .await
            .map_err(|e| describe(&e))?;
        Ok(())
    }

    /// Waits until a follower may have made a call (a notification, or [`POLL`] × 5).
    pub(crate) async fn calls_waiting(
        &self,
        signals: &mut tokio::sync::broadcast::Receiver<String>,
    ) {
        signal(signals, "call", POLL * 5).await;
    }

    /// A receiver of the subscriptions' notifications.
    pub(crate) fn signals(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.shared.signals.subscribe()
    }
}
