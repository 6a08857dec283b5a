//! The `postgres` mode's committer: one task per node that folds the appends queued since
//! its last round into one transaction.
//!
//! A round locks the stream rows it touches in name order (so two nodes' rounds never wait
//! on each other in a cycle), reads their producer rows, decides every append in arrival
//! order with the shared rules against that state (another node may have appended since
//! this one last looked), then writes the data rows, the new tails, closure, `Stream-Seq`
//! and producer rows, and commits. Only then is any append of the round answered: with its
//! outcome, or with 503 if the commit failed (its fate is then unknown to the client, whose
//! retry a producer's sequence makes exactly-once).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::rows::{NewRow, rows_of};
use super::{DB_UNAVAILABLE, NCOLS, Shared, StreamRow, i};
use crate::clock::UnixMs;
use crate::error::{Error, Result};
use crate::payload::Payload;
use crate::producer::ProducerState;
use crate::rules::{self, Plan, WriterState};
use crate::store::{AppendRequest, Appended};

/// Most appends one round folds.
const ROUND_APPENDS: usize = 1024;
/// Most payload bytes one round folds (a round always takes at least one append).
const ROUND_BYTES: u64 = 16 << 20;
/// Attempts of a round that PostgreSQL aborted to break a deadlock or a serialization
/// conflict (the round is decided again from scratch each time).
const ROUND_ATTEMPTS: usize = 3;

/// The data rows of a create.
const INSERT_ROWS: &str = "INSERT INTO ds_data (incarnation, pos, body, ends) \
     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[])";
/// A round's writes but the producers', in one statement: its data rows, and the new tails,
/// closure, `Stream-Seq` and last access of its streams.
const WRITE_ROUND: &str = "WITH data AS (INSERT INTO ds_data (incarnation, pos, body, ends) \
       SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[])) \
     UPDATE ds_streams s SET tail = u.tail, closed = u.closed, \
     closed_by_id = u.by_id, closed_by_epoch = u.by_epoch, closed_by_seq = u.by_seq, \
     stream_seq = u.seq, last_access_ms = greatest(s.last_access_ms, u.access) \
     FROM unnest($5::text[], $6::bigint[], $7::bool[], $8::text[], $9::bigint[], \
                 $10::bigint[], $11::bytea[], $12::bigint[]) \
       AS u(name, tail, closed, by_id, by_epoch, by_seq, seq, access) \
     WHERE s.name = u.name";
/// The producer states a round accepted.
const UPSERT_PRODUCERS: &str = "INSERT INTO ds_producers (incarnation, id, epoch, seq) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) \
     ON CONFLICT (incarnation, id) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq";

/// One append waiting for its round.
pub(crate) struct Queued {
    pub(crate) name: Arc<str>,
    pub(crate) req: AppendRequest,
    pub(crate) payload: Result<Payload>,
    pub(crate) now: UnixMs,
    /// A subscription's own wake event (see [`super::listen::QuietRanges`]).
    pub(crate) quiet: bool,
    pub(crate) answer: oneshot::Sender<Result<Appended>>,
}

impl Queued {
    fn bytes(&self) -> u64 {
        self.payload.as_ref().map_or(0, Payload::len)
    }
}

/// Runs rounds until every sender (the store) is gone.
pub(crate) async fn run(shared: Arc<Shared>, mut inbox: mpsc::UnboundedReceiver<Queued>) {
    // The committer keeps a connection of its own between rounds, so that a burst of reads
    // holding the pool never delays a commit.
    let mut own: Option<deadpool_postgres::Object> = None;
    while let Some(first) = inbox.recv().await {
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < ROUND_APPENDS && bytes < ROUND_BYTES {
            let Ok(next) = inbox.try_recv() else { break };
            bytes += next.bytes();
            batch.push(next);
        }
        round(&shared, &mut own, batch).await;
    }
}

/// Commits one round and answers its appends.
async fn round(
    shared: &Arc<Shared>,
    own: &mut Option<deadpool_postgres::Object>,
    batch: Vec<Queued>,
) {
    let started = std::time::Instant::now();
    let mut attempt = 0;
    let outcome = loop {
        attempt += 1;
        match decide_and_commit(shared, own, &batch).await {
            Err(Failed::Conflict(e)) if attempt < ROUND_ATTEMPTS => {
                tracing::debug!(error = %super::describe(&e), "commit round retried");
            }
            other => break other,
        }
    };
    // A round aborted for lock conflicts says nothing about the database's health.
    let failed = matches!(outcome, Err(Failed::Db(_) | Failed::Pool(_)));
    shared.failing.store(failed, std::sync::atomic::Ordering::Relaxed);
    match outcome {
        Ok(decided) => {
            shared.stats.round(batch.len(), started.elapsed());
            for (name, incarnation, from, to) in &decided.quiet {
                shared.quiet.record(name, *incarnation, *from, *to);
            }
            for (name, info) in decided.published {
                shared.observe(&name, &info);
                shared.announce(&name, &info);
            }
            for (queued, answer) in batch.into_iter().zip(decided.answers) {
                let _ = queued.answer.send(answer);
            }
        }
        Err(e) => {
            let why = match &e {
                Failed::Conflict(e) | Failed::Db(e) => super::describe(e),
                Failed::Pool(e) => e.to_string(),
            };
            tracing::warn!(error = %why, appends = batch.len(), "commit round failed");
            for queued in batch {
                let _ = queued.answer.send(Err(Error::Unavailable(DB_UNAVAILABLE)));
            }
        }
    }
}

/// Why a round did not commit.
enum Failed {
    /// PostgreSQL aborted it to break a deadlock or a serialization conflict: try again.
    Conflict(tokio_postgres::Error),
    /// Any other database failure (the outcome of a failed `COMMIT` is unknown).
    Db(tokio_postgres::Error),
    /// No connection.
    Pool(deadpool_postgres::PoolError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Failed {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => Failed::Conflict(e),
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => Failed::Conflict(e),
            _ => Failed::Db(e),
        }
    }
}

/// A committed round: each append's answer, the streams whose new state to publish, and
/// the ranges its wake events took.
struct Decided {
    answers: Vec<Result<Appended>>,
    published: Vec<(Arc<str>, crate::store::StreamInfo)>,
    quiet: Vec<(Arc<str>, u64, u64, u64)>,
}

/// One locked stream as the round changes it.
struct Slot {
    row: StreamRow,
    writer: WriterState,
    changed: bool,
    last_access_ms: UnixMs,
}

async fn decide_and_commit(
    shared: &Arc<Shared>,
    own: &mut Option<deadpool_postgres::Object>,
    batch: &[Queued],
) -> std::result::Result<Decided, Failed> {
    if own.as_ref().is_none_or(|c| c.is_closed()) {
        *own = Some(shared.pool.get().await.map_err(Failed::Pool)?);
    }
    let client = own.as_ref().ok_or_else(|| Failed::Pool(deadpool_postgres::PoolError::Closed))?;
    let decided = pipelined_round(shared, client, batch).await;
    if decided.is_err()
        && let Some(client) = own.take()
    {
        // It may be inside an aborted transaction: never use it again.
        drop(deadpool_postgres::Object::take(client));
    }
    decided
}

/// One round in two round trips (plus the commit's flush): `BEGIN`, the row locks and the
/// producer rows are sent together; then, once decided, the three writes and `COMMIT`.
/// The client sends requests in the order their futures are first polled, and the joins
/// poll in argument order, so the statements run in that order. If a write fails the
/// transaction is aborted and PostgreSQL answers the `COMMIT` with a rollback: every
/// result is checked before the round counts as committed.
async fn pipelined_round(
    shared: &Arc<Shared>,
    client: &deadpool_postgres::Object,
    batch: &[Queued],
) -> std::result::Result<Decided, Failed> {
    use futures_util::future::{join, join3};
    let lock = client
        .prepare_cached(concat!(
            "SELECT ",
            super::cols!(),
            ", s.name FROM ds_streams s WHERE s.name = ANY($1) ORDER BY s.name FOR UPDATE"
        ))
        .await?;
    let producers = client
        .prepare_cached(
            "SELECT s.name, p.id, p.epoch, p.seq FROM unnest($1::text[], $2::text[]) AS k(name, id) \
             JOIN ds_streams s ON s.name = k.name \
             JOIN ds_producers p ON p.incarnation = s.incarnation AND p.id = k.id",
        )
        .await?;
    let mut names: Vec<&str> = batch.iter().map(|q| &*q.name).collect();
    names.sort_unstable();
    names.dedup();
    let (p_names, p_ids): (Vec<&str>, Vec<&str>) =
        batch.iter().filter_map(|q| q.req.producer.as_ref().map(|p| (&*q.name, &*p.id))).unzip();
    // A round without producer appends (the common case) sends no producer query.
    let known = async {
        if p_names.is_empty() {
            return Ok(Vec::new());
        }
        client.query(&producers, &[&p_names, &p_ids]).await
    };
    let (begun, rows, known) =
        join3(client.batch_execute("BEGIN"), client.query(&lock, &[&names]), known).await;
    begun?;
    let mut slots: HashMap<String, Slot> = HashMap::new();
    for r in rows? {
        let row = StreamRow::from_row(&r, 0);
        let writer = row.writer();
        let last_access_ms = row.last_access_ms;
        slots.insert(r.get(NCOLS), Slot { row, writer, changed: false, last_access_ms });
    }
    for r in known? {
        let name: &str = r.get(0);
        if let Some(slot) = slots.get_mut(name) {
            let state = ProducerState { epoch: super::u(r.get(2)), last_seq: super::u(r.get(3)) };
            slot.writer.producers.insert(Arc::from(r.get::<_, &str>(1)), state);
        }
    }

    let mut answers = Vec::with_capacity(batch.len());
    let mut data: Vec<(u64, NewRow)> = Vec::new();
    let mut written: BTreeMap<(u64, Arc<str>), ProducerState> = BTreeMap::new();
    for q in batch {
        let Some(slot) = slots.get_mut(&*q.name) else {
            answers.push(Err(Error::NotFound));
            continue;
        };
        answers.push(decide(shared, q, slot, &mut data, &mut written));
    }

    let write = client.prepare_cached(WRITE_ROUND).await?;
    let upsert = client.prepare_cached(UPSERT_PRODUCERS).await?;
    let pg: &tokio_postgres::Client = client;
    let (writes, committed) = join(
        join(write_round(pg, &write, &data, &slots), write_producers(pg, &upsert, &written)),
        client.batch_execute("COMMIT"),
    )
    .await;
    writes.0?;
    writes.1?;
    committed?;
    let quiet = batch
        .iter()
        .zip(&answers)
        .filter(|(q, _)| q.quiet)
        .filter_map(|(q, a)| {
            let incarnation = slots.get(&*q.name)?.row.incarnation;
            a.as_ref().ok().map(|a| (q.name.clone(), incarnation, a.start.pos(), a.tail.pos()))
        })
        .collect();
    let published = slots
        .into_iter()
        .filter(|(_, s)| s.changed)
        .map(|(name, s)| (Arc::from(name.as_str()), s.row.info()))
        .collect();
    Ok(Decided { answers, published, quiet })
}

/// Decides one append against its stream's state as the round has it, and applies it.
fn decide(
    shared: &Arc<Shared>,
    q: &Queued,
    slot: &mut Slot,
    data: &mut Vec<(u64, NewRow)>,
    producers: &mut BTreeMap<(u64, Arc<str>), ProducerState>,
) -> Result<Appended> {
    shared.check_live(&q.name, &slot.row, q.now)?;
    let lineage = slot.row.lineage();
    let tail = lineage.at(slot.row.tail);
    let plan = rules::plan_append(&slot.writer, &slot.row.content_type, tail, &q.req, &q.payload)?;
    let close = match plan {
        Plan::Duplicate { producer } => {
            return Ok(Appended::duplicate(tail, slot.writer.closed, producer));
        }
        Plan::Write { close } => close,
    };
    let payload = q.payload.clone().unwrap_or_default();
    let limit = shared.limits.max_stream_bytes;
    if slot.row.tail.saturating_add(payload.len()) > limit {
        return Err(Error::StreamTooLarge { limit_bytes: limit });
    }
    let json = slot.row.content_type.is_json();
    for row in rows_of(&payload, slot.row.tail, json) {
        data.push((slot.row.incarnation, row));
    }
    slot.row.tail += payload.len();
    let kind = slot.writer.apply(&q.req, close, !payload.is_empty());
    if let Some(p) = &q.req.producer {
        producers.insert((slot.row.incarnation, p.id.clone()), ProducerState::accept(p.claim));
    }
    slot.row.closed = slot.writer.closed;
    slot.row.closed_by.clone_from(&slot.writer.closed_by);
    slot.row.stream_seq.clone_from(&slot.writer.last_stream_seq);
    slot.last_access_ms = slot.last_access_ms.max(q.now);
    slot.changed = true;
    Ok(Appended {
        kind,
        start: tail,
        tail: lineage.at(slot.row.tail),
        closed: slot.writer.closed,
        producer: q.req.producer.as_ref().map(|p| p.claim),
    })
}

/// Inserts data rows of `incarnation` (one statement).
pub(crate) async fn insert_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    incarnation: u64,
    rows: &[NewRow],
) -> Result<()> {
    let data: Vec<(u64, NewRow)> = rows.iter().map(|r| (incarnation, r.clone())).collect();
    let stmt = tx.prepare_cached(INSERT_ROWS).await?;
    let pg: &tokio_postgres::Transaction<'_> = tx;
    write_rows(pg, &stmt, &data).await.map_err(|e| match e {
        Failed::Conflict(e) | Failed::Db(e) => Error::from(e),
        Failed::Pool(e) => Error::from(e),
    })
}

/// The data rows of a create (one statement).
async fn write_rows(
    tx: &impl tokio_postgres::GenericClient,
    stmt: &tokio_postgres::Statement,
    data: &[(u64, NewRow)],
) -> std::result::Result<(), Failed> {
    if data.is_empty() {
        return Ok(());
    }
    let (incs, pos, bodies, ends) = row_columns(data);
    tx.execute(stmt, &[&incs, &pos, &bodies, &ends]).await?;
    Ok(())
}

/// Data rows as the columns `unnest` takes: incarnations, positions, bodies, record ends.
type RowColumns<'a> = (Vec<i64>, Vec<i64>, Vec<&'a [u8]>, Vec<Option<&'a [u8]>>);

/// The columns of data rows.
fn row_columns(data: &[(u64, NewRow)]) -> RowColumns<'_> {
    let incs = data.iter().map(|(inc, _)| i(*inc)).collect();
    let pos = data.iter().map(|(_, r)| i(r.pos)).collect();
    let bodies = data.iter().map(|(_, r)| &r.body[..]).collect();
    let ends = data.iter().map(|(_, r)| r.ends.as_deref()).collect();
    (incs, pos, bodies, ends)
}

/// A round's data rows and stream rows ([`WRITE_ROUND`]).
async fn write_round(
    tx: &impl tokio_postgres::GenericClient,
    stmt: &tokio_postgres::Statement,
    data: &[(u64, NewRow)],
    slots: &HashMap<String, Slot>,
) -> std::result::Result<(), Failed> {
    let changed: Vec<(&String, &Slot)> = slots.iter().filter(|(_, s)| s.changed).collect();
    if changed.is_empty() && data.is_empty() {
        return Ok(());
    }
    let (incs, pos, bodies, ends) = row_columns(data);
    let names: Vec<&str> = changed.iter().map(|(n, _)| n.as_str()).collect();
    let tails: Vec<i64> = changed.iter().map(|(_, s)| i(s.row.tail)).collect();
    let closed: Vec<bool> = changed.iter().map(|(_, s)| s.row.closed).collect();
    let by = |f: fn(&(Arc<str>, crate::producer::ProducerClaim)) -> i64| -> Vec<Option<i64>> {
        changed.iter().map(|(_, s)| s.row.closed_by.as_ref().map(f)).collect()
    };
    let by_id: Vec<Option<&str>> =
        changed.iter().map(|(_, s)| s.row.closed_by.as_ref().map(|(id, _)| &**id)).collect();
    let by_epoch = by(|(_, c)| i(c.epoch));
    let by_seq = by(|(_, c)| i(c.seq));
    let seqs: Vec<Option<&[u8]>> =
        changed.iter().map(|(_, s)| s.row.stream_seq.as_deref()).collect();
    let access: Vec<i64> = changed.iter().map(|(_, s)| i(s.last_access_ms)).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
        &incs, &pos, &bodies, &ends, &names, &tails, &closed, &by_id, &by_epoch, &by_seq, &seqs,
        &access,
    ];
    tx.execute(stmt, &params).await?;
    Ok(())
}

async fn write_producers(
    tx: &impl tokio_postgres::GenericClient,
    stmt: &tokio_postgres::Statement,
    producers: &BTreeMap<(u64, Arc<str>), ProducerState>,
) -> std::result::Result<(), Failed> {
    if producers.is_empty() {
        return Ok(());
    }
    let incs: Vec<i64> = producers.keys().map(|(inc, _)| i(*inc)).collect();
    let ids: Vec<&str> = producers.keys().map(|(_, id)| &**id).collect();
    let epochs: Vec<i64> = producers.values().map(|p| i(p.epoch)).collect();
    let seqs: Vec<i64> = producers.values().map(|p| i(p.last_seq)).collect();
    tx.execute(stmt, &[&incs, &ids, &epochs, &seqs]).await?;
    Ok(())
}
