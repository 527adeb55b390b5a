//! Per-admin request rate (GCRA with the admin's quota and burst from the policy), after
//! authentication. Concurrency caps are held for a sync's lifetime, so they live in the gate.

use super::check::{Check, is_health};
use super::refusal::Refusal;
use crate::policy::PolicyHandle;
use crate::service::CallInfo;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A quota and the limiter built for it.
type QuotaLimiter = (Quota, Arc<DefaultDirectRateLimiter>);

/// Per-admin rate limiters, rebuilt when an admin's quota changes.
#[derive(Clone)]
pub struct AdminRateLimit {
    policy: PolicyHandle,
    limiters: Arc<Mutex<HashMap<String, QuotaLimiter>>>,
}

impl AdminRateLimit {
    /// Limits following `policy`.
    pub fn new(policy: PolicyHandle) -> Self {
        Self {
            policy,
            limiters: Arc::default(),
        }
    }

    fn limiter(&self, admin: &str) -> Option<Arc<DefaultDirectRateLimiter>> {
        let policy = self.policy.current();
        let a = policy.admin_by_name(admin).into_result().ok()?;
        let l = a.limits();
        let quota = Quota::per_minute(l.rate_per_minute).allow_burst(l.burst);
        let mut map = self.limiters.lock().ok()?;
        let entry = map
            .entry(admin.to_string())
            .or_insert_with(|| (quota, Arc::new(DefaultDirectRateLimiter::direct(quota))));
        if entry.0 != quota {
            *entry = (quota, Arc::new(DefaultDirectRateLimiter::direct(quota)));
        }
        Some(entry.1.clone())
    }
}

impl Check for AdminRateLimit {
    fn check<'a>(
        &'a self,
        parts: &'a mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>> {
        Box::pin(async move {
            if is_health(parts.uri.path()) {
                return Ok(());
            }
            let Some(admin) = parts
                .extensions
                .get::<CallInfo>()
                .and_then(|c| c.admin.clone())
            else {
                return Err(Refusal::new(
                    tonic::Code::Unauthenticated,
                    "no authenticated admin",
                ));
            };
            let Some(limiter) = self.limiter(&admin) else {
                return Err(Refusal::new(
                    tonic::Code::PermissionDenied,
                    format!("unknown admin: {admin}"),
                ));
            };
            limiter.check().map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Refusal::exhausted(
                    format!("rate limited: admin {admin} is over its request rate"),
                    wait,
                )
            })
        })
    }
}
