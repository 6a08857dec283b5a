//! The `ds-server` binary's command line and logging (issue 11): `--help`, `--version`,
//! `--check-config` on good and bad configurations (secrets never printed), JSON log lines,
//! the access log on both front ends, and `/readyz` answering 503 with `Retry-After` while
//! the database of the postgres mode cannot be reached.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::Conn;

pub(crate) fn ds_server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ds-server"));
    // Settings of the environment the tests run in must not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("DS_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    // No ./ds-server.toml of the working directory either.
    command.current_dir(std::env::temp_dir());
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run ds-server")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_and_version_answer_and_exit_zero() {
    let help = run(ds_server().arg("--help"));
    assert!(help.status.success(), "{help:?}");
    let out = text(&help.stdout);
    for expected in ["Usage: ds-server", "--config <FILE>", "--check-config", "DS_LOG_FORMAT"] {
        assert!(out.contains(expected), "--help lacks {expected}:\n{out}");
    }
    let version = run(ds_server().arg("--version"));
    assert!(version.status.success());
    assert_eq!(text(&version.stdout).trim(), format!("ds-server {}", env!("CARGO_PKG_VERSION")));
    let bogus = run(ds_server().arg("--bogus"));
    assert_eq!(bogus.status.code(), Some(2));
    assert!(text(&bogus.stderr).contains("--bogus"), "{}", text(&bogus.stderr));
}

#[test]
fn check_config_prints_the_effective_settings_without_secrets() {
    let out = run(ds_server()
        .arg("--check-config")
        .env("DS_STORAGE__MODE", "postgres")
        .env("DS_STORAGE__POSTGRES_URL", "postgres://ds:hunter2@db1:5432/streams")
        .env("DS_SUBSCRIPTIONS__CLAIM_SECRET", "s3cret-claims")
        .env("DS_SERVER__PORT", "8080"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(!printed.contains("hunter2") && !printed.contains("s3cret"), "{printed}");
    let settings: toml::Table = toml::from_str(&printed).expect("the settings are TOML");
    assert_eq!(settings["server"]["port"].as_integer(), Some(8080));
    assert_eq!(settings["storage"]["mode"].as_str(), Some("postgres"));
    assert_eq!(
        settings["storage"]["postgres_url"].as_str(),
        Some("postgres://ds:<redacted>@db1:5432/streams")
    );
    assert_eq!(settings["subscriptions"]["claim_secret"].as_str(), Some("<redacted>"));
    // What it prints is a configuration file that loads to the same settings.
    let file = std::env::temp_dir().join(format!("ds-cli-{}.toml", std::process::id()));
    std::fs::write(&file, printed.replace("<redacted>", "x")).unwrap();
    let again = run(ds_server().arg("--check-config").arg("--config").arg(&file));
    std::fs::remove_file(&file).unwrap();
    assert!(again.status.success(), "{}", text(&again.stderr));
}

#[test]
fn check_config_refuses_a_bad_configuration_with_the_reason() {
    let port = run(ds_server().arg("--check-config").env("DS_SERVER__PORT", "eighty"));
    assert_eq!(port.status.code(), Some(2));
    assert!(text(&port.stderr).contains("DS_SERVER__PORT"), "{}", text(&port.stderr));
    assert!(port.stdout.is_empty(), "nothing printed as settings");
    let file = std::env::temp_dir().join(format!("ds-cli-bad-{}.toml", std::process::id()));
    std::fs::write(&file, "[server]\nportt = 1\n").unwrap();
    let typo = run(ds_server().arg("--check-config").arg("-c").arg(&file));
    std::fs::remove_file(&file).unwrap();
    assert_eq!(typo.status.code(), Some(2));
    let why = text(&typo.stderr);
    assert!(why.contains("portt") && why.contains(&file.display().to_string()), "{why}");
    let missing = run(ds_server().args(["--check-config", "--config", "/nonexistent/ds.toml"]));
    assert_eq!(missing.status.code(), Some(2));
    let format = run(ds_server().arg("--check-config").env("DS_LOG_FORMAT", "yaml"));
    assert_eq!(format.status.code(), Some(2));
    assert!(text(&format.stderr).contains("DS_LOG_FORMAT"));
    // TLS files are read as at start: one that is not there is named.
    let tls = run(ds_server()
        .arg("--check-config")
        .env("DS_SERVER__TLS_CERT_FILE", "/nonexistent/cert.pem")
        .env("DS_SERVER__TLS_KEY_FILE", "/nonexistent/key.pem"));
    assert_eq!(tls.status.code(), Some(2));
    assert!(text(&tls.stderr).contains("/nonexistent/cert.pem"), "{}", text(&tls.stderr));
    assert!(tls.stdout.is_empty());
}

/// A running binary whose stderr lines arrive on a channel; killed when dropped.
pub(crate) struct Running {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
    pub(crate) addr: SocketAddr,
}

impl Running {
    /// Starts `command` on a free loopback port and waits for its JSON "listening" line.
    pub(crate) fn start(mut command: Command) -> Running {
        let mut child = command
            .env("DS_SERVER__HOST", "127.0.0.1")
            .env("DS_SERVER__PORT", "0")
            .env("DS_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ds-server");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Running { child, lines, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let listening =
            running.next_line_where(|v| v["fields"]["message"] == "ds-server listening");
        running.addr = listening["fields"]["addr"].as_str().unwrap().parse().unwrap();
        running
    }

    /// The next log line (every one must be a JSON object) that `wanted` accepts.
    pub(crate) fn next_line_where(
        &self,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            let line =
                self.lines.recv_timeout(Duration::from_secs(20)).expect("an awaited log line");
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if wanted(&value) {
                return value;
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn json_logs_carry_one_access_line_per_request_on_both_front_ends() {
    for front_end in ["fast", "axum"] {
        let mut command = ds_server();
        command.env("DS_HTTP__ACCESS_LOG", "true").env("DS_HTTP__FRONT_END", front_end);
        let server = Running::start(command);
        let mut conn = Conn::connect(server.addr).await.unwrap();
        let headers = [("content-type", "text/plain")];
        let created = conn.request("PUT", "/v1/stream/logged", &headers, b"hi").await.unwrap();
        assert_eq!(created.status, 201);
        let read = conn.request("GET", "/v1/stream/logged?offset=-1", &[], b"").await.unwrap();
        assert_eq!(read.status, 200);
        let missing = conn.request("GET", "/v1/stream/nope", &[], b"").await.unwrap();
        assert_eq!(missing.status, 404);
        let access = |v: &serde_json::Value| v["target"] == "access";
        for (method, uri, status) in [
            ("PUT", "/v1/stream/logged", 201),
            ("GET", "/v1/stream/logged?offset=-1", 200),
            ("GET", "/v1/stream/nope", 404),
        ] {
            let line = server.next_line_where(access);
            let f = &line["fields"];
            assert_eq!((f["method"].as_str(), f["uri"].as_str()), (Some(method), Some(uri)));
            assert_eq!(f["status"], status, "{front_end}: {line}");
            assert_eq!(f["client"], "127.0.0.1");
            assert!(f["micros"].as_u64().is_some(), "{line}");
            assert_eq!(line["level"], "INFO");
        }
    }
}

#[tokio::test]
async fn readyz_says_503_with_retry_after_while_the_database_is_unreachable() {
    let mut command = ds_server();
    // Port 1 on loopback: nothing listens, every connection is refused.
    command
        .env("DS_STORAGE__MODE", "postgres")
        .env("DS_STORAGE__POSTGRES_URL", "postgres://ds@127.0.0.1:1/streams?connect_timeout=1");
    let server = Running::start(command);
    let mut conn = Conn::connect(server.addr).await.unwrap();
    let ready = conn.request("GET", "/readyz", &[], b"").await.unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.header("retry-after"), Some("1"));
    let append = conn.request("POST", "/v1/stream/x", &[("content-type", "text/plain")], b"a");
    let append = append.await.unwrap();
    assert_eq!(append.status, 503, "{}", append.text());
    assert_eq!(append.header("retry-after"), Some("1"));
    assert_eq!(conn.request("GET", "/healthz", &[], b"").await.unwrap().status, 200);
}
