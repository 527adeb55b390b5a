//! `orly-relay` under hostile clients, each attack bounded in connections, bytes and time, all
//! on loopback: half-sent large messages, slow handshakes, silent WebSockets, connection floods
//! (per address and past the open-files limit) and message floods. In each, the relay stays
//! within a stated memory bound and a well-behaved client is served within a stated time, during
//! the attack and after it.

mod common;
use common::*;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

/// How long a well-behaved client may wait for its answer, during an attack and after it.
const SERVED_WITHIN: Duration = Duration::from_secs(3);

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

fn hostile_relay(dir: &std::path::Path, extra: &[&str]) -> Proc {
    relay(dir, extra)
}

/// A TCP connection from `source` (an address of 127.0.0.0/8) to `addr`.
async fn tcp_from(source: &str, addr: &str) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(format!("{source}:0").parse::<SocketAddr>().unwrap())?;
    sock.connect(addr.parse().unwrap()).await
}

/// Sends a WebSocket upgrade request and reads the response head; returns its status code.
async fn upgrade(tcp: &mut TcpStream) -> std::io::Result<u16> {
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    Ok(head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// Whether the peer closed `tcp` within `within` (EOF, reset, or a close frame then EOF).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A well-behaved client: connects, sends a REQ, and must get its EOSE within `within`.
async fn served(addr: &str, within: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    let run = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}"))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        ws.send(Message::text(r#"["REQ","ok",{"limit":1}]"#))
            .await
            .map_err(|e| format!("send: {e}"))?;
        while let Some(m) = ws.next().await {
            let m = m.map_err(|e| format!("read: {e}"))?;
            if let Ok(v) = serde_json::from_str::<Value>(m.to_text().unwrap_or(""))
                && v[0] == "EOSE"
            {
                return Ok(());
            }
        }
        Err("closed before EOSE".to_string())
    };
    match timeout(within, run).await {
        Ok(Ok(())) => Ok(t.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no EOSE within {within:?}")),
    }
}

/// A client frame header announcing a masked text message of `len` bytes (mask of zeros, so
/// the payload goes as it is).
fn frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x81, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_messages_are_bounded_in_memory_and_time() {
    // 24 clients each send 6 MiB of a 15 MiB message and stop: 144 MiB if all were kept.
    // The relay keeps at most 32 MiB of unfinished messages and gives each 3 s to finish.
    let tmp = tempfile::tempdir().unwrap();
    let relay = hostile_relay(
        &tmp.path().join("s"),
        &["--max-pending-bytes", "33554432", "--message-timeout", "3"],
    );
    let pid = relay.child.id();
    let before = rss_mb(pid);
    let mut hostile = Vec::new();
    for _ in 0..24 {
        let mut tcp = TcpStream::connect(&relay.addr).await.unwrap();
        assert_eq!(upgrade(&mut tcp).await.unwrap(), 101);
        let chunk = vec![b'a'; 6 << 20];
        let mut msg = frame_header(15 << 20);
        msg.extend_from_slice(&chunk);
        // The relay may close a connection whose bytes do not fit: that is the point.
        let _ = timeout(Duration::from_secs(5), tcp.write_all(&msg)).await;
        hostile.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_mb(pid);
    served(&relay.addr, SERVED_WITHIN)
        .await
        .expect("a normal client is served during the attack");
    // Bound: the budget twice over (codec buffers) above where it started.
    assert!(
        during - before < 64.0 + 16.0,
        "RSS went from {before:.0} MB to {during:.0} MB"
    );
    for tcp in &mut hostile {
        assert!(
            closed_within(tcp, Duration::from_secs(8)).await,
            "a message that never finishes is dropped with its connection"
        );
    }
    served(&relay.addr, SERVED_WITHIN)
        .await
        .expect("a normal client is served after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_are_closed() {
    // 30 clients send their upgrade request a byte every 200 ms; the handshake limit is 1 s.
    let tmp = tempfile::tempdir().unwrap();
    let relay = hostile_relay(&tmp.path().join("s"), &["--handshake-timeout", "1"]);
    let addr = relay.addr.clone();
    let mut clients = Vec::new();
    for _ in 0..30 {
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.unwrap();
            let t = Instant::now();
            for b in b"GET / HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n"
                .iter()
                .cycle()
            {
                if tcp.write_all(&[*b]).await.is_err() {
                    break;
                }
                if t.elapsed() > Duration::from_secs(6) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(t.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    served(&addr, SERVED_WITHIN).await.expect("served during");
    for c in clients {
        let took = c.await.unwrap().expect("a slow handshake is closed");
        assert!(took < Duration::from_secs(4), "closed after {took:?}");
    }
    served(&addr, SERVED_WITHIN).await.expect("served after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_websockets_are_pinged_then_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = hostile_relay(
        &tmp.path().join("s"),
        &["--ping-interval", "0.5", "--idle-timeout", "1.5"],
    );
    // Upgrades, then never reads or writes again: no pong ever comes back.
    let mut silent = TcpStream::connect(&relay.addr).await.unwrap();
    assert_eq!(upgrade(&mut silent).await.unwrap(), 101);
    // A client library that answers pings stays connected past the idle limit.
    let (mut alive, _) = tokio_tungstenite::connect_async(format!("ws://{}", relay.addr))
        .await
        .unwrap();
    let listen = async {
        let mut pings = 0;
        let until = Instant::now() + Duration::from_secs(3);
        while let Ok(Some(m)) = timeout(until - Instant::now(), alive.next()).await {
            if matches!(m, Ok(Message::Ping(_))) {
                pings += 1;
            }
        }
        pings
    };
    let (pings, closed) = tokio::join!(listen, closed_within(&mut silent, Duration::from_secs(4)));
    assert!(closed, "a silent WebSocket is closed");
    assert!(pings >= 1, "the relay pings a quiet client");
    alive
        .send(Message::text(r#"["REQ","still",{"limit":1}]"#))
        .await
        .expect("the answering client is still connected");
    let eose = timeout(SERVED_WITHIN, async {
        while let Some(Ok(m)) = alive.next().await {
            if m.to_text().unwrap_or("").contains("EOSE") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(eose, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address_and_in_total() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = hostile_relay(
        &tmp.path().join("s"),
        &["--max-connections-per-ip", "5", "--max-connections", "8"],
    );
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut t = tcp_from("127.0.0.1", &relay.addr).await.unwrap();
        assert_eq!(upgrade(&mut t).await.unwrap(), 101);
        held.push(t);
    }
    let mut sixth = tcp_from("127.0.0.1", &relay.addr).await.unwrap();
    assert_eq!(
        upgrade(&mut sixth).await.unwrap_or(503),
        503,
        "per-address cap"
    );
    for _ in 0..3 {
        let mut t = tcp_from("127.0.0.2", &relay.addr).await.unwrap();
        assert_eq!(
            upgrade(&mut t).await.unwrap(),
            101,
            "another address still gets in"
        );
        held.push(t);
    }
    let mut ninth = tcp_from("127.0.0.3", &relay.addr).await.unwrap();
    assert_eq!(upgrade(&mut ninth).await.unwrap_or(503), 503, "total cap");
    drop(held.remove(0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tcp_from("127.0.0.1", &relay.addr).await.unwrap();
    assert_eq!(
        upgrade(&mut again).await.unwrap(),
        101,
        "a freed place is taken again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_sockets_past_the_open_files_limit_does_not_lock_clients_out() {
    // Under a 256-descriptor limit, 300 TCP connections that never send a byte.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {} --data-dir {} --listen 127.0.0.1:0 --handshake-timeout 1",
            bin("orly-relay").display(),
            dir.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let relay = Proc {
        addr: line.trim().rsplit(' ').next().unwrap().to_string(),
        child,
        name: "orly-relay",
    };
    let nip11: Value = reqwest_nip11(&relay.addr).await;
    assert_eq!(nip11["limitation"]["max_connections"], 192, "{nip11}");
    let mut idle = Vec::new();
    for i in 0..300 {
        let source = format!("127.0.{}.{}", 1 + i / 50, 1 + i % 50);
        if let Ok(t) = tcp_from(&source, &relay.addr).await {
            idle.push(t);
        }
    }
    // Served within 6 s of the flood (places free up as the handshake limit closes sockets).
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut last = String::new();
    while let Err(e) = served(&relay.addr, Duration::from_secs(2)).await {
        assert!(
            Instant::now() < deadline,
            "not served within 6 s of the flood: {e} (before: {last})"
        );
        last = e;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut closed = 0;
    for t in &mut idle {
        if closed_within(t, Duration::from_secs(3)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, idle.len(), "every idle socket is closed");
}

/// The NIP-11 document, fetched over a raw HTTP/1.1 request.
async fn reqwest_nip11(addr: &str) -> Value {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"GET / HTTP/1.1\r\nHost: relay\r\nAccept: application/nostr+json\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    let json = body.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("NIP-11 is JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_advertises_every_limit_and_a_flood_of_messages_is_slowed_not_spread() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = hostile_relay(&tmp.path().join("s"), &["--max-messages-per-second", "50"]);
    let doc = reqwest_nip11(&relay.addr).await;
    let lim = &doc["limitation"];
    for field in [
        "max_message_length",
        "max_subscriptions",
        "max_filters",
        "max_limit",
        "max_event_length",
        "max_connections",
        "max_connections_per_ip",
        "max_messages_per_second",
        "max_pending_bytes",
        "handshake_timeout_seconds",
        "idle_timeout_seconds",
        "ping_interval_seconds",
        "message_timeout_seconds",
    ] {
        assert!(lim[field].is_number(), "limitation.{field} missing: {doc}");
    }
    assert_eq!(lim["max_messages_per_second"], 50);
    // 300 messages at 50 per second (burst 100) take at least 3 s to be read...
    let (mut flood, _) = tokio_tungstenite::connect_async(format!("ws://{}", relay.addr))
        .await
        .unwrap();
    let t = Instant::now();
    for i in 0..300 {
        flood
            .send(Message::text(format!(r#"["CLOSE","s{i}"]"#)))
            .await
            .unwrap();
    }
    flood
        .send(Message::text(r#"["REQ","last",{"limit":1}]"#))
        .await
        .unwrap();
    // ...while another client is served at once.
    served(&relay.addr, SERVED_WITHIN)
        .await
        .expect("another connection is not slowed");
    let eose = timeout(Duration::from_secs(20), async {
        while let Some(Ok(m)) = flood.next().await {
            if m.to_text().unwrap_or("").contains("EOSE") {
                return;
            }
        }
    })
    .await;
    assert!(eose.is_ok(), "the flood is read in the end");
    assert!(
        t.elapsed() >= Duration::from_millis(2500),
        "the relay reads a flood at its message rate, not faster: {:?}",
        t.elapsed()
    );
}
