//! Starting the release `ds-server` as a child process on a loopback port it picks, for the
//! tests that kill or restart it (`#[path]`-included by `crash_kill.rs` and `failover.rs`).

use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};

/// A `ds-server` command; the caller adds the mode's settings before [`spawn`].
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ds-server"))
}

/// Spawns `command` on 127.0.0.1 and a free port, and waits for the log line with its
/// address. Returns the child, the address, and the rest of its log (read it, or the
/// server blocks on a full pipe).
pub fn spawn(mut command: Command) -> (Child, SocketAddr, Lines<BufReader<ChildStderr>>) {
    let mut child = command
        .env("DS_SERVER__HOST", "127.0.0.1")
        .env("DS_SERVER__PORT", "0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start ds-server");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let addr = loop {
        let line = lines.next().expect("server printed its address").expect("log line");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().and_then(|a| a.parse().ok()).expect("address");
        }
    };
    (child, addr, lines)
}
