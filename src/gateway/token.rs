//! Per-admin tokens: `authorization: Bearer <JWT>`, verified against the key set, bound to the
//! connection's client certificate, issued to the admin the certificate names, not revoked, and
//! living no longer than the policy allows.

use super::check::{Check, is_health};
use super::refusal::Refusal;
use super::tls::ConnInfo;
use crate::auth::{KeySet, TOKEN_AUDIENCE, TOKEN_ISSUER, TokenVerifier};
use crate::policy::PolicyHandle;
use crate::service::CallInfo;
use crate::tasks::{FileWatch, Fingerprints, Stop};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::Code;

/// Verifies tokens; the key set reloads when its file changes.
#[derive(Clone)]
pub struct TokenCheck {
    verifier: Arc<RwLock<Arc<TokenVerifier>>>,
    keys: PathBuf,
    /// The key file's version when first read: the watcher starts from it.
    loaded: Fingerprints,
    policy: PolicyHandle,
}

fn load_verifier(p: &Path) -> Result<Arc<TokenVerifier>, String> {
    let ks = KeySet::from_file(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(Arc::new(TokenVerifier::new(
        ks,
        TOKEN_ISSUER,
        TOKEN_AUDIENCE,
    )))
}

impl TokenCheck {
    /// Loads the key set (one PEM public key or a JWKS file).
    pub fn new(keys: PathBuf, policy: PolicyHandle) -> Result<Self, String> {
        let loaded = Fingerprints::now(std::slice::from_ref(&keys));
        Ok(Self {
            verifier: Arc::new(RwLock::new(load_verifier(&keys)?)),
            loaded,
            keys,
            policy,
        })
    }

    /// Reloads the key set under the rule of [`FileWatch`] (its file changed, polled every
    /// `poll`, or SIGHUP) until `stop` fires, keeping the previous keys when the new file is
    /// unusable. The SIGHUP handler is installed before this returns.
    pub fn watcher(&self, poll: Duration, stop: Stop) -> impl Future<Output = ()> + Send + 'static {
        let cell = self.verifier.clone();
        let keys = self.keys.clone();
        let watch = FileWatch::new("token keys", vec![keys.clone()], self.loaded.clone(), poll);
        watch.run(stop, move || {
            let loaded = load_verifier(&keys);
            let cell = cell.clone();
            async move {
                let v = loaded?;
                match cell.write() {
                    Ok(mut g) => *g = v,
                    Err(p) => *p.into_inner() = v,
                }
                tracing::info!("token keys reloaded");
                Ok(())
            }
        })
    }
}

impl Check for TokenCheck {
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(async move {
            if is_health(parts.uri.path()) {
                return Ok(());
            }
            let deny = |why: String| {
                super::telemetry::count_auth_failure("token");
                Refusal::new(Code::Unauthenticated, why)
            };
            let token = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| deny("token required: send authorization: Bearer <token>".into()))?;
            let cert = parts
                .extensions
                .get::<ConnInfo>()
                .and_then(|c| c.client_cert.clone());
            let verifier = match self.verifier.read() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            };
            let v = verifier
                .verify(
                    token,
                    cert.as_deref().map(Vec::as_slice),
                    std::time::SystemTime::now(),
                )
                .map_err(|e| deny(format!("token refused: {e}")))?;
            let call = parts.extensions.get_mut::<CallInfo>();
            let admin = call
                .as_ref()
                .and_then(|c| c.admin.clone())
                .unwrap_or_default();
            if let Some(call) = call {
                call.token_jti = Some(v.jti.clone());
            }
            // `sub` is the admin's policy name or one of its certificate identities.
            let policy = self.policy.current();
            let by_name = policy.admin_by_name(&v.admin).into_result().ok();
            let sub_admin =
                by_name.or_else(|| policy.admin_for_identity(&v.admin).into_result().ok());
            if sub_admin.map(|a| a.name()) != Some(admin.as_str()) {
                return Err(deny(format!(
                    "token refused: issued to {:?}, not to this certificate's admin",
                    v.admin
                )));
            }
            policy
                .check_token_id(&v.jti)
                .map_err(|d| deny(format!("token refused: {d}")))?;
            policy
                .check_token_lifetime(v.lifetime_secs)
                .map_err(|d| deny(format!("token refused: {d}")))?;
            Ok(())
        })
    }
}
