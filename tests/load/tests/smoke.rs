//! The comparison benchmark's parts work end to end, in small: the load tool
//! drives a real hubhost node, the bare relay and the Socket.IO server (each
//! on the machine's Redis under a name of this run's own) in every mode and
//! finds nothing lost. The numbers themselves belong to `make compare`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// A server process, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `command` and wait for its `listening on http://…` line.
fn start(mut command: Command) -> Server {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("exited before listening")
            .expect("readable output");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    // Keep draining, so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, url }
}

/// Run the load tool; its output.
fn load(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hubhost-load"))
        .args(args)
        .output()
        .expect("load tool runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

fn drive(proto: &str, url: &str, pid: u32) {
    let fanout = load(&[
        "fanout",
        "--proto",
        proto,
        "--urls",
        url,
        "--clients",
        "20",
        "--senders",
        "2",
        "--rate",
        "20",
        "--secs",
        "1",
    ]);
    // Losses and copies counted apart: a copy never makes up for a loss.
    assert!(
        fanout.contains("expected 400 delivered 400 lost 0 duplicates 0 closed 0"),
        "{proto}: {fanout}"
    );
    let echo = load(&[
        "echo",
        "--proto",
        proto,
        "--urls",
        url,
        "--clients",
        "2",
        "--secs",
        "1",
    ]);
    let calls: u64 = echo
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(calls > 10, "{proto}: {echo}");
    let idle = load(&[
        "idle",
        "--proto",
        proto,
        "--url",
        url,
        "--pid",
        &pid.to_string(),
        "--clients",
        "50",
    ]);
    assert!(idle.starts_with("50 connections"), "{proto}: {idle}");
}

fn run_id() -> String {
    format!("load-smoke-{}", std::process::id())
}

#[test]
fn drives_hubhost() {
    let guest = target_dir().join("wasm32-wasip2/guest/chat.wasm");
    let mut command = Command::new(target_dir().join("debug/hubhost"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            "redis://127.0.0.1:6379",
        ])
        .args(["--cluster-prefix", &run_id()])
        .arg("--hub")
        .arg(format!("demo/chat={}", guest.display()))
        .env("RUST_LOG", "warn,hubhost=info")
        .env("NO_COLOR", "1");
    let server = start(command);
    drive(
        "signalr",
        &format!("{}/demo/chat", server.url),
        server.child.id(),
    );
}

#[test]
fn drives_the_relay() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hubhost-relay"));
    command.args(["--listen", "127.0.0.1:0", "--channel", &run_id()]);
    let server = start(command);
    drive("signalr", &format!("{}/", server.url), server.child.id());
}

#[test]
fn drives_socket_io() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio");
    assert!(
        dir.join("node_modules").exists(),
        "run `make setup` (the README's test command does) to install the Socket.IO server"
    );
    let mut command = Command::new("node");
    command
        .arg(dir.join("server.mjs"))
        .env("PORT", "0")
        .env("PREFIX", run_id());
    let server = start(command);
    drive("socketio", &server.url, server.child.id());
}
