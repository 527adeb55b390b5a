//! Peer URLs: one canonical form for what a client asks to sync with, and the glob patterns an
//! operator writes to say which peers an admin may reach.
//!
//! Owns normalization and matching only. Must not touch the network: resolving, connecting and
//! TLS belong to the sync engine, which should connect to [`PeerUrl::as_str`] — the exact string
//! that was authorized — so that what was checked is what is used.

pub(crate) use crate::peer::{redact_quoting, redact_url, redact_urls_in};
use std::fmt;

/// Longest peer URL accepted, in bytes; a relay URL is short, anything longer is abuse.
pub const MAX_PEER_URL_LEN: usize = 2048;

/// Why a peer URL was refused. Messages never echo the URL, which may carry credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerUrlError {
    /// Longer than [`MAX_PEER_URL_LEN`].
    #[error("longer than {MAX_PEER_URL_LEN} bytes")]
    TooLong,
    /// Whitespace, control or non-ASCII characters.
    #[error("contains whitespace, control or non-ASCII characters")]
    BadCharacter,
    /// No `scheme://` prefix.
    #[error("scheme is missing (expected ws:// or wss://)")]
    MissingScheme,
    /// A scheme other than `ws` or `wss`.
    #[error("scheme must be ws or wss")]
    Scheme,
    /// `user:password@` before the host.
    #[error("user information (user@) is not allowed")]
    UserInfo,
    /// Nothing between `://` and the path.
    #[error("host is missing")]
    MissingHost,
    /// Not a DNS name, IPv4 or bracketed IPv6 address.
    #[error("host is not a valid name or address")]
    BadHost,
    /// Port not in 1..=65535.
    #[error("port is not a number in 1..=65535")]
    BadPort,
    /// A `#fragment`, meaningless for a websocket and a smuggling vector.
    #[error("fragment (#) is not allowed")]
    Fragment,
    /// `.`/`..` segments (also percent-encoded) or backslashes, which servers may resolve
    /// differently from the pattern that allowed the path.
    #[error("path has '.' or '..' segments or a backslash")]
    BadPath,
}

/// A normalized `ws://` or `wss://` URL: lowercase scheme and host, no userinfo, no fragment,
/// no default port, and a path that is at least `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerUrl {
    url: String,
    scheme_len: usize,
    authority_end: usize,
}

impl PeerUrl {
    /// The canonical URL; connect to this.
    pub fn as_str(&self) -> &str {
        &self.url
    }
    /// `ws` or `wss`.
    pub fn scheme(&self) -> &str {
        &self.url[..self.scheme_len]
    }
    /// Host with optional non-default port, e.g. `relay.example.com` or `127.0.0.1:7777`.
    pub fn authority(&self) -> &str {
        &self.url[self.scheme_len + 3..self.authority_end]
    }
    /// Path and query, starting with `/`.
    pub fn path_and_query(&self) -> &str {
        &self.url[self.authority_end..]
    }
    /// The URL with any query replaced by `?<redacted>`, for audit records and error messages
    /// (the same [`redact_url`] that every other place showing a URL uses).
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Display for PeerUrl {
    /// Shows the redacted form, so formatting a `PeerUrl` into a log cannot leak a query secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Normalizes a client-supplied peer URL, refusing anything but plain `ws`/`wss` URLs.
pub fn normalize_peer_url(raw: &str) -> Result<PeerUrl, PeerUrlError> {
    if raw.len() > MAX_PEER_URL_LEN {
        return Err(PeerUrlError::TooLong);
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PeerUrlError::BadCharacter);
    }
    let (scheme, rest) = raw.split_once("://").ok_or(PeerUrlError::MissingScheme)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "ws" => 80,
        "wss" => 443,
        "" => return Err(PeerUrlError::MissingScheme),
        _ => return Err(PeerUrlError::Scheme),
    };
    if rest.contains('#') {
        return Err(PeerUrlError::Fragment);
    }
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_len);
    if authority.contains('@') {
        return Err(PeerUrlError::UserInfo);
    }
    let (host, port) = split_host_port(authority)?;
    let host = normalize_host(host)?;
    let port = match port {
        None => None,
        Some(p) => parse_port(p)?.filter(|&p| p != default_port),
    };
    check_path(path)?;

    let mut url = String::with_capacity(raw.len() + 1);
    url.push_str(&scheme);
    url.push_str("://");
    url.push_str(&host);
    if let Some(port) = port {
        url.push(':');
        url.push_str(&port.to_string());
    }
    let authority_end = url.len();
    if !path.starts_with('/') {
        url.push('/');
    }
    url.push_str(path);
    Ok(PeerUrl {
        url,
        scheme_len: scheme.len(),
        authority_end,
    })
}

/// Splits `host[:port]` or `[v6][:port]`; an empty port after `:` is an error.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), PeerUrlError> {
    if authority.is_empty() {
        return Err(PeerUrlError::MissingHost);
    }
    if authority.starts_with('[') {
        let close = authority.find(']').ok_or(PeerUrlError::BadHost)?;
        let (host, after) = authority.split_at(close + 1);
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(PeerUrlError::BadHost),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

fn normalize_host(host: &str) -> Result<String, PeerUrlError> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ok = !inner.is_empty()
            && inner.contains(':')
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        return if ok {
            Ok(host.to_ascii_lowercase())
        } else {
            Err(PeerUrlError::BadHost)
        };
    }
    // One trailing dot names the same host; strip it so patterns need not list both forms.
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(PeerUrlError::MissingHost);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(PeerUrlError::BadHost);
    }
    Ok(host.to_ascii_lowercase())
}

fn parse_port(port: &str) -> Result<Option<u16>, PeerUrlError> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PeerUrlError::BadPort);
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(PeerUrlError::BadPort),
        Ok(p) => Ok(Some(p)),
    }
}

fn check_path(path_and_query: &str) -> Result<(), PeerUrlError> {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    let dot_segment = |seg: &str| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    };
    if path.contains('\\') || path.split('/').any(dot_segment) {
        return Err(PeerUrlError::BadPath);
    }
    Ok(())
}

/// A glob where `*` matches any run of characters (including none) and nothing else is special.
///
/// Matching splits the pattern at `*` and finds each literal piece left to right with
/// `str::find`, which is linear; leftmost-first is optimal for `*`-only globs, so there is no
/// backtracking and no pattern can make matching super-linear in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    /// Pieces between stars; a single piece means "no star, exact match".
    pieces: Vec<String>,
}

impl Glob {
    pub(crate) fn new(pattern: &str) -> Self {
        let mut pieces: Vec<String> = pattern.split('*').map(str::to_owned).collect();
        // Empty inner pieces come from `**`; they match trivially, so drop them.
        if pieces.len() > 2 {
            let last = pieces.pop().unwrap_or_default();
            let first = pieces.remove(0);
            pieces.retain(|p| !p.is_empty());
            pieces.insert(0, first);
            pieces.push(last);
        }
        Self { pieces }
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        let (first, rest_pieces) = match self.pieces.split_first() {
            Some(split) => split,
            None => return text.is_empty(),
        };
        let Some((last, middle)) = rest_pieces.split_last() else {
            return text == first;
        };
        let Some(rest) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some(mut region) = rest
            .len()
            .checked_sub(last.len())
            .and_then(|end| rest.get(..end))
        else {
            return false;
        };
        if !rest.ends_with(last.as_str()) {
            return false;
        }
        for piece in middle {
            match region.find(piece.as_str()) {
                Some(at) => region = &region[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

/// An operator-written peer pattern, compiled: `*` alone (any peer), or
/// `SCHEME://AUTHORITY[/PATH]` where each part is a [`Glob`] matched against the same part of
/// the normalized URL, so a `*` in the host can never swallow a `/` and reach into the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPattern {
    raw: String,
    parts: Option<(Glob, Glob, Glob)>,
}

impl PeerPattern {
    /// Compiles a pattern; the error says what is wrong, without the pattern itself.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("empty pattern".into());
        }
        if raw.len() > MAX_PEER_URL_LEN {
            return Err(format!("longer than {MAX_PEER_URL_LEN} bytes"));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("contains whitespace, control or non-ASCII characters".into());
        }
        if raw.bytes().all(|b| b == b'*') {
            return Ok(Self {
                raw: raw.to_owned(),
                parts: None,
            });
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err("must be \"*\" or start with ws://, wss:// or *://".into());
        };
        let scheme = scheme.to_ascii_lowercase();
        if !matches!(scheme.as_str(), "ws" | "wss" | "*") {
            return Err("scheme must be ws, wss or *".into());
        }
        if rest.contains('#') {
            return Err("fragment (#) is not allowed".into());
        }
        let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_len);
        if authority.is_empty() {
            return Err("host is missing".into());
        }
        if authority.contains('@') {
            return Err("user information (user@) is not allowed".into());
        }
        let host_char = |c: char| c.is_ascii_alphanumeric() || "-._:[]*".contains(c);
        if !authority.chars().all(host_char) {
            return Err("host contains characters no host name has".into());
        }
        let mut authority = authority.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "ws" => Some(":80"),
            "wss" => Some(":443"),
            _ => None,
        };
        if let Some(stripped) = default_port.and_then(|p| authority.strip_suffix(p)) {
            authority = stripped.to_owned();
        }
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Ok(Self {
            raw: raw.to_owned(),
            parts: Some((Glob::new(&scheme), Glob::new(&authority), Glob::new(&path))),
        })
    }

    /// The pattern as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the normalized URL is covered by this pattern.
    pub fn matches(&self, url: &PeerUrl) -> bool {
        match &self.parts {
            None => true,
            Some((scheme, authority, path)) => {
                scheme.matches(url.scheme())
                    && authority.matches(url.authority())
                    && path.matches(url.path_and_query())
            }
        }
    }
}

#[cfg(test)]
mod tests;
