//! NIP-11: the relay's information document, read to learn how large a message it accepts, so
//! the negentropy frame size fits the relay instead of a one-size default.

use super::{PeerOptions, PeerUrl, tls_config};
use crate::negentropy::FrameLimit;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Largest NIP-11 document read.
const MAX_DOC_BYTES: usize = 256 * 1024;

/// `limitation.max_message_length` from the relay's NIP-11 document, or None when the relay
/// does not say (or does not answer within `timeout`).
pub async fn max_message_length(
    url: &PeerUrl,
    opts: &PeerOptions,
    timeout: Duration,
) -> Option<u64> {
    tokio::time::timeout(timeout, fetch(url.as_str(), opts))
        .await
        .ok()
        .flatten()
}

async fn fetch(url: &str, opts: &PeerOptions) -> Option<u64> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?.to_string();
    let port = u.port_or_known_default()?;
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .ok()?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, u.host_str()?)
        .header(hyper::header::ACCEPT, "application/nostr+json")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let body = if u.scheme() == "wss" {
        let cfg = tls_config(opts.ca_file.as_ref()).ok()?;
        let name = rustls_pki_types::ServerName::try_from(host.clone()).ok()?;
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .ok()?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    let doc: serde_json::Value = serde_json::from_slice(&body).ok()?;
    doc.get("limitation")?.get("max_message_length")?.as_u64()
}

async fn send<I>(io: I, req: hyper::Request<Empty<Bytes>>) -> Option<Bytes>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Limited::new(resp.into_body(), MAX_DOC_BYTES)
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
}

/// The negentropy frame limit for a relay accepting messages of `max_message_length` bytes:
/// half (hex doubles the bytes) less room for the JSON envelope, at least the protocol's 4096,
/// and never more than we accept ourselves.
pub fn frame_limit_for(max_message_length: u64, our_max: u64) -> FrameLimit {
    let usable = max_message_length.min(our_max) / 2;
    FrameLimit::at_least_min(usable.saturating_sub(1024))
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_limits() {
        assert_eq!(super::frame_limit_for(131_072, 32 << 20).get(), 64_512);
        assert_eq!(super::frame_limit_for(1000, 32 << 20).get(), 4096);
        assert_eq!(
            super::frame_limit_for(16 << 20, 4 << 20).get(),
            (2 << 20) - 1024
        );
    }
}
