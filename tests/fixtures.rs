//! The committed version-1 data directories open, read back as written, keep their producer
//! and `Stream-Seq` state, and their damage is handled by the documented policy; and
//! `engine-inspect` reports on them without changing them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{TestServer, stream};

/// A scratch copy of a fixture (recovery may cut torn tails; the originals stay as they are).
fn copy_fixture(name: &str) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let to = std::env::temp_dir().join(format!(
        "ds-fixture-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    copy_dir(&from, &to);
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Every file under `dir` with its content, to show a tool changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

async fn serve(dir: &Path) -> TestServer {
    serve_in("file-durable", dir).await
}

async fn serve_in(mode: &str, dir: &Path) -> TestServer {
    let (dir, mode) = (dir.to_path_buf(), mode.to_owned());
    TestServer::with(move |c| {
        c.storage.mode = mode;
        c.storage.data_dir = dir;
        c.storage.acid_shard_count = 2;
    })
    .await
}

fn inspect(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_engine-inspect")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_directory_opens_with_its_state() {
    for (fixture, mode) in [("v1", "file-durable"), ("acid_v1", "acid")] {
        let dir = copy_fixture(fixture);
        let server = serve_in(mode, &dir).await;
        check_v1_state(&server).await;
        server.stop().await;
        assert_eq!(inspect(&["verify", dir.to_str().unwrap()]).0, 0, "{fixture}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// What the `v1` and `acid_v1` fixtures hold (tests/fixtures/README.md).
async fn check_v1_state(server: &TestServer) {
    let text = ("content-type", "text/plain");
    assert_eq!(server.req("GET", &stream("text/greeting"), &[], b"").await.text(), "hello, world");
    let stale =
        server.req("POST", &stream("text/greeting"), &[text, ("stream-seq", "0001")], b"!").await;
    assert_eq!(stale.status, 409, "Stream-Seq survived");
    let json = server.req("GET", &stream("json/events"), &[], b"").await;
    let values: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(values, serde_json::json!([{"n":1},{"n":2},{"n":3},{"n":4}]));
    let retry = [
        ("content-type", "application/json"),
        ("producer-id", "p1"),
        ("producer-epoch", "0"),
        ("producer-seq", "1"),
    ];
    assert_eq!(server.req("POST", &stream("json/events"), &retry, b"{\"n\":4}").await.status, 204);
    let closed = server.req("GET", &stream("bin/closed"), &[], b"").await;
    assert_eq!(&closed.body[..], &[0, 1, 2, 0xff]);
    assert_eq!(closed.header("stream-closed"), Some("true"));
    let close_retry = [
        ("stream-closed", "true"),
        ("producer-id", "closer"),
        ("producer-epoch", "2"),
        ("producer-seq", "0"),
    ];
    assert_eq!(server.req("POST", &stream("bin/closed"), &close_retry, b"").await.status, 204);
    let head = server.req("HEAD", &stream("text/expiring"), &[], b"").await;
    assert_eq!(head.header("stream-expires-at"), Some("2999-01-01T00:00:00.000Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_directory_cuts_torn_tails_and_keeps_corrupt_logs_read_only() {
    let dir = copy_fixture("v1_corrupt");
    let (code, out) = inspect(&["verify", dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 1, "verify reports the damage: {out}");
    assert!(out.contains("torn tail") && out.contains("corrupt record"), "{out}");
    let server = serve(&dir).await;
    // The torn tail was cut: the stream reads as it was and takes writes.
    let text = ("content-type", "text/plain");
    assert_eq!(server.req("GET", &stream("text/greeting"), &[], b"").await.text(), "hello, world");
    assert_eq!(server.req("POST", &stream("text/greeting"), &[text], b"!").await.status, 204);
    // The corrupt log serves what precedes the damage and refuses writes.
    let json = server.req("GET", &stream("json/events"), &[], b"").await;
    assert_eq!(json.status, 200);
    let values: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(values, serde_json::json!([{"n":1},{"n":2}]));
    let write = server
        .req("POST", &stream("json/events"), &[("content-type", "application/json")], b"5")
        .await;
    assert_eq!(write.status, 500);
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_inspect_lists_and_dumps_without_writing() {
    let dir = copy_fixture("v1");
    let before: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    let (code, out) = inspect(&["list", dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let events = list.as_array().unwrap().iter().find(|s| s["name"] == "json/events").unwrap();
    assert_eq!((events["records"].as_u64(), events["state"].as_str()), (Some(3), Some("open")));
    assert_eq!(events["producers"][0]["id"], "p1");
    let closed = list.as_array().unwrap().iter().find(|s| s["name"] == "bin/closed").unwrap();
    assert_eq!(closed["state"], "closed");
    let (code, out) = inspect(&["dump", dir.to_str().unwrap(), "json/events", "--json"]);
    assert_eq!(code, 0);
    let records: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 3);
    assert_eq!(records[1]["producer"]["seq"], 0);
    let second = records[1]["offset"].as_str().unwrap().to_owned();
    let (_, from) =
        inspect(&["dump", dir.to_str().unwrap(), "json/events", "--from", &second, "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&from).unwrap().as_array().unwrap().len(),
        2
    );
    assert_eq!(inspect(&["dump", dir.to_str().unwrap(), "nope"]).0, 2);
    assert_eq!(inspect(&["bogus"]).0, 2);
    let after: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(before.len(), after.len(), "inspect created or removed nothing");
    std::fs::remove_dir_all(dir).unwrap();
}

/// In acid mode `list` shows each stream's shard, `verify` checks every shard and stream, and
/// `dump` reads rows: all without changing a byte of the shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_inspect_reads_acid_shards_without_writing() {
    let dir = copy_fixture("acid_v1");
    let before = snapshot(&dir);
    let path = dir.to_str().unwrap();
    let (code, out) = inspect(&["list", path, "--json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let find = |name: &str| list.as_array().unwrap().iter().find(|s| s["name"] == name).cloned();
    let events = find("json/events").unwrap();
    assert_eq!((events["mode"].as_str(), events["shard"].as_u64()), (Some("acid"), Some(1)));
    assert_eq!((events["records"].as_u64(), events["bytes"].as_u64()), (Some(3), Some(32)));
    assert_eq!(events["producers"][0]["id"], "p1");
    assert_eq!(find("text/greeting").unwrap()["shard"], 0);
    assert_eq!(find("bin/closed").unwrap()["state"], "closed");
    let (code, out) = inspect(&["verify", path, "--json"]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["shards"].as_array().unwrap().len(), 2);
    assert_eq!(report["shards"][1]["integrity"], "clean");
    let (code, out) = inspect(&["dump", path, "json/events", "--json"]);
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(
        (rows[1]["messages"].as_u64(), rows[1]["payload_bytes"].as_u64()),
        (Some(2), Some(16))
    );
    let second = rows[1]["offset"].as_str().unwrap().to_owned();
    let (_, from) = inspect(&["dump", path, "json/events", "--from", &second, "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&from).unwrap().as_array().unwrap().len(),
        2
    );
    assert_eq!(inspect(&["dump", path, "nope"]).0, 2);
    assert!(snapshot(&dir) == before, "inspect changed the shards");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `engine-inspect` on forks, in both persistent layouts: `list` shows each fork's source and
/// fork offset, each source's fork count, and a deleted source kept for its forks; `verify`
/// is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_inspect_shows_forks() {
    for mode in ["acid", "file-durable"] {
        let dir = std::env::temp_dir().join(format!("ds-inspect-forks-{mode}-{}", rand_suffix()));
        let server = serve_in(mode, &dir).await;
        let text = ("content-type", "text/plain");
        let created = server.req("PUT", &stream("src"), &[text], b"abc").await;
        let tail = created.header("stream-next-offset").unwrap().to_owned();
        let fork = [text, ("stream-forked-from", "/v1/stream/src")];
        assert_eq!(server.req("PUT", &stream("f1"), &fork, b"").await.status, 201);
        let fork2 = [text, ("stream-forked-from", "/v1/stream/f1")];
        assert_eq!(server.req("PUT", &stream("f2"), &fork2, b"").await.status, 201);
        assert_eq!(server.req("DELETE", &stream("src"), &[], b"").await.status, 204);
        server.stop().await;
        let path = dir.to_str().unwrap();
        let (code, out) = inspect(&["list", path, "--json"]);
        assert_eq!(code, 0, "{out}");
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let find =
            |name: &str| list.as_array().unwrap().iter().find(|s| s["name"] == name).cloned();
        let src = find("src").unwrap();
        assert_eq!((src["state"].as_str(), src["forks"].as_u64()), (Some("deleted"), Some(1)));
        let f1 = find("f1").unwrap();
        assert_eq!(f1["forked_from"]["source"], "src");
        assert_eq!(f1["forked_from"]["offset"], tail.as_str(), "{mode}");
        assert_eq!(f1["forks"], 1);
        assert_eq!(find("f2").unwrap()["forked_from"]["source"], "f1");
        let (code, out) = inspect(&["verify", path]);
        assert_eq!(code, 0, "{mode}: {out}");
        let (code, text_out) = inspect(&["list", path]);
        assert_eq!(code, 0);
        assert!(text_out.contains(&format!("fork of src at {tail}")), "{text_out}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
