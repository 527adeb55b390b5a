//! The shared secret between `orly-db` and its clients (`ORLY_DB_TOKEN`): orly-db has no per-user
//! identities, only "may use the store or not", so one secret that the launcher (or the operator)
//! hands to the services is enough to keep other local users out. Sent as
//! `authorization: Bearer <token>` on every `DatabaseService` call; health and reflection stay
//! open (the launcher probes them). Both ends of the wire format live here, beside the client
//! ([`super::RemoteStore`]); the service installs [`RequireToken`]; `config` reads the variable.

use std::fmt;
use std::sync::Arc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The variable holding the secret, read by orly-db and by every service using it.
pub const TOKEN_ENV: &str = "ORLY_DB_TOKEN";
/// Shortest secret accepted (a guessable one would be a lock without a key).
pub const MIN_TOKEN_LEN: usize = 16;

/// The secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DbToken(pub String);

impl fmt::Debug for DbToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DbToken(***)")
    }
}

/// A usable secret: long enough and fit for an HTTP header.
pub fn check_token(t: &str) -> Result<(), String> {
    if t.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "{TOKEN_ENV} must be at least {MIN_TOKEN_LEN} characters"
        ));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{TOKEN_ENV} must be printable ASCII without spaces"
        ));
    }
    Ok(())
}

/// Server side: refuses `DatabaseService` calls without the secret (UNAUTHENTICATED).
#[derive(Clone)]
pub struct RequireToken(Option<Arc<str>>);

impl RequireToken {
    /// Checks for `token`; `None` lets every call through (loopback-only deployments).
    pub fn new(token: Option<DbToken>) -> Self {
        Self(token.map(|t| Arc::from(t.0)))
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = &self.0 else {
            return Ok(req);
        };
        let got = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if same(got.as_bytes(), want.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(format!(
                "orly-db needs the {TOKEN_ENV} secret"
            )))
        }
    }
}

/// Client side: adds the secret to every call.
#[derive(Clone)]
pub struct SendToken(Option<MetadataValue<Ascii>>);

impl SendToken {
    /// Sends `token` (if any).
    pub fn new(token: Option<&DbToken>) -> Result<Self, String> {
        token
            .map(|t| {
                format!("Bearer {}", t.0)
                    .parse()
                    .map_err(|_| format!("{TOKEN_ENV} cannot be sent as a header"))
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for SendToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Equality in time independent of where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(check: &mut RequireToken, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        check.call(req).map(|_| ()).map_err(|s| s.code())
    }

    #[test]
    fn only_the_secret_passes() {
        let secret = "0123456789abcdef-secret";
        let mut check = RequireToken::new(Some(DbToken(secret.into())));
        assert_eq!(call(&mut check, Some(&format!("Bearer {secret}"))), Ok(()));
        for bad in [
            None,
            Some("Bearer"),
            Some("Bearer 0123456789abcdef-secreT"),
            Some("Bearer 0123456789abcdef-secret2"),
            Some("0123456789abcdef-secret"),
            Some("Basic 0123456789abcdef-secret"),
        ] {
            assert_eq!(
                call(&mut check, bad),
                Err(tonic::Code::Unauthenticated),
                "{bad:?}"
            );
        }
        let mut open = RequireToken::new(None);
        assert_eq!(call(&mut open, None), Ok(()));
        let mut send = SendToken::new(Some(&DbToken(secret.into()))).unwrap();
        let sent = send.call(Request::new(())).unwrap();
        let mut req = Request::new(());
        *req.metadata_mut() = sent.metadata().clone();
        assert!(check.call(req).is_ok(), "what the client sends passes");
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(check_token("short").is_err());
        assert!(check_token("sixteen chars ok").is_err(), "spaces");
        assert!(check_token("0123456789abcdef").is_ok());
    }
}
