//! A nostr-relay-builder `LocalRelay` (code nobody here wrote) on 127.0.0.1 port 0, over a
//! `MemoryDatabase` that keeps events, and `orly` runs that do not block the runtime it lives in.
//! Included by the test binaries that need it (`#[path = "common/nrb.rs"] mod nrb;`), so the
//! others do not link nostr-relay-builder.
#![allow(dead_code)]

use crate::common::*;
use nostr_relay_builder::builder::RateLimit;
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use nostr_sdk::prelude::{
    Filter as NFilter, JsonUtil, MemoryDatabase, MemoryDatabaseOptions, NostrDatabase,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Longest any single sync (CLI run or `Client::sync`) may take here.
/// Event ids in hex, ordered.
pub type Ids = BTreeSet<String>;

pub const SYNC_LIMIT: Duration = Duration::from_secs(90);

pub fn to_nostr(e: &Event) -> nostr_sdk::Event {
    nostr_sdk::Event::from_json(e.to_json()).expect("orly event JSON parses as a nostr event")
}

pub fn memory_db() -> Arc<MemoryDatabase> {
    // Pitfall 5: `MemoryDatabase::new()` keeps no events.
    Arc::new(MemoryDatabase::with_opts(MemoryDatabaseOptions {
        events: true,
        max_events: None,
    }))
}

pub async fn fill(db: &MemoryDatabase, events: &[Event]) {
    for e in events {
        let st = db.save_event(&to_nostr(e)).await.expect("save_event");
        assert!(
            st.is_success(),
            "MemoryDatabase refused {}: {st:?}",
            e.id_hex()
        );
    }
}

pub async fn db_ids(db: &MemoryDatabase) -> Ids {
    db.negentropy_items(NFilter::new())
        .await
        .expect("negentropy_items")
        .into_iter()
        .map(|(id, _)| id.to_hex())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A nostr-relay-builder LocalRelay on 127.0.0.1:0.
//
// `RelayBuilder::port(0)` would bind an ephemeral port but `LocalRelay::url()` would then report
// port 0, and without a port the builder picks a random one by probing (bind, drop, rebind: racy).
// So we bind the listener ourselves, do the RFC 6455 handshake, and hand the upgraded stream to
// `LocalRelay::take_connection` (the path its hyper example uses).
// ---------------------------------------------------------------------------------------------

pub struct TestRelay {
    pub relay: LocalRelay,
    pub db: Arc<MemoryDatabase>,
    pub url: String,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.accept.abort();
        self.relay.shutdown();
    }
}

/// A rate limit that never bites (the builder's default is 60 EVENTs per minute per connection).
pub fn no_rate_limit() -> RateLimit {
    RateLimit {
        max_reqs: 500,
        notes_per_minute: 1_000_000,
    }
}

/// Server side of the RFC 6455 opening handshake. Returns false (after a 404) for plain HTTP
/// requests such as a NIP-11 fetch: like `LocalRelay`'s own listener, this relay serves no NIP-11.
pub async fn ws_handshake(tcp: &mut TcpStream) -> std::io::Result<bool> {
    use std::io::{Error, ErrorKind};
    let mut head = Vec::with_capacity(512);
    let mut b = [0u8; 1];
    // Byte by byte so nothing after the header (there should be nothing) is swallowed.
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut b).await? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed during handshake",
            ));
        }
        head.push(b[0]);
        if head.len() > 16 * 1024 {
            return Err(Error::new(ErrorKind::InvalidData, "header too large"));
        }
    }
    let head = String::from_utf8_lossy(&head);
    let key = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.trim().to_string());
    let Some(key) = key else {
        let resp = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        tcp.write_all(resp.as_bytes()).await?;
        return Ok(false);
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    tcp.write_all(resp.as_bytes()).await?;
    Ok(true)
}

pub async fn local_relay(events: &[Event], rate: RateLimit) -> TestRelay {
    local_relay_with(events, RelayBuilder::default().rate_limit(rate)).await
}

pub async fn local_relay_with(events: &[Event], builder: RelayBuilder) -> TestRelay {
    let db = memory_db();
    fill(&db, events).await;
    let relay = LocalRelay::new(builder.database(db.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let r = relay.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, peer)) = listener.accept().await else {
                continue;
            };
            let r = r.clone();
            tokio::spawn(async move {
                match timeout(Duration::from_secs(10), ws_handshake(&mut tcp)).await {
                    Ok(Ok(true)) => {
                        if let Err(e) = r.take_connection(tcp, peer).await {
                            eprintln!("LocalRelay connection from {peer} ended: {e}");
                        }
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => eprintln!("handshake with {peer} failed: {e}"),
                    Err(_) => eprintln!("handshake with {peer} timed out"),
                }
            });
        }
    });
    TestRelay {
        relay,
        db,
        url: format!("ws://{addr}"),
        accept,
    }
}

/// Runs `orly` without blocking the runtime (the LocalRelay lives in it), killed if it overruns.
pub async fn orly_async(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    orly_async_within(SYNC_LIMIT, args, envs).await
}

pub async fn orly_async_within(
    limit: Duration,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(bin("orly"));
    cmd.args(args)
        .env_remove("ORLY_DATA_DIR")
        .env_remove("ORLY_SYNC_AUTH_KEY")
        .env_remove("ORLY_SYNC_CA")
        .env_remove("ORLY_SYNC_CERT")
        .env_remove("ORLY_SYNC_KEY")
        .env_remove("ORLY_SYNC_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn orly");
    // Drain both pipes concurrently so a timeout still shows what orly said.
    let drain = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf).await;
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let status = match timeout(limit, child.wait()).await {
        Ok(st) => st.expect("wait for orly"),
        Err(_) => {
            let _ = child.kill().await;
            let (out, err) = (out.await.unwrap(), err.await.unwrap());
            let tail: Vec<&str> = out.lines().rev().take(5).collect();
            panic!(
                "orly {args:?} did not finish within {limit:?}; {} stdout lines, last (newest first): {tail:#?}; stderr: {err}",
                out.lines().count()
            );
        }
    };
    (
        status.code().unwrap_or(-1),
        out.await.unwrap(),
        err.await.unwrap(),
    )
}

/// `orly sync URL --dir DIR --json` over the store in `store`; returns (exit code, final JSON
/// line, stderr, wall time).
pub async fn orly_sync(
    url: &str,
    store: &Path,
    dir: &str,
    filter: &str,
) -> (i32, Value, String, Duration) {
    orly_sync_env(url, store, dir, filter, &[], SYNC_LIMIT).await
}

pub async fn orly_sync_env(
    url: &str,
    store: &Path,
    dir: &str,
    filter: &str,
    envs: &[(&str, &str)],
    limit: Duration,
) -> (i32, Value, String, Duration) {
    let t0 = Instant::now();
    let (code, out, err) = orly_async_within(
        limit,
        &[
            "sync",
            url,
            "--dir",
            dir,
            "--filter",
            filter,
            "--json",
            "--timeout",
            "20",
            "--data-dir",
            store.to_str().unwrap(),
        ],
        envs,
    )
    .await;
    let took = t0.elapsed();
    let last = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("orly sync printed nothing (exit {code}); stderr: {err}"));
    let last: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("final line is not JSON ({e}): {last:?}; stderr: {err}"));
    (code, last, err, took)
}

pub fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric {field:?} in {v}"))
}
