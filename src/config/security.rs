//! The sync service's security settings: flags and their `ORLY_*` environment variables, merged
//! (a flag wins over its variable) and checked once at start-up. Refuses to be unsafe: a
//! non-loopback address needs TLS with client certificates, tokens, a policy and an audit
//! directory, unless `--insecure` is given.

use super::env::EnvSource;
use crate::gateway::{AnchorConfig, AnchorRelayUrl, DEFAULT_ANCHOR_INTERVAL_SECS, SecurityConfig};
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
    /// File holding the Nostr secret key (64 hex) that signs public audit anchors
    /// [env: ORLY_AUDIT_ANCHOR_KEY]
    #[arg(long)]
    pub audit_anchor_key: Option<PathBuf>,
    /// Relays (comma-separated ws:// or wss:// URLs) that receive the audit anchors
    /// [env: ORLY_AUDIT_ANCHOR_RELAYS]
    #[arg(long, value_delimiter = ',')]
    pub audit_anchor_relays: Vec<AnchorRelayUrl>,
    /// Longest time in seconds between two anchors while records are written (a checkpoint is
    /// forced when none was written for that long)
    #[arg(long, default_value_t = DEFAULT_ANCHOR_INTERVAL_SECS)]
    pub audit_anchor_interval: u64,
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
            audit_anchor_key: path(&self.audit_anchor_key, env, "ORLY_AUDIT_ANCHOR_KEY", errors),
            audit_anchor_relays: if self.audit_anchor_relays.is_empty() {
                match env.var("ORLY_AUDIT_ANCHOR_RELAYS") {
                    Ok(v) => v
                        .unwrap_or_default()
                        .split(',')
                        .map(|r| AnchorRelayUrl::from(r.to_string()))
                        .collect(),
                    Err(e) => {
                        errors.push(e);
                        Vec::new()
                    }
                }
            } else {
                self.audit_anchor_relays.clone()
            },
            audit_anchor_interval: self.audit_anchor_interval,
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
            || self.audit_anchor_key.is_some()
            || self.audit_anchor_relays.iter().any(|r| !r.0.is_empty())
    }

    /// The anchor settings: both the key and the relays, or neither; every problem listed.
    fn anchor(&self, problems: &mut Vec<String>) -> Option<AnchorConfig> {
        let relays: Vec<AnchorRelayUrl> = self
            .audit_anchor_relays
            .iter()
            .filter(|r| !r.0.is_empty())
            .cloned()
            .collect();
        match (&self.audit_anchor_key, relays.is_empty()) {
            (None, true) => return None,
            (None, false) => problems
                .push("ORLY_AUDIT_ANCHOR_RELAYS is set without ORLY_AUDIT_ANCHOR_KEY".into()),
            (Some(_), true) => problems
                .push("ORLY_AUDIT_ANCHOR_KEY is set without ORLY_AUDIT_ANCHOR_RELAYS".into()),
            (Some(_), false) => {}
        }
        if self.audit_key.is_none() {
            problems.push(
                "audit anchors need ORLY_AUDIT_KEY (the audit public key is the log's identity)"
                    .into(),
            );
        }
        for r in &relays {
            if let Err(e) = crate::peer::PeerUrl::parse(&r.0) {
                problems.push(format!(
                    "ORLY_AUDIT_ANCHOR_RELAYS: {}",
                    crate::policy::redact_urls_in(&e.to_string())
                ));
            }
        }
        if self.audit_anchor_interval == 0 {
            problems.push("--audit-anchor-interval must be at least 1 second".into());
        }
        Some(AnchorConfig {
            key: self.audit_anchor_key.clone().unwrap_or_default(),
            relays,
            interval: std::time::Duration::from_secs(self.audit_anchor_interval),
        })
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
            anchor: None,
        };
        let mut problems = Vec::new();
        let anchor = self.anchor(&mut problems);
        if !missing.is_empty() {
            problems.insert(
                0,
                format!(
                    "incomplete security settings: missing {}",
                    missing.join(", ")
                ),
            );
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let cfg = SecurityConfig { anchor, ..cfg };
        Ok(Some(cfg))
    }
}

#[cfg(test)]
mod anchor_tests {
    use super::*;

    fn full() -> SecurityArgs {
        let p = |s: &str| Some(PathBuf::from(s));
        SecurityArgs {
            tls_cert: p("c"),
            tls_key: p("k"),
            tls_client_ca: p("ca"),
            policy: p("p"),
            token_keys: p("t"),
            audit_dir: p("a"),
            audit_key: p("ak"),
            audit_anchor_interval: DEFAULT_ANCHOR_INTERVAL_SECS,
            ..SecurityArgs::default()
        }
    }

    #[test]
    fn anchor_settings_need_key_relays_and_the_audit_key_and_every_problem_is_listed() {
        let listen: SocketAddr = "0.0.0.0:1".parse().expect("addr");
        let cfg = full()
            .validate(&listen, false)
            .expect("ok")
            .expect("secured");
        assert!(cfg.anchor.is_none());

        let mut a = full();
        a.audit_anchor_key = Some(PathBuf::from("anchor.key"));
        a.audit_anchor_relays = vec![
            String::from("ws://127.0.0.1:1").into(),
            String::from(" wss://u:secret@r.example/?k=v ").into(),
        ];
        let cfg = a.validate(&listen, false).expect("ok").expect("secured");
        let anchor = cfg.anchor.expect("anchor");
        let relays: Vec<&str> = anchor.relays.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            relays,
            vec!["ws://127.0.0.1:1", "wss://u:secret@r.example/?k=v"]
        );
        let shown = format!("{a:?} {anchor:?}");
        assert!(
            !shown.contains("secret") && !shown.contains("k=v"),
            "{shown}"
        );

        let mut bad = full();
        bad.audit_key = None;
        bad.audit_anchor_relays = vec![String::from("http://x").into()];
        bad.audit_anchor_interval = 0;
        let err = bad.validate(&listen, false).expect_err("refused");
        for needle in [
            "ORLY_AUDIT_ANCHOR_RELAYS is set without ORLY_AUDIT_ANCHOR_KEY",
            "need ORLY_AUDIT_KEY",
            "scheme must be ws or wss",
            "--audit-anchor-interval",
        ] {
            assert!(err.contains(needle), "{needle:?} not in {err}");
        }

        let mut only_key = full();
        only_key.audit_anchor_key = Some(PathBuf::from("anchor.key"));
        let err = only_key.validate(&listen, false).expect_err("refused");
        assert!(err.contains("without ORLY_AUDIT_ANCHOR_RELAYS"), "{err}");
    }
}
