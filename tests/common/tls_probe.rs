//! One raw TLS 1.3 connection attempt against the secured service, as a client with or without
//! a certificate sees it: refused (with the alert), or accepted (the server speaks HTTP/2), and
//! the certificate the server presented. Part of the gateway harness (`gateway.rs`).

use orly::auth::IssuedCert;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What one raw TLS connection attempt saw.
pub struct TlsOutcome {
    /// "accepted: ..." when the server went on to speak HTTP/2, else "refused: ..." / "timeout".
    pub summary: String,
    /// The server's leaf certificate, when the handshake got that far.
    pub server_cert: Option<Vec<u8>>,
}

/// Exactly one TCP connection and TLS 1.3 handshake, optionally with a client certificate;
/// then the HTTP/2 preface, and one read for the server's verdict.
pub async fn tls_attempt(addr: &str, ca_pem: &str, client: Option<&IssuedCert>) -> TlsOutcome {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA pem")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(c.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key_pkcs8_der.clone())),
            )
            .expect("client auth cert"),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let limit = Duration::from_secs(10);
    let tcp = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return TlsOutcome {
                summary: format!("refused: tcp connect: {e}"),
                server_cert: None,
            };
        }
        Err(_) => {
            return TlsOutcome {
                summary: "timeout: tcp connect".into(),
                server_cert: None,
            };
        }
    };
    let name = ServerName::try_from("localhost").unwrap();
    let mut s = match tokio::time::timeout(limit, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return TlsOutcome {
                summary: format!("refused: handshake: {e}"),
                server_cert: None,
            };
        }
        Err(_) => {
            return TlsOutcome {
                summary: "timeout: handshake".into(),
                server_cert: None,
            };
        }
    };
    let server_cert = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let _ = s.flush().await;
    let mut buf = [0u8; 512];
    let summary = match tokio::time::timeout(limit, s.read(&mut buf)).await {
        Ok(Ok(0)) => "refused: closed without a word".to_string(),
        Ok(Ok(n)) => format!("accepted: server sent {n} bytes of HTTP/2"),
        Ok(Err(e)) => format!("refused: {e}"),
        Err(_) => "timeout: no verdict".to_string(),
    };
    TlsOutcome {
        summary,
        server_cert,
    }
}
