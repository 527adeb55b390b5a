//! What operators' tools see of the real service binaries: logs in a file or journal (plain
//! text, or JSON lines with `ORLY_LOG_FORMAT=json`), gRPC reflection for clients that speak
//! only `grpc.reflection.v1alpha` (old grpcurl, grpc_cli, grpcio), and the WebSocket close
//! code of a frame over the relay's cap. Every wait is bounded.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on a service (or the launcher with all three) starting and stopping.
const START_LIMIT: Duration = Duration::from_secs(90);

/// Starts `exe` with stderr into `log` and stdout read until `ready` matches a line; returns
/// the child and that line. The rest of stdout is drained.
fn start_logged(
    mut cmd: Command,
    log: &Path,
    ready: impl Fn(&str) -> bool + Send + 'static,
) -> (Child, String) {
    let file = std::fs::File::create(log).expect("log file");
    cmd.env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file));
    let mut child = cmd.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && ready(&line) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    match rx.recv_timeout(START_LIMIT) {
        Ok(line) => (child, line),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "not ready within {START_LIMIT:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// SIGTERM, then a bounded wait (SIGKILL after it).
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + START_LIMIT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("did not stop within {START_LIMIT:?} of SIGTERM");
}

fn service_cmd(name: &str, dir: &Path, format: Option<&str>) -> Command {
    let mut cmd = Command::new(bin(name));
    cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("ORLY_DATA_DIR")
        .env_remove("ORLY_DB_TYPE")
        .env_remove("ORLY_GRPC_SERVER")
        .env_remove("ORLY_DB_TOKEN");
    match format {
        Some(f) => cmd.env("ORLY_LOG_FORMAT", f),
        None => cmd.env_remove("ORLY_LOG_FORMAT"),
    };
    cmd
}

/// Checks a log written to a file: not empty, no ANSI escape anywhere, and in JSON every line
/// an object with a level and a message; `must_have` appears.
fn check_log(what: &str, text: &str, json: bool, must_have: &str) -> Vec<serde_json::Value> {
    assert!(
        text.lines().count() >= 2,
        "{what}: expected start and stop lines:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "{what}: ANSI escapes in a log file:\n{text}"
    );
    assert!(
        text.contains(must_have),
        "{what}: no {must_have:?}:\n{text}"
    );
    if !json {
        return Vec::new();
    }
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not a JSON line ({e}): {line}"));
            assert!(v.is_object(), "{what}: {line}");
            assert!(
                v["fields"]["message"].is_string(),
                "{what}: no fields.message: {line}"
            );
            v
        })
        .collect()
}

/// orly-db, orly-sync-negentropy and orly-relay with stderr to a file: plain text by default,
/// one JSON object per line with `ORLY_LOG_FORMAT=json`.
#[test]
fn service_logs_in_a_file_are_plain_text_or_json() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["orly-db", "orly-sync-negentropy", "orly-relay"] {
        for format in [None, Some("json")] {
            let tag = format!("{name}-{}", format.unwrap_or("text"));
            let log = tmp.path().join(format!("{tag}.log"));
            let cmd = service_cmd(name, &tmp.path().join(&tag), format);
            let (child, _) = start_logged(cmd, &log, |l| l.contains(" listening on "));
            stop(child);
            let text = std::fs::read_to_string(&log).unwrap();
            let lines = check_log(&tag, &text, format.is_some(), &format!("starting {name}"));
            if format.is_some() {
                assert!(
                    lines.iter().any(|v| v["level"] == "INFO"),
                    "{tag}: no INFO level:\n{text}"
                );
            }
        }
    }
}

/// The launcher's stderr (its own lines and its services', which it forwards) in a file: no
/// ANSI escape in text; in JSON every line is an object, the services' tagged with `service`.
#[test]
fn launcher_logs_in_a_file_are_plain_text_or_json() {
    let tmp = tempfile::tempdir().unwrap();
    for format in [None, Some("json")] {
        let tag = format!("launcher-{}", format.unwrap_or("text"));
        let data = tmp.path().join(&tag);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orly-launcher"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ORLY_DATA_DIR", &data)
            .env("ORLY_DB_LISTEN", "127.0.0.1:0")
            .env("ORLY_RELAY_LISTEN", "127.0.0.1:0")
            .env("ORLY_LAUNCHER_SYNC_NEGENTROPY_LISTEN", "127.0.0.1:0")
            .env("ORLY_LAUNCHER_SYNC_NEGENTROPY_ENABLED", "true");
        if let Some(f) = format {
            cmd.env("ORLY_LOG_FORMAT", f);
        }
        let log = tmp.path().join(format!("{tag}.log"));
        let (child, _) = start_logged(cmd, &log, |l| l == "[orly-launcher] all services ready");
        stop(child);
        let text = std::fs::read_to_string(&log).unwrap();
        let lines = check_log(&tag, &text, format.is_some(), "starting orly-launcher");
        for name in ["orly-db", "orly-relay", "orly-sync-negentropy"] {
            assert!(
                text.contains(&format!("starting {name}")),
                "{tag}: {name}'s lines not forwarded:\n{text}"
            );
            if format.is_some() {
                assert!(
                    lines.iter().any(|v| v["service"] == name),
                    "{tag}: no line tagged {name}:\n{text}"
                );
            }
        }
    }
}

/// Runs `cmd` to its end, stdout and stderr captured; kills it (and fails) after 30 s.
fn run_bounded(mut cmd: Command, what: &str) -> (Option<i32>, String) {
    let err_file = tempfile::NamedTempFile::new().expect("temp file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_file.reopen().expect("reopen")));
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            std::thread::sleep(Duration::from_secs(2));
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(err_file.path()).unwrap_or_default(),
    )
}

/// A value that is neither `text` nor `json` stops a service before it starts, naming it.
#[test]
fn an_unknown_log_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cmd = service_cmd("orly-db", &tmp.path().join("db"), Some("xml"));
    let (code, err) = run_bounded(cmd, "orly-db with ORLY_LOG_FORMAT=xml");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("ORLY_LOG_FORMAT") && err.contains("xml"),
        "{err}"
    );
    assert!(!tmp.path().join("db").exists(), "nothing started: {err}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orly-launcher"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ORLY_DATA_DIR", tmp.path().join("launcher"))
        .env("ORLY_DB_LISTEN", "127.0.0.1:0")
        .env("ORLY_RELAY_LISTEN", "127.0.0.1:0")
        .env("ORLY_LOG_FORMAT", "xml");
    let (code, err) = run_bounded(cmd, "orly-launcher with ORLY_LOG_FORMAT=xml");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("ORLY_LOG_FORMAT"), "{err}");
    assert!(
        !tmp.path().join("launcher").exists(),
        "nothing started: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Server reflection, v1alpha

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Services listed by `grpc.reflection.v1alpha` at `addr` (plaintext), sorted.
async fn v1alpha_services(addr: &str) -> Vec<String> {
    reflection_v1alpha(&channel(addr).await, tonic::Request::new)
        .await
        .unwrap_or_else(|st| panic!("v1alpha reflection at {addr}: {st:?}"))
}

/// Both services answer a v1alpha reflection client with the services they serve (as the v1
/// test in service.rs checks for v1), both reflection versions among them.
#[test]
fn reflection_v1alpha_lists_services_on_both_services() {
    orly::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let db = spawn_service(
        "orly-db",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            tmp.path().join("db").to_str().unwrap(),
        ],
        &[],
    );
    let sync = spawn_service(
        "orly-sync-negentropy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            tmp.path().join("svc").to_str().unwrap(),
        ],
        &[("ORLY_DB_TYPE", "fjall")],
    );
    let limit = Duration::from_secs(30);
    for (p, own, other) in [
        (
            &db,
            "orlydb.v1.DatabaseService",
            "orlysync.negentropy.v1.NegentropyService",
        ),
        (
            &sync,
            "orlysync.negentropy.v1.NegentropyService",
            "orlydb.v1.DatabaseService",
        ),
    ] {
        let names = rt
            .block_on(async { tokio::time::timeout(limit, v1alpha_services(&p.addr)).await })
            .expect("reflection timed out");
        for want in [
            own,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            assert!(names.iter().any(|n| n == want), "{}: {names:?}", p.name);
        }
        assert!(!names.iter().any(|n| n == other), "{}: {names:?}", p.name);
    }
}

// ---------------------------------------------------------------------------------------------
// The relay's message size cap

/// A frame over `--max-message-bytes` is answered with close code 1009 (message too big) and
/// a reason naming the limit, not 1005 (no status); a frame under it is served as before.
#[test]
fn an_oversized_frame_is_closed_with_1009_and_a_reason() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let tmp = tempfile::tempdir().unwrap();
    let rl = relay(&tmp.path().join("store"), &["--max-message-bytes", "65536"]);
    let rt = rt();
    rt.block_on(async {
        let wait = Duration::from_secs(20);
        let (mut ws, _) = tokio::time::timeout(
            wait,
            tokio_tungstenite::connect_async(format!("ws://{}", rl.addr)),
        )
        .await
        .expect("connect timed out")
        .expect("connect");
        // Under the cap: answered.
        let fits = format!(r#"["REQ","fits",{{"search":"{}"}}]"#, "x".repeat(60_000));
        ws.send(Message::Text(fits.into())).await.expect("send");
        // Over it: the whole frame is sent; the relay may stop reading it at its header.
        let big = format!(r#"["REQ","big",{{"search":"{}"}}]"#, "x".repeat(100_000));
        let _ = tokio::time::timeout(wait, ws.send(Message::Text(big.into()))).await;
        let deadline = tokio::time::Instant::now() + wait;
        let mut answered_fits = false;
        let close = loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => panic!("no close frame within {wait:?}"),
                Ok(Some(Ok(Message::Close(frame)))) => break frame,
                Ok(Some(Ok(Message::Text(t)))) => {
                    answered_fits |= t.as_str().contains("\"fits\"");
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("connection ended without a close frame: {other:?}"),
            }
        };
        assert!(answered_fits, "the frame under the cap was not answered");
        let frame = close.expect("a close frame with a status code, not 1005");
        assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
        assert_eq!(u16::from(frame.code), 1009);
        let reason = frame.reason.as_str();
        assert!(
            reason.contains("too big") && reason.contains("65536"),
            "reason: {reason:?}"
        );
    });
}
