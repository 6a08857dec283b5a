//! Live readers across nodes: a node that commits publishes the new tails with `NOTIFY`
//! (after the commit, outside its transaction, coalesced over a few milliseconds), and
//! every node `LISTEN`s and wakes its own long-poll and SSE readers.
//!
//! A notification only wakes readers; they read the data from the database. So a lost one
//! delays a reader and never loses data: after the listening connection is (re)made, and
//! every [`RESYNC`] while it is, the tails of every stream this node's readers watch are read
//! again; while it is down they are read every [`RESYNC_DOWN`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};

use super::{Shared, describe, u};

/// The notification channel.
const CHANNEL: &str = "ds_tails";
/// How long a node gathers new tails before it sends them in one notification.
const COALESCE: Duration = Duration::from_millis(2);
/// Largest payload of one notification (PostgreSQL's limit is 8000 bytes).
const PAYLOAD_BYTES: usize = 7000;
/// How often watched tails are read again while the listening connection is up (a
/// safety net for a notification its sender never managed to send).
const RESYNC: Duration = Duration::from_secs(5);
/// How often they are read again while it is down.
const RESYNC_DOWN: Duration = Duration::from_millis(500);

/// A stream's new state, as a notification carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) incarnation: u64,
    pub(crate) tail: u64,
    pub(crate) closed: bool,
    /// Deleted, expired or soft-deleted: its readers stop.
    pub(crate) gone: bool,
}

/// The tails committed on this node and not yet announced.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pending: Mutex<HashMap<Arc<str>, Change>>,
    wake: Notify,
}

impl Outbox {
    /// Queues `change` of `name` for the next notification (a later change of the same
    /// stream replaces it).
    pub(crate) fn push(&self, name: &Arc<str>, change: Change) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.insert(name.clone(), change);
        drop(pending);
        self.wake.notify_one();
    }

    fn take(&self) -> HashMap<Arc<str>, Change> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Encodes changes as notification payloads of at most [`PAYLOAD_BYTES`]: JSON arrays of
/// `[incarnation, tail, closed, gone, name]`. A name too long for one payload is left out
/// (its readers find out at the next resync).
pub(crate) fn encode(changes: &HashMap<Arc<str>, Change>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::from("[");
    for (name, c) in changes {
        let entry =
            serde_json::json!([c.incarnation, c.tail, c.closed, c.gone, &**name]).to_string();
        if entry.len() + 2 > PAYLOAD_BYTES {
            continue;
        }
        if current.len() + entry.len() + 2 > PAYLOAD_BYTES {
            current.push(']');
            out.push(std::mem::replace(&mut current, String::from("[")));
        }
        if current.len() > 1 {
            current.push(',');
        }
        current.push_str(&entry);
    }
    if current.len() > 1 {
        current.push(']');
        out.push(current);
    }
    out
}

/// Decodes a payload; `None` for one this build does not understand.
pub(crate) fn decode(payload: &str) -> Option<Vec<(String, Change)>> {
    let entries: Vec<(u64, u64, bool, bool, String)> = serde_json::from_str(payload).ok()?;
    Some(
        entries
            .into_iter()
            .map(|(incarnation, tail, closed, gone, name)| {
                (name, Change { incarnation, tail, closed, gone })
            })
            .collect(),
    )
}

/// Sends the outbox's changes until the store is dropped.
pub(crate) async fn send(shared: std::sync::Weak<Shared>, outbox: Arc<Outbox>) {
    loop {
        outbox.wake.notified().await;
        tokio::time::sleep(COALESCE).await;
        let Some(shared) = shared.upgrade() else { return };
        let changes = outbox.take();
        if changes.is_empty() {
            continue;
        }
        let sent = async {
            let client = shared.pool.get().await.map_err(|e| e.to_string())?;
            for payload in encode(&changes) {
                client
                    .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                    .await
                    .map_err(|e| describe(&e))?;
            }
            Ok::<(), String>(())
        };
        if let Err(e) = sent.await {
            tracing::debug!(error = %e, "tail notification not sent; readers elsewhere resync");
        }
    }
}

/// Listens for other nodes' tails until the store is dropped, reconnecting as needed.
pub(crate) async fn listen(shared: std::sync::Weak<Shared>, config: tokio_postgres::Config) {
    let mut delay = Duration::from_millis(100);
    loop {
        let Some(strong) = shared.upgrade() else { return };
        drop(strong);
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                        match message {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if tx.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %describe(&e), "listening connection lost");
                                return;
                            }
                            None => return,
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!(error = %describe(&e), "LISTEN failed");
                    driver.abort();
                } else {
                    delay = Duration::from_millis(100);
                    set_listening(&shared, true);
                    // Anything committed elsewhere while nobody listened.
                    resync(&shared).await;
                    loop {
                        let next = tokio::time::timeout(RESYNC, rx.recv()).await;
                        let Some(shared) = shared.upgrade() else { return };
                        match next {
                            Ok(Some(payload)) => apply(&shared, &payload),
                            Ok(None) => break,
                            Err(_) => resync_with(&shared).await,
                        }
                    }
                    driver.abort();
                    set_listening(&shared, false);
                }
            }
            Err(e) => {
                tracing::warn!(error = %describe(&e), "cannot open the listening connection");
            }
        }
        // Down: readers here re-check their tails until the connection is back.
        let until = tokio::time::Instant::now() + delay;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(RESYNC_DOWN.min(delay)).await;
            resync(&shared).await;
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn set_listening(shared: &std::sync::Weak<Shared>, up: bool) {
    if let Some(shared) = shared.upgrade() {
        shared.listening.store(up, std::sync::atomic::Ordering::Relaxed);
    }
}

fn apply(shared: &Shared, payload: &str) {
    let Some(changes) = decode(payload) else {
        tracing::debug!("ignoring a tail notification this build does not understand");
        return;
    };
    for (name, change) in changes {
        shared.advance(&name, &change);
    }
}

async fn resync(shared: &std::sync::Weak<Shared>) {
    if let Some(shared) = shared.upgrade() {
        resync_with(&shared).await;
    }
}

/// Reads the tails of every stream this node's readers watch, and wakes them if they moved.
async fn resync_with(shared: &Shared) {
    let watched = shared.watched_names();
    if watched.is_empty() {
        return;
    }
    let read = async {
        let client = shared.pool.get().await.map_err(|e| e.to_string())?;
        let names: Vec<&str> = watched.iter().map(|(n, _)| &**n).collect();
        let rows = client
            .query(
                "SELECT name, incarnation, tail, closed, soft_deleted FROM ds_streams \
                 WHERE name = ANY($1)",
                &[&names],
            )
            .await
            .map_err(|e| describe(&e))?;
        Ok::<_, String>(rows)
    };
    let rows = match read.await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %e, "tail resync failed");
            return;
        }
    };
    let mut seen: HashMap<String, Change> = HashMap::new();
    for r in rows {
        let change = Change {
            incarnation: u(r.get(1)),
            tail: u(r.get(2)),
            closed: r.get(3),
            gone: r.get(4),
        };
        seen.insert(r.get(0), change);
    }
    for (name, incarnation) in watched {
        match seen.get(&*name) {
            Some(change) => shared.advance(&name, change),
            None => {
                let gone = Change { incarnation, tail: 0, closed: false, gone: true };
                shared.advance(&name, &gone);
            }
        }
    }
}
