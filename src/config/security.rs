//! The sync service's security settings: flags and their `ORLY_*` environment variables, merged
//! (a flag wins over its variable) and checked once at start-up. Refuses to be unsafe: a
//! non-loopback address needs TLS with client certificates, tokens, a policy and an audit
//! directory, unless `--insecure` is given.

use super::env::EnvSource;
use crate::gateway::SecurityConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Security flags; each falls back to its environment variable.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// Server certificate chain (PEM) [env: ORLY_TLS_CERT]
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM) [env: ORLY_TLS_KEY]
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) that signs admin client certificates [env: ORLY_TLS_CLIENT_CA]
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
    /// Certificate revocation list (PEM or DER) for client certificates [env: ORLY_TLS_CRL]
    #[arg(long)]
    pub tls_crl: Option<PathBuf>,
    /// Admin policy file (TOML) [env: ORLY_POLICY]
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Token verification keys: one PEM public key, or a JWKS file [env: ORLY_TOKEN_KEYS]
    #[arg(long)]
    pub token_keys: Option<PathBuf>,
    /// Audit log directory [env: ORLY_AUDIT_DIR]
    #[arg(long)]
    pub audit_dir: Option<PathBuf>,
    /// Ed25519 key (PKCS#8 PEM) signing audit checkpoints [env: ORLY_AUDIT_KEY]
    #[arg(long)]
    pub audit_key: Option<PathBuf>,
}

/// A path from `flag`, else from the variable `name`.
fn path(
    flag: &Option<PathBuf>,
    env: &dyn EnvSource,
    name: &str,
    errors: &mut Vec<String>,
) -> Option<PathBuf> {
    if flag.is_some() {
        return flag.clone();
    }
    match env.var(name) {
        Ok(v) => v.map(PathBuf::from),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

impl SecurityArgs {
    /// The flags with every unset one taken from its variable; unreadable variables are added
    /// to `errors`.
    pub fn merged(&self, env: &dyn EnvSource, errors: &mut Vec<String>) -> Self {
        Self {
            tls_cert: path(&self.tls_cert, env, "ORLY_TLS_CERT", errors),
            tls_key: path(&self.tls_key, env, "ORLY_TLS_KEY", errors),
            tls_client_ca: path(&self.tls_client_ca, env, "ORLY_TLS_CLIENT_CA", errors),
            tls_crl: path(&self.tls_crl, env, "ORLY_TLS_CRL", errors),
            policy: path(&self.policy, env, "ORLY_POLICY", errors),
            token_keys: path(&self.token_keys, env, "ORLY_TOKEN_KEYS", errors),
            audit_dir: path(&self.audit_dir, env, "ORLY_AUDIT_DIR", errors),
            audit_key: path(&self.audit_key, env, "ORLY_AUDIT_KEY", errors),
        }
    }

    fn any_set(&self) -> bool {
        self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_client_ca.is_some()
            || self.tls_crl.is_some()
            || self.policy.is_some()
            || self.token_keys.is_some()
            || self.audit_dir.is_some()
            || self.audit_key.is_some()
    }

    /// Checks merged settings for `listen`. `Ok(None)`: plaintext (loopback, or `insecure`).
    /// Every missing piece is listed in one error.
    pub fn validate(
        &self,
        listen: &SocketAddr,
        insecure: bool,
    ) -> Result<Option<SecurityConfig>, String> {
        if !self.any_set() {
            if listen.ip().is_loopback() {
                return Ok(None);
            }
            if insecure {
                tracing::warn!(
                    "INSECURE: serving plaintext gRPC without client authentication on {listen}: \
                     anyone who can reach it can run syncs on this store"
                );
                return Ok(None);
            }
            return Err(format!(
                "refusing to listen on non-loopback {listen} without TLS and client authentication: \
                 set ORLY_TLS_CERT, ORLY_TLS_KEY, ORLY_TLS_CLIENT_CA, ORLY_POLICY, ORLY_TOKEN_KEYS and \
                 ORLY_AUDIT_DIR (see SECURITY.md), or pass --insecure"
            ));
        }
        let mut missing = Vec::new();
        let mut need = |v: &Option<PathBuf>, name: &str| {
            if v.is_none() {
                missing.push(name.to_string());
            }
            v.clone().unwrap_or_default()
        };
        let cfg = SecurityConfig {
            tls_cert: need(&self.tls_cert, "ORLY_TLS_CERT"),
            tls_key: need(&self.tls_key, "ORLY_TLS_KEY"),
            tls_client_ca: need(&self.tls_client_ca, "ORLY_TLS_CLIENT_CA"),
            policy: need(&self.policy, "ORLY_POLICY"),
            token_keys: need(&self.token_keys, "ORLY_TOKEN_KEYS"),
            audit_dir: need(&self.audit_dir, "ORLY_AUDIT_DIR"),
            tls_crl: self.tls_crl.clone(),
            audit_key: self.audit_key.clone(),
        };
        if !missing.is_empty() {
            return Err(format!(
                "incomplete security settings: missing {}",
                missing.join(", ")
            ));
        }
        Ok(Some(cfg))
    }
}
