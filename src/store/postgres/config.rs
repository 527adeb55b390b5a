//! Where the PostgreSQL store is and how to reach it: `ORLY_POSTGRES_URL` (a libpq-style URL),
//! `ORLY_POSTGRES_READ_URL` (a hot standby for reads), `ORLY_POSTGRES_PASSWORD_FILE`, and TLS
//! through rustls as `sslmode` asks. The password never reaches a log line: [`PgTarget`] prints
//! as user@host:port/db, and its `Debug` masks it.

use super::super::StoreError;
use std::sync::Arc;
use tokio_postgres::config::SslMode;

/// The primary's URL.
pub const URL_ENV: &str = "ORLY_POSTGRES_URL";
/// A hot standby's URL: queries, REQs and negentropy sessions read there.
pub const READ_URL_ENV: &str = "ORLY_POSTGRES_READ_URL";
/// A file holding the password (one line; the trailing newline is dropped).
pub const PASSWORD_FILE_ENV: &str = "ORLY_POSTGRES_PASSWORD_FILE";

/// How TLS is used, after libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// `sslmode=disable`: plain TCP (or a Unix socket).
    Disable,
    /// `sslmode=allow|prefer` (libpq's default): TLS when the server offers it, and then the
    /// certificate is verified.
    Prefer,
    /// `sslmode=require|verify-ca|verify-full`: TLS or no connection. The certificate and the
    /// host name are always verified: orly never sends a password over a channel it has not
    /// authenticated, so `require` and `verify-ca` are as strict as `verify-full`.
    Require,
}

/// One PostgreSQL server to connect to (primary or standby).
#[derive(Clone)]
pub struct PgTarget {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Tls,
    /// Extra CA (`sslrootcert=PATH`), else the web PKI roots.
    pub(super) root_cert: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgTarget({self}, password: ***)")
    }
}

impl PartialEq for PgTarget {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string() && self.tls == other.tls
    }
}

impl Eq for PgTarget {}

impl std::fmt::Display for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.config.get_user().unwrap_or("-");
        let db = self.config.get_dbname().unwrap_or("-");
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        write!(f, "postgres://{user}@{host}:{port}/{db}")
    }
}

impl PgTarget {
    /// Parses `url` (`postgres://user[:password]@host[:port]/db?sslmode=…&sslrootcert=…`),
    /// taking the password from `password_file` when given. Errors never repeat the URL (it may
    /// hold a password).
    pub fn parse(
        what: &str,
        url: &str,
        password_file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let mut parsed =
            url::Url::parse(url.trim()).map_err(|e| format!("{what}: not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "{what}: the scheme must be postgres:// or postgresql://"
            ));
        }
        let mut tls = Tls::Prefer;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sslmode" => {
                    tls = match v.as_ref() {
                        "disable" => Tls::Disable,
                        "allow" | "prefer" => Tls::Prefer,
                        "require" | "verify-ca" | "verify-full" => Tls::Require,
                        other => {
                            return Err(format!(
                                "{what}: sslmode must be disable, allow, prefer, require, \
                                 verify-ca or verify-full, not {other:?}"
                            ));
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(std::path::PathBuf::from(v.as_ref())),
                _ => rest.push((k.into_owned(), v.into_owned())),
            }
        }
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        let mut config: tokio_postgres::Config = parsed
            .as_str()
            .parse()
            .map_err(|e| format!("{what}: {e}"))?;
        if let Some(p) = password_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("{PASSWORD_FILE_ENV}: cannot read {}: {e}", p.display()))?;
            let pw = text.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                return Err(format!("{PASSWORD_FILE_ENV}: {} is empty", p.display()));
            }
            config.password(pw);
        }
        if config.get_user().is_none() {
            return Err(format!(
                "{what}: the URL names no user (postgres://USER@HOST/DB)"
            ));
        }
        config.ssl_mode(match tls {
            Tls::Disable => SslMode::Disable,
            Tls::Prefer => SslMode::Prefer,
            Tls::Require => SslMode::Require,
        });
        config.application_name("orly");
        config.connect_timeout(std::time::Duration::from_secs(10));
        Ok(Self {
            config,
            tls,
            root_cert,
        })
    }

    /// The rustls client config for this target (the process's one crypto provider).
    pub(super) fn rustls(&self) -> Result<Option<rustls::ClientConfig>, StoreError> {
        if self.tls == Tls::Disable {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        match &self.root_cert {
            Some(p) => {
                use rustls_pki_types::{CertificateDer, pem::PemObject};
                let certs = CertificateDer::pem_file_iter(p)
                    .map_err(|e| StoreError::Engine(format!("sslrootcert {}: {e}", p.display())))?;
                for c in certs {
                    let c = c.map_err(|e| {
                        StoreError::Engine(format!("sslrootcert {}: {e}", p.display()))
                    })?;
                    roots.add(c).map_err(|e| {
                        StoreError::Engine(format!("sslrootcert {}: {e}", p.display()))
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Engine(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(cfg))
    }
}

/// The PostgreSQL store's settings: the primary and, optionally, a standby for reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// Where writes go (and reads, without a standby).
    pub primary: PgTarget,
    /// Where queries, REQs and negentropy sessions read.
    pub read: Option<PgTarget>,
}

impl PgConfig {
    /// From `ORLY_POSTGRES_URL`, `ORLY_POSTGRES_READ_URL` and `ORLY_POSTGRES_PASSWORD_FILE`, read
    /// through `get` (a variable's value, `None` when unset or empty; the config module passes
    /// its injected environment).
    pub fn from_vars(get: impl Fn(&str) -> Result<Option<String>, String>) -> Result<Self, String> {
        let pw = get(PASSWORD_FILE_ENV)?.map(std::path::PathBuf::from);
        let url = get(URL_ENV)?.ok_or_else(|| {
            format!("ORLY_DB_TYPE=postgres needs {URL_ENV}=postgres://USER@HOST:PORT/DB")
        })?;
        let primary = PgTarget::parse(URL_ENV, &url, pw.as_deref())?;
        let read = match get(READ_URL_ENV)? {
            Some(u) => Some(PgTarget::parse(READ_URL_ENV, &u, pw.as_deref())?),
            None => None,
        };
        Ok(Self { primary, read })
    }
}

impl std::fmt::Display for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL at {}", self.primary)?;
        if let Some(r) = &self.read {
            write!(f, " (reads at {r})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_sslmode_and_password_never_printed() {
        let t = PgTarget::parse(
            URL_ENV,
            "postgres://orly:s3cret@127.0.0.1:5555/ev?sslmode=verify-full&sslrootcert=/x/ca.pem",
            None,
        )
        .unwrap();
        assert_eq!(t.tls, Tls::Require);
        assert_eq!(
            t.root_cert.as_deref(),
            Some(std::path::Path::new("/x/ca.pem"))
        );
        assert_eq!(t.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(t.to_string(), "postgres://orly@127.0.0.1:5555/ev");
        assert!(!format!("{t:?}").contains("s3cret"));
        let e = PgTarget::parse(URL_ENV, "postgres://orly:s3cret@h/db?sslmode=bogus", None)
            .unwrap_err();
        assert!(e.contains("sslmode") && !e.contains("s3cret"), "{e}");
        assert!(PgTarget::parse(URL_ENV, "mysql://a@b/c", None).is_err());
        let d = PgTarget::parse(URL_ENV, "postgres://orly@h/db?sslmode=disable", None).unwrap();
        assert_eq!(d.tls, Tls::Disable);
        assert!(d.rustls().unwrap().is_none());
    }

    #[test]
    fn password_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").unwrap();
        let t = PgTarget::parse(URL_ENV, "postgres://orly@h/db", Some(&p)).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"hunter2"[..]));
        std::fs::write(&p, "\n").unwrap();
        assert!(PgTarget::parse(URL_ENV, "postgres://orly@h/db", Some(&p)).is_err());
    }
}
