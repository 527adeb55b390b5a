//! Rights: a method that needs one (the method table in `crate::service::methods` says which)
//! is refused to an admin the policy does not grant it, before the request message is read.
//! Default deny: a right is held only where the policy lists it.

use super::check::{Check, is_health};
use super::refusal::Refusal;
use crate::policy::PolicyHandle;
use crate::service::CallInfo;
use std::future::Future;
use std::pin::Pin;
use tonic::Code;

/// Checks the method's right against the caller's policy entry.
#[derive(Clone)]
pub struct RightsCheck {
    /// The current policy.
    pub policy: PolicyHandle,
}

impl Check for RightsCheck {
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(async move {
            let path = parts.uri.path();
            if is_health(path) {
                return Ok(());
            }
            // A method we do not serve is refused by the body layer, with its record.
            let Some(right) = crate::service::method(path).and_then(|m| m.right) else {
                return Ok(());
            };
            let Some(admin) = parts
                .extensions
                .get::<CallInfo>()
                .and_then(|c| c.admin.clone())
            else {
                return Err(Refusal::new(
                    Code::Unauthenticated,
                    "no authenticated admin",
                ));
            };
            self.policy
                .current()
                .authorize_right(&admin, right)
                .map(drop)
                .map_err(|d| Refusal::new(Code::PermissionDenied, format!("policy: {d}")))
        })
    }
}
