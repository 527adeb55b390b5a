//! `orly token`: mint an admin token bound to a certificate, or show a token's claims without
//! verifying it.

use super::output;
use crate::config::TokenCmd;
use crate::errln;
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;

fn parse_ttl(s: &str) -> anyhow::Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("--ttl {s:?}: expected e.g. 30m, 24h, 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("--ttl {s:?}: unit must be s, m, h or d"),
    };
    anyhow::ensure!(
        secs > 0 && secs <= 366 * 86_400,
        "--ttl must be between 1s and 366d"
    );
    Ok(std::time::Duration::from_secs(secs))
}

/// `orly token mint` and `orly token inspect`.
pub(super) fn token(cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::Mint {
            admin,
            ttl,
            key,
            cert,
            out,
        } => {
            let signing = crate::auth::TokenSigningKey::from_file(&key)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            let der = match &cert {
                Some(p) => {
                    use rustls_pki_types::{CertificateDer, pem::PemObject};
                    Some(
                        CertificateDer::from_pem_file(p)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                            .to_vec(),
                    )
                }
                None => {
                    errln!(
                        "warning: no --cert: the token is not bound to a certificate and the sync service will refuse it"
                    );
                    None
                }
            };
            let req = crate::auth::MintRequest {
                issuer: crate::auth::TOKEN_ISSUER,
                audience: crate::auth::TOKEN_AUDIENCE,
                admin: &admin,
                ttl: parse_ttl(&ttl)?,
                cert_der: der.as_deref(),
                now: std::time::SystemTime::now(),
            };
            let tok = crate::auth::mint(&signing, &req)?;
            match out {
                Some(p) => {
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&p)?;
                    writeln!(f, "{tok}")?;
                    errln!("wrote token for {admin} to {}", p.display());
                }
                None => output::print(|out| writeln!(out, "{tok}"))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCmd::Inspect { file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let v = crate::auth::inspect(text.trim())?;
            let text = serde_json::to_string_pretty(&v)?;
            output::print(|out| writeln!(out, "{text}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
