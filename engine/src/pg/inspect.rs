//! `engine-inspect` against a `postgres` database: `list`, `verify` and `dump`, reading only
//! (each in one `REPEATABLE READ READ ONLY` transaction, so a live cluster shows one
//! consistent moment).

use std::collections::HashMap;

use tokio_postgres::{Client, NoTls};

use super::rows::row_ends;
use super::{NCOLS, StreamRow, cols, describe, u};
use crate::clock::UnixMs;
use crate::inspect::{DumpRecord, StreamSummary};
use crate::offset::Offset;

/// What `verify` found in a database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgReport {
    /// Streams checked.
    pub streams: usize,
    /// Data rows checked.
    pub rows: u64,
    /// Every inconsistency, one line each (empty: clean).
    pub problems: Vec<String>,
}

async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.map_err(|e| describe(&e))?;
    tokio::spawn(connection);
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| describe(&e))?;
    Ok(client)
}

/// Every stream of the database, by name.
///
/// # Errors
/// The database cannot be reached or has no ds-server schema.
pub async fn list(url: &str, now: UnixMs) -> Result<Vec<StreamSummary>, String> {
    let client = connect(url).await?;
    let db = |e: tokio_postgres::Error| describe(&e);
    let rows = client
        .query(
            concat!(
                "SELECT ",
                cols!(),
                ", s.name, s.created_ms, \
                   (SELECT coalesce(sum(CASE WHEN d.ends IS NULL THEN 1 \
                                        ELSE length(d.ends) / 4 END), 0)::bigint \
                    FROM ds_data d WHERE d.incarnation = s.incarnation) \
                 FROM ds_streams s ORDER BY s.name"
            ),
            &[],
        )
        .await
        .map_err(db)?;
    let mut producers: HashMap<u64, Vec<(String, u64, u64)>> = HashMap::new();
    for r in client
        .query("SELECT incarnation, id, epoch, seq FROM ds_producers ORDER BY id", &[])
        .await
        .map_err(db)?
    {
        producers.entry(u(r.get(0))).or_default().push((r.get(1), u(r.get(2)), u(r.get(3))));
    }
    Ok(rows
        .iter()
        .map(|r| {
            let s = StreamRow::from_row(r, 0);
            let expired = s.deadline(now, false).is_some_and(|d| d <= now);
            let state = if s.soft_deleted {
                "deleted"
            } else if expired {
                "expired"
            } else if s.closed {
                "closed"
            } else {
                "open"
            };
            StreamSummary {
                name: r.get(NCOLS),
                mode: "postgres",
                shard: None,
                incarnation: s.incarnation,
                content_type: s.content_type.as_str().to_owned(),
                expiry: s.expiry,
                created_ms: u(r.get(NCOLS + 1)),
                bytes: s.tail - s.base(),
                records: u(r.get(NCOLS + 2)),
                state,
                producers: producers.remove(&s.incarnation).unwrap_or_default(),
                problem: None,
                forked_from: s
                    .fork
                    .as_ref()
                    .map(|f| (f.link.source.to_string(), s.lineage().at(f.link.at))),
                forks: s.refs,
            }
        })
        .collect())
}

/// Checks every stream's rows: contiguous from its base to its tail, `ends` well formed,
/// JSON rows starting on message boundaries; fork links and reference counts; producer and
/// data rows of no stream.
///
/// # Errors
/// The database cannot be reached or has no ds-server schema.
pub async fn verify(url: &str) -> Result<PgReport, String> {
    let client = connect(url).await?;
    let db = |e: tokio_postgres::Error| describe(&e);
    let streams = client
        .query(concat!("SELECT ", cols!(), ", s.name FROM ds_streams s ORDER BY s.name"), &[])
        .await
        .map_err(db)?;
    let mut report = PgReport { streams: streams.len(), ..PgReport::default() };
    let mut refs: HashMap<String, u64> = HashMap::new();
    let by_name: HashMap<String, StreamRow> =
        streams.iter().map(|r| (r.get(NCOLS), StreamRow::from_row(r, 0))).collect();
    for (name, s) in &by_name {
        if let Some(f) = &s.fork {
            *refs.entry(f.link.source.to_string()).or_default() += 1;
            match by_name.get(&*f.link.source) {
                None => report.problems.push(format!("{name}: fork of missing {}", f.link.source)),
                Some(src) if src.tail < f.link.at => report
                    .problems
                    .push(format!("{name}: forked at {} past its source's tail", f.link.at)),
                Some(_) => {}
            }
        }
        let rows = client
            .query(
                "SELECT pos, length(body)::bigint, ends FROM ds_data WHERE incarnation = $1 \
                 ORDER BY pos",
                &[&super::i(s.incarnation)],
            )
            .await
            .map_err(db)?;
        let mut at = s.base();
        let mut boundary = true;
        for r in &rows {
            report.rows += 1;
            let (pos, len, ends): (u64, u64, Option<Vec<u8>>) =
                (u(r.get(0)), u(r.get(1)), r.get(2));
            if pos != at {
                report.problems.push(format!("{name}: row at {pos}, expected one at {at}"));
            }
            if ends.as_ref().is_some_and(|e| e.len() % 4 != 0) {
                report.problems.push(format!("{name}: row at {pos}: malformed ends"));
            }
            let ends = row_ends(usize::try_from(len).unwrap_or(usize::MAX), ends.as_deref());
            if !ends.windows(2).all(|w| w[0] < w[1]) || ends.last().is_some_and(|&e| e > len) {
                report.problems.push(format!("{name}: row at {pos}: record ends out of order"));
            }
            if s.content_type.is_json() && !boundary {
                report.problems.push(format!("{name}: JSON row at {pos} starts inside a message"));
            }
            boundary = ends.last() == Some(&len);
            at = pos + len;
        }
        if at != s.tail {
            report.problems.push(format!("{name}: rows end at {at}, the tail is {}", s.tail));
        }
    }
    for (name, s) in &by_name {
        let counted = refs.get(name).copied().unwrap_or(0);
        if counted != s.refs {
            report.problems.push(format!("{name}: refs {} but {counted} forks", s.refs));
        }
        if s.soft_deleted && s.refs == 0 {
            report.problems.push(format!("{name}: soft-deleted with no fork reading it"));
        }
    }
    for (table, what) in [("ds_data", "data rows"), ("ds_producers", "producer rows")] {
        let orphans: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {table} t WHERE NOT EXISTS \
                     (SELECT 1 FROM ds_streams s WHERE s.incarnation = t.incarnation)"
                ),
                &[],
            )
            .await
            .map_err(db)?
            .get(0);
        if orphans > 0 {
            report.problems.push(format!("{orphans} {what} of no stream"));
        }
    }
    Ok(report)
}

/// A stream's rows from `from` (its base when `None`).
///
/// # Errors
/// No such stream; the database cannot be reached.
pub async fn dump(
    url: &str,
    stream: &str,
    from: Option<Offset>,
) -> Result<Vec<DumpRecord>, String> {
    let client = connect(url).await?;
    let db = |e: tokio_postgres::Error| describe(&e);
    let row = client
        .query_opt(concat!("SELECT ", cols!(), " FROM ds_streams s WHERE s.name = $1"), &[&stream])
        .await
        .map_err(db)?
        .ok_or_else(|| format!("no stream {stream}"))?;
    let s = StreamRow::from_row(&row, 0);
    let start = from.map_or(0, Offset::pos);
    let rows = client
        .query(
            "SELECT pos, body, ends FROM ds_data WHERE incarnation = $1 AND pos >= $2 \
             ORDER BY pos",
            &[&super::i(s.incarnation), &super::i(start)],
        )
        .await
        .map_err(db)?;
    let lineage = s.lineage();
    Ok(rows
        .iter()
        .map(|r| {
            let body: &[u8] = r.get(1);
            let ends = row_ends(body.len(), r.get::<_, Option<&[u8]>>(2));
            DumpRecord {
                offset: lineage.at(u(r.get(0))).to_string(),
                file_position: None,
                kind: if ends.last() == Some(&(body.len() as u64)) { "append" } else { "more" },
                closes: false,
                producer: None,
                stream_seq: None,
                messages: s.content_type.is_json().then_some(ends.len()),
                payload_bytes: body.len(),
                preview: crate::inspect::preview(body),
            }
        })
        .collect())
}
