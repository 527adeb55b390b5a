//! Identity: the admin named by the verified client certificate (SPIFFE URI SAN, else DNS SAN,
//! else CN), mapped to an admin of the policy. Unknown identity, no access.

use super::check::{Check, is_health};
use super::refusal::Refusal;
use super::tls::ConnInfo;
use crate::auth::AdminIdentity;
use crate::policy::{IdentityLookup, PolicyHandle};
use crate::service::CallInfo;
use std::future::Future;
use std::pin::Pin;
use tonic::Code;

/// Maps certificates to admins.
#[derive(Clone)]
pub struct IdentityCheck {
    /// The current policy.
    pub policy: PolicyHandle,
}

impl Check for IdentityCheck {
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(async move {
            if is_health(parts.uri.path()) {
                return Ok(());
            }
            let Some(der) = parts
                .extensions
                .get::<ConnInfo>()
                .and_then(|c| c.client_cert.clone())
            else {
                return Err(Refusal::new(Code::Unauthenticated, "no client certificate"));
            };
            let ident = AdminIdentity::from_cert_der(&der).map_err(|e| {
                Refusal::new(
                    Code::Unauthenticated,
                    format!("unusable client certificate: {e}"),
                )
            })?;
            let fingerprint = ident.fingerprint_hex();
            if let Some(call) = parts.extensions.get_mut::<CallInfo>() {
                call.cert_fingerprint = Some(fingerprint);
            }
            let policy = self.policy.current();
            let admin = match policy.admin_for_identity(&ident.name) {
                IdentityLookup::Admin(a) => a.name().to_string(),
                IdentityLookup::Revoked(a) => {
                    return Err(Refusal::new(
                        Code::PermissionDenied,
                        format!("admin revoked: {}", a.name()),
                    ));
                }
                IdentityLookup::Unknown { identity } => {
                    return Err(Refusal::new(
                        Code::PermissionDenied,
                        format!("unknown identity: {identity}"),
                    ));
                }
            };
            if let Some(call) = parts.extensions.get_mut::<CallInfo>() {
                call.admin = Some(admin);
            }
            Ok(())
        })
    }
}
