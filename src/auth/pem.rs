//! Minimal PEM (RFC 7468) reading and writing for the key and certificate files this module
//! owns. Kept local so the accepted labels and the size limits are ours, not a parser's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// One decoded PEM block.
pub(crate) struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

/// Why a PEM text was refused (the reason, never the content).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PemError {
    /// The text holds no PEM block.
    #[error("no PEM block found")]
    Empty,
    /// A BEGIN line has no matching END line.
    #[error("unterminated PEM block")]
    Unterminated,
    /// BEGIN and END labels differ.
    #[error("PEM begin/end labels differ")]
    LabelMismatch,
    /// The body is not base64.
    #[error("invalid base64 in PEM block")]
    Base64,
    /// Something other than blank lines sits outside the blocks.
    #[error("text outside PEM blocks")]
    StrayText,
}

/// Parses every PEM block in `text`; anything but blank lines between blocks is refused so a
/// truncated or concatenated-by-mistake file fails loudly.
pub(crate) fn parse_all(text: &str) -> Result<Vec<PemBlock>, PemError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let label = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
            .ok_or(PemError::StrayText)?;
        let mut body = String::new();
        let mut closed = false;
        for inner in lines.by_ref() {
            if let Some(end) = inner.strip_prefix("-----END ") {
                if end.strip_suffix("-----") != Some(label) {
                    return Err(PemError::LabelMismatch);
                }
                closed = true;
                break;
            }
            body.push_str(inner);
        }
        if !closed {
            return Err(PemError::Unterminated);
        }
        let der = STANDARD
            .decode(body.as_bytes())
            .map_err(|_| PemError::Base64)?;
        blocks.push(PemBlock {
            label: label.to_owned(),
            der,
        });
    }
    if blocks.is_empty() {
        return Err(PemError::Empty);
    }
    Ok(blocks)
}

/// Encodes `der` as one PEM block with 64-column lines and a trailing newline.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let pem = encode("PUBLIC KEY", &[1, 2, 3, 250]);
        let blocks = parse_all(&format!("{pem}\n{pem}")).expect("two blocks");
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "PUBLIC KEY");
        assert_eq!(blocks[1].der, vec![1, 2, 3, 250]);
        assert_eq!(parse_all("").err(), Some(PemError::Empty));
        assert_eq!(parse_all("junk").err(), Some(PemError::StrayText));
        let cut = pem.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(parse_all(&cut).err(), Some(PemError::Unterminated));
        let bad = pem.replace("END PUBLIC", "END PRIVATE");
        assert_eq!(parse_all(&bad).err(), Some(PemError::LabelMismatch));
    }
}
