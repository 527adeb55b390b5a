//! Readiness and liveness probes, one attempt each, every step bounded by a timeout:
//! - orly-db and orly-sync-negentropy: the standard gRPC health service (`grpc.health.v1`),
//!   `Check` for the service's own name must answer SERVING. For orly-sync-negentropy behind
//!   mTLS the probe presents a client certificate; the gateway lets `/grpc.health.v1.Health/*`
//!   through without a token, identity mapping or audit record, but only after the TLS handshake.
//! - orly-relay has no gRPC health: it is ready when its NIP-11 endpoint answers
//!   `GET /` with `Accept: application/nostr+json` by 200 and that content type.
//!
//! Owns: the probes. Must not spawn or stop processes.

use super::config::HealthTls;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on connecting (TCP, and TLS where used).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one whole probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest NIP-11 answer read.
const MAX_NIP11_BYTES: u64 = 64 * 1024;

/// How a service's readiness is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// gRPC health `Check` for `service`, over mTLS when `tls` is set.
    Grpc {
        /// The health service name, e.g. `orlydb.v1.DatabaseService`.
        service: &'static str,
        /// Client credentials when the server requires mTLS.
        tls: Option<HealthTls>,
    },
    /// HTTP NIP-11 document (orly-relay).
    Nip11,
}

impl Probe {
    /// One readiness probe of the service listening on `listen` (an unspecified address is
    /// probed on loopback). `Ok` when ready; `Err` says what was seen instead.
    pub async fn check(&self, listen: SocketAddr) -> Result<(), String> {
        self.probe(listen, true).await
    }

    /// One liveness probe: `Ok` when the service answers at all. A gRPC service that says
    /// NOT_SERVING is alive: orly-sync-negentropy says so while orly-db is away, and killing it
    /// for that would only abort its syncs.
    pub async fn alive(&self, listen: SocketAddr) -> Result<(), String> {
        self.probe(listen, false).await
    }

    async fn probe(&self, listen: SocketAddr, need_serving: bool) -> Result<(), String> {
        let addr = dialable(listen);
        let attempt = async {
            match self {
                Self::Grpc { service, tls } => {
                    grpc_health(addr, service, tls.as_ref(), need_serving).await
                }
                Self::Nip11 => nip11(addr).await,
            }
        };
        tokio::time::timeout(PROBE_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")))
    }
}

/// The address to connect to for a listen address: 0.0.0.0 → 127.0.0.1, [::] → [::1]. Also what
/// the other services are given as `ORLY_GRPC_SERVER`.
pub(super) fn dialable(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        other => other,
    }
}

async fn grpc_health(
    addr: SocketAddr,
    service: &str,
    tls: Option<&HealthTls>,
    need_serving: bool,
) -> Result<(), String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(PROBE_TIMEOUT);
    if let Some(t) = tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        let name = t
            .server_name
            .clone()
            .unwrap_or_else(|| addr.ip().to_string());
        let cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&t.ca)?))
            .identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?))
            .domain_name(name);
        ep = ep.tls_config(cfg).map_err(|e| format!("TLS setup: {e}"))?;
    }
    let channel = ep
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", chain(&e)))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|s| format!("health check refused: {:?}: {}", s.code(), s.message()))?;
    match answer.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        _ if !need_serving => Ok(()),
        other => Err(format!("health of {service} is {}", other.as_str_name())),
    }
}

async fn nip11(addr: SocketAddr) -> Result<(), String> {
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let host = match addr {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    };
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nAccept: application/nostr+json\r\n\
         User-Agent: orly-launcher\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the NIP-11 request: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_NIP11_BYTES)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("cannot read the NIP-11 answer: {e}"))?;
    check_nip11_answer(&String::from_utf8_lossy(&answer))
}

/// Accepts an HTTP answer with status 200 and content type `application/nostr+json`.
fn check_nip11_answer(text: &str) -> Result<(), String> {
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("NIP-11 request answered {status:?}"));
    }
    let nostr_json = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("content-type")
                && v.trim()
                    .to_ascii_lowercase()
                    .starts_with("application/nostr+json")
        })
    });
    if !nostr_json {
        return Err("answer is not application/nostr+json: not an orly relay?".into());
    }
    Ok(())
}

/// An error with its sources, since tonic's transport errors say little at the top level.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let d = |s: &str| dialable(s.parse().unwrap()).to_string();
        assert_eq!(d("0.0.0.0:7777"), "127.0.0.1:7777");
        assert_eq!(d("[::]:7777"), "[::1]:7777");
        assert_eq!(d("10.0.0.2:7777"), "10.0.0.2:7777");
    }

    #[test]
    fn nip11_answers_are_checked() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/nostr+json\r\n\r\n{}";
        assert_eq!(check_nip11_answer(ok), Ok(()));
        let html = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>";
        assert!(
            check_nip11_answer(html)
                .unwrap_err()
                .contains("not an orly relay")
        );
        let missing = "HTTP/1.1 404 Not Found\r\n\r\n";
        assert!(check_nip11_answer(missing).unwrap_err().contains("404"));
        assert!(check_nip11_answer("").is_err());
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_is_not_ready() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((conn, _)) = l.accept().await {
                drop(conn);
            }
        });
        assert!(Probe::Nip11.check(addr).await.is_err());
        let grpc = Probe::Grpc {
            service: "orlydb.v1.DatabaseService",
            tls: None,
        };
        assert!(grpc.check(addr).await.is_err());
        assert!(
            grpc.alive(addr).await.is_err(),
            "hanging up is not an answer"
        );
    }

    /// A real gRPC health server that says NOT_SERVING (what orly-sync-negentropy says while
    /// orly-db is away): not ready, but alive, so the launcher leaves it running.
    #[tokio::test]
    async fn not_serving_is_not_ready_but_alive() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("orly.test", tonic_health::ServingStatus::NotServing)
            .await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        let grpc = Probe::Grpc {
            service: "orly.test",
            tls: None,
        };
        let not_ready = grpc.check(addr).await.unwrap_err();
        assert!(not_ready.contains("NOT_SERVING"), "{not_ready}");
        assert_eq!(grpc.alive(addr).await, Ok(()));
        reporter
            .set_service_status("orly.test", tonic_health::ServingStatus::Serving)
            .await;
        assert_eq!(grpc.check(addr).await, Ok(()));
    }
}
