//! Transport: accept → per-IP limit (see `ip_limit.rs` for how an over-limit connection is
//! answered) → TLS 1.3 handshake requiring a client certificate signed by
//! the configured CA (and not revoked by the CRL). The certificate, key, CA and CRL are reloaded
//! on SIGHUP and when the files change; live connections keep the config they started with.

use super::door::DoorLog;
use super::ip_limit::{ConnAdmission, IpLimiter};
use crate::tasks::{FileWatch, Fingerprints, Stop};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject,
};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// TLS handshakes taking longer than this are dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Files the TLS config is built from.
#[derive(Debug, Clone)]
pub(super) struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
    /// Client CA bundle (PEM).
    pub client_ca: PathBuf,
    /// Optional CRL (PEM or DER).
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.cert.clone(), self.key.clone(), self.client_ca.clone()];
        v.extend(self.crl.clone());
        v
    }

    /// Builds the server config: TLS 1.3 only, client certificate required, h2 ALPN.
    pub(super) fn load(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&self.cert)?)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate", self.cert.display()));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&read(&self.client_ca)?) {
            let c = c.map_err(|e| format!("{}: {e}", self.client_ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", self.client_ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CA certificate", self.client_ca.display()));
        }
        let mut crls = Vec::new();
        if let Some(p) = &self.crl {
            let bytes = read(p)?;
            if bytes.starts_with(b"-----") {
                for c in CertificateRevocationListDer::pem_slice_iter(&bytes) {
                    crls.push(c.map_err(|e| format!("{}: {e}", p.display()))?);
                }
            } else {
                crls.push(CertificateRevocationListDer::from(bytes));
            }
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .with_crls(crls)
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        let mut cfg =
            rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
                .map_err(|e| format!("server certificate/key: {e}"))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// The current TLS config, swapped on reload.
#[derive(Clone)]
pub(super) struct ReloadableTls {
    files: TlsFiles,
    /// The files' versions when first read: the watcher starts from them.
    loaded: Fingerprints,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl ReloadableTls {
    /// Loads the files once; start-up fails if they are unusable.
    pub(super) fn new(files: TlsFiles) -> Result<Self, String> {
        let loaded = Fingerprints::now(&files.paths());
        let cfg = files.load()?;
        Ok(Self {
            loaded,
            files,
            current: Arc::new(RwLock::new(cfg)),
        })
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Rebuilds from the files; on error keeps the old config and says why.
    pub(super) fn reload(&self) -> Result<(), String> {
        let cfg = self.files.load()?;
        match self.current.write() {
            Ok(mut g) => *g = cfg,
            Err(p) => *p.into_inner() = cfg,
        }
        tracing::info!("TLS certificates reloaded");
        Ok(())
    }

    /// Reloads under the rule of [`FileWatch`] (a file changed, polled every `poll`, or
    /// SIGHUP) until `stop` fires. The SIGHUP handler is installed before this returns.
    pub(super) fn watcher(
        &self,
        poll: Duration,
        stop: Stop,
    ) -> impl Future<Output = ()> + Send + 'static {
        let me = self.clone();
        let watch = FileWatch::new(
            "TLS certificates",
            self.files.paths(),
            self.loaded.clone(),
            poll,
        );
        watch.run(stop, move || {
            let r = me.reload();
            async move { r }
        })
    }
}

/// What the transport knows about a connection; tonic puts it in every request's extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Remote address.
    pub remote: SocketAddr,
    /// The verified client certificate (leaf, DER).
    pub client_cert: Option<Arc<Vec<u8>>>,
    /// Set while the per-IP token taken at accept is unspent: it pays for the first call
    /// (shared by every request of the connection, so only one call uses it).
    pub prepaid: Arc<AtomicBool>,
}

impl ConnInfo {
    /// Spends the token taken at accept, if it is still there.
    pub fn take_prepaid(&self) -> bool {
        self.prepaid.swap(false, Ordering::AcqRel)
    }
}

/// A TLS connection handed to tonic.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    info: ConnInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How long a connection whose handshake failed is kept half-closed (see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read (and dropped) from it meanwhile.
const LINGER_BYTES: usize = 64 * 1024;

/// Closes a connection whose handshake failed without resetting it. Under TLS 1.3 the client
/// has already sent its first request when our alert (why its certificate was refused) goes
/// out; closing with those bytes unread would answer with a TCP reset, which can destroy the
/// alert before the client reads it, and the client would report a broken connection instead
/// of a refused certificate. So: our FIN after the alert, then read and drop what the client
/// still sends until it closes, bounded in time and bytes.
async fn linger(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Accepts connections, applies the per-IP limit, runs handshakes concurrently and yields the
/// verified connections. Refused connections and failed handshakes are audited through `door`,
/// which never makes the accept loop wait for the disk.
pub(super) fn incoming(
    listener: TcpListener,
    tls: ReloadableTls,
    ip_limit: IpLimiter,
    door: DoorLog,
) -> impl futures_util::Stream<Item = Result<TlsConn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<TlsConn, std::io::Error>>(64);
    tokio::spawn(async move {
        loop {
            // Ends with the server: when it drops the stream, the listener is closed too.
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = tx.closed() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let prepaid = match ip_limit.admit_connection(remote.ip()) {
                ConnAdmission::Paid => true,
                // Its call will be refused with the retry delay, which a closed socket cannot say.
                ConnAdmission::Unpaid => false,
                ConnAdmission::Closed(refusal) => {
                    super::telemetry::count_refusal(&refusal);
                    door.refused(remote, refusal.reason);
                    drop(tcp);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let (tx, door) = (tx.clone(), door.clone());
            tokio::spawn(async move {
                let handshake = acceptor.accept(tcp).into_fallible();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => {
                        let cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| Arc::new(c.as_ref().to_vec()));
                        let info = ConnInfo {
                            remote,
                            client_cert: cert,
                            prepaid: Arc::new(AtomicBool::new(prepaid)),
                        };
                        let _ = tx
                            .send(Ok(TlsConn {
                                inner: stream,
                                info,
                            }))
                            .await;
                    }
                    Ok(Err((e, tcp))) => {
                        super::telemetry::count_auth_failure("tls");
                        door.refused(remote, format!("tls handshake failed: {e}"));
                        linger(tcp).await;
                    }
                    Err(_) => door.refused(remote, "tls handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
