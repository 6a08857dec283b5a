//! `engine-inspect`: read-only views of a ds-server data directory (file-log and acid modes).
//!
//! ```text
//! engine-inspect list   DIR                         [--json]
//! engine-inspect verify DIR                         [--json]   exit 0 clean, 1 problems
//! engine-inspect dump   DIR STREAM [--from OFFSET] [--json]
//! ```
//! `DIR` may also be the `postgres` mode's database (`postgres://…` or a libpq connection
//! string): `list` shows its streams, `verify` checks every stream's rows (contiguous from
//! base to tail, well-formed record ends, JSON rows on message boundaries), fork links and
//! reference counts, and rows of no stream, and `dump` shows a stream's rows.
//! It never writes and takes no lock, so it runs beside a live server as well as after a
//! crash. In acid mode `list` shows each stream's shard, `verify` runs redb's integrity check
//! on every shard (in memory: the files are not touched) and checks each stream's rows
//! against its tail row, and `dump` reads a stream's rows. The logic lives in
//! `ds_engine::inspect`.

#![allow(clippy::print_stdout, reason = "a command-line tool prints its answer")]

use std::path::PathBuf;
use std::process::ExitCode;

use ds_engine::fs::StdFs;
use ds_engine::inspect;
use ds_engine::{Expiry, ReadFrom};
use serde_json::json;

const USAGE: &str = "usage:
  engine-inspect list   DIR                         [--json]
  engine-inspect verify DIR                         [--json]
  engine-inspect dump   DIR STREAM [--from OFFSET]  [--json]
DIR may be a PostgreSQL URL or connection string (the postgres mode's database).";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let as_json = take_flag(&mut args, "--json");
    let from = match take_value(&mut args, "--from") {
        Ok(v) => v,
        Err(e) => return usage(&e),
    };
    let (command, dir) = match (args.first(), args.get(1)) {
        (Some(c), Some(d)) => (c.as_str(), PathBuf::from(d)),
        _ => return usage("missing command or directory"),
    };
    if is_database(&args[1]) {
        return postgres(command, &args, from.as_deref(), as_json);
    }
    let result = match (command, args.len()) {
        ("list", 2) => list(&dir, as_json),
        ("verify", 2) => verify(&dir, as_json),
        ("dump", 3) => dump(&dir, &args[2], from.as_deref(), as_json),
        _ => return usage("unknown command or wrong arguments"),
    };
    result.unwrap_or_else(|e| {
        eprintln!("engine-inspect: {e}");
        ExitCode::from(2)
    })
}

/// Whether the argument names a PostgreSQL database rather than a directory.
fn is_database(arg: &str) -> bool {
    arg.starts_with("postgres://") || arg.starts_with("postgresql://") || arg.contains("host=")
}

/// `list`, `verify` or `dump` against the postgres mode's database.
fn postgres(command: &str, args: &[String], from: Option<&str>, as_json: bool) -> ExitCode {
    use ds_engine::pg::inspect as pg;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("engine-inspect: {e}");
            return ExitCode::from(2);
        }
    };
    let url = args[1].as_str();
    let done = rt.block_on(async {
        match (command, args.len()) {
            ("list", 2) => {
                let streams = pg::list(url, now_ms()).await?;
                print_list(streams, as_json);
                Ok(ExitCode::SUCCESS)
            }
            ("verify", 2) => {
                let report = pg::verify(url).await?;
                if as_json {
                    let out = json!({
                        "clean": report.problems.is_empty(), "streams": report.streams,
                        "rows": report.rows, "problems": report.problems,
                    });
                    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                } else {
                    for p in &report.problems {
                        println!("problem: {p}");
                    }
                    println!(
                        "{} streams, {} rows, {} problems",
                        report.streams,
                        report.rows,
                        report.problems.len()
                    );
                }
                Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
            }
            ("dump", 3) => {
                let from = parse_from(from).map_err(|e| e.to_string())?;
                let records = pg::dump(url, &args[2], from).await?;
                print_dump(&records, as_json);
                Ok(ExitCode::SUCCESS)
            }
            _ => Err::<ExitCode, String>("unknown command or wrong arguments".into()),
        }
    });
    done.unwrap_or_else(|e| {
        eprintln!("engine-inspect: {e}");
        ExitCode::from(2)
    })
}

fn usage(why: &str) -> ExitCode {
    eprintln!("engine-inspect: {why}\n{USAGE}");
    ExitCode::from(2)
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

fn take_value(args: &mut Vec<String>, flag: &str) -> Result<Option<String>, String> {
    let Some(i) = args.iter().position(|a| a == flag) else { return Ok(None) };
    if i + 1 >= args.len() {
        return Err(format!("{flag} needs a value"));
    }
    let value = args.remove(i + 1);
    args.remove(i);
    Ok(Some(value))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn expiry_text(e: Expiry) -> String {
    match e {
        Expiry::Never => "-".into(),
        Expiry::IdleTtl { secs } => format!("ttl {secs}s"),
        Expiry::At { unix_ms } => format!("at {unix_ms} ms"),
    }
}

fn list(dir: &std::path::Path, as_json: bool) -> std::io::Result<ExitCode> {
    print_list(inspect::list(&StdFs::default(), dir, now_ms())?, as_json);
    Ok(ExitCode::SUCCESS)
}

fn print_list(streams: Vec<inspect::StreamSummary>, as_json: bool) {
    if as_json {
        let out: Vec<_> = streams
            .iter()
            .map(|s| {
                json!({
                    "name": s.name, "mode": s.mode, "shard": s.shard, "incarnation": format!("{:016x}", s.incarnation),
                    "content_type": s.content_type, "expiry": expiry_text(s.expiry),
                    "created_ms": s.created_ms, "bytes": s.bytes, "records": s.records,
                    "state": s.state, "problem": s.problem, "forks": s.forks,
                    "forked_from": s.forked_from.as_ref()
                        .map(|(source, at)| json!({"source": source, "offset": at.to_string()})),
                    "producers": s.producers.iter()
                        .map(|(id, e, q)| json!({"id": id, "epoch": e, "seq": q}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return;
    }
    println!(
        "{:<32} {:<9} {:<24} {:>12} {:>9} {:<8} {:<12} PRODUCERS",
        "STREAM", "MODE", "CONTENT-TYPE", "BYTES", "RECORDS", "STATE", "EXPIRY"
    );
    let mut streams = streams;
    // Acid streams grouped by shard, after the file-log ones.
    streams.sort_by(|a, b| (a.shard, &a.name).cmp(&(b.shard, &b.name)));
    for s in &streams {
        let producers: Vec<String> =
            s.producers.iter().map(|(id, e, q)| format!("{id}@{e}:{q}")).collect();
        println!(
            "{:<32} {:<9} {:<24} {:>12} {:>9} {:<8} {:<12} {}{}{}",
            s.name,
            s.shard.map_or_else(|| s.mode.to_owned(), |i| format!("{}:{i}", s.mode)),
            s.content_type,
            s.bytes,
            s.records,
            s.state,
            expiry_text(s.expiry),
            if producers.is_empty() { "-".into() } else { producers.join(",") },
            fork_text(&s.forked_from, s.forks),
            s.problem.as_ref().map(|p| format!("  [{p}]")).unwrap_or_default()
        );
    }
    println!("{} streams", streams.len());
}

/// `  fork of SOURCE at OFFSET`, `  N forks`, both or nothing.
fn fork_text(forked_from: &Option<(String, ds_engine::Offset)>, forks: u64) -> String {
    let mut out = String::new();
    if let Some((source, at)) = forked_from {
        out.push_str(&format!("  fork of {source} at {at}"));
    }
    if forks > 0 {
        out.push_str(&format!("  {forks} fork{}", if forks == 1 { "" } else { "s" }));
    }
    out
}

fn verify(dir: &std::path::Path, as_json: bool) -> std::io::Result<ExitCode> {
    let report = inspect::verify(&StdFs::default(), dir)?;
    if as_json {
        let out = json!({
            "clean": report.is_clean(),
            "streams": report.streams.iter().map(|s| json!({
                "name": s.name, "records": s.records, "log": s.log,
                "checkpoint": s.checkpoint, "ok": s.ok,
            })).collect::<Vec<_>>(),
            "leftovers": report.leftovers,
            "journal_entries": report.journal_entries,
            "shards": report.shards.iter().map(|s| json!({
                "index": s.index, "integrity": s.integrity, "problems": s.problems, "ok": s.ok,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("{:<32} {:>9} {:<40} CHECKPOINT", "STREAM", "RECORDS", "LOG");
        for s in &report.streams {
            println!("{:<32} {:>9} {:<40} {}", s.name, s.records, s.log, s.checkpoint);
        }
        for l in &report.leftovers {
            println!("leftover file (recovery removes it): {l}");
        }
        if report.journal_entries > 0 {
            println!(
                "journal: {} entries the next start writes back into their logs (checked as \
                 the logs will read then)",
                report.journal_entries
            );
        }
        for shard in &report.shards {
            println!("acid shard {}: integrity {}", shard.index, shard.integrity);
            for p in &shard.problems {
                println!("acid shard {}: {p}", shard.index);
            }
        }
        let bad = report.streams.iter().filter(|s| !s.ok).count();
        println!("{} streams, {} with problems", report.streams.len(), bad);
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `--from`: `-1` or an offset token.
fn parse_from(from: Option<&str>) -> std::io::Result<Option<ds_engine::Offset>> {
    match from.map(ReadFrom::parse) {
        None | Some(Some(ReadFrom::Start)) => Ok(None),
        Some(Some(ReadFrom::At(o))) => Ok(Some(o)),
        Some(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--from takes -1 or an offset token",
        )),
    }
}

fn dump(
    dir: &std::path::Path,
    stream: &str,
    from: Option<&str>,
    as_json: bool,
) -> std::io::Result<ExitCode> {
    let from = parse_from(from)?;
    let records = inspect::dump(&StdFs::default(), dir, stream, from)?;
    print_dump(&records, as_json);
    Ok(ExitCode::SUCCESS)
}

fn print_dump(records: &[inspect::DumpRecord], as_json: bool) {
    if as_json {
        let out: Vec<_> = records
            .iter()
            .map(|r| {
                json!({
                    "offset": r.offset, "file_position": r.file_position, "kind": r.kind,
                    "closes": r.closes, "stream_seq": r.stream_seq, "messages": r.messages,
                    "payload_bytes": r.payload_bytes, "preview": r.preview,
                    "producer": r.producer.as_ref().map(|(id, e, s)| json!({"id": id, "epoch": e, "seq": s})),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return;
    }
    println!(
        "{:<26} {:<6} {:<6} {:<20} {:<10} {:>9} PREVIEW",
        "OFFSET", "KIND", "CLOSES", "PRODUCER", "SEQ", "BYTES"
    );
    for r in records {
        let producer = r.producer.as_ref().map_or("-".into(), |(id, e, s)| format!("{id}@{e}:{s}"));
        println!(
            "{:<26} {:<6} {:<6} {:<20} {:<10} {:>9} {}",
            r.offset,
            r.kind,
            if r.closes { "yes" } else { "-" },
            producer,
            r.stream_seq.as_deref().unwrap_or("-"),
            r.payload_bytes,
            r.preview
        );
    }
}
