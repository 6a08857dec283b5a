//! The `postgres` mode's tables, created and migrated by the server itself: each migration
//! runs once, in order, recorded in `ds_schema`, under a transaction-scoped advisory lock so
//! that nodes starting together never run one twice. FORMAT.md describes every column.

use crate::clock::UnixMs;

/// The advisory lock key that serializes migrations (`ds-server` in ASCII, shortened).
const MIGRATION_LOCK: i64 = 0x6473_2d73_6572_7601;

/// The schema version this build writes; a database at a later version was written by a
/// newer server, which this one refuses to run against.
pub(crate) const VERSION: i32 = 2;

/// Migration `n` brings the schema from version `n` to `n + 1`.
const MIGRATIONS: [&str; VERSION as usize] = [
    r#"
CREATE TABLE ds_streams (
    name            text COLLATE "C" PRIMARY KEY,
    incarnation     bigint NOT NULL UNIQUE,
    content_type    text NOT NULL,
    ttl_secs        bigint,
    expires_at_ms   bigint,
    created_ms      bigint NOT NULL,
    last_access_ms  bigint NOT NULL,
    tail            bigint NOT NULL,
    closed          boolean NOT NULL,
    closed_by_id    text,
    closed_by_epoch bigint,
    closed_by_seq   bigint,
    stream_seq      bytea,
    fork_source     text COLLATE "C",
    fork_at         bigint,
    fork_at_tag     bigint,
    fork_req_offset text,
    fork_req_sub    bigint,
    refs            bigint NOT NULL DEFAULT 0,
    soft_deleted    boolean NOT NULL DEFAULT false
);
CREATE TABLE ds_data (
    incarnation bigint NOT NULL,
    pos         bigint NOT NULL,
    body        bytea NOT NULL,
    ends        bytea,
    PRIMARY KEY (incarnation, pos)
);
ALTER TABLE ds_data ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE ds_producers (
    incarnation bigint NOT NULL,
    id          text NOT NULL,
    epoch       bigint NOT NULL,
    seq         bigint NOT NULL,
    PRIMARY KEY (incarnation, id)
);
"#,
    r#"
CREATE TABLE ds_subscriptions (
    id     text COLLATE "C" PRIMARY KEY,
    record bytea NOT NULL
);
CREATE TABLE ds_sub_control (
    id               int PRIMARY KEY CHECK (id = 1),
    next_incarnation bigint NOT NULL,
    epoch            bigint NOT NULL,
    keys             text
);
INSERT INTO ds_sub_control VALUES (1, 1, 0, NULL);
CREATE TABLE ds_sub_calls (
    id     bigserial PRIMARY KEY,
    call   text NOT NULL,
    answer text,
    made   timestamptz NOT NULL DEFAULT now(),
    taken  bigint
);
CREATE INDEX ds_sub_calls_made ON ds_sub_calls (made);
"#,
];

/// Brings the database's schema to [`VERSION`].
///
/// # Errors
/// The database refused (or is newer than this build: [`Migrate::TooNew`]).
pub(crate) async fn migrate(
    client: &mut deadpool_postgres::Object,
    now: UnixMs,
) -> Result<(), Migrate> {
    let tx = client.transaction().await.map_err(Migrate::Db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(Migrate::Db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS ds_schema (
             id      int PRIMARY KEY CHECK (id = 1),
             version int NOT NULL
         );
         INSERT INTO ds_schema VALUES (1, 0) ON CONFLICT (id) DO NOTHING;",
    )
    .await
    .map_err(Migrate::Db)?;
    let row = tx.query_one("SELECT version FROM ds_schema", &[]).await.map_err(Migrate::Db)?;
    let found: i32 = row.get(0);
    if found > VERSION {
        return Err(Migrate::TooNew(found));
    }
    if found == 0 {
        // Incarnations start from the clock, as in memory mode: a database created again
        // never reuses an ETag a client may hold from before.
        let seed = i64::try_from(now.saturating_mul(1024)).unwrap_or(i64::MAX / 2).max(1);
        tx.batch_execute(&format!("CREATE SEQUENCE ds_incarnation START WITH {seed}"))
            .await
            .map_err(Migrate::Db)?;
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch_execute(sql).await.map_err(Migrate::Db)?;
        let to = i32::try_from(from + 1).unwrap_or(VERSION);
        tx.execute("UPDATE ds_schema SET version = $1", &[&to]).await.map_err(Migrate::Db)?;
        tracing::info!(version = to, "migrated the PostgreSQL schema");
    }
    tx.commit().await.map_err(Migrate::Db)
}

/// Why the schema could not be brought up to date.
#[derive(Debug)]
pub(crate) enum Migrate {
    /// A database error (possibly passing: the caller retries).
    Db(tokio_postgres::Error),
    /// The database is at a later schema version than this build knows.
    TooNew(i32),
}

impl std::fmt::Display for Migrate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Migrate::Db(e) => write!(f, "{}", super::describe(e)),
            Migrate::TooNew(v) => write!(
                f,
                "the database's schema is at version {v}, newer than this server's {VERSION}: \
                 run a newer ds-server"
            ),
        }
    }
}
