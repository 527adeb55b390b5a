//! The client-mode connection to the sync service. With `--ca` the TLS is done here
//! (tokio-rustls: the service's CA, our certificate, `h2` ALPN) rather than inside tonic, so
//! that the alert with which the service refuses our certificate is kept. Under TLS 1.3 our
//! side of the handshake ends before the service has checked the certificate: its verdict
//! arrives as an alert on the first read, and hyper reports only "connection closed" to the
//! call — exactly what a service that dies says. [`TlsSeen`] tells the two apart.
//! [`ServiceConn`] is a connection ready for calls (the token read, refusals classified), for
//! `orly sync`, `orly peers` and `orly syncs` alike.

use super::{Phase, ServiceTarget, status_kind, status_message};
use crate::proto::orlysync::negentropy::v1::negentropy_service_client::NegentropyServiceClient;
use crate::sync::ErrorKind;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for the TCP connection and the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS alert (if any) the service sent on a connection of this channel.
#[derive(Clone, Default)]
pub(super) struct TlsSeen(Arc<Mutex<Option<rustls::AlertDescription>>>);

impl TlsSeen {
    fn note(&self, e: &std::io::Error) {
        if let Some(rustls::Error::AlertReceived(alert)) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            && let Ok(mut slot) = self.0.lock()
        {
            slot.get_or_insert(*alert);
        }
    }

    /// The alert, when the service sent one: it ends connections with alerts only in the
    /// handshake, when it refuses our certificate (unknown CA, revoked, expired, or signed by
    /// another CA of the same name: `DecryptError`). A service that dies or stops sends none.
    pub(super) fn refused_certificate(&self) -> Option<String> {
        use rustls::AlertDescription as A;
        let alert = (*self.0.lock().ok()?)?;
        (!matches!(alert, A::CloseNotify | A::UserCanceled)).then(|| format!("{alert:?}"))
    }
}

/// A failed connection or call: its error class (see `SyncError::kind`) and what to tell the
/// user.
#[derive(Debug)]
pub struct ServiceFailure {
    pub kind: ErrorKind,
    pub message: String,
}

/// Connects to the sync service (TLS when `--ca` is given).
pub(super) async fn connect(t: &ServiceTarget) -> Result<(Channel, TlsSeen), ServiceFailure> {
    let failed = |message: String| ServiceFailure {
        kind: ErrorKind::Incomplete,
        message,
    };
    let ep = Endpoint::from_shared(format!("http://{}", t.addr))
        .map_err(|e| {
            failed(format!(
                "Failed to connect to sync service at {}: bad address: {e}",
                t.addr
            ))
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let seen = TlsSeen::default();
    let res = match &t.ca {
        None => ep.connect().await,
        Some(ca) => {
            let tls = Tls::new(t, ca).map_err(|e| ServiceFailure {
                kind: ErrorKind::Invalid,
                message: e,
            })?;
            let seen = seen.clone();
            ep.connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let (tls, seen) = (tls.clone(), seen.clone());
                async move { tls.connect(seen).await }
            }))
            .await
        }
    };
    match res {
        Ok(channel) => Ok((channel, seen)),
        Err(e) => Err(match seen.refused_certificate() {
            Some(alert) => ServiceFailure {
                kind: ErrorKind::Auth,
                message: refused_message(&t.addr, &alert),
            },
            None => failed(format!(
                "Failed to connect to sync service at {}: {}",
                t.addr,
                error_chain(&e)
            )),
        }),
    }
}

/// A connection to the service ready for calls: the client, the TLS it watches and the admin
/// token every request carries.
pub struct ServiceConn {
    target: ServiceTarget,
    client: NegentropyServiceClient<Channel>,
    tls: TlsSeen,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl ServiceConn {
    /// Connects (TLS when `--ca` is given), then reads `--token-file`.
    pub async fn open(t: &ServiceTarget) -> Result<Self, ServiceFailure> {
        let (channel, tls) = connect(t).await?;
        let token = t.token_file.as_deref().map(read_token).transpose()?;
        Ok(Self {
            target: t.clone(),
            client: NegentropyServiceClient::new(channel),
            tls,
            token,
        })
    }

    /// A client on the connection (a cheap handle: calls share the channel).
    pub fn client(&self) -> NegentropyServiceClient<Channel> {
        self.client.clone()
    }

    /// `msg` as a request with the token (`authorization: Bearer`), if there is one.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        req
    }

    /// A call the service did not answer: our certificate refused in the TLS handshake (the
    /// alert says so), else the status's class and what to tell the user.
    pub fn refusal(&self, s: &tonic::Status) -> ServiceFailure {
        match self.tls.refused_certificate() {
            Some(alert) => ServiceFailure {
                kind: ErrorKind::Auth,
                message: refused_message(&self.target.addr, &alert),
            },
            None => ServiceFailure {
                kind: status_kind(s),
                message: status_message(&self.target, s, Phase::BeforeAnswer),
            },
        }
    }
}

/// The token in `file` as an `authorization` value.
fn read_token(
    file: &std::path::Path,
) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, ServiceFailure> {
    let invalid = |message| ServiceFailure {
        kind: ErrorKind::Invalid,
        message,
    };
    let tok = std::fs::read_to_string(file)
        .map_err(|e| invalid(format!("cannot read token file {}: {e}", file.display())))?;
    format!("Bearer {}", tok.trim())
        .parse()
        .map_err(|_| invalid(format!("token in {} is not valid text", file.display())))
}

/// What to say when the service refused our certificate.
pub(super) fn refused_message(addr: &str, alert: &str) -> String {
    format!(
        "sync service at {addr} refused our client certificate in the TLS handshake (alert \
         {alert}): check --cert/--key and that the certificate is signed by the service's client CA"
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    addr: String,
}

impl Tls {
    fn new(t: &ServiceTarget, ca: &PathBuf) -> Result<Self, String> {
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&read(ca)?) {
            let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CA certificate", ca.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots);
        let mut config = match (&t.cert, &t.key) {
            (Some(c), Some(k)) => {
                let certs = CertificateDer::pem_slice_iter(&read(c)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{}: {e}", c.display()))?;
                let key = PrivateKeyDer::from_pem_slice(&read(k)?)
                    .map_err(|e| format!("{}: {e}", k.display()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("{}: {e}", c.display()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("--cert and --key go together".into()),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let host = t
            .addr
            .rsplit_once(':')
            .map_or(t.addr.as_str(), |(h, _)| h)
            .trim_matches(['[', ']']);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("--server {}: {e}", t.addr))?;
        Ok(Self {
            config: Arc::new(config),
            name,
            addr: t.addr.clone(),
        })
    }

    async fn connect(
        &self,
        seen: TlsSeen,
    ) -> Result<hyper_util::rt::TokioIo<Watched>, std::io::Error> {
        let tcp = TcpStream::connect(&self.addr).await?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.name.clone(), tcp)
            .await
            .inspect_err(|e| seen.note(e))?;
        Ok(hyper_util::rt::TokioIo::new(Watched { inner: tls, seen }))
    }
}

/// A TLS stream that notes the alert behind any failed read or write.
struct Watched {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    seen: TlsSeen,
}

impl Watched {
    fn watch<T>(&self, p: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(e)) = &p {
            self.seen.note(e);
        }
        p
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.watch(p)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(p)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(p)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(p)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(p)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
