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
/// How often, while the listening connection is up, it is probed (a dead peer is noticed
/// and the connection made again), the database's answer clears a failed round's mark on
/// `/readyz`, and the sliding TTLs of streams watched here are renewed (watched is not idle,
/// §5.1, whichever node sweeps them).
const TICK: Duration = Duration::from_secs(1);
/// Every this many ticks, watched tails are read again (a safety net for a notification its
/// sender never managed to send).
const RESYNC_TICKS: u32 = 5;
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
        // A removal is never replaced by a state of the same (or an older) incarnation that
        // was committed before it and announced after.
        let keep = pending
            .get(name)
            .is_some_and(|had| had.gone && !change.gone && change.incarnation <= had.incarnation);
        if !keep {
            pending.insert(name.clone(), change);
        }
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
                    let mut tick = tokio::time::interval(TICK);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut ticks = 0u32;
                    loop {
                        tokio::select! {
                            next = rx.recv() => {
                                let Some(shared) = shared.upgrade() else { return };
                                match next {
                                    Some(payload) => apply(&shared, &payload),
                                    None => break,
                                }
                            }
                            _ = tick.tick() => {
                                let probe = client.simple_query("SELECT 1");
                                let alive = tokio::time::timeout(Duration::from_secs(5), probe)
                                    .await
                                    .is_ok_and(|r| r.is_ok());
                                if !alive {
                                    tracing::warn!("listening connection stopped answering");
                                    break;
                                }
                                let Some(shared) = shared.upgrade() else { return };
                                shared.failing.store(false, std::sync::atomic::Ordering::Relaxed);
                                renew_watched(&shared).await;
                                ticks += 1;
                                if ticks.is_multiple_of(RESYNC_TICKS) {
                                    resync_with(&shared).await;
                                }
                            }
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

/// Renews the sliding TTL of every stream this node's live readers watch.
async fn renew_watched(shared: &Shared) {
    let watched = shared.watched_names();
    if watched.is_empty() {
        return;
    }
    let names: Vec<&str> = watched.iter().map(|(n, _)| &**n).collect();
    let now = super::i(shared.clock.now_ms());
    let renewed = async {
        let client = shared.pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute(
                "UPDATE ds_streams SET last_access_ms = $2 \
                 WHERE name = ANY($1) AND ttl_secs IS NOT NULL AND last_access_ms < $2",
                &[&names, &now],
            )
            .await
            .map_err(|e| describe(&e))
    };
    if let Err(e) = renewed.await {
        tracing::debug!(error = %e, "watched streams' TTLs not renewed");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn change(incarnation: u64, tail: u64, gone: bool) -> Change {
        Change { incarnation, tail, closed: false, gone }
    }

    /// Review finding: a round that committed just before a delete announced its tail after
    /// the delete's removal, replacing it; other nodes never heard the stream was gone.
    #[test]
    fn a_removal_is_not_replaced_by_an_older_state() {
        let outbox = Outbox::default();
        let name: Arc<str> = Arc::from("s");
        outbox.push(&name, change(7, 0, true));
        outbox.push(&name, change(7, 40, false));
        assert_eq!(outbox.take()[&name], change(7, 0, true));
        // A new incarnation of the name is news.
        outbox.push(&name, change(7, 0, true));
        outbox.push(&name, change(8, 3, false));
        assert_eq!(outbox.take()[&name], change(8, 3, false));
    }

    #[test]
    fn payloads_round_trip_and_stay_under_the_limit() {
        let mut changes = HashMap::new();
        for i in 0..400u64 {
            changes.insert(
                Arc::from(format!("stream/{i}/\"quoted\"\n").as_str()),
                change(i, i * 3, i % 2 == 0),
            );
        }
        let payloads = encode(&changes);
        assert!(payloads.len() > 1, "split into several notifications");
        let mut back = HashMap::new();
        for p in &payloads {
            assert!(p.len() <= PAYLOAD_BYTES);
            for (name, c) in decode(p).expect("decodes") {
                back.insert(Arc::from(name.as_str()), c);
            }
        }
        assert_eq!(back, changes);
        assert_eq!(decode("not json"), None);
    }
}
