//! The secured sync service the crash tests kill: `orly certs init` for one admin (the
//! starter policy), its bound token from `orly token mint`, the service over a store with a
//! signed audit log, and `orly audit verify` of that log.

use crate::common::*;
use std::path::{Path, PathBuf};

/// `orly certs init` for one admin, its bound token, and the secured service over it.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn init(dir: &Path, admin: &str) -> Self {
        let d = dir.to_str().unwrap();
        let (code, _, err) = orly(&["certs", "init", d, "--admin", admin]);
        assert_eq!(code, 0, "certs init: {err}");
        let pki = Self { dir: dir.into() };
        let (code, _, err) = orly(&[
            "token",
            "mint",
            "--admin",
            admin,
            "--key",
            &pki.path("token.key"),
            "--cert",
            &pki.path(&format!("{admin}.pem")),
            "--out",
            &pki.path(&format!("{admin}.token")),
        ]);
        assert_eq!(code, 0, "token mint: {err}");
        pki
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The client-mode flags for `admin` against `server`.
    pub fn client(&self, admin: &str, server: &str) -> Vec<String> {
        vec![
            "--server".into(),
            server.into(),
            "--ca".into(),
            self.path("ca.pem"),
            "--cert".into(),
            self.path(&format!("{admin}.pem")),
            "--key".into(),
            self.path(&format!("{admin}.key")),
            "--token-file".into(),
            self.path(&format!("{admin}.token")),
        ]
    }

    /// `orly-sync-negentropy` with mTLS, tokens, the starter policy and the audit log in
    /// `audit`, over the fjall store in `store`.
    pub fn service(&self, store: &Path, audit: &Path) -> Proc {
        let envs = [
            ("ORLY_TLS_CERT", self.path("server.pem")),
            ("ORLY_TLS_KEY", self.path("server.key")),
            ("ORLY_TLS_CLIENT_CA", self.path("ca.pem")),
            ("ORLY_POLICY", self.path("policy.toml")),
            ("ORLY_TOKEN_KEYS", self.path("token.pub")),
            ("ORLY_AUDIT_KEY", self.path("audit.key")),
            ("ORLY_AUDIT_DIR", audit.display().to_string()),
            ("ORLY_DB_TYPE", "fjall".to_string()),
        ];
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        spawn_service(
            "orly-sync-negentropy",
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                store.to_str().unwrap(),
            ],
            &envs,
        )
    }

    /// `orly audit verify AUDIT --pubkey audit.pub`: exit 0; returns its report.
    pub fn verify(&self, audit: &Path, when: &str) -> String {
        let (code, out, err) = orly(&[
            "audit",
            "verify",
            audit.to_str().unwrap(),
            "--pubkey",
            &self.path("audit.pub"),
        ]);
        assert_eq!(code, 0, "{when}: audit verify:\n{out}{err}");
        format!("{out}{err}")
    }
}
