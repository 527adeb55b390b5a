//! The development PKI behind `orly certs init`: a CA, a server certificate, one client
//! certificate per admin (SPIFFE ID `spiffe://orly.local/admin/NAME`), and the Ed25519 token
//! and audit key pairs, written as PEM files with private keys at mode 0600. Also the
//! certificate builders the test PKI (`auth/testpki.rs`, `test-support` feature only) reuses.
//!
//! For development and tests only: keys are unencrypted on disk and there is no renewal. This
//! file must not write `policy.toml` (the caller does) nor configure TLS.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::keys::KeyError;
use super::signing_key::generate_ed25519_pem_pair;

/// Trust domain of the SPIFFE IDs given to development admin certificates.
pub(super) const DEV_TRUST_DOMAIN: &str = "orly.local";
/// Longest accepted validity, in days.
pub const MAX_VALIDITY_DAYS: u32 = 3650;
/// File stems `init_dev_pki` uses itself, so admins cannot be named after them.
const RESERVED_NAMES: [&str; 4] = ["ca", "server", "token", "audit"];

/// Why certificates or key files could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or failed to sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Token or audit key generation failed.
    #[error("key generation failed: {0}")]
    Key(#[from] KeyError),
    /// A file or directory could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A target file exists and `force` was not given.
    #[error("refusing to overwrite {0} (use --force)")]
    AlreadyExists(String),
    /// Admin names are 1-64 of `[A-Za-z0-9._-]`, not `.`/`..`, not reserved, unique.
    #[error("invalid admin name {0:?}")]
    InvalidAdminName(String),
    /// Extra hosts are IP addresses or DNS names.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// Validity must be 1..=[`MAX_VALIDITY_DAYS`] days.
    #[error("validity must be 1..={MAX_VALIDITY_DAYS} days")]
    InvalidValidity,
    /// A certificate could not be parsed back.
    #[error("certificate does not parse")]
    Parse,
}

/// Paths of one admin's client certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCertPaths {
    /// The admin name given to [`init_dev_pki`].
    pub name: String,
    /// The identity the certificate yields (`spiffe://orly.local/admin/NAME`).
    pub spiffe_id: String,
    /// `NAME.pem`.
    pub cert: PathBuf,
    /// `NAME.key` (mode 0600).
    pub key: PathBuf,
}

/// Everything [`init_dev_pki`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// The directory holding all files.
    pub dir: PathBuf,
    /// `ca.pem`: trust anchor for servers (`ORLY_TLS_CLIENT_CA`) and clients (`ORLY_SYNC_CA`).
    pub ca_cert: PathBuf,
    /// `ca.key` (mode 0600).
    pub ca_key: PathBuf,
    /// `server.pem`, valid for localhost, 127.0.0.1, ::1 and the extra hosts.
    pub server_cert: PathBuf,
    /// `server.key` (mode 0600).
    pub server_key: PathBuf,
    /// One entry per admin.
    pub admins: Vec<AdminCertPaths>,
    /// `token.key`: Ed25519 PKCS#8 for `orly token mint` (mode 0600).
    pub token_key: PathBuf,
    /// `token.pub`: SPKI PEM for `ORLY_TOKEN_KEYS`.
    pub token_pub: PathBuf,
    /// The kid tokens minted with `token.key` carry.
    pub token_kid: String,
    /// `audit.key`: Ed25519 PKCS#8 for audit checkpoints (mode 0600).
    pub audit_key: PathBuf,
    /// `audit.pub`: SPKI PEM for `orly audit verify`.
    pub audit_pub: PathBuf,
}

/// Creates a development PKI in `dir` (created if missing, mode 0700 when created).
///
/// Refuses, before writing anything, when any file it would write already exists, unless
/// `force`. Certificates use ECDSA P-256; token and audit keys Ed25519. Every certificate is
/// valid from one hour ago for `validity_days`.
pub fn init_dev_pki(
    dir: &Path,
    admins: &[String],
    extra_hosts: &[String],
    validity_days: u32,
    force: bool,
) -> Result<DevPki, CertError> {
    if validity_days == 0 || validity_days > MAX_VALIDITY_DAYS {
        return Err(CertError::InvalidValidity);
    }
    for (i, name) in admins.iter().enumerate() {
        if !is_valid_admin_name(name) || admins[..i].contains(name) {
            return Err(CertError::InvalidAdminName(name.clone()));
        }
    }
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    for host in extra_hosts {
        if !is_valid_host(host) {
            return Err(CertError::InvalidHost(host.clone()));
        }
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    let path = |file: String| dir.join(file);
    let mut stems: Vec<String> = RESERVED_NAMES.map(String::from).to_vec();
    stems.extend(admins.iter().cloned());
    let mut targets = Vec::new();
    for stem in &stems {
        let ext = if matches!(stem.as_str(), "token" | "audit") {
            "pub"
        } else {
            "pem"
        };
        targets.push(path(format!("{stem}.key")));
        targets.push(path(format!("{stem}.{ext}")));
    }
    if !force && let Some(existing) = targets.iter().find(|p| p.exists()) {
        return Err(CertError::AlreadyExists(existing.display().to_string()));
    }
    ensure_dir(dir)?;

    let (not_before, not_after) = validity_window(validity_days);
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let ca = CertifiedIssuer::self_signed(ca_params("orly dev CA", not_before, not_after), ca_key)?;
    let (server_pem, server_key) = issue_leaf(
        &ca,
        &LeafSpec {
            common_name: Some("localhost"),
            hosts: &hosts,
            server: true,
            ..LeafSpec::default()
        },
        not_before,
        not_after,
    )?;
    let pki = DevPki {
        dir: dir.to_path_buf(),
        ca_cert: path("ca.pem".into()),
        ca_key: path("ca.key".into()),
        server_cert: path("server.pem".into()),
        server_key: path("server.key".into()),
        admins: Vec::new(),
        token_key: path("token.key".into()),
        token_pub: path("token.pub".into()),
        token_kid: String::new(),
        audit_key: path("audit.key".into()),
        audit_pub: path("audit.pub".into()),
    };
    write_file(&pki.ca_key, &ca.key().serialize_pem(), true)?;
    write_file(&pki.ca_cert, &ca.pem(), false)?;
    write_file(&pki.server_key, &server_key.serialize_pem(), true)?;
    write_file(&pki.server_cert, &server_pem, false)?;
    let mut pki = pki;
    for name in admins {
        let spiffe_id = dev_spiffe_id(name);
        let uris = [spiffe_id.clone()];
        let spec = LeafSpec {
            common_name: Some(name),
            uris: &uris,
            client: true,
            ..LeafSpec::default()
        };
        let (cert_pem, key) = issue_leaf(&ca, &spec, not_before, not_after)?;
        let paths = AdminCertPaths {
            name: name.clone(),
            spiffe_id,
            cert: path(format!("{name}.pem")),
            key: path(format!("{name}.key")),
        };
        write_file(&paths.key, &key.serialize_pem(), true)?;
        write_file(&paths.cert, &cert_pem, false)?;
        pki.admins.push(paths);
    }
    let token = generate_ed25519_pem_pair()?;
    write_file(&pki.token_key, &token.private_pem, true)?;
    write_file(&pki.token_pub, &token.public_pem, false)?;
    pki.token_kid = token.kid;
    let audit = generate_ed25519_pem_pair()?;
    write_file(&pki.audit_key, &audit.private_pem, true)?;
    write_file(&pki.audit_pub, &audit.public_pem, false)?;
    Ok(pki)
}

/// The SPIFFE ID a development admin certificate carries.
pub(super) fn dev_spiffe_id(name: &str) -> String {
    format!("spiffe://{DEV_TRUST_DOMAIN}/admin/{name}")
}

fn is_valid_admin_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && !RESERVED_NAMES.contains(&name)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_valid_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
        || ((1..=253).contains(&host.len())
            && host.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'*'))
            }))
}

/// Certificate validity starting an hour ago (tolerates clock skew between machines).
pub(crate) fn validity_window(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - Duration::hours(1),
        now + Duration::days(i64::from(days)),
    )
}

/// A random positive 16-byte serial whose DER encoding keeps all 16 bytes.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Parameters of a CA that may sign leaves (path length 0) and CRLs.
pub(crate) fn ca_params(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "orly");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = not_before;
    params.not_after = not_after;
    params
}

/// What a leaf certificate names and may be used for.
#[derive(Default)]
pub(crate) struct LeafSpec<'a> {
    pub common_name: Option<&'a str>,
    /// DNS names or IP addresses.
    pub hosts: &'a [String],
    pub uris: &'a [String],
    pub server: bool,
    pub client: bool,
}

/// Issues a P-256 leaf signed by `ca`; returns its PEM and key pair.
pub(crate) fn issue_leaf(
    ca: &CertifiedIssuer<'_, KeyPair>,
    spec: &LeafSpec<'_>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, KeyPair), CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = spec.common_name {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    for host in spec.hosts {
        params.subject_alt_names.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.as_str().try_into()?),
        });
    }
    for uri in spec.uris {
        params
            .subject_alt_names
            .push(SanType::URI(uri.as_str().try_into()?));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if spec.server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if spec.client {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key))
}

fn ensure_dir(dir: &Path) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: dir.display().to_string(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)
}

/// Writes via a temporary file and a rename, so a crash never leaves a half-written key; the
/// temporary file already has its final mode when the secret is written into it.
fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    use std::io::Write;
    let io = |source| CertError::Io {
        path: path.display().to_string(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if private { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;
